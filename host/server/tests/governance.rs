//! Resource governance through the real server: API key roles against every operation of the
//! OpenAPI document, per-key request and run-start rate limits, event stream caps per key
//! and per process, the request deadline, idle connections, plugin key-value quotas (a
//! hostile plugin flooding its state, on both stores, across a restart) and run budgets.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use everruns_testkit::guests::{HOSTILE, WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, Reply, TestApp, TestDb, json_of};
use serde_json::{Value, json};

mod common;

const ROLES: [&str; 3] = ["reader", "operator", "admin"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

/// The role the rules give an operation: API keys, providers and secrets are admin's;
/// changing capabilities is admin's; other reads are reader's; other changes operator's.
fn expected_role(method: &str, tags: &[&str]) -> &'static str {
    let reads = method == "get";
    if tags
        .iter()
        .any(|t| ["api-keys", "providers", "secrets"].contains(t))
        || (!reads && tags.contains(&"capabilities"))
    {
        "admin"
    } else if reads {
        "reader"
    } else {
        "operator"
    }
}

/// Points `config`'s default provider at the fake LLM.
fn talk_to(config: &mut everruns_server::Config, llm: &FakeLlm) {
    config.llm_kind = Some("openai".into());
    config.llm_base_url = Some(llm.openai_base_url());
    config.llm_api_key = Some(llm.api_key().to_owned().into());
    config.llm_model = Some("fake-model".into());
}

