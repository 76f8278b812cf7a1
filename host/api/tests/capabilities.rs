//! `/v1/capabilities` and capability checks on agents, with a real compiled plugin installed in
//! the server's plugin directory and a broken one beside it. SQLite only: nothing here depends
//! on the store.

mod support;

use std::path::Path;

use everruns_testkit::guests::{WELL_BEHAVED, plugin_dir};
use serde_json::{Value, json};
use support::{Backend, Harness, expect_json, expect_problem};

/// `well-behaved` installed and loaded; `broken` has a manifest with an unknown field.
async fn start() -> Harness {
    Harness::start_with(Backend::Sqlite, |data_dir: &Path| {
        let plugins = data_dir.join("plugins");
        plugin_dir(&plugins, "well-behaved", "well-behaved", WELL_BEHAVED);
        let broken = format!("{WELL_BEHAVED}\nsurprise = true\n")
            .replace("id = \"well-behaved\"", "id = \"broken\"");
        plugin_dir(&plugins, "broken", "well-behaved", &broken);
    })
    .await
}

async fn create_agent(h: &Harness, capabilities: Value) -> reqwest::Response {
    h.app
        .post("/v1/agents")
        .json(&json!({"name": "with-plugins", "capabilities": capabilities}))
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_loaded_and_failed_plugins() {
    let h = start().await;
    let list = expect_json(h.app.get("/v1/capabilities").send().await.unwrap(), 200).await;
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(list["next_cursor"], Value::Null, "{list}");

    let data = list["data"].as_array().expect("data is an array");
    let good = data
        .iter()
        .find(|c| c["id"] == "well-behaved")
        .unwrap_or_else(|| panic!("well-behaved is listed: {list}"));
    assert_eq!(good["status"], "loaded", "{good}");
    assert_eq!(good["version"], "0.1.0");
    assert_eq!(good["description"], "A plugin that behaves");
    assert_eq!(good["digest"].as_str().map(str::len), Some(64), "{good}");
    let tools: Vec<&str> = good["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in ["greet", "count", "ping", "echo"] {
        assert!(tools.contains(&name), "tool {name} missing: {good}");
    }
    let greet = good["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "greet")
        .unwrap();
    assert!(greet["parameters"].is_object(), "{greet}");
    assert_eq!(greet["parameters"]["type"], "object", "{greet}");
    assert_eq!(good["permissions"]["allowed_hosts"], json!([]), "{good}");
    assert_eq!(good["permissions"]["secrets"], json!([]), "{good}");
    assert!(good["permissions"]["kv"].is_string(), "{good}");
    assert_eq!(good["limits"]["memory_mib"], 16, "{good}");
    assert_eq!(good["limits"]["timeout_ms"], 5000, "{good}");
    assert_eq!(
        good["config_schema"]["properties"]["greeting"]["type"],
        "string"
    );
    assert_eq!(good["config_defaults"], json!({"greeting": "hello"}));

    let bad = data
        .iter()
        .find(|c| c["id"] == "broken")
        .unwrap_or_else(|| panic!("broken is listed: {list}"));
    assert_eq!(bad["status"], "failed", "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("surprise")),
        "the reason names the unknown field: {bad}"
    );
    assert_eq!(bad["tools"], json!([]), "{bad}");

    // One by id, both kinds; the server keeps serving despite the broken plugin.
    let one = expect_json(
        h.app
            .get("/v1/capabilities/well-behaved")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(&one, good);
    let one = expect_json(
        h.app.get("/v1/capabilities/broken").send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(&one, bad);
    expect_json(h.app.get("/v1/agents").send().await.unwrap(), 200).await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_capability_is_404() {
    let h = start().await;
    let body = expect_problem(
        h.app.get("/v1/capabilities/nope").send().await.unwrap(),
        404,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("`nope`"),
        "{body}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_only_enable_loaded_plugins_with_valid_config() {
    let h = start().await;

    let agent = expect_json(
        create_agent(
            &h,
            json!([{"id": "well-behaved", "config": {"greeting": "hi"}}]),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(agent["capabilities"][0]["id"], "well-behaved");
    assert_eq!(
        agent["capabilities"][0]["config"],
        json!({"greeting": "hi"})
    );
    let id = agent["id"].as_str().unwrap().to_owned();

    // A config the plugin's schema rejects names the offending config field.
    let body = expect_problem(
        create_agent(
            &h,
            json!([{"id": "well-behaved", "config": {"greeting": 5}}]),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(
        body["errors"][0]["field"], "capabilities[0].config.greeting",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("string")),
        "{body}"
    );

    // An id nobody installed: the message lists what is installed.
    let body = expect_problem(create_agent(&h, json!([{"id": "nope"}])).await, 422).await;
    assert_eq!(body["errors"][0]["field"], "capabilities[0].id", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`nope`"), "{body}");
    assert!(message.contains("well-behaved"), "{body}");

    // A plugin that failed to load: the message gives the reason.
    let body = expect_problem(create_agent(&h, json!([{"id": "broken"}])).await, 422).await;
    assert_eq!(body["errors"][0]["field"], "capabilities[0].id", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("failed to load") && message.contains("surprise"),
        "{body}"
    );

    // Updates are checked the same way, and a refused update changes nothing.
    let body = expect_problem(
        h.app
            .patch(&format!("/v1/agents/{id}"))
            .json(&json!({"capabilities": [
                {"id": "well-behaved"},
                {"id": "well-behaved-2", "config": {}}
            ]}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "capabilities[1].id", "{body}");
    let unchanged = expect_json(
        h.app.get(&format!("/v1/agents/{id}")).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(unchanged, agent);
    h.finish().await;
}
