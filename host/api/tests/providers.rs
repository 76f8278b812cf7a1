//! `/v1/providers` and `/v1/secrets` over HTTP on both backends: CRUD, validation, 404s, agents
//! naming providers, the connection test against the fake LLM, and that neither an API key nor
//! a secret value ever appears in a response body or in the database.

mod support;

use std::path::Path;

use everruns_testkit::{FAKE_LLM_API_KEY, FakeLlm};
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use support::{Backend, Harness};

/// Plaintexts that must never come back: provider keys and a secret value.
const KEY_1: &str = "sk-unit-PLAINTEXT-key-one-9f8e7d6c5b4a";
const KEY_2: &str = "sk-unit-PLAINTEXT-key-two-0a1b2c3d4e5f";
const SECRET_VALUE: &str = "ghp_PLAINTEXT_secret_value_5566778899";

/// Sends requests and keeps every response body, to search them all at the end.
#[derive(Default)]
struct Recorder {
    bodies: Vec<String>,
}

impl Recorder {
    async fn send(&mut self, request: RequestBuilder, status: u16) -> Value {
        let response = request.send().await.expect("request");
        let got = response.status().as_u16();
        let is_problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json");
        let text = response.text().await.expect("body");
        self.bodies.push(text.clone());
        assert_eq!(got, status, "unexpected status; body: {text}");
        assert_eq!(
            is_problem,
            status >= 400,
            "problem+json exactly for errors: {text}"
        );
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        }
    }

    /// Sends a request that must fail with 422 naming `field`.
    async fn invalid(&mut self, request: RequestBuilder, field: &str) {
        let body = self.send(request, 422).await;
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "expected `{field}` in {body}");
    }

    fn assert_never_contains(&self, needles: &[&str]) {
        for body in &self.bodies {
            for needle in needles {
                assert!(
                    !body.contains(needle),
                    "a response revealed a secret: {body}"
                );
                // Nor any long piece of it (say, all but the last 4 characters).
                assert!(!body.contains(&needle[..needle.len() - 4]), "{body}");
            }
        }
    }
}

/// Every byte the database keeps, as text: the SQLite files (WAL included) read raw, or on
/// PostgreSQL every row of every table as JSON.
async fn database_dump(h: &Harness) -> String {
    match &h.db {
        None => dump_files(h.dir.path()),
        Some(db) => {
            let pool = sqlx::PgPool::connect(db.url()).await.expect("connect");
            let mut dump = String::new();
            for table in ["providers", "secrets", "agents", "api_keys", "plugin_kv"] {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                        .fetch_all(&pool)
                        .await
                        .expect("dump");
                dump.push_str(&rows.join("\n"));
            }
            pool.close().await;
            dump
        }
    }
}

fn dump_files(dir: &Path) -> String {
    let mut dump = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("everruns.db") {
            dump.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        dump.contains("CREATE TABLE providers"),
        "read the database file"
    );
    dump
}

fn provider_body(name: &str, key: &str) -> Value {
    json!({
        "name": name,
        "kind": "openai",
        "base_url": "https://llm.example.com/v1",
        "api_key": key,
        "default_model": "gpt-x",
        "models": ["gpt-x", "gpt-y"],
    })
}

