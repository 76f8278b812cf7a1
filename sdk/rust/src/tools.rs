//! [`Tools`]: tool registration, JSON Schema generation from the arguments type (schemars),
//! argument parsing that names the offending field, and the result types [`Output`] and
//! [`ToolError`].

use std::fmt;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::__bindings::everruns::capability::types as wit;
use crate::context::Context;

/// What a tool function returns.
///
/// ```
/// use everruns_sdk::{Output, ToolError, ToolResult};
///
/// fn find(id: u32) -> ToolResult {
///     if id == 0 {
///         return Err(ToolError::NotFound(format!("no item {id}")));
///     }
///     Ok(Output::text("found"))
/// }
/// assert!(find(0).is_err());
/// ```
pub type ToolResult = Result<Output, ToolError>;

/// A successful tool result, shown to the model as the tool message.
///
/// ```
/// use everruns_sdk::Output;
///
/// let text: Output = "done".into();
/// let json = Output::json(&serde_json::json!({"count": 2}));
/// assert_eq!(text, Output::Text("done".into()));
/// assert_eq!(json, Output::Json(r#"{"count":2}"#.into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Plain text.
    Text(String),
    /// A JSON document, serialized.
    Json(String),
}

impl Output {
    /// Plain text.
    ///
    /// ```
    /// assert_eq!(everruns_sdk::Output::text("hi"), everruns_sdk::Output::Text("hi".into()));
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    /// Any serializable value as a JSON document. Values that cannot be serialized
    /// (maps with non-string keys) become `null`.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Sum {
    ///     total: i64,
    /// }
    /// let out = everruns_sdk::Output::json(&Sum { total: 3 });
    /// assert_eq!(out, everruns_sdk::Output::Json(r#"{"total":3}"#.into()));
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        Self::Json(serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()))
    }
}

impl From<String> for Output {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Output {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Value> for Output {
    fn from(value: Value) -> Self {
        Self::Json(value.to_string())
    }
}

impl From<Output> for wit::ToolOutput {
    fn from(output: Output) -> Self {
        match output {
            Output::Text(t) => wit::ToolOutput::Text(t),
            Output::Json(j) => wit::ToolOutput::Json(j),
        }
    }
}

/// An error for the model: it sees the message and may retry or change course. Host
/// helper errors convert into it, so `?` works in tool functions.
///
/// ```
/// use everruns_sdk::ToolError;
///
/// let e = ToolError::invalid_argument("path", "must not be empty");
/// assert_eq!(e.to_string(), "invalid arguments: path: must not be empty");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The arguments did not match the schema or made no sense.
    InvalidArguments(String),
    /// The tool, or something it was asked about, does not exist.
    NotFound(String),
    /// The tool tried and failed.
    Failed(String),
    /// The plugin refused (a missing permission or secret).
    Denied(String),
}

impl ToolError {
    /// An invalid-arguments error naming `field`.
    ///
    /// ```
    /// let e = everruns_sdk::ToolError::invalid_argument("limit", "must be at most 100");
    /// assert!(e.to_string().contains("limit"));
    /// ```
    pub fn invalid_argument(field: &str, message: impl fmt::Display) -> Self {
        Self::InvalidArguments(format!("{field}: {message}"))
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArguments(m) => write!(f, "invalid arguments: {m}"),
            Self::NotFound(m) => write!(f, "not found: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
            Self::Denied(m) => write!(f, "denied: {m}"),
        }
    }
}

impl std::error::Error for ToolError {}

impl From<ToolError> for wit::ToolError {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::InvalidArguments(m) => wit::ToolError::InvalidArguments(m),
            ToolError::NotFound(m) => wit::ToolError::NotFound(m),
            ToolError::Failed(m) => wit::ToolError::Failed(m),
            ToolError::Denied(m) => wit::ToolError::Denied(m),
        }
    }
}

type Handler = Box<dyn Fn(&Context, &str) -> ToolResult>;

struct Tool {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Value,
    handler: Handler,
}

/// The tools of a capability, registered in [`crate::Capability::tools`].
///
/// ```
/// use everruns_sdk::prelude::*;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct EchoArgs {
///     /// The text to echo.
///     text: String,
/// }
///
/// let mut tools = Tools::default();
/// tools.add("echo", "Returns the text", |_ctx, args: EchoArgs| Ok(args.text.into()));
/// let ctx = Context::default();
/// assert_eq!(tools.call(&ctx, "echo", r#"{"text":"hi"}"#), Ok(Output::text("hi")));
/// ```
#[derive(Default)]
pub struct Tools {
    tools: Vec<Tool>,
}

