//! The agent's capabilities as one tool list for the model, and tool calls routed back to the
//! plugin that offers them. Tool names are namespaced `<capability>__<tool>` so two
//! capabilities may offer tools of the same name. Also which capabilities have hooks, and
//! whose key-value state a call may write (calls that share one run one after another).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use everruns_core::{
    AgentId, ApprovalMatcher, CapabilityRef, KvScope as StoreScope, KvWrite, Run, RunConfig,
};
use everruns_llm::{ToolCall, ToolSpec};
use everruns_runtime::{
    CallContext, Hook, KvCache, KvOwner, KvScope, KvWrites, Plugin, Runtime, ToolFailure,
    ToolOutput, ToolResultView,
};
use serde_json::{Value, json};

use crate::resolve::SEPARATOR;

/// What the model may call in one run, and where each tool lives.
#[derive(Debug)]
pub struct Toolbox {
    /// Capability prompt fragments, in the agent's order.
    pub fragments: Vec<String>,
    /// Tools as the model sees them.
    pub tools: Vec<ToolSpec>,
    /// The capabilities with hooks, in the agent's order.
    pub hooks: Vec<HookCapability>,
    /// The run's tool approval patterns, compiled (set after `build`).
    pub approval: Option<ApprovalMatcher>,
    /// The run's cache of its session's plugin state (see [`KvCache`]): updated with each
    /// step's writes once the step committed.
    pub kv_cache: Arc<KvCache>,
    routes: HashMap<String, Route>,
    /// Capabilities that may write key-value state.
    stateful: BTreeSet<String>,
    agent_id: String,
    session_id: String,
    run_id: String,
}

/// A capability whose hooks run around the run's calls.
#[derive(Debug)]
pub struct HookCapability {
    /// Its id.
    pub capability: String,
    /// The agent's config for it.
    pub config: Value,
    /// The plugin, as loaded when the run (re)started.
    pub plugin: Arc<Plugin>,
}

#[derive(Debug, Clone)]
struct Route {
    capability: String,
    tool: String,
    config: Value,
}

fn context(agent: &AgentId, run: &Run, config: &Value, key: Option<String>) -> CallContext {
    CallContext {
        agent_id: agent.to_string(),
        session_id: run.session_id.to_string(),
        run_id: run.id.to_string(),
        idempotency_key: key,
        config: Some(config.clone()),
    }
}

impl Toolbox {
    /// An empty write buffer for a step's calls, reading through the run's cache.
    pub fn kv_writes(&self) -> KvWrites {
        KvWrites::reading_through(self.kv_cache.clone())
    }

