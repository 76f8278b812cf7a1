//! Hooks (WIT 0.2.0): what a capability sees before each model call, before each tool call
//! and after each tool call, and what it may answer. Implement them as the default methods
//! of [`crate::Capability`] ([`before_model`](crate::Capability::before_model),
//! [`before_tool`](crate::Capability::before_tool),
//! [`after_tool`](crate::Capability::after_tool)) and list them in the manifest
//! (`hooks = ["before-tool"]`): the host calls only the hooks the manifest lists.
//!
//! Hooks never trap on odd input: arguments that are not valid JSON reach
//! [`ToolRequest::arguments`] as a [`Value::String`] holding the raw text.

use serde_json::Value;

use crate::__bindings::everruns::capability::types as wit;
use crate::__bindings::exports::everruns::capability::hooks as wit_hooks;
use crate::tools::Output;

/// What the model is about to be asked, as `before_model` sees it.
///
/// ```
/// use everruns_sdk::ModelRequest;
///
/// let request = ModelRequest {
///     last_user_message: "What time is it?".into(),
///     tools: vec!["current_time__now".into()],
///     step: 0,
/// };
/// assert!(request.tools.iter().any(|t| t.starts_with("current_time__")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelRequest {
    /// The user message that started the run.
    pub last_user_message: String,
    /// The tools offered to the model, namespaced (`<capability>__<tool>`).
    pub tools: Vec<String>,
    /// The step number of this model call within the run (0 for the first).
    pub step: u32,
}

/// The answer of `before_model`.
///
/// ```
/// use everruns_sdk::ModelDecision;
///
/// let decision = ModelDecision::AddContext("Answer in French.".into());
/// assert_ne!(decision, ModelDecision::Continue);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelDecision {
    /// Ask the model as planned.
    #[default]
    Continue,
    /// Append this text to the system prompt, for this model call only.
    AddContext(String),
    /// Do not ask the model: the run ends as `failed` with an error naming this capability
    /// and the reason.
    Block(String),
}

/// A tool call the model asked for, as `before_tool` and `after_tool` see it.
///
/// ```
/// use everruns_sdk::ToolRequest;
/// use serde_json::json;
///
/// let call = ToolRequest::new("session_files__delete_file", r#"{"path":"a.txt"}"#);
/// assert_eq!(call.arguments, json!({"path": "a.txt"}));
///
/// // Arguments that are not JSON arrive as a string holding the raw text.
/// let odd = ToolRequest::new("x__y", "{oops");
/// assert_eq!(odd.arguments, json!("{oops"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    /// The namespaced tool name (`<capability>__<tool>`).
    pub name: String,
    /// The arguments (after the rewrites of earlier hooks). Normally an object; an empty
    /// text is `{}` (as for tools), and text that is not valid JSON is a
    /// [`Value::String`] holding it unchanged, so a hook never fails to see a call.
    pub arguments: Value,
    /// The model's id of the call.
    pub tool_call_id: String,
    /// The step number the call is recorded as.
    pub step: u32,
}

impl ToolRequest {
    /// A request built by hand (id empty, step 0), for unit tests of hooks; `arguments` is
    /// parsed as the host's text would be.
    ///
    /// ```
    /// let call = everruns_sdk::ToolRequest::new("todo__read_todos", "");
    /// assert_eq!(call.arguments, serde_json::json!({}));
    /// ```
    pub fn new(name: &str, arguments: &str) -> Self {
        Self {
            name: name.to_owned(),
            arguments: parse_arguments(arguments),
            tool_call_id: String::new(),
            step: 0,
        }
    }

    pub(crate) fn from_wit(call: wit_hooks::ToolRequest) -> Self {
        Self {
            arguments: parse_arguments(&call.arguments),
            name: call.name,
            tool_call_id: call.tool_call_id,
            step: call.step,
        }
    }
}

/// The arguments text as JSON: empty means `{}`, invalid JSON is kept as a string.
fn parse_arguments(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The answer of `before_tool`.
///
/// ```
/// use everruns_sdk::ToolDecision;
/// use serde_json::json;
///
/// let decision = ToolDecision::Rewrite(json!({"path": "safe/a.txt"}));
/// assert!(matches!(decision, ToolDecision::Rewrite(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ToolDecision {
    /// Run the call as it is.
    #[default]
    Continue,
    /// Run the call with these arguments instead. They should be a JSON object (the host
    /// checks them against the tool's schema like any arguments).
    Rewrite(Value),
    /// Do not run the call: the model gets a tool result that states the reason.
    Block(String),
    /// A person must approve the call first: the run waits until someone approves it (it
    /// runs as shown) or rejects it (the model is told why), or the approval expires.
    RequireApproval(String),
}

/// A tool's result as `after_tool` sees it and may replace it: the output, or the error
/// text the model would see.
///
/// ```
/// use everruns_sdk::{Output, ToolOutcome};
///
/// let ok: ToolOutcome = Ok(Output::text("42"));
/// let failed: ToolOutcome = Err("failed: upstream unavailable".into());
/// assert!(ok.is_ok() && failed.is_err());
/// ```
pub type ToolOutcome = Result<Output, String>;

impl From<wit::ToolOutput> for Output {
    fn from(output: wit::ToolOutput) -> Self {
        match output {
            wit::ToolOutput::Text(t) => Output::Text(t),
            wit::ToolOutput::Json(j) => Output::Json(j),
        }
    }
}

impl From<ModelDecision> for wit_hooks::ModelDecision {
    fn from(decision: ModelDecision) -> Self {
        match decision {
            ModelDecision::Continue => Self::Continue,
            ModelDecision::AddContext(text) => Self::AddContext(text),
            ModelDecision::Block(reason) => Self::Block(reason),
        }
    }
}

impl From<ToolDecision> for wit_hooks::ToolDecision {
    fn from(decision: ToolDecision) -> Self {
        match decision {
            ToolDecision::Continue => Self::Continue,
            ToolDecision::Rewrite(arguments) => Self::Rewrite(arguments.to_string()),
            ToolDecision::Block(reason) => Self::Block(reason),
            ToolDecision::RequireApproval(reason) => Self::RequireApproval(reason),
        }
    }
}

pub(crate) fn model_request_from_wit(request: wit_hooks::ModelRequest) -> ModelRequest {
    ModelRequest {
        last_user_message: request.last_user_message,
        tools: request.tools,
        step: request.step,
    }
}

pub(crate) fn outcome_from_wit(result: wit_hooks::ToolResult) -> ToolOutcome {
    result.map(Output::from)
}

pub(crate) fn outcome_to_wit(outcome: ToolOutcome) -> wit_hooks::ToolResult {
    outcome.map(wit::ToolOutput::from)
}
