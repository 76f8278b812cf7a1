//! The built-in `session_files` and `memory` capabilities in real runs through the server
//! (the model is the fake LLM): their state survives a restart on SQLite and PostgreSQL,
//! files stay private to their session and memories to their agent, and what an agent
//! remembers reaches the next session's system prompt.

use std::path::Path;

use everruns_testkit::{FakeLlm, Reply, SseReader, TestApp, TestDb, json_of};
use serde_json::{Value, json};

async fn start(dir: &Path, db: Option<&TestDb>, llm: &FakeLlm) -> TestApp {
    let base = llm.openai_base_url();
    let key = llm.api_key().to_owned();
    TestApp::start_configured(dir, db.map(|d| d.url()), |config| {
        config.builtin_plugins = true;
        config.llm_kind = Some("openai".to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("fake-model".to_owned());
    })
    .await
}

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    json_of(app.post(path).json(&body).send().await.unwrap(), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends `text` to session `sid` and waits (on the event stream) until its run ends.
async fn turn(app: &TestApp, sid: &str, text: &str) {
    let seen = json_of(
        app.get(&format!("/v1/sessions/{sid}/events?limit=500"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await["data"]
        .as_array()
        .unwrap()
        .len();
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", seen.to_string())
        .send()
        .await
        .unwrap();
    json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": text}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let last = SseReader::new(stream)
        .until(|e| matches!(e.event.as_str(), "run.completed" | "run.failed"))
        .await
        .pop()
        .expect("the run ended");
    assert_eq!(last.event, "run.completed", "run failed: {}", last.data);
}

/// The latest tool result and the system prompt the model saw in the latest LLM request.
fn last_seen(llm: &FakeLlm) -> (String, String) {
    let request = llm.requests().pop().expect("a request");
    let result = request
        .tool_results()
        .last()
        .map(|r| r.1.clone())
        .unwrap_or_default();
    let system = request.messages()[0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (result, system)
}

/// One tool call, then a closing text once its result is back.
fn script(llm: &FakeLlm, tool: &str, args: Value) {
    llm.push_all([Reply::tool_call(tool, args), Reply::text("done")]);
}

async fn state_survives_a_restart_and_stays_isolated(db: Option<&TestDb>) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let app = start(dir.path(), db, &llm).await;
    let caps = json!([{"id": "session_files"}, {"id": "memory"}]);
    let agent_a = create(
        &app,
        "/v1/agents",
        json!({"name": "a", "system_prompt": "You are A.", "capabilities": caps}),
    )
    .await;
    let agent_b = create(
        &app,
        "/v1/agents",
        json!({"name": "b", "system_prompt": "You are B.", "capabilities": [{"id": "memory"}]}),
    )
    .await;
    let a1 = create(&app, "/v1/sessions", json!({"agent_id": agent_a})).await;

    script(
        &llm,
        "session_files__write_file",
        json!({"path": "notes/plan.md", "content": "kept across restarts"}),
    );
    turn(&app, &a1, "note this").await;
    assert_eq!(last_seen(&llm).0, "wrote 20 bytes to notes/plan.md");
    script(
        &llm,
        "memory__remember",
        json!({"name": "user.city", "fact": "Lives in Lyon"}),
    );
    turn(&app, &a1, "I live in Lyon").await;
    assert_eq!(last_seen(&llm).0, "remembered `user.city`");

    let app = app.restart().await;

    // The same session reads its file back after the restart.
    script(
        &llm,
        "session_files__read_file",
        json!({"path": "notes/plan.md"}),
    );
    turn(&app, &a1, "read it").await;
    assert_eq!(last_seen(&llm).0, "kept across restarts");

    // A new session of agent A: no such file, but the memory is in its system prompt.
    let a2 = create(&app, "/v1/sessions", json!({"agent_id": agent_a})).await;
    script(
        &llm,
        "session_files__read_file",
        json!({"path": "notes/plan.md"}),
    );
    turn(&app, &a2, "read it").await;
    let (result, system) = last_seen(&llm);
    assert!(result.contains("no file `notes/plan.md`"), "{result}");
    assert!(system.starts_with("You are A."), "{system}");
    assert!(system.contains("- user.city: Lives in Lyon"), "{system}");

    // Agent B remembers nothing of agent A.
    let b1 = create(&app, "/v1/sessions", json!({"agent_id": agent_b})).await;
    script(&llm, "memory__recall", json!({}));
    turn(&app, &b1, "what do you know?").await;
    let (result, system) = last_seen(&llm);
    assert_eq!(
        serde_json::from_str::<Value>(&result).unwrap(),
        json!({"facts": []})
    );
    assert!(system.contains("Nothing is remembered yet."), "{system}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_state_survives_a_restart_on_sqlite() {
    state_survives_a_restart_and_stays_isolated(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_state_survives_a_restart_on_postgres() {
    let db = TestDb::postgres().await;
    state_survives_a_restart_and_stays_isolated(Some(&db)).await;
    db.cleanup().await;
}
