//! `/v1/providers`: LLM providers (OpenAI-compatible or Anthropic) with write-only API keys,
//! and a connection test. Keys are sealed before they reach the store; responses show only
//! `api_key_hint` (the last 4 characters).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use everruns_core::{
    NewProvider, PROVIDER_NAME_MAX, Provider, ProviderId, ProviderKind, ProviderPatch, SealedOwner,
};
use everruns_llm::{ClientOptions, LlmClient, ProviderConfig, RetryPolicy};
use everruns_secrets::api_key_hint;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{
    ApiError, ApiResult, BodyErrors, FieldError, Problem, QueryErrors, check_fields,
};
use crate::json::{ApiJson, ApiQuery};
use crate::pagination::{ListResponse, PageParams};

/// The connection test never takes longer than this (connecting included).
const TEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest accepted base URL, API key and model name.
const URL_MAX: usize = 2048;
const API_KEY_MAX: usize = 4096;
const MODEL_MAX: usize = 200;
/// Most models one provider may list.
const MODELS_MAX: usize = 500;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers, create_provider))
        .routes(routes!(get_provider, update_provider, delete_provider))
        .routes(routes!(test_provider))
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKindBody {
    /// OpenAI-compatible Chat Completions (OpenAI, Ollama, vLLM, OpenRouter, ...).
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

impl From<ProviderKindBody> for ProviderKind {
    fn from(kind: ProviderKindBody) -> Self {
        match kind {
            ProviderKindBody::Openai => Self::OpenAi,
            ProviderKindBody::Anthropic => Self::Anthropic,
        }
    }
}

impl From<ProviderKind> for ProviderKindBody {
    fn from(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::OpenAi => Self::Openai,
            ProviderKind::Anthropic => Self::Anthropic,
        }
    }
}

/// Body of `POST /v1/providers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    /// Unique name, 1 to 100 characters; agents refer to the provider by it.
    #[schema(min_length = 1, max_length = 100, example = "openai")]
    pub name: String,
    pub kind: ProviderKindBody,
    /// API base URL including the version, `http://` or `https://`.
    #[schema(max_length = 2048, example = "https://api.openai.com/v1")]
    pub base_url: String,
    /// The API key (write-only: never returned; empty for servers that need none).
    #[schema(value_type = String, max_length = 4096, example = "sk-...")]
    pub api_key: SecretString,
    /// Model used when an agent names none.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub default_model: Option<String>,
    /// Models offered to choose from.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// Body of `PATCH /v1/providers/{id}`: only the fields present change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    pub kind: Option<ProviderKindBody>,
    #[schema(max_length = 2048)]
    pub base_url: Option<String>,
    /// A new API key (write-only).
    #[schema(value_type = Option<String>, max_length = 4096)]
    pub api_key: Option<SecretString>,
    /// A new default model; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub default_model: Option<Option<String>>,
    /// Replaces the list of models.
    pub models: Option<Vec<String>>,
}

/// Tells an absent field (`None`, via `#[serde(default)]`) from an explicit `null`
/// (`Some(None)`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// A provider. The API key is never shown; `api_key_hint` helps recognise it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    #[schema(example = "prv_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub name: String,
    pub kind: ProviderKindBody,
    pub base_url: String,
    pub default_model: Option<String>,
    pub models: Vec<String>,
    /// `…` and the key's last 4 characters (only `…` for keys shorter than 8 characters).
    #[schema(example = "…abcd")]
    pub api_key_hint: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<Provider> for ProviderResponse {
    fn from(p: Provider) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name,
            kind: p.kind.into(),
            base_url: p.base_url,
            default_model: p.default_model,
            models: p.models,
            api_key_hint: p.api_key_hint,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// Result of `POST /v1/providers/{id}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderTestResult {
    /// Whether the provider answered and accepted the key.
    pub ok: bool,
    /// Why not, in the provider's own words where it gave any.
    pub error: Option<String>,
    /// The models the provider lists, when it answered.
    pub models: Option<Vec<String>>,
}

