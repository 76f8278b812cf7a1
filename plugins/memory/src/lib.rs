//! The `memory` built-in capability: facts an agent remembers across all its sessions
//! (agent-scoped state, one key per fact, `fact:<name>`), with a prompt fragment listing
//! what is remembered so the model can use it without a tool call.
//!
//! Limits: names up to 100 bytes, facts up to 2000 characters, at most 200 facts; the
//! prompt fragment lists at most 8000 characters of facts.

use everruns_sdk::prelude::*;

const KEY_PREFIX: &str = "fact:";
const MAX_NAME_BYTES: usize = 100;
const MAX_FACT_CHARS: usize = 2000;
const MAX_FACTS: usize = 200;
const MAX_PROMPT_CHARS: usize = 8000;

/// Arguments of `remember`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RememberArgs {
    /// A short, stable name for the fact, e.g. `user.preferred_language`. Remembering
    /// under an existing name replaces that fact.
    name: String,
    /// The fact itself, in one or two sentences.
    fact: String,
}

/// Arguments of `recall`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RecallArgs {
    /// Only facts whose name or text contains this (case-insensitive). Default: all.
    query: Option<String>,
}

/// Arguments of `forget`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ForgetArgs {
    /// The name of the fact to forget.
    name: String,
}

fn check_name(name: &str) -> Result<&str, ToolError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ToolError::invalid_argument(
            "name",
            format!("must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ToolError::invalid_argument(
            "name",
            "control characters are not allowed",
        ));
    }
    Ok(name)
}

/// Every fact as (name, text), sorted by name.
fn facts() -> Result<Vec<(String, String)>, ToolError> {
    let mut out = Vec::new();
    for key in kv::list(KEY_PREFIX)? {
        if let Some(text) = kv::get::<String>(&key)? {
            out.push((key[KEY_PREFIX.len()..].to_owned(), text));
        }
    }
    Ok(out)
}

fn remember(_ctx: &Context, args: RememberArgs) -> ToolResult {
    let name = check_name(&args.name)?;
    let fact = args.fact.trim();
    let chars = fact.chars().count();
    if chars == 0 || chars > MAX_FACT_CHARS {
        return Err(ToolError::invalid_argument(
            "fact",
            format!("must be 1 to {MAX_FACT_CHARS} characters"),
        ));
    }
    let key = format!("{KEY_PREFIX}{name}");
    if kv::get_bytes(&key)?.is_none() && kv::list(KEY_PREFIX)?.len() >= MAX_FACTS {
        return Err(ToolError::Failed(format!(
            "{MAX_FACTS} facts are remembered already; forget some first"
        )));
    }
    kv::set(&key, fact)?;
    Ok(format!("remembered `{name}`").into())
}

fn recall(_ctx: &Context, args: RecallArgs) -> ToolResult {
    let query = args.query.as_deref().map(str::to_lowercase);
    let found: Vec<serde_json::Value> = facts()?
        .into_iter()
        .filter(|(name, text)| {
            query
                .as_deref()
                .is_none_or(|q| name.to_lowercase().contains(q) || text.to_lowercase().contains(q))
        })
        .map(|(name, fact)| serde_json::json!({"name": name, "fact": fact}))
        .collect();
    Ok(Output::json(&serde_json::json!({ "facts": found })))
}

fn forget(_ctx: &Context, args: ForgetArgs) -> ToolResult {
    let name = check_name(&args.name)?;
    if kv::delete(&format!("{KEY_PREFIX}{name}"))? {
        Ok(format!("forgot `{name}`").into())
    } else {
        Err(ToolError::NotFound(format!("no fact named `{name}`")))
    }
}

struct Memory;

impl Capability for Memory {
    fn tools(tools: &mut Tools) {
        tools
            .add(
                "remember",
                "Remembers a fact for all future conversations of this agent",
                remember,
            )
            .add(
                "recall",
                "Lists remembered facts, optionally filtered",
                recall,
            )
            .add("forget", "Forgets a remembered fact by name", forget);
    }

    fn system_prompt(_ctx: &Context) -> Option<String> {
        let mut prompt = String::from(
            "You have a long-term memory shared by all your conversations. When you learn \
             something worth keeping (a preference, a fact about the user or their work), \
             call `memory__remember` with a short name; correct outdated facts by \
             remembering under the same name, and `memory__forget` wrong ones.\n",
        );
        let facts = facts().unwrap_or_default();
        if facts.is_empty() {
            prompt.push_str("Nothing is remembered yet.");
            return Some(prompt);
        }
        prompt.push_str("What you remember:\n");
        for (name, fact) in &facts {
            let line = format!("- {name}: {fact}\n");
            if prompt.len() + line.len() > MAX_PROMPT_CHARS {
                prompt.push_str("- … (more: use `memory__recall`)\n");
                break;
            }
            prompt.push_str(&line);
        }
        Some(prompt)
    }
}

everruns_sdk::export_capability!(Memory, id = "memory");
