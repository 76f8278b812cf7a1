//! The HTTP API end to end: the real server on port 0 over HTTP, on SQLite and PostgreSQL.

mod support;

use serde_json::{Value, json};
use support::{Backend, Harness, expect_json, expect_problem};

on_both_backends!(
    health_needs_no_key,
    v1_requires_a_valid_key,
    revoked_key_is_rejected,
    agent_crud_round_trip,
    session_crud_and_listing_by_agent,
    pagination_walks_every_item_once,
    bad_input_is_a_precise_problem,
    data_survives_a_restart,
);

async fn create_agent(h: &Harness, name: &str) -> Value {
    let response = h
        .app
        .post("/v1/agents")
        .json(&json!({"name": name, "system_prompt": "You help."}))
        .send()
        .await
        .expect("request");
    expect_json(response, 201).await
}

async fn health_needs_no_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let response = h.app.client.get(h.app.url("/health")).send().await.unwrap();
    let body = expect_json(response, 200).await;
    assert_eq!(body["status"], "ok");
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(body["store"], expected);
    h.finish().await;
}

async fn v1_requires_a_valid_key(backend: Backend) {
    let h = Harness::start(backend).await;
    let url = h.app.url("/v1/agents");
    let client = &h.app.client;

    let missing = client.get(&url).send().await.unwrap();
    assert!(missing.headers().contains_key("www-authenticate"));
    expect_problem(missing, 401).await;

    let wrong = client
        .get(&url)
        .bearer_auth("evr_not_a_key")
        .send()
        .await
        .unwrap();
    expect_problem(wrong, 401).await;

    let basic = client
        .get(&url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    expect_problem(basic, 401).await;

    // POST without a key is refused before the body is looked at.
    let post = client
        .post(&url)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(post, 401).await;

    let ok = h.app.get("/v1/agents").send().await.unwrap();
    expect_json(ok, 200).await;
    h.finish().await;
}

async fn revoked_key_is_rejected(backend: Backend) {
    let h = Harness::start(backend).await;
    let created = expect_json(
        h.app
            .post("/v1/api-keys")
            .json(&json!({"name": "ci"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("evr_"));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    let url = h.app.url("/v1/agents");
    let works = h
        .app
        .client
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_json(works, 200).await;

    // Listing never shows the key again.
    let list = expect_json(h.app.get("/v1/api-keys").send().await.unwrap(), 200).await;
    assert!(!list.to_string().contains(&key));
    let ci = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .expect("ci key listed");
    assert!(ci["last_used_at"].is_string(), "use is recorded: {ci}");

    let id = created["id"].as_str().unwrap();
    let revoked = expect_json(
        h.app
            .delete(&format!("/v1/api-keys/{id}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(revoked["revoked_at"].is_string());

    let refused = h
        .app
        .client
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    expect_problem(refused, 401).await;
    // The admin key is unaffected.
    expect_json(h.app.get("/v1/agents").send().await.unwrap(), 200).await;
    h.finish().await;
}

async fn agent_crud_round_trip(backend: Backend) {
    let h = Harness::start(backend).await;
    let agent = create_agent(&h, "helper").await;
    let id = agent["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("agt_"), "{agent}");
    assert_eq!(agent["name"], "helper");
    assert_eq!(agent["system_prompt"], "You help.");
    assert_eq!(agent["capabilities"], json!([]));
    assert_eq!(agent["archived"], false);

    let fetched = expect_json(
        h.app.get(&format!("/v1/agents/{id}")).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(fetched, agent);

    // No plugins are installed here, so enabling one is refused and nothing changes.
    let refused = expect_problem(
        h.app
            .patch(&format!("/v1/agents/{id}"))
            .json(&json!({
                "system_prompt": "Be brief.",
                "capabilities": [{"id": "todo"}]
            }))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(
        refused["errors"][0]["field"], "capabilities[0].id",
        "{refused}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`todo`")),
        "{refused}"
    );

    let patched = expect_json(
        h.app
            .patch(&format!("/v1/agents/{id}"))
            .json(&json!({
                "system_prompt": "Be brief.",
                "model": {"model": "gpt-test", "temperature": 0.5, "max_steps": 12},
                "capabilities": []
            }))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(patched["name"], "helper", "absent fields are unchanged");
    assert_eq!(patched["system_prompt"], "Be brief.");
    assert_eq!(patched["model"]["model"], "gpt-test");
    assert_eq!(patched["model"]["temperature"], 0.5);
    assert_eq!(patched["capabilities"], json!([]));
    assert_ne!(patched["updated_at"], agent["updated_at"]);

    let list = expect_json(h.app.get("/v1/agents").send().await.unwrap(), 200).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["data"][0], patched);

    let deleted = h
        .app
        .delete(&format!("/v1/agents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    expect_problem(
        h.app.get(&format!("/v1/agents/{id}")).send().await.unwrap(),
        404,
    )
    .await;
    expect_problem(
        h.app
            .delete(&format!("/v1/agents/{id}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    h.finish().await;
}

async fn session_crud_and_listing_by_agent(backend: Backend) {
    let h = Harness::start(backend).await;
    let a = create_agent(&h, "a").await;
    let b = create_agent(&h, "b").await;
    let mut a_sessions = Vec::new();
    for i in 0..3 {
        let s = expect_json(
            h.app
                .post("/v1/sessions")
                .json(&json!({"agent_id": a["id"], "title": format!("chat {i}")}))
                .send()
                .await
                .unwrap(),
            201,
        )
        .await;
        assert!(s["id"].as_str().unwrap().starts_with("ses_"));
        assert_eq!(s["status"], "idle");
        a_sessions.push(s);
    }
    expect_json(
        h.app
            .post("/v1/sessions")
            .json(&json!({"agent_id": b["id"]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;

    let by_a = expect_json(
        h.app
            .get(&format!(
                "/v1/sessions?agent_id={}",
                a["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(by_a["total"], 3);
    assert_eq!(by_a["data"].as_array().unwrap(), &a_sessions);
    let all = expect_json(h.app.get("/v1/sessions").send().await.unwrap(), 200).await;
    assert_eq!(all["total"], 4);

    let sid = a_sessions[0]["id"].as_str().unwrap();
    let renamed = expect_json(
        h.app
            .patch(&format!("/v1/sessions/{sid}"))
            .json(&json!({"title": "renamed"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(renamed["title"], "renamed");
    let cleared = expect_json(
        h.app
            .patch(&format!("/v1/sessions/{sid}"))
            .json(&json!({"title": null}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(cleared["title"].is_null());

    let messages = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}/messages"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(messages["data"], json!([]));
    assert_eq!(messages["total"], 0);

    assert_eq!(
        h.app
            .delete(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    expect_problem(
        h.app
            .get(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_problem(
        h.app
            .get(&format!("/v1/sessions/{sid}/messages"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // Deleting the agent deletes its sessions.
    let aid = a["id"].as_str().unwrap();
    h.app
        .delete(&format!("/v1/agents/{aid}"))
        .send()
        .await
        .unwrap();
    let all = expect_json(h.app.get("/v1/sessions").send().await.unwrap(), 200).await;
    assert_eq!(all["total"], 1);
    h.finish().await;
}

async fn pagination_walks_every_item_once(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(create_agent(&h, &format!("agent-{i}")).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/agents?limit=3&cursor={c}"),
            None => "/v1/agents?limit=3".to_owned(),
        };
        let page = expect_json(h.app.get(&path).send().await.unwrap(), 200).await;
        pages += 1;
        assert_eq!(page["total"], 7);
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every agent once, in creation order");
    h.finish().await;
}

async fn bad_input_is_a_precise_problem(backend: Backend) {
    let h = Harness::start(backend).await;
    let app = &h.app;

    // Malformed JSON: 400.
    let r = app
        .post("/v1/agents")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );

    // Wrong type: 422 naming the field.
    let r = app
        .post("/v1/agents")
        .json(&json!({"name": 5}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    assert_eq!(body["errors"][0]["field"], "name", "{body}");

    // Nested wrong type.
    let r = app
        .post("/v1/agents")
        .json(&json!({"name": "n", "capabilities": [{"id": "x", "config": {}}, {"id": 3}]}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    assert_eq!(body["errors"][0]["field"], "capabilities[1].id", "{body}");

    // Missing required field and unknown field.
    let r = app
        .post("/v1/agents")
        .json(&json!({"system_prompt": "x"}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    assert_eq!(body["errors"][0]["field"], "name", "{body}");
    let r = app
        .post("/v1/agents")
        .json(&json!({"name": "n", "colour": "red"}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("colour"),
        "{body}"
    );

    // Invalid values: 422 naming each field.
    let r = app
        .post("/v1/agents")
        .json(&json!({"name": "  ", "model": {"temperature": 9.0}}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    let fields: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(
        fields,
        vec![json!("name"), json!("model.temperature")],
        "{body}"
    );

    // Not JSON at all: 415.
    let r = app.post("/v1/agents").body("name=x").send().await.unwrap();
    expect_problem(r, 415).await;

    // Duplicate name: 409, on create and on rename.
    create_agent(&h, "taken").await;
    let other = create_agent(&h, "other").await;
    let r = app
        .post("/v1/agents")
        .json(&json!({"name": "taken", "system_prompt": ""}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 409).await;
    let r = app
        .patch(&format!("/v1/agents/{}", other["id"].as_str().unwrap()))
        .json(&json!({"name": "taken"}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 409).await;

    // Unknown and malformed ids: 404.
    let unknown = "agt_00000000000000000000000000000000";
    expect_problem(
        app.get(&format!("/v1/agents/{unknown}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_problem(app.get("/v1/agents/not-an-id").send().await.unwrap(), 404).await;
    let r = app
        .post("/v1/sessions")
        .json(&json!({"agent_id": unknown}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 404).await;
    expect_problem(
        app.get(&format!("/v1/sessions?agent_id={unknown}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    // Oversized body: 413. Sent as raw HTTP that announces 2 MiB and waits for the answer,
    // because a client still writing when the server refuses can see a reset instead.
    let (status, response) = raw_request(
        app.addr,
        &format!(
            "POST /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
            app.api_key,
            2 * 1024 * 1024
        ),
    )
    .await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains("application/problem+json"), "{response}");

    // Wrong method: 405 with Allow.
    let r = app
        .client
        .put(app.url("/v1/agents"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    expect_problem(r, 405).await;
    let allow = allow.expect("Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    // Bad query parameters: 400 naming them.
    let body = expect_problem(app.get("/v1/agents?limit=0").send().await.unwrap(), 400).await;
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    let body = expect_problem(app.get("/v1/agents?limit=abc").send().await.unwrap(), 400).await;
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    let body = expect_problem(app.get("/v1/agents?bogus=1").send().await.unwrap(), 400).await;
    assert!(body["detail"].as_str().unwrap().contains("bogus"), "{body}");

    // Unknown route: 404 problem.
    expect_problem(app.get("/v1/nothing-here").send().await.unwrap(), 404).await;

    // Internal details never leak.
    let r = app
        .post("/v1/agents")
        .json(&json!({"name": "nul\u{0}byte"}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(r, 422).await;
    assert!(!body.to_string().to_lowercase().contains("sql"), "{body}");
    h.finish().await;
}

async fn data_survives_a_restart(backend: Backend) {
    let h = Harness::start(backend).await;
    let agent = create_agent(&h, "durable").await;
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
    let h = h.restart().await;
    let id = agent["id"].as_str().unwrap();
    let fetched = expect_json(
        h.app.get(&format!("/v1/agents/{id}")).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(fetched, agent);
    let sid = session["id"].as_str().unwrap();
    let fetched = expect_json(
        h.app
            .get(&format!("/v1/sessions/{sid}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(fetched, session);
    h.finish().await;
}

/// Sends raw bytes and returns the status code and the raw response head + body read so far.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut response = Vec::new();
    while !String::from_utf8_lossy(&response).contains("\r\n\r\n{") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("server answered in time")
            .unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}
