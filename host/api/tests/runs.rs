//! Runs and the event log over HTTP, without a worker: queueing, idempotency, cancel of a
//! queued run, the JSON event pages and SSE replay + live delivery.

mod support;

use std::time::Duration;

use everruns_testkit::SseReader;
use serde_json::{Value, json};
use support::{Backend, Harness, expect_json, expect_problem};

on_both_backends!(
    message_queues_a_run_once_per_idempotency_key,
    cancelling_a_queued_run,
    events_page_as_json_and_stream_as_sse,
    bad_run_input_is_a_problem,
);

async fn session(h: &Harness) -> String {
    let agent = expect_json(
        h.app
            .post("/v1/agents")
            .json(&json!({"name": "runner", "system_prompt": "x"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let session = expect_json(
        h.app
            .post("/v1/sessions")
            .json(&json!({"agent_id": agent["id"]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    session["id"].as_str().unwrap().to_owned()
}

async fn post_message(h: &Harness, sid: &str, content: &str, key: Option<&str>) -> Value {
    let mut request = h
        .app
        .post(&format!("/v1/sessions/{sid}/messages"))
        .json(&json!({"content": content}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    expect_json(request.send().await.unwrap(), 202).await
}

async fn message_queues_a_run_once_per_idempotency_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let sid = session(&h).await;
    let first = post_message(&h, &sid, "hello", Some("k-1")).await;
    assert!(first["id"].as_str().unwrap().starts_with("run_"), "{first}");
    assert_eq!(first["status"], "queued");
    assert!(first.get("queued_behind").is_none());

    let again = post_message(&h, &sid, "hello", Some("k-1")).await;
    assert_eq!(again["id"], first["id"], "same key, same run");

    let second = post_message(&h, &sid, "and then?", None).await;
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["queued_behind"], first["id"], "{second}");

    let messages = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}/messages"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        messages["total"], 2,
        "the replayed POST stored nothing: {messages}"
    );
    assert_eq!(messages["data"][0]["content"], "hello");
    assert_eq!(messages["data"][0]["role"], "user");

    let runs = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}/runs"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(runs["total"], 2);
    let run = expect_json(
        h.app
            .get(&format!("/v1/runs/{}", first["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(run["steps"], json!([]));
    assert_eq!(run["trigger_message_id"], messages["data"][0]["id"]);
    let session = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(session["status"], "running");
    h.finish().await;
}

async fn cancelling_a_queued_run(backend: Backend) {
    let h = Harness::start(backend).await;
    let sid = session(&h).await;
    let run = post_message(&h, &sid, "hello", None).await;
    let id = run["id"].as_str().unwrap();
    let cancelled = expect_json(
        h.app
            .post(&format!("/v1/runs/{id}/cancel"))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    let again = expect_json(
        h.app
            .post(&format!("/v1/runs/{id}/cancel"))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(again["status"], "cancelled", "cancelling twice is harmless");
    let session = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(session["status"], "idle");
    let events = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}/events"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let types: Vec<_> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        vec![
            json!("message.created"),
            json!("run.queued"),
            json!("run.cancelled")
        ]
    );
    h.finish().await;
}

/// Reads SSE frames until `n` events arrived; returns (id, event, data) triples.
async fn read_sse(response: reqwest::Response, n: usize) -> Vec<(i64, String, Value)> {
    let mut reader = SseReader::new(response);
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        events.push(reader.next().await.into_parts());
    }
    events
}

async fn events_page_as_json_and_stream_as_sse(backend: Backend) {
    let h = Harness::start(backend).await;
    let sid = session(&h).await;
    post_message(&h, &sid, "one", None).await;
    post_message(&h, &sid, "two", None).await;

    // JSON pages.
    let page = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}/events?limit=3"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let seqs: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(page["next_since"], 3);
    let rest = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}/events?since=3"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert!(rest["next_since"].is_null());
    assert_eq!(rest["data"][0]["data"]["run_id"], rest["data"][0]["run_id"]);

    // SSE replay from the start, then live delivery of a new event.
    let stream = h
        .app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let reader = tokio::spawn(read_sse(stream, 6));
    tokio::time::sleep(Duration::from_millis(100)).await;
    post_message(&h, &sid, "three", None).await;
    let events = reader.await.unwrap();
    let ids: Vec<_> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(events[0].1, "message.created");
    assert_eq!(events[1].1, "run.queued");
    assert_eq!(events[4].2["data"]["content"], "three");

    // Resuming with Last-Event-ID replays exactly what came after.
    let resumed = h
        .app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "4")
        .send()
        .await
        .unwrap();
    let events = read_sse(resumed, 2).await;
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5, 6]);
    h.finish().await;
}

async fn bad_run_input_is_a_problem(backend: Backend) {
    let h = Harness::start(backend).await;
    let sid = session(&h).await;
    let r = h
        .app
        .post(&format!("/v1/sessions/{sid}/messages"))
        .json(&json!({"content": "  "}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    assert_eq!(body["errors"][0]["field"], "content");
    let r = h
        .app
        .post("/v1/sessions/ses_00000000000000000000000000000000/messages")
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 404).await;
    expect_problem(
        h.app
            .get("/v1/runs/run_00000000000000000000000000000000")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_problem(
        h.app.post("/v1/runs/nope/cancel").send().await.unwrap(),
        404,
    )
    .await;
    let r = h
        .app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    expect_problem(r, 400).await;
    expect_problem(
        h.app
            .get(&format!("/v1/sessions/{sid}/events?since=-1"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    h.finish().await;
}
