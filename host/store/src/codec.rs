//! Conversions between domain values and column values shared by both backends: timestamps,
//! JSON text, stored enums and ids, input checks, and the classification of constraint
//! violations.

use chrono::{DateTime, SubsecRound, Utc};
use everruns_core::{
    KV_KEY_MAX, KvOwnerRow, KvScope, KvUsage, MessageRole, NewApiKey, ProviderKind, ProviderPatch,
    Role, Sealed, SessionStatus, Timestamp,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

/// `last_used_at` of an API key is rewritten only when older than this: authentication is on
/// every request's path, and a write per request would cost more than the request.
pub(crate) const KEY_USE_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Whether a key last used at `last_used` should be marked used at `now`.
pub(crate) fn key_use_is_stale(last_used: Option<Timestamp>, now: Timestamp) -> bool {
    last_used.is_none_or(|at| now - at >= KEY_USE_RESOLUTION)
}

/// The current time at the precision both backends store (microseconds), so a value returned
/// by a write equals the value read back later.
pub(crate) fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// `ts` at the precision both backends store, for timestamps that come from callers.
pub(crate) fn truncate(ts: Timestamp) -> Timestamp {
    ts.trunc_subsecs(6)
}

/// SQLite's timestamp text: RFC 3339 in UTC with exactly six fractional digits, so that lexical
/// order is time order.
pub(crate) fn timestamp_to_text(ts: &Timestamp) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses [`timestamp_to_text`]'s output (any RFC 3339 text is accepted).
pub(crate) fn timestamp_from_text(what: &'static str, text: &str) -> Result<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|ts| ts.with_timezone(&Utc))
        .map_err(|err| StoreError::Corrupt {
            what,
            detail: format!("`{text}` is not an RFC 3339 timestamp: {err}"),
        })
}

/// A domain value as JSON text for a JSON column.
pub(crate) fn to_json_text<T: Serialize>(what: &'static str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|err| StoreError::Corrupt {
        what,
        detail: format!("cannot encode: {err}"),
    })
}

/// A domain value from the JSON text of a JSON column.
pub(crate) fn from_json_text<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt {
        what,
        detail: err.to_string(),
    })
}

/// The JSON text of an optional document (a nullable JSON column).
pub(crate) fn optional_json_text<T: Serialize>(
    what: &'static str,
    value: Option<&T>,
) -> Result<Option<String>> {
    value.map(|v| to_json_text(what, v)).transpose()
}

/// An optional domain value from a nullable JSON column.
pub(crate) fn from_optional_json_text<T: DeserializeOwned>(
    what: &'static str,
    text: Option<String>,
) -> Result<Option<T>> {
    text.map(|t| from_json_text(what, &t)).transpose()
}

/// Parses a stored id of the expected kind.
pub(crate) fn parse_id<T>(
    what: &'static str,
    value: &str,
    parse: fn(&str) -> Result<T, everruns_core::IdError>,
) -> Result<T> {
    parse(value).map_err(|err| StoreError::Corrupt {
        what,
        detail: err.to_string(),
    })
}

pub(crate) fn parse_role(value: &str) -> Result<MessageRole> {
    MessageRole::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "message role",
        detail: format!("unknown role `{value}`"),
    })
}

pub(crate) fn parse_status(value: &str) -> Result<SessionStatus> {
    SessionStatus::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "session status",
        detail: format!("unknown status `{value}`"),
    })
}

/// PostgreSQL cannot store NUL in text (SQLite can, but its text functions stop at it), so
/// both backends refuse it the same way instead of PostgreSQL failing with an internal error.
pub(crate) fn reject_nul(field: &'static str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Checks a key-value scope and key before they reach SQL.
pub(crate) fn check_kv_key(scope: &KvScope, key: &str) -> Result<()> {
    check_kv_scope(scope)?;
    if key.is_empty() || key.len() > KV_KEY_MAX {
        return Err(StoreError::Invalid(format!(
            "a key must be between 1 and {KV_KEY_MAX} bytes long"
        )));
    }
    reject_nul("a key", key)
}

pub(crate) fn check_kv_scope(scope: &KvScope) -> Result<()> {
    reject_nul("a plugin id", &scope.plugin)?;
    reject_nul("a key-value owner", &scope.owner)
}

/// The keys a usage query leaves out, as the JSON array both backends unpack in SQL.
pub(crate) fn kv_excluded(scope: &KvScope, excluding: &[&str]) -> Result<String> {
    check_kv_scope(scope)?;
    for key in excluding {
        reject_nul("a key", key)?;
    }
    to_json_text("excluded keys", &excluding)
}

/// A usage row: key count and byte total (`NULL` when there are no keys).
pub(crate) fn kv_usage(keys: i64, bytes: Option<i64>) -> KvUsage {
    KvUsage {
        keys: u64::try_from(keys).unwrap_or(0),
        bytes: bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0),
    }
}

/// Usage rows per owner: owner, key count, byte total.
pub(crate) fn kv_usage_by_owner(rows: Vec<(String, i64, Option<i64>)>) -> Vec<(String, KvUsage)> {
    rows.into_iter()
        .map(|(owner, keys, bytes)| (owner, kv_usage(keys, bytes)))
        .collect()
}

