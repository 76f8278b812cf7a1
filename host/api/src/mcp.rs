//! `/mcp`: Everruns as an MCP server over Streamable HTTP (the official Rust SDK, `rmcp`:
//! sessions with `Mcp-Session-Id`, SSE responses, Host and Origin checks against DNS
//! rebinding), so MCP clients can use our agents. Requests are authenticated like `/v1` (an
//! API key as `Authorization: Bearer`, rate-limited per key); each tool checks the key's role.
//!
//! Tools: `list_agents`, `run_agent {agent_id, message, session_id?}` (starts a run, reports
//! its progress as MCP progress notifications, answers with the final text, `session_id` and
//! `run_id`) and `get_run {run_id}`. Their input schemas are exact (`additionalProperties:
//! false`); bad arguments are `invalid_params` errors naming the argument.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use everruns_core::{
    AgentId, EventType, NewSession, PageRequest, Role, Run, RunId, RunStatus, SessionId,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, InitializeResult,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;

/// The path MCP is served at.
pub const MCP_PATH: &str = "/mcp";

/// Which `Host` and `Origin` headers `/mcp` accepts (DNS-rebinding protection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSettings {
    /// Host names (any port) requests may be addressed to.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) a browser request may come from; empty: requests with
    /// an `Origin` header are refused unless it names an allowed host.
    pub allowed_origins: Vec<String>,
}

impl Default for McpSettings {
    /// Loopback only: a public deployment lists its own host names.
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
        }
    }
}

/// The longest `run_agent` waits for its run before answering with the run's status.
const RUN_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting `run_agent` re-reads the event log when nothing announced new events.
const RUN_POLL: Duration = Duration::from_millis(500);
/// Longest accepted message.
const MESSAGE_MAX: usize = 262_144;

/// The `/mcp` route (authentication is added by the caller).
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let settings = &state.mcp;
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(settings.allowed_hosts.iter().cloned())
        .with_sse_keep_alive(Some(state.events.heartbeat()));
    if !settings.allowed_origins.is_empty() {
        config = config.with_allowed_origins(settings.allowed_origins.iter().cloned());
    }
    let handler = EverrunsMcp {
        state: state.clone(),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // The one route outside the OpenAPI document: MCP is JSON-RPC, described by its own spec.
    Router::new().route_service(MCP_PATH, service)
}

