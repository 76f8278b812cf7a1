//! Runs: `POST /v1/sessions/{id}/messages` starts one, `GET /v1/runs/{id}` shows it with its
//! steps, `GET /v1/sessions/{id}/runs` lists them, `POST /v1/runs/{id}/cancel` stops one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use everruns_core::{Run, RunId, Step};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, BodyErrors, FieldError, QueryErrors, check_fields};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};
use crate::routes::overrides::{self, OverridesBody, RunConfigResponse};
use crate::routes::sessions::session_id;

/// Longest user message, in characters.
const CONTENT_MAX: usize = 256 * 1024;
/// Longest `Idempotency-Key`, in bytes.
const IDEMPOTENCY_KEY_MAX: usize = 255;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
}

/// Body of `POST /v1/sessions/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// What the user says: 1 to 262,144 characters, not only whitespace, no NUL.
    #[schema(
        min_length = 1,
        max_length = 262_144,
        example = "What time is it in Tokyo?"
    )]
    pub content: String,
    /// Changes to the configuration for the run this message starts only (on top of the
    /// session's).
    pub overrides: Option<OverridesBody>,
}

/// Token usage of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A run: one answer of the agent to one user message.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    #[schema(example = "run_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub session_id: String,
    /// `queued`, `running`, `waiting_approval` (parked until people decide on its tool calls;
    /// see `/v1/runs/{id}/approvals`), `completed`, `failed`, `cancelling` or `cancelled`.
    #[schema(example = "queued")]
    pub status: String,
    /// The user message that started the run.
    pub trigger_message_id: String,
    /// When another run of the session is still active, the run this one waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
    pub steps_completed: u32,
    /// Takeovers after a worker stopped without finishing a step.
    pub recovery_attempts: u32,
    pub usage: UsageResponse,
    /// Why the run failed.
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The configuration the run executes with, resolved when it was created (`null` for
    /// runs created before configurations were recorded).
    pub config: Option<RunConfigResponse>,
    /// The journal; present on `GET /v1/runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepResponse>>,
}

impl RunResponse {
    fn new(run: Run, queued_behind: Option<RunId>, steps: Option<Vec<Step>>) -> Self {
        Self {
            id: run.id.to_string(),
            session_id: run.session_id.to_string(),
            status: run.status.as_str().to_owned(),
            trigger_message_id: run.trigger_message_id.to_string(),
            queued_behind: queued_behind.map(|r| r.to_string()),
            steps_completed: run.steps_completed,
            recovery_attempts: run.recovery_attempts,
            usage: UsageResponse {
                input_tokens: run.usage.input_tokens,
                output_tokens: run.usage.output_tokens,
            },
            error: run.error,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            config: run.config.map(RunConfigResponse::from),
            steps: steps.map(|s| s.into_iter().map(StepResponse::from).collect()),
        }
    }
}

/// One journaled step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepResponse {
    pub step_no: u32,
    /// `llm` or `tool`.
    pub kind: String,
    /// `completed` or `failed`.
    pub status: String,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    /// How many times the step was executed (more than 1 after a takeover).
    pub attempt: u32,
    /// The capability a tool step ran in, and its component digest.
    pub capability_id: Option<String>,
    pub digest: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: chrono::DateTime<chrono::Utc>,
}

impl From<Step> for StepResponse {
    fn from(s: Step) -> Self {
        Self {
            step_no: s.step_no,
            kind: s.kind.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
            input: s.input,
            output: s.output,
            attempt: s.attempt,
            capability_id: s.capability_id,
            digest: s.digest,
            started_at: s.started_at,
            finished_at: s.finished_at,
        }
    }
}

pub(crate) fn run_id(raw: &str) -> ApiResult<RunId> {
    RunId::parse(raw).map_err(|e| ApiError::not_found(format!("run not found: {e}")))
}

