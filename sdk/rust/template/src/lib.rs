//! The `{{id}}` capability: one tool with typed arguments, durable per-session state and
//! a prompt fragment. Edit freely; `./build.sh` rebuilds the component.

use everruns_sdk::prelude::*;

/// Arguments of `greet`. Doc comments become the schema's descriptions, which the model
/// reads; a call whose arguments do not fit is refused before `greet` runs.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GreetArgs {
    /// Who to greet.
    name: String,
    /// Greet loudly (upper case). Default false.
    #[serde(default)]
    shout: bool,
}

fn greet(_ctx: &Context, args: GreetArgs) -> ToolResult {
    if args.name.trim().is_empty() {
        return Err(ToolError::invalid_argument("name", "must not be empty"));
    }
    // State survives restarts and is private to this session (see capability.toml).
    let count: u64 = kv::get("greetings")?.unwrap_or(0) + 1;
    kv::set("greetings", &count)?;
    log::info(&format!("greeting #{count}"));
    let text = format!("Hello, {}! (greeting #{count} in this session)", args.name);
    Ok(Output::text(if args.shout {
        text.to_uppercase()
    } else {
        text
    }))
}

struct Plugin;

impl Capability for Plugin {
    fn tools(tools: &mut Tools) {
        tools.add("greet", "Greets someone by name", greet);
    }

    fn system_prompt(_ctx: &Context) -> Option<String> {
        Some("When someone introduces themselves, greet them with `{{id}}__greet`.".into())
    }
}

everruns_sdk::export_capability!(Plugin, id = "{{id}}");
