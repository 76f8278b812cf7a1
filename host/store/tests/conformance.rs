//! The store conformance suite: one set of cases, each run against SQLite and against
//! PostgreSQL, each time on a fresh database (`sqlite::<case>` and `postgres::<case>`).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use everruns_core::{
    AgentId, AgentPatch, ApiKeyId, CapabilityRef, KV_KEY_MAX, KvScope, KvUsage, MessageRole,
    ModelSettings, NewAgent, NewApiKey, NewMessage, NewSession, Page, PageRequest, Role, SessionId,
    SessionPatch, SessionStatus, Timestamp,
};
use everruns_store::{Store, StoreConfig, StoreError, connect};
use everruns_testkit::TestDb;
use serde_json::json;

/// Instantiates every case once per backend, as `sqlite::<case>` and `postgres::<case>`.
macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = everruns_testkit::TestDb::sqlite();
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
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
    agents_round_trip_every_field,
    agent_patches_change_only_what_they_name,
    duplicate_agent_names_conflict,
    unknown_ids_are_not_found,
    sessions_are_created_listed_updated_and_deleted,
    deleting_an_agent_deletes_its_sessions_and_messages,
    messages_are_listed_in_append_order,
    pagination_has_no_gaps_or_duplicates,
    api_keys_authenticate_until_revoked,
    duplicate_api_key_names_and_hashes_conflict,
    the_first_api_key_is_created_only_once,
    racing_first_api_keys_create_exactly_one,
    kv_values_are_set_read_overwritten_and_deleted,
    kv_list_takes_the_prefix_literally,
    kv_usage_counts_keys_and_bytes_per_owner,
    kv_scopes_are_isolated,
    kv_state_of_a_missing_owner_is_not_written,
    kv_writes_racing_a_delete_leave_nothing,
    kv_rejects_unusable_keys,
    text_with_nul_is_invalid,
    concurrent_writers_all_land,
    concurrent_migrations_do_not_race,
    data_survives_reopening,
);

// ---- helpers ----

/// A new untitled session of `agent`.
async fn session_of(store: &Arc<dyn Store>, agent: &AgentId) -> everruns_core::Session {
    store
        .create_session(NewSession {
            agent_id: agent.clone(),
            title: None,
            overrides: None,
        })
        .await
        .unwrap()
}

async fn open(db: &TestDb) -> Arc<dyn Store> {
    connect(&StoreConfig {
        url: db.url().to_owned(),
        max_connections: 8,
    })
    .await
    .unwrap_or_else(|err| panic!("opening the {} store: {err}", db.backend()))
}

fn new_agent(name: &str) -> NewAgent {
    NewAgent {
        name: name.to_owned(),
        system_prompt: format!("You are {name}."),
        model: ModelSettings::default(),
        capabilities: Vec::new(),
        tool_approval: None,
    }
}

fn new_key(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.to_owned(),
        prefix: format!("evr_{name}"),
        hash: format!("{:0>64}", name.len().to_string() + name),
        role: Role::Operator,
    }
}

fn text(session: &SessionId, content: &str) -> NewMessage {
    NewMessage {
        session_id: session.clone(),
        role: MessageRole::User,
        content: content.to_owned(),
        metadata: serde_json::Value::Null,
    }
}

fn assert_micros(ts: Timestamp) {
    assert_eq!(
        ts.timestamp_subsec_nanos() % 1000,
        0,
        "timestamps are stored with microsecond precision: {ts}"
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: everruns_store::Result<T>, entity: &str, id: &str) {
    match result {
        Err(StoreError::NotFound { entity: e, id: i }) => {
            assert_eq!((e, i.as_str()), (entity, id));
        }
        other => panic!("expected {entity} `{id}` not found, got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: everruns_store::Result<T>, message: &str) {
    match result {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, message),
        other => panic!("expected conflict `{message}`, got {other:?}"),
    }
}

fn assert_invalid<T: std::fmt::Debug>(result: everruns_store::Result<T>) {
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "expected invalid input, got {result:?}"
    );
}

/// Reads a whole list `limit` items at a time, checking the page invariants on the way.
/// Returns the pages.
async fn read_all<T, F, Fut>(limit: u32, mut fetch: F) -> Vec<Page<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = everruns_store::Result<Page<T>>>,
{
    let mut pages = Vec::new();
    let mut request = PageRequest::first(limit);
    loop {
        let page = fetch(request.clone()).await.expect("listing a page");
        assert!(page.items.len() <= limit as usize);
        let next = page.next_cursor.clone();
        pages.push(page);
        match next {
            Some(cursor) => request.after = Some(cursor),
            None => return pages,
        }
        assert!(pages.len() < 1000, "pagination does not terminate");
    }
}

// ---- agents ----

async fn agents_round_trip_every_field(db: &TestDb) {
    let store = open(db).await;
    let new = NewAgent {
        name: "Ünïcode agent ✓ 'quoted' \"double\"".to_owned(),
        system_prompt: "Line one.\nLine two: ünïcode, emoji 🦀, tab\t, backslash \\.".to_owned(),
        model: ModelSettings {
            provider: Some("openai".to_owned()),
            model: Some("gpt-4.1-mini".to_owned()),
            temperature: Some(0.7),
            max_tokens: Some(4096),
            max_steps: Some(25),
            max_tokens_per_run: Some(1_000_000),
            max_duration_seconds: Some(600),
            max_tool_calls_per_run: Some(40),
        },
        capabilities: vec![
            CapabilityRef {
                id: "zeta".to_owned(),
                config: json!({"b": 1, "a": [3, 1, 2, {"nested": null}], "f": 0.1, "big": 9_007_199_254_740_993u64}),
            },
            CapabilityRef {
                id: "alpha".to_owned(),
                config: serde_json::Value::Null,
            },
            CapabilityRef {
                id: "middle".to_owned(),
                config: json!("a string config with \u{0} escaped"),
            },
        ],
        tool_approval: Some(everruns_core::ToolApproval {
            require: vec!["memory__*".into(), "files__delete_?".into()],
            timeout_seconds: 60,
        }),
    };
    let created = store.create_agent(new.clone()).await.unwrap();
    assert_eq!(created.name, new.name);
    assert_eq!(created.system_prompt, new.system_prompt);
    assert_eq!(created.model, new.model);
    assert_eq!(created.capabilities, new.capabilities);
    assert!(!created.archived);
    assert_eq!(created.tool_approval, new.tool_approval);
    assert_eq!(created.created_at, created.updated_at);
    assert_micros(created.created_at);
    let ids: Vec<_> = created.capabilities.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["zeta", "alpha", "middle"], "capability order is kept");

    let fetched = store.get_agent(&created.id).await.unwrap();
    assert_eq!(fetched, created, "every field round-trips");

    let plain = store.create_agent(new_agent("plain")).await.unwrap();
    assert_eq!(store.get_agent(&plain.id).await.unwrap(), plain);
    assert_eq!(plain.model, ModelSettings::default());
}

