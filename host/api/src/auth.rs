//! API key authentication: keys are random `evr_` strings, stored only as SHA-256 hashes;
//! every `/v1` request must carry one as `Authorization: Bearer <key>`.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use everruns_core::NewApiKey;
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

/// Generates a new random key named `name`.
pub fn generate_key(name: &str) -> GeneratedKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    let record = key_record(name, &secret);
    GeneratedKey { secret, record }
}

/// The store record for a known secret key (e.g. one supplied by the operator).
pub fn key_record(name: &str, secret: &str) -> NewApiKey {
    NewApiKey {
        name: name.to_owned(),
        prefix: secret.chars().take(SHOWN_PREFIX_LEN).collect(),
        hash: hash_key(secret),
    }
}

/// Lowercase hex SHA-256 of a key: what is stored and looked up.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The API key a request was made with (a request extension `require_api_key` adds), for
/// handlers that record who did something.
#[derive(Debug, Clone)]
pub struct Caller(pub everruns_core::ApiKeyId);

/// Middleware: rejects requests without a valid, unrevoked key with 401; lets the others
/// through with their key as a [`Caller`] extension.
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
    match state.store.authenticate_api_key(&hash_key(token)).await? {
        Some(key) => {
            request.extensions_mut().insert(Caller(key.id));
            Ok(next.run(request).await)
        }
        None => Err(ApiError::unauthorized("the API key is invalid or revoked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_and_hash_stably() {
        let a = generate_key("a");
        let b = generate_key("b");
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.record.hash, hash_key(&a.secret));
        assert_eq!(a.record.prefix.len(), SHOWN_PREFIX_LEN);
        assert!(a.secret.starts_with(&a.record.prefix));
        assert_ne!(a.record.hash, a.secret);
    }
}
