//! API key records. The secret key is never stored: only its SHA-256 hash and a short prefix
//! that lets a user recognise it. Every key has a [`Role`] that bounds what it may do.

use std::fmt;
use std::str::FromStr;

use crate::{ApiKeyId, Timestamp};

/// What an API key may do. Ordered: each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only (`GET`, event streams included), and nothing of API keys, providers or
    /// secrets.
    Reader,
    /// Works with agents, sessions, messages, runs, approvals and events; reads capabilities.
    /// No API keys, providers or secrets.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a key with this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role (admin, operator or reader)"))
    }
}

/// A stored API key record.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub name: String,
    /// The first characters of the key, shown to users so they can tell keys apart.
    pub prefix: String,
    /// What the key may do.
    pub role: Role,
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
    /// What the key may do.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_spelled_once() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!(
            "root"
                .parse::<Role>()
                .unwrap_err()
                .contains("admin, operator or reader")
        );
    }
}
