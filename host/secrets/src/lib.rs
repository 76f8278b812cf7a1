//! Envelope encryption of the secrets Everruns stores (provider API keys, plugin secrets).
//!
//! Each value is sealed with its own random 256-bit data key (AES-256-GCM, random 96-bit
//! nonce); the data key is sealed ("wrapped") by a master key named by a key id. The owner of
//! the value (a provider's id, a secret's name) is bound as associated data into both
//! encryptions, so a sealed value copied to another row, or a wrapped key moved to another
//! value, fails to open instead of decrypting to something. A [`Keyring`] holds the current
//! master key (which seals) and optionally the previous one (which still opens), so keys can
//! be rotated: [`Keyring::reseal`] moves a value to the current key.
//!
//! Master keys are written `KEYID:BASE64` (32 random bytes in standard base64), e.g.
//! `k2026:q83v...=`; [`MasterKey::generate`] makes one. Key material is zeroized on drop and
//! never printed by `Debug`. This crate does no I/O: reading keys from the environment or a
//! file is the server's job.
//!
//! Modules:
//! - `key`: [`MasterKey`], parsing and generating.
//! - `keyring`: [`Keyring`], sealing, opening and resealing.
//! - `error`: [`SecretsError`].

mod error;
mod key;
mod keyring;

pub use error::SecretsError;
pub use key::{KEY_ID_MAX, MasterKey};
pub use keyring::{Keyring, api_key_hint};
