//! Everruns as an MCP server: the official Python MCP SDK (an outside implementation, pinned in
//! `tests/mcp/requirements.txt`) lists our tools and runs an agent end to end over `/mcp`
//! with the fake LLM; a key is required, each tool checks the key's role, requests for
//! hosts that are not allowed are refused (DNS rebinding), and bad arguments name the
//! argument.

use std::process::Command;

use everruns_testkit::polyglot::{mcp_python, repo_root};
use everruns_testkit::{FakeLlm, Reply, TestApp, json_of};
use serde_json::{Value, json};

/// A server whose model answers `MCP says: <the user's message>`.
async fn start(dir: &std::path::Path, llm: &FakeLlm) -> TestApp {
    llm.set_fallback(|request| {
        let said = request
            .messages()
            .last()
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        Reply::text(format!("MCP says: {said}"))
    });
    TestApp::start_configured(dir, None, |config| {
        config.llm_kind = Some("openai".into());
        config.llm_base_url = Some(llm.openai_base_url());
        config.llm_api_key = Some(llm.api_key().to_owned().into());
        config.llm_model = Some("fake-model".into());
    })
    .await
}

/// Runs `tests/mcp/client.py` against the app with `key`; its JSON report.
fn python_client(app: &TestApp, key: &str, agent_id: &str) -> Value {
    let out = Command::new(mcp_python())
        .arg(repo_root().join("tests/mcp/client.py"))
        .args([&app.url("/mcp"), key, agent_id])
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python MCP client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_agents_and_runs_one_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let app = start(dir.path(), &llm).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "mcp-agent", "system_prompt": "You answer over MCP."}),
        )
        .await;
    let agent_id = agent["id"].as_str().unwrap();
    let report = python_client(&app, &app.api_key, agent_id);

    let tools = report["tools"].as_object().unwrap();
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["get_run", "list_agents", "run_agent"]);
    assert_eq!(
        tools["run_agent"]["required"],
        json!(["agent_id", "message"])
    );
    assert_eq!(tools["run_agent"]["additionalProperties"], false);

    let listed = &report["list_agents"]["structured"];
    assert!(
        listed["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == agent_id && a["name"] == "mcp-agent"),
        "{report}"
    );

    let ran = &report["run_agent"];
    assert_eq!(ran["is_error"], false, "{report}");
    let result = &ran["structured"];
    assert_eq!(result["text"], "MCP says: hello over MCP", "{report}");
    assert_eq!(result["status"], "completed");
    let (sid, run_id) = (
        result["session_id"].as_str().unwrap(),
        result["run_id"].as_str().unwrap(),
    );
    assert!(
        report["progress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "the run started"),
        "progress notifications arrive during the call: {report}"
    );
    assert_eq!(report["get_run"]["structured"]["status"], "completed");
    assert_eq!(
        report["get_run"]["structured"]["text"],
        "MCP says: hello over MCP"
    );
    let continued = &report["continued"]["structured"];
    assert_eq!(continued["session_id"], sid, "the conversation continues");
    assert_eq!(continued["text"], "MCP says: and again");
    let bad = report["bad_argument"]["exception"]
        .as_str()
        .unwrap_or_default();
    assert!(
        bad.contains("run_agent") && bad.contains("mesage"),
        "a bad argument is named: {report}"
    );

    // What MCP did is what the API shows.
    let run = json_of(
        app.get(&format!("/v1/runs/{run_id}")).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(
        (run["status"].as_str(), run["session_id"].as_str()),
        (Some("completed"), Some(sid))
    );
    let messages = json_of(
        app.get(&format!("/v1/sessions/{sid}/messages"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(messages["total"], 4, "two turns: {messages}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_needs_a_key_a_role_and_an_allowed_host() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let app = start(dir.path(), &llm).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "guarded", "system_prompt": "x"}),
        )
        .await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let post = || {
        app.client
            .post(app.url("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
    };
    // No key: 401 problem, as on /v1.
    let refused = post().send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    // A key, but a Host that is not ours (a DNS-rebinding page): refused.
    let rebinding = post()
        .bearer_auth(&app.api_key)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status(), 403);
    // The right host: a session starts.
    let ok = post().bearer_auth(&app.api_key).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("mcp-session-id"));

    // A reader may list agents but not run one.
    let reader = app
        .create(
            "/v1/api-keys",
            json!({"name": "mcp-reader", "role": "reader"}),
        )
        .await;
    let report = python_client(
        &app,
        reader["key"].as_str().unwrap(),
        agent["id"].as_str().unwrap(),
    );
    assert_eq!(report["list_agents"]["is_error"], false, "{report}");
    let denied = report["run_agent"]["exception"]
        .as_str()
        .unwrap_or_default();
    assert!(
        denied.contains("run_agent needs the `operator` role") && denied.contains("`reader`"),
        "{report}"
    );
    assert_eq!(llm.request_count(), 0, "nothing ran");
    app.stop().await;
}