/// A key of `role` named `name`, created by the admin key.
async fn key_of(app: &TestApp, name: &str, role: &str) -> String {
    let created = app
        .create("/v1/api-keys", json!({"name": name, "role": role}))
        .await;
    assert_eq!(created["role"], role);
    created["key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_meets_every_operation_as_the_document_says() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path(), None).await;
    let keys = [
        key_of(&app, "reader-key", "reader").await,
        key_of(&app, "operator-key", "operator").await,
        app.api_key.clone(),
    ];
    let doc = json_of(
        app.client
            .get(app.url("/api-doc/openapi.json"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["security"] == json!([{}]) || operation["security"] == json!([]) {
                continue; // open to everyone (health)
            }
            let tags: Vec<&str> = operation["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let stated = operation["x-required-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} states no role"));
            assert_eq!(stated, expected_role(method, &tags), "{method} {path}");
            assert!(
                operation["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("Required role: `{stated}`"))),
                "{method} {path} says its role in its description"
            );
            for code in ["403", "429", "503"] {
                assert!(
                    operation["responses"][code].is_object(),
                    "{method} {path} documents {code}"
                );
            }
            // Path parameters get ids that exist nowhere: an allowed call answers 404 or 422,
            // never 403.
            let url = path
                .split('/')
                .map(|part| {
                    if part.starts_with('{') {
                        "missing-0"
                    } else {
                        part
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            for (role, key) in ROLES.iter().zip(&keys) {
                let request = app
                    .client
                    .request(method.to_uppercase().parse().unwrap(), app.url(&url))
                    .bearer_auth(key);
                let request = if method == "get" || method == "delete" {
                    request
                } else {
                    request.json(&json!({}))
                };
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                if rank(role) < rank(stated) {
                    let problem = json_of(response, 403).await;
                    let detail = problem["detail"].as_str().unwrap();
                    assert!(
                        detail.contains(&format!("needs the `{stated}` role"))
                            && detail.contains(&format!("is `{role}`")),
                        "{method} {path} as {role}: {detail}"
                    );
                } else {
                    assert_ne!(status, 403, "{method} {path} as {role}");
                    assert_ne!(status, 401, "{method} {path} as {role}");
                }
                checked += 1;
            }
        }
    }
    assert!(
        checked > 90,
        "only {checked} checks: the document lost operations"
    );

    // `/v1/me` tells a key its role; a reader cannot create keys, agents or messages.
    let me = json_of(
        app.client
            .get(app.url("/v1/me"))
            .bearer_auth(&keys[0])
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("reader-key"), Some("reader"))
    );
    let listed = json_of(app.get("/v1/api-keys").send().await.unwrap(), 200).await;
    let roles: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "admin").count(),
        1,
        "{roles:?}"
    );
    let bad = json_of(
        app.post("/v1/api-keys")
            .json(&json!({"name": "x", "role": "root"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "role", "{bad}");
    // Without a role, a new key is an operator.
    let default = app.create("/v1/api-keys", json!({"name": "plain"})).await;
    assert_eq!(default["role"], "operator");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_run_start_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::text("ok"));
    let app = TestApp::start_configured(dir.path(), None, |config| {
        talk_to(config, &llm);
        config.rate_limit_per_key = 5;
        config.run_start_limit_per_key = 1;
    })
    .await;
    let other = key_of(&app, "other", "operator").await; // 1 request of the admin's bucket
    // A burst of twice the rate passes; the next request is refused.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(app.get("/v1/agents").send().await.unwrap());
    }
    let refused = statuses
        .into_iter()
        .find(|r| r.status() == 429)
        .expect("a burst past twice the rate is refused");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let problem = json_of(refused, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("more than 5 requests per second"),
        "{problem}"
    );
    // Another key has its own bucket.
    let response = app
        .client
        .get(app.url("/v1/agents"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Run starts: one a second, bursts of two; the other key's requests carry on.
    let post = |sid: String| {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/sessions/{sid}/messages"));
        let key = other.clone();
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"content": "hi"}))
                .send()
                .await
                .unwrap()
        }
    };
    let agent = json_of(
        app.client
            .post(app.url("/v1/agents"))
            .bearer_auth(&other)
            .json(&json!({"name": "a", "system_prompt": "x"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let session = json_of(
            app.client
                .post(app.url("/v1/sessions"))
                .bearer_auth(&other)
                .json(&json!({"agent_id": agent["id"]}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        sessions.push(session["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(post(sessions[0].clone()).await.status(), 202);
    assert_eq!(post(sessions[1].clone()).await.status(), 202);
    let refused = post(sessions[2].clone()).await;
    assert!(refused.headers().contains_key("retry-after"));
    let problem = json_of(refused, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("run starts per second"),
        "{problem}"
    );
    // Nothing was started by the refused request.
    let runs = json_of(
        app.client
            .get(app.url(&format!("/v1/sessions/{}/runs", sessions[2])))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(runs["total"], 0, "{runs}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(sessions[2].clone()).await.status(),
        202,
        "after the wait"
    );
    app.stop().await;
}

/// Opens an event stream of `sid` with `key`.
async fn open_stream(app: &TestApp, key: &str, sid: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/sessions/{sid}/events")))
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_key_and_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_configured(dir.path(), None, |config| {
        config.max_streams_per_key = 2;
        config.max_streams = 3;
    })
    .await;
    let sid = app
        .session_with(json!({"name": "a", "system_prompt": "x"}))
        .await;
    let (a, b) = (
        key_of(&app, "a", "reader").await,
        key_of(&app, "b", "reader").await,
    );
    let first = open_stream(&app, &a, &sid).await;
    let second = open_stream(&app, &a, &sid).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = open_stream(&app, &a, &sid).await;
    assert!(refused.headers().contains_key("retry-after"));
    let problem = json_of(refused, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("max_streams_per_key")
    );
    // Another key is not held back by the first one's cap ...
    let third = open_stream(&app, &b, &sid).await;
    assert_eq!(third.status(), 200);
    // ... until the process holds all it may.
    let full = open_stream(&app, &b, &sid).await;
    assert!(full.headers().contains_key("retry-after"));
    let problem = json_of(full, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("max_streams"));
    // A closed stream frees its place (the server notices the client left).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = open_stream(&app, &a, &sid).await;
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a closed stream kept its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Plain requests are not streams.
    assert_eq!(app.get("/v1/agents").send().await.unwrap().status(), 200);
    drop((second, third));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_deadline_gets_503_and_idle_connections_are_closed() {
    // A "provider" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(held);
    });
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_configured(dir.path(), None, |config| {
        config.request_timeout_ms = 500;
        config.idle_timeout_ms = 400;
    })
    .await;
    let provider = app
        .create(
            "/v1/providers",
            json!({"name": "silent", "kind": "openai",
                   "base_url": format!("http://127.0.0.1:{silent_port}/v1"), "api_key": "k"}),
        )
        .await;
    let started = Instant::now();
    let response = app
        .post(&format!(
            "/v1/providers/{}/test",
            provider["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let problem = json_of(response, 503).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("500 ms"),
        "{problem}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A kept-alive connection that sends nothing more is closed after the idle bound.
    let mut tcp = std::net::TcpStream::connect(app.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle = Instant::now();
    let closed = tcp.read(&mut buf).unwrap();
    assert_eq!(closed, 0, "the server closes the idle connection");
    assert!(
        idle.elapsed() < Duration::from_secs(4),
        "{:?}",
        idle.elapsed()
    );
    // So is one that never sends a request.
    let mut silent_client = std::net::TcpStream::connect(app.addr).unwrap();
    silent_client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(silent_client.read(&mut buf).unwrap(), 0);
    app.stop().await;
}

/// A server with the hostile plugin allowed key-value state (agent scope) and `configure`d.
async fn hostile_kv_app(dir: &Path, db: Option<&TestDb>, llm: &FakeLlm) -> TestApp {
    let manifest = HOSTILE
        .replace(
            "secrets = [\"GRANTED\"]",
            "secrets = [\"GRANTED\"]\nkv = true\nkv_scope = \"agent\"",
        )
        .replace(
            "timeout_ms = 1000",
            "timeout_ms = 20000\nkv_max_keys = 1000",
        );
    plugin_dir(&dir.join("plugins"), "hostile", "hostile", &manifest);
    TestApp::start_configured(dir, db.map(TestDb::url), |config| {
        talk_to(config, llm);
        // The operator's ceiling is below what the manifest asks for: it wins.
        config.plugin_kv_max_keys = 25;
        config.plugin_kv_max_bytes = 1_000_000;
    })
    .await
}

/// Posts `content` to `sid` and waits for the run to end; returns the run.
async fn run_to_end(app: &TestApp, sid: &str, content: &str) -> Value {
    let run = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = json_of(
            app.get(&format!("/v1/runs/{id}")).send().await.unwrap(),
            200,
        )
        .await;
        if ["completed", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
            return run;
        }
        assert!(Instant::now() < deadline, "the run did not end: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The flood tool's report in the run's (only) tool step.
fn flood_report(run: &Value) -> Value {
    let step = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "tool")
        .unwrap_or_else(|| panic!("no tool step: {run}"));
    let text = step["output"]["output"]
        .as_str()
        .or_else(|| step["output"]["text"].as_str())
        .unwrap_or_else(|| panic!("no tool output: {step}"));
    serde_json::from_str(text).unwrap()
}

async fn a_hostile_plugin_stops_at_its_quota(db: Option<&TestDb>) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            Reply::text(request.tool_results()[0].1.clone())
        } else {
            Reply::tool_call("hostile__kv-flood", json!({"bytes": 100}))
        }
    });
    let app = hostile_kv_app(dir.path(), db, &llm).await;
    let capability = json_of(
        app.get("/v1/capabilities/hostile").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(
        capability["limits"]["kv_quota"],
        json!({"max_keys": 25, "max_bytes": 1_000_000}),
        "the operator's ceiling caps the manifest's 1000"
    );
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "flooder", "system_prompt": "x", "capabilities": [{"id": "hostile"}]}),
        )
        .await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let sid = app
        .create("/v1/sessions", json!({"agent_id": agent_id}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = run_to_end(&app, &sid, "flood").await;
    assert_eq!(run["status"], "completed", "{run}");
    let report = flood_report(&run);
    assert_eq!(report["written"], 25, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("TooLarge") && error.contains("quota exceeded") && error.contains("25 keys"),
        "{error}"
    );
    // The model saw the plugin's report, error included.
    assert!(
        llm.requests()[1].tool_results()[0]
            .1
            .contains("quota exceeded")
    );

    // After a restart the state is still at its quota: nothing more goes in.
    let app = app.restart().await;
    let sid2 = app
        .create("/v1/sessions", json!({"agent_id": agent_id}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = run_to_end(&app, &sid2, "flood again").await;
    let report = flood_report(&run);
    assert_eq!(report["written"], 0, "{report}");
    assert!(report["error"].as_str().unwrap().contains("quota exceeded"));
    app.stop().await;

    // `everruns plugin usage` reports what the owner holds: 25 keys of 14 + 100 bytes.
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("--data-dir").arg(dir.path());
    for var in ["DATABASE_URL", "EVERRUNS_DATABASE_URL", "EVERRUNS_CONFIG"] {
        cmd.env_remove(var);
    }
    if let Some(db) = db {
        cmd.env("DATABASE_URL", db.url())
            .env("EVERRUNS_SECRET_KEY", everruns_testkit::TEST_SECRET_KEY);
    }
    let out = cmd
        .args(["plugin", "usage", "hostile"])
        .env("EVERRUNS_PLUGIN_KV_MAX_KEYS", "25")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("agent:{agent_id}")))
        .unwrap_or_else(|| panic!("no line for the agent: {stdout}"));
    let numbers: Vec<&str> = line.split_whitespace().skip(1).collect();
    assert_eq!(numbers, ["25", "2850"], "{stdout}");
    assert!(stdout.contains("quota per owner: 25 keys"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_stops_at_its_quota_on_sqlite() {
    a_hostile_plugin_stops_at_its_quota(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_stops_at_its_quota_on_postgres() {
    let db = TestDb::postgres().await;
    a_hostile_plugin_stops_at_its_quota(Some(&db)).await;
    db.cleanup().await;
}

/// A server with the well-behaved plugin whose model calls `ping` forever, each answer
/// reporting 100 input and 20 output tokens.
async fn looping_app(dir: &Path, db: Option<&TestDb>, llm: &FakeLlm) -> TestApp {
    plugin_dir(
        &dir.join("plugins"),
        "well-behaved",
        "well-behaved",
        WELL_BEHAVED,
    );
    llm.set_fallback(|_| Reply::tool_call("well-behaved__ping", json!({})).with_usage(100, 20));
    TestApp::start_configured(dir, db.map(TestDb::url), |config| talk_to(config, llm)).await
}

async fn budget_run(app: &TestApp, model: Value, session_model: Option<Value>) -> Value {
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": format!("looper-{}", uuid_ish()), "system_prompt": "x",
                   "model": model, "capabilities": [{"id": "well-behaved"}]}),
        )
        .await;
    let mut session = json!({"agent_id": agent["id"]});
    if let Some(model) = session_model {
        session["overrides"] = json!({"model": model});
    }
    let sid = app.create("/v1/sessions", session).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run_to_end(app, &sid, "loop").await
}

fn uuid_ish() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn steps_of(run: &Value, kind: &str) -> usize {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind)
        .count()
}

async fn each_budget_ends_a_run_naming_it(db: Option<&TestDb>) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let app = looping_app(dir.path(), db, &llm).await;

    // Tokens: 120 per model call; a budget of 300 is reached after the third call.
    let run = budget_run(&app, json!({"max_tokens_per_run": 300}), None).await;
    assert_eq!(run["status"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("token budget of 300 (max_tokens_per_run)")
            && error.contains("360 tokens spent in 3 model calls"),
        "{error}"
    );
    assert_eq!(
        (steps_of(&run, "llm"), steps_of(&run, "tool")),
        (3, 3),
        "the journal up to the budget is kept"
    );

    // Tool calls, set by the session's override over the agent's.
    let run = budget_run(
        &app,
        json!({"max_tool_calls_per_run": 50}),
        Some(json!({"max_tool_calls_per_run": 2})),
    )
    .await;
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("tool call budget of 2 (max_tool_calls_per_run)")
            && error.contains("2 tool calls made, and the model asked for 1 more"),
        "{error}"
    );
    assert_eq!(steps_of(&run, "tool"), 2);
    assert_eq!(
        run["config"]["model"]["max_tool_calls_per_run"], 2,
        "recorded"
    );

    // Time: each model answer takes 400 ms; a 1 s budget stops the run within a few steps.
    llm.set_fallback(|_| {
        Reply::tool_call("well-behaved__ping", json!({}))
            .stall_before_headers(Duration::from_millis(400))
    });
    let run = budget_run(&app, json!({"max_duration_seconds": 1}), None).await;
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("time budget of 1 s (max_duration_seconds)"),
        "{error}"
    );
    assert!(steps_of(&run, "llm") <= 4, "{run}");

    // A bad budget is a 422 naming the field.
    let bad = json_of(
        app.post("/v1/agents")
            .json(&json!({"name": "bad", "system_prompt": "x",
                          "model": {"max_tool_calls_per_run": 0}}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "model.max_tool_calls_per_run");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_budget_ends_a_run_naming_it_on_sqlite() {
    each_budget_ends_a_run_naming_it(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_budget_ends_a_run_naming_it_on_postgres() {
    let db = TestDb::postgres().await;
    each_budget_ends_a_run_naming_it(Some(&db)).await;
    db.cleanup().await;
}
