// Shared by `well-behaved` (0.1.0) and `well-behaved-v2` (0.2.0): the version comes from
// the including crate's Cargo.toml.

wit_bindgen::generate!({
    path: "../../../../../wit/0.1.0",
    world: "plugin",
});

use everruns::capability::types::{
    CallContext, CapabilityInfo, ToolCall, ToolError, ToolOutput, ToolSpec,
};
use everruns::capability::{kv, log};
use exports::everruns::capability::capability::Guest;
use serde_json::{Value, json};

struct WellBehaved;

fn config(ctx: &CallContext) -> Value {
    serde_json::from_str(&ctx.config).unwrap_or(Value::Null)
}

impl Guest for WellBehaved {
    fn info() -> CapabilityInfo {
        CapabilityInfo {
            id: "well-behaved".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "A plugin that behaves".into(),
        }
    }

    fn system_prompt(ctx: CallContext) -> Option<String> {
        let greeting = config(&ctx)["greeting"].as_str().unwrap_or("hello").to_owned();
        Some(format!("You can greet people; say `{greeting}`."))
    }

    fn tools(_ctx: CallContext) -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "greet".into(),
                description: "Greets someone using the configured greeting".into(),
                parameters_schema: json!({
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"]
                })
                .to_string(),
            },
            ToolSpec {
                name: "count".into(),
                description: "Increments a durable counter and returns it".into(),
                parameters_schema: json!({"type": "object", "properties": {}}).to_string(),
            },
            ToolSpec {
                name: "ping".into(),
                description: "Answers pong (for benchmarks)".into(),
                parameters_schema: json!({"type": "object"}).to_string(),
            },
            ToolSpec {
                name: "echo".into(),
                description: "Returns its arguments".into(),
                parameters_schema: json!({"type": "object"}).to_string(),
            },
        ]
    }

    fn call_tool(ctx: CallContext, call: ToolCall) -> Result<ToolOutput, ToolError> {
        if call.name == "ping" {
            return Ok(ToolOutput::Text("pong".into()));
        }
        let args: Value = serde_json::from_str(&call.arguments)
            .map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        match call.name.as_str() {
            "greet" => {
                let name = args["name"]
                    .as_str()
                    .ok_or_else(|| ToolError::InvalidArguments("`name` is required".into()))?;
                let greeting = config(&ctx)["greeting"].as_str().unwrap_or("hello").to_owned();
                log::log(log::Level::Info, &format!("greeting {name}"));
                Ok(ToolOutput::Text(format!("{greeting}, {name}!")))
            }
            "count" => {
                // Idempotent per key: a retried step returns the value it produced first.
                let key = ctx.idempotency_key.clone().unwrap_or_default();
                let done_key = format!("done/{key}");
                if !key.is_empty()
                    && let Some(prev) = kv::get(&done_key).map_err(kv_err)?
                {
                    let prev = String::from_utf8_lossy(&prev).into_owned();
                    return Ok(ToolOutput::Json(
                        json!({"count": prev.parse::<u64>().unwrap_or(0), "replayed": true, "version": env!("CARGO_PKG_VERSION")}).to_string(),
                    ));
                }
                let current = kv::get("counter")
                    .map_err(kv_err)?
                    .map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0))
                    .unwrap_or(0);
                let next = current + 1;
                kv::set("counter", next.to_string().as_bytes()).map_err(kv_err)?;
                if !key.is_empty() {
                    kv::set(&done_key, next.to_string().as_bytes()).map_err(kv_err)?;
                }
                Ok(ToolOutput::Json(
                    json!({"count": next, "replayed": false, "version": env!("CARGO_PKG_VERSION")}).to_string(),
                ))
            }
            "echo" => Ok(ToolOutput::Json(
                json!({"args": args, "version": env!("CARGO_PKG_VERSION")}).to_string(),
            )),
            other => Err(ToolError::NotFound(format!("no tool `{other}`"))),
        }
    }
}

fn kv_err(e: kv::KvError) -> ToolError {
    ToolError::Failed(format!("kv: {e:?}"))
}

export!(WellBehaved);
