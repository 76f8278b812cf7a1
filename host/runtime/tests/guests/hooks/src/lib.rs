//! The hooks test plugin (WIT 0.2.0): exports `capability` and `hooks`, and answers each
//! hook as its config says, so host tests can exercise every decision, a trap and a
//! timeout. Config (every key optional; missing means continue / keep):
//!
//! ```json
//! {"before_model": "continue" | "add-context:TEXT" | "block:REASON" | "trap" | "loop",
//!  "before_tool": "continue" | "rewrite:{json}" | "block:REASON" | "require-approval:REASON"
//!                 | "trap" | "loop" | "sleep:MS",
//!  "after_tool": "keep" | "replace:TEXT" | "redact:WORD" | "trap" | "loop"}
//! ```
//!
//! `sleep:MS` waits `MS` milliseconds (busy, so the epoch deadline can interrupt it) and
//! then continues; an unknown directive blocks (or, after a tool, replaces the result) with
//! a message naming it, so a typo in a test never passes for a trap. Every hook call first
//! counts itself in key-value state under `calls/<hook-name>` (e.g. `calls/before-tool`;
//! kv errors are ignored), so tests can count calls. Tools: `echo` (its arguments back as
//! JSON), `bump` (increments kv `counter`, returns the new value) and `slow_bump` (the same,
//! then waits `ms` milliseconds), for crash and timeout tests.

wit_bindgen::generate!({
    path: "../../../../../wit/0.2.0",
    world: "plugin",
});

use std::time::{Duration, Instant};

use everruns::capability::kv;
use everruns::capability::types::{
    CallContext, CapabilityInfo, ToolCall, ToolError, ToolOutput, ToolSpec,
};
use exports::everruns::capability::capability::Guest as CapabilityGuest;
use exports::everruns::capability::hooks::{
    Guest as HooksGuest, ModelDecision, ModelRequest, ToolDecision, ToolRequest, ToolResult,
};
use serde_json::{Value, json};

struct Hooks;

/// The directive for `hook` in the config (`""` when absent).
fn directive(ctx: &CallContext, hook: &str) -> String {
    let config: Value = serde_json::from_str(&ctx.config).unwrap_or(Value::Null);
    config[hook].as_str().unwrap_or("").to_owned()
}

/// Adds one to the decimal counter at `key` and returns the new value.
fn increment(key: &str) -> Result<u64, kv::KvError> {
    let current = kv::get(key)?
        .map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0))
        .unwrap_or(0);
    let next = current + 1;
    kv::set(key, next.to_string().as_bytes())?;
    Ok(next)
}

/// Counts one call of `hook`; kv errors (no grant, no owner) are ignored.
fn count_call(hook: &str) {
    let _ = increment(&format!("calls/{hook}"));
}

