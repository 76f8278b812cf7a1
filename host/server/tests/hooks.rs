//! Capability hooks (WIT 0.2.0) through the real server: every decision of `before-model`,
//! `before-tool` and `after-tool` of the `hooks` test guest in a run against the fake LLM,
//! the order across two hook plugins (with the `guardrails` built-in), hooks that trap, loop
//! or miss their deadline under `on_error = block` and `allow`, and an `after-tool`
//! replacement whose original reaches no event, journal row or provider request.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use everruns_testkit::guests::{HOOKS, WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, Reply, SseEvent, SseReader, TestApp, TestDb, json_of};
use serde_json::{Value, json};

everruns_testkit::on_both_stores!(
    after_tool_replacement_hides_the_original,
    parallel_calls_of_one_run_lose_no_update
);

/// A server wired to `llm` with the `hooks` guest (its manifest changed by `manifest`) and
/// the well-behaved guest; with the built-ins when `builtins`.
async fn start(
    dir: &Path,
    db: Option<&TestDb>,
    llm: &FakeLlm,
    manifest: impl FnOnce(String) -> String,
    builtins: bool,
) -> TestApp {
    let base = llm.openai_base_url();
    let key = llm.api_key().to_owned();
    // A SQLite test database is the server's own file in its data directory.
    let (dir, url) = match db.and_then(TestDb::sqlite_dir) {
        Some(sqlite) => (sqlite, None),
        None => (dir, db.map(TestDb::url)),
    };
    let plugins = dir.join("plugins");
    plugin_dir(&plugins, "hooks", "hooks", &manifest(HOOKS.to_owned()));
    plugin_dir(&plugins, "well-behaved", "well-behaved", WELL_BEHAVED);
    TestApp::start_configured(dir, url, |config| {
        config.llm_kind = Some("openai".to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("fake-model".to_owned());
        config.builtin_plugins = builtins;
    })
    .await
}

/// The model calls `tool` with `arguments` once, then answers with the tool's result.
fn call_then_report(llm: &FakeLlm, tool: &'static str, arguments: Value) {
    llm.set_fallback(move |request| {
        if request.last_message_is_tool_result() {
            let results = request.tool_results();
            Reply::text(format!("result: {}", results[0].1))
        } else {
            Reply::tool_call(tool, arguments.clone())
        }
    });
}

/// Runs one message in a new session of an agent with `capabilities`; returns the run's
/// events (through `run.completed`, `run.failed`, or `tool.approval_requested` when the run
/// parks) and the run.
async fn run_with(app: &TestApp, capabilities: Value) -> (Vec<(String, Value)>, Value) {
    static AGENTS: AtomicUsize = AtomicUsize::new(0);
    let name = format!("hooked-{}", AGENTS.fetch_add(1, Ordering::Relaxed));
    let sid = app
        .session_with(json!({"name": name, "system_prompt": "Be brief.",
            "capabilities": capabilities}))
        .await;
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let watcher = tokio::spawn(async move {
        SseReader::new(stream)
            .until(|e| {
                e.event == "run.completed"
                    || e.event == "run.failed"
                    || e.event == "tool.approval_requested"
            })
            .await
            .into_iter()
            .map(SseEvent::into_parts)
            .map(|(_, t, v)| (t, v["data"].clone()))
            .collect::<Vec<_>>()
    });
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
    let id = run["run_id"].as_str().or(run["id"].as_str()).unwrap();
    let run = json_of(
        app.get(&format!("/v1/runs/{id}")).send().await.unwrap(),
        200,
    )
    .await;
    (events, run)
}

fn of_type<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e.0 == kind)
        .map(|e| &e.1)
        .collect()
}

/// The system prompt of a recorded OpenAI request.
fn system_prompt(request: &everruns_testkit::RecordedRequest) -> String {
    request.messages()[0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn before_model_adds_context_or_blocks_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|_| Reply::text("bonjour"));
    let app = start(dir.path(), None, &llm, |m| m, false).await;

    let (events, run) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"before_model": "add-context:Answer in French."}}]),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    let system = system_prompt(&requests[0]);
    assert!(
        system.starts_with("Be brief.") && system.ends_with("Answer in French."),
        "{system}"
    );
    let applied = of_type(&events, "hook.applied");
    assert_eq!(applied.len(), 1, "{events:?}");
    assert_eq!(applied[0]["capability"], "hooks");
    assert_eq!(applied[0]["hook"], "before-model");
    assert_eq!(applied[0]["decision"]["type"], "add-context");

    let (events, run) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"before_model": "block:over budget"}}]),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("`hooks`") && error.contains("over budget"),
        "{error}"
    );
    assert_eq!(llm.requests().len(), 1, "the blocked run asked no model");
    let failed = of_type(&events, "run.failed");
    assert_eq!(failed[0]["error"], error);
    assert_eq!(
        of_type(&events, "hook.applied")[0]["decision"]["type"],
        "block"
    );
    app.stop().await;
}

