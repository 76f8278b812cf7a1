//! The durable-execution part of the store conformance suite: runs, leases, steps and the
//! event log. Each case runs against SQLite and PostgreSQL on a fresh database
//! (`sqlite::<case>` and `postgres::<case>`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use everruns_core::{
    ApiKeyId, ApprovalStatus, Decision, EventType, KvScope, KvWrite, Lease, MessageId, MessageRole,
    ModelSettings, NewAgent, NewApproval, NewEvent, NewSession, NewStep, PageRequest, Run, RunId,
    RunStatus, SessionId, SessionStatus, StepKind, StepMessage, StepStatus, Usage,
};
use everruns_store::{Claim, Store, StoreConfig, StoreError, connect};
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
    starting_a_run_writes_message_run_and_events_at_once,
    idempotency_keys_return_the_same_run_and_write_nothing,
    racing_starts_with_one_key_create_one_run,
    unknown_sessions_and_runs_are_not_found,
    runs_of_a_session_queue_behind_each_other,
    claims_take_the_oldest_run_and_one_per_session,
    concurrent_claimers_never_share_a_run,
    expired_leases_are_taken_over_with_a_new_token,
    stale_leases_write_nothing,
    steps_are_recorded_with_their_message_usage_and_events,
    a_step_is_recorded_only_once,
    steps_recorded_at_once_each_get_their_own_outcome,
    a_run_started_with_a_claim_runs_under_that_lease_at_once,
    event_sequences_have_no_gaps_under_concurrent_writers,
    finishing_runs_releases_the_lease_and_the_session,
    a_final_step_ends_its_run_in_the_same_commit,
    cancel_depends_on_where_the_run_is,
    events_are_listed_in_pages_after_a_sequence_number,
    runs_are_listed_and_deleted_with_their_session,
    session_history_reads_every_run_and_message_in_order,
    plugin_state_is_committed_with_its_step_exactly_once,
    plugin_state_of_steps_recorded_at_once_is_applied_in_order,
    a_run_keeps_the_configuration_it_was_started_with,
    queue_stats_count_waiting_and_active_runs,
    parked_runs_wait_without_a_lease_until_every_approval_is_decided,
    approvals_expire_once_and_are_cancelled_with_their_run,
);

// ---- helpers ----

const LEASE: Duration = Duration::from_secs(60);

async fn open(db: &TestDb) -> Arc<dyn Store> {
    connect(&StoreConfig {
        url: db.url().to_owned(),
        max_connections: 8,
    })
    .await
    .unwrap_or_else(|err| panic!("opening the {} store: {err}", db.backend()))
}

/// A fresh agent (named `name`) with one session.
async fn session(store: &Arc<dyn Store>, name: &str) -> SessionId {
    let agent = store
        .create_agent(NewAgent {
            name: name.to_owned(),
            system_prompt: String::new(),
            model: ModelSettings::default(),
            capabilities: Vec::new(),
            tool_approval: None,
        })
        .await
        .unwrap();
    store
        .create_session(NewSession {
            agent_id: agent.id,
            title: None,
            overrides: None,
        })
        .await
        .unwrap()
        .id
}

async fn start(store: &Arc<dyn Store>, session: &SessionId, content: &str) -> Run {
    store
        .start_run(session, content.to_owned(), None, None)
        .await
        .unwrap()
        .run
}

async fn claim(store: &Arc<dyn Store>, owner: &str) -> (Run, Lease) {
    store
        .claim_run(owner, LEASE)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{owner} finds a claimable run"))
}

fn llm_step(step_no: u32) -> NewStep {
    NewStep {
        step_no,
        kind: StepKind::Llm,
        input: json!({ "messages": step_no }),
        output: json!({ "text": format!("answer {step_no}") }),
        status: StepStatus::Completed,
        attempt: 1,
        capability_id: None,
        digest: None,
        started_at: chrono::Utc::now(),
        message: None,
        kv_writes: Vec::new(),
    }
}

fn delta(text: &str) -> NewEvent {
    NewEvent::new(EventType::MessageDelta, json!({ "text": text }))
}

fn assert_lease_lost<T: std::fmt::Debug>(result: everruns_store::Result<T>, run: &RunId) {
    match result {
        Err(StoreError::LeaseLost { run_id }) => assert_eq!(&run_id, run),
        other => panic!("expected the lease on {run} to be lost, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: everruns_store::Result<T>, entity: &str) {
    match result {
        Err(StoreError::NotFound { entity: e, .. }) => assert_eq!(e, entity),
        other => panic!("expected {entity} not found, got {other:?}"),
    }
}

/// Every event of the session, checking that sequence numbers are 1, 2, 3, ... and end at
/// the session's counter.
async fn all_events(store: &Arc<dyn Store>, session: &SessionId) -> Vec<everruns_core::Event> {
    let events = store.list_events(session, 0, 1000).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(
        seqs, expected,
        "sequence numbers have no gaps or duplicates"
    );
    assert_eq!(
        store.last_event_seq(session).await.unwrap(),
        events.len() as i64
    );
    assert!(events.iter().all(|e| &e.session_id == session));
    events
}

// ---- starting runs ----

async fn starting_a_run_writes_message_run_and_events_at_once(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "starter").await;
    assert_eq!(store.last_event_seq(&session).await.unwrap(), 0);

    let started = store
        .start_run(&session, "hello".to_owned(), Some("key-1".to_owned()), None)
        .await
        .unwrap();
    assert!(started.created);
    assert_eq!(started.queued_behind, None);
    let run = &started.run;
    assert_eq!(run.session_id, session);
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.trigger_message_id, started.message.id);
    assert_eq!(run.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!((run.lease_owner.as_deref(), run.lease_token), (None, 0));
    assert_eq!((run.steps_completed, run.recovery_attempts), (0, 0));
    assert_eq!(run.usage, Usage::default());
    assert_eq!((run.started_at, run.finished_at), (None, None));
    assert_eq!(started.message.role, MessageRole::User);
    assert_eq!(started.message.content, "hello");

    assert_eq!(&store.get_run(&run.id).await.unwrap(), run);
    let messages = store
        .list_messages(&session, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(messages.items, vec![started.message.clone()]);
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Running
    );

    let events = all_events(&store, &session).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [EventType::MessageCreated, EventType::RunQueued]);
    assert!(events.iter().all(|e| e.run_id.as_ref() == Some(&run.id)));
    assert_eq!(events[0].payload["message_id"], started.message.id.as_str());
    assert_eq!(events[0].payload["role"], "user");
    assert_eq!(events[0].payload["content"], "hello");
    assert_eq!(events[1].payload["run_id"], run.id.as_str());
    assert_eq!(events[1].payload["queued_behind"], serde_json::Value::Null);
    assert_eq!(store.list_steps(&run.id).await.unwrap(), vec![]);
}

