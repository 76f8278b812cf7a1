//! Tool approval: the `tool_approval` policy agents and overrides accept (and its
//! validation), `GET /v1/runs/{id}/approvals` and `POST /v1/runs/{id}/approvals/{approval_id}`
//! (a person's decision on a parked call), and `GET /v1/approvals` (every approval, e.g. the
//! pending ones: what waits for someone).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use everruns_core::{
    APPROVAL_PATTERNS_MAX, APPROVAL_TIMEOUT_DEFAULT, APPROVAL_TIMEOUT_MAX, Approval, ApprovalId,
    ApprovalStatus, DECISION_REASON_MAX, Decision, ToolApproval,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, BodyErrors, FieldError, QueryErrors, check_fields};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};
use crate::routes::runs::run_id;

/// Longest approval pattern, in bytes.
const PATTERN_MAX: usize = 256;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_run_approvals))
        .routes(routes!(decide))
        .routes(routes!(list_approvals))
}

/// Which tool calls need a person's approval before they run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"require": ["session_files__delete_*", "*__send_mail"], "timeout_seconds": 900}))]
pub struct ToolApprovalBody {
    /// Glob patterns over namespaced tool names (`capability__tool`): letters, digits, `_`,
    /// `.`, `-`, and the wildcards `*` (any run of characters) and `?` (one character). A
    /// call whose tool matches one waits for approval. At most 64 patterns of 1 to 256
    /// characters.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub require: Vec<String>,
    /// Seconds a call waits for a decision before it counts as rejected (`expired`), 1 to
    /// 604800 (a week); default 900.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u32>,
}

impl From<ToolApproval> for ToolApprovalBody {
    fn from(p: ToolApproval) -> Self {
        Self {
            require: p.require,
            timeout_seconds: Some(p.timeout_seconds),
        }
    }
}

/// Checks a policy; errors name `{field}.require[i]` and `{field}.timeout_seconds`.
pub(crate) fn validate_policy(
    body: &ToolApprovalBody,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> ToolApproval {
    let policy = ToolApproval {
        require: body.require.clone(),
        timeout_seconds: body.timeout_seconds.unwrap_or(APPROVAL_TIMEOUT_DEFAULT),
    };
    if !(1..=APPROVAL_TIMEOUT_MAX).contains(&policy.timeout_seconds) {
        errors.push(FieldError::new(
            format!("{field}.timeout_seconds"),
            format!("must be between 1 and {APPROVAL_TIMEOUT_MAX}"),
        ));
    }
    if body.require.len() > APPROVAL_PATTERNS_MAX {
        errors.push(FieldError::new(
            format!("{field}.require"),
            format!("at most {APPROVAL_PATTERNS_MAX} patterns"),
        ));
        return policy;
    }
    for (i, pattern) in body.require.iter().enumerate() {
        if pattern.len() > PATTERN_MAX
            || !crate::rules::matches(crate::rules::TOOL_PATTERN, pattern)
        {
            errors.push(FieldError::new(
                format!("{field}.require[{i}]"),
                format!(
                    "must be 1 to {PATTERN_MAX} characters: letters, digits, `_`, `.`, `-`, \
                     `*` and `?`"
                ),
            ));
        } else {
            let alone = ToolApproval {
                require: vec![pattern.clone()],
                ..ToolApproval::default()
            };
            if let Err((_, e)) = alone.matcher() {
                errors.push(FieldError::new(
                    format!("{field}.require[{i}]"),
                    format!("is not a valid glob pattern: {e}"),
                ));
            }
        }
    }
    policy
}

/// A tool call that needed a person's approval, and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalResponse {
    #[schema(example = "apr_0192f3c4a1b2000000030a1b2c3d4e5f")]
    pub id: String,
    pub run_id: String,
    pub session_id: String,
    /// The journal step the call is.
    pub step_no: u32,
    /// The model's id of the call.
    pub tool_call_id: String,
    /// The namespaced tool name.
    #[schema(example = "session_files__delete_file")]
    pub name: String,
    /// The capability providing the tool.
    pub capability: Option<String>,
    /// The arguments as shown for approval: exactly what runs if approved.
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// SHA-256 (hex) of the arguments' JSON text, taken when approval was requested.
    pub arguments_sha256: String,
    /// Why approval is needed.
    pub reason: String,
    /// `tool_approval` (the agent's or session's policy) or the capability whose
    /// `before-tool` hook asked.
    pub requested_by: String,
    /// `pending`, `approved`, `rejected`, `expired` or `cancelled` (the run was cancelled).
    #[schema(example = "pending")]
    pub status: String,
    /// The reason given with the decision.
    pub decision_reason: Option<String>,
    /// The API key that decided (`null` for expiry and cancellation).
    pub decided_by: Option<String>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When a pending approval expires (counts as a rejection).
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<Approval> for ApprovalResponse {
    fn from(a: Approval) -> Self {
        let arguments = serde_json::from_str(&a.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(a.arguments.clone()));
        Self {
            id: a.id.to_string(),
            run_id: a.run_id.to_string(),
            session_id: a.session_id.to_string(),
            step_no: a.step_no,
            tool_call_id: a.tool_call_id,
            name: a.name,
            capability: a.capability,
            arguments,
            arguments_sha256: a.arguments_sha256,
            reason: a.reason,
            requested_by: a.requested_by,
            status: a.status.as_str().to_owned(),
            decision_reason: a.decision_reason,
            decided_by: a.decided_by.map(|k| k.to_string()),
            decided_at: a.decided_at,
            expires_at: a.expires_at,
            created_at: a.created_at,
        }
    }
}

/// A decision.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecisionBody {
    Approve,
    Reject,
}

