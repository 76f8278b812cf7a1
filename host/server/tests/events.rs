//! The SSE event stream across processes and under load: a client on one process follows a
//! run executing on another (PostgreSQL `NOTIFY`, with the poll fallback set to a minute);
//! resuming from any `Last-Event-ID` while events are being appended replays exactly the
//! missing ones, then continues live; a client that stops reading falls behind and catches up
//! from the log without holding up the others.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use everruns_core::{EventType, Lease, NewEvent, SessionId};
use everruns_store::{Store, StoreConfig};
use everruns_testkit::{FakeLlm, Reply, SseReader, TestApp, TestDb, json_of};
use futures::StreamExt;
use serde_json::json;

/// Opens the session's SSE stream, resuming after `since` when given.
async fn open_stream(app: &TestApp, sid: &str, since: Option<i64>) -> reqwest::Response {
    let mut request = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream");
    if let Some(since) = since {
        request = request.header("last-event-id", since.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// Reads events until one with sequence `until` (or of type `until_type`).
async fn read_until(
    response: reqwest::Response,
    until: Option<i64>,
    until_type: Option<&str>,
) -> Vec<(i64, String)> {
    SseReader::new(response)
        .until(|e| until == Some(e.id) || until_type == Some(e.event.as_str()))
        .await
        .into_iter()
        .map(|e| (e.id, e.event))
        .collect()
}

/// An agent and a session on `app`; returns the session id.
async fn session(app: &TestApp) -> String {
    app.session_with(json!({"name": "a", "system_prompt": "x"}))
        .await
}

/// A second store on the app's database, standing in for another process: it queues a run
/// through the API and claims it itself, so the test writes that run's events.
async fn writer(app: &TestApp, db_url: &str, sid: &str) -> (Arc<dyn Store>, Lease) {
    json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "go"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let store = everruns_store::connect(&StoreConfig {
        url: db_url.to_owned(),
        max_connections: 4,
    })
    .await
    .unwrap();
    let (_, lease) = store
        .claim_run("test-writer", Duration::from_secs(600))
        .await
        .unwrap()
        .expect("the queued run");
    (store, lease)
}

fn delta(i: usize, size: usize) -> NewEvent {
    NewEvent::new(
        EventType::MessageDelta,
        json!({"i": i, "delta": "x".repeat(size)}),
    )
}

/// An API-only process serves the stream; a worker process on the same PostgreSQL executes
/// the run. With the API's poll fallback at a minute, the events can only arrive through
/// `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_a_run_executing_in_another_process() {
    let db = TestDb::postgres().await;
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::text("streamed from elsewhere"));
    let api_dir = tempfile::tempdir().unwrap();
    let api = TestApp::start_configured(api_dir.path(), Some(db.url()), |config| {
        config.worker = false;
        config.events_poll_ms = 60_000;
    })
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let (base, key) = (llm.openai_base_url(), llm.api_key().to_owned());
    let worker = TestApp::start_configured(worker_dir.path(), Some(db.url()), |config| {
        config.llm_kind = Some("openai".to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("m".to_owned());
    })
    .await;
    let sid = session(&api).await;
    let stream = open_stream(&api, &sid, None).await;
    let posted = Instant::now();
    let watcher = tokio::spawn(read_until(stream, None, Some("run.completed")));
    json_of(
        api.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "hi"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let events = watcher.await.unwrap();
    let took = posted.elapsed();
    let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    for expected in ["run.started", "message.delta", "message.completed"] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(
        took < Duration::from_secs(10),
        "the worker's events arrived in {took:?}"
    );
    worker.stop().await;
    api.stop().await;
    db.cleanup().await;
}

/// Clients resume from many points while another store appends events in batches; each
/// receives exactly the events after its `Last-Event-ID`, in order, once.
async fn resume_is_exact_under_concurrent_appends(db: Option<&TestDb>, dir: &Path) {
    // The server keeps SQLite in its data directory.
    let url = match db {
        Some(db) => db.url().to_owned(),
        None => format!("sqlite://{}", dir.join("everruns.db").display()),
    };
    let app = TestApp::start_configured(dir, db.map(TestDb::url), |config| {
        config.worker = false;
        // SQLite has no cross-process notices: the other store's writes arrive by polling.
        config.events_poll_ms = 20;
    })
    .await;
    let sid = session(&app).await;
    let (store, lease) = writer(&app, &url, &sid).await;
    let session_id = SessionId::parse(&sid).unwrap();
    let start = store.last_event_seq(&session_id).await.unwrap();
    const BATCHES: usize = 150;
    let total = start + (1..=BATCHES).map(|b| (b % 7 + 1) as i64).sum::<i64>();

    // The second half of the batches waits until every client has resumed: the clients resume
    // while the first half is being written, and the end they wait for is never behind them.
    let (opened, all_open) = tokio::sync::oneshot::channel::<()>();
    let append = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut i = 0;
            let mut all_open = Some(all_open);
            for b in 1..=BATCHES {
                if b > BATCHES / 2
                    && let Some(all_open) = all_open.take()
                {
                    all_open.await.unwrap();
                }
                let batch = (0..b % 7 + 1).map(|_| {
                    i += 1;
                    delta(i, 20)
                });
                store.append_events(&lease, batch.collect()).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut clients = Vec::new();
    let mut resumes = Vec::new();
    for k in 0..12i64 {
        // Resume points spread over what is already written, including 0 and the very end.
        let now = store.last_event_seq(&session_id).await.unwrap();
        let since = if k % 4 == 0 { now } else { now * k / 12 };
        resumes.push(since);
        let stream = open_stream(&app, &sid, Some(since)).await;
        clients.push(tokio::spawn(read_until(stream, Some(total), None)));
    }
    opened.send(()).unwrap();
    append.await.unwrap();
    for (client, since) in clients.into_iter().zip(resumes) {
        // Heartbeats keep a stream that misses an event alive: bound the wait.
        let read = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .unwrap_or_else(|_| panic!("the client resumed after {since} got every event"));
        let seqs: Vec<i64> = read.unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(
            seqs,
            ((since + 1)..=total).collect::<Vec<_>>(),
            "resumed after {since}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_under_concurrent_appends_on_postgres() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    resume_is_exact_under_concurrent_appends(Some(&db), dir.path()).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_under_concurrent_appends_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    resume_is_exact_under_concurrent_appends(None, dir.path()).await;
}

/// One client stops reading while far more events than the live buffer holds (and than the
/// socket buffers hold) are appended. Another client receives everything meanwhile; the slow
/// one, reading again, gets every event exactly once from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_lags_without_holding_up_the_others() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_configured(dir.path(), Some(db.url()), |config| {
        config.worker = false;
    })
    .await;
    let sid = session(&app).await;
    let (store, lease) = writer(&app, db.url(), &sid).await;
    let session_id = SessionId::parse(&sid).unwrap();
    let start = store.last_event_seq(&session_id).await.unwrap();
    const EVENTS: usize = 12_000;
    let total = start + EVENTS as i64;

    let fast = tokio::spawn(read_until(
        open_stream(&app, &sid, None).await,
        Some(total),
        None,
    ));
    // The slow client reads the replay, then nothing until the end.
    let mut slow = SseReader::new(open_stream(&app, &sid, None).await);
    let mut seqs = Vec::new();
    while seqs.last() != Some(&start) {
        seqs.push(slow.next().await.id);
    }
    for chunk in 0..EVENTS / 200 {
        let batch = (0..200).map(|i| delta(chunk * 200 + i, 2_000)).collect();
        store.append_events(&lease, batch).await.unwrap();
    }
    let fast_seqs: Vec<i64> = fast.await.unwrap().into_iter().map(|e| e.0).collect();
    assert_eq!(fast_seqs, (1..=total).collect::<Vec<_>>());

    // Now the slow client reads on.
    while seqs.last() != Some(&total) {
        seqs.push(slow.next().await.id);
    }
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // The slow client is still connected: shutting down ends its stream instead of waiting
    // for it forever.
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("graceful shutdown with an SSE client connected");
    slow.expect_end(Duration::from_secs(10)).await;
    db.cleanup().await;
}

/// A stream with nothing to send gets a `: heartbeat` comment after `sse_heartbeat_ms` of
/// silence, and again after each further such period; events in between reset the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeat_comments() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_configured(dir.path(), None, |config| {
        config.sse_heartbeat_ms = 300;
    })
    .await;
    let sid = session(&app).await;
    let opened = Instant::now();
    let mut body = open_stream(&app, &sid, None).await.bytes_stream();
    let mut seen = String::new();
    let deadline = Duration::from_secs(10);
    while seen.matches(": heartbeat\n\n").count() < 2 {
        let chunk = tokio::time::timeout(deadline, body.next())
            .await
            .expect("a heartbeat within 10 s")
            .expect("the stream stays open")
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "two heartbeats need two silent periods, got them after {took:?}"
    );
    // Nothing else was sent: the session has no events.
    assert_eq!(seen, ": heartbeat\n\n: heartbeat\n\n");
    app.stop().await;
}