async fn idempotency_keys_return_the_same_run_and_write_nothing(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "retrier").await;
    let other = session_2(&store).await;
    let first = store
        .start_run(&session, "once".to_owned(), Some("k".to_owned()), None)
        .await
        .unwrap();

    let again = store
        .start_run(
            &session,
            "once, retried".to_owned(),
            Some("k".to_owned()),
            None,
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.run, first.run);
    assert_eq!(
        again.message, first.message,
        "the original message comes back"
    );
    assert_eq!(store.last_event_seq(&session).await.unwrap(), 2);
    assert_eq!(
        store
            .list_messages(&session, &PageRequest::default())
            .await
            .unwrap()
            .total,
        1
    );

    // Other keys, no key (any number of times) and the same key elsewhere are new runs.
    let other_key = store
        .start_run(&session, "b".to_owned(), Some("k2".to_owned()), None)
        .await
        .unwrap();
    let no_key_1 = store
        .start_run(&session, "c".to_owned(), None, None)
        .await
        .unwrap();
    let no_key_2 = store
        .start_run(&session, "d".to_owned(), None, None)
        .await
        .unwrap();
    let elsewhere = store
        .start_run(&other, "e".to_owned(), Some("k".to_owned()), None)
        .await
        .unwrap();
    let ids: HashSet<_> = [&first, &other_key, &no_key_1, &no_key_2, &elsewhere]
        .iter()
        .map(|s| {
            assert!(s.created);
            s.run.id.clone()
        })
        .collect();
    assert_eq!(ids.len(), 5);
    // A repeated key of a queued run still says what it waits for.
    let repeated = store
        .start_run(&session, "b".to_owned(), Some("k2".to_owned()), None)
        .await
        .unwrap();
    assert_eq!(repeated.queued_behind, Some(first.run.id.clone()));
    assert_eq!(store.last_event_seq(&session).await.unwrap(), 8);

    let empty = store
        .start_run(&session, "x".to_owned(), Some(String::new()), None)
        .await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))), "{empty:?}");
}

async fn session_2(store: &Arc<dyn Store>) -> SessionId {
    session(store, "second agent").await
}

async fn racing_starts_with_one_key_create_one_run(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "racer").await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let session = session.clone();
            tokio::spawn(async move {
                store
                    .start_run(&session, format!("try {i}"), Some("same".to_owned()), None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    let ids: HashSet<_> = results.iter().map(|r| r.run.id.clone()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(all_events(&store, &session).await.len(), 2);
}

async fn unknown_sessions_and_runs_are_not_found(db: &TestDb) {
    let store = open(db).await;
    let ghost = SessionId::new();
    assert_not_found(
        store.start_run(&ghost, "hi".to_owned(), None, None).await,
        "session",
    );
    assert_not_found(
        store
            .start_run(&ghost, "hi".to_owned(), Some("k".to_owned()), None)
            .await,
        "session",
    );
    assert_not_found(store.list_events(&ghost, 0, 10).await, "session");
    assert_not_found(store.last_event_seq(&ghost).await, "session");
    assert_not_found(
        store.list_runs(&ghost, &PageRequest::default()).await,
        "session",
    );
    assert_not_found(store.active_run(&ghost).await, "session");
    let run = RunId::new();
    assert_not_found(store.get_run(&run).await, "run");
    assert_not_found(store.list_steps(&run).await, "run");
    assert_not_found(store.request_cancel(&run).await, "run");
    let lease = Lease {
        run_id: run.clone(),
        owner: "w".to_owned(),
        token: 1,
    };
    assert_lease_lost(store.append_events(&lease, vec![delta("x")]).await, &run);
    assert!(store.claim_run("w", LEASE).await.unwrap().is_none());
}

// ---- claiming ----

async fn runs_of_a_session_queue_behind_each_other(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "queue").await;
    let first = store
        .start_run(&session, "one".to_owned(), None, None)
        .await
        .unwrap();
    let second = store
        .start_run(&session, "two".to_owned(), None, None)
        .await
        .unwrap();
    let third = store
        .start_run(&session, "three".to_owned(), None, None)
        .await
        .unwrap();
    assert_eq!(first.queued_behind, None);
    assert_eq!(second.queued_behind, Some(first.run.id.clone()));
    assert_eq!(third.queued_behind, Some(first.run.id.clone()));
    let queued = all_events(&store, &session).await;
    assert_eq!(queued[3].payload["queued_behind"], first.run.id.as_str());
    assert_eq!(
        store.active_run(&session).await.unwrap(),
        Some(first.run.clone())
    );

    for expected in [&first, &second, &third] {
        let (run, lease) = claim(&store, "worker").await;
        assert_eq!(run.id, expected.run.id, "runs execute in the order sent");
        assert!(
            store.claim_run("worker", LEASE).await.unwrap().is_none(),
            "one run per session at a time"
        );
        assert_eq!(
            store.get_session(&session).await.unwrap().status,
            SessionStatus::Running
        );
        store
            .finish_run(&lease, RunStatus::Completed, None, vec![])
            .await
            .unwrap();
    }
    assert_eq!(store.active_run(&session).await.unwrap(), None);
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Idle
    );
}

async fn claims_take_the_oldest_run_and_one_per_session(db: &TestDb) {
    let store = open(db).await;
    let mut firsts = Vec::new();
    for s in 0..3 {
        let session = session(&store, &format!("agent {s}")).await;
        firsts.push(start(&store, &session, "first").await);
        start(&store, &session, "second").await;
    }
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let (run, lease) = claim(&store, "w1").await;
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.lease_owner.as_deref(), Some("w1"));
        assert_eq!(run.lease_token, 1);
        assert_eq!(lease.token, 1);
        assert_eq!(lease.run_id, run.id);
        assert!(run.started_at.is_some());
        assert!(run.lease_expires_at.is_some_and(|at| at > run.created_at));
        assert_eq!(run.recovery_attempts, 0);
        assert_eq!(store.get_run(&run.id).await.unwrap(), run);
        claimed.push(run.id);
    }
    let expected: Vec<_> = firsts.iter().map(|r| r.id.clone()).collect();
    assert_eq!(claimed, expected, "oldest first, one per session");
    assert!(store.claim_run("w2", LEASE).await.unwrap().is_none());
}