/// Send a message: stores it and starts a run that answers it (202). Sending the same
/// `Idempotency-Key` again returns the same run. While another run of the session is active,
/// the new one waits behind it (`queued_behind`).
#[utoipa::path(
    post, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id (`ses_...`)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Makes a retried POST return the same run: 1 to 255 visible ASCII characters (inner spaces allowed)"),
    ),
    request_body = PostMessage,
    responses(
        (status = 202, description = "The run was queued (or, for a repeated Idempotency-Key, the existing run)", body = RunResponse),
        BodyErrors,
    )
)]
async fn post_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessage>,
) -> ApiResult<(StatusCode, Json<RunResponse>)> {
    let session = session_id(&id)?;
    let mut errors = Vec::new();
    if !crate::rules::matches(crate::rules::CONTENT, &body.content) {
        errors.push(FieldError::new(
            "content",
            "must not be empty or only whitespace, nor contain NUL characters",
        ));
    } else if body.content.chars().count() > CONTENT_MAX {
        errors.push(FieldError::new(
            "content",
            format!("must be at most {CONTENT_MAX} characters"),
        ));
    }
    check_fields(errors)?;
    let message_overrides = match &body.overrides {
        Some(o) => overrides::validate(&state, o).await?,
        None => None,
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| {
                    k.len() <= IDEMPOTENCY_KEY_MAX
                        && crate::rules::matches(crate::rules::HEADER_TOKEN, k)
                })
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(key.to_owned())
        }
    };
    let started = state
        .runs
        .start_run(
            &session,
            body.content.clone(),
            key,
            message_overrides.as_ref(),
        )
        .await?;
    if !started.created {
        // The same key for a different request is a client bug, not a retry.
        let recorded = started
            .run
            .config
            .as_ref()
            .and_then(|c| c.message_overrides.as_ref());
        let field = if started.message.content != body.content {
            Some("content")
        } else if recorded != message_overrides.as_ref() {
            Some("overrides")
        } else {
            None
        };
        if let Some(field) = field {
            return Err(ApiError::invalid_field(
                field,
                "differs from the request that used this Idempotency-Key first; use a new key \
                 for a new message",
            ));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RunResponse::new(started.run, started.queued_behind, None)),
    ))
}

/// List the runs of a session, oldest first.
#[utoipa::path(
    get, path = "/v1/sessions/{id}/runs", tag = "runs",
    params(("id" = String, Path, description = "Session id (`ses_...`)"), PageParams),
    responses(
        (status = 200, description = "A page of runs", body = ListResponse<RunResponse>),
        QueryErrors,
    )
)]
async fn list_runs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<RunResponse>>> {
    let session = session_id(&id)?;
    let page = params.to_request()?;
    state.store.get_session(&session).await?;
    let page = state.store.list_runs(&session, &page).await?;
    Ok(Json(ListResponse::from_page(page, |r| {
        RunResponse::new(r, None, None)
    })))
}

/// Get a run with its steps.
#[utoipa::path(
    get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id (`run_...`)")),
    responses(
        (status = 200, description = "The run and its journal", body = RunResponse),
        QueryErrors,
    )
)]
async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunResponse>> {
    let id = run_id(&id)?;
    let run = state.store.get_run(&id).await?;
    let steps = state.store.list_steps(&id).await?;
    Ok(Json(RunResponse::new(run, None, Some(steps))))
}

/// Cancel a run: a queued run is cancelled at once; a running one moves to `cancelling` and
/// its worker stops the model call or tool call in flight. Finished runs are returned as is.
#[utoipa::path(
    post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id (`run_...`)")),
    responses(
        (status = 202, description = "The run, cancelled or cancelling", body = RunResponse),
        QueryErrors,
    )
)]
async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<RunResponse>)> {
    let id = run_id(&id)?;
    let run = state.store.request_cancel(&id).await?;
    // A cancelled queued run may unblock the next run of its session.
    state.runs.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(RunResponse::new(run, None, None)),
    ))
}
