//! Named secrets that plugins may be granted; the value is stored sealed only.

use crate::{Sealed, Timestamp};

/// Longest accepted secret name, in bytes.
pub const SECRET_NAME_MAX: usize = 128;

/// Whether `name` is a valid secret name: 1 to 128 of `A-Z a-z 0-9 _ . -`.
pub fn is_valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= SECRET_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A stored secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub name: String,
    /// The value, sealed with the secret's name as owner.
    pub value: Sealed,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