async fn concurrent_claimers_never_share_a_run(db: &TestDb) {
    const RUNS: usize = 10;
    const CLAIMERS: usize = 16;
    let store = open(db).await;
    let mut started = HashSet::new();
    for s in 0..RUNS {
        let session = session(&store, &format!("agent {s}")).await;
        started.insert(start(&store, &session, "go").await.id);
    }
    let tasks: Vec<_> = (0..CLAIMERS)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some((run, lease)) =
                    store.claim_run(&format!("w{c}"), LEASE).await.unwrap()
                {
                    assert_eq!(run.lease_owner.as_deref(), Some(lease.owner.as_str()));
                    mine.push(run.id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    assert_eq!(claimed.len(), RUNS, "every run claimed exactly once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), started);
}

async fn expired_leases_are_taken_over_with_a_new_token(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "crashy").await;
    let run = start(&store, &session, "survive").await;
    let (claimed, old) = store
        .claim_run("dead worker", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, run.id);
    // The lease is the thing under test: wait it out.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (taken, new) = claim(&store, "rescuer").await;
    assert_eq!(taken.id, run.id);
    assert_eq!(taken.status, RunStatus::Running);
    assert_eq!(new.token, old.token + 1);
    assert_eq!(taken.lease_owner.as_deref(), Some("rescuer"));
    assert_eq!(taken.recovery_attempts, 1);
    assert_eq!(taken.started_at, claimed.started_at, "started once");
    assert!(store.claim_run("other", LEASE).await.unwrap().is_none());

    // Each claim wrote its `run.started` event with the claim, saying who took the run and
    // whether that was a takeover.
    let events = store.list_events(&session, 0, 100).await.unwrap();
    let started: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::RunStarted)
        .map(|e| (e.run_id.clone(), e.payload.clone()))
        .collect();
    assert_eq!(
        started,
        vec![
            (
                Some(run.id.clone()),
                json!({"run_id": run.id.as_str(), "worker": "dead worker", "takeover": false})
            ),
            (
                Some(run.id.clone()),
                json!({"run_id": run.id.as_str(), "worker": "rescuer", "takeover": true})
            ),
        ]
    );
    assert_eq!(events.last().unwrap().event_type, EventType::RunStarted);

    // The rescuer's lease holds; renewing keeps it live.
    store.renew_lease(&new, LEASE).await.unwrap();
    assert_lease_lost(store.renew_lease(&old, LEASE).await, &run.id);

    // A second expiry without progress counts again; progress resets the count.
    store
        .renew_lease(&new, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (again, third) = claim(&store, "third").await;
    assert_eq!(again.recovery_attempts, 2);
    assert_eq!(third.token, new.token + 1);
    store
        .record_step(&third, llm_step(0), vec![], Usage::default())
        .await
        .unwrap();
    let progressed = store.get_run(&run.id).await.unwrap();
    assert_eq!(progressed.recovery_attempts, 0);
    assert_eq!(progressed.steps_completed, 1);
}

async fn stale_leases_write_nothing(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "fenced").await;
    let run = start(&store, &session, "fence me").await;
    let (_, old) = store
        .claim_run("paused worker", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    store
        .record_step(&old, llm_step(0), vec![delta("before")], Usage::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, new) = claim(&store, "rescuer").await;
    let before_run = store.get_run(&run.id).await.unwrap();
    let before_steps = store.list_steps(&run.id).await.unwrap();
    let before_events = all_events(&store, &session).await;
    let before_messages = store
        .list_messages(&session, &PageRequest::default())
        .await
        .unwrap();

    let mut step = llm_step(1);
    step.message = Some(StepMessage {
        id: MessageId::new(),
        role: MessageRole::Assistant,
        content: "stale".to_owned(),
        metadata: json!(null),
    });
    assert_lease_lost(
        store
            .record_step(
                &old,
                step,
                vec![delta("stale")],
                Usage {
                    input_tokens: 5,
                    output_tokens: 5,
                },
            )
            .await,
        &run.id,
    );
    assert_lease_lost(
        store.append_events(&old, vec![delta("stale")]).await,
        &run.id,
    );
    assert_lease_lost(
        store
            .finish_run(&old, RunStatus::Failed, Some("stale".to_owned()), vec![])
            .await,
        &run.id,
    );
    assert_lease_lost(store.renew_lease(&old, LEASE).await, &run.id);
    let forged = Lease {
        owner: "someone else".to_owned(),
        ..new.clone()
    };
    assert_lease_lost(
        store.append_events(&forged, vec![delta("x")]).await,
        &run.id,
    );

    assert_eq!(store.get_run(&run.id).await.unwrap(), before_run);
    assert_eq!(store.list_steps(&run.id).await.unwrap(), before_steps);
    assert_eq!(all_events(&store, &session).await, before_events);
    assert_eq!(
        store
            .list_messages(&session, &PageRequest::default())
            .await
            .unwrap(),
        before_messages
    );

    // The current holder writes fine, and once it has finished nobody can write.
    store
        .append_events(&new, vec![delta("fresh")])
        .await
        .unwrap();
    store
        .finish_run(&new, RunStatus::Completed, None, vec![])
        .await
        .unwrap();
    assert_lease_lost(
        store.append_events(&new, vec![delta("late")]).await,
        &run.id,
    );
    assert_lease_lost(
        store
            .record_step(&new, llm_step(1), vec![], Usage::default())
            .await,
        &run.id,
    );
}

// ---- steps ----

async fn steps_are_recorded_with_their_message_usage_and_events(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "journal").await;
    let run = start(&store, &session, "what time is it?").await;
    let (_, lease) = claim(&store, "w").await;

    let llm = llm_step(0);
    let recorded = store
        .record_step(
            &lease,
            llm.clone(),
            vec![NewEvent::new(
                EventType::StepCompleted,
                json!({ "step_no": 0 }),
            )],
            Usage {
                input_tokens: 10,
                output_tokens: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(recorded.step.run_id, run.id);
    assert_eq!(recorded.step.step_no, 0);
    assert_eq!(recorded.step.output, llm.output);
    assert_eq!(recorded.message, None);
    assert_eq!(recorded.events.len(), 1);
    // After message.created, run.queued and the claim's run.started.
    assert_eq!(recorded.events[0].seq, 4);
    assert_eq!(recorded.events[0].run_id.as_ref(), Some(&run.id));

    let answer_id = MessageId::new();
    let tool = NewStep {
        step_no: 1,
        kind: StepKind::Tool,
        input: json!({ "tool": "now" }),
        output: json!({ "content": "noon" }),
        status: StepStatus::Failed,
        attempt: 2,
        capability_id: Some("current_time".to_owned()),
        digest: Some("sha256:abc".to_owned()),
        started_at: chrono::Utc::now(),
        message: Some(StepMessage {
            id: answer_id.clone(),
            role: MessageRole::Tool,
            content: "noon".to_owned(),
            metadata: json!({ "tool_call_id": "call_1" }),
        }),
        kv_writes: Vec::new(),
    };
    let recorded_tool = store
        .record_step(
            &lease,
            tool,
            vec![
                NewEvent::new(EventType::ToolCompleted, json!({ "call": "call_1" })),
                NewEvent::new(EventType::Usage, json!({ "input_tokens": 1 })),
            ],
            Usage {
                input_tokens: 1,
                output_tokens: 2,
            },
        )
        .await
        .unwrap();
    let message = recorded_tool.message.clone().expect("the tool message");
    assert_eq!(message.id, answer_id);
    assert_eq!(message.session_id, session);
    assert_eq!(
        recorded_tool
            .events
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        [5, 6]
    );

    let steps = store.list_steps(&run.id).await.unwrap();
    assert_eq!(steps, vec![recorded.step, recorded_tool.step]);
    assert_eq!(steps[1].kind, StepKind::Tool);
    assert_eq!(steps[1].status, StepStatus::Failed);
    assert_eq!(steps[1].attempt, 2);
    assert_eq!(steps[1].capability_id.as_deref(), Some("current_time"));
    assert_eq!(steps[1].digest.as_deref(), Some("sha256:abc"));
    let messages = store
        .list_messages(&session, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(messages.items.last(), Some(&message));

    let run = store.get_run(&run.id).await.unwrap();
    assert_eq!(run.steps_completed, 2);
    assert_eq!(
        run.usage,
        Usage {
            input_tokens: 11,
            output_tokens: 5
        }
    );
    let stored = all_events(&store, &session).await;
    assert_eq!(stored[2].event_type, EventType::RunStarted);
    assert_eq!(
        &stored[3..],
        &[recorded.events, recorded_tool.events].concat()[..]
    );
}

async fn a_step_is_recorded_only_once(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "once").await;
    let run = start(&store, &session, "go").await;
    let (_, lease) = claim(&store, "w").await;
    store
        .record_step(
            &lease,
            llm_step(0),
            vec![delta("a")],
            Usage {
                input_tokens: 1,
                output_tokens: 1,
            },
        )
        .await
        .unwrap();
    let before_run = store.get_run(&run.id).await.unwrap();
    let before_events = all_events(&store, &session).await;

    let mut again = llm_step(0);
    again.output = json!({ "text": "different" });
    again.message = Some(StepMessage {
        id: MessageId::new(),
        role: MessageRole::Assistant,
        content: "twice".to_owned(),
        metadata: json!(null),
    });
    let result = store
        .record_step(
            &lease,
            again,
            vec![delta("b")],
            Usage {
                input_tokens: 1,
                output_tokens: 1,
            },
        )
        .await;
    match result {
        Err(StoreError::Conflict(msg)) => {
            assert!(msg.contains("step 0"), "{msg}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get_run(&run.id).await.unwrap(), before_run);
    assert_eq!(all_events(&store, &session).await, before_events);
    let steps = store.list_steps(&run.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].output, llm_step(0).output);
    assert_eq!(
        store
            .list_messages(&session, &PageRequest::default())
            .await
            .unwrap()
            .total,
        1,
        "only the user message"
    );
    // The lease is still good after the refused duplicate.
    store
        .record_step(&lease, llm_step(1), vec![], Usage::default())
        .await
        .unwrap();
}

/// Many steps recorded concurrently (on PostgreSQL they are written in shared batches): each
/// request gets exactly its own outcome, and the others are not disturbed by a duplicate or a
/// lost lease among them.
async fn steps_recorded_at_once_each_get_their_own_outcome(db: &TestDb) {
    const RUNS: usize = 6;
    let store = open(db).await;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let session = session(&store, &format!("batch-{i}")).await;
        start(&store, &session, "go").await;
        let (run, lease) = claim(&store, "w").await;
        runs.push((session, run, lease));
    }
    let tool = |step_no: u32, text: &str| NewStep {
        kind: StepKind::Tool,
        capability_id: Some("cap".to_owned()),
        message: Some(StepMessage {
            id: MessageId::new(),
            role: MessageRole::Tool,
            content: text.to_owned(),
            metadata: json!({ "tool_call_id": text }),
        }),
        ..llm_step(step_no)
    };
    let usage = Usage {
        input_tokens: 3,
        output_tokens: 2,
    };
    // Run 0 records step 0 twice; run 1 writes with a stale token; run 2 records three
    // steps at once (like parallel tool calls); the others one step each.
    let mut requests = Vec::new();
    for (i, (_, _, lease)) in runs.iter().enumerate() {
        let lease = lease.clone();
        match i {
            0 => {
                requests.push((i, lease.clone(), llm_step(0), vec![delta("a")]));
                requests.push((i, lease, llm_step(0), vec![delta("b"), delta("c")]));
            }
            1 => {
                let stale = Lease {
                    token: lease.token + 7,
                    ..lease
                };
                requests.push((i, stale, llm_step(0), vec![delta("stale")]));
            }
            2 => {
                for no in 0..3 {
                    let events = (0..=no).map(|k| delta(&format!("{no}.{k}"))).collect();
                    requests.push((i, lease.clone(), tool(no, &format!("call {no}")), events));
                }
            }
            _ => requests.push((i, lease, llm_step(0), vec![delta("x"), delta("y")])),
        }
    }
    let outcomes = futures::future::join_all(requests.iter().map(|(_, lease, step, events)| {
        store.record_step(lease, step.clone(), events.clone(), usage)
    }))
    .await;

    let mut recorded = vec![0u32; RUNS];
    let mut duplicates = 0;
    for ((i, lease, step, events), outcome) in requests.iter().zip(outcomes) {
        match (i, outcome) {
            (1, outcome) => assert_lease_lost(outcome, &lease.run_id),
            (0, Err(StoreError::Conflict(msg))) => {
                assert!(msg.contains("step 0"), "{msg}");
                duplicates += 1;
            }
            (_, Ok(done)) => {
                recorded[*i] += 1;
                assert_eq!(done.step.step_no, step.step_no);
                assert_eq!(done.step.run_id, lease.run_id);
                assert_eq!(done.step.output, step.output);
                assert_eq!(done.events.len(), events.len());
                let seqs: Vec<i64> = done.events.iter().map(|e| e.seq).collect();
                let first = seqs[0];
                assert_eq!(seqs, (first..first + seqs.len() as i64).collect::<Vec<_>>());
                for (written, asked) in done.events.iter().zip(events) {
                    assert_eq!(written.payload, asked.payload);
                    assert_eq!(written.run_id.as_ref(), Some(&lease.run_id));
                }
                assert_eq!(
                    done.message.as_ref().map(|m| m.content.clone()),
                    step.message.as_ref().map(|m| m.content.clone())
                );
            }
            (i, other) => panic!("request for run {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        duplicates, 1,
        "one of the two records of run 0's step 0 is refused"
    );
    assert_eq!(recorded, [1, 0, 3, 1, 1, 1]);

    for (i, (session, run, _)) in runs.iter().enumerate() {
        let stored = store.get_run(&run.id).await.unwrap();
        assert_eq!(stored.steps_completed, recorded[i], "run {i}");
        assert_eq!(stored.usage.input_tokens, 3 * u64::from(recorded[i]));
        assert_eq!(stored.usage.output_tokens, 2 * u64::from(recorded[i]));
        assert_eq!(
            store.list_steps(&run.id).await.unwrap().len(),
            recorded[i] as usize
        );
        // message.created, run.queued, run.started, then the recorded steps' events.
        let events = all_events(&store, session).await;
        let expected = 3 + match i {
            0 => 0, // checked below: 1 or 2 deltas, whichever record won
            1 => 0,
            2 => 1 + 2 + 3,
            _ => 2,
        };
        if i == 0 {
            assert!(events.len() == 4 || events.len() == 5, "{events:?}");
        } else {
            assert_eq!(events.len(), expected, "run {i}");
        }
        let messages = store
            .list_messages(session, &PageRequest::default())
            .await
            .unwrap();
        assert_eq!(messages.total, 1 + if i == 2 { 3 } else { 0 }, "run {i}");
    }
}

/// A run started with a claim is running under that lease in the same commit: `run.started`
/// follows `run.queued`, no claimer finds it, and its steps write with token 1. A second run
/// of the session queues behind it unclaimed; a claim that lapses is taken over as usual.
async fn a_run_started_with_a_claim_runs_under_that_lease_at_once(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "claimed").await;
    let claim_of = |lease: Duration| Claim {
        owner: "local".to_owned(),
        lease,
    };
    let started = store
        .start_run(&session, "go".to_owned(), None, Some(&claim_of(LEASE)))
        .await
        .unwrap();
    let run = started.run;
    assert!(started.created);
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.lease_owner.as_deref(), Some("local"));
    assert_eq!(run.lease_token, 1);
    assert!(run.lease_expires_at.is_some() && run.started_at.is_some());
    assert_eq!(store.get_run(&run.id).await.unwrap(), run);
    let events = all_events(&store, &session).await;
    let types: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            EventType::MessageCreated,
            EventType::RunQueued,
            EventType::RunStarted
        ]
    );
    assert_eq!(
        events[2].payload,
        json!({ "run_id": run.id.as_str(), "worker": "local", "takeover": false })
    );
    assert!(store.claim_run("other", LEASE).await.unwrap().is_none());
    let lease = Lease {
        run_id: run.id.clone(),
        owner: "local".to_owned(),
        token: 1,
    };
    store
        .record_step(&lease, llm_step(0), vec![], Usage::default())
        .await
        .unwrap();

    // Queued behind the first: started unclaimed whatever the caller asked.
    let second = store
        .start_run(&session, "next".to_owned(), None, Some(&claim_of(LEASE)))
        .await
        .unwrap();
    assert_eq!(second.queued_behind.as_ref(), Some(&run.id));
    assert_eq!(second.run.status, RunStatus::Queued);
    assert_eq!(second.run.lease_owner, None);
    assert_eq!(all_events(&store, &session).await.len(), 5);
    store
        .finish_run(&lease, RunStatus::Completed, None, vec![])
        .await
        .unwrap();
    let (claimed, _) = claim(&store, "other").await;
    assert_eq!(claimed.id, second.run.id);

    // A claimed start whose lease lapses is taken over like any other run.
    let lapsing = session_2(&store).await;
    let run = store
        .start_run(
            &lapsing,
            "go".to_owned(),
            None,
            Some(&claim_of(Duration::ZERO)),
        )
        .await
        .unwrap()
        .run;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (taken, taken_lease) = claim(&store, "rescuer").await;
    assert_eq!(taken.id, run.id);
    assert_eq!(taken.recovery_attempts, 1);
    assert_eq!(taken_lease.token, 2);
    assert_lease_lost(
        store
            .record_step(
                &lease_of(&run, "local", 1),
                llm_step(0),
                vec![],
                Usage::default(),
            )
            .await,
        &run.id,
    );
}

fn lease_of(run: &Run, owner: &str, token: i64) -> Lease {
    Lease {
        run_id: run.id.clone(),
        owner: owner.to_owned(),
        token,
    }
}

// ---- events ----

async fn event_sequences_have_no_gaps_under_concurrent_writers(db: &TestDb) {
    const WRITERS: usize = 8;
    const BATCHES: usize = 10;
    const STARTERS: usize = 4;
    let store = open(db).await;
    let busy = session(&store, "busy").await;
    let quiet = session(&store, "quiet").await;
    start(&store, &busy, "first").await;
    start(&store, &quiet, "first").await;
    let (_, busy_lease) = claim(&store, "w").await;
    let (_, quiet_lease) = claim(&store, "w").await;

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        for lease in [busy_lease.clone(), quiet_lease.clone()] {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..BATCHES {
                    // Batches of 1 to 3 events, tagged so each writer's order can be checked.
                    let batch = (0..=(b % 3))
                        .map(|i| {
                            NewEvent::new(
                                EventType::MessageDelta,
                                json!({ "writer": w, "batch": b, "i": i }),
                            )
                        })
                        .collect();
                    let written = store.append_events(&lease, batch).await.unwrap();
                    let seqs: Vec<i64> = written.iter().map(|e| e.seq).collect();
                    assert!(
                        seqs.windows(2).all(|p| p[1] == p[0] + 1),
                        "a batch is contiguous"
                    );
                }
            }));
        }
    }
    for s in 0..STARTERS {
        let store = store.clone();
        let busy = busy.clone();
        tasks.push(tokio::spawn(async move {
            store
                .start_run(&busy, format!("more {s}"), None, None)
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.expect("a writer failed");
    }

    let per_batch: usize = (0..BATCHES).map(|b| b % 3 + 1).sum();
    let busy_events = all_events(&store, &busy).await;
    // Each session's first run wrote 2 events when started and 1 when claimed.
    assert_eq!(busy_events.len(), 3 + WRITERS * per_batch + STARTERS * 2);
    let quiet_events = all_events(&store, &quiet).await;
    assert_eq!(
        quiet_events.len(),
        3 + WRITERS * per_batch,
        "another session's sequence is its own"
    );
    for events in [&busy_events, &quiet_events] {
        let mut per_writer: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|e| e.event_type == EventType::MessageDelta)
        {
            let p = &event.payload;
            per_writer
                .entry(p["writer"].as_u64().unwrap())
                .or_default()
                .push((p["batch"].as_u64().unwrap(), p["i"].as_u64().unwrap()));
        }
        for (writer, seen) in per_writer {
            let mut sorted = seen.clone();
            sorted.sort();
            assert_eq!(seen, sorted, "writer {writer}'s events are in its order");
        }
    }
}

async fn events_are_listed_in_pages_after_a_sequence_number(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "pager").await;
    start(&store, &session, "go").await;
    let (_, lease) = claim(&store, "w").await;
    let written = store
        .append_events(&lease, (0..23).map(|i| delta(&i.to_string())).collect())
        .await
        .unwrap();
    // After message.created, run.queued and the claim's run.started.
    assert_eq!(written.first().map(|e| e.seq), Some(4));
    assert_eq!(written.last().map(|e| e.seq), Some(26));

    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.list_events(&session, after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.iter().all(|e| e.seq > after));
        after = page.last().unwrap().seq;
        pages.push(page.len());
    }
    assert_eq!(pages, [10, 10, 6]);
    let tail = store.list_events(&session, 20, 100).await.unwrap();
    assert_eq!(tail, written[17..].to_vec(), "reads back what was written");
    assert_eq!(store.list_events(&session, 26, 10).await.unwrap(), vec![]);
    assert_eq!(store.list_events(&session, 0, 0).await.unwrap().len(), 1);
    assert_eq!(
        store.append_events(&lease, vec![]).await.unwrap(),
        vec![],
        "an empty append writes nothing"
    );
    assert_eq!(store.last_event_seq(&session).await.unwrap(), 26);
}

