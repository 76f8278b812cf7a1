//! Prefixed, time-ordered identifiers: `agt_` + a UUIDv7 in lowercase hex.
//!
//! UUIDv7 sorts by creation time, so ordering by id is ordering by creation, which is what
//! cursor pagination relies on.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by 32 hex digits)")]
pub struct IdError {
    /// What kind of id was expected, e.g. "agent".
    pub kind: &'static str,
    /// The expected prefix, e.g. "agt_".
    pub prefix: &'static str,
    /// The rejected input (truncated to keep error messages small).
    pub value: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parses and validates an id received from outside.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let valid = value
                    .strip_prefix($prefix)
                    .is_some_and(|rest| {
                        rest.len() == 32
                            && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                if valid {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(IdError {
                        kind: $kind,
                        prefix: $prefix,
                        value: value.chars().take(64).collect(),
                    })
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// As its string, in persisted documents (e.g. a run's configuration).
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// Validated like [`Self::parse`].
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                Self::parse(&value).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

prefixed_id!(
    /// Identifies an agent.
    AgentId, "agt_", "agent"
);
prefixed_id!(
    /// Identifies a session (a conversation with one agent).
    SessionId, "ses_", "session"
);
prefixed_id!(
    /// Identifies a message in a session.
    MessageId, "msg_", "message"
);
prefixed_id!(
    /// Identifies a run: the agent's work in answer to one user message.
    RunId, "run_", "run"
);
prefixed_id!(
    /// Identifies an API key record (not the secret key itself).
    ApiKeyId, "key_", "API key"
);
prefixed_id!(
    /// Identifies a tool call's approval (derived from its run and step: see
    /// `ApprovalId::for_call`).
    ApprovalId, "apr_", "approval"
);
prefixed_id!(
    /// Identifies an LLM provider configuration.
    ProviderId, "prv_", "provider"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_parse_back_and_sort_by_creation() {
        let a = AgentId::new();
        let b = AgentId::new();
        assert_eq!(AgentId::parse(a.as_str()).unwrap(), a);
        assert!(a < b, "UUIDv7 ids are time ordered");
        assert!(a.as_str().starts_with("agt_"));
    }

    #[test]
    fn wrong_prefix_or_shape_is_rejected_with_the_kind() {
        let ses = SessionId::new();
        let err = AgentId::parse(ses.as_str()).unwrap_err();
        assert_eq!(err.kind, "agent");
        assert!(AgentId::parse("agt_xyz").is_err());
        assert!(AgentId::parse("agt_0123456789ABCDEF0123456789abcdef").is_err());
        assert!(err.to_string().contains("agt_"));
    }
}
