//! Providers and secrets through the real server: a run uses the provider its agent names
//! (key opened from the database, sent to the fake LLM), a plugin reads a secret stored through
//! `/v1/secrets`, edits and deletes reach the executor, start-up refuses wrong or missing
//! master keys, and `everruns secrets rotate` re-seals everything.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use everruns_server::{Config, Server};
use everruns_testkit::guests::plugin_dir;
use everruns_testkit::{
    FAKE_LLM_API_KEY, FakeLlm, Reply, SseReader, TEST_SECRET_KEY, TestApp, TestDb, json_of,
};
use secrecy::SecretString;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_everruns");

/// The hostile test plugin: its `secret` tool reads a secret and answers `len=N`; it is
/// granted `GRANTED` only.
const HOSTILE: &str = r#"
id = "hostile"
version = "0.1.0"
description = "Misbehaves on request"
component = "plugin.wasm"

[permissions]
secrets = ["GRANTED"]

[limits]
memory_mib = 16
timeout_ms = 5000
"#;

/// Sends a message and follows the session's events until the run ends; returns the final
/// event's type and data.
async fn run_to_end(app: &TestApp, session: &str, content: &str) -> (String, Value) {
    let after = json_of(
        app.get(&format!("/v1/sessions/{session}/events?since=0&limit=500"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let since = after["data"].as_array().map_or(0, |events| {
        events.last().map_or(0, |e| e["seq"].as_i64().unwrap())
    });
    json_of(
        app.post(&format!("/v1/sessions/{session}/messages"))
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    let response = app
        .get(&format!("/v1/sessions/{session}/events?since={since}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let last = SseReader::new(response)
        .until(|e| matches!(e.event.as_str(), "run.completed" | "run.failed"))
        .await
        .pop()
        .expect("the run ended");
    (last.event, last.data)
}

async fn a_run_uses_the_provider_its_agent_names(db: Option<&TestDb>) {
    let dir = tempfile::tempdir().unwrap();
    plugin_dir(&dir.path().join("plugins"), "hostile", "hostile", HOSTILE);
    let llm = FakeLlm::start().await;
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            Reply::text(format!("plugin: {}", request.tool_results()[0].1))
        } else {
            Reply::tool_call("hostile__secret", json!({"name": "GRANTED"}))
        }
    });
    // No EVERRUNS_LLM_* default: the run can only work through the stored provider.
    let app = TestApp::start_configured(dir.path(), db.map(|d| d.url()), |c| {
        c.executor_lease_ms = 2_000;
    })
    .await;

    let provider = app
        .create(
            "/v1/providers",
            json!({
                "name": "fake", "kind": "openai", "base_url": llm.openai_base_url(),
                "api_key": FAKE_LLM_API_KEY, "default_model": "fake-model",
            }),
        )
        .await;
    let pid = provider["id"].as_str().unwrap();
    json_of(
        app.put("/v1/secrets/GRANTED")
            .json(&json!({"value": "nineteen-characters"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let agent = app
        .create(
            "/v1/agents",
            json!({
                "name": "a", "model": {"provider": "fake"},
                "capabilities": [{"id": "hostile"}],
            }),
        )
        .await;
    let session = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await;
    let sid = session["id"].as_str().unwrap();

    let (event, data) = run_to_end(&app, sid, "read it").await;
    assert_eq!(event, "run.completed", "{data}");
    // The plugin read the value stored through /v1/secrets (19 bytes), and the fake LLM saw
    // the stored key on every call.
    assert_eq!(data["data"]["text"], "plugin: len=19", "{data}");
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.auth_ok && r.model() == "fake-model")
    );

    // A new key reaches the executor at once (its cached client is rebuilt).
    json_of(
        app.patch(&format!("/v1/providers/{pid}"))
            .json(&json!({"api_key": "sk-revoked-0123456789"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let (event, data) = run_to_end(&app, sid, "again").await;
    assert_eq!(event, "run.failed", "{data}");
    let error = data["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("invalid API key"),
        "{error}"
    );
    assert!(!error.contains("sk-revoked"), "{error}");
    assert!(!llm.requests().last().unwrap().auth_ok);

    // A deleted provider fails the run clearly.
    json_of(
        app.delete(&format!("/v1/providers/{pid}"))
            .send()
            .await
            .unwrap(),
        204,
    )
    .await;
    let (event, data) = run_to_end(&app, sid, "and again").await;
    assert_eq!(event, "run.failed");
    let error = data["data"]["error"].as_str().unwrap();
    assert!(error.contains("provider `fake` does not exist"), "{error}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_uses_the_provider_its_agent_names_on_sqlite() {
    a_run_uses_the_provider_its_agent_names(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_uses_the_provider_its_agent_names_on_postgres() {
    let db = TestDb::postgres().await;
    a_run_uses_the_provider_its_agent_names(Some(&db)).await;
    db.cleanup().await;
}

/// The configuration TestApp uses, for building servers that must fail to start.
fn config(dir: &Path, db: Option<&TestDb>, key: Option<&str>) -> Config {
    Config {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.to_path_buf(),
        database_url: db.map(|d| SecretString::from(d.url().to_owned())),
        bootstrap_api_key: Some(SecretString::from(
            everruns_testkit::TEST_API_KEY.to_owned(),
        )),
        secret_key: key.map(|k| SecretString::from(k.to_owned())),
        ..Config::default()
    }
}

async fn start_error(config: &Config) -> String {
    match Server::build(config).await {
        Ok(_) => panic!("the server started"),
        Err(e) => format!("{e:#}"),
    }
}

async fn create_provider_and_secret(app: &TestApp) {
    app.create("/v1/providers", json!({"name": "p", "kind": "anthropic",
                          "base_url": "https://api.anthropic.com/v1", "api_key": "sk-ant-1234567890"})).await;
    json_of(
        app.put("/v1/secrets/S")
            .json(&json!({"value": "v"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_wrong_or_missing_key() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path(), Some(db.url())).await;
    create_provider_and_secret(&app).await;
    app.stop().await;

    let wrong = everruns_secrets::MasterKey::generate("test").unwrap();
    let err = start_error(&config(
        dir.path(),
        Some(&db),
        Some(wrong.encode().as_str()),
    ))
    .await;
    assert!(
        err.contains("cannot be decrypted") && err.contains("key is wrong"),
        "{err}"
    );
    let other = everruns_secrets::MasterKey::generate("other").unwrap();
    let err = start_error(&config(
        dir.path(),
        Some(&db),
        Some(other.encode().as_str()),
    ))
    .await;
    assert!(
        err.contains("master key `test`, which is not configured"),
        "{err}"
    );
    let err = start_error(&config(dir.path(), Some(&db), None)).await;
    assert!(err.contains("EVERRUNS_SECRET_KEY is not set"), "{err}");
    let err = start_error(&config(dir.path(), Some(&db), Some("test:tooshort"))).await;
    assert!(
        err.contains("EVERRUNS_SECRET_KEY") && !err.contains("tooshort"),
        "{err}"
    );
    // The right key, given as the previous one after a new current key, still opens them.
    let mut rotated = config(dir.path(), Some(&db), Some(other.encode().as_str()));
    rotated.secret_key_previous = Some(SecretString::from(TEST_SECRET_KEY.to_owned()));
    drop(
        Server::build(&rotated)
            .await
            .expect("starts with the previous key"),
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_key_file_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path(), None).await;
    create_provider_and_secret(&app).await;
    let app = app.restart().await;
    json_of(app.get("/v1/secrets/S").send().await.unwrap(), 200).await;
    app.stop().await;

    let file = dir.path().join("secret.key");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = start_error(&config(dir.path(), None, None)).await;
    assert!(err.contains("chmod 600"), "{err}");
}

fn everruns(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).args(args).current_dir(dir);
    for var in [
        "DATABASE_URL",
        "EVERRUNS_DATABASE_URL",
        "EVERRUNS_SECRET_KEY",
        "EVERRUNS_SECRET_KEY_PREVIOUS",
    ] {
        cmd.env_remove(var);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_reseals_everything_under_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(dir.path(), None).await;
    create_provider_and_secret(&app).await;
    app.stop().await;
    let old = std::fs::read_to_string(dir.path().join("secret.key")).unwrap();
    let old = old.trim();

    let (ok, new, _) = everruns(dir.path(), &["secrets", "generate-key", "--id", "k2"], &[]);
    assert!(ok);
    let new = new.trim();
    assert!(new.starts_with("k2:") && new.len() == 3 + 44, "{new}");

    // With only the new key, the old values are unreadable: start-up says which key is missing.
    let err = start_error(&config(dir.path(), None, Some(new))).await;
    assert!(err.contains("which is not configured"), "{err}");

    let env = [
        ("EVERRUNS_SECRET_KEY", new),
        ("EVERRUNS_SECRET_KEY_PREVIOUS", old),
    ];
    let (ok, out, err) = everruns(dir.path(), &["secrets", "rotate"], &env);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("providers: 1 re-sealed, 0 already under `k2`"),
        "{out}"
    );
    assert!(
        out.contains("secrets: 1 re-sealed, 0 already under `k2`"),
        "{out}"
    );
    assert!(out.contains("secret `S`: `local-"), "{out}");
    // Idempotent.
    let (ok, out, _) = everruns(dir.path(), &["secrets", "rotate"], &env);
    assert!(ok);
    assert!(
        out.contains("providers: 0 re-sealed, 1 already under `k2`"),
        "{out}"
    );
    assert!(
        out.contains("secrets: 0 re-sealed, 1 already under `k2`"),
        "{out}"
    );

    // Now the new key alone opens everything.
    let app = TestApp::start_configured(dir.path(), None, |c| {
        c.secret_key = Some(SecretString::from(new.to_owned()));
    })
    .await;
    json_of(app.get("/v1/secrets/S").send().await.unwrap(), 200).await;
    app.stop().await;

    // A key that opens nothing fails the rotation with a count.
    let stranger = everruns_secrets::MasterKey::generate("k3").unwrap();
    let (ok, out, err) = everruns(
        dir.path(),
        &["secrets", "rotate"],
        &[("EVERRUNS_SECRET_KEY", stranger.encode().as_str())],
    );
    assert!(!ok);
    assert!(err.contains("2 values could not be opened"), "{out}\n{err}");
    assert!(
        err.contains("master key `k2`, which is not configured"),
        "{err}"
    );
}