// ---- finishing and cancelling ----

async fn finishing_runs_releases_the_lease_and_the_session(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "finisher").await;
    let run = start(&store, &session, "go").await;
    let (_, lease) = claim(&store, "w").await;
    let invalid = store
        .finish_run(&lease, RunStatus::Running, None, vec![])
        .await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid(_))),
        "{invalid:?}"
    );

    let finished = store
        .finish_run(
            &lease,
            RunStatus::Failed,
            Some("the provider is down".to_owned()),
            vec![NewEvent::new(
                EventType::RunFailed,
                json!({ "error": "the provider is down" }),
            )],
        )
        .await
        .unwrap();
    assert_eq!(finished.status, RunStatus::Failed);
    assert_eq!(finished.error.as_deref(), Some("the provider is down"));
    assert!(finished.finished_at.is_some());
    assert_eq!(
        (finished.lease_owner, finished.lease_expires_at),
        (None, None)
    );
    assert_eq!(
        finished.lease_token, lease.token,
        "the token never goes back"
    );
    assert_eq!(
        store.get_run(&run.id).await.unwrap().status,
        RunStatus::Failed
    );
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Idle
    );
    let events = all_events(&store, &session).await;
    assert_eq!(events.last().unwrap().event_type, EventType::RunFailed);
    assert!(store.claim_run("w", LEASE).await.unwrap().is_none());
    assert_lease_lost(
        store
            .finish_run(&lease, RunStatus::Completed, None, vec![])
            .await,
        &run.id,
    );

    // A new message makes the session busy again.
    start(&store, &session, "again").await;
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Running
    );
}

