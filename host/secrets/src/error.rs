//! The error of this crate. Messages never contain key material or plaintext.

/// What can go wrong with keys and sealed values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// A master key's text is not `KEYID:BASE64` with a valid id and 32 bytes.
    #[error("invalid master key: {0}")]
    InvalidKey(String),
    /// The keyring itself is inconsistent (e.g. two different keys with one id).
    #[error("invalid keyring: {0}")]
    Keyring(String),
    /// A value was sealed under a master key that is not configured.
    #[error(
        "the value was sealed with master key `{0}`, which is not configured (set it as \
         EVERRUNS_SECRET_KEY or EVERRUNS_SECRET_KEY_PREVIOUS)"
    )]
    UnknownKeyId(String),
    /// Authentication failed: a wrong master key under the right id, an altered value, or a
    /// value that belongs to another row.
    #[error(
        "the value sealed with master key `{0}` does not open: the key is wrong, or the stored \
         value was altered or belongs to another row"
    )]
    Open(String),
    /// The stored fields have impossible sizes, or the plaintext is not the expected text.
    #[error("malformed sealed value: {0}")]
    Malformed(String),
}