/// Error responses of routes that store sealed values (for the OpenAPI document).
#[derive(Debug, utoipa::IntoResponses)]
#[allow(
    dead_code,
    reason = "only documents responses; ApiError builds the real ones"
)]
pub(crate) enum SealingErrors {
    /// No master key is configured in this process (PostgreSQL without `EVERRUNS_SECRET_KEY`)
    /// or a stored value cannot be opened with the configured keys.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Parses a provider id from a path; a malformed id cannot exist, so it is a 404.
fn provider_id(raw: &str) -> ApiResult<ProviderId> {
    ProviderId::parse(raw).map_err(|e| ApiError::not_found(format!("provider not found: {e}")))
}

fn validate_name(name: &str, errors: &mut Vec<FieldError>) {
    let len = name.chars().count();
    if name.trim().is_empty() || len > PROVIDER_NAME_MAX {
        errors.push(FieldError::new(
            "name",
            format!("must be 1 to {PROVIDER_NAME_MAX} characters"),
        ));
    } else if name.chars().any(char::is_control) || name.trim() != name {
        errors.push(FieldError::new(
            "name",
            "must not contain control characters or start or end with whitespace",
        ));
    } else if ProviderId::parse(name).is_ok() {
        errors.push(FieldError::new("name", "must not look like a provider id"));
    }
}

/// `http(s)://host[:port][/path]`, nothing else: the connection test and the executor only
/// ever append `/models`, `/chat/completions` or `/messages` to it.
fn validate_base_url(url: &str, errors: &mut Vec<FieldError>) {
    let parsed = (url.len() <= URL_MAX && crate::rules::matches(crate::rules::BASE_URL, url))
        .then(|| url.parse::<Uri>().ok())
        .flatten();
    let valid = parsed.is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
            && uri.query().is_none()
            && !url.contains('#')
            && !uri.authority().is_some_and(|a| a.as_str().contains('@'))
    });
    if !valid {
        errors.push(FieldError::new(
            "base_url",
            format!(
                "must be an http:// or https:// URL with a host, no credentials, query or \
                 fragment, at most {URL_MAX} characters (e.g. https://api.openai.com/v1)"
            ),
        ));
    }
}

fn validate_api_key(key: &SecretString, errors: &mut Vec<FieldError>) {
    let key = key.expose_secret();
    if key.chars().count() > API_KEY_MAX || !crate::rules::matches(crate::rules::TOKEN, key) {
        // The message never repeats the key.
        errors.push(FieldError::new(
            "api_key",
            format!(
                "must be at most {API_KEY_MAX} characters without whitespace or control \
                 characters"
            ),
        ));
    }
}

fn valid_model(model: &str) -> bool {
    model.chars().count() <= MODEL_MAX && crate::rules::matches(crate::rules::TEXT, model)
}

fn validate_models(
    default_model: Option<&str>,
    models: Option<&[String]>,
    errors: &mut Vec<FieldError>,
) {
    if default_model.is_some_and(|m| !valid_model(m)) {
        errors.push(FieldError::new(
            "default_model",
            format!("must be 1 to {MODEL_MAX} characters, not only whitespace, without control characters"),
        ));
    }
    let models = models.unwrap_or_default();
    if models.len() > MODELS_MAX {
        errors.push(FieldError::new(
            "models",
            format!("at most {MODELS_MAX} models"),
        ));
    }
    for (i, model) in models.iter().enumerate() {
        if !valid_model(model) {
            errors.push(FieldError::new(
                format!("models[{i}]"),
                format!("must be 1 to {MODEL_MAX} characters, not only whitespace, without control characters"),
            ));
        }
    }
}

/// The keyring, or 503 when this process has no master key.
pub(crate) fn keyring(state: &AppState) -> ApiResult<&everruns_secrets::Keyring> {
    state.keyring.as_deref().ok_or_else(|| {
        ApiError::unavailable(
            "secret storage is not configured: set EVERRUNS_SECRET_KEY (the same key in every \
             process sharing this database) and restart",
        )
    })
}

/// List providers.
#[utoipa::path(
    get, path = "/v1/providers", tag = "providers",
    params(PageParams),
    responses(
        (status = 200, description = "A page of providers", body = ListResponse<ProviderResponse>),
        QueryErrors,
    )
)]
async fn list_providers(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<ProviderResponse>>> {
    let page = state.store.list_providers(&params.to_request()?).await?;
    Ok(Json(ListResponse::from_page(page, ProviderResponse::from)))
}

/// Create a provider; its API key is stored encrypted and never returned.
#[utoipa::path(
    post, path = "/v1/providers", tag = "providers",
    request_body = CreateProvider,
    responses(
        (status = 201, description = "The provider was created", body = ProviderResponse),
        BodyErrors,
        SealingErrors,
    )
)]
async fn create_provider(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateProvider>,
) -> ApiResult<(StatusCode, Json<ProviderResponse>)> {
    let mut errors = Vec::new();
    validate_name(&body.name, &mut errors);
    validate_base_url(&body.base_url, &mut errors);
    validate_api_key(&body.api_key, &mut errors);
    validate_models(
        body.default_model.as_deref(),
        body.models.as_deref(),
        &mut errors,
    );
    check_fields(errors)?;
    let keyring = keyring(&state)?;
    let id = ProviderId::new();
    let key = body.api_key.expose_secret();
    let sealed = keyring.seal(&SealedOwner::ProviderKey(id.clone()), key.as_bytes());
    let provider = state
        .store
        .create_provider(NewProvider {
            id,
            name: body.name,
            kind: body.kind.into(),
            base_url: body.base_url,
            default_model: body.default_model,
            models: body.models.unwrap_or_default(),
            api_key: sealed,
            api_key_hint: api_key_hint(key),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(provider.into())))
}