/// Body of `POST /v1/runs/{id}/approvals/{approval_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"decision": "reject", "reason": "Do not delete the report."}))]
pub struct DecideBody {
    /// `approve` runs the call with the arguments shown; `reject` tells the model it was
    /// rejected, with the reason.
    pub decision: DecisionBody,
    /// Why (up to 4096 characters, no NUL); given to the model with a rejection.
    #[schema(max_length = 4096)]
    pub reason: Option<String>,
}

/// An approval's status, as a filter.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusParam {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
}

impl From<StatusParam> for ApprovalStatus {
    fn from(s: StatusParam) -> Self {
        match s {
            StatusParam::Pending => Self::Pending,
            StatusParam::Approved => Self::Approved,
            StatusParam::Rejected => Self::Rejected,
            StatusParam::Expired => Self::Expired,
            StatusParam::Cancelled => Self::Cancelled,
        }
    }
}

/// Query parameters of `GET /v1/approvals`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalListParams {
    /// Only approvals with this status.
    pub status: Option<StatusParam>,
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (1 to 128 characters, no control characters).
    #[param(min_length = 1, max_length = 128)]
    pub cursor: Option<String>,
}

/// List the approvals of a run (in step order).
#[utoipa::path(
    get, path = "/v1/runs/{id}/approvals", tag = "approvals",
    params(("id" = String, Path, description = "Run id (`run_...`)"), PageParams),
    responses(
        (status = 200, description = "A page of the run's approvals", body = ListResponse<ApprovalResponse>),
        QueryErrors,
    )
)]
async fn list_run_approvals(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<ApprovalResponse>>> {
    let run = run_id(&id)?;
    let page = state
        .store
        .list_approvals(Some(&run), None, &params.to_request()?)
        .await?;
    Ok(Json(ListResponse::from_page(page, ApprovalResponse::from)))
}

/// Approve or reject a tool call that waits for approval.
///
/// The decision is recorded with the API key that made it and emits
/// `tool.approval_resolved`. When no call of the run waits any more, the run is queued again:
/// approved calls run with exactly the arguments shown, rejected ones give the model a
/// result saying so. A second decision, a decision after expiry, or one on a run that no
/// longer waits is a 409 saying why; of two racing decisions exactly one wins.
#[utoipa::path(
    post, path = "/v1/runs/{id}/approvals/{approval_id}", tag = "approvals",
    params(
        ("id" = String, Path, description = "Run id (`run_...`)"),
        ("approval_id" = String, Path, description = "Approval id (`apr_...`)"),
    ),
    request_body = DecideBody,
    responses(
        (status = 200, description = "The decided approval", body = ApprovalResponse),
        BodyErrors,
    )
)]
async fn decide(
    State(state): State<AppState>,
    Extension(Caller { id: caller, .. }): Extension<Caller>,
    Path((id, approval)): Path<(String, String)>,
    ApiJson(body): ApiJson<DecideBody>,
) -> ApiResult<Json<ApprovalResponse>> {
    let run = run_id(&id)?;
    let approval = ApprovalId::parse(&approval)
        .map_err(|e| ApiError::not_found(format!("approval not found: {e}")))?;
    let mut errors = Vec::new();
    if let Some(reason) = &body.reason {
        if reason.chars().count() > DECISION_REASON_MAX {
            errors.push(FieldError::new(
                "reason",
                format!("must be at most {DECISION_REASON_MAX} characters"),
            ));
        } else if reason.contains('\0') {
            errors.push(FieldError::new("reason", "must not contain NUL characters"));
        }
    }
    check_fields(errors)?;
    let decision = match body.decision {
        DecisionBody::Approve => Decision::Approve,
        DecisionBody::Reject => Decision::Reject,
    };
    let decided = state
        .store
        .decide_approval(&run, &approval, decision, body.reason.as_deref(), &caller)
        .await?;
    // This process's worker, if it has a free slot, continues the run at once.
    state.runs.wake();
    Ok(Json(decided.into()))
}

/// List approvals of every run, optionally of one status (`?status=pending`: what waits
/// for someone), in id order (by run, then step).
#[utoipa::path(
    get, path = "/v1/approvals", tag = "approvals",
    params(ApprovalListParams),
    responses(
        (status = 200, description = "A page of approvals", body = ListResponse<ApprovalResponse>),
        QueryErrors,
    )
)]
async fn list_approvals(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ApprovalListParams>,
) -> ApiResult<Json<ListResponse<ApprovalResponse>>> {
    let status = params.status.map(ApprovalStatus::from);
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    }
    .to_request()?;
    let page = state.store.list_approvals(None, status, &page).await?;
    Ok(Json(ListResponse::from_page(page, ApprovalResponse::from)))
}
