//! `/v1/agents`: create, list, read, update and delete agents.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use everruns_core::{
    AGENT_NAME_MAX, Agent, AgentId, AgentPatch, CapabilityRef, ModelSettings, NewAgent,
    SYSTEM_PROMPT_MAX,
};
use everruns_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, BodyErrors, FieldError, QueryErrors, check_fields};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};
use crate::routes::approvals::{ToolApprovalBody, validate_policy};
use crate::routes::capabilities::validate_agent_capabilities;

/// Largest `max_tokens` accepted (no model answers more in one response).
const MAX_TOKENS_LIMIT: u32 = 1_000_000;
/// Largest `max_tokens_per_run` accepted.
const MAX_TOKENS_PER_RUN_LIMIT: u64 = 1_000_000_000_000;
/// Largest `max_duration_seconds` accepted: a year.
const MAX_DURATION_LIMIT: u64 = 31_536_000;
/// Largest `max_tool_calls_per_run` accepted.
const MAX_TOOL_CALLS_LIMIT: u64 = 100_000;

/// Most capabilities one agent may enable.
const MAX_CAPABILITIES: usize = 64;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
}

/// Which model an agent uses; missing fields fall back to the server's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSettingsBody {
    /// Provider name or id (see `/v1/providers`); absent means the server's default provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub provider: Option<String>,
    /// Model name as the provider knows it; absent means the provider's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    /// Maximum tokens per model response, 1 to 1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_tokens: Option<u32>,
    /// Maximum steps (LLM calls and tool calls) per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_steps: Option<u32>,
    /// Run budget: tokens (input and output, every model call) one run may spend; a run that
    /// reaches it fails naming the budget. Absent: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000u64)]
    pub max_tokens_per_run: Option<u64>,
    /// Run budget: seconds from the run's first start (time waiting for approval included)
    /// after which it takes no further step. Absent: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31_536_000)]
    pub max_duration_seconds: Option<u64>,
    /// Run budget: tool calls one run may make. Absent: no budget (`max_steps` still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_tool_calls_per_run: Option<u32>,
}

impl From<ModelSettings> for ModelSettingsBody {
    fn from(m: ModelSettings) -> Self {
        Self {
            provider: m.provider,
            model: m.model,
            temperature: m.temperature,
            max_tokens: m.max_tokens,
            max_steps: m.max_steps,
            max_tokens_per_run: m.max_tokens_per_run,
            max_duration_seconds: m.max_duration_seconds,
            max_tool_calls_per_run: m.max_tool_calls_per_run,
        }
    }
}

/// A capability enabled on an agent, with the agent's configuration for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityBody {
    /// Capability id, e.g. `current_time`: 1 to 64 letters, digits, `_`, `-` or `.`.
    #[schema(min_length = 1, max_length = 64)]
    pub id: String,
    /// Configuration object for this capability (validated against its schema).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Body of `POST /v1/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Unique name, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, example = "support-bot")]
    pub name: String,
    /// System prompt (up to 256 KiB).
    #[serde(default)]
    #[schema(example = "You are a helpful assistant.")]
    pub system_prompt: String,
    /// Model settings; omitted fields use the server defaults.
    #[serde(default)]
    pub model: ModelSettingsBody,
    /// Ordered list of capabilities; their prompt fragments are added in this order.
    #[serde(default)]
    pub capabilities: Vec<CapabilityBody>,
    /// Which tool calls need a person's approval before they run.
    pub tool_approval: Option<ToolApprovalBody>,
}

/// Body of `PATCH /v1/agents/{id}`: only the fields present change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    pub system_prompt: Option<String>,
    /// Replaces the model settings as a whole.
    pub model: Option<ModelSettingsBody>,
    /// Replaces the capability list as a whole.
    pub capabilities: Option<Vec<CapabilityBody>>,
    /// Archived agents stay readable but take no new sessions.
    pub archived: Option<bool>,
    /// Replaces the tool approval policy; `null` removes it, absent leaves it.
    #[serde(default, deserialize_with = "crate::json::present")]
    #[schema(value_type = Option<ToolApprovalBody>)]
    pub tool_approval: Option<Option<ToolApprovalBody>>,
}

/// An agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResponse {
    #[schema(example = "agt_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub name: String,
    pub system_prompt: String,
    pub model: ModelSettingsBody,
    pub capabilities: Vec<CapabilityBody>,
    pub archived: bool,
    /// Which tool calls need a person's approval (`null`: none, unless a capability asks).
    pub tool_approval: Option<ToolApprovalBody>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Agent> for AgentResponse {
    fn from(agent: Agent) -> Self {
        Self {
            id: agent.id.to_string(),
            name: agent.name,
            system_prompt: agent.system_prompt,
            model: ModelSettingsBody::from(agent.model),
            capabilities: agent
                .capabilities
                .into_iter()
                .map(|c| CapabilityBody {
                    id: c.id,
                    config: c.config,
                })
                .collect(),
            archived: agent.archived,
            tool_approval: agent.tool_approval.map(ToolApprovalBody::from),
            created_at: agent.created_at,
            updated_at: agent.updated_at,
        }
    }
}

