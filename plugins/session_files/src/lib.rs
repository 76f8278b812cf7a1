//! The `session_files` built-in capability: a small virtual file system private to each
//! session, kept in durable key-value state (one key per file, `file:<path>`), so files
//! survive restarts and are never visible to another session.
//!
//! Limits: paths up to 200 bytes, files up to 64 KiB (the host's value limit), at most
//! 500 files per session; `grep` returns at most 200 matches.

use everruns_sdk::prelude::*;

const KEY_PREFIX: &str = "file:";
const MAX_PATH_BYTES: usize = 200;
const MAX_FILE_BYTES: usize = 64 * 1024;
const MAX_FILES: usize = 500;
const MAX_GREP_MATCHES: usize = 200;

/// Arguments naming one file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    /// File path, e.g. `notes/plan.md` (a leading `/` is optional).
    path: String,
}

/// Arguments of `read_file`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    /// File path, e.g. `notes/plan.md`.
    path: String,
    /// First line to return, counting from 1. Default 1.
    offset: Option<u32>,
    /// How many lines to return. Default: all.
    limit: Option<u32>,
}

/// Arguments of `write_file`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    /// File path; missing directories are implied.
    path: String,
    /// The whole new content (at most 64 KiB).
    content: String,
}

/// Arguments of `edit_file`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    /// File path.
    path: String,
    /// Exact text to replace; must occur exactly once unless `replace_all` is set.
    old_string: String,
    /// Replacement text.
    new_string: String,
    /// Replace every occurrence. Default false.
    #[serde(default)]
    replace_all: bool,
}

/// Arguments of `list_directory`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Directory to list. Default: the root.
    path: Option<String>,
}

/// Arguments of `grep`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    /// Regular expression (Rust syntax) searched line by line.
    pattern: String,
    /// Directory or file to search. Default: every file.
    path: Option<String>,
    /// Case-insensitive matching. Default false.
    #[serde(default)]
    ignore_case: bool,
}

