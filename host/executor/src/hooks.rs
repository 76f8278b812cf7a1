//! Capability hooks (WIT 0.2.0) around a run's model and tool calls: `before-model`,
//! `before-tool` and `after-tool` of every capability that implements them, in the order of
//! the agent's capability list. The first `block` wins; rewrites and replacements chain
//! (each hook sees the previous one's result). A hook that traps or misses its deadline
//! counts as `block` or is skipped, as its manifest's `on_error` says.
//!
//! Every decision that changed something becomes a `hook.applied` event, and the decisions'
//! key-value writes go into the step's buffer: both are committed with the step the hooks
//! belong to. `before-tool` decisions are made when the model asks for the calls and are
//! journaled with that model step (in its output, per call), so a run replayed after a crash
//! reuses them and never asks those hooks again.

use everruns_core::{EventType, NewEvent};
use everruns_runtime::{
    Hook, KvWrites, ModelDecision, ModelRequest, OnError, ToolDecision, ToolOutput, ToolRequest,
    ToolResultView,
};
use serde_json::{Value, json};

use crate::toolbox::{HookCapability, Toolbox};

/// What the `before-model` hooks decided for one model call.
#[derive(Debug, Default)]
pub(crate) struct BeforeModel {
    /// Text appended to the system prompt, for this call only.
    pub context: Vec<String>,
    /// `Some(error)`: do not call the model; the run fails with this error.
    pub blocked: Option<String>,
    /// `hook.applied` events.
    pub events: Vec<NewEvent>,
}

/// A tool call after the `before-tool` hooks and the approval policy: the arguments to run
/// it with, why it must not run, or why it needs a person's approval first.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Planned {
    /// The arguments to run it with (JSON text), when a hook rewrote them.
    pub arguments: Option<String>,
    /// Set when a hook blocked the call (or, at execution, when its approval was refused).
    pub blocked: Option<Blocked>,
    /// Set when the call needs approval before it runs.
    pub approval: Option<NeedsApproval>,
}

/// Why a call was blocked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Blocked {
    /// The capability whose hook blocked it (`approval` for a refused approval).
    pub by: String,
    /// `block` or `error` (the hook failed under `on_error = block`); for a refused approval
    /// `rejected`, `expired`, `cancelled` or `changed` (the approved arguments were altered).
    pub decision: &'static str,
    /// The reason given to the model.
    pub reason: String,
}

impl Blocked {
    /// What the model is told instead of a result.
    pub(crate) fn message(&self) -> String {
        let reason = &self.reason;
        match self.decision {
            "rejected" => format!("the call was rejected by a person: {reason}"),
            "expired" => format!("the call was not approved in time: {reason}"),
            "cancelled" => format!("the call's approval was cancelled: {reason}"),
            "changed" => format!("the call was not run: {reason}"),
            _ => format!("the call was blocked by capability `{}`: {reason}", self.by),
        }
    }
}

/// Why a call needs a person's approval, and who asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NeedsApproval {
    /// `tool_approval` (the run's policy) or the capability whose hook asked.
    pub requested_by: String,
    pub reason: String,
}

impl Planned {
    /// The call to run: the model's, with the rewritten arguments if a hook rewrote them.
    pub(crate) fn apply(&self, call: &everruns_llm::ToolCall) -> everruns_llm::ToolCall {
        match &self.arguments {
            Some(arguments) => everruns_llm::ToolCall {
                arguments: arguments.clone(),
                ..call.clone()
            },
            None => call.clone(),
        }
    }

