//! Durable key-value state, scoped by the host to this plugin and to the owner the
//! manifest asks for (`kv_scope = "session"` or `"agent"`). Values are JSON (serde); the
//! `*_bytes` functions store raw bytes. Requires `kv = true` in the manifest.
//!
//! Limits set by the host: keys up to 256 bytes, values up to 64 KiB, `list` returns at
//! most 1000 keys.
//!
//! Writes are transactional: the writes of a tool call (or a hook) are buffered by the host
//! and committed with the run's journal step; reads in the call see its own writes; a call
//! that traps or times out commits nothing. In [`crate::Capability::system_prompt`] and
//! [`crate::Capability::tools`] the state is read-only (`set` and `delete` fail with
//! [`KvError::Backend`]).
//!
//! ```no_run
//! use everruns_sdk::kv;
//!
//! let visits: u64 = kv::get("visits")?.unwrap_or(0);
//! kv::set("visits", &(visits + 1))?;
//! # Ok::<(), kv::KvError>(())
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::everruns::capability::kv as wit;
use crate::tools::ToolError;

/// Why a key-value operation failed.
///
/// ```
/// use everruns_sdk::{ToolError, kv::KvError};
///
/// let e: ToolError = KvError::NotGranted.into();
/// assert!(matches!(e, ToolError::Denied(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The manifest did not request `kv = true`, the operator did not grant it, or
    /// there is no owner (the host probing the plugin at load time).
    NotGranted,
    /// The key or value exceeds the host's limits; the message says which.
    TooLarge(String),
    /// The storage backend failed.
    Backend(String),
    /// The stored value is not the JSON the caller asked for.
    Decode(String),
    /// The value could not be serialized to JSON.
    Encode(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted => f.write_str("key-value state is not granted to this plugin"),
            Self::TooLarge(m) => write!(f, "too large: {m}"),
            Self::Backend(m) => write!(f, "storage failed: {m}"),
            Self::Decode(m) => write!(f, "stored value is not valid: {m}"),
            Self::Encode(m) => write!(f, "value cannot be stored: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<wit::KvError> for KvError {
    fn from(e: wit::KvError) -> Self {
        match e {
            wit::KvError::NotGranted => Self::NotGranted,
            wit::KvError::TooLarge(m) => Self::TooLarge(m),
            wit::KvError::Backend(m) => Self::Backend(m),
        }
    }
}

impl From<KvError> for ToolError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::NotGranted => ToolError::Denied(e.to_string()),
            _ => ToolError::Failed(e.to_string()),
        }
    }
}

/// Reads the JSON value at `key`; `None` if unset.
///
/// ```no_run
/// let name: Option<String> = everruns_sdk::kv::get("name")?;
/// # Ok::<(), everruns_sdk::kv::KvError>(())
/// ```
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    match get_bytes(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KvError::Decode(format!("{key}: {e}"))),
    }
}

/// Writes `value` as JSON at `key`, replacing any previous value.
///
/// ```no_run
/// everruns_sdk::kv::set("settings", &serde_json::json!({"dark": true}))?;
/// # Ok::<(), everruns_sdk::kv::KvError>(())
/// ```
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Encode(e.to_string()))?;
    set_bytes(key, &bytes)
}

/// Removes `key`; returns whether it existed.
///
/// ```no_run
/// let existed = everruns_sdk::kv::delete("draft")?;
/// # Ok::<(), everruns_sdk::kv::KvError>(())
/// ```
pub fn delete(key: &str) -> Result<bool, KvError> {
    wit::delete(key).map_err(Into::into)
}

/// The keys starting with `prefix` (all keys for `""`), sorted, at most 1000.
///
/// ```no_run
/// for key in everruns_sdk::kv::list("note/")? {
///     everruns_sdk::log::debug(&key);
/// }
/// # Ok::<(), everruns_sdk::kv::KvError>(())
/// ```
pub fn list(prefix: &str) -> Result<Vec<String>, KvError> {
    wit::list_keys(prefix).map_err(Into::into)
}

/// Reads the raw bytes at `key`; `None` if unset.
///
/// ```no_run
/// let blob = everruns_sdk::kv::get_bytes("blob")?;
/// # Ok::<(), everruns_sdk::kv::KvError>(())
/// ```
pub fn get_bytes(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    wit::get(key).map_err(Into::into)
}

/// Writes raw bytes at `key`.
///
/// ```no_run
/// everruns_sdk::kv::set_bytes("blob", b"\x00\x01")?;
/// # Ok::<(), everruns_sdk::kv::KvError>(())
/// ```
pub fn set_bytes(key: &str, value: &[u8]) -> Result<(), KvError> {
    wit::set(key, value).map_err(Into::into)
}