async fn providers_crud_without_ever_showing_the_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let app = &h.app;
    let mut r = Recorder::default();

    let created = r
        .send(
            app.post("/v1/providers")
                .json(&provider_body("main", KEY_1)),
            201,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("prv_"), "{created}");
    assert_eq!(created["name"], "main");
    assert_eq!(created["kind"], "openai");
    assert_eq!(created["base_url"], "https://llm.example.com/v1");
    assert_eq!(created["default_model"], "gpt-x");
    assert_eq!(created["models"], json!(["gpt-x", "gpt-y"]));
    assert_eq!(created["api_key_hint"], "…5b4a");
    assert!(created.get("api_key").is_none(), "{created}");
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());

    let read = r.send(app.get(&format!("/v1/providers/{id}")), 200).await;
    assert_eq!(read, created);
    let list = r.send(app.get("/v1/providers"), 200).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0], created);
    assert!(list["next_cursor"].is_null());

    // PATCH: any subset; `default_model: null` clears it; a new key changes the hint.
    let patched = r
        .send(
            app.patch(&format!("/v1/providers/{id}"))
                .json(&json!({"name": "renamed", "models": ["m1"], "default_model": null})),
            200,
        )
        .await;
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["models"], json!(["m1"]));
    assert!(patched["default_model"].is_null());
    assert_eq!(patched["api_key_hint"], "…5b4a");
    assert_eq!(patched["base_url"], created["base_url"]);
    let rekeyed = r
        .send(
            app.patch(&format!("/v1/providers/{id}"))
                .json(&json!({"api_key": KEY_2, "kind": "anthropic"})),
            200,
        )
        .await;
    assert_eq!(rekeyed["api_key_hint"], "…4e5f");
    assert_eq!(rekeyed["kind"], "anthropic");
    assert_eq!(rekeyed["name"], "renamed");
    let short = r
        .send(
            app.patch(&format!("/v1/providers/{id}"))
                .json(&json!({"api_key": "abc1234"})),
            200,
        )
        .await;
    assert_eq!(short["api_key_hint"], "…", "short keys show nothing");
    r.send(
        app.patch(&format!("/v1/providers/{id}"))
            .json(&json!({"api_key": KEY_2})),
        200,
    )
    .await;

    // Duplicate names conflict, on create and on rename.
    let other = r
        .send(
            app.post("/v1/providers")
                .json(&provider_body("other", KEY_1)),
            201,
        )
        .await;
    let dup = r
        .send(
            app.post("/v1/providers")
                .json(&provider_body("renamed", KEY_1)),
            409,
        )
        .await;
    assert!(dup["detail"].as_str().unwrap().contains("renamed"), "{dup}");
    r.send(
        app.patch(&format!("/v1/providers/{}", other["id"].as_str().unwrap()))
            .json(&json!({"name": "renamed"})),
        409,
    )
    .await;

    // Validation names the field, and never repeats the key.
    let mut bad = provider_body("x", KEY_1);
    bad["kind"] = json!("mistral");
    r.invalid(app.post("/v1/providers").json(&bad), "kind")
        .await;
    for url in [
        "ftp://llm.example.com",
        "not a url",
        "https://",
        "http://u:p@h/v1",
        "http://h/v1?q=1",
    ] {
        let mut bad = provider_body("x", KEY_1);
        bad["base_url"] = json!(url);
        r.invalid(app.post("/v1/providers").json(&bad), "base_url")
            .await;
    }
    for name in ["", "  padded ", "prv_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f"] {
        r.invalid(
            app.post("/v1/providers").json(&provider_body(name, KEY_1)),
            "name",
        )
        .await;
    }
    let mut bad = provider_body("x", &format!("{KEY_1} with spaces"));
    r.invalid(app.post("/v1/providers").json(&bad), "api_key")
        .await;
    bad = provider_body("x", KEY_1);
    bad["models"] = json!(["ok", ""]);
    r.invalid(app.post("/v1/providers").json(&bad), "models[1]")
        .await;
    bad = provider_body("x", KEY_1);
    bad.as_object_mut().unwrap().remove("api_key");
    r.invalid(app.post("/v1/providers").json(&bad), "api_key")
        .await;
    bad = provider_body("x", KEY_1);
    bad["extra"] = json!(1);
    r.invalid(app.post("/v1/providers").json(&bad), "extra")
        .await;
    r.invalid(
        app.patch(&format!("/v1/providers/{id}"))
            .json(&json!({"default_model": ""})),
        "default_model",
    )
    .await;

    // Agents name providers by name or id; an unknown one is refused naming the field.
    r.invalid(
        app.post("/v1/agents")
            .json(&json!({"name": "a", "model": {"provider": "nope"}})),
        "model.provider",
    )
    .await;
    let by_name = r
        .send(
            app.post("/v1/agents")
                .json(&json!({"name": "a", "model": {"provider": "renamed", "model": "m1"}})),
            201,
        )
        .await;
    r.send(
        app.post("/v1/agents")
            .json(&json!({"name": "b", "model": {"provider": id}})),
        201,
    )
    .await;
    r.invalid(
        app.patch(&format!("/v1/agents/{}", by_name["id"].as_str().unwrap()))
            .json(&json!({"model": {"provider": "prv_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f"}})),
        "model.provider",
    )
    .await;

    // 404s: unknown and malformed ids.
    for path in [
        "/v1/providers/prv_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f".to_owned(),
        "/v1/providers/not-an-id".to_owned(),
        format!("/v1/providers/{}", by_name["id"].as_str().unwrap()),
    ] {
        r.send(app.get(&path), 404).await;
        r.send(app.delete(&path), 404).await;
        r.send(app.patch(&path).json(&json!({})), 404).await;
        r.send(app.post(&format!("{path}/test")), 404).await;
    }

    let dump = database_dump(&h).await;
    assert!(dump.contains("renamed"), "the dump holds the provider rows");
    for key in [KEY_1, KEY_2] {
        assert!(
            !dump.contains(key),
            "the database holds a plaintext API key"
        );
        assert!(!dump.contains(&key[..key.len() - 4]));
    }

    r.send(app.delete(&format!("/v1/providers/{id}")), 204)
        .await;
    r.send(app.get(&format!("/v1/providers/{id}")), 404).await;
    let list = r.send(app.get("/v1/providers?limit=1"), 200).await;
    assert_eq!(list["total"], 1);
    r.assert_never_contains(&[KEY_1, KEY_2]);
    h.finish().await;
}