    /// The plan as the model step's output keeps it (per call).
    pub(crate) fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(arguments) = &self.arguments {
            out.insert("arguments".into(), json!(arguments));
        }
        if let Some(blocked) = &self.blocked {
            out.insert(
                "blocked".into(),
                json!({"by": blocked.by, "decision": blocked.decision, "reason": blocked.reason}),
            );
        }
        if let Some(approval) = &self.approval {
            out.insert(
                "approval".into(),
                json!({"requested_by": approval.requested_by, "reason": approval.reason}),
            );
        }
        Value::Object(out)
    }

    /// Reads back what [`Planned::to_json`] wrote (absent: run as asked).
    pub(crate) fn from_json(value: &Value) -> Self {
        Self {
            arguments: value["arguments"].as_str().map(str::to_owned),
            blocked: value
                .get("blocked")
                .filter(|b| b.is_object())
                .map(|b| Blocked {
                    by: b["by"].as_str().unwrap_or_default().to_owned(),
                    decision: match b["decision"].as_str() {
                        // Recorded before tool approval existed.
                        Some("require-approval") => "require-approval",
                        Some("error") => "error",
                        _ => "block",
                    },
                    reason: b["reason"].as_str().unwrap_or_default().to_owned(),
                }),
            approval: value
                .get("approval")
                .filter(|a| a.is_object())
                .map(|a| NeedsApproval {
                    requested_by: a["requested_by"].as_str().unwrap_or_default().to_owned(),
                    reason: a["reason"].as_str().unwrap_or_default().to_owned(),
                }),
        }
    }
}

/// What the hooks see of `call`, the call recorded as step `step` (arguments that are not
/// JSON reach them as a string).
pub(crate) fn tool_request(call: &everruns_llm::ToolCall, step: u32) -> ToolRequest {
    ToolRequest {
        name: call.name.clone(),
        arguments: call
            .arguments_json()
            .unwrap_or_else(|_| Value::String(call.arguments.clone())),
        tool_call_id: call.id.clone(),
        step,
    }
}

fn applied(run_id: &str, capability: &str, hook: Hook, decision: Value) -> NewEvent {
    NewEvent::new(
        EventType::HookApplied,
        json!({
            "run_id": run_id,
            "capability": capability,
            "hook": hook.as_str(),
            "decision": decision,
        }),
    )
}

/// The hook capabilities that implement `hook`, in the agent's order.
fn with_hook(toolbox: &Toolbox, hook: Hook) -> impl Iterator<Item = &HookCapability> {
    toolbox
        .hooks
        .iter()
        .filter(move |h| h.plugin.has_hook(hook))
}

/// Runs the `before-model` hooks for model call `request.step`.
pub(crate) async fn before_model(
    toolbox: &Toolbox,
    run_id: &str,
    request: &ModelRequest,
    writes: &mut KvWrites,
) -> BeforeModel {
    let mut out = BeforeModel::default();
    for hook in with_hook(toolbox, Hook::BeforeModel) {
        // The model is not asked: the run fails naming the capability and the reason.
        let blocked = |mut out: BeforeModel, decision: &str, reason: String| {
            out.events.push(applied(
                run_id,
                &hook.capability,
                Hook::BeforeModel,
                json!({"type": decision, "step_no": request.step, "reason": reason}),
            ));
            out.blocked = Some(format!(
                "the model call was blocked by capability `{}`: {reason}",
                hook.capability
            ));
            out
        };
        let ctx = toolbox.hook_context(hook);
        match hook.plugin.before_model(&ctx, request, writes).await {
            Ok(ModelDecision::Continue) => {}
            Ok(ModelDecision::AddContext(text)) => {
                out.events.push(applied(
                    run_id,
                    &hook.capability,
                    Hook::BeforeModel,
                    json!({"type": "add-context", "step_no": request.step, "text": text}),
                ));
                out.context.push(text);
            }
            Ok(ModelDecision::Block(reason)) => return blocked(out, "block", reason),
            Err(e) if hook.plugin.manifest().on_error == OnError::Allow => {
                tracing::warn!(capability = %hook.capability, error = %e,
                    "before-model hook failed; skipped (on_error = allow)");
            }
            Err(e) => {
                return blocked(out, "error", format!("its before-model hook failed: {e}"));
            }
        }
    }
    out
}

