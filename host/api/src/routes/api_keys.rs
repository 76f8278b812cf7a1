//! `/v1/api-keys`: create (the key is shown once, with its role), list and revoke API keys;
//! `/v1/me`: the key making the request and what its role allows.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use everruns_core::{ApiKey, ApiKeyId, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::{Caller, generate_key};
use crate::error::{ApiError, ApiResult, BodyErrors, FieldError, QueryErrors, check_fields};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(me))
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleBody {
    /// Everything.
    Admin,
    /// Agents, sessions, messages, runs, approvals, events; capabilities read-only. No API
    /// keys, providers or secrets.
    #[default]
    Operator,
    /// Reads only (event streams included), and nothing of API keys, providers or secrets.
    Reader,
}

impl From<RoleBody> for Role {
    fn from(role: RoleBody) -> Self {
        match role {
            RoleBody::Admin => Role::Admin,
            RoleBody::Operator => Role::Operator,
            RoleBody::Reader => Role::Reader,
        }
    }
}

impl From<Role> for RoleBody {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => RoleBody::Admin,
            Role::Operator => RoleBody::Operator,
            Role::Reader => RoleBody::Reader,
        }
    }
}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Unique name, 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100, example = "ci")]
    pub name: String,
    /// What the key may do (default `operator`).
    #[serde(default)]
    pub role: RoleBody,
}

/// An API key record; the key itself is never shown again after creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    #[schema(example = "key_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub name: String,
    /// First characters of the key, to recognise it.
    #[schema(example = "evr_1a2b3c4d")]
    pub prefix: String,
    pub role: RoleBody,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<ApiKey> for ApiKeyResponse {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name,
            prefix: k.prefix,
            role: k.role.into(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A newly created key: the only response that contains the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub record: ApiKeyResponse,
    /// The API key. Store it now: it cannot be shown again.
    pub key: String,
}

/// List API keys (revoked ones included).
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api-keys",
    params(PageParams),
    responses(
        (status = 200, description = "A page of API keys", body = ListResponse<ApiKeyResponse>),
        QueryErrors,
    )
)]
async fn list_api_keys(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<ApiKeyResponse>>> {
    let page = state.store.list_api_keys(&params.to_request()?).await?;
    Ok(Json(ListResponse::from_page(page, ApiKeyResponse::from)))
}

/// Create an API key; the response is the only time the key is shown.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api-keys",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The key was created", body = CreatedApiKey),
        BodyErrors,
    )
)]
async fn create_api_key(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let len = body.name.chars().count();
    let mut errors = Vec::new();
    if len > 100 || !crate::rules::matches(crate::rules::NAME, &body.name) {
        errors.push(FieldError::new(
            "name",
            "must be 1 to 100 characters without control characters, not starting or ending \
             with whitespace",
        ));
    }
    check_fields(errors)?;
    let generated = generate_key(&body.name, body.role.into());
    let record = state.store.create_api_key(generated.record).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            record: record.into(),
            key: generated.secret,
        }),
    ))
}

/// Revoke an API key; requests using it are refused from now on.
#[utoipa::path(
    delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "API key id (`key_...`)")),
    responses(
        (status = 200, description = "The revoked key", body = ApiKeyResponse),
        QueryErrors,
    )
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKeyResponse>> {
    let id =
        ApiKeyId::parse(&id).map_err(|e| ApiError::not_found(format!("API key not found: {e}")))?;
    let key = state.store.revoke_api_key(&id).await?;
    Ok(Json(key.into()))
}

/// The API key making a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    #[schema(example = "key_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub name: String,
    pub role: RoleBody,
}

/// The API key making this request, and its role (what the web UI shows and hides by).
#[utoipa::path(
    get, path = "/v1/me", tag = "identity",
    responses(
        (status = 200, description = "The calling key", body = MeResponse),
        (status = 401, description = "Missing, invalid or revoked API key", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
async fn me(Extension(caller): Extension<Caller>) -> Json<MeResponse> {
    Json(MeResponse {
        id: caller.id.to_string(),
        name: caller.name,
        role: caller.role.into(),
    })
}