/// One MCP session's handler: the API's state.
#[derive(Clone)]
struct EverrunsMcp {
    state: AppState,
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(object) => Arc::new(object),
        _ => unreachable!("tool schemas are objects"),
    }
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "list_agents",
            "List the agents: id, name, whether archived, and the start of their system prompt.",
            schema(json!({
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": 200,
                              "description": "Agents per page (default 50)"},
                    "cursor": {"type": "string", "minLength": 1,
                               "description": "`next_cursor` of the previous page"}
                },
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "run_agent",
            "Send a message to an agent and wait for its answer. Starts a new conversation \
             unless `session_id` continues one. Progress is reported as the run goes; the \
             result carries the answer text, `session_id` and `run_id`.",
            schema(json!({
                "type": "object",
                "properties": {
                    "agent_id": {"type": "string", "pattern": "^agt_[0-9a-f]{32}$",
                                 "description": "The agent (`agt_...`)"},
                    "message": {"type": "string", "minLength": 1, "maxLength": MESSAGE_MAX,
                                "description": "What the user says"},
                    "session_id": {"type": "string", "pattern": "^ses_[0-9a-f]{32}$",
                                   "description": "A conversation of this agent to continue"}
                },
                "required": ["agent_id", "message"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "get_run",
            "A run's status, its answer once completed, or why it failed.",
            schema(json!({
                "type": "object",
                "properties": {
                    "run_id": {"type": "string", "pattern": "^run_[0-9a-f]{32}$",
                               "description": "The run (`run_...`)"}
                },
                "required": ["run_id"],
                "additionalProperties": false
            })),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListAgentsArgs {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunAgentArgs {
    agent_id: String,
    message: String,
    session_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetRunArgs {
    run_id: String,
}

/// The tool's arguments, or an `invalid_params` error naming the argument at fault.
fn arguments<T: DeserializeOwned>(tool: &str, args: Option<JsonObject>) -> Result<T, McpError> {
    let value = Value::Object(args.unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let message = if path == "." {
            format!("{tool}: invalid arguments: {inner}")
        } else {
            format!("{tool}: invalid argument `{path}`: {inner}")
        };
        McpError::invalid_params(message, None)
    })
}

fn invalid(tool: &str, argument: &str, why: &str) -> McpError {
    McpError::invalid_params(
        format!("{tool}: invalid argument `{argument}`: {why}"),
        None,
    )
}

/// A failure the caller should see as the tool's result (`isError`), not as a protocol error.
fn failed(text: String) -> CallToolResponse {
    CallToolResult::error(vec![rmcp::model::ContentBlock::text(text)]).into()
}

fn done(value: Value) -> CallToolResponse {
    CallToolResult::structured(value).into()
}

/// The key the request was made with (the auth middleware put it on the HTTP request).
fn caller(cx: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
    cx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| McpError::internal_error("the request carries no API key", None))
}

fn needs(caller: &Caller, role: Role, tool: &str) -> Result<(), McpError> {
    if caller.role.allows(role) {
        Ok(())
    } else {
        Err(McpError::invalid_request(
            format!(
                "{tool} needs the `{role}` role; the API key `{}` is `{}`",
                caller.name, caller.role
            ),
            None,
        ))
    }
}

fn store_error(e: everruns_store::StoreError) -> CallToolResponse {
    match e {
        everruns_store::StoreError::NotFound { entity, id } => {
            failed(format!("{entity} `{id}` not found"))
        }
        everruns_store::StoreError::Invalid(message)
        | everruns_store::StoreError::Conflict(message) => failed(message),
        other => {
            tracing::error!(error = %other, "MCP tool failed on the store");
            failed("the server hit an internal error; it has been logged".into())
        }
    }
}

/// A run as the tools describe it.
fn run_json(run: &Run, text: Option<&str>) -> Value {
    json!({
        "run_id": run.id.as_str(),
        "session_id": run.session_id.as_str(),
        "status": run.status.as_str(),
        "text": text,
        "error": run.error,
        "usage": {"input_tokens": run.usage.input_tokens, "output_tokens": run.usage.output_tokens},
    })
}

impl ServerHandler for EverrunsMcp {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("everruns", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Everruns agents: list them with list_agents, talk to one with run_agent \
                 (the answer comes back when its run ends), look a run up with get_run.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = caller(&cx)?;
        match request.name.as_ref() {
            "list_agents" => {
                needs(&caller, Role::Reader, "list_agents")?;
                let args: ListAgentsArgs = arguments("list_agents", request.arguments)?;
                self.list_agents(args).await
            }
            "run_agent" => {
                needs(&caller, Role::Operator, "run_agent")?;
                let args: RunAgentArgs = arguments("run_agent", request.arguments)?;
                self.run_agent(&caller, args, &cx).await
            }
            "get_run" => {
                needs(&caller, Role::Reader, "get_run")?;
                let args: GetRunArgs = arguments("get_run", request.arguments)?;
                self.get_run(args).await
            }
            other => Err(McpError::invalid_params(
                format!("unknown tool `{other}` (list_agents, run_agent, get_run)"),
                None,
            )),
        }
    }
}

impl EverrunsMcp {
    async fn list_agents(&self, args: ListAgentsArgs) -> Result<CallToolResponse, McpError> {
        let limit = args.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(invalid("list_agents", "limit", "must be between 1 and 200"));
        }
        if args
            .cursor
            .as_deref()
            .is_some_and(|c| c.is_empty() || c.contains('\0'))
        {
            return Err(invalid(
                "list_agents",
                "cursor",
                "must be a `next_cursor` value",
            ));
        }
        let page = PageRequest {
            limit,
            after: args.cursor,
        };
        let page = match self.state.store.list_agents(&page).await {
            Ok(page) => page,
            Err(e) => return Ok(store_error(e)),
        };
        let agents: Vec<Value> = page
            .items
            .iter()
            .map(|a| {
                let mut prompt: String = a.system_prompt.chars().take(200).collect();
                if prompt.len() < a.system_prompt.len() {
                    prompt.push('…');
                }
                json!({"id": a.id.as_str(), "name": a.name, "archived": a.archived,
                       "system_prompt": prompt})
            })
            .collect();
        Ok(done(json!({
            "agents": agents,
            "next_cursor": page.next_cursor,
            "total": page.total,
        })))
    }

    async fn get_run(&self, args: GetRunArgs) -> Result<CallToolResponse, McpError> {
        let id =
            RunId::parse(&args.run_id).map_err(|e| invalid("get_run", "run_id", &e.to_string()))?;
        let run = match self.state.store.get_run(&id).await {
            Ok(run) => run,
            Err(e) => return Ok(store_error(e)),
        };
        let text = match self.answer_of(&run).await {
            Ok(text) => text,
            Err(e) => return Ok(store_error(e)),
        };
        Ok(done(run_json(&run, text.as_deref())))
    }

    /// The text a completed run answered with (its `run.completed` event).
    async fn answer_of(&self, run: &Run) -> Result<Option<String>, everruns_store::StoreError> {
        if run.status != RunStatus::Completed {
            return Ok(None);
        }
        let mut since = 0;
        loop {
            let events = self
                .state
                .store
                .list_events(&run.session_id, since, 500)
                .await?;
            let Some(last) = events.last() else {
                return Ok(None);
            };
            since = last.seq;
            if let Some(done) = events.iter().find(|e| {
                e.event_type == EventType::RunCompleted && e.run_id.as_ref() == Some(&run.id)
            }) {
                return Ok(done.payload["text"].as_str().map(str::to_owned));
            }
        }
    }

    async fn run_agent(
        &self,
        caller: &Caller,
        args: RunAgentArgs,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        const TOOL: &str = "run_agent";
        let agent = AgentId::parse(&args.agent_id)
            .map_err(|e| invalid(TOOL, "agent_id", &e.to_string()))?;
        if args.message.trim().is_empty() || args.message.contains('\0') {
            return Err(invalid(
                TOOL,
                "message",
                "must not be empty or only whitespace, nor contain NUL characters",
            ));
        }
        if args.message.chars().count() > MESSAGE_MAX {
            return Err(invalid(
                TOOL,
                "message",
                &format!("must be at most {MESSAGE_MAX} characters"),
            ));
        }
        // Counted before anything is created: a refused start leaves nothing behind.
        self.state
            .limits
            .run_start(&caller.id)
            .map_err(|e| McpError::invalid_request(e.detail().to_owned(), None))?;
        let session = match &args.session_id {
            Some(raw) => {
                let id = SessionId::parse(raw)
                    .map_err(|e| invalid(TOOL, "session_id", &e.to_string()))?;
                match self.state.store.get_session(&id).await {
                    Ok(session) if session.agent_id == agent => session,
                    Ok(_) => {
                        return Err(invalid(
                            TOOL,
                            "session_id",
                            "is a conversation of another agent",
                        ));
                    }
                    Err(e) => return Ok(store_error(e)),
                }
            }
            None => {
                let new = NewSession {
                    agent_id: agent.clone(),
                    title: Some(args.message.chars().take(80).collect()),
                    overrides: None,
                };
                match self.state.store.create_session(new).await {
                    Ok(session) => session,
                    Err(e) => return Ok(store_error(e)),
                }
            }
        };
        // Watched before the run starts, so no event of it is missed.
        let mut feed = self.state.store.event_bus().watch(&session.id);
        let since = self.last_seq(&session.id).await;
        let started = match self
            .state
            .runs
            .start_run(&session.id, args.message, None, None)
            .await
        {
            Ok(started) => started,
            Err(e) => return Ok(store_error(e)),
        };
        let run_id = started.run.id.clone();
        let progress = cx.meta.get_progress_token();
        let mut last = since;
        let mut reported = 0u32;
        let deadline = tokio::time::Instant::now() + RUN_WAIT;
        loop {
            let events = match self.state.store.list_events(&session.id, last, 500).await {
                Ok(events) => events,
                Err(e) => return Ok(store_error(e)),
            };
            for event in &events {
                last = event.seq;
                if event.run_id.as_ref() != Some(&run_id) {
                    continue;
                }
                let note = match event.event_type {
                    EventType::RunStarted => Some("the run started".to_owned()),
                    EventType::ToolStarted => Some(format!(
                        "calling {}",
                        event.payload["name"].as_str().unwrap_or("a tool")
                    )),
                    EventType::ToolCompleted | EventType::ToolFailed => {
                        Some("a tool call finished".to_owned())
                    }
                    EventType::StepCompleted => Some("a step completed".to_owned()),
                    EventType::ToolApprovalRequested => {
                        Some("a tool call waits for a person's approval".to_owned())
                    }
                    _ => None,
                };
                if let (Some(note), Some(token)) = (note, &progress) {
                    reported += 1;
                    let _ = cx
                        .peer
                        .notify_progress(
                            ProgressNotificationParam::new(token.clone(), f64::from(reported))
                                .with_message(note),
                        )
                        .await;
                }
                match event.event_type {
                    EventType::RunCompleted => {
                        let text = event.payload["text"].as_str().unwrap_or_default();
                        return Ok(done(json!({
                            "text": text,
                            "session_id": session.id.as_str(),
                            "run_id": run_id.as_str(),
                            "status": "completed",
                        })));
                    }
                    EventType::RunFailed | EventType::RunCancelled => {
                        let status = if event.event_type == EventType::RunFailed {
                            "failed"
                        } else {
                            "cancelled"
                        };
                        let error = event.payload["error"].as_str().unwrap_or(status);
                        return Ok(CallToolResult::structured_error(json!({
                            "error": error,
                            "session_id": session.id.as_str(),
                            "run_id": run_id.as_str(),
                            "status": status,
                        }))
                        .into());
                    }
                    _ => {}
                }
            }
            if events.len() == 500 {
                continue;
            }
            tokio::select! {
                appended = feed.next() => {
                    if appended.is_none() {
                        tokio::time::sleep(RUN_POLL).await;
                    }
                }
                () = tokio::time::sleep(RUN_POLL) => {}
                () = cx.ct.cancelled() => {
                    return Err(McpError::invalid_request(
                        format!("cancelled; the run {run_id} goes on (get_run follows it)"),
                        None,
                    ));
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(done(json!({
                        "text": null,
                        "session_id": session.id.as_str(),
                        "run_id": run_id.as_str(),
                        "status": "running",
                        "note": "the run is still going; follow it with get_run",
                    })));
                }
            }
        }
    }

    /// The last sequence number of the session's log (0 when empty).
    async fn last_seq(&self, session: &SessionId) -> i64 {
        let mut since = 0;
        loop {
            match self.state.store.list_events(session, since, 500).await {
                Ok(events) if events.len() == 500 => since = events.last().map_or(since, |e| e.seq),
                Ok(events) => return events.last().map_or(since, |e| e.seq),
                Err(_) => return since,
            }
        }
    }
}