#[tokio::test]
async fn before_tool_blocks_rewrites_or_asks_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    call_then_report(&llm, "hooks__echo", json!({"word": "original"}));
    let app = start(dir.path(), None, &llm, |m| m, false).await;

    // block: the call does not run; the model is told why.
    let (events, run) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"before_tool": "block:not today"}}]),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(of_type(&events, "tool.started").is_empty(), "{events:?}");
    assert!(of_type(&events, "tool.completed").is_empty(), "{events:?}");
    let blocked = of_type(&events, "tool.blocked");
    assert_eq!(blocked.len(), 1, "{events:?}");
    assert_eq!(blocked[0]["name"], "hooks__echo");
    assert_eq!(blocked[0]["capability"], "hooks");
    assert_eq!(blocked[0]["blocked_by"], "hooks");
    assert_eq!(blocked[0]["reason"], "not today");
    let told = &llm.requests().last().unwrap().tool_results()[0].1;
    assert!(
        told.contains("blocked") && told.contains("not today"),
        "{told}"
    );
    let applied = of_type(&events, "hook.applied");
    assert_eq!(applied[0]["hook"], "before-tool");
    assert_eq!(applied[0]["decision"]["type"], "block");

    // rewrite: the call runs with the hook's arguments, announced as such.
    let (events, run) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"before_tool": "rewrite:{\"word\":\"rewritten\"}"}}]),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    let started = of_type(&events, "tool.started");
    assert_eq!(started[0]["arguments"], "{\"word\":\"rewritten\"}");
    let completed = of_type(&events, "tool.completed");
    assert_eq!(completed[0]["output"], "{\"word\":\"rewritten\"}");
    assert_eq!(
        of_type(&events, "hook.applied")[0]["decision"]["arguments"],
        json!({"word": "rewritten"})
    );

    // require-approval: the call waits for a person (tests/approval.rs decides).
    let (events, run) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"before_tool": "require-approval:spends money"}}]),
    )
    .await;
    let requested = of_type(&events, "tool.approval_requested");
    assert_eq!(requested[0]["reason"], "spends money", "{events:?}");
    assert_eq!(requested[0]["requested_by"], "hooks");
    assert_eq!(requested[0]["arguments"], json!({"word": "original"}));
    assert!(of_type(&events, "tool.started").is_empty(), "{events:?}");
    assert_eq!(run["status"], "waiting_approval", "{run}");
    assert_eq!(
        of_type(&events, "hook.applied")[0]["decision"]["type"],
        "require-approval"
    );
    app.stop().await;
}