/// Get a provider.
#[utoipa::path(
    get, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "Provider id (`prv_...`)")),
    responses(
        (status = 200, description = "The provider", body = ProviderResponse),
        QueryErrors,
    )
)]
async fn get_provider(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProviderResponse>> {
    let provider = state.store.get_provider(&provider_id(&id)?).await?;
    Ok(Json(provider.into()))
}

/// Update a provider (only the fields present change; a new `api_key` replaces the old one).
#[utoipa::path(
    patch, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "Provider id (`prv_...`)")),
    request_body = UpdateProvider,
    responses(
        (status = 200, description = "The updated provider", body = ProviderResponse),
        BodyErrors,
        SealingErrors,
    )
)]
async fn update_provider(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateProvider>,
) -> ApiResult<Json<ProviderResponse>> {
    let id = provider_id(&id)?;
    let mut errors = Vec::new();
    if let Some(name) = &body.name {
        validate_name(name, &mut errors);
    }
    if let Some(url) = &body.base_url {
        validate_base_url(url, &mut errors);
    }
    if let Some(key) = &body.api_key {
        validate_api_key(key, &mut errors);
    }
    validate_models(
        body.default_model.as_ref().and_then(|m| m.as_deref()),
        body.models.as_deref(),
        &mut errors,
    );
    check_fields(errors)?;
    let api_key = match &body.api_key {
        Some(key) => {
            let key = key.expose_secret();
            let sealed =
                keyring(&state)?.seal(&SealedOwner::ProviderKey(id.clone()), key.as_bytes());
            Some((sealed, api_key_hint(key)))
        }
        None => None,
    };
    let patch = ProviderPatch {
        name: body.name,
        kind: body.kind.map(Into::into),
        base_url: body.base_url,
        default_model: body.default_model,
        models: body.models,
        api_key,
    };
    let provider = state.store.update_provider(&id, patch).await?;
    Ok(Json(provider.into()))
}

/// Delete a provider. Agents that name it fail their runs until they name another.
#[utoipa::path(
    delete, path = "/v1/providers/{id}", tag = "providers",
    params(("id" = String, Path, description = "Provider id (`prv_...`)")),
    responses(
        (status = 204, description = "The provider was deleted"),
        QueryErrors,
    )
)]
async fn delete_provider(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_provider(&provider_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Test a provider: lists its models with the stored key (one call, at most 8 seconds).
/// A provider that cannot be reached or refuses the key is `ok: false` with its message.
#[utoipa::path(
    post, path = "/v1/providers/{id}/test", tag = "providers",
    params(("id" = String, Path, description = "Provider id (`prv_...`)")),
    responses(
        (status = 200, description = "Whether the provider answered and accepted the key",
         body = ProviderTestResult),
        QueryErrors,
        SealingErrors,
    )
)]
async fn test_provider(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProviderTestResult>> {
    let provider = state.store.get_provider(&provider_id(&id)?).await?;
    let owner = SealedOwner::ProviderKey(provider.id.clone());
    let api_key = keyring(&state)?
        .open_string(&owner, &provider.api_key)
        .map_err(|e| ApiError::unavailable(format!("the provider's API key: {e}")))?;
    let config = ProviderConfig {
        kind: match provider.kind {
            ProviderKind::OpenAi => everruns_llm::ProviderKind::OpenAi,
            ProviderKind::Anthropic => everruns_llm::ProviderKind::Anthropic,
        },
        base_url: provider.base_url,
        api_key,
        default_model: provider.default_model,
    };
    let options = ClientOptions {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        connect_timeout: TEST_TIMEOUT,
        response_timeout: TEST_TIMEOUT,
        idle_timeout: TEST_TIMEOUT,
    };
    let outcome = match LlmClient::with_options(config, options) {
        Ok(client) => client.list_models(TEST_TIMEOUT).await,
        Err(e) => Err(e),
    };
    Ok(Json(match outcome {
        Ok(models) => ProviderTestResult {
            ok: true,
            error: None,
            models: Some(models),
        },
        Err(e) => ProviderTestResult {
            ok: false,
            error: Some(e.to_string()),
            models: None,
        },
    }))
}
