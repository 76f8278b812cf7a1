//! [`Keyring`]: the configured master keys, and sealing, opening and resealing values.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use everruns_core::{Sealed, SealedOwner};
use rand::RngCore;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::{MasterKey, SecretsError};

/// AES-GCM nonce length (96 bits).
const NONCE_LEN: usize = 12;
/// Data key length (256 bits).
const DATA_KEY_LEN: usize = 32;
/// GCM authentication tag length.
const TAG_LEN: usize = 16;
/// Version tag at the start of every associated data, so a future format cannot be confused
/// with this one.
const AAD_PREFIX: &str = "everruns-sealed-v1";

/// The master keys of this process: `current` seals, `current` and `previous` open.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Option<MasterKey>,
}

/// What the value's encryption is bound to: the owner row.
fn value_aad(owner: &SealedOwner) -> String {
    match owner {
        SealedOwner::ProviderKey(id) => format!("{AAD_PREFIX}|provider-key|{id}"),
        SealedOwner::Secret(name) => format!("{AAD_PREFIX}|secret|{name}"),
    }
}

/// What the data key's wrapping is bound to: the owner row and the master key id.
fn wrap_aad(owner: &SealedOwner, key_id: &str) -> String {
    format!("{}|wrapped-by|{key_id}", value_aad(owner))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `…` plus the last 4 characters of a key, or just `…` when the key is shorter than 8
/// characters (showing half of a short key would give too much away).
pub fn api_key_hint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 8 {
        "…".to_owned()
    } else {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("…{tail}")
    }
}

impl Keyring {
    /// A keyring sealing with `current`; `previous` (from before a rotation) still opens.
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Result<Self, SecretsError> {
        if let Some(prev) = &previous
            && prev.id() == current.id()
            && !prev.same_bytes(&current)
        {
            return Err(SecretsError::Keyring(format!(
                "the previous key and the current key are different keys with the same id `{}`; \
                 give the new key a new id",
                current.id()
            )));
        }
        Ok(Self { current, previous })
    }

    /// The id of the key new values are sealed with.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Whether a key with this id is configured.
    pub fn has_key(&self, id: &str) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.id() == id)
    }

    /// Seals `plaintext` for `owner` under the current master key, with a fresh data key and
    /// fresh nonces.
    pub fn seal(&self, owner: &SealedOwner, plaintext: &[u8]) -> Sealed {
        let data_key = Zeroizing::new(random::<DATA_KEY_LEN>());
        let data_cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&data_key[..]));
        let nonce = random::<NONCE_LEN>();
        let value_aad = value_aad(owner);
        // AES-GCM encryption only fails for inputs beyond ~64 GiB; our values are tiny.
        let ciphertext = data_cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: value_aad.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any input under 64 GiB");
        let key_nonce = random::<NONCE_LEN>();
        let key_id = self.current.id().to_owned();
        let wrap_aad = wrap_aad(owner, &key_id);
        let wrapped_key = self
            .current
            .cipher()
            .encrypt(
                Nonce::from_slice(&key_nonce),
                Payload {
                    msg: &data_key[..],
                    aad: wrap_aad.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts a 32-byte key");
        Sealed {
            key_id,
            wrapped_key,
            key_nonce: key_nonce.to_vec(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a value sealed for `owner`. Fails (never returns garbage) when the master key is
    /// not configured or wrong, a byte was altered, or the value belongs to another owner.
    pub fn open(
        &self,
        owner: &SealedOwner,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let master = self
            .key(&sealed.key_id)
            .ok_or_else(|| SecretsError::UnknownKeyId(sealed.key_id.clone()))?;
        if sealed.key_nonce.len() != NONCE_LEN || sealed.nonce.len() != NONCE_LEN {
            return Err(SecretsError::Malformed(format!(
                "nonces must be {NONCE_LEN} bytes"
            )));
        }
        if sealed.wrapped_key.len() != DATA_KEY_LEN + TAG_LEN || sealed.ciphertext.len() < TAG_LEN {
            return Err(SecretsError::Malformed(
                "the wrapped key or the ciphertext has an impossible length".to_owned(),
            ));
        }
        let open_failed = || SecretsError::Open(sealed.key_id.clone());
        let wrap_aad = wrap_aad(owner, &sealed.key_id);
        let data_key = Zeroizing::new(
            master
                .cipher()
                .decrypt(
                    Nonce::from_slice(&sealed.key_nonce),
                    Payload {
                        msg: &sealed.wrapped_key,
                        aad: wrap_aad.as_bytes(),
                    },
                )
                .map_err(|_| open_failed())?,
        );
        let data_cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| open_failed())?;
        let value_aad = value_aad(owner);
        data_cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: value_aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| open_failed())
    }

    /// [`Keyring::open`] for a text value.
    pub fn open_string(
        &self,
        owner: &SealedOwner,
        sealed: &Sealed,
    ) -> Result<SecretString, SecretsError> {
        let bytes = self.open(owner, sealed)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| SecretsError::Malformed("the value is not UTF-8 text".to_owned()))?;
        Ok(SecretString::from(text.to_owned()))
    }

    /// The value sealed again under the current master key (with a new data key), or `None`
    /// when it already is under the current key.
    pub fn reseal(
        &self,
        owner: &SealedOwner,
        sealed: &Sealed,
    ) -> Result<Option<Sealed>, SecretsError> {
        if sealed.key_id == self.current.id() {
            return Ok(None);
        }
        let plaintext = self.open(owner, sealed)?;
        Ok(Some(self.seal(owner, &plaintext)))
    }
}