/// Only the replacement of an `after-tool` hook is stored, streamed and sent to the model.
async fn after_tool_replacement_hides_the_original(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    call_then_report(&llm, "well-behaved__greet", json!({"name": "Ada"}));
    let app = start(dir.path(), Some(db), &llm, |m| m, false).await;

    let (events, run) = run_with(
        &app,
        json!([
            {"id": "well-behaved", "config": {"greeting": "Confidential"}},
            {"id": "hooks", "config": {"after_tool": "replace:[withheld]"}},
        ]),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "[withheld]"
    );
    assert_eq!(
        of_type(&events, "run.completed")[0]["text"],
        "result: [withheld]"
    );
    let applied = of_type(&events, "hook.applied");
    assert_eq!(applied[0]["hook"], "after-tool");
    assert_eq!(applied[0]["decision"]["type"], "replace");
    // The original ("Confidential, Ada!") is nowhere: not in the event log, not in the
    // journal's rows, not in what the provider was sent (the greeting alone is in the
    // plugin's prompt fragment).
    let session = run["session_id"].as_str().unwrap();
    let log = app
        .get(&format!("/v1/sessions/{session}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let original = "Confidential, Ada";
    assert!(
        log.contains("[withheld]") && !log.contains(original),
        "{log}"
    );
    assert_eq!(
        db.count_containing("steps", &["input", "output"], original)
            .await,
        0
    );
    assert_eq!(
        db.count_containing("messages", &["content", "metadata"], original)
            .await,
        0
    );
    assert_eq!(
        db.count_containing("events", &["payload"], original).await,
        0
    );
    for request in llm.requests() {
        assert!(
            !request.body().to_string().contains(original),
            "{}",
            request.body()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn hooks_run_in_the_order_of_the_agents_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    call_then_report(&llm, "hooks__echo", json!({"word": "secret-ABC"}));
    let app = start(dir.path(), None, &llm, |m| m, true).await;

    // The first block wins.
    let guardrails = json!({"id": "guardrails", "config": {"block_tools": ["hooks__*"]}});
    let hooks = json!({"id": "hooks", "config": {"before_tool": "block:hooks said no"}});
    let (events, _) = run_with(&app, json!([guardrails, hooks])).await;
    let blocked = of_type(&events, "tool.blocked");
    assert_eq!(blocked[0]["blocked_by"], "guardrails", "{events:?}");
    assert!(
        blocked[0]["reason"].as_str().unwrap().contains("hooks__*"),
        "{events:?}"
    );
    let (events, _) = run_with(&app, json!([hooks, guardrails])).await;
    assert_eq!(
        of_type(&events, "tool.blocked")[0]["blocked_by"],
        "hooks",
        "{events:?}"
    );

    // Replacements chain: each after-tool hook sees the previous one's result.
    let redact = json!({"id": "guardrails", "config": {"redact": ["secret-[A-Z]+"]}});
    let replace = json!({"id": "hooks", "config": {"after_tool": "replace:now secret-XYZ"}});
    let (events, _) = run_with(&app, json!([replace, redact])).await;
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "now [redacted]"
    );
    let (events, _) = run_with(&app, json!([redact, replace])).await;
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "now secret-XYZ"
    );
    app.stop().await;
}

#[tokio::test]
async fn failing_hooks_fail_closed_unless_the_manifest_allows() {
    let llm = FakeLlm::start().await;
    call_then_report(&llm, "hooks__echo", json!({"word": "visible"}));

    // on_error = "block" (the default): a trap or a loop past the deadline blocks.
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path(), None, &llm, |m| m, false).await;
    for failing in ["trap", "loop"] {
        let (events, run) = run_with(
            &app,
            json!([{"id": "hooks", "config": {"before_tool": failing}}]),
        )
        .await;
        assert_eq!(run["status"], "completed", "{run}");
        let blocked = of_type(&events, "tool.blocked");
        assert_eq!(blocked.len(), 1, "{failing}: {events:?}");
        assert!(
            blocked[0]["reason"]
                .as_str()
                .unwrap()
                .contains("before-tool hook failed"),
            "{failing}: {events:?}"
        );
    }
    let (events, _) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"after_tool": "loop"}}]),
    )
    .await;
    let failed = of_type(&events, "tool.failed");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("withheld"),
        "{events:?}"
    );
    let (_, run) = run_with(
        &app,
        json!([{"id": "hooks", "config": {"before_model": "trap"}}]),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("before-model hook failed"),
        "{run}"
    );
    app.stop().await;

    // on_error = "allow": the failing hook is skipped.
    let dir = tempfile::tempdir().unwrap();
    let app = start(
        dir.path(),
        None,
        &llm,
        |m| m.replace("on_error = \"block\"", "on_error = \"allow\""),
        false,
    )
    .await;
    for failing in ["trap", "loop"] {
        let (events, run) = run_with(
            &app,
            json!([{"id": "hooks", "config": {"before_tool": failing, "after_tool": failing,
                "before_model": failing}}]),
        )
        .await;
        assert_eq!(run["status"], "completed", "{failing}: {run}");
        assert!(of_type(&events, "tool.blocked").is_empty(), "{events:?}");
        assert_eq!(
            of_type(&events, "tool.completed")[0]["output"],
            "{\"word\":\"visible\"}"
        );
    }
    app.stop().await;
}

