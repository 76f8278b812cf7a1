//! `/v1/sessions`: conversations, each belonging to one agent.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use everruns_core::{NewSession, Session, SessionId, SessionPatch};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, BodyErrors, FieldError, QueryErrors, check_fields};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};
use crate::routes::agents::agent_id;
use crate::routes::overrides::{self, OverridesBody};

/// Longest session title, in characters.
const TITLE_MAX: usize = 500;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, update_session, delete_session))
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The agent this session talks to.
    #[schema(example = "agt_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub agent_id: String,
    /// Optional title, up to 500 characters.
    #[schema(max_length = 500)]
    pub title: Option<String>,
    /// Changes to the agent's configuration for this session's runs.
    pub overrides: Option<OverridesBody>,
}

/// Body of `PATCH /v1/sessions/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    /// New title; `null` clears it, absent leaves it unchanged.
    #[serde(default, deserialize_with = "crate::json::present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub title: Option<Option<String>>,
    /// Replaces the session's overrides as a whole; `null` clears them, absent leaves them.
    #[serde(default, deserialize_with = "crate::json::present")]
    #[schema(value_type = Option<OverridesBody>)]
    pub overrides: Option<Option<OverridesBody>>,
}

/// Query parameters of `GET /v1/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionListParams {
    /// Only sessions of this agent.
    pub agent_id: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (1 to 128 characters, no control characters).
    #[param(min_length = 1, max_length = 128)]
    pub cursor: Option<String>,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    #[schema(example = "ses_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub agent_id: String,
    pub title: Option<String>,
    /// Changes to the agent's configuration for this session's runs, if any.
    pub overrides: Option<OverridesBody>,
    /// `idle` or `running`.
    #[schema(example = "idle")]
    pub status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Session> for SessionResponse {
    fn from(s: Session) -> Self {
        Self {
            id: s.id.to_string(),
            agent_id: s.agent_id.to_string(),
            title: s.title,
            overrides: s.overrides.map(OverridesBody::from),
            status: s.status.as_str().to_owned(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Parses a session id from a path; a malformed id cannot exist, so it is a 404.
pub(crate) fn session_id(raw: &str) -> ApiResult<SessionId> {
    SessionId::parse(raw).map_err(|e| ApiError::not_found(format!("session not found: {e}")))
}

fn validate_title(title: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(t) = title
        && t.chars().count() > TITLE_MAX
    {
        errors.push(FieldError::new(
            "title",
            format!("must be at most {TITLE_MAX} characters"),
        ));
    }
}

/// List sessions, optionally of one agent.
#[utoipa::path(
    get, path = "/v1/sessions", tag = "sessions",
    params(SessionListParams),
    responses(
        (status = 200, description = "A page of sessions", body = ListResponse<SessionResponse>),
        QueryErrors,
    )
)]
async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<SessionListParams>,
) -> ApiResult<Json<ListResponse<SessionResponse>>> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .to_request()?;
    let agent = match &params.agent_id {
        Some(raw) => {
            let id = agent_id(raw)?;
            // Listing the sessions of an agent that does not exist is a 404, not an empty list.
            state.store.get_agent(&id).await?;
            Some(id)
        }
        None => None,
    };
    let page = state.store.list_sessions(agent.as_ref(), &page).await?;
    Ok(Json(ListResponse::from_page(page, SessionResponse::from)))
}

/// Create a session for an agent.
#[utoipa::path(
    post, path = "/v1/sessions", tag = "sessions",
    request_body = CreateSession,
    responses(
        (status = 201, description = "The session was created", body = SessionResponse),
        BodyErrors,
    )
)]
async fn create_session(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateSession>,
) -> ApiResult<(StatusCode, Json<SessionResponse>)> {
    let mut errors = Vec::new();
    validate_title(body.title.as_deref(), &mut errors);
    check_fields(errors)?;
    let agent_id = agent_id(&body.agent_id)?;
    let overrides = match &body.overrides {
        Some(o) => overrides::validate(&state, o).await?,
        None => None,
    };
    let agent = state.store.get_agent(&agent_id).await?;
    if agent.archived {
        return Err(ApiError::conflict(format!(
            "agent `{agent_id}` is archived and takes no new sessions"
        )));
    }
    let session = state
        .store
        .create_session(NewSession {
            agent_id,
            title: body.title,
            overrides,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Get a session.
#[utoipa::path(
    get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_...`)")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        QueryErrors,
    )
)]
async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionResponse>> {
    let session = state.store.get_session(&session_id(&id)?).await?;
    Ok(Json(session.into()))
}

/// Update a session's title or configuration overrides.
#[utoipa::path(
    patch, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_...`)")),
    request_body = UpdateSession,
    responses(
        (status = 200, description = "The updated session", body = SessionResponse),
        BodyErrors,
    )
)]
async fn update_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSession>,
) -> ApiResult<Json<SessionResponse>> {
    let id = session_id(&id)?;
    let mut errors = Vec::new();
    validate_title(body.title.as_ref().and_then(|t| t.as_deref()), &mut errors);
    check_fields(errors)?;
    let overrides = match &body.overrides {
        Some(Some(o)) => Some(overrides::validate(&state, o).await?),
        Some(None) => Some(None),
        None => None,
    };
    let session = state
        .store
        .update_session(
            &id,
            SessionPatch {
                title: body.title,
                overrides,
            },
        )
        .await?;
    Ok(Json(session.into()))
}

/// Delete a session and its messages.
#[utoipa::path(
    delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_...`)")),
    responses(
        (status = 204, description = "The session was deleted"),
        QueryErrors,
    )
)]
async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_session(&session_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