async fn agent_patches_change_only_what_they_name(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("patchable")).await.unwrap();

    let same = store
        .update_agent(&agent.id, AgentPatch::default())
        .await
        .unwrap();
    assert!(same.updated_at >= agent.updated_at);
    assert_micros(same.updated_at);
    assert_eq!(
        (same.name.as_str(), &same.model, same.created_at),
        (agent.name.as_str(), &agent.model, agent.created_at)
    );

    // A tool approval policy is set, kept by patches that leave it out, and removed.
    let policy = everruns_core::ToolApproval {
        require: vec!["*".into()],
        timeout_seconds: 5,
    };
    let with = store
        .update_agent(
            &agent.id,
            AgentPatch {
                tool_approval: Some(Some(policy.clone())),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(with.tool_approval.as_ref(), Some(&policy));
    let kept = store
        .update_agent(&agent.id, AgentPatch::default())
        .await
        .unwrap();
    assert_eq!(kept.tool_approval.as_ref(), Some(&policy));
    let without = store
        .update_agent(
            &agent.id,
            AgentPatch {
                tool_approval: Some(None),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(without.tool_approval, None);

    let renamed = store
        .update_agent(
            &agent.id,
            AgentPatch {
                name: Some("renamed".to_owned()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert_eq!(renamed.system_prompt, agent.system_prompt);
    assert_eq!(renamed.capabilities, agent.capabilities);

    let model = ModelSettings {
        provider: Some("anthropic".to_owned()),
        temperature: Some(0.0),
        ..ModelSettings::default()
    };
    let capabilities = vec![CapabilityRef {
        id: "current_time".to_owned(),
        config: json!({"tz": "UTC"}),
    }];
    let everything = store
        .update_agent(
            &agent.id,
            AgentPatch {
                name: None,
                system_prompt: Some("new prompt".to_owned()),
                model: Some(model.clone()),
                capabilities: Some(capabilities.clone()),
                archived: Some(true),
                tool_approval: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(everything.name, "renamed", "unnamed fields stay");
    assert_eq!(everything.system_prompt, "new prompt");
    assert_eq!(everything.model, model);
    assert_eq!(everything.capabilities, capabilities);
    assert!(everything.archived);
    assert_eq!(everything.created_at, agent.created_at);
    assert!(everything.updated_at >= renamed.updated_at);
    assert_eq!(store.get_agent(&agent.id).await.unwrap(), everything);

    let cleared = store
        .update_agent(
            &agent.id,
            AgentPatch {
                capabilities: Some(Vec::new()),
                archived: Some(false),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(cleared.capabilities.is_empty());
    assert!(!cleared.archived);
    assert_eq!(cleared.model, model);
    assert_eq!(store.get_agent(&agent.id).await.unwrap(), cleared);
}

async fn duplicate_agent_names_conflict(db: &TestDb) {
    let store = open(db).await;
    let first = store.create_agent(new_agent("twin")).await.unwrap();
    assert_conflict(
        store.create_agent(new_agent("twin")).await,
        "an agent named `twin` already exists",
    );
    // Names compare exactly: another case is another name, on both backends.
    store.create_agent(new_agent("Twin")).await.unwrap();

    let other = store.create_agent(new_agent("other")).await.unwrap();
    assert_conflict(
        store
            .update_agent(
                &other.id,
                AgentPatch {
                    name: Some("twin".to_owned()),
                    ..AgentPatch::default()
                },
            )
            .await,
        "an agent named `twin` already exists",
    );
    assert_eq!(store.get_agent(&other.id).await.unwrap(), other);
    // Renaming an agent to its own name is not a conflict.
    store
        .update_agent(
            &first.id,
            AgentPatch {
                name: Some("twin".to_owned()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .list_agents(&PageRequest::default())
            .await
            .unwrap()
            .total,
        3
    );
}

async fn unknown_ids_are_not_found(db: &TestDb) {
    let store = open(db).await;
    let agent = AgentId::new();
    let session = SessionId::new();
    let key = ApiKeyId::new();
    let a = agent.as_str();
    let s = session.as_str();

    assert_not_found(store.get_agent(&agent).await, "agent", a);
    assert_not_found(
        store.update_agent(&agent, AgentPatch::default()).await,
        "agent",
        a,
    );
    assert_not_found(store.delete_agent(&agent).await, "agent", a);
    assert_not_found(
        store
            .create_session(NewSession {
                agent_id: agent.clone(),
                title: None,
                overrides: None,
            })
            .await,
        "agent",
        a,
    );
    assert_not_found(store.get_session(&session).await, "session", s);
    assert_not_found(
        store
            .update_session(&session, SessionPatch::default())
            .await,
        "session",
        s,
    );
    assert_not_found(store.delete_session(&session).await, "session", s);
    assert_not_found(
        store.append_message(text(&session, "hello")).await,
        "session",
        s,
    );
    assert_not_found(
        store.list_messages(&session, &PageRequest::default()).await,
        "session",
        s,
    );
    assert_not_found(store.revoke_api_key(&key).await, "API key", key.as_str());

    // Listing sessions of an unknown agent is an empty list, not an error.
    let page = store
        .list_sessions(Some(&agent), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        (page.items.len(), page.total, page.next_cursor),
        (0, 0, None)
    );
}

// ---- sessions and messages ----

async fn sessions_are_created_listed_updated_and_deleted(db: &TestDb) {
    let store = open(db).await;
    let a = store.create_agent(new_agent("a")).await.unwrap();
    let b = store.create_agent(new_agent("b")).await.unwrap();
    let mut of_a = Vec::new();
    for i in 0..3 {
        let title = (i != 1).then(|| format!("chat {i}"));
        of_a.push(
            store
                .create_session(NewSession {
                    agent_id: a.id.clone(),
                    title,
                    overrides: None,
                })
                .await
                .unwrap(),
        );
    }
    for _ in 0..2 {
        session_of(&store, &b.id).await;
    }

    let first = &of_a[0];
    assert_eq!(first.agent_id, a.id);
    assert_eq!(first.title.as_deref(), Some("chat 0"));
    assert_eq!(first.status, SessionStatus::Idle);
    assert_eq!(first.created_at, first.updated_at);
    assert_micros(first.created_at);
    assert_eq!(&store.get_session(&first.id).await.unwrap(), first);
    assert_eq!(store.get_session(&of_a[1].id).await.unwrap().title, None);

    let listed = store
        .list_sessions(Some(&a.id), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed.items, of_a,
        "in id (creation) order, every field equal"
    );
    assert_eq!((listed.total, listed.next_cursor), (3, None));
    let all = store
        .list_sessions(None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!((all.items.len(), all.total), (5, 5));

    let untouched = store
        .update_session(
            &first.id,
            SessionPatch {
                title: None,
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(untouched.title.as_deref(), Some("chat 0"));
    assert!(untouched.updated_at >= first.updated_at);
    let retitled = store
        .update_session(
            &first.id,
            SessionPatch {
                title: Some(Some("renamed".to_owned())),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(retitled.title.as_deref(), Some("renamed"));
    assert_eq!(retitled.created_at, first.created_at);
    let cleared = store
        .update_session(
            &first.id,
            SessionPatch {
                title: Some(None),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.title, None);

    // Overrides are stored as given, kept by patches that leave them out, and cleared.
    let overrides: everruns_core::Overrides = serde_json::from_value(serde_json::json!({
        "model": {"model": "big", "temperature": 0.5},
        "system_prompt_append": "Be brief.",
        "capabilities": [{"id": "memory", "enabled": false}, {"id": "todo", "config": {"a": 1}}],
    }))
    .unwrap();
    let with = store
        .update_session(
            &first.id,
            SessionPatch {
                overrides: Some(Some(overrides.clone())),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(with.overrides.as_ref(), Some(&overrides));
    let kept = store
        .update_session(
            &first.id,
            SessionPatch {
                title: Some(Some("again".to_owned())),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(kept.overrides.as_ref(), Some(&overrides));
    assert_eq!(
        store.get_session(&first.id).await.unwrap().overrides,
        Some(overrides.clone())
    );
    let without = store
        .update_session(
            &first.id,
            SessionPatch {
                overrides: Some(None),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(without.overrides, None);
    let created = store
        .create_session(NewSession {
            agent_id: first.agent_id.clone(),
            title: None,
            overrides: Some(overrides.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_session(&created.id).await.unwrap().overrides,
        Some(overrides.clone())
    );
    // One read gives a new run's inputs: the session's agent and the session's overrides.
    let agent = store.get_agent(&first.agent_id).await.unwrap();
    assert_eq!(
        store.session_agent(&created.id).await.unwrap(),
        (agent.clone(), Some(overrides))
    );
    assert_eq!(store.session_agent(&first.id).await.unwrap(), (agent, None));
    store.delete_session(&created.id).await.unwrap();
    assert_not_found(
        store.session_agent(&created.id).await,
        "session",
        created.id.as_str(),
    );
    assert_eq!(store.get_session(&first.id).await.unwrap(), without);

    store.append_message(text(&first.id, "hi")).await.unwrap();
    let (doomed_state, kept_state) = (
        KvScope::session("memory", &first.id),
        KvScope::agent("memory", &a.id),
    );
    store.kv_set(&doomed_state, "k", b"v").await.unwrap();
    store.kv_set(&kept_state, "k", b"v").await.unwrap();
    store.delete_session(&first.id).await.unwrap();
    assert_eq!(store.kv_get(&doomed_state, "k").await.unwrap(), None);
    assert_eq!(
        store.kv_get(&kept_state, "k").await.unwrap().as_deref(),
        Some(&b"v"[..]),
        "the agent's state outlives its session"
    );
    assert_not_found(
        store.get_session(&first.id).await,
        "session",
        first.id.as_str(),
    );
    assert_not_found(
        store
            .list_messages(&first.id, &PageRequest::default())
            .await,
        "session",
        first.id.as_str(),
    );
    let after = store
        .list_sessions(Some(&a.id), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(after.total, 2);
}

async fn deleting_an_agent_deletes_its_sessions_and_messages(db: &TestDb) {
    let store = open(db).await;
    let doomed = store.create_agent(new_agent("doomed")).await.unwrap();
    let kept = store.create_agent(new_agent("kept")).await.unwrap();
    let mut doomed_sessions = Vec::new();
    for _ in 0..2 {
        let session = session_of(&store, &doomed.id).await;
        store.append_message(text(&session.id, "x")).await.unwrap();
        // A run too: the start's message and events; and plugin state.
        store
            .start_run(&session.id, "go".to_owned(), None, None)
            .await
            .unwrap();
        store
            .kv_set(&KvScope::session("todo", &session.id), "k", b"v")
            .await
            .unwrap();
        doomed_sessions.push(session);
    }
    let kept_session = session_of(&store, &kept.id).await;
    store
        .append_message(text(&kept_session.id, "stays"))
        .await
        .unwrap();

    store
        .kv_set(&KvScope::agent("memory", &doomed.id), "k", b"v")
        .await
        .unwrap();
    store
        .kv_set(&KvScope::agent("memory", &kept.id), "k", b"v")
        .await
        .unwrap();
    store.delete_agent(&doomed.id).await.unwrap();
    assert_eq!(
        store
            .kv_get(&KvScope::agent("memory", &doomed.id), "k")
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .kv_get(&KvScope::agent("memory", &kept.id), "k")
            .await
            .unwrap()
            .is_some()
    );
    for session in &doomed_sessions {
        assert_eq!(
            store
                .kv_get(&KvScope::session("todo", &session.id), "k")
                .await
                .unwrap(),
            None
        );
    }

    assert_not_found(
        store.get_agent(&doomed.id).await,
        "agent",
        doomed.id.as_str(),
    );
    assert_not_found(
        store.delete_agent(&doomed.id).await,
        "agent",
        doomed.id.as_str(),
    );
    for session in &doomed_sessions {
        assert_not_found(
            store.get_session(&session.id).await,
            "session",
            session.id.as_str(),
        );
    }
    let sessions = store
        .list_sessions(None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(sessions.items, vec![kept_session.clone()]);
    for session in &doomed_sessions {
        for table in ["events", "messages", "runs"] {
            assert_eq!(
                db.count_rows(table, "session_id", session.id.as_str())
                    .await,
                0,
                "{table} of a deleted session"
            );
        }
    }
    let messages = store
        .list_messages(&kept_session.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(messages.total, 1);
}

async fn messages_are_listed_in_append_order(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("talker")).await.unwrap();
    let session = session_of(&store, &agent.id).await;
    let inputs = [
        (
            MessageRole::User,
            "What time is it?",
            serde_json::Value::Null,
        ),
        (
            MessageRole::Assistant,
            "",
            json!({"tool_calls": [{"id": "call_1", "name": "current_time", "arguments": {"tz": "UTC"}}]}),
        ),
        (
            MessageRole::Tool,
            "2024-01-01T00:00:00Z",
            json!({"tool_call_id": "call_1"}),
        ),
        (MessageRole::Assistant, "It is midnight. 🕛", json!({})),
        (MessageRole::User, "Thanks\nbye", json!([1, "two", 3.5])),
    ];
    let mut appended = Vec::new();
    for (role, content, metadata) in inputs {
        let message = store
            .append_message(NewMessage {
                session_id: session.id.clone(),
                role,
                content: content.to_owned(),
                metadata: metadata.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            (message.role, message.content.as_str(), &message.metadata),
            (role, content, &metadata)
        );
        assert_eq!(message.session_id, session.id);
        assert_micros(message.created_at);
        appended.push(message);
    }
    let listed = store
        .list_messages(&session.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items, appended, "append order, every field equal");
    assert_eq!((listed.total, listed.next_cursor), (5, None));
}

async fn pagination_has_no_gaps_or_duplicates(db: &TestDb) {
    let store = open(db).await;
    let mut agent_ids = Vec::new();
    for i in 0..7 {
        agent_ids.push(
            store
                .create_agent(new_agent(&format!("agent {i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let pages = read_all(3, |req| {
        let store = store.clone();
        async move { store.list_agents(&req).await }
    })
    .await;
    let sizes: Vec<_> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert!(pages.iter().all(|p| p.total == 7));
    assert_eq!(pages[2].next_cursor, None);
    assert_eq!(
        pages[0].next_cursor.as_deref(),
        Some(pages[0].items[2].id.as_str()),
        "the cursor is the last id returned"
    );
    let listed: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.items)
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(listed, agent_ids, "every agent once, in creation order");

    // An exact multiple of the page size ends without an empty page.
    let pages = read_all(7, |req| {
        let store = store.clone();
        async move { store.list_agents(&req).await }
    })
    .await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].next_cursor, None);

    // Filtered lists count and page under the filter only.
    let target = agent_ids[3].clone();
    let noise = agent_ids[4].clone();
    let mut session_ids = Vec::new();
    for i in 0..7 {
        let owner = if i % 2 == 0 { &noise } else { &target };
        session_of(&store, owner).await;
        session_ids.push(session_of(&store, &target).await.id);
    }
    let pages = read_all(3, |req| {
        let store = store.clone();
        let target = target.clone();
        async move { store.list_sessions(Some(&target), &req).await }
    })
    .await;
    let listed: Vec<_> = pages.iter().flat_map(|p| &p.items).collect();
    assert!(listed.iter().all(|s| s.agent_id == target));
    let total_for_target = 7 + 3; // 7 in `session_ids`, plus the odd-numbered noise rounds
    assert!(pages.iter().all(|p| p.total == total_for_target));
    assert_eq!(listed.len() as u64, total_for_target);
    let unique: HashSet<_> = listed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(unique.len(), listed.len(), "no duplicates");
    assert!(session_ids.iter().all(|id| unique.contains(id)), "no gaps");

    // Messages of one session, read by 3.
    let session = session_ids[0].clone();
    let mut message_ids = Vec::new();
    for i in 0..7 {
        message_ids.push(
            store
                .append_message(text(&session, &format!("m{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let pages = read_all(3, |req| {
        let store = store.clone();
        let session = session.clone();
        async move { store.list_messages(&session, &req).await }
    })
    .await;
    let sizes: Vec<_> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let listed: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.items)
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(listed, message_ids);

    // API keys, read by 3.
    for i in 0..7 {
        store
            .create_api_key(new_key(&format!("key{i}")))
            .await
            .unwrap();
    }
    let pages = read_all(3, |req| {
        let store = store.clone();
        async move { store.list_api_keys(&req).await }
    })
    .await;
    let sizes: Vec<_> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert!(pages.iter().all(|p| p.total == 7));
}

// ---- API keys ----

async fn api_keys_authenticate_until_revoked(db: &TestDb) {
    let store = open(db).await;
    let new = new_key("ci");
    let key = store.create_api_key(new.clone()).await.unwrap();
    assert_eq!((key.name.as_str(), key.prefix.as_str()), ("ci", "evr_ci"));
    assert_eq!((key.last_used_at, key.revoked_at), (None, None));
    assert_micros(key.created_at);

    let authed = store
        .authenticate_api_key(&new.hash)
        .await
        .unwrap()
        .expect("the key authenticates");
    assert_eq!(authed.id, key.id);
    assert_eq!(authed.role, Role::Operator, "the role is kept");
    let used = authed.last_used_at.expect("last_used_at is recorded");
    assert!(used >= key.created_at);
    assert_micros(used);
    // Used again at once: the recorded use stays (it is rewritten at most once a minute).
    let again = store
        .authenticate_api_key(&new.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.last_used_at, Some(used));
    assert_eq!(
        store.authenticate_api_key(&"0".repeat(64)).await.unwrap(),
        None
    );

    let listed = store.list_api_keys(&PageRequest::default()).await.unwrap();
    assert_eq!(
        listed.items,
        vec![authed.clone()],
        "the list shows last use"
    );

    let revoked = store.revoke_api_key(&key.id).await.unwrap();
    let revoked_at = revoked.revoked_at.expect("revoked_at is set");
    assert_micros(revoked_at);
    assert_eq!(revoked.last_used_at, Some(used));
    assert_eq!(store.authenticate_api_key(&new.hash).await.unwrap(), None);

    let again = store.revoke_api_key(&key.id).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(revoked_at),
        "revoking twice keeps the first time"
    );
    let listed = store.list_api_keys(&PageRequest::default()).await.unwrap();
    assert_eq!(listed.items, vec![again], "revoked keys are still listed");
}

async fn duplicate_api_key_names_and_hashes_conflict(db: &TestDb) {
    let store = open(db).await;
    let first = new_key("deploy");
    store.create_api_key(first.clone()).await.unwrap();
    assert_conflict(
        store
            .create_api_key(NewApiKey {
                hash: "f".repeat(64),
                ..first.clone()
            })
            .await,
        "an API key named `deploy` already exists",
    );
    let same_hash = store
        .create_api_key(NewApiKey {
            name: "other".to_owned(),
            ..first.clone()
        })
        .await;
    assert!(
        matches!(same_hash, Err(StoreError::Conflict(_))),
        "{same_hash:?}"
    );
    assert_eq!(
        store
            .list_api_keys(&PageRequest::default())
            .await
            .unwrap()
            .total,
        1
    );
}

async fn the_first_api_key_is_created_only_once(db: &TestDb) {
    let store = open(db).await;
    let first = store
        .create_first_api_key(new_key("admin"))
        .await
        .unwrap()
        .expect("no key exists yet");
    assert_eq!(first.name, "admin");
    assert_eq!(
        store.create_first_api_key(new_key("second")).await.unwrap(),
        None
    );
    // A revoked key still counts: bootstrapping happens on an empty database only.
    store.revoke_api_key(&first.id).await.unwrap();
    assert_eq!(
        store.create_first_api_key(new_key("third")).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .list_api_keys(&PageRequest::default())
            .await
            .unwrap()
            .total,
        1
    );
}

async fn racing_first_api_keys_create_exactly_one(db: &TestDb) {
    let store = open(db).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_first_api_key(new_key(&format!("boot{i}")))
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        if let Some(key) = task.await.unwrap().unwrap() {
            created.push(key);
        }
    }
    assert_eq!(created.len(), 1, "exactly one racer creates the first key");
    let listed = store.list_api_keys(&PageRequest::default()).await.unwrap();
    assert_eq!(listed.items, created);
}

// ---- plugin key-value state ----

async fn kv_usage_counts_keys_and_bytes_per_owner(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("quota")).await.unwrap();
    let mine = KvScope::global("notes");
    let theirs = KvScope::agent("notes", &agent.id);
    let usage = |keys, bytes| KvUsage { keys, bytes };
    assert_eq!(store.kv_usage(&mine, &[]).await.unwrap(), usage(0, 0));
    // Bytes are UTF-8 bytes of the key plus the value's bytes.
    store.kv_set(&mine, "é", b"1234").await.unwrap();
    store.kv_set(&mine, "b", b"").await.unwrap();
    store.kv_set(&mine, "it's", &[0u8; 10]).await.unwrap();
    store.kv_set(&theirs, "x", b"yy").await.unwrap();
    store
        .kv_set(&KvScope::global("other"), "z", b"zz")
        .await
        .unwrap();
    assert_eq!(
        store.kv_usage(&mine, &[]).await.unwrap(),
        usage(3, 6 + 1 + 14)
    );
    assert_eq!(
        store
            .kv_usage(&mine, &["é", "absent", "it's"])
            .await
            .unwrap(),
        usage(1, 1),
        "excluded keys are not counted"
    );
    assert_eq!(
        store.kv_usage_by_owner("notes").await.unwrap(),
        vec![
            ("global".to_owned(), usage(3, 21)),
            (KvScope::agent_owner(&agent.id), usage(1, 3)),
        ],
        "largest owner first"
    );
    assert_eq!(store.kv_usage_by_owner("absent").await.unwrap(), Vec::new());
}

async fn kv_values_are_set_read_overwritten_and_deleted(db: &TestDb) {
    let store = open(db).await;
    let scope = KvScope::global("counter");
    assert_eq!(store.kv_get(&scope, "n").await.unwrap(), None);
    store.kv_set(&scope, "n", b"1").await.unwrap();
    assert_eq!(
        store.kv_get(&scope, "n").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    store.kv_set(&scope, "n", b"two").await.unwrap();
    assert_eq!(
        store.kv_get(&scope, "n").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );

    let every_byte: Vec<u8> = (0..=255).collect();
    store.kv_set(&scope, "bytes", &every_byte).await.unwrap();
    assert_eq!(
        store.kv_get(&scope, "bytes").await.unwrap(),
        Some(every_byte)
    );
    store.kv_set(&scope, "empty", b"").await.unwrap();
    assert_eq!(
        store.kv_get(&scope, "empty").await.unwrap(),
        Some(Vec::new())
    );

    assert!(store.kv_delete(&scope, "n").await.unwrap());
    assert!(!store.kv_delete(&scope, "n").await.unwrap(), "already gone");
    assert_eq!(store.kv_get(&scope, "n").await.unwrap(), None);
    assert_eq!(
        store.kv_list(&scope, "", 100).await.unwrap(),
        ["bytes", "empty"]
    );
}

async fn kv_list_takes_the_prefix_literally(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("notes")).await.unwrap();
    let scope = KvScope::agent("notes", &agent.id);
    let keys = [
        "a%b", "a_b", "aXb", "a%", "ab", "b", "A%b", "a%bc", "a\\b", "é/1", "é/2", "e/1",
    ];
    for key in keys {
        store.kv_set(&scope, key, key.as_bytes()).await.unwrap();
    }
    let list = |prefix: &'static str, limit: u32| {
        let store = store.clone();
        let scope = scope.clone();
        async move { store.kv_list(&scope, prefix, limit).await.unwrap() }
    };
    assert_eq!(list("a%", 100).await, ["a%", "a%b", "a%bc"]);
    assert_eq!(list("a_", 100).await, ["a_b"]);
    assert_eq!(list("a\\", 100).await, ["a\\b"]);
    assert_eq!(list("é/", 100).await, ["é/1", "é/2"]);
    assert_eq!(list("A", 100).await, ["A%b"], "prefixes are case-sensitive");
    assert_eq!(list("zzz", 100).await, Vec::<String>::new());
    let mut sorted: Vec<_> = keys.to_vec();
    sorted.sort_unstable(); // byte order
    assert_eq!(list("", 100).await, sorted);
    assert_eq!(list("", 2).await, sorted[..2]);
    assert_eq!(list("a%", 2).await, ["a%", "a%b"]);
    assert_eq!(list("a", 0).await, Vec::<String>::new());
}

async fn kv_scopes_are_isolated(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("kv")).await.unwrap().id;
    let session = session_of(&store, &agent).await.id;
    let scopes = [
        KvScope::session("memory", &session),
        KvScope::agent("memory", &agent),
        KvScope::global("memory"),
        KvScope::session("other_plugin", &session),
    ];
    for (i, scope) in scopes.iter().enumerate() {
        store
            .kv_set(scope, "shared/key", format!("value {i}").as_bytes())
            .await
            .unwrap();
        store
            .kv_set(scope, &format!("only/{i}"), b"x")
            .await
            .unwrap();
    }
    for (i, scope) in scopes.iter().enumerate() {
        assert_eq!(
            store.kv_get(scope, "shared/key").await.unwrap(),
            Some(format!("value {i}").into_bytes()),
            "{scope}"
        );
        assert_eq!(
            store.kv_list(scope, "", 100).await.unwrap(),
            [format!("only/{i}"), "shared/key".to_owned()],
            "{scope}"
        );
    }
    assert!(store.kv_delete(&scopes[0], "shared/key").await.unwrap());
    for scope in &scopes[1..] {
        assert!(
            store.kv_get(scope, "shared/key").await.unwrap().is_some(),
            "{scope}"
        );
    }
}

/// State is written only while its owner exists: a write for an agent or session that is gone
/// (never created, or deleted, possibly while a tool was still running) is NotFound and leaves
/// nothing behind.
async fn kv_state_of_a_missing_owner_is_not_written(db: &TestDb) {
    let store = open(db).await;
    let (ghost_agent, ghost_session) = (AgentId::new(), SessionId::new());
    assert_not_found(
        store
            .kv_set(&KvScope::agent("memory", &ghost_agent), "k", b"v")
            .await,
        "agent",
        ghost_agent.as_ref(),
    );
    assert_not_found(
        store
            .kv_set(&KvScope::session("todo", &ghost_session), "k", b"v")
            .await,
        "session",
        ghost_session.as_ref(),
    );

    let agent = store.create_agent(new_agent("owner")).await.unwrap();
    let session = session_of(&store, &agent.id).await;
    let (of_agent, of_session) = (
        KvScope::agent("memory", &agent.id),
        KvScope::session("todo", &session.id),
    );
    store.kv_set(&of_session, "k", b"v").await.unwrap();
    store.delete_session(&session.id).await.unwrap();
    assert_not_found(
        store.kv_set(&of_session, "k", b"late").await,
        "session",
        session.id.as_ref(),
    );
    store.kv_set(&of_agent, "k", b"v").await.unwrap();
    store.delete_agent(&agent.id).await.unwrap();
    assert_not_found(
        store.kv_set(&of_agent, "k", b"late").await,
        "agent",
        agent.id.as_ref(),
    );
    for scope in [&of_agent, &of_session] {
        assert_eq!(
            db.count_rows("plugin_kv", "owner", &scope.owner).await,
            0,
            "state of the deleted {scope} is left"
        );
    }
    // Global state has no owner row.
    store
        .kv_set(&KvScope::global("memory"), "k", b"v")
        .await
        .unwrap();
}

/// Tools still writing a session's state while the session is deleted: every write lands
/// before the delete (and goes with it) or fails after it; nothing is left behind.
async fn kv_writes_racing_a_delete_leave_nothing(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("racer")).await.unwrap();
    for round in 0..4 {
        let session = session_of(&store, &agent.id).await;
        let scope = KvScope::session("todo", &session.id);
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (store, scope) = (store.clone(), scope.clone());
                tokio::spawn(async move {
                    // Until the delete shows; the pause lets it in on SQLite, whose busy
                    // handler favours a writer that retries at once.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                    for n in 0.. {
                        match store.kv_set(&scope, &format!("w{w}/{n}"), b"x").await {
                            Ok(()) => {}
                            Err(StoreError::NotFound { .. }) => return,
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                        assert!(
                            std::time::Instant::now() < deadline,
                            "writer {w} never saw the session deleted"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(5 * (round + 1))).await;
        store.delete_session(&session.id).await.unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(
            db.count_rows("plugin_kv", "owner", &scope.owner).await,
            0,
            "round {round}: state written around the delete is left"
        );
    }
}

async fn kv_rejects_unusable_keys(db: &TestDb) {
    let store = open(db).await;
    let scope = KvScope::global("p");
    assert_invalid(store.kv_set(&scope, "", b"v").await);
    assert_invalid(store.kv_set(&scope, "a\0b", b"v").await);
    assert_invalid(
        store
            .kv_set(&scope, &"k".repeat(KV_KEY_MAX + 1), b"v")
            .await,
    );
    assert_invalid(store.kv_get(&scope, "").await);
    assert_invalid(store.kv_delete(&scope, "").await);
    let longest = "k".repeat(KV_KEY_MAX);
    store.kv_set(&scope, &longest, b"v").await.unwrap();
    assert_eq!(store.kv_list(&scope, "", 10).await.unwrap(), [longest]);
}

async fn text_with_nul_is_invalid(db: &TestDb) {
    let store = open(db).await;
    assert_invalid(store.create_agent(new_agent("nul\0name")).await);
    let agent = store.create_agent(new_agent("fine")).await.unwrap();
    assert_invalid(
        store
            .update_agent(
                &agent.id,
                AgentPatch {
                    system_prompt: Some("a\0b".to_owned()),
                    ..AgentPatch::default()
                },
            )
            .await,
    );
    let session = session_of(&store, &agent.id).await;
    assert_invalid(store.append_message(text(&session.id, "bad\0")).await);
    assert_eq!(
        store
            .list_agents(&PageRequest::default())
            .await
            .unwrap()
            .total,
        1
    );
}

// ---- concurrency and durability ----

async fn concurrent_writers_all_land(db: &TestDb) {
    const WRITERS: usize = 32;
    const MESSAGES_EACH: usize = 20;
    let store = open(db).await;
    let host = store.create_agent(new_agent("host")).await.unwrap();
    let session = session_of(&store, &host.id).await;

    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let session = session.id.clone();
            tokio::spawn(async move {
                store
                    .create_agent(new_agent(&format!("writer {w}")))
                    .await
                    .unwrap();
                for m in 0..MESSAGES_EACH {
                    store
                        .append_message(text(&session, &format!("{w}/{m}")))
                        .await
                        .unwrap();
                }
                store
                    .kv_set(&KvScope::global("writers"), &format!("w{w:02}"), b"done")
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer failed");
    }

    let agents = store.list_agents(&PageRequest::first(200)).await.unwrap();
    assert_eq!(agents.total, WRITERS as u64 + 1);
    let pages = read_all(200, |req| {
        let store = store.clone();
        let session = session.id.clone();
        async move { store.list_messages(&session, &req).await }
    })
    .await;
    assert!(
        pages
            .iter()
            .all(|p| p.total == (WRITERS * MESSAGES_EACH) as u64)
    );
    let mut per_writer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for message in pages.iter().flat_map(|p| &p.items) {
        let (w, m) = message.content.split_once('/').unwrap();
        per_writer
            .entry(w.parse().unwrap())
            .or_default()
            .push(m.parse().unwrap());
    }
    assert_eq!(per_writer.len(), WRITERS);
    for (writer, messages) in per_writer {
        assert_eq!(
            messages,
            (0..MESSAGES_EACH).collect::<Vec<_>>(),
            "writer {writer}'s messages are all there, in its order"
        );
    }
    let done = store
        .kv_list(&KvScope::global("writers"), "w", 1000)
        .await
        .unwrap();
    assert_eq!(done.len(), WRITERS);
}

async fn concurrent_migrations_do_not_race(db: &TestDb) {
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url().to_owned();
            tokio::spawn(async move {
                connect(&StoreConfig {
                    url,
                    max_connections: 2,
                })
                .await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for opener in openers {
        stores.push(
            opener
                .await
                .unwrap()
                .expect("every concurrent open succeeds"),
        );
    }
    let agent = stores[0].create_agent(new_agent("migrated")).await.unwrap();
    for store in &stores {
        assert_eq!(store.get_agent(&agent.id).await.unwrap(), agent);
    }
    // And once more on the migrated database: nothing left to apply.
    let again = open(db).await;
    assert_eq!(again.get_agent(&agent.id).await.unwrap(), agent);
}

async fn data_survives_reopening(db: &TestDb) {
    let store = open(db).await;
    let agent = store.create_agent(new_agent("durable")).await.unwrap();
    let session = store
        .create_session(NewSession {
            agent_id: agent.id.clone(),
            title: Some("kept".to_owned()),
            overrides: None,
        })
        .await
        .unwrap();
    let message = store
        .append_message(text(&session.id, "remember me"))
        .await
        .unwrap();
    let key_input = new_key("durable");
    let key = store.create_api_key(key_input.clone()).await.unwrap();
    let scope = KvScope::session("memory", &session.id);
    store
        .kv_set(&scope, "fact", b"the sky is blue")
        .await
        .unwrap();
    drop(store);

    let reopened = open(db).await;
    assert_eq!(reopened.get_agent(&agent.id).await.unwrap(), agent);
    assert_eq!(reopened.get_session(&session.id).await.unwrap(), session);
    let messages = reopened
        .list_messages(&session.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(messages.items, vec![message]);
    let authed = reopened
        .authenticate_api_key(&key_input.hash)
        .await
        .unwrap()
        .expect("the key still authenticates");
    assert_eq!(authed.id, key.id);
    assert_eq!(
        reopened.kv_get(&scope, "fact").await.unwrap().as_deref(),
        Some(&b"the sky is blue"[..])
    );
    reopened.ping().await.unwrap();
}