/// Tool calls of one model step run in parallel, but calls that write the same plugin's state
/// run one after another, each committed before the next: three increments of one counter
/// give 1, 2 and 3, and the counter ends at 3.
async fn parallel_calls_of_one_run_lose_no_update(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    llm.set_fallback(|request| {
        if request.last_message_is_tool_result() {
            let mut results: Vec<String> =
                request.tool_results().into_iter().map(|r| r.1).collect();
            results.sort();
            Reply::text(results.join(","))
        } else {
            Reply::tool_calls([
                ("hooks__bump", json!({})),
                ("hooks__bump", json!({})),
                ("well-behaved__echo", json!({"x": 1})),
                ("hooks__bump", json!({})),
            ])
        }
    });
    let app = start(dir.path(), Some(db), &llm, |m| m, false).await;
    let (events, run) = run_with(&app, json!([{"id": "hooks"}, {"id": "well-behaved"}])).await;
    assert_eq!(run["status"], "completed", "{run}");
    let mut outputs: Vec<String> = of_type(&events, "tool.completed")
        .iter()
        .filter(|e| e["name"] == "hooks__bump")
        .map(|e| e["output"].as_str().unwrap().to_owned())
        .collect();
    outputs.sort();
    assert_eq!(outputs, ["1", "2", "3"], "{events:?}");
    app.stop().await;
}

/// The `guardrails` built-in: every option through real runs, and bad configs refused.
#[tokio::test]
async fn guardrails_blocks_holds_redacts_and_stops_loops() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    call_then_report(&llm, "well-behaved__greet", json!({"name": "Ada"}));
    let app = start(dir.path(), None, &llm, |m| m, true).await;
    let with =
        |config: Value| json!([{"id": "well-behaved"}, {"id": "guardrails", "config": config}]);

    let (events, _) = run_with(&app, with(json!({"block_tools": ["*__gr??t"]}))).await;
    let blocked = of_type(&events, "tool.blocked");
    assert_eq!(blocked[0]["blocked_by"], "guardrails", "{events:?}");
    let reason = blocked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("*__gr??t") && reason.contains("well-behaved__greet"),
        "{reason}"
    );

    let (events, run) =
        run_with(&app, with(json!({"require_approval": ["well-behaved__*"]}))).await;
    let requested = of_type(&events, "tool.approval_requested");
    assert_eq!(requested[0]["requested_by"], "guardrails", "{events:?}");
    let reason = requested[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("well-behaved__*"), "{reason}");
    assert_eq!(run["status"], "waiting_approval", "{run}");

    let (events, run) = run_with(&app, with(json!({"redact": ["A[a-z]+"]}))).await;
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "hello, [redacted]!"
    );
    assert_eq!(run["status"], "completed");
    assert!(!format!("{:?}", of_type(&events, "run.completed")).contains("Ada!"));

    // The loop guard: the model keeps asking for the same call; the third one is blocked.
    llm.set_fallback(|request| {
        if request.tool_results().len() < 3 {
            Reply::tool_call("well-behaved__echo", json!({"same": true}))
        } else {
            Reply::text("gave up")
        }
    });
    let (events, run) = run_with(&app, with(json!({"max_identical_calls": 2}))).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(of_type(&events, "tool.completed").len(), 2, "{events:?}");
    let blocked = of_type(&events, "tool.blocked");
    assert_eq!(blocked.len(), 1, "{events:?}");
    assert_eq!(blocked[0]["blocked_by"], "guardrails");

    // Bad configs are 422s naming the field; nothing is created.
    for (config, field) in [
        (json!({"redact": ["("]}), "capabilities[0].config.redact[0]"),
        (
            json!({"max_identical_calls": 0}),
            "capabilities[0].config.max_identical_calls",
        ),
        (
            json!({"block_tools": "current_time__*"}),
            "capabilities[0].config.block_tools",
        ),
        (json!({"deny": []}), "capabilities[0].config"),
    ] {
        let response = app
            .post("/v1/agents")
            .json(&json!({"name": "bad-guard", "capabilities": [{"id": "guardrails", "config": config}]}))
            .send()
            .await
            .unwrap();
        let problem = json_of(response, 422).await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{config}: {problem}");
    }
    let agents = json_of(app.get("/v1/agents").send().await.unwrap(), 200).await;
    assert!(
        agents["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["name"] != "bad-guard"),
        "{agents}"
    );
    app.stop().await;
}
