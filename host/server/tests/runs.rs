//! Full runs through the real server: a message starts a run, the executor calls the fake LLM
//! (real OpenAI / Anthropic wire formats over HTTP), the model calls a real WASM plugin tool,
//! and the client watches it all over SSE; on SQLite and on PostgreSQL.

use std::path::Path;
use std::time::Duration;

use everruns_testkit::guests::{HOSTILE, WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, Reply, SseEvent, SseReader, TestApp, TestDb, json_of};
use serde_json::{Value, json};

/// A server wired to `llm` (OpenAI format unless `anthropic`), with the well-behaved plugin.
async fn start(dir: &Path, db: Option<&TestDb>, llm: &FakeLlm, anthropic: bool) -> TestApp {
    plugin_dir(
        &dir.join("plugins"),
        "well-behaved",
        "well-behaved",
        WELL_BEHAVED,
    );
    let (kind, base) = if anthropic {
        ("anthropic", llm.anthropic_base_url())
    } else {
        ("openai", llm.openai_base_url())
    };
    let key = llm.api_key().to_owned();
    TestApp::start_configured(dir, db.map(|d| d.url()), |config| {
        config.llm_kind = Some(kind.to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("fake-model".to_owned());
        config.executor_lease_ms = 2_000;
    })
    .await
}

/// Reads SSE events until one of type `until` arrives.
async fn sse_until(response: reqwest::Response, until: &str) -> Vec<(i64, String, Value)> {
    SseReader::new(response)
        .until(|e| e.event == until)
        .await
        .into_iter()
        .map(SseEvent::into_parts)
        .collect()
}

async fn full_run_with_a_plugin_tool(db: Option<&TestDb>, anthropic: bool) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    // Call the plugin first; once its result is in the conversation, answer in text.
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            let results = request.tool_results();
            Reply::text(format!("The plugin said: {}", results[0].1))
        } else {
            Reply::tool_call("well-behaved__greet", json!({"name": "Ada"}))
        }
    });
    let app = start(dir.path(), db, &llm, anthropic).await;

    let agent = app
        .create(
            "/v1/agents",
            json!({
                "name": "greeter",
                "system_prompt": "You greet people.",
                "capabilities": [{"id": "well-behaved", "config": {"greeting": "Howdy"}}],
            }),
        )
        .await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap();

    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(sse_until(stream, "run.completed"));
    let run = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "Greet Ada"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let events = watcher.await.unwrap();

    // Sequence numbers are 1, 2, 3, ... without gaps.
    let seqs: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    for expected in [
        "message.created",
        "run.queued",
        "run.started",
        "message.completed",
        "tool.started",
        "tool.completed",
        "step.completed",
        "usage",
        "message.delta",
        "run.completed",
    ] {
        assert!(types.contains(&expected), "missing {expected} in {types:?}");
    }
    let tool = events.iter().find(|e| e.1 == "tool.completed").unwrap();
    assert_eq!(tool.2["data"]["output"], "Howdy, Ada!");
    assert_eq!(tool.2["data"]["capability"], "well-behaved");
    let completed = events.iter().find(|e| e.1 == "run.completed").unwrap();
    assert_eq!(completed.2["data"]["text"], "The plugin said: Howdy, Ada!");
    let final_message = events
        .iter()
        .rev()
        .find(|e| e.1 == "message.completed")
        .unwrap();
    assert_eq!(
        final_message.2["data"]["text"],
        "The plugin said: Howdy, Ada!"
    );
    // The streamed deltas of the final message add up to its text.
    let message_id = final_message.2["data"]["message_id"].clone();
    let streamed: String = events
        .iter()
        .filter(|e| e.1 == "message.delta" && e.2["data"]["message_id"] == message_id)
        .map(|e| e.2["data"]["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, "The plugin said: Howdy, Ada!");

    // The REST view agrees.
    let run = json_of(
        app.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    let steps = run["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["llm", "tool", "llm"]);
    assert_eq!(steps[1]["capability_id"], "well-behaved");
    assert!(steps[1]["digest"].as_str().is_some_and(|d| d.len() == 64));
    let messages = json_of(
        app.get(&format!("/v1/sessions/{sid}/messages"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let roles: Vec<&str> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["user", "assistant", "tool", "assistant"]);

    // The model saw the system prompt, the tool, and the tool's result.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "one LLM call per LLM step");
    assert!(
        requests[0]
            .tool_names()
            .contains(&"well-behaved__greet".to_owned())
    );
    assert!(requests.iter().all(|r| r.auth_ok));
    assert_eq!(requests[1].tool_results()[0].1, "Howdy, Ada!");
    let session = json_of(
        app.get(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(session["status"], "idle");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_on_sqlite_openai() {
    full_run_with_a_plugin_tool(None, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_on_postgres_anthropic() {
    let db = TestDb::postgres().await;
    full_run_with_a_plugin_tool(Some(&db), true).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_fails_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::error(400, "model `fake-model` does not exist"));
    let app = start(dir.path(), None, &llm, false).await;
    let sid = &app
        .session_with(json!({"name": "a", "system_prompt": "x"}))
        .await;
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(sse_until(stream, "run.failed"));
    app.post(&format!("/v1/sessions/{sid}/messages"))
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    let events = watcher.await.unwrap();
    let failed = &events.last().unwrap().2;
    let error = failed["data"]["error"].as_str().unwrap();
    assert!(error.contains("does not exist"), "{error}");
    assert!(!error.contains(llm.api_key()), "the key never leaks");
    // The server keeps serving.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_streaming_answer() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| {
        Reply::text("one two three four five six seven eight nine ten")
            .with_delta_delay(Duration::from_millis(400))
    });
    let app = start(dir.path(), None, &llm, false).await;
    let sid = &app
        .session_with(json!({"name": "slow", "system_prompt": "x"}))
        .await;
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(sse_until(stream, "message.delta"));
    let run = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "count"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    watcher.await.unwrap();
    let rid = run["id"].as_str().unwrap();
    let asked = std::time::Instant::now();
    let cancelling = json_of(
        app.post(&format!("/v1/runs/{rid}/cancel"))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(cancelling["status"], "cancelling");
    let status = loop {
        let run = json_of(
            app.get(&format!("/v1/runs/{rid}")).send().await.unwrap(),
            200,
        )
        .await;
        if run["status"] != "cancelling" {
            break run["status"].clone();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "cancel took too long"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, "cancelled");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "cancelled within 1 s: {:?}",
        asked.elapsed()
    );
    app.stop().await;
}

/// A cancel while a plugin tool is still running (the hostile guest's `spin`, an endless
/// loop allowed 30 s) stops the call: the run is `cancelled` within 1 s and its event log
/// ends with `run.cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_slow_tool_call() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::tool_call("hostile__spin", json!({})));
    plugin_dir(
        &dir.path().join("plugins"),
        "hostile",
        "hostile",
        &HOSTILE.replace("timeout_ms = 1000", "timeout_ms = 30000"),
    );
    let app = start(dir.path(), None, &llm, false).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({
                "name": "spinner",
                "system_prompt": "x",
                "capabilities": [{"id": "hostile"}],
            }),
        )
        .await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap();
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(sse_until(stream, "tool.started"));
    let run = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "spin"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let seen = watcher.await.unwrap();
    assert_eq!(seen.last().unwrap().2["data"]["name"], "hostile__spin");
    let rid = run["id"].as_str().unwrap();
    let asked = std::time::Instant::now();
    let cancelling = json_of(
        app.post(&format!("/v1/runs/{rid}/cancel"))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(cancelling["status"], "cancelling");
    let run = loop {
        let run = json_of(
            app.get(&format!("/v1/runs/{rid}")).send().await.unwrap(),
            200,
        )
        .await;
        if run["status"] != "cancelling" {
            break run;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "cancel took too long"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = asked.elapsed();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        took < Duration::from_secs(1),
        "cancelled within 1 s: {took:?}"
    );
    // The tool call never finished: no tool step, and the log ends with the cancel.
    assert_eq!(run["steps_completed"], 1, "only the LLM step: {run}");
    let log = json_of(
        app.get(&format!("/v1/sessions/{sid}/events?limit=500"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let types: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.last(), Some(&"run.cancelled"), "{types:?}");
    assert!(
        !types.contains(&"tool.completed") && !types.contains(&"tool.failed"),
        "{types:?}"
    );
    app.stop().await;
}

/// Plugin key-value state goes through the store: a counter kept by the plugin keeps counting
/// after the server restarts.
async fn plugin_state_survives_a_restart(db: Option<&TestDb>) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            Reply::text(format!("counter: {}", request.tool_results()[0].1))
        } else {
            Reply::tool_call("well-behaved__count", json!({}))
        }
    });
    let mut app = start(dir.path(), db, &llm, false).await;
    let agent = app.create("/v1/agents", json!({"name": "counter", "system_prompt": "x", "capabilities": [{"id": "well-behaved"}]})).await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap().to_owned();
    for expected in [1, 2] {
        let stream = app
            .get(&format!("/v1/sessions/{sid}/events"))
            .header("accept", "text/event-stream")
            .header(
                "last-event-id",
                json_of(
                    app.get(&format!("/v1/sessions/{sid}/events?limit=500"))
                        .send()
                        .await
                        .unwrap(),
                    200,
                )
                .await["data"]
                    .as_array()
                    .unwrap()
                    .len()
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        let watcher = tokio::spawn(sse_until(stream, "run.completed"));
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "count"}))
            .send()
            .await
            .unwrap();
        let events = watcher.await.unwrap();
        let tool = events
            .iter()
            .find(|e| e.1 == "tool.completed")
            .expect("tool ran");
        let output: Value =
            serde_json::from_str(tool.2["data"]["output"].as_str().unwrap()).unwrap();
        assert_eq!(output["count"], expected, "{output}");
        app = app.restart().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_survives_a_restart_on_sqlite() {
    plugin_state_survives_a_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_survives_a_restart_on_postgres() {
    let db = TestDb::postgres().await;
    plugin_state_survives_a_restart(Some(&db)).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stops_at_the_step_limit() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    // A model that never stops calling tools.
    llm.set_fallback(|_| Reply::tool_call("well-behaved__ping", json!({})));
    let app = start(dir.path(), None, &llm, false).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({
                "name": "looper",
                "system_prompt": "x",
                "model": {"max_steps": 3},
                "capabilities": [{"id": "well-behaved"}],
            }),
        )
        .await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap();
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(sse_until(stream, "run.failed"));
    let run = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "go"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let events = watcher.await.unwrap();
    let error = events.last().unwrap().2["data"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("step limit of 3"), "{error}");
    let run = json_of(
        app.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(run["status"], "failed");
    assert_eq!(
        run["steps"].as_array().unwrap().len(),
        4,
        "llm, tool, llm, tool, then the limit"
    );
    assert_eq!(llm.request_count(), 2);
    app.stop().await;
}

/// An API-only process queues a run; a worker process on the same PostgreSQL picks it up at
/// once through `LISTEN/NOTIFY`, although its poll interval is a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_elsewhere_is_woken_by_notify() {
    let db = TestDb::postgres().await;
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::text("hello from the worker"));
    let api_dir = tempfile::tempdir().unwrap();
    let api = TestApp::start_configured(api_dir.path(), Some(db.url()), |config| {
        config.worker = false;
    })
    .await;
    let worker_dir = tempfile::tempdir().unwrap();
    let base = llm.openai_base_url();
    let key = llm.api_key().to_owned();
    let worker = TestApp::start_configured(worker_dir.path(), Some(db.url()), |config| {
        config.llm_kind = Some("openai".to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("m".to_owned());
        config.executor_poll_ms = 60_000;
    })
    .await;
    // Let the worker's first look for work (at start) pass.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let agent = api
        .create("/v1/agents", json!({"name": "n", "system_prompt": "x"}))
        .await;
    let session = api
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap();
    let run = json_of(
        api.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": "hi"}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let rid = run["id"].as_str().unwrap();
    let posted = std::time::Instant::now();
    loop {
        let run = json_of(
            api.get(&format!("/v1/runs/{rid}")).send().await.unwrap(),
            200,
        )
        .await;
        if run["status"] == "completed" {
            break;
        }
        assert!(
            posted.elapsed() < Duration::from_secs(10),
            "the worker was not woken: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    api.stop().await;
    db.cleanup().await;
}
