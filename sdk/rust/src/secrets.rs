//! Secrets the operator granted to this plugin (names listed in the manifest's
//! `permissions.secrets`). Values never belong in logs or tool output.
//!
//! ```no_run
//! let key = everruns_sdk::secrets::get("WEATHER_API_KEY")?;
//! # Ok::<(), everruns_sdk::secrets::SecretError>(())
//! ```

use std::fmt;

use crate::__bindings::everruns::capability::secrets as wit;
use crate::tools::ToolError;

/// Why a secret could not be read.
///
/// ```
/// use everruns_sdk::{ToolError, secrets::SecretError};
///
/// let e: ToolError = SecretError::NotFound("API_KEY".into()).into();
/// assert_eq!(e, ToolError::Denied("secret `API_KEY` has no value configured".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// The manifest did not request it or the operator did not grant it.
    NotGranted(String),
    /// Granted, but no value is configured.
    NotFound(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(n) => write!(f, "secret `{n}` is not granted to this plugin"),
            Self::NotFound(n) => write!(f, "secret `{n}` has no value configured"),
        }
    }
}

impl std::error::Error for SecretError {}

impl From<SecretError> for ToolError {
    fn from(e: SecretError) -> Self {
        ToolError::Denied(e.to_string())
    }
}

/// The value of secret `name`.
///
/// ```no_run
/// match everruns_sdk::secrets::get("TOKEN") {
///     Ok(token) => assert!(!token.is_empty()),
///     Err(e) => everruns_sdk::log::warn(&e.to_string()),
/// }
/// ```
pub fn get(name: &str) -> Result<String, SecretError> {
    wit::get(name).map_err(|e| match e {
        wit::SecretError::NotGranted => SecretError::NotGranted(name.to_owned()),
        wit::SecretError::NotFound => SecretError::NotFound(name.to_owned()),
    })
}
