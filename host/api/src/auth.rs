//! API key authentication and authorization: keys are random `evr_` strings, stored only as
//! SHA-256 hashes; every `/v1` request must carry one as `Authorization: Bearer <key>`, whose
//! role must allow the operation ([`required_role`]) and whose rate limits must allow the
//! request.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use everruns_core::{NewApiKey, Role};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// Every generated key starts with this.
pub const KEY_PREFIX: &str = "evr_";
/// How many leading characters of a key are stored and shown to identify it.
const SHOWN_PREFIX_LEN: usize = 12;
/// Shortest key accepted when an operator supplies one (bootstrap).
pub const MIN_KEY_LEN: usize = 16;

/// A freshly generated key: the secret (shown once) and the record to store.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The secret key; give it to the user once, never store it.
    pub secret: String,
    /// What the store keeps.
    pub record: NewApiKey,
}

/// Generates a new random key named `name` with `role`.
pub fn generate_key(name: &str, role: Role) -> GeneratedKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let record = key_record(name, &secret, role);
    GeneratedKey { secret, record }
}

/// The store record for a known secret key (e.g. one supplied by the operator).
pub fn key_record(name: &str, secret: &str, role: Role) -> NewApiKey {
    NewApiKey {
        name: name.to_owned(),
        role,
        prefix: secret.chars().take(SHOWN_PREFIX_LEN).collect(),
        hash: hash_key(secret),
    }
}

/// Lowercase hex SHA-256 of a key: what is stored and looked up.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The API key a request was made with (a request extension `require_api_key` adds), for
/// handlers that record who did something or count what a key holds.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id.
    pub id: everruns_core::ApiKeyId,
    /// The key's name.
    pub name: String,
    /// What the key may do.
    pub role: Role,
}

/// Route prefixes only `admin` keys reach, whatever the method: API keys, providers, secrets.
const ADMIN_ONLY: [&str; 3] = ["/v1/api-keys", "/v1/providers", "/v1/secrets"];
/// Route prefixes every role reads but only `admin` keys change: installed capabilities.
const ADMIN_WRITES: [&str; 1] = ["/v1/capabilities"];

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The role an operation needs, from its method and route template: `admin` for API keys,
/// providers and secrets (and for changing capabilities), `reader` for any other read,
/// `operator` for any other change. The OpenAPI document states it on every operation.
pub(crate) fn required_role(method: &Method, template: &str) -> Role {
    // MCP's requests are all POSTs; each of its tools checks the role it needs.
    if template == crate::mcp::MCP_PATH {
        return Role::Reader;
    }
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if ADMIN_ONLY.iter().any(|p| under(template, p))
        || (!reads && ADMIN_WRITES.iter().any(|p| under(template, p)))
    {
        Role::Admin
    } else if reads {
        Role::Reader
    } else {
        Role::Operator
    }
}

/// Whether an operation starts a run (and so also counts against the run-start limit).
fn starts_run(method: &Method, template: &str) -> bool {
    method == Method::POST && template == "/v1/sessions/{id}/messages"
}

/// Middleware: rejects requests without a valid, unrevoked key with 401, over the key's rate
/// limits with 429, and beyond the key's role with 403; lets the others through with their key
/// as a [`Caller`] extension.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request.headers().get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing `Authorization: Bearer <api key>` header")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <api key>`")
        })?;
    let Some(key) = state.store.authenticate_api_key(&hash_key(token)).await? else {
        return Err(ApiError::unauthorized("the API key is invalid or revoked"));
    };
    // Every route this runs on is matched (it is a route layer).
    let template = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |m| m.as_str().to_owned(),
    );
    state.limits.request(&key.id)?;
    let needed = required_role(request.method(), &template);
    if !key.role.allows(needed) {
        return Err(ApiError::forbidden(format!(
            "this operation needs the `{needed}` role; the API key `{}` is `{}`",
            key.name, key.role
        )));
    }
    if starts_run(request.method(), &template) {
        state.limits.run_start(&key.id)?;
    }
    request.extensions_mut().insert(Caller {
        id: key.id,
        name: key.name,
        role: key.role,
    });
    Ok(next.run(request).await)
}

