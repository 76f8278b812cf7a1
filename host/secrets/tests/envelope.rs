//! Envelope encryption: round trips, tamper detection in every stored field, values moved to
//! another row, wrong and missing master keys, the previous key during rotation, resealing.

use everruns_core::{ProviderId, Sealed, SealedOwner};
use everruns_secrets::{Keyring, MasterKey, SecretsError, api_key_hint};
use secrecy::ExposeSecret;

const PLAINTEXT: &str = "sk-live-0123456789abcdef";

fn keyring(id: &str) -> Keyring {
    Keyring::new(MasterKey::generate(id).unwrap(), None).unwrap()
}

fn provider() -> SealedOwner {
    SealedOwner::ProviderKey(ProviderId::new())
}

#[test]
fn values_round_trip_and_never_contain_the_plaintext() {
    let ring = keyring("k1");
    for owner in [provider(), SealedOwner::Secret("GITHUB_TOKEN".to_owned())] {
        let sealed = ring.seal(&owner, PLAINTEXT.as_bytes());
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(sealed.key_nonce.len(), 12);
        assert_eq!(sealed.wrapped_key.len(), 48);
        assert_eq!(sealed.ciphertext.len(), PLAINTEXT.len() + 16);
        let all: Vec<u8> = [
            &sealed.wrapped_key[..],
            &sealed.key_nonce,
            &sealed.nonce,
            &sealed.ciphertext,
        ]
        .concat();
        assert!(
            !all.windows(8)
                .any(|w| PLAINTEXT.as_bytes().windows(8).any(|p| p == w))
        );
        assert_eq!(
            ring.open_string(&owner, &sealed).unwrap().expose_secret(),
            PLAINTEXT
        );
        // Sealing twice gives unrelated bytes (fresh data key and nonces).
        let again = ring.seal(&owner, PLAINTEXT.as_bytes());
        assert_ne!(again.ciphertext, sealed.ciphertext);
        assert_ne!(again.wrapped_key, sealed.wrapped_key);
        assert_ne!(again.nonce, sealed.nonce);
    }
    let empty = ring.seal(&provider(), b"");
    assert!(
        ring.open(&provider(), &empty).is_err(),
        "bound to its owner"
    );
}

#[test]
fn a_flipped_byte_in_any_field_is_detected() {
    let ring = keyring("k1");
    let owner = provider();
    let sealed = ring.seal(&owner, PLAINTEXT.as_bytes());
    type Field = fn(&mut Sealed) -> &mut Vec<u8>;
    let fields: [(&str, Field); 4] = [
        ("wrapped_key", |s| &mut s.wrapped_key),
        ("key_nonce", |s| &mut s.key_nonce),
        ("nonce", |s| &mut s.nonce),
        ("ciphertext", |s| &mut s.ciphertext),
    ];
    for (name, field) in fields {
        let len = field(&mut sealed.clone()).len();
        for at in [0, len / 2, len - 1] {
            let mut tampered = sealed.clone();
            field(&mut tampered)[at] ^= 0x01;
            let err = ring.open(&owner, &tampered).unwrap_err();
            assert_eq!(err, SecretsError::Open("k1".to_owned()), "{name}[{at}]");
        }
        let mut truncated = sealed.clone();
        field(&mut truncated).pop();
        assert!(ring.open(&owner, &truncated).is_err(), "{name} truncated");
    }
}

#[test]
fn values_moved_to_another_row_do_not_open() {
    let ring = keyring("k1");
    let (a, b) = (provider(), provider());
    let sealed_a = ring.seal(&a, b"key of provider a");
    let sealed_b = ring.seal(&b, b"key of provider b");
    assert!(matches!(
        ring.open(&b, &sealed_a),
        Err(SecretsError::Open(_))
    ));
    // A secret and a provider never share associated data either.
    let secret = SealedOwner::Secret("a".to_owned());
    assert!(ring.open(&secret, &sealed_a).is_err());
    // Swapping only the wrapped data keys between two rows fails too.
    let mut mixed = sealed_a.clone();
    mixed.wrapped_key = sealed_b.wrapped_key.clone();
    mixed.key_nonce = sealed_b.key_nonce.clone();
    assert!(ring.open(&a, &mixed).is_err());
    assert!(ring.open(&b, &mixed).is_err());
    // Renaming the key id on a value does not make another key accept it.
    let other = Keyring::new(
        MasterKey::generate("k2").unwrap(),
        Some(MasterKey::generate("k1").unwrap()),
    )
    .unwrap();
    assert!(matches!(
        other.open(&a, &sealed_a),
        Err(SecretsError::Open(_))
    ));
}

#[test]
fn wrong_or_missing_master_keys_fail_clearly() {
    let owner = provider();
    let sealed = keyring("k1").seal(&owner, PLAINTEXT.as_bytes());
    let wrong = keyring("k1");
    let err = wrong.open(&owner, &sealed).unwrap_err();
    assert!(err.to_string().contains("does not open"), "{err}");
    let missing = keyring("k9");
    let err = missing.open(&owner, &sealed).unwrap_err();
    assert_eq!(err, SecretsError::UnknownKeyId("k1".to_owned()));
    assert!(err.to_string().contains("EVERRUNS_SECRET_KEY"), "{err}");
}

#[test]
fn the_previous_key_opens_and_reseal_moves_values_to_the_current_key() {
    let old_key = MasterKey::generate("old").unwrap();
    let before = Keyring::new(old_key.clone(), None).unwrap();
    let owner = SealedOwner::Secret("TOKEN".to_owned());
    let sealed_old = before.seal(&owner, PLAINTEXT.as_bytes());

    let after = Keyring::new(MasterKey::generate("new").unwrap(), Some(old_key)).unwrap();
    assert_eq!(after.current_id(), "new");
    assert!(after.has_key("old") && after.has_key("new") && !after.has_key("other"));
    assert_eq!(
        &*after.open(&owner, &sealed_old).unwrap(),
        PLAINTEXT.as_bytes()
    );

    let resealed = after.reseal(&owner, &sealed_old).unwrap().expect("moved");
    assert_eq!(resealed.key_id, "new");
    assert_eq!(
        &*after.open(&owner, &resealed).unwrap(),
        PLAINTEXT.as_bytes()
    );
    // Idempotent: a value under the current key stays as it is.
    assert_eq!(after.reseal(&owner, &resealed).unwrap(), None);
    // Without the previous key, values not yet resealed name the key they need.
    let without_previous = keyring("new");
    assert_eq!(
        without_previous.open(&owner, &sealed_old).unwrap_err(),
        SecretsError::UnknownKeyId("old".to_owned())
    );
}

#[test]
fn one_id_for_two_different_keys_is_refused() {
    let err = Keyring::new(
        MasterKey::generate("k1").unwrap(),
        Some(MasterKey::generate("k1").unwrap()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("same id `k1`"), "{err}");
    let key = MasterKey::generate("k1").unwrap();
    assert!(Keyring::new(key.clone(), Some(key)).is_ok());
}

#[test]
fn hints_show_only_the_last_four_characters_of_long_keys() {
    assert_eq!(api_key_hint("sk-0123456789abcd"), "…abcd");
    assert_eq!(api_key_hint("12345678"), "…5678");
    assert_eq!(api_key_hint("1234567"), "…");
    assert_eq!(api_key_hint(""), "…");
}
