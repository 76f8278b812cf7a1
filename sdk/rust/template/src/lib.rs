//! The `{{id}}` capability: one tool with typed arguments, durable per-session state, a
//! prompt fragment and (commented out) a hook. Edit freely; `./build.sh` rebuilds the
//! component.

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

    // Hooks see every tool call of the agent (any capability's), before and after it runs.
    // To use one, uncomment it and list it in capability.toml (`hooks = ["after-tool"]`).
    //
    // /// Keeps results short: a text result longer than 4000 bytes is cut.
    // fn after_tool(_ctx: &Context, _call: &ToolRequest, result: &ToolOutcome) -> Option<ToolOutcome> {
    //     match result {
    //         Ok(Output::Text(text)) if text.len() > 4000 => {
    //             let cut = text.floor_char_boundary(4000);
    //             Some(Ok(Output::text(format!("{}… (cut)", &text[..cut]))))
    //         }
    //         _ => None, // keep the result as it is
    //     }
    // }
}

everruns_sdk::export_capability!(Plugin, id = "{{id}}");
