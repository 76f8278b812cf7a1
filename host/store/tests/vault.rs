//! Conformance of providers, secrets and sealed values, run against SQLite and PostgreSQL
//! (`sqlite::<case>` and `postgres::<case>`), each on a fresh database. The store only keeps
//! sealed bytes, so these cases use arbitrary bytes in the sealed columns.

use std::sync::Arc;

use everruns_core::{
    NewProvider, PageRequest, ProviderId, ProviderKind, ProviderPatch, Sealed, SealedOwner,
};
use everruns_store::{Store, StoreConfig, StoreError, connect};
use everruns_testkit::TestDb;

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = everruns_testkit::TestDb::sqlite();
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = everruns_testkit::TestDb::postgres().await;
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}

conformance!(
    providers_round_trip_and_patch,
    provider_names_are_unique_and_found_by_name,
    unknown_providers_and_secrets_are_not_found,
    secrets_are_put_replaced_listed_and_deleted,
    sealed_samples_name_every_key_id,
    replace_sealed_swaps_only_an_unchanged_value,
);

async fn open(db: &TestDb) -> Arc<dyn Store> {
    connect(&StoreConfig {
        url: db.url().to_owned(),
        max_connections: 4,
    })
    .await
    .unwrap_or_else(|err| panic!("opening the {} store: {err}", db.backend()))
}

/// Distinct arbitrary bytes per `seed`, the shape of a real sealed value.
fn sealed(key_id: &str, seed: u8) -> Sealed {
    Sealed {
        key_id: key_id.to_owned(),
        wrapped_key: vec![seed; 48],
        key_nonce: vec![seed.wrapping_add(1); 12],
        nonce: vec![seed.wrapping_add(2); 12],
        ciphertext: vec![seed.wrapping_add(3); 40],
    }
}

fn new_provider(name: &str, seed: u8) -> NewProvider {
    NewProvider {
        id: ProviderId::new(),
        name: name.to_owned(),
        kind: ProviderKind::OpenAi,
        base_url: "https://api.example.com/v1".to_owned(),
        default_model: Some("gpt-x".to_owned()),
        models: vec!["gpt-x".to_owned(), "gpt-y".to_owned()],
        api_key: sealed("k1", seed),
        api_key_hint: "…abcd".to_owned(),
    }
}