async fn secrets_are_write_only(backend: Backend) {
    let h = Harness::start(backend).await;
    let app = &h.app;
    let mut r = Recorder::default();

    let created = r
        .send(
            app.put("/v1/secrets/GITHUB_TOKEN")
                .json(&json!({"value": SECRET_VALUE})),
            201,
        )
        .await;
    assert_eq!(created["name"], "GITHUB_TOKEN");
    assert!(created.get("value").is_none(), "{created}");
    let replaced = r
        .send(
            app.put("/v1/secrets/GITHUB_TOKEN")
                .json(&json!({"value": format!("{SECRET_VALUE}-2")})),
            200,
        )
        .await;
    assert_eq!(replaced["created_at"], created["created_at"]);
    r.send(
        app.put("/v1/secrets/a.b-c_d").json(&json!({"value": ""})),
        201,
    )
    .await;

    let read = r.send(app.get("/v1/secrets/GITHUB_TOKEN"), 200).await;
    assert_eq!(read, replaced);
    let first = r.send(app.get("/v1/secrets?limit=1"), 200).await;
    assert_eq!(first["total"], 2);
    assert_eq!(first["data"][0]["name"], "GITHUB_TOKEN");
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = r
        .send(
            app.get(&format!("/v1/secrets?limit=1&cursor={cursor}")),
            200,
        )
        .await;
    assert_eq!(rest["data"][0]["name"], "a.b-c_d");
    assert!(rest["next_cursor"].is_null());

    r.invalid(
        app.put("/v1/secrets/bad%20name")
            .json(&json!({"value": "v"})),
        "name",
    )
    .await;
    r.invalid(
        app.put(&format!("/v1/secrets/{}", "n".repeat(129)))
            .json(&json!({"value": "v"})),
        "name",
    )
    .await;
    r.invalid(app.put("/v1/secrets/OK").json(&json!({})), "value")
        .await;
    r.invalid(
        app.put("/v1/secrets/OK").json(&json!({"value": 5})),
        "value",
    )
    .await;
    r.invalid(
        app.put("/v1/secrets/OK")
            .json(&json!({"value": "x".repeat(64 * 1024 + 1)})),
        "value",
    )
    .await;
    for path in ["/v1/secrets/MISSING", "/v1/secrets/bad%20name"] {
        r.send(app.get(path), 404).await;
        r.send(app.delete(path), 404).await;
    }

    let dump = database_dump(&h).await;
    assert!(dump.contains("GITHUB_TOKEN"));
    assert!(!dump.contains(&SECRET_VALUE[..SECRET_VALUE.len() - 4]));

    r.send(app.delete("/v1/secrets/GITHUB_TOKEN"), 204).await;
    r.send(app.get("/v1/secrets/GITHUB_TOKEN"), 404).await;
    r.assert_never_contains(&[SECRET_VALUE]);
    h.finish().await;
}

on_both_backends!(
    providers_crud_without_ever_showing_the_key,
    secrets_are_write_only
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_reports_the_providers_answer() {
    let h = Harness::start(Backend::Sqlite).await;
    let app = &h.app;
    let llm = FakeLlm::start().await;
    llm.set_models(["fake-a", "fake-b"]);
    let mut r = Recorder::default();
    let create = |name: &str, kind: &str, key: &str| {
        app.post("/v1/providers").json(&json!({
            "name": name, "kind": kind, "base_url": llm.openai_base_url(), "api_key": key,
        }))
    };

    for kind in ["openai", "anthropic"] {
        let good = r
            .send(create(&format!("good-{kind}"), kind, FAKE_LLM_API_KEY), 201)
            .await;
        let result = r
            .send(
                app.post(&format!(
                    "/v1/providers/{}/test",
                    good["id"].as_str().unwrap()
                )),
                200,
            )
            .await;
        assert_eq!(
            result,
            json!({"ok": true, "error": null, "models": ["fake-a", "fake-b"]})
        );

        let wrong_key = format!("sk-wrong-{kind}-0123456789abcdef");
        let bad = r
            .send(create(&format!("bad-{kind}"), kind, &wrong_key), 201)
            .await;
        let result = r
            .send(
                app.post(&format!(
                    "/v1/providers/{}/test",
                    bad["id"].as_str().unwrap()
                )),
                200,
            )
            .await;
        assert_eq!(result["ok"], false, "{result}");
        assert!(result["models"].is_null());
        let error = result["error"].as_str().unwrap();
        assert!(
            error.contains("401") && error.contains("invalid API key"),
            "{error}"
        );
        r.assert_never_contains(&[&wrong_key]);
    }
    let requests = llm.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        requests.iter().map(|q| q.auth_ok).collect::<Vec<_>>(),
        [true, false, true, false]
    );
    assert!(requests.iter().all(|q| q.path == "/v1/models"));
    assert_eq!(requests[2].header("anthropic-version"), Some("2023-06-01"));

    // Nothing listening: a quick, clear failure rather than a hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = r
        .send(
            app.post("/v1/providers").json(&json!({
                "name": "closed", "kind": "openai",
                "base_url": format!("http://127.0.0.1:{port}/v1"), "api_key": "k",
            })),
            201,
        )
        .await;
    let started = std::time::Instant::now();
    let result = r
        .send(
            app.post(&format!(
                "/v1/providers/{}/test",
                closed["id"].as_str().unwrap()
            )),
            200,
        )
        .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(9));
    assert_eq!(result["ok"], false);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("could not connect"),
        "{result}"
    );
    r.assert_never_contains(&[FAKE_LLM_API_KEY]);
    h.finish().await;
}
