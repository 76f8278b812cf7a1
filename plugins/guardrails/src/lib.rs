//! The `guardrails` built-in capability: a policy over the agent's tool calls, made only of
//! hooks (WIT 0.2.0), configured per agent.
//!
//! - `before-tool`, in this order: a call whose namespaced name matches a `block_tools` glob
//!   is blocked; a call the run already made `max_identical_calls` times with the same
//!   arguments is blocked (loop guard); a call matching a `require_approval` glob needs a
//!   person's approval. The first rule that applies answers, naming the pattern.
//! - `after-tool`: every match of a `redact` pattern in the result (text, JSON, error text)
//!   becomes `[redacted]`.
//!
//! Nothing traps on a bad configuration: before a tool it blocks the call, after a tool it
//! withholds the result, each time saying what is wrong (fail closed, like a trap would).

mod glob;
mod redact;
mod repeat;

use everruns_sdk::prelude::*;

use crate::redact::Redactor;

/// The agent's configuration (manifest defaults overlaid with the agent's settings).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    block_tools: Vec<String>,
    #[serde(default)]
    require_approval: Vec<String>,
    #[serde(default)]
    redact: Vec<String>,
    #[serde(default = "default_max_identical_calls")]
    max_identical_calls: u32,
}

fn default_max_identical_calls() -> u32 {
    3
}

/// The decision for `call`, given the number of times the run has now asked for it with
/// these arguments (this call included) when the loop guard counted it.
fn decide(config: &Config, call: &ToolRequest, count: impl FnOnce() -> u64) -> ToolDecision {
    if let Some(pattern) = glob::first_match(&config.block_tools, &call.name) {
        return ToolDecision::Block(format!(
            "blocked by guardrails: `{}` matches `{pattern}`",
            call.name
        ));
    }
    let max = config.max_identical_calls.max(1);
    if count() > u64::from(max) {
        return ToolDecision::Block(format!(
            "blocked by guardrails: `{}` was already called {max} times with the same \
             arguments in this run; try something else",
            call.name
        ));
    }
    if let Some(pattern) = glob::first_match(&config.require_approval, &call.name) {
        return ToolDecision::RequireApproval(format!(
            "guardrails: `{}` matches `{pattern}`",
            call.name
        ));
    }
    ToolDecision::Continue
}

/// The message of a configuration error, without the `failed: ` prefix of its display.
fn why(e: ToolError) -> String {
    match e {
        ToolError::Failed(message) => message,
        other => other.to_string(),
    }
}

struct Guardrails;

impl Capability for Guardrails {
    fn tools(_tools: &mut Tools) {}

    fn before_tool(ctx: &Context, call: &ToolRequest) -> ToolDecision {
        match ctx.config::<Config>() {
            Ok(config) => decide(&config, call, || repeat::count(ctx.run_id(), call)),
            Err(e) => ToolDecision::Block(format!("blocked by guardrails: {}", why(e))),
        }
    }

    fn after_tool(ctx: &Context, _call: &ToolRequest, result: &ToolOutcome) -> Option<ToolOutcome> {
        let config = match ctx.config::<Config>() {
            Ok(config) => config,
            Err(e) => return Some(Err(format!("result withheld by guardrails: {}", why(e)))),
        };
        if config.redact.is_empty() {
            return None;
        }
        let texts = redact::texts_of(result);
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        if !redact::may_match(&config.redact, &texts) {
            return None;
        }
        let redactor = match Redactor::new(&config.redact) {
            Ok(redactor) => redactor,
            Err(e) => {
                return Some(Err(format!(
                    "result withheld by guardrails: the guardrails config has an invalid \
                     `redact` pattern {e}"
                )));
            }
        };
        match result {
            Ok(output) => redactor.output(output).map(Ok),
            Err(text) => redactor.text(text).map(Err),
        }
    }
}

everruns_sdk::export_capability!(Guardrails, id = "guardrails");

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Config {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rules_apply_in_order() {
        let config = config(serde_json::json!({
            "block_tools": ["current_time__*"],
            "require_approval": ["*__delete_file", "current_time__now"],
            "max_identical_calls": 2
        }));
        let now = ToolRequest::new("current_time__now", "{}");
        let ToolDecision::Block(reason) = decide(&config, &now, || 9) else {
            panic!("expected a block");
        };
        assert_eq!(
            reason,
            "blocked by guardrails: `current_time__now` matches `current_time__*`"
        );

        let delete = ToolRequest::new("session_files__delete_file", r#"{"path":"a"}"#);
        assert!(
            matches!(decide(&config, &delete, || 3), ToolDecision::Block(r) if r.contains("2 times"))
        );
        assert_eq!(
            decide(&config, &delete, || 2),
            ToolDecision::RequireApproval(
                "guardrails: `session_files__delete_file` matches `*__delete_file`".into()
            )
        );
        let read = ToolRequest::new("session_files__read_file", r#"{"path":"a"}"#);
        assert_eq!(decide(&config, &read, || 1), ToolDecision::Continue);
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let config = config(serde_json::json!({}));
        assert_eq!(config.max_identical_calls, 3);
        assert!(serde_json::from_value::<Config>(serde_json::json!({"blok_tools": []})).is_err());
    }
}
