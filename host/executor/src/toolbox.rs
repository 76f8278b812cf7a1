//! The agent's capabilities as one tool list for the model, and tool calls routed back to the
//! plugin that offers them. Tool names are namespaced `<capability>__<tool>` so two
//! capabilities may offer tools of the same name.

use std::collections::HashMap;

use everruns_core::{Agent, Run};
use everruns_llm::{ToolCall, ToolSpec};
use everruns_runtime::{CallContext, Runtime, ToolFailure, ToolOutput};
use serde_json::{Value, json};

/// Separates the capability id from the tool name in the names the model sees.
const SEPARATOR: &str = "__";

/// What the model may call in one run, and where each tool lives.
#[derive(Debug, Default)]
pub struct Toolbox {
    /// Capability prompt fragments, in the agent's order.
    pub fragments: Vec<String>,
    /// Tools as the model sees them.
    pub tools: Vec<ToolSpec>,
    routes: HashMap<String, Route>,
}

#[derive(Debug, Clone)]
struct Route {
    capability: String,
    tool: String,
    config: Value,
}

/// The result of one tool call, ready to be recorded.
#[derive(Debug)]
pub struct ToolResult {
    /// What the model sees.
    pub content: String,
    /// Whether it is an error.
    pub is_error: bool,
    /// Structured output for the step record and the event.
    pub output: Value,
    /// Which capability ran, and the digest of its component.
    pub capability: Option<String>,
    pub digest: Option<String>,
}

fn context(agent: &Agent, run: &Run, config: &Value, key: Option<String>) -> CallContext {
    CallContext {
        agent_id: agent.id.to_string(),
        session_id: run.session_id.to_string(),
        run_id: run.id.to_string(),
        idempotency_key: key,
        config: Some(config.clone()),
    }
}

impl Toolbox {
    /// Collects prompt fragments and tools of every capability of `agent`, in order. A
    /// capability that is not loaded is an error naming it: running without tools the agent
    /// was configured with would surprise everyone.
    pub async fn build(runtime: &Runtime, agent: &Agent, run: &Run) -> Result<Self, String> {
        let mut toolbox = Self::default();
        for cap in &agent.capabilities {
            if runtime.get(&cap.id).is_none() {
                let reason = runtime
                    .failures()
                    .into_iter()
                    .find(|f| f.dir.file_name().is_some_and(|n| n == cap.id.as_str()))
                    .map(|f| format!(": {}", f.error))
                    .unwrap_or_default();
                return Err(format!("capability `{}` is not loaded{reason}", cap.id));
            }
            let ctx = context(agent, run, &cap.config, None);
            match runtime.system_prompt(&cap.id, &ctx).await {
                Ok(Some(fragment)) if !fragment.trim().is_empty() => {
                    toolbox.fragments.push(fragment)
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "capability `{}` failed to give its prompt: {e}",
                        cap.id
                    ));
                }
            }
            let tools = runtime
                .tools(&cap.id, &ctx)
                .await
                .map_err(|e| format!("capability `{}` failed to list its tools: {e}", cap.id))?;
            for tool in tools {
                let name = format!("{}{SEPARATOR}{}", cap.id, tool.name);
                toolbox.routes.insert(
                    name.clone(),
                    Route {
                        capability: cap.id.clone(),
                        tool: tool.name.clone(),
                        config: cap.config.clone(),
                    },
                );
                toolbox.tools.push(ToolSpec {
                    name,
                    description: tool.description,
                    parameters: tool.parameters,
                });
            }
        }
        Ok(toolbox)
    }

    /// The system prompt: the agent's, then each capability's fragment.
    pub fn system_prompt(&self, agent: &Agent) -> String {
        let mut prompt = agent.system_prompt.clone();
        for fragment in &self.fragments {
            if !prompt.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(fragment);
        }
        prompt
    }

    /// The capability a tool name routes to, if any.
    pub fn capability_of(&self, tool_name: &str) -> Option<&str> {
        self.routes.get(tool_name).map(|r| r.capability.as_str())
    }

    /// Runs one tool call. Every failure (unknown tool, bad JSON, plugin error, trap, limit)
    /// becomes an error result the model sees; nothing here fails the run.
    pub async fn call(
        &self,
        runtime: &Runtime,
        agent: &Agent,
        run: &Run,
        call: &ToolCall,
        idempotency_key: String,
    ) -> ToolResult {
        let Some(route) = self.routes.get(&call.name) else {
            return error_result(None, None, format!("unknown tool `{}`", call.name));
        };
        let arguments = match call.arguments_json() {
            Ok(v) => v,
            Err(e) => {
                return error_result(
                    Some(route.capability.clone()),
                    None,
                    format!("the arguments are not valid JSON: {e}"),
                );
            }
        };
        let ctx = context(agent, run, &route.config, Some(idempotency_key));
        let tool_call = everruns_runtime::ToolCall {
            name: route.tool.clone(),
            arguments,
        };
        let outcome = match runtime.call_tool(&route.capability, &ctx, &tool_call).await {
            Ok(outcome) => outcome,
            Err(e) => return error_result(Some(route.capability.clone()), None, e.to_string()),
        };
        let capability = Some(outcome.capability.to_string());
        let digest = Some(outcome.digest.clone());
        match outcome.result {
            Ok(ToolOutput::Text(text)) => ToolResult {
                output: json!({"text": text}),
                content: text,
                is_error: false,
                capability,
                digest,
            },
            Ok(ToolOutput::Json(value)) => ToolResult {
                content: value.to_string(),
                output: json!({"json": value}),
                is_error: false,
                capability,
                digest,
            },
            Err(ToolFailure::Plugin(e)) => error_result(capability, digest, e.to_string()),
            Err(ToolFailure::Runtime(e)) => error_result(
                capability,
                digest,
                format!("the tool crashed or hit a limit: {e}"),
            ),
        }
    }
}

fn error_result(capability: Option<String>, digest: Option<String>, message: String) -> ToolResult {
    ToolResult {
        content: format!("error: {message}"),
        output: json!({"error": message}),
        is_error: true,
        capability,
        digest,
    }
}