    /// Collects prompt fragments and tools of every capability (the run's, in order) of
    /// `agent`. A capability that is not loaded is an error naming it: running without tools
    /// the run was configured with would surprise everyone.
    pub async fn build(
        runtime: &Runtime,
        agent: &AgentId,
        capabilities: &[CapabilityRef],
        run: &Run,
    ) -> Result<Self, String> {
        let mut toolbox = Self {
            fragments: Vec::new(),
            tools: Vec::new(),
            hooks: Vec::new(),
            approval: None,
            kv_cache: KvCache::for_session(run.session_id.as_str()),
            routes: HashMap::new(),
            stateful: BTreeSet::new(),
            agent_id: agent.to_string(),
            session_id: run.session_id.to_string(),
            run_id: run.id.to_string(),
        };
        for cap in capabilities {
            let Some(plugin) = runtime.get(&cap.id) else {
                let reason = runtime
                    .failures()
                    .into_iter()
                    .find(|f| f.dir.file_name().is_some_and(|n| n == cap.id.as_str()))
                    .map(|f| format!(": {}", f.error))
                    .unwrap_or_default();
                return Err(format!("capability `{}` is not loaded{reason}", cap.id));
            };
            if plugin.permissions().kv.is_some() {
                toolbox.stateful.insert(cap.id.clone());
            }
            if !plugin.hooks().is_empty() {
                toolbox.hooks.push(HookCapability {
                    capability: cap.id.clone(),
                    config: cap.config.clone(),
                    plugin: plugin.clone(),
                });
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

    /// The system prompt: the agent's, then each capability's fragment, then the text the
    /// overrides append.
    pub fn system_prompt(&self, config: &RunConfig) -> String {
        let mut prompt = config.system_prompt.clone();
        for fragment in self
            .fragments
            .iter()
            .chain(config.system_prompt_append.as_ref())
        {
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

    /// The context a hook of `hook` is called with.
    pub fn hook_context(&self, hook: &HookCapability) -> CallContext {
        CallContext {
            agent_id: self.agent_id.clone(),
            session_id: self.session_id.clone(),
            run_id: self.run_id.clone(),
            idempotency_key: None,
            config: Some(hook.config.clone()),
        }
    }

    /// The capabilities whose key-value state a call of `tool_name` may write: the tool's own
    /// and those of the `after-tool` hooks, when they may write state. Calls of one run that
    /// share one run one after another, each committed before the next starts.
    pub fn state_touched_by(&self, tool_name: &str) -> Vec<String> {
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        if let Some(route) = self.routes.get(tool_name)
            && self.stateful.contains(&route.capability)
        {
            touched.insert(&route.capability);
        }
        for hook in &self.hooks {
            if hook.plugin.has_hook(Hook::AfterTool) && self.stateful.contains(&hook.capability) {
                touched.insert(&hook.capability);
            }
        }
        touched.into_iter().map(str::to_owned).collect()
    }

    /// Runs one tool call, its key-value writes buffered in `writes`. Every failure (unknown
    /// tool, bad JSON, plugin error, trap, limit) becomes an error result the model sees;
    /// nothing here fails the run. Returns the result with the capability and the digest of
    /// the component that ran.
    pub async fn call(
        &self,
        runtime: &Runtime,
        agent: &AgentId,
        run: &Run,
        call: &ToolCall,
        idempotency_key: String,
        writes: &mut KvWrites,
    ) -> (ToolResultView, Option<String>, Option<String>) {
        let Some(route) = self.routes.get(&call.name) else {
            return (Err(format!("unknown tool `{}`", call.name)), None, None);
        };
        let capability = Some(route.capability.clone());
        let arguments = match call.arguments_json() {
            Ok(v) => v,
            Err(e) => {
                return (
                    Err(format!("the arguments are not valid JSON: {e}")),
                    capability,
                    None,
                );
            }
        };
        let ctx = context(agent, run, &route.config, Some(idempotency_key));
        let tool_call = everruns_runtime::ToolCall {
            name: route.tool.clone(),
            arguments,
        };
        let Some(plugin) = runtime.get(&route.capability) else {
            let e = everruns_runtime::Error::NotLoaded(route.capability.clone());
            return (Err(e.to_string()), capability, None);
        };
        let outcome = plugin.call_tool_buffered(&ctx, &tool_call, writes).await;
        let capability = Some(outcome.capability.to_string());
        let digest = Some(outcome.digest.clone());
        let result = match outcome.result {
            Ok(output) => Ok(output),
            Err(ToolFailure::Plugin(e)) => Err(e.to_string()),
            Err(ToolFailure::Runtime(e)) => Err(format!("the tool crashed or hit a limit: {e}")),
        };
        (result, capability, digest)
    }
}

/// A tool result as it is recorded and sent: the text the model sees, whether it is an error,
/// and the structured output of the step and its event.
pub fn recorded_result(result: &ToolResultView) -> (String, bool, Value) {
    match result {
        Ok(ToolOutput::Text(text)) => (text.clone(), false, json!({"text": text})),
        Ok(ToolOutput::Json(value)) => (value.to_string(), false, json!({"json": value})),
        Err(message) => (format!("error: {message}"), true, json!({"error": message})),
    }
}

/// The store's spelling of a plugin's key-value scope.
pub fn store_scope(scope: &KvScope) -> StoreScope {
    let owner = match &scope.owner {
        KvOwner::Agent(id) => StoreScope::agent_owner(id),
        KvOwner::Session(id) => StoreScope::session_owner(id),
    };
    StoreScope {
        plugin: scope.plugin.to_string(),
        owner,
    }
}

/// Buffered writes as the journal step commits them.
pub fn journal_writes(writes: KvWrites) -> Vec<KvWrite> {
    writes
        .into_writes()
        .map(|(scope, key, value)| KvWrite {
            scope: store_scope(&scope),
            key,
            value,
        })
        .collect()
}
