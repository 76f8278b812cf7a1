//! The `todo` built-in capability: a structured todo list per session (key `todos` in
//! session-scoped state), written whole and read back, with a prompt fragment that tells
//! the model how to plan with it and shows the current list.

use everruns_sdk::prelude::*;

const KEY: &str = "todos";
const MAX_ITEMS: usize = 100;
const MAX_CONTENT_CHARS: usize = 500;

/// State of a todo item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Status {
    /// Not started.
    Pending,
    /// Being worked on now (at most one item).
    InProgress,
    /// Done.
    Completed,
}

/// One todo item.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Item {
    /// What to do, as a short imperative sentence.
    content: String,
    /// `pending`, `in_progress` or `completed`.
    status: Status,
}

/// Arguments of `write_todos`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    /// The complete new list, in order (it replaces the old one).
    todos: Vec<Item>,
}

/// Arguments of `read_todos` (none).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadArgs {}

fn load() -> Result<Vec<Item>, ToolError> {
    Ok(kv::get(KEY)?.unwrap_or_default())
}

fn render(items: &[Item]) -> String {
    if items.is_empty() {
        return "The todo list is empty.".into();
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mark = match item.status {
                Status::Pending => "[ ]",
                Status::InProgress => "[~]",
                Status::Completed => "[x]",
            };
            format!("{}. {mark} {}", i + 1, item.content)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_todos(_ctx: &Context, args: WriteArgs) -> ToolResult {
    if args.todos.len() > MAX_ITEMS {
        return Err(ToolError::invalid_argument(
            "todos",
            format!("at most {MAX_ITEMS} items"),
        ));
    }
    for (i, item) in args.todos.iter().enumerate() {
        let chars = item.content.trim().chars().count();
        if chars == 0 || chars > MAX_CONTENT_CHARS {
            return Err(ToolError::invalid_argument(
                &format!("todos[{i}].content"),
                format!("must be 1 to {MAX_CONTENT_CHARS} characters"),
            ));
        }
    }
    let in_progress = args
        .todos
        .iter()
        .filter(|t| t.status == Status::InProgress)
        .count();
    if in_progress > 1 {
        return Err(ToolError::invalid_argument(
            "todos",
            format!("{in_progress} items are in_progress; keep at most one"),
        ));
    }
    kv::set(KEY, &args.todos)?;
    Ok(render(&args.todos).into())
}

fn read_todos(_ctx: &Context, _args: ReadArgs) -> ToolResult {
    Ok(render(&load()?).into())
}

struct Todo;

impl Capability for Todo {
    fn tools(tools: &mut Tools) {
        tools
            .add(
                "write_todos",
                "Replaces the session's todo list with the given items (pending, in_progress, completed)",
                write_todos,
            )
            .add("read_todos", "Shows the session's todo list", read_todos);
    }

    fn system_prompt(_ctx: &Context) -> Option<String> {
        let current = load().map(|items| render(&items)).unwrap_or_default();
        Some(format!(
            "For tasks with three or more steps, plan with the todo list: call \
             `todo__write_todos` with every step as `pending`, mark the step you start \
             `in_progress` (one at a time) and mark it `completed` as soon as it is done, \
             always sending the whole list. Skip the list for simple one-step requests.\n\
             Current todo list:\n{current}"
        ))
    }
}

everruns_sdk::export_capability!(Todo, id = "todo");
