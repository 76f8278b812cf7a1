//! Sealed (encrypted) values as they are stored: the columns of an AES-256-GCM envelope. This
//! crate only carries the bytes; `everruns-secrets` seals and opens them.

use std::fmt;

use crate::ProviderId;

/// A value sealed by envelope encryption: the value encrypted with its own data key, and the
/// data key encrypted ("wrapped") by the master key named `key_id`. Nothing here is secret
/// without the master key, but `Debug` still prints only the key id and sizes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which master key wrapped the data key.
    pub key_id: String,
    /// The data key encrypted under the master key (with its GCM tag).
    pub wrapped_key: Vec<u8>,
    /// Nonce of the data key's encryption.
    pub key_nonce: Vec<u8>,
    /// Nonce of the value's encryption.
    pub nonce: Vec<u8>,
    /// The value encrypted under the data key (with its GCM tag).
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// The row a sealed value belongs to. Its identity is bound into the encryption, so a sealed
/// value copied to another row does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedOwner {
    /// The API key of a provider.
    ProviderKey(ProviderId),
    /// The value of the named secret.
    Secret(String),
}

/// One sealed value with its owner (start-up checks and rotation read these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRef {
    pub owner: SealedOwner,
    pub sealed: Sealed,
}