/// Normalizes a user path to `a/b/c` (no leading slash); rejects `..`, empty names and
/// control characters. `allow_root` accepts the empty path (the root directory).
fn normalize(field: &str, path: &str, allow_root: bool) -> Result<String, ToolError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ToolError::invalid_argument(field, "`..` is not allowed"));
            }
            p if p.chars().any(char::is_control) => {
                return Err(ToolError::invalid_argument(
                    field,
                    "control characters are not allowed",
                ));
            }
            p => parts.push(p),
        }
    }
    let normalized = parts.join("/");
    if normalized.is_empty() && !allow_root {
        return Err(ToolError::invalid_argument(field, "must name a file"));
    }
    if normalized.len() > MAX_PATH_BYTES {
        return Err(ToolError::invalid_argument(
            field,
            format!("longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    Ok(normalized)
}

fn key(path: &str) -> String {
    format!("{KEY_PREFIX}{path}")
}

fn read(path: &str) -> Result<String, ToolError> {
    let bytes = kv::get_bytes(&key(path))?
        .ok_or_else(|| ToolError::NotFound(format!("no file `{path}`")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn write(path: &str, content: &str) -> Result<(), ToolError> {
    if content.len() > MAX_FILE_BYTES {
        return Err(ToolError::invalid_argument(
            "content",
            format!(
                "{} bytes is over the {MAX_FILE_BYTES}-byte file limit",
                content.len()
            ),
        ));
    }
    kv::set_bytes(&key(path), content.as_bytes())?;
    Ok(())
}

/// Every file path, sorted.
fn all_files() -> Result<Vec<String>, ToolError> {
    Ok(kv::list(KEY_PREFIX)?
        .into_iter()
        .map(|k| k[KEY_PREFIX.len()..].to_owned())
        .collect())
}

fn read_file(_ctx: &Context, args: ReadArgs) -> ToolResult {
    let path = normalize("path", &args.path, false)?;
    let content = read(&path)?;
    if args.offset.is_none() && args.limit.is_none() {
        return Ok(content.into());
    }
    let offset = args.offset.unwrap_or(1);
    if offset == 0 {
        return Err(ToolError::invalid_argument("offset", "lines count from 1"));
    }
    let lines: Vec<&str> = content
        .lines()
        .skip(offset as usize - 1)
        .take(args.limit.map_or(usize::MAX, |l| l as usize))
        .collect();
    Ok(lines.join("\n").into())
}

fn write_file(_ctx: &Context, args: WriteArgs) -> ToolResult {
    let path = normalize("path", &args.path, false)?;
    if kv::get_bytes(&key(&path))?.is_none() && all_files()?.len() >= MAX_FILES {
        return Err(ToolError::Failed(format!(
            "this session already has {MAX_FILES} files; delete some first"
        )));
    }
    write(&path, &args.content)?;
    Ok(format!("wrote {} bytes to {path}", args.content.len()).into())
}

fn edit_file(_ctx: &Context, args: EditArgs) -> ToolResult {
    let path = normalize("path", &args.path, false)?;
    if args.old_string.is_empty() {
        return Err(ToolError::invalid_argument(
            "old_string",
            "must not be empty",
        ));
    }
    let content = read(&path)?;
    let count = content.matches(&args.old_string).count();
    let updated = match count {
        0 => {
            return Err(ToolError::invalid_argument(
                "old_string",
                format!("not found in {path}"),
            ));
        }
        1 => content.replacen(&args.old_string, &args.new_string, 1),
        _ if args.replace_all => content.replace(&args.old_string, &args.new_string),
        n => {
            return Err(ToolError::invalid_argument(
                "old_string",
                format!(
                    "occurs {n} times in {path}; add context to make it unique or set replace_all"
                ),
            ));
        }
    };
    write(&path, &updated)?;
    Ok(format!("replaced {count} occurrence(s) in {path}").into())
}

fn list_directory(_ctx: &Context, args: ListArgs) -> ToolResult {
    let dir = normalize("path", args.path.as_deref().unwrap_or(""), true)?;
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut last_dir: Option<String> = None;
    for file in all_files()? {
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((sub, _)) => {
                if last_dir.as_deref() != Some(sub) {
                    entries
                        .push(serde_json::json!({"name": format!("{sub}/"), "type": "directory"}));
                    last_dir = Some(sub.to_owned());
                }
            }
            None => {
                let size = kv::get_bytes(&key(&file))?.map_or(0, |b| b.len());
                entries.push(serde_json::json!({"name": rest, "type": "file", "size": size}));
            }
        }
    }
    if entries.is_empty() && !dir.is_empty() {
        if kv::get_bytes(&key(&dir))?.is_some() {
            return Err(ToolError::invalid_argument(
                "path",
                format!("`{dir}` is a file"),
            ));
        }
        return Err(ToolError::NotFound(format!("no directory `{dir}`")));
    }
    Ok(Output::json(&serde_json::json!({
        "path": format!("/{dir}"),
        "entries": entries,
    })))
}

fn grep(_ctx: &Context, args: GrepArgs) -> ToolResult {
    let pattern = regex_lite::RegexBuilder::new(&args.pattern)
        .case_insensitive(args.ignore_case)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ToolError::invalid_argument("pattern", e))?;
    let scope = normalize("path", args.path.as_deref().unwrap_or(""), true)?;
    let mut matches = Vec::new();
    let mut truncated = false;
    'files: for file in all_files()? {
        let in_scope = scope.is_empty() || file == scope || file.starts_with(&format!("{scope}/"));
        if !in_scope {
            continue;
        }
        let content = read(&file)?;
        for (n, line) in content.lines().enumerate() {
            if pattern.is_match(line) {
                if matches.len() == MAX_GREP_MATCHES {
                    truncated = true;
                    break 'files;
                }
                matches.push(format!("{file}:{}: {line}", n + 1));
            }
        }
    }
    if matches.is_empty() {
        return Ok("no matches".into());
    }
    let mut out = matches.join("\n");
    if truncated {
        out.push_str(&format!("\n[stopped after {MAX_GREP_MATCHES} matches]"));
    }
    Ok(out.into())
}

fn delete_file(_ctx: &Context, args: PathArgs) -> ToolResult {
    let path = normalize("path", &args.path, false)?;
    if kv::delete(&key(&path))? {
        Ok(format!("deleted {path}").into())
    } else {
        Err(ToolError::NotFound(format!("no file `{path}`")))
    }
}

struct SessionFiles;

impl Capability for SessionFiles {
    fn tools(tools: &mut Tools) {
        tools
            .add(
                "read_file",
                "Reads a file (optionally a range of lines)",
                read_file,
            )
            .add(
                "write_file",
                "Creates or replaces a file with the given content (max 64 KiB)",
                write_file,
            )
            .add(
                "edit_file",
                "Replaces an exact string in a file (it must occur once unless replace_all)",
                edit_file,
            )
            .add(
                "list_directory",
                "Lists the files and subdirectories of a directory",
                list_directory,
            )
            .add(
                "grep",
                "Searches files line by line for a regular expression",
                grep,
            )
            .add("delete_file", "Deletes a file", delete_file);
    }

    fn system_prompt(_ctx: &Context) -> Option<String> {
        Some(
            "You have a private file system for this session (tools `session_files__*`). \
             Use it for drafts, notes and intermediate results; it persists across turns."
                .into(),
        )
    }
}

everruns_sdk::export_capability!(SessionFiles, id = "session_files");