/// Parses an agent id from a path; a malformed id cannot exist, so it is a 404.
pub(crate) fn agent_id(raw: &str) -> ApiResult<AgentId> {
    AgentId::parse(raw).map_err(|e| ApiError::not_found(format!("agent not found: {e}")))
}

fn validate_name(name: &str, errors: &mut Vec<FieldError>) {
    let len = name.chars().count();
    if name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    } else if len > AGENT_NAME_MAX {
        errors.push(FieldError::new(
            "name",
            format!("must be at most {AGENT_NAME_MAX} characters (got {len})"),
        ));
    } else if name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    } else if name.trim() != name {
        errors.push(FieldError::new(
            "name",
            "must not start or end with whitespace",
        ));
    }
}

pub(crate) fn validate_prompt(prompt: &str, errors: &mut Vec<FieldError>) {
    if prompt.len() > SYSTEM_PROMPT_MAX {
        errors.push(FieldError::new(
            "system_prompt",
            format!("must be at most {SYSTEM_PROMPT_MAX} bytes"),
        ));
    }
}

pub(crate) fn validate_model(
    model: &ModelSettingsBody,
    errors: &mut Vec<FieldError>,
) -> ModelSettings {
    for (name, value) in [
        ("model.provider", &model.provider),
        ("model.model", &model.model),
    ] {
        if value.as_ref().is_some_and(|v| {
            v.chars().count() > 200 || !crate::rules::matches(crate::rules::TEXT, v)
        }) {
            errors.push(FieldError::new(
                name,
                "must be 1 to 200 characters, not only whitespace, without control characters",
            ));
        }
    }
    if let Some(t) = model.temperature
        && !(0.0..=2.0).contains(&t)
    {
        errors.push(FieldError::new(
            "model.temperature",
            "must be between 0 and 2",
        ));
    }
    if let Some(t) = model.max_tokens
        && !(1..=MAX_TOKENS_LIMIT).contains(&t)
    {
        errors.push(FieldError::new(
            "model.max_tokens",
            format!("must be between 1 and {MAX_TOKENS_LIMIT}"),
        ));
    }
    if let Some(s) = model.max_steps
        && !(1..=1000).contains(&s)
    {
        errors.push(FieldError::new(
            "model.max_steps",
            "must be between 1 and 1000",
        ));
    }
    for (name, value, max) in [
        (
            "model.max_tokens_per_run",
            model.max_tokens_per_run,
            MAX_TOKENS_PER_RUN_LIMIT,
        ),
        (
            "model.max_duration_seconds",
            model.max_duration_seconds,
            MAX_DURATION_LIMIT,
        ),
        (
            "model.max_tool_calls_per_run",
            model.max_tool_calls_per_run.map(u64::from),
            MAX_TOOL_CALLS_LIMIT,
        ),
    ] {
        if value.is_some_and(|v| !(1..=max).contains(&v)) {
            errors.push(FieldError::new(
                name,
                format!("must be between 1 and {max}"),
            ));
        }
    }
    ModelSettings {
        provider: model.provider.clone(),
        model: model.model.clone(),
        temperature: model.temperature,
        max_tokens: model.max_tokens,
        max_steps: model.max_steps,
        max_tokens_per_run: model.max_tokens_per_run,
        max_duration_seconds: model.max_duration_seconds,
        max_tool_calls_per_run: model.max_tool_calls_per_run,
    }
}

