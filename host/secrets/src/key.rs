//! Master keys: 32 bytes with an id, written `KEYID:BASE64`.

use std::fmt;

use aes_gcm::aead::KeyInit;
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::SecretsError;

/// Longest accepted key id, in bytes.
pub const KEY_ID_MAX: usize = 64;

/// A 256-bit master key and its id. The bytes are zeroized on drop; `Debug` shows the id only.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn check_id(id: &str) -> Result<(), SecretsError> {
    let valid = !id.is_empty()
        && id.len() <= KEY_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(SecretsError::InvalidKey(format!(
            "the key id must be 1 to {KEY_ID_MAX} of `A-Z a-z 0-9 _ . -`"
        )))
    }
}

impl MasterKey {
    /// A new random key with id `id`.
    pub fn generate(id: &str) -> Result<Self, SecretsError> {
        check_id(id)?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut bytes[..]);
        Ok(Self {
            id: id.to_owned(),
            bytes,
        })
    }

    /// Parses `KEYID:BASE64` (standard base64 of exactly 32 bytes, padding optional). The
    /// error never repeats the input.
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let text = text.trim();
        let Some((id, encoded)) = text.split_once(':') else {
            return Err(SecretsError::InvalidKey(
                "expected `KEYID:BASE64` (e.g. `k1:` followed by 32 random bytes in base64)"
                    .to_owned(),
            ));
        };
        check_id(id)?;
        let mut decoded = Zeroizing::new(
            STANDARD_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .map_err(|_| {
                    SecretsError::InvalidKey(format!(
                        "the part after `{id}:` is not standard base64"
                    ))
                })?,
        );
        if decoded.len() != 32 {
            let len = decoded.len();
            decoded.zeroize();
            return Err(SecretsError::InvalidKey(format!(
                "key `{id}` is {len} bytes long; it must be exactly 32"
            )));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&decoded);
        Ok(Self {
            id: id.to_owned(),
            bytes,
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as `KEYID:BASE64`, for writing the key file or printing a new key.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}:{}", self.id, STANDARD.encode(&self.bytes[..])))
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.bytes[..]))
    }

    pub(crate) fn same_bytes(&self, other: &MasterKey) -> bool {
        self.bytes[..] == other.bytes[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_and_parse_back() {
        let key = MasterKey::generate("k1").unwrap();
        let text = key.encode();
        assert!(text.starts_with("k1:"));
        let parsed = MasterKey::parse(&text).unwrap();
        assert_eq!(parsed.id(), "k1");
        assert!(parsed.same_bytes(&key));
        // Padding is optional.
        let unpadded = MasterKey::parse(text.trim_end_matches('=')).unwrap();
        assert!(unpadded.same_bytes(&key));
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let short = format!("k1:{}", STANDARD.encode([7u8; 16]));
        for (text, needle) in [
            ("no-colon-here", "KEYID:BASE64"),
            ("bad id!:AAAA", "key id"),
            (":AAAA", "key id"),
            ("k1:***not base64***", "base64"),
            (short.as_str(), "16 bytes"),
        ] {
            let err = MasterKey::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            if let Some((_, secret)) = text.split_once(':') {
                assert!(secret.len() < 4 || !err.contains(secret), "{err}");
            }
        }
    }

    #[test]
    fn debug_shows_the_id_but_not_the_key() {
        let key = MasterKey::generate("visible-id").unwrap();
        let encoded = key.encode();
        let (_, b64) = encoded.split_once(':').unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains("visible-id"));
        assert!(!debug.contains(b64));
        assert!(!debug.contains(&b64[..8]));
    }
}