impl fmt::Debug for Tools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.name))
            .finish()
    }
}

impl Tools {
    /// Registers a tool: its name (`[a-zA-Z0-9_-]{1,64}`, unique in the plugin), a
    /// description written for the model, and the function. The arguments type `A`
    /// gives the JSON Schema (doc comments become descriptions) and is parsed from the
    /// call's arguments before `f` runs; a mismatch never reaches `f`.
    ///
    /// ```
    /// use everruns_sdk::prelude::*;
    ///
    /// #[derive(Deserialize, JsonSchema)]
    /// struct Args {
    ///     n: u32,
    /// }
    ///
    /// let mut tools = Tools::default();
    /// tools.add("double", "Doubles n", |_ctx, a: Args| Ok((a.n * 2).to_string().into()));
    /// let err = tools.call(&Context::default(), "double", r#"{"n":"x"}"#).unwrap_err();
    /// assert!(err.to_string().contains("n: invalid type"), "{err}");
    /// ```
    pub fn add<A, F>(&mut self, name: &'static str, description: &'static str, f: F) -> &mut Self
    where
        A: DeserializeOwned + JsonSchema + 'static,
        F: Fn(&Context, A) -> ToolResult + 'static,
    {
        self.tools.push(Tool {
            name,
            description,
            schema: schema_of::<A>,
            handler: Box::new(move |ctx: &Context, arguments: &str| {
                f(ctx, parse_arguments::<A>(arguments)?)
            }),
        });
        self
    }

    /// The names of the registered tools, in registration order.
    ///
    /// ```
    /// let tools = everruns_sdk::Tools::default();
    /// assert!(tools.names().is_empty());
    /// ```
    pub fn names(&self) -> Vec<&'static str> {
        self.tools.iter().map(|t| t.name).collect()
    }

    /// The JSON Schema of tool `name`'s arguments.
    ///
    /// ```
    /// use everruns_sdk::prelude::*;
    ///
    /// #[derive(Deserialize, JsonSchema)]
    /// struct Args {
    ///     city: String,
    /// }
    /// let mut tools = Tools::default();
    /// tools.add("weather", "Weather in a city", |_ctx, _a: Args| Ok("sunny".into()));
    /// let schema = tools.schema("weather").unwrap();
    /// assert_eq!(schema["type"], "object");
    /// assert_eq!(schema["required"][0], "city");
    /// ```
    pub fn schema(&self, name: &str) -> Option<Value> {
        self.tools
            .iter()
            .find(|t| t.name == name)
            .map(|t| (t.schema)())
    }

    /// Runs tool `name` with `arguments` (a JSON object as text; empty means `{}`), as the
    /// host does. Useful in unit tests of a capability.
    ///
    /// ```
    /// let tools = everruns_sdk::Tools::default();
    /// let err = tools.call(&everruns_sdk::Context::default(), "nope", "{}").unwrap_err();
    /// assert_eq!(err, everruns_sdk::ToolError::NotFound("no tool named `nope`".into()));
    /// ```
    pub fn call(&self, ctx: &Context, name: &str, arguments: &str) -> ToolResult {
        let tool = self
            .tools
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ToolError::NotFound(format!("no tool named `{name}`")))?;
        (tool.handler)(ctx, arguments)
    }

    pub(crate) fn specs(&self) -> Vec<wit::ToolSpec> {
        self.tools
            .iter()
            .map(|t| wit::ToolSpec {
                name: t.name.to_owned(),
                description: t.description.to_owned(),
                parameters_schema: (t.schema)().to_string(),
            })
            .collect()
    }
}

/// The schema of `A`: subschemas inlined, without `$schema` and `title` (models only
/// need the shape and the descriptions).
fn schema_of<A: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut schema = Value::from(generator.into_root_schema_for::<A>());
    if let Value::Object(map) = &mut schema {
        map.remove("title");
    }
    schema
}

/// Parses a call's arguments into `A`; errors name the field (`items[2].title: ...`).
fn parse_arguments<A: DeserializeOwned>(arguments: &str) -> Result<A, ToolError> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ToolError::InvalidArguments(format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ToolError::InvalidArguments(
            "arguments must be a JSON object".into(),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ToolError::InvalidArguments(inner.to_string())
        } else {
            ToolError::InvalidArguments(format!("{path}: {inner}"))
        }
    })
}