/// A provider the agent names must exist (by name or id) when the agent is saved; it may
/// still be deleted later, which fails the agent's runs with a clear error.
/// `field` names the provider in errors (e.g. `model.provider`).
pub(crate) async fn check_provider(
    state: &AppState,
    model: &ModelSettings,
    field: &str,
) -> ApiResult<()> {
    let Some(name) = &model.provider else {
        return Ok(());
    };
    match state.store.find_provider(name).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => Err(ApiError::invalid_field(
            field,
            format!("no provider is named `{name}` or has that id (see /v1/providers)"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Whether `id` is spelled like a capability id: 1 to 64 letters, digits, `_`, `-` or `.`.
pub(crate) fn valid_capability_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Checks the shape of the list, then (only if that is sound) that each capability is a loaded
/// plugin and its config satisfies the plugin's schema.
pub(crate) fn validate_capabilities(
    runtime: &everruns_runtime::Runtime,
    caps: &[CapabilityBody],
    errors: &mut Vec<FieldError>,
) -> Vec<CapabilityRef> {
    let before = errors.len();
    if caps.len() > MAX_CAPABILITIES {
        errors.push(FieldError::new(
            "capabilities",
            format!("at most {MAX_CAPABILITIES} capabilities per agent"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, cap) in caps.iter().enumerate() {
        if !valid_capability_id(&cap.id) {
            errors.push(FieldError::new(
                format!("capabilities[{i}].id"),
                "must be 1 to 64 characters of letters, digits, `_`, `-` or `.`",
            ));
        } else if !seen.insert(cap.id.as_str()) {
            errors.push(FieldError::new(
                format!("capabilities[{i}].id"),
                format!("capability `{}` is listed twice", cap.id),
            ));
        }
        if !cap.config.is_object() {
            errors.push(FieldError::new(
                format!("capabilities[{i}].config"),
                "must be a JSON object",
            ));
        }
    }
    if errors.len() == before {
        validate_agent_capabilities(runtime, caps, errors);
    }
    caps.iter()
        .map(|c| CapabilityRef {
            id: c.id.clone(),
            config: c.config.clone(),
        })
        .collect()
}

/// List agents.
#[utoipa::path(
    get, path = "/v1/agents", tag = "agents",
    params(PageParams),
    responses(
        (status = 200, description = "A page of agents", body = ListResponse<AgentResponse>),
        QueryErrors,
    )
)]
async fn list_agents(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<AgentResponse>>> {
    let page = state.store.list_agents(&params.to_request()?).await?;
    Ok(Json(ListResponse::from_page(page, AgentResponse::from)))
}

/// Create an agent.
#[utoipa::path(
    post, path = "/v1/agents", tag = "agents",
    request_body = CreateAgent,
    responses(
        (status = 201, description = "The agent was created", body = AgentResponse),
        BodyErrors,
    )
)]
async fn create_agent(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentResponse>)> {
    let mut errors = Vec::new();
    validate_name(&body.name, &mut errors);
    validate_prompt(&body.system_prompt, &mut errors);
    let model = validate_model(&body.model, &mut errors);
    let capabilities = validate_capabilities(&state.runtime, &body.capabilities, &mut errors);
    let tool_approval = body
        .tool_approval
        .as_ref()
        .map(|p| validate_policy(p, "tool_approval", &mut errors));
    check_fields(errors)?;
    check_provider(&state, &model, "model.provider").await?;
    let agent = state
        .store
        .create_agent(NewAgent {
            name: body.name,
            system_prompt: body.system_prompt,
            model,
            capabilities,
            tool_approval,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(agent.into())))
}

/// Get an agent.
#[utoipa::path(
    get, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id (`agt_...`)")),
    responses(
        (status = 200, description = "The agent", body = AgentResponse),
        QueryErrors,
    )
)]
async fn get_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentResponse>> {
    let agent = state.store.get_agent(&agent_id(&id)?).await?;
    Ok(Json(agent.into()))
}

/// Update an agent (only the fields present change).
#[utoipa::path(
    patch, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id (`agt_...`)")),
    request_body = UpdateAgent,
    responses(
        (status = 200, description = "The updated agent", body = AgentResponse),
        BodyErrors,
    )
)]
async fn update_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> ApiResult<Json<AgentResponse>> {
    let id = agent_id(&id)?;
    let mut errors = Vec::new();
    if let Some(name) = &body.name {
        validate_name(name, &mut errors);
    }
    if let Some(prompt) = &body.system_prompt {
        validate_prompt(prompt, &mut errors);
    }
    let model = body.model.as_ref().map(|m| validate_model(m, &mut errors));
    let capabilities = body
        .capabilities
        .as_ref()
        .map(|c| validate_capabilities(&state.runtime, c, &mut errors));
    let tool_approval = body.tool_approval.as_ref().map(|p| {
        p.as_ref()
            .map(|p| validate_policy(p, "tool_approval", &mut errors))
    });
    check_fields(errors)?;
    if let Some(model) = &model {
        check_provider(&state, model, "model.provider").await?;
    }
    let patch = AgentPatch {
        name: body.name,
        system_prompt: body.system_prompt,
        model,
        capabilities,
        archived: body.archived,
        tool_approval,
    };
    let agent = state.store.update_agent(&id, patch).await?;
    Ok(Json(agent.into()))
}

/// Delete an agent with its sessions and messages.
#[utoipa::path(
    delete, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "Agent id (`agt_...`)")),
    responses(
        (status = 204, description = "The agent was deleted"),
        QueryErrors,
    )
)]
async fn delete_agent(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_agent(&agent_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