async fn a_final_step_ends_its_run_in_the_same_commit(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "final").await;
    let first = start(&store, &session, "one").await;
    let second = start(&store, &session, "two").await;
    let (_, lease) = claim(&store, "w").await;
    assert_eq!(lease.run_id, first.id);
    store
        .record_step(&lease, llm_step(0), vec![delta("a")], Usage::default())
        .await
        .unwrap();
    let invalid = store
        .record_final_step(
            &lease,
            llm_step(1),
            vec![],
            Usage::default(),
            RunStatus::Running,
        )
        .await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid(_))),
        "{invalid:?}"
    );

    let mut answer = llm_step(1);
    answer.message = Some(StepMessage {
        id: MessageId::new(),
        role: MessageRole::Assistant,
        content: "done".to_owned(),
        metadata: json!({ "run_id": first.id.as_str() }),
    });
    let usage = Usage {
        input_tokens: 3,
        output_tokens: 4,
    };
    let completed = NewEvent::new(EventType::RunCompleted, json!({ "text": "done" }));
    let recorded = store
        .record_final_step(
            &lease,
            answer,
            vec![delta("b"), completed],
            usage,
            RunStatus::Completed,
        )
        .await
        .unwrap();
    assert_eq!(recorded.step.step_no, 1);
    assert_eq!(recorded.message.as_ref().unwrap().content, "done");
    let types: Vec<_> = recorded.events.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [EventType::MessageDelta, EventType::RunCompleted]);

    let run = store.get_run(&first.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert!(run.finished_at.is_some());
    assert_eq!((run.lease_owner, run.lease_expires_at), (None, None));
    assert_eq!(run.lease_token, lease.token);
    assert_eq!((run.steps_completed, run.usage), (2, usage));
    assert_eq!(store.list_steps(&first.id).await.unwrap().len(), 2);
    assert_lease_lost(
        store
            .record_final_step(
                &lease,
                llm_step(2),
                vec![],
                Usage::default(),
                RunStatus::Completed,
            )
            .await,
        &first.id,
    );
    // The session's next run goes on; the session stays busy until it ends too.
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Running
    );
    let (_, next) = claim(&store, "w").await;
    assert_eq!(next.run_id, second.id);

    // A final step recorded together with another run's ordinary step: each gets its own
    // outcome, and only the ended run's session goes idle.
    let other_session = session_2(&store).await;
    let other = start(&store, &other_session, "three").await;
    let (_, other_lease) = claim(&store, "w").await;
    assert_eq!(other_lease.run_id, other.id);
    let (ended, ordinary) = tokio::join!(
        store.record_final_step(
            &next,
            llm_step(0),
            vec![NewEvent::new(EventType::RunCompleted, json!({}))],
            Usage::default(),
            RunStatus::Completed,
        ),
        store.record_step(
            &other_lease,
            llm_step(0),
            vec![delta("c")],
            Usage::default()
        ),
    );
    ended.unwrap();
    ordinary.unwrap();
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Idle
    );
    assert_eq!(
        store.get_session(&other_session).await.unwrap().status,
        SessionStatus::Running
    );
    assert_eq!(
        store.get_run(&other.id).await.unwrap().status,
        RunStatus::Running
    );
    let events = all_events(&store, &session).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().event_type, EventType::RunCompleted);
}

