//! Session and message configuration overrides through the real server, on SQLite and
//! PostgreSQL: the shape round-trips, precedence (message > session > agent) reaches the
//! model request the fake LLM sees, every run records the configuration it ran with and keeps
//! using it when the agent changes mid-run, bad overrides are 422s naming the field (and
//! store nothing), and an idempotency key cannot be reused for different overrides.

use std::path::Path;

use everruns_testkit::guests::{HOOKS, WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, RecordedRequest, Reply, SseReader, TestApp, TestDb, json_of};
use serde_json::{Value, json};

everruns_testkit::on_both_stores!(
    overrides_reach_the_model_request,
    a_run_keeps_its_configuration_when_the_agent_changes,
    bad_overrides_name_the_field
);

async fn start(dir: &Path, db: &TestDb, llm: &FakeLlm) -> TestApp {
    let (dir, url) = match db.sqlite_dir() {
        Some(sqlite) => (sqlite, None),
        None => (dir, Some(db.url())),
    };
    let plugins = dir.join("plugins");
    plugin_dir(&plugins, "well-behaved", "well-behaved", WELL_BEHAVED);
    plugin_dir(&plugins, "hooks", "hooks", HOOKS);
    let (base, key) = (llm.openai_base_url(), llm.api_key().to_owned());
    TestApp::start_configured(dir, url, |config| {
        config.llm_kind = Some("openai".to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("server-default".to_owned());
    })
    .await
}

fn system_prompt(request: &RecordedRequest) -> String {
    request.messages()[0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Posts `body` as a message and waits for the run to finish; returns the run.
async fn chat(app: &TestApp, sid: &str, body: Value) -> Value {
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let started = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&body)
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let id = started["id"].as_str().unwrap().to_owned();
    SseReader::new(stream)
        .until(|e| {
            (e.event == "run.completed" || e.event == "run.failed")
                && e.data["data"]["run_id"] == id
        })
        .await;
    json_of(
        app.get(&format!("/v1/runs/{id}")).send().await.unwrap(),
        200,
    )
    .await
}

async fn overrides_reach_the_model_request(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::text("ok"));
    let app = start(dir.path(), db, &llm).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "base", "system_prompt": "You help.",
                "model": {"model": "agent-model", "temperature": 0.7},
                "capabilities": [{"id": "well-behaved", "config": {"greeting": "Hi"}}]}),
        )
        .await;

    // Agent only.
    let plain = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    assert!(plain["overrides"].is_null(), "{plain}");
    let run = chat(&app, plain["id"].as_str().unwrap(), json!({"content": "a"})).await;
    let request = llm.requests().pop().unwrap();
    assert_eq!(request.model(), "agent-model");
    assert_eq!(request.body()["temperature"], 0.7);
    assert!(system_prompt(&request).starts_with("You help."));
    assert!(
        request
            .tool_names()
            .contains(&"well-behaved__greet".to_owned())
    );
    let config = &run["config"];
    assert_eq!(config["model"]["model"], "agent-model", "{run}");
    assert_eq!(
        config["model"]["max_steps"], 50,
        "the server default is resolved"
    );
    assert_eq!(config["capabilities"][0]["id"], "well-behaved");
    assert!(
        config["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("well-behaved__greet")),
        "{config}"
    );
    assert_eq!(config["system_prompt_sha256"].as_str().unwrap().len(), 64);

    // Session overrides: model field by field, appended instructions after the fragments,
    // one capability removed and another added.
    let overrides = json!({
        "model": {"model": "session-model", "max_tokens": 77},
        "system_prompt_append": "Answer in French.",
        "capabilities": [{"id": "well-behaved", "enabled": false}, {"id": "hooks"}],
    });
    let session = app
        .create(
            "/v1/sessions",
            json!({"agent_id": agent["id"], "overrides": overrides}),
        )
        .await;
    assert_eq!(session["overrides"], overrides);
    let sid = session["id"].as_str().unwrap().to_owned();
    let fetched = json_of(
        app.get(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(fetched["overrides"], overrides);
    let run = chat(&app, &sid, json!({"content": "b"})).await;
    let request = llm.requests().pop().unwrap();
    assert_eq!(request.model(), "session-model");
    assert_eq!(request.body()["temperature"], 0.7, "kept from the agent");
    assert_eq!(request.body()["max_tokens"], 77);
    let system = system_prompt(&request);
    assert!(
        system.starts_with("You help.") && system.ends_with("Answer in French."),
        "{system}"
    );
    let tools = request.tool_names();
    assert!(
        !tools.iter().any(|t| t.starts_with("well-behaved__")),
        "{tools:?}"
    );
    assert!(tools.contains(&"hooks__echo".to_owned()), "{tools:?}");
    assert_eq!(
        run["config"]["capabilities"],
        json!([{"id": "hooks", "config": {}}])
    );

    // Message overrides on top of the session's, for that run only.
    chat(
        &app,
        &sid,
        json!({"content": "c", "overrides": {"model": {"model": "message-model"},
            "system_prompt_append": "Be brief."}}),
    )
    .await;
    let request = llm.requests().pop().unwrap();
    assert_eq!(request.model(), "message-model");
    assert_eq!(
        request.body()["max_tokens"],
        77,
        "the session's still applies"
    );
    assert!(system_prompt(&request).ends_with("Answer in French.\n\nBe brief."));
    chat(&app, &sid, json!({"content": "d"})).await;
    assert_eq!(llm.requests().pop().unwrap().model(), "session-model");

    // PATCH replaces the overrides as a whole; null clears them.
    let patched = json_of(
        app.patch(&format!("/v1/sessions/{sid}"))
            .json(&json!({"overrides": {"model": {"temperature": 0.1}}}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(patched["overrides"], json!({"model": {"temperature": 0.1}}));
    let cleared = json_of(
        app.patch(&format!("/v1/sessions/{sid}"))
            .json(&json!({"title": "kept", "overrides": null}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(cleared["overrides"].is_null(), "{cleared}");
    let untouched = json_of(
        app.patch(&format!("/v1/sessions/{sid}"))
            .json(&json!({"title": "renamed"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(untouched["overrides"].is_null());
    chat(&app, &sid, json!({"content": "e"})).await;
    assert_eq!(llm.requests().pop().unwrap().model(), "agent-model");
    app.stop().await;
}

/// A run keeps the configuration it was created with when the agent is edited while it runs.
async fn a_run_keeps_its_configuration_when_the_agent_changes(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    // A tool call that takes a while, then an answer: the agent is edited in between.
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            Reply::text("done")
        } else {
            Reply::tool_call("hooks__slow_bump", json!({"ms": 1500}))
        }
    });
    let app = start(dir.path(), db, &llm).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "edited", "system_prompt": "Old prompt.",
                "model": {"model": "old-model"}, "capabilities": [{"id": "hooks"}]}),
        )
        .await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let aid = agent["id"].as_str().unwrap().to_owned();
    let edit = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let response = app
            .patch(&format!("/v1/agents/{aid}"))
            .json(
                &json!({"system_prompt": "New prompt.", "model": {"model": "new-model"},
                "capabilities": []}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };
    let (run, ()) = tokio::join!(chat(&app, &sid, json!({"content": "go"})), edit);
    assert_eq!(run["status"], "completed", "{run}");
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.model(), "old-model");
        assert!(system_prompt(request).starts_with("Old prompt."));
        assert!(
            request
                .tool_names()
                .contains(&"hooks__slow_bump".to_owned())
        );
    }
    assert_eq!(run["config"]["model"]["model"], "old-model");
    // The next run uses the edited agent.
    chat(&app, &sid, json!({"content": "again"})).await;
    let request = llm.requests().pop().unwrap();
    assert_eq!(request.model(), "new-model");
    assert!(request.tool_names().is_empty());
    app.stop().await;
}

/// Every bad override is a 422 naming its field; nothing is stored.
async fn bad_overrides_name_the_field(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let app = start(dir.path(), db, &llm).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "strict", "capabilities": [{"id": "well-behaved"}]}),
        )
        .await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let cases = [
        (
            json!({"capabilities": [{"id": "nope"}]}),
            "overrides.capabilities[0].id",
        ),
        (
            json!({"capabilities": [{"id": "hooks"}, {"id": "well-behaved", "config": {"greeting": 5}}]}),
            "overrides.capabilities[1].config.greeting",
        ),
        (
            json!({"model": {"provider": "missing"}}),
            "overrides.model.provider",
        ),
        (
            json!({"model": {"temperature": 3}}),
            "overrides.model.temperature",
        ),
        (
            json!({"model": {"max_steps": 0}}),
            "overrides.model.max_steps",
        ),
        (
            json!({"capabilities": [{"id": "hooks"}, {"id": "hooks", "enabled": false}]}),
            "overrides.capabilities[1].id",
        ),
        (
            json!({"system_prompt_append": "a\u{0}b"}),
            "overrides.system_prompt_append",
        ),
    ];
    for (overrides, field) in cases {
        for (method, path, body) in [
            (
                "POST",
                "/v1/sessions".to_owned(),
                json!({"agent_id": agent["id"], "overrides": overrides}),
            ),
            (
                "PATCH",
                format!("/v1/sessions/{sid}"),
                json!({"overrides": overrides}),
            ),
            (
                "POST",
                format!("/v1/sessions/{sid}/messages"),
                json!({"content": "x", "overrides": overrides}),
            ),
        ] {
            let request = match method {
                "POST" => app.post(&path),
                _ => app.patch(&path),
            };
            let problem = json_of(request.json(&body).send().await.unwrap(), 422).await;
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert!(
                fields.contains(&field),
                "{method} {path} {overrides}: {problem}"
            );
        }
    }
    // Nothing was stored: one session, no overrides, no run.
    let sessions = json_of(app.get("/v1/sessions").send().await.unwrap(), 200).await;
    assert_eq!(sessions["total"], 1, "{sessions}");
    assert!(sessions["data"][0]["overrides"].is_null());
    let runs = json_of(
        app.get(&format!("/v1/sessions/{sid}/runs"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(runs["total"], 0, "{runs}");

    // An idempotency key names one request: the same key with other overrides or content is
    // refused; the same request again gets the same run.
    llm.set_fallback(|_| Reply::text("ok"));
    let post = |body: Value| {
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .header("idempotency-key", "once")
            .json(&body)
    };
    let first = json_of(
        post(json!({"content": "x", "overrides": {"model": {"model": "m1"}}}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let again = json_of(
        post(json!({"content": "x", "overrides": {"model": {"model": "m1"}}}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(first["id"], again["id"]);
    for (body, field) in [
        (
            json!({"content": "x", "overrides": {"model": {"model": "m2"}}}),
            "overrides",
        ),
        (json!({"content": "x"}), "overrides"),
        (
            json!({"content": "y", "overrides": {"model": {"model": "m1"}}}),
            "content",
        ),
    ] {
        let problem = json_of(post(body.clone()).send().await.unwrap(), 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    app.stop().await;
}
