//! The web UI in a real browser: `tests/e2e/ui.mjs` drives headless Chromium (Debian's
//! `chromium` through playwright-core) against the real server, with the well-behaved WASM
//! plugin installed and the fake LLM as the only provider, reached through a provider the test
//! adds in the Settings page. Fails (never skips) when Chromium, Node or the npm packages are
//! missing, naming the command that installs them. Tool approval too: an agent whose policy
//! holds the plugin's `echo`, two held calls in one step, one approved and one rejected in
//! the chat.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use everruns_testkit::guests::{WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, RecordedRequest, Reply, TestApp};
use serde_json::json;

/// The well-behaved plugin's config section, replaced by a schema with every kind of field the
/// UI's generated form handles (the plugin reads only `greeting`).
const RICH_CONFIG: &str = r#"[config]
schema = { type = "object", required = ["greeting"], additionalProperties = false, properties = { greeting = { type = "string", description = "How to greet" }, style = { enum = ["plain", "fancy"] }, repeat = { type = "integer", minimum = 1, maximum = 3 }, loud = { type = "boolean" }, names = { type = "array", items = { type = "string" } }, extra = { type = "object" } } }
defaults = { greeting = "hello", style = "plain" }
"#;

const INSTALL: &str = "apt-get install -y chromium && npm ci --prefix tests/e2e";
/// The whole browser scenario; generous for a loaded 2-core machine.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(420);

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e")
}

/// Checks that everything the browser test needs is installed; panics with the fix if not.
fn preflight(e2e: &Path) -> PathBuf {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the browser tests need Node.js 20 or later as `node` on PATH (Debian: apt-get install -y \
         nodejs npm, from a source with version 20+), then: {INSTALL}"
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "the browser tests need Chromium at {} (or set CHROMIUM=/path/to/chromium); run: {INSTALL}",
        chromium.display()
    );
    assert!(
        e2e.join("node_modules/playwright-core/package.json")
            .exists(),
        "the browser tests need their npm packages in {}; run: {INSTALL}",
        e2e.join("node_modules").display()
    );
    chromium
}

/// The text of the last user message the model was sent.
fn last_user_text(request: &RecordedRequest) -> String {
    request
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The fake model's script, keyed on what the user said (the same words as `ui.mjs`).
fn script(request: &RecordedRequest) -> Reply {
    let said = last_user_text(request);
    if said.contains("greet") {
        if request.last_message_is_tool_result() {
            let result = &request.tool_results()[0].1;
            Reply::text(format!("The plugin said: {result} **Done**."))
                .with_delta_delay(Duration::from_millis(120))
        } else {
            Reply::tool_call("well-behaved__greet", json!({"name": "Ada"}))
        }
    } else if said.contains("Echo two numbers") {
        // Two calls in one step, both held by the agent's `tool_approval` (`*__echo`).
        if request.last_message_is_tool_result() {
            let results: Vec<String> = request
                .tool_results()
                .into_iter()
                .map(|(_, text)| text)
                .collect();
            Reply::text(format!("Echo results: {}", results.join(" | ")))
        } else {
            Reply::tool_calls(vec![
                ("well-behaved__echo", json!({"n": 1})),
                ("well-behaved__echo", json!({"n": 2})),
            ])
        }
    } else if said.contains("links") {
        Reply::text(
            "Here is a [bad link](javascript:alert(1)) and the [docs](https://example.com/docs) \
             and <script>alert(1)</script>",
        )
    } else if said.contains("story") {
        let words: Vec<String> = (1..=40).map(|n| format!("w{n:02}")).collect();
        Reply::text(format!("Once upon a time {} the end.", words.join(" ")))
            .with_delta_delay(Duration::from_millis(150))
    } else if said.contains("wait") {
        // Holds the stream open until the run is cancelled.
        Reply::text("Thinking hard about it").stall_after(1, Duration::from_secs(300))
    } else {
        Reply::text("ok")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_end_to_end_in_chromium() {
    let e2e = e2e_dir();
    let chromium = preflight(&e2e);
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = WELL_BEHAVED
        .split_once("[config]")
        .expect("the well-behaved manifest has a [config] section");
    plugin_dir(
        &dir.path().join("plugins"),
        "well-behaved",
        "well-behaved",
        &format!("{manifest}{RICH_CONFIG}"),
    );
    // A plugin that fails to load: the Capabilities page shows why.
    let broken = dir.path().join("plugins/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("capability.toml"),
        "id = \"broken\"\nversion = \"0.1.0\"\nbogus_field = true\n",
    )
    .unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(script);
    // No server-wide LLM: runs reach the fake only through the provider added in the UI.
    let app = TestApp::start(dir.path(), None).await;

    let run = tokio::process::Command::new("node")
        .arg("ui.mjs")
        .current_dir(&e2e)
        .env("EVERRUNS_URL", &app.base_url)
        .env("EVERRUNS_API_KEY", &app.api_key)
        .env("FAKE_LLM_BASE_URL", llm.openai_base_url())
        .env("FAKE_LLM_API_KEY", llm.api_key())
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCENARIO_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser scenario did not finish in {SCENARIO_TIMEOUT:?}"))
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser scenario failed ({}); its output is above",
        output.status
    );

    // The runs went through the provider the UI added, with its key and the agent's model,
    // except the one run after the session's settings overrode the model and turned the
    // plugin off: that one asked for the session's model and temperature, without its tools.
    let requests = llm.requests();
    assert!(requests.len() >= 5, "{} LLM requests", requests.len());
    assert!(requests.iter().all(|r| r.auth_ok));
    let chats: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|r| !r.messages().is_empty())
        .collect();
    assert!(
        chats
            .iter()
            .all(|r| r.model() == "fake-model" || r.model() == "fake-model-2"),
        "models asked for: {:?}",
        chats.iter().map(|r| r.model()).collect::<Vec<_>>()
    );
    let overridden: Vec<&&RecordedRequest> = chats
        .iter()
        .filter(|r| r.model() == "fake-model-2")
        .collect();
    assert!(
        !overridden.is_empty(),
        "no request used the session's model"
    );
    for r in &overridden {
        assert_eq!(r.body()["temperature"], json!(0.3));
        assert!(
            r.tool_names()
                .iter()
                .all(|t| !t.starts_with("well-behaved__")),
            "{:?}",
            r.tool_names()
        );
    }
    assert!(
        chats
            .iter()
            .filter(|r| r.model() == "fake-model")
            .all(|r| r.tool_names().iter().any(|t| t == "well-behaved__greet"))
    );
    // The approval run: the model was told the approved call's result and the rejection with
    // its reason.
    let told = chats
        .iter()
        .rev()
        .find(|r| last_user_text(r).contains("Echo two numbers") && r.last_message_is_tool_result())
        .expect("the model heard back about the approved and rejected calls")
        .tool_results();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told[0].1.contains(r#""n":1"#), "{told:?}");
    assert!(
        told[1].1.contains("rejected") && told[1].1.contains("not this one"),
        "{told:?}"
    );
    // Cancelling dropped the stalled model call.
    assert!(llm.client_disconnects() >= 1);
    app.stop().await;
}