/// The error for a key-value write that found its owner (agent or session) gone: it was
/// deleted, and its state with it.
pub(crate) fn kv_owner_gone(scope: &KvScope) -> StoreError {
    match scope.owner_row() {
        KvOwnerRow::Agent(id) => StoreError::not_found("agent", &id),
        KvOwnerRow::Session(id) => StoreError::not_found("session", &id),
        KvOwnerRow::None => StoreError::Conflict(format!("the state of {scope} was not written")),
    }
}

/// Whether `err` is a unique violation of `table.column`. PostgreSQL reports the constraint
/// name (the migrations name them `<table>_<column>_key`); SQLite only says
/// `UNIQUE constraint failed: table.column` in the message.
pub(crate) fn is_unique_violation(err: &sqlx::Error, table: &str, column: &str) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    if !db.is_unique_violation() {
        return false;
    }
    match db.constraint() {
        Some(constraint) => constraint == format!("{table}_{column}_key"),
        None => db.message().contains(&format!("{table}.{column}")),
    }
}

/// Whether `err` is a foreign key violation (the parent row vanished concurrently).
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// Maps a unique violation on the agent name to a conflict naming it.
pub(crate) fn agent_name_conflict(err: sqlx::Error, name: &str) -> StoreError {
    if is_unique_violation(&err, "agents", "name") {
        StoreError::Conflict(format!("an agent named `{name}` already exists"))
    } else {
        err.into()
    }
}

/// Maps a unique violation on the API key name or hash to a conflict.
pub(crate) fn api_key_conflict(err: sqlx::Error, new: &NewApiKey) -> StoreError {
    if is_unique_violation(&err, "api_keys", "name") {
        StoreError::Conflict(format!("an API key named `{}` already exists", new.name))
    } else if is_unique_violation(&err, "api_keys", "hash") {
        StoreError::Conflict("an API key with this hash already exists".to_owned())
    } else {
        err.into()
    }
}

/// Checks a new API key record before it reaches SQL.
pub(crate) fn check_new_api_key(new: &NewApiKey) -> Result<()> {
    reject_nul("an API key name", &new.name)?;
    reject_nul("an API key prefix", &new.prefix)?;
    reject_nul("an API key hash", &new.hash)
}

/// A stored role.
pub(crate) fn role(text: String) -> Result<Role> {
    text.parse().map_err(|detail| StoreError::Corrupt {
        what: "API key role",
        detail,
    })
}

/// Maps a unique violation on the provider name to a conflict naming it.
pub(crate) fn provider_name_conflict(err: sqlx::Error, name: &str) -> StoreError {
    if is_unique_violation(&err, "providers", "name") {
        StoreError::Conflict(format!("a provider named `{name}` already exists"))
    } else {
        err.into()
    }
}

pub(crate) fn parse_provider_kind(value: &str) -> Result<ProviderKind> {
    value.parse().map_err(|detail| StoreError::Corrupt {
        what: "provider kind",
        detail,
    })
}

/// Checks the text of a sealed value's key id.
pub(crate) fn check_sealed(sealed: &Sealed) -> Result<()> {
    reject_nul("a key id", &sealed.key_id)
}

/// Checks every text field of a provider (new or patch) before it reaches SQL.
pub(crate) fn check_provider_text(
    name: Option<&str>,
    base_url: Option<&str>,
    default_model: Option<&str>,
    models: Option<&[String]>,
) -> Result<()> {
    if let Some(name) = name {
        reject_nul("a provider name", name)?;
    }
    if let Some(url) = base_url {
        reject_nul("a base URL", url)?;
    }
    if let Some(model) = default_model {
        reject_nul("a model name", model)?;
    }
    for model in models.unwrap_or_default() {
        reject_nul("a model name", model)?;
    }
    Ok(())
}

/// [`check_provider_text`] and [`check_sealed`] for a patch.
pub(crate) fn check_provider_patch(patch: &ProviderPatch) -> Result<()> {
    check_provider_text(
        patch.name.as_deref(),
        patch.base_url.as_deref(),
        patch.default_model.as_ref().and_then(|m| m.as_deref()),
        patch.models.as_deref(),
    )?;
    if let Some((sealed, hint)) = &patch.api_key {
        check_sealed(sealed)?;
        reject_nul("a key hint", hint)?;
    }
    Ok(())
}

/// Checks a secret name before it reaches SQL (the API validates the alphabet).
pub(crate) fn check_secret_name(name: &str) -> Result<()> {
    reject_nul("a secret name", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_text_has_fixed_precision_and_round_trips() {
        let ts = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp_to_text(&ts), "2024-01-02T03:04:05.000000Z");
        let now = now();
        let text = timestamp_to_text(&now);
        assert_eq!(text.len(), "2024-01-02T03:04:05.000000Z".len());
        assert_eq!(timestamp_from_text("t", &text).unwrap(), now);
    }

    #[test]
    fn nul_is_refused_in_text() {
        assert!(reject_nul("name", "a\0b").is_err());
        assert!(reject_nul("name", "ab").is_ok());
    }
}
