//! [`Context`]: who is calling (agent, session, run), the idempotency key, and the
//! plugin's configuration for this agent.

use serde::de::DeserializeOwned;

use crate::__bindings::everruns::capability::types as wit;
use crate::tools::ToolError;

/// The context of one host request. Ids are empty when the host probes the plugin at
/// load time (no agent, no session).
///
/// ```
/// use everruns_sdk::Context;
///
/// let ctx = Context::new("agt_1", "ses_1", "run_1", r#"{"units":"metric"}"#);
/// assert_eq!(ctx.session_id(), "ses_1");
/// assert_eq!(ctx.config_value()["units"], "metric");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Context {
    agent_id: String,
    session_id: String,
    run_id: String,
    idempotency_key: Option<String>,
    config: String,
}

impl Context {
    /// A context built by hand, for unit tests of tool functions.
    ///
    /// ```
    /// let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", "{}");
    /// assert_eq!(ctx.agent_id(), "agt_1");
    /// ```
    pub fn new(agent_id: &str, session_id: &str, run_id: &str, config_json: &str) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            session_id: session_id.to_owned(),
            run_id: run_id.to_owned(),
            idempotency_key: None,
            config: config_json.to_owned(),
        }
    }

    pub(crate) fn from_wit(ctx: wit::CallContext) -> Self {
        Self {
            agent_id: ctx.agent_id,
            session_id: ctx.session_id,
            run_id: ctx.run_id,
            idempotency_key: ctx.idempotency_key,
            config: ctx.config,
        }
    }

    /// The agent the call is made for (`agt_...`).
    ///
    /// ```
    /// # let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", "{}");
    /// assert!(ctx.agent_id().starts_with("agt_"));
    /// ```
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The session the call is made in (`ses_...`).
    ///
    /// ```
    /// # let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", "{}");
    /// assert_eq!(ctx.session_id(), "ses_1");
    /// ```
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The run the call belongs to (`run_...`).
    ///
    /// ```
    /// # let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", "{}");
    /// assert_eq!(ctx.run_id(), "run_1");
    /// ```
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Stable across retries of the same tool step; use it to make side effects happen at
    /// most once. `None` outside tool calls.
    ///
    /// ```
    /// # let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", "{}");
    /// assert_eq!(ctx.idempotency_key(), None);
    /// ```
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The plugin's configuration (manifest defaults overlaid with the agent's settings)
    /// as JSON; `Null` if it is not valid JSON.
    ///
    /// ```
    /// # let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", r#"{"n":3}"#);
    /// assert_eq!(ctx.config_value()["n"], 3);
    /// ```
    pub fn config_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.config).unwrap_or(serde_json::Value::Null)
    }

    /// The configuration parsed into `T`; an error names the offending field.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Config {
    ///     units: String,
    /// }
    /// # let ctx = everruns_sdk::Context::new("agt_1", "ses_1", "run_1", r#"{"units":"metric"}"#);
    /// let config: Config = ctx.config().unwrap();
    /// assert_eq!(config.units, "metric");
    /// ```
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, ToolError> {
        let mut de = serde_json::Deserializer::from_str(&self.config);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| ToolError::Failed(format!("invalid plugin configuration: {e}")))
    }
}