async fn providers_round_trip_and_patch(db: &TestDb) {
    let store = open(db).await;
    let new = new_provider("main", 1);
    let created = store.create_provider(new.clone()).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.created_at, created.updated_at);
    let read = store.get_provider(&new.id).await.unwrap();
    assert_eq!(
        read, created,
        "what a write returns equals what a read returns"
    );

    // A patch changes only what it names; `Some(None)` clears the default model.
    let patched = store
        .update_provider(
            &new.id,
            ProviderPatch {
                kind: Some(ProviderKind::Anthropic),
                default_model: Some(None),
                ..ProviderPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.kind, ProviderKind::Anthropic);
    assert_eq!(patched.default_model, None);
    assert_eq!(patched.models, created.models);
    assert_eq!(patched.api_key, created.api_key);
    assert!(patched.updated_at >= created.updated_at);

    let rekeyed = store
        .update_provider(
            &new.id,
            ProviderPatch {
                name: Some("renamed".to_owned()),
                base_url: Some("http://localhost:11434/v1".to_owned()),
                default_model: Some(Some("llama".to_owned())),
                models: Some(vec![]),
                api_key: Some((sealed("k2", 9), "…wxyz".to_owned())),
                ..ProviderPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rekeyed.name, "renamed");
    assert_eq!(rekeyed.base_url, "http://localhost:11434/v1");
    assert_eq!(rekeyed.default_model.as_deref(), Some("llama"));
    assert!(rekeyed.models.is_empty());
    assert_eq!(rekeyed.api_key, sealed("k2", 9));
    assert_eq!(rekeyed.api_key_hint, "…wxyz");
    assert_eq!(rekeyed.kind, ProviderKind::Anthropic);
    assert_eq!(store.get_provider(&new.id).await.unwrap(), rekeyed);

    let second = store
        .create_provider(new_provider("second", 2))
        .await
        .unwrap();
    let page = store.list_providers(&PageRequest::first(1)).await.unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(page.items, vec![rekeyed.clone()]);
    let rest = store
        .list_providers(&PageRequest {
            limit: 10,
            after: page.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(rest.items, vec![second.clone()]);
    assert_eq!(rest.next_cursor, None);

    store.delete_provider(&new.id).await.unwrap();
    assert!(matches!(
        store.get_provider(&new.id).await,
        Err(StoreError::NotFound {
            entity: "provider",
            ..
        })
    ));
    assert_eq!(
        store
            .list_providers(&PageRequest::first(10))
            .await
            .unwrap()
            .total,
        1
    );
}

async fn provider_names_are_unique_and_found_by_name(db: &TestDb) {
    let store = open(db).await;
    let a = store.create_provider(new_provider("a", 1)).await.unwrap();
    let b = store.create_provider(new_provider("b", 2)).await.unwrap();
    match store.create_provider(new_provider("a", 3)).await {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, "a provider named `a` already exists"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let rename = ProviderPatch {
        name: Some("a".to_owned()),
        ..ProviderPatch::default()
    };
    assert!(matches!(
        store.update_provider(&b.id, rename).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_provider_by_name("a").await.unwrap(), a);
    assert_eq!(store.get_provider_by_name("b").await.unwrap().id, b.id);
    assert!(matches!(
        store.get_provider_by_name("A").await,
        Err(StoreError::NotFound { .. })
    ));
    let mut nul = new_provider("x\0y", 4);
    assert!(matches!(
        store.create_provider(nul.clone()).await,
        Err(StoreError::Invalid(_))
    ));
    nul.name = "fine".to_owned();
    nul.models = vec!["m\0".to_owned()];
    assert!(matches!(
        store.create_provider(nul).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn unknown_providers_and_secrets_are_not_found(db: &TestDb) {
    let store = open(db).await;
    let id = ProviderId::new();
    for result in [
        store.get_provider(&id).await.map(drop),
        store.delete_provider(&id).await,
        store
            .update_provider(&id, ProviderPatch::default())
            .await
            .map(drop),
        store.get_provider_by_name("nope").await.map(drop),
        store.get_secret("nope").await.map(drop),
        store.delete_secret("nope").await,
    ] {
        assert!(
            matches!(result, Err(StoreError::NotFound { .. })),
            "{result:?}"
        );
    }
}

async fn secrets_are_put_replaced_listed_and_deleted(db: &TestDb) {
    let store = open(db).await;
    let (created, was_new) = store.put_secret("B_TOKEN", sealed("k1", 1)).await.unwrap();
    assert!(was_new);
    assert_eq!(created.name, "B_TOKEN");
    assert_eq!(created.value, sealed("k1", 1));
    assert_eq!(store.get_secret("B_TOKEN").await.unwrap(), created);

    let (replaced, was_new) = store.put_secret("B_TOKEN", sealed("k1", 7)).await.unwrap();
    assert!(!was_new);
    assert_eq!(replaced.created_at, created.created_at);
    assert!(replaced.updated_at >= created.updated_at);
    assert_eq!(
        store.get_secret("B_TOKEN").await.unwrap().value,
        sealed("k1", 7)
    );

    store.put_secret("A.key", sealed("k1", 2)).await.unwrap();
    store.put_secret("c-key", sealed("k1", 3)).await.unwrap();
    // Name order (byte order: upper case first), paged by name.
    let first = store.list_secrets(&PageRequest::first(2)).await.unwrap();
    assert_eq!(first.total, 3);
    let names: Vec<_> = first.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["A.key", "B_TOKEN"]);
    let rest = store
        .list_secrets(&PageRequest {
            limit: 2,
            after: first.next_cursor,
        })
        .await
        .unwrap();
    let names: Vec<_> = rest.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["c-key"]);
    assert_eq!(rest.next_cursor, None);

    store.delete_secret("B_TOKEN").await.unwrap();
    assert!(matches!(
        store.get_secret("B_TOKEN").await,
        Err(StoreError::NotFound {
            entity: "secret",
            ..
        })
    ));
    assert_eq!(
        store
            .list_secrets(&PageRequest::first(10))
            .await
            .unwrap()
            .total,
        2
    );
}

async fn sealed_samples_name_every_key_id(db: &TestDb) {
    let store = open(db).await;
    assert!(store.sealed_samples().await.unwrap().is_empty());
    let p1 = store.create_provider(new_provider("p1", 1)).await.unwrap();
    store.create_provider(new_provider("p2", 2)).await.unwrap();
    store.put_secret("s1", sealed("k1", 3)).await.unwrap();
    store.put_secret("s2", sealed("k0", 4)).await.unwrap();
    let samples = store.sealed_samples().await.unwrap();
    let mut seen: Vec<(String, SealedOwner)> = samples
        .iter()
        .map(|s| (s.sealed.key_id.clone(), s.owner.clone()))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["k0", "k1", "k1"],
        "one sample per key id and table: {seen:?}"
    );
    assert!(seen.contains(&("k1".to_owned(), SealedOwner::ProviderKey(p1.id.clone()))));
    assert!(seen.contains(&("k0".to_owned(), SealedOwner::Secret("s2".to_owned()))));
    let sample = samples
        .iter()
        .find(|s| s.owner == SealedOwner::ProviderKey(p1.id.clone()))
        .unwrap();
    assert_eq!(sample.sealed, p1.api_key);
}

async fn replace_sealed_swaps_only_an_unchanged_value(db: &TestDb) {
    let store = open(db).await;
    let provider = store.create_provider(new_provider("p", 1)).await.unwrap();
    let owner = SealedOwner::ProviderKey(provider.id.clone());
    let newer = sealed("k2", 20);
    assert!(
        store
            .replace_sealed(&owner, &provider.api_key, &newer)
            .await
            .unwrap()
    );
    let read = store.get_provider(&provider.id).await.unwrap();
    assert_eq!(read.api_key, newer);
    assert_eq!(
        read.updated_at, provider.updated_at,
        "rotation is not an edit"
    );
    // The old value is gone: a second swap from it does nothing.
    assert!(
        !store
            .replace_sealed(&owner, &provider.api_key, &sealed("k3", 30))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_provider(&provider.id).await.unwrap().api_key,
        newer
    );

    let (secret, _) = store.put_secret("S", sealed("k1", 5)).await.unwrap();
    let owner = SealedOwner::Secret("S".to_owned());
    assert!(
        store
            .replace_sealed(&owner, &secret.value, &newer)
            .await
            .unwrap()
    );
    assert_eq!(store.get_secret("S").await.unwrap().value, newer);
    let gone = SealedOwner::Secret("missing".to_owned());
    assert!(
        !store
            .replace_sealed(&gone, &secret.value, &newer)
            .await
            .unwrap()
    );
}