/// Runs the `before-tool` hooks for one call (`request` with the model's arguments): the plan
/// for the call, and `hook.applied` events for what changed.
pub(crate) async fn before_tool(
    toolbox: &Toolbox,
    run_id: &str,
    mut request: ToolRequest,
    writes: &mut KvWrites,
    events: &mut Vec<NewEvent>,
) -> Planned {
    let mut plan = Planned::default();
    for hook in with_hook(toolbox, Hook::BeforeTool) {
        let ctx = toolbox.hook_context(hook);
        let base = json!({"step_no": request.step, "tool_call_id": request.tool_call_id,
            "name": request.name});
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            base
        };
        let (decision, reason) = match hook.plugin.before_tool(&ctx, &request, writes).await {
            Ok(ToolDecision::Continue) => continue,
            Ok(ToolDecision::Rewrite(arguments)) => {
                events.push(applied(
                    run_id,
                    &hook.capability,
                    Hook::BeforeTool,
                    with(base, json!({"type": "rewrite", "arguments": arguments})),
                ));
                plan.arguments = Some(arguments.to_string());
                request.arguments = arguments;
                continue;
            }
            Ok(ToolDecision::Block(reason)) => ("block", reason),
            Ok(ToolDecision::RequireApproval(reason)) => {
                // Later hooks still see the call (one may block it outright).
                events.push(applied(
                    run_id,
                    &hook.capability,
                    Hook::BeforeTool,
                    with(base, json!({"type": "require-approval", "reason": reason})),
                ));
                if plan.approval.is_none() {
                    plan.approval = Some(NeedsApproval {
                        requested_by: hook.capability.clone(),
                        reason,
                    });
                }
                continue;
            }
            Err(e) if hook.plugin.manifest().on_error == OnError::Allow => {
                tracing::warn!(capability = %hook.capability, error = %e,
                    "before-tool hook failed; skipped (on_error = allow)");
                continue;
            }
            Err(e) => ("error", format!("its before-tool hook failed: {e}")),
        };
        events.push(applied(
            run_id,
            &hook.capability,
            Hook::BeforeTool,
            with(base, json!({"type": decision, "reason": reason})),
        ));
        plan.blocked = Some(Blocked {
            by: hook.capability.clone(),
            decision,
            reason,
        });
        // A blocked call is never asked about.
        plan.approval = None;
        break;
    }
    plan
}

/// Runs the `after-tool` hooks on a call's result: the result to store and send (the last
/// replacement), with `hook.applied` events for each replacement. A hook failing under
/// `on_error = block` replaces the result with an error (the original must not leak).
pub(crate) async fn after_tool(
    toolbox: &Toolbox,
    run_id: &str,
    request: &ToolRequest,
    mut result: ToolResultView,
    writes: &mut KvWrites,
    events: &mut Vec<NewEvent>,
) -> ToolResultView {
    for hook in with_hook(toolbox, Hook::AfterTool) {
        let ctx = toolbox.hook_context(hook);
        let base = json!({"step_no": request.step, "tool_call_id": request.tool_call_id,
            "name": request.name});
        let replaced = match hook.plugin.after_tool(&ctx, request, &result, writes).await {
            Ok(None) => continue,
            Ok(Some(replacement)) => replacement,
            Err(e) if hook.plugin.manifest().on_error == OnError::Allow => {
                tracing::warn!(capability = %hook.capability, error = %e,
                    "after-tool hook failed; skipped (on_error = allow)");
                continue;
            }
            Err(e) => Err(format!(
                "the result was withheld: the after-tool hook of capability `{}` failed: {e}",
                hook.capability
            )),
        };
        let kind = match &replaced {
            Ok(ToolOutput::Text(_)) => "text",
            Ok(ToolOutput::Json(_)) => "json",
            Err(_) => "error",
        };
        let mut decision = base;
        if let Some(d) = decision.as_object_mut() {
            d.insert("type".into(), json!("replace"));
            d.insert("result".into(), json!(kind));
        }
        events.push(applied(run_id, &hook.capability, Hook::AfterTool, decision));
        result = replaced;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_through_the_journal() {
        let plans = [
            Planned::default(),
            Planned {
                arguments: Some("{\"a\":1}".into()),
                ..Planned::default()
            },
            Planned {
                blocked: Some(Blocked {
                    by: "guardrails".into(),
                    decision: "block",
                    reason: "money".into(),
                }),
                ..Planned::default()
            },
            Planned {
                arguments: Some("{}".into()),
                approval: Some(NeedsApproval {
                    requested_by: "tool_approval".into(),
                    reason: "matches `*`".into(),
                }),
                ..Planned::default()
            },
        ];
        for plan in plans {
            assert_eq!(Planned::from_json(&plan.to_json()), plan);
        }
        // What versions before hooks recorded: nothing, so the call runs as asked.
        assert_eq!(Planned::from_json(&Value::Null), Planned::default());
    }
}
