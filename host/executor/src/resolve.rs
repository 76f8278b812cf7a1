//! The configuration a run is created with: the agent's, with the session's overrides and then
//! the message's on top, the server's default step limit, and the tool names its capabilities
//! offer. Resolved once, when the run is created, and stored with it.

use everruns_core::{Overrides, RunConfig, SessionId};
use everruns_runtime::{CallContext, Runtime};
use everruns_store::{Store, StoreError};

/// Separates the capability id from the tool name in the names the model sees.
pub(crate) const SEPARATOR: &str = "__";

/// The configuration of a new run of `session` for a message with `message` overrides.
pub(crate) async fn run_config(
    store: &dyn Store,
    runtime: &Runtime,
    session: &SessionId,
    message: Option<&Overrides>,
    default_max_steps: u32,
) -> Result<RunConfig, StoreError> {
    let (agent, session_overrides) = store.session_agent(session).await?;
    let mut config = RunConfig::resolve(
        &agent,
        session_overrides.as_ref(),
        message,
        default_max_steps,
    );
    for cap in &config.capabilities {
        // A capability that is not loaded offers nothing now; the run fails with the reason
        // when it starts.
        let Some(plugin) = runtime.get(&cap.id) else {
            continue;
        };
        // With the default configuration the tools are the ones listed at load: no call.
        let manifest = plugin.manifest();
        let names: Vec<String> =
            if manifest.effective_config(Some(&cap.config)) == manifest.effective_config(None) {
                plugin.tools().iter().map(|t| t.name.clone()).collect()
            } else {
                let ctx = CallContext {
                    agent_id: agent.id.to_string(),
                    session_id: session.to_string(),
                    config: Some(cap.config.clone()),
                    ..CallContext::default()
                };
                match plugin.tools_for(&ctx).await {
                    Ok(tools) => tools.into_iter().map(|t| t.name).collect(),
                    Err(_) => continue,
                }
            };
        config.tools.extend(
            names
                .into_iter()
                .map(|name| format!("{}{SEPARATOR}{name}", cap.id)),
        );
    }
    Ok(config)
}
