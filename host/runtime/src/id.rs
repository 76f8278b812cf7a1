//! `CapabilityId`: the validated id of a capability plugin.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A capability id: 1-64 characters, lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter or digit. Used as the registry key, in KV scoping and in step
/// records.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapabilityId(String);

impl CapabilityId {
    /// Validates an id.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(Error::InvalidId(value.chars().take(80).collect()))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CapabilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CapabilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CapabilityId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for CapabilityId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for ok in ["weather", "a", "web-search_2", "0x"] {
            assert!(CapabilityId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Weather", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(CapabilityId::parse(bad).is_err(), "{bad}");
        }
    }
}