async fn cancel_depends_on_where_the_run_is(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "canceller").await;
    let running = start(&store, &session, "long").await;
    let queued = start(&store, &session, "later").await;
    let (_, lease) = store
        .claim_run("w", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();

    // Queued: cancelled at once, with an event; the run ahead is unaffected.
    let cancelled = store.request_cancel(&queued.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    let events = all_events(&store, &session).await;
    let last = events.last().unwrap();
    assert_eq!(last.event_type, EventType::RunCancelled);
    assert_eq!(last.run_id.as_ref(), Some(&queued.id));
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Running
    );

    // Running: cancelling, for its worker to finish; asking again changes nothing.
    assert!(store.cancelling_runs("w").await.unwrap().is_empty());
    let cancelling = store.request_cancel(&running.id).await.unwrap();
    assert_eq!(cancelling.status, RunStatus::Cancelling);
    assert_eq!(cancelling.lease_token, lease.token);
    assert_eq!(store.request_cancel(&running.id).await.unwrap(), cancelling);
    // Its worker finds it among its runs asked to stop; other workers do not.
    assert_eq!(
        store.cancelling_runs("w").await.unwrap(),
        std::slice::from_ref(&running.id)
    );
    assert!(store.cancelling_runs("rescuer").await.unwrap().is_empty());
    let seq = store.last_event_seq(&session).await.unwrap();

    // An expired lease nobody took over is still the holder's: it can renew it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .renew_lease(&lease, Duration::from_millis(1))
        .await
        .unwrap();
    // A cancelling run whose worker died is taken over and stays cancelling.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (taken, new) = claim(&store, "rescuer").await;
    assert_eq!(taken.id, running.id);
    assert_eq!(taken.status, RunStatus::Cancelling);
    assert_eq!(
        store.cancelling_runs("rescuer").await.unwrap(),
        std::slice::from_ref(&running.id)
    );
    assert!(store.cancelling_runs("w").await.unwrap().is_empty());
    store
        .append_events(&new, vec![delta("cancelling still streams")])
        .await
        .unwrap();
    let done = store
        .finish_run(
            &new,
            RunStatus::Cancelled,
            None,
            vec![NewEvent::new(EventType::RunCancelled, json!({}))],
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Cancelled);
    // run.started (the takeover), the delta, run.cancelled.
    assert_eq!(store.last_event_seq(&session).await.unwrap(), seq + 3);
    assert_eq!(
        store.get_session(&session).await.unwrap().status,
        SessionStatus::Idle
    );

    // Terminal runs stay as they are.
    assert_eq!(store.request_cancel(&running.id).await.unwrap(), done);
    assert_eq!(store.request_cancel(&queued.id).await.unwrap(), cancelled);
    assert_eq!(store.last_event_seq(&session).await.unwrap(), seq + 3);
}

async fn runs_are_listed_and_deleted_with_their_session(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "lister").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(start(&store, &session, &format!("m{i}")).await.id);
    }
    let first = store
        .list_runs(&session, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(first.total, 5);
    assert_eq!(
        first.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids[..3]
    );
    let rest = store
        .list_runs(
            &session,
            &PageRequest {
                limit: 3,
                after: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ids[3..]
    );
    assert_eq!(rest.next_cursor, None);

    let (run, lease) = claim(&store, "w").await;
    store
        .record_step(&lease, llm_step(0), vec![delta("x")], Usage::default())
        .await
        .unwrap();
    store.delete_session(&session).await.unwrap();
    for (table, column, value) in [
        ("events", "session_id", session.as_str()),
        ("messages", "session_id", session.as_str()),
        ("runs", "session_id", session.as_str()),
        ("steps", "run_id", run.id.as_str()),
    ] {
        assert_eq!(
            db.count_rows(table, column, value).await,
            0,
            "{table} of the deleted session"
        );
    }
    assert_not_found(store.get_run(&run.id).await, "run");
    assert_not_found(store.list_steps(&run.id).await, "run");
    assert_not_found(store.list_events(&session, 0, 10).await, "session");
    assert_lease_lost(store.append_events(&lease, vec![delta("y")]).await, &run.id);
    assert!(store.claim_run("w", LEASE).await.unwrap().is_none());
}

async fn session_history_reads_every_run_and_message_in_order(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "history").await;
    let other = session_2(&store).await;
    let (runs, messages) = store.session_history(&session).await.unwrap();
    assert!(runs.is_empty() && messages.is_empty());
    assert_not_found(store.session_history(&SessionId::new()).await, "session");

    let first = start(&store, &session, "one").await;
    let second = start(&store, &session, "two").await;
    start(&store, &other, "elsewhere").await;
    let (_, lease) = claim(&store, "w").await;
    assert_eq!(lease.run_id, first.id);
    let answer = NewStep {
        message: Some(StepMessage {
            id: MessageId::new(),
            role: MessageRole::Assistant,
            content: "answer".to_owned(),
            metadata: json!({ "run_id": first.id.as_str() }),
        }),
        ..llm_step(0)
    };
    store
        .record_step(&lease, answer, vec![], Usage::default())
        .await
        .unwrap();

    let (runs, messages) = store.session_history(&session).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [first.id.clone(), second.id.clone()]
    );
    assert_eq!(runs[0], store.get_run(&first.id).await.unwrap());
    let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["one", "two", "answer"]);
    assert_eq!(messages[2].metadata, json!({ "run_id": first.id.as_str() }));
    let listed = store
        .list_messages(&session, &PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(messages, listed);
}

fn put(scope: &KvScope, key: &str, value: &str) -> KvWrite {
    KvWrite {
        scope: scope.clone(),
        key: key.to_owned(),
        value: Some(value.as_bytes().to_vec()),
    }
}

