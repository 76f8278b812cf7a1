//! `/v1/secrets`: named secrets that plugins may be granted. Values are write-only: sealed
//! before they reach the store, never returned.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use everruns_core::{SECRET_NAME_MAX, SealedOwner, Secret, is_valid_secret_name};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult, BodyErrors, FieldError, QueryErrors, check_fields};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};
use crate::routes::providers::{SealingErrors, keyring};

/// Largest accepted secret value, in bytes.
const SECRET_VALUE_MAX: usize = 64 * 1024;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(get_secret, put_secret, delete_secret))
}

/// Body of `PUT /v1/secrets/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// The value (write-only: never returned), up to 64 KiB.
    #[schema(value_type = String, max_length = 65536)]
    pub value: SecretString,
}

/// A secret; its value is never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretResponse {
    #[schema(example = "GITHUB_TOKEN")]
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Secret> for SecretResponse {
    fn from(s: Secret) -> Self {
        Self {
            name: s.name,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A name from a path that can name an existing secret; anything else cannot exist (404).
fn existing_name(name: &str) -> ApiResult<&str> {
    if is_valid_secret_name(name) {
        Ok(name)
    } else {
        Err(ApiError::not_found(
            "secret not found: not a valid secret name",
        ))
    }
}

/// List secrets (names only), in name order.
#[utoipa::path(
    get, path = "/v1/secrets", tag = "secrets",
    params(PageParams),
    responses(
        (status = 200, description = "A page of secrets", body = ListResponse<SecretResponse>),
        QueryErrors,
    )
)]
async fn list_secrets(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<SecretResponse>>> {
    let page = state.store.list_secrets(&params.to_request()?).await?;
    Ok(Json(ListResponse::from_page(page, SecretResponse::from)))
}

/// Get a secret's metadata (never its value).
#[utoipa::path(
    get, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, min_length = 1, max_length = 128, description = "Secret name: 1 to 128 of `A-Z a-z 0-9 _ . -`")),
    responses(
        (status = 200, description = "The secret", body = SecretResponse),
        QueryErrors,
    )
)]
async fn get_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<SecretResponse>> {
    let secret = state.store.get_secret(existing_name(&name)?).await?;
    Ok(Json(secret.into()))
}

/// Create or replace a secret: 201 when created, 200 when replaced.
#[utoipa::path(
    put, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, min_length = 1, max_length = 128,
            description = "Secret name: 1 to 128 of `A-Z a-z 0-9 _ . -`")),
    request_body = PutSecret,
    responses(
        (status = 200, description = "The secret was replaced", body = SecretResponse),
        (status = 201, description = "The secret was created", body = SecretResponse),
        BodyErrors,
        SealingErrors,
    )
)]
async fn put_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PutSecret>,
) -> ApiResult<(StatusCode, Json<SecretResponse>)> {
    let mut errors = Vec::new();
    if !is_valid_secret_name(&name) {
        errors.push(FieldError::new(
            "name",
            format!("must be 1 to {SECRET_NAME_MAX} of `A-Z a-z 0-9 _ . -`"),
        ));
    }
    let value = body.value.expose_secret();
    if value.len() > SECRET_VALUE_MAX {
        errors.push(FieldError::new(
            "value",
            format!("must be at most {SECRET_VALUE_MAX} bytes"),
        ));
    }
    check_fields(errors)?;
    let sealed = keyring(&state)?.seal(&SealedOwner::Secret(name.clone()), value.as_bytes());
    let (secret, created) = state.store.put_secret(&name, sealed).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(secret.into())))
}

/// Delete a secret; plugins granted it find it missing from now on.
#[utoipa::path(
    delete, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, min_length = 1, max_length = 128, description = "Secret name: 1 to 128 of `A-Z a-z 0-9 _ . -`")),
    responses(
        (status = 204, description = "The secret was deleted"),
        QueryErrors,
    )
)]
async fn delete_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_secret(existing_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