/// Spins for `ms` milliseconds, reading the clock, so an epoch deadline interrupts it.
fn busy_wait(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Never returns (until the host's deadline interrupts it).
fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn trap(hook: &str) -> ! {
    panic!("hooks guest: `{hook}` traps as configured")
}

impl CapabilityGuest for Hooks {
    fn info() -> CapabilityInfo {
        CapabilityInfo {
            id: "hooks".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Answers hooks as its config says".into(),
        }
    }

    fn system_prompt(_ctx: CallContext) -> Option<String> {
        None
    }

    fn tools(_ctx: CallContext) -> Vec<ToolSpec> {
        let object = json!({"type": "object"}).to_string();
        vec![
            ToolSpec {
                name: "echo".into(),
                description: "Returns its arguments as JSON".into(),
                parameters_schema: object.clone(),
            },
            ToolSpec {
                name: "bump".into(),
                description: "Increments the durable counter and returns it".into(),
                parameters_schema: object,
            },
            ToolSpec {
                name: "slow_bump".into(),
                description: "Increments the durable counter, then waits `ms` milliseconds".into(),
                parameters_schema: json!({
                    "type": "object",
                    "properties": {"ms": {"type": "integer", "minimum": 0}}
                })
                .to_string(),
            },
        ]
    }

    fn call_tool(_ctx: CallContext, call: ToolCall) -> Result<ToolOutput, ToolError> {
        let text = if call.arguments.trim().is_empty() {
            "{}"
        } else {
            &call.arguments
        };
        let args: Value =
            serde_json::from_str(text).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        match call.name.as_str() {
            "echo" => Ok(ToolOutput::Json(args.to_string())),
            "bump" => Ok(ToolOutput::Text(bump()?.to_string())),
            "slow_bump" => {
                let next = bump()?;
                busy_wait(args["ms"].as_u64().unwrap_or(0));
                Ok(ToolOutput::Text(next.to_string()))
            }
            other => Err(ToolError::NotFound(format!("no tool `{other}`"))),
        }
    }
}

fn bump() -> Result<u64, ToolError> {
    increment("counter").map_err(|e| ToolError::Failed(format!("kv: {e:?}")))
}

impl HooksGuest for Hooks {
    fn before_model(ctx: CallContext, _request: ModelRequest) -> ModelDecision {
        count_call("before-model");
        let d = directive(&ctx, "before_model");
        match d.as_str() {
            "" | "continue" => ModelDecision::Continue,
            "trap" => trap("before-model"),
            "loop" => spin(),
            _ => {
                if let Some(text) = d.strip_prefix("add-context:") {
                    ModelDecision::AddContext(text.into())
                } else if let Some(reason) = d.strip_prefix("block:") {
                    ModelDecision::Block(reason.into())
                } else {
                    ModelDecision::Block(format!("unknown before_model directive `{d}`"))
                }
            }
        }
    }

    fn before_tool(ctx: CallContext, _call: ToolRequest) -> ToolDecision {
        count_call("before-tool");
        let d = directive(&ctx, "before_tool");
        match d.as_str() {
            "" | "continue" => ToolDecision::Continue,
            "trap" => trap("before-tool"),
            "loop" => spin(),
            _ => {
                if let Some(arguments) = d.strip_prefix("rewrite:") {
                    ToolDecision::Rewrite(arguments.into())
                } else if let Some(reason) = d.strip_prefix("block:") {
                    ToolDecision::Block(reason.into())
                } else if let Some(reason) = d.strip_prefix("require-approval:") {
                    ToolDecision::RequireApproval(reason.into())
                } else if let Some(ms) = d.strip_prefix("sleep:").and_then(|m| m.parse().ok()) {
                    busy_wait(ms);
                    ToolDecision::Continue
                } else {
                    ToolDecision::Block(format!("unknown before_tool directive `{d}`"))
                }
            }
        }
    }

    fn after_tool(ctx: CallContext, _call: ToolRequest, result: ToolResult) -> Option<ToolResult> {
        count_call("after-tool");
        let d = directive(&ctx, "after_tool");
        match d.as_str() {
            "" | "keep" => None,
            "trap" => trap("after-tool"),
            "loop" => spin(),
            _ => {
                if let Some(text) = d.strip_prefix("replace:") {
                    Some(Ok(ToolOutput::Text(text.into())))
                } else if let Some(word) = d.strip_prefix("redact:") {
                    redact(&result, word)
                } else {
                    Some(Err(format!("unknown after_tool directive `{d}`")))
                }
            }
        }
    }
}

/// `result` with every `word` replaced by `[redacted]`; `None` when it has none.
fn redact(result: &ToolResult, word: &str) -> Option<ToolResult> {
    let text = match result {
        Ok(ToolOutput::Text(t) | ToolOutput::Json(t)) | Err(t) => t,
    };
    if word.is_empty() || !text.contains(word) {
        return None;
    }
    let cut = |t: &str| t.replace(word, "[redacted]");
    Some(match result {
        Ok(ToolOutput::Text(t)) => Ok(ToolOutput::Text(cut(t))),
        Ok(ToolOutput::Json(t)) => Ok(ToolOutput::Json(cut(t))),
        Err(t) => Err(cut(t)),
    })
}

export!(Hooks);