async fn kv_text(store: &Arc<dyn Store>, scope: &KvScope, key: &str) -> Option<String> {
    store
        .kv_get(scope, key)
        .await
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// A step's plugin key-value writes are committed with it, and only with it: a stale lease,
/// a second record of the step or an invalid key writes none of them; a final step carries
/// them too.
async fn plugin_state_is_committed_with_its_step_exactly_once(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "kv-steps").await;
    let agent = store.get_session(&session).await.unwrap().agent_id;
    let mine = KvScope::session("counter", &session);
    let shared = KvScope::agent("counter", &agent);
    store.kv_set(&mine, "old", b"gone soon").await.unwrap();
    start(&store, &session, "go").await;
    let (run, lease) = claim(&store, "w").await;

    let step = NewStep {
        kv_writes: vec![
            put(&mine, "count", "1"),
            put(&shared, "total", "10"),
            KvWrite {
                scope: mine.clone(),
                key: "old".to_owned(),
                value: None,
            },
        ],
        ..llm_step(0)
    };
    // A stale lease writes nothing, state included.
    let stale = Lease {
        token: lease.token + 1,
        ..lease.clone()
    };
    assert_lease_lost(
        store
            .record_step(&stale, step.clone(), vec![], Usage::default())
            .await,
        &run.id,
    );
    assert_eq!(kv_text(&store, &mine, "count").await, None);
    assert_eq!(
        kv_text(&store, &mine, "old").await.as_deref(),
        Some("gone soon")
    );
    // An invalid key is refused before anything is written.
    let bad = NewStep {
        kv_writes: vec![put(&mine, "count", "1"), put(&mine, "", "empty key")],
        ..llm_step(0)
    };
    assert!(matches!(
        store
            .record_step(&lease, bad, vec![], Usage::default())
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(kv_text(&store, &mine, "count").await, None);

    store
        .record_step(&lease, step.clone(), vec![], Usage::default())
        .await
        .unwrap();
    assert_eq!(kv_text(&store, &mine, "count").await.as_deref(), Some("1"));
    assert_eq!(
        kv_text(&store, &shared, "total").await.as_deref(),
        Some("10")
    );
    assert_eq!(kv_text(&store, &mine, "old").await, None);

    // The same step again (a replay that should not have happened) is refused, and its
    // state with it: the counter is not applied twice.
    let again = NewStep {
        kv_writes: vec![put(&mine, "count", "2")],
        ..llm_step(0)
    };
    assert!(matches!(
        store
            .record_step(&lease, again, vec![], Usage::default())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(kv_text(&store, &mine, "count").await.as_deref(), Some("1"));

    // A final step commits its state with the run's end.
    let last = NewStep {
        kv_writes: vec![put(&mine, "count", "2")],
        ..llm_step(1)
    };
    store
        .record_final_step(&lease, last, vec![], Usage::default(), RunStatus::Completed)
        .await
        .unwrap();
    assert_eq!(kv_text(&store, &mine, "count").await.as_deref(), Some("2"));
    assert_eq!(
        store.get_run(&run.id).await.unwrap().status,
        RunStatus::Completed
    );
}

/// Steps of several runs recorded at once (one journal batch on PostgreSQL) each commit their
/// own state; writes of one key by several of them leave one of the written values, and a
/// step whose lease is lost among them writes none of its state.
async fn plugin_state_of_steps_recorded_at_once_is_applied_in_order(db: &TestDb) {
    const RUNS: usize = 6;
    let store = open(db).await;
    let first = session(&store, "kv-batch").await;
    let agent = store.get_session(&first).await.unwrap().agent_id;
    let shared = KvScope::agent("counter", &agent);
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let session = if i == 0 {
            first.clone()
        } else {
            store
                .create_session(NewSession {
                    agent_id: agent.clone(),
                    title: None,
                    overrides: None,
                })
                .await
                .unwrap()
                .id
        };
        start(&store, &session, "go").await;
        let (_, lease) = claim(&store, "w").await;
        runs.push((session, lease));
    }
    let outcomes =
        futures::future::join_all(runs.iter().enumerate().map(|(i, (session, lease))| {
            let lease = if i == 1 {
                Lease {
                    token: lease.token + 5,
                    ..lease.clone()
                }
            } else {
                lease.clone()
            };
            let step = NewStep {
                kv_writes: vec![
                    put(
                        &KvScope::session("counter", session),
                        "mine",
                        &i.to_string(),
                    ),
                    put(&shared, "last", &i.to_string()),
                ],
                ..llm_step(0)
            };
            let store = store.clone();
            async move {
                store
                    .record_step(&lease, step, vec![], Usage::default())
                    .await
            }
        }))
        .await;
    let mut written = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let own = kv_text(&store, &KvScope::session("counter", &runs[i].0), "mine").await;
        if i == 1 {
            assert_lease_lost(outcome, &runs[i].1.run_id);
            assert_eq!(own, None, "a step whose lease was lost wrote state");
        } else {
            outcome.unwrap();
            assert_eq!(own, Some(i.to_string()));
            written.push(i.to_string());
        }
    }
    let last = kv_text(&store, &shared, "last").await.unwrap();
    assert!(
        written.contains(&last),
        "{last} was written by a recorded step"
    );
}

/// The configuration given when a run starts is stored with it and read back by every read
/// of the run (get, claim, list, a retried start).
async fn a_run_keeps_the_configuration_it_was_started_with(db: &TestDb) {
    let store = open(db).await;
    let session = session(&store, "configured").await;
    let agent = store
        .get_agent(&store.get_session(&session).await.unwrap().agent_id)
        .await
        .unwrap();
    let message: everruns_core::Overrides =
        serde_json::from_value(json!({"model": {"model": "m"}})).unwrap();
    let mut config = everruns_core::RunConfig::resolve(&agent, None, Some(&message), 40);
    config.tools = vec!["cap__tool".to_owned()];
    let started = store
        .start_run_with(
            &session,
            "go".to_owned(),
            Some("k".to_owned()),
            Some(&config),
            Some(TRACE),
            None,
        )
        .await
        .unwrap();
    assert_eq!(started.run.config.as_ref(), Some(&config));
    assert_eq!(started.run.trace_parent.as_deref(), Some(TRACE));
    let read = store.get_run(&started.run.id).await.unwrap();
    assert_eq!(read.config, Some(config.clone()));
    assert_eq!(read.trace_parent.as_deref(), Some(TRACE));
    let again = store
        .start_run_with(
            &session,
            "go".to_owned(),
            Some("k".to_owned()),
            None,
            None,
            None,
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.run.config.as_ref(), Some(&config));
    assert_eq!(again.run.trace_parent.as_deref(), Some(TRACE));
    let (claimed, _) = claim(&store, "w").await;
    assert_eq!(claimed.config, Some(config.clone()));
    assert_eq!(
        claimed.trace_parent.as_deref(),
        Some(TRACE),
        "a takeover continues the trace"
    );
    let listed = store
        .list_runs(&session, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items[0].config, Some(config));
    // Without one, nothing is recorded.
    let plain = start(&store, &session, "later").await;
    let plain = store.get_run(&plain.id).await.unwrap();
    assert_eq!((plain.config, plain.trace_parent), (None, None));
    // Only a W3C traceparent is accepted as one.
    for bad in [
        "",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
    ] {
        let refused = store
            .start_run_with(&session, "x".to_owned(), None, None, Some(bad), None)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{bad:?}: {refused:?}"
        );
    }
}

/// What `/metrics` reports of the queue: runs waiting for a worker (queued, or with an
/// expired lease), runs held, and since when the longest-waiting one waits.
async fn queue_stats_count_waiting_and_active_runs(db: &TestDb) {
    let store = open(db).await;
    assert_eq!(
        store.queue_stats().await.unwrap(),
        everruns_store::QueueStats::default()
    );
    let first = start(&store, &session(&store, "q1").await, "one").await;
    start(&store, &session(&store, "q2").await, "two").await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.waiting, stats.active), (2, 0));
    let oldest = stats.oldest_waiting_since.unwrap();
    assert!(
        (oldest - first.created_at).num_milliseconds().abs() < 5,
        "{oldest} vs {}",
        first.created_at
    );
    let (_, lease) = claim(&store, "w").await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.waiting, stats.active), (1, 1));
    // A lease that ran out waits for a takeover.
    store.renew_lease(&lease, Duration::ZERO).await.unwrap();
    let stats = store.queue_stats().await.unwrap();
    assert_eq!((stats.waiting, stats.active), (2, 0));
}

/// A W3C traceparent, as the API stores for a run started inside a traced request.
const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

// ---- tool approval ----

fn approval(run: &RunId, step_no: u32, expires_in: chrono::TimeDelta) -> NewApproval {
    NewApproval::new(
        run,
        step_no,
        format!("call_{step_no}"),
        "files__delete".to_owned(),
        Some("files".to_owned()),
        format!("{{\"path\":\"/tmp/{step_no}\"}}"),
        "the tool matches the approval pattern `files__*`".to_owned(),
        "tool_approval".to_owned(),
        chrono::Utc::now() + expires_in,
    )
}