/// The OpenAPI extension naming the role an operation needs.
pub const ROLE_EXTENSION: &str = "x-required-role";

/// States on every operation behind an API key the role it needs (`x-required-role` and a
/// line of its description) and the answers authorization and limits add: 403, 429 (with
/// `Retry-After`) and 503.
pub(crate) fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::extensions::ExtensionsBuilder;
    use utoipa::openapi::{HttpMethod, Ref, ResponseBuilder};

    let problem = || {
        utoipa::openapi::ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build()
    };
    let retry_after = || {
        utoipa::openapi::HeaderBuilder::new()
            .schema(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("Seconds to wait before retrying"))
            .build()
    };
    let answer = |text: &str, retry: bool| {
        let mut response = ResponseBuilder::new()
            .description(text)
            .content(crate::PROBLEM_JSON, problem());
        if retry {
            response = response.header("Retry-After", retry_after());
        }
        response.build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ] {
            let Some(operation) = operation else { continue };
            // Operations whose security allows no credentials (`[{}]`: health) are open to all.
            let open = operation.security.as_ref().is_some_and(|s| {
                serde_json::to_value(s).is_ok_and(|v| v == serde_json::json!([{}]))
            });
            if open {
                continue;
            }
            let method = match method {
                HttpMethod::Get => Method::GET,
                HttpMethod::Post => Method::POST,
                HttpMethod::Put => Method::PUT,
                HttpMethod::Patch => Method::PATCH,
                _ => Method::DELETE,
            };
            let role = required_role(&method, path);
            let line = format!("Required role: `{role}`.");
            operation.description = Some(match operation.description.take() {
                Some(text) if !text.is_empty() => format!("{text}\n\n{line}"),
                _ => line,
            });
            let extension = ExtensionsBuilder::new()
                .add(ROLE_EXTENSION, role.as_str())
                .build();
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .merge(extension);
            let responses = &mut operation.responses.responses;
            responses.entry("403".into()).or_insert_with(|| {
                answer("The API key's role does not allow this operation", false).into()
            });
            responses.entry("429".into()).or_insert_with(|| {
                answer(
                    "Over this API key's request or run-start rate, or its event stream cap",
                    true,
                )
                .into()
            });
            responses.entry("503".into()).or_insert_with(|| {
                answer(
                    "The request missed the server's deadline, or the server holds all the \
                     event streams it may",
                    true,
                )
                .into()
            });
        }
    }
}

/// Middleware: a request that has not produced its response within the request deadline gets
/// a 503 instead (the handler is dropped; whatever it committed stays committed).
pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limit) = state.limits.request_timeout() else {
        return next.run(request).await;
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(limit).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_and_hash_stably() {
        let a = generate_key("a", Role::Reader);
        let b = generate_key("b", Role::Admin);
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.record.hash, hash_key(&a.secret));
        assert_eq!((a.record.role, b.record.role), (Role::Reader, Role::Admin));
        assert_eq!(a.record.prefix.len(), SHOWN_PREFIX_LEN);
        assert!(a.secret.starts_with(&a.record.prefix));
        assert_ne!(a.record.hash, a.secret);
    }

    #[test]
    fn roles_follow_the_resource_and_the_method() {
        let cases = [
            (Method::GET, "/v1/agents", Role::Reader),
            (Method::POST, "/v1/agents", Role::Operator),
            (Method::GET, "/v1/sessions/{id}/events", Role::Reader),
            (
                Method::POST,
                "/v1/runs/{id}/approvals/{approval_id}",
                Role::Operator,
            ),
            (Method::GET, "/v1/capabilities/{id}", Role::Reader),
            (Method::POST, "/v1/capabilities", Role::Admin),
            (Method::GET, "/v1/api-keys", Role::Admin),
            (Method::DELETE, "/v1/secrets/{name}", Role::Admin),
            (Method::GET, "/v1/providers/{id}", Role::Admin),
            (Method::GET, "/v1/providers-like", Role::Reader),
            (Method::GET, "/metrics", Role::Reader),
        ];
        for (method, path, role) in cases {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }
}
