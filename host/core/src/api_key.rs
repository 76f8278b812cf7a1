//! API key records. The secret key is never stored: only its SHA-256 hash and a short prefix
//! that lets a user recognise it.

use crate::{ApiKeyId, Timestamp};

/// A stored API key record.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The first characters of the key, shown to users so they can tell keys apart.
    pub prefix: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// What is needed to store a new API key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub name: String,
    pub prefix: String,
    /// Lowercase hex SHA-256 of the full key.
    pub hash: String,
}