fn types(events: &[everruns_core::Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

async fn parked_runs_wait_without_a_lease_until_every_approval_is_decided(db: &TestDb) {
    let store = open(db).await;
    let sid = session(&store, "approvals").await;
    let run = start(&store, &sid, "delete both").await;
    let (_, lease) = claim(&store, "w1").await;
    let hour = chrono::TimeDelta::hours(1);
    let first = approval(&run.id, 1, hour);
    let second = approval(&run.id, 2, hour);

    // Parked: waiting, no lease; one event per approval; nothing claimable.
    let parked = store
        .park_run(&lease, vec![first.clone(), second.clone()], Vec::new())
        .await
        .unwrap();
    assert_eq!(parked.status, RunStatus::WaitingApproval);
    assert_eq!(parked.lease_owner, None);
    assert_eq!(parked.lease_expires_at, None);
    assert!(store.claim_run("w2", LEASE).await.unwrap().is_none());
    assert_lease_lost(store.renew_lease(&lease, LEASE).await, &run.id);
    let events = all_events(&store, &sid).await;
    let requested: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::ToolApprovalRequested)
        .collect();
    assert_eq!(requested.len(), 2);
    assert_eq!(requested[0].payload["approval_id"], first.id.as_str());
    assert_eq!(requested[0].payload["arguments"], json!({"path": "/tmp/1"}));
    assert_eq!(requested[0].payload["requested_by"], "tool_approval");
    assert_eq!(
        store.get_run(&run.id).await.unwrap().status,
        RunStatus::WaitingApproval
    );

    let listed = store
        .list_approvals(Some(&run.id), None, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.total, 2);
    assert_eq!(listed.items[0].id, first.id);
    assert_eq!(listed.items[0].status, ApprovalStatus::Pending);
    assert!(listed.items[0].arguments_intact());
    let pending = store
        .list_approvals(None, Some(ApprovalStatus::Pending), &PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!((pending.total, pending.items.len()), (2, 1));
    assert!(pending.next_cursor.is_some());

    // One decision: the run still waits for the other.
    let key = ApiKeyId::new();
    let approved = store
        .decide_approval(&run.id, &first.id, Decision::Approve, Some("fine"), &key)
        .await
        .unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_by.as_ref(), Some(&key));
    assert_eq!(approved.decision_reason.as_deref(), Some("fine"));
    assert!(approved.decided_at.is_some());
    assert_eq!(
        store.get_run(&run.id).await.unwrap().status,
        RunStatus::WaitingApproval
    );
    // A second decision of the same approval is a conflict that says why.
    match store
        .decide_approval(&run.id, &first.id, Decision::Reject, None, &key)
        .await
    {
        Err(StoreError::Conflict(why)) => assert!(why.contains("already decided"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Unknown approvals, and approvals of another run, are not found.
    assert_not_found(
        store
            .decide_approval(
                &run.id,
                &approval(&run.id, 9, hour).id,
                Decision::Approve,
                None,
                &key,
            )
            .await,
        "approval",
    );

    // The last decision queues the run for any worker.
    store
        .decide_approval(&run.id, &second.id, Decision::Reject, Some("no"), &key)
        .await
        .unwrap();
    assert_eq!(
        store.get_run(&run.id).await.unwrap().status,
        RunStatus::Queued
    );
    let (resumed, lease) = claim(&store, "w2").await;
    assert_eq!(resumed.id, run.id);
    assert_eq!(resumed.status, RunStatus::Running);
    assert_eq!(
        resumed.recovery_attempts, 0,
        "a resumption is not a takeover"
    );
    let decided = store.run_approvals(&run.id).await.unwrap();
    assert_eq!(
        decided.iter().map(|a| a.status).collect::<Vec<_>>(),
        [ApprovalStatus::Approved, ApprovalStatus::Rejected]
    );
    // The same approvals again (a resumed worker re-parking) change nothing.
    let again = store
        .park_run(&lease, vec![first.clone()], Vec::new())
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::WaitingApproval);
    assert_eq!(store.run_approvals(&run.id).await.unwrap(), decided);
    let tail = all_events(&store, &sid).await;
    assert_eq!(
        types(&tail[events.len()..]),
        [
            "tool.approval_resolved",
            "tool.approval_resolved",
            "run.started"
        ]
    );
    assert_eq!(tail[events.len()].payload["decision"], "approved");
    assert_eq!(tail[events.len()].payload["decided_by"], key.as_str());
    // Decisions on a run that is not waiting for them are conflicts.
    match store
        .decide_approval(&run.id, &second.id, Decision::Approve, None, &key)
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn approvals_expire_once_and_are_cancelled_with_their_run(db: &TestDb) {
    let store = open(db).await;
    let sid = session(&store, "expiring").await;
    let run = start(&store, &sid, "wait").await;
    let (_, lease) = claim(&store, "w1").await;
    let late = approval(&run.id, 1, chrono::TimeDelta::milliseconds(-1));
    store
        .park_run(&lease, vec![late.clone()], Vec::new())
        .await
        .unwrap();
    let key = ApiKeyId::new();
    match store
        .decide_approval(&run.id, &late.id, Decision::Approve, None, &key)
        .await
    {
        Err(StoreError::Conflict(why)) => assert!(why.contains("expired"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Sweepers racing: the approval expires once.
    let (a, b) = tokio::join!(store.expire_approvals(10), store.expire_approvals(10));
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(store.expire_approvals(10).await.unwrap(), 0);
    let expired = &store.run_approvals(&run.id).await.unwrap()[0];
    assert_eq!(expired.status, ApprovalStatus::Expired);
    assert_eq!(expired.decided_by, None);
    assert_eq!(
        store.get_run(&run.id).await.unwrap().status,
        RunStatus::Queued
    );

    // Cancelling a waiting run cancels it at once, with its pending approvals.
    let other = session(&store, "cancelled").await;
    let waiting = start(&store, &other, "wait").await;
    let (claimed, lease) = claim(&store, "w1").await;
    let (claimed, lease) = if claimed.id == waiting.id {
        (claimed, lease)
    } else {
        claim(&store, "w1").await
    };
    assert_eq!(claimed.id, waiting.id);
    let pending = approval(&waiting.id, 3, chrono::TimeDelta::hours(1));
    store
        .park_run(&lease, vec![pending.clone()], Vec::new())
        .await
        .unwrap();
    let cancelled = store.request_cancel(&waiting.id).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    let approvals = store.run_approvals(&waiting.id).await.unwrap();
    assert_eq!(approvals[0].status, ApprovalStatus::Cancelled);
    let log = all_events(&store, &other).await;
    assert_eq!(
        types(&log[log.len() - 2..]),
        ["tool.approval_resolved", "run.cancelled"]
    );
    assert_eq!(
        store.get_session(&other).await.unwrap().status,
        SessionStatus::Idle
    );
    match store
        .decide_approval(&waiting.id, &pending.id, Decision::Approve, None, &key)
        .await
    {
        Err(StoreError::Conflict(why)) => assert!(why.contains("cancelled"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // A run asked to stop is cancelled instead of parked.
    let third = session(&store, "stopping").await;
    let stopping = start(&store, &third, "stop").await;
    let mut got = claim(&store, "w1").await;
    while got.0.id != stopping.id {
        got = claim(&store, "w1").await;
    }
    store.request_cancel(&stopping.id).await.unwrap();
    let ended = store
        .park_run(
            &got.1,
            vec![approval(&stopping.id, 1, chrono::TimeDelta::hours(1))],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    assert!(store.run_approvals(&stopping.id).await.unwrap().is_empty());
}
