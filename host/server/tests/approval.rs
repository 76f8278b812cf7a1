//! Tool approval through the real server and the fake LLM, on both stores: calls that match
//! the agent's (or session's) `tool_approval` patterns park the run (`waiting_approval`, no
//! worker) while calls of the same step that need none run; approve, reject, expiry and
//! cancel; the arguments that run are the approved ones whatever the journal or the agent
//! say later; bad policies and decisions are 4xx naming the field.

use everruns_testkit::guests::{WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, Reply, SseEvent, SseReader, TestApp, TestDb, json_of};
use serde_json::{Value, json};

everruns_testkit::on_both_stores!(
    approve_one_reject_another_while_a_third_runs,
    unanswered_approvals_expire_as_rejections,
    cancelling_a_waiting_run_cancels_it_at_once,
    the_approved_arguments_are_the_ones_that_run
);

/// A server on `db` (SQLite: its own file) with the well-behaved plugin and the fake LLM.
async fn start(db: &TestDb, llm: &FakeLlm, dir: &std::path::Path) -> TestApp {
    let (dir, url) = match db.sqlite_dir() {
        Some(sqlite) => (sqlite, None),
        None => (dir, Some(db.url())),
    };
    plugin_dir(
        &dir.join("plugins"),
        "well-behaved",
        "well-behaved",
        WELL_BEHAVED,
    );
    let base = llm.openai_base_url();
    let key = llm.api_key().to_owned();
    TestApp::start_configured(dir, url, |config| {
        config.llm_kind = Some("openai".to_owned());
        config.llm_base_url = Some(base);
        config.llm_api_key = Some(key.into());
        config.llm_model = Some("fake-model".to_owned());
    })
    .await
}

/// The model asks for `calls` in one step, then reports every result it got.
fn calls_then_report(llm: &FakeLlm, calls: Vec<(&'static str, Value)>) {
    llm.set_fallback(move |request| {
        if request.last_message_is_tool_result() {
            let results: Vec<String> = request
                .tool_results()
                .into_iter()
                .map(|(_, text)| text)
                .collect();
            Reply::text(format!("results: {}", results.join(" | ")))
        } else {
            Reply::tool_calls(calls.clone())
        }
    });
}

/// A session of a new agent with the well-behaved plugin and `policy`.
async fn session(app: &TestApp, name: &str, policy: Value) -> String {
    app.session_with(json!({
        "name": name,
        "capabilities": [{"id": "well-behaved"}],
        "tool_approval": policy,
    }))
    .await
}

/// Follows the session's events from the start.
async fn follow(app: &TestApp, sid: &str) -> SseReader {
    let stream = app
        .get(&format!("/v1/sessions/{sid}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    SseReader::new(stream)
}

/// Posts `content`; returns the run id.
async fn post(app: &TestApp, sid: &str, content: &str) -> String {
    let run = json_of(
        app.post(&format!("/v1/sessions/{sid}/messages"))
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    run["id"].as_str().unwrap().to_owned()
}

/// Reads events until `n` events of type `kind` arrived; returns every event read.
async fn until_n(sse: &mut SseReader, kind: &str, n: usize) -> Vec<(String, Value)> {
    let mut seen = 0;
    sse.until(|e| {
        if e.event == kind {
            seen += 1;
        }
        seen == n
    })
    .await
    .into_iter()
    .map(SseEvent::into_parts)
    .map(|(_, t, v)| (t, v["data"].clone()))
    .collect()
}

fn of_type<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e.0 == kind)
        .map(|e| &e.1)
        .collect()
}

async fn get(app: &TestApp, path: &str) -> Value {
    json_of(app.get(path).send().await.unwrap(), 200).await
}

/// `POST /v1/runs/{run}/approvals/{id}`: the status and the body.
async fn decide(app: &TestApp, run: &str, id: &str, body: Value) -> (u16, Value) {
    let response = app
        .post(&format!("/v1/runs/{run}/approvals/{id}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn approve_one_reject_another_while_a_third_runs(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    calls_then_report(
        &llm,
        vec![
            ("well-behaved__echo", json!({"n": 1})),
            ("well-behaved__greet", json!({"name": "Ada"})),
            ("well-behaved__echo", json!({"n": 2})),
        ],
    );
    let app = start(db, &llm, dir.path()).await;
    let sid = session(
        &app,
        "careful",
        json!({"require": ["*__echo"], "timeout_seconds": 600}),
    )
    .await;
    let mut sse = follow(&app, &sid).await;
    let run = post(&app, &sid, "echo twice, greet once").await;

    // Both echo calls wait; the greeting (no pattern matches) runs meanwhile.
    let events = until_n(&mut sse, "tool.approval_requested", 2).await;
    let requested = of_type(&events, "tool.approval_requested");
    assert_eq!(requested[0]["name"], "well-behaved__echo");
    assert_eq!(requested[0]["capability"], "well-behaved");
    assert_eq!(requested[0]["arguments"], json!({"n": 1}));
    assert_eq!(requested[0]["requested_by"], "tool_approval");
    assert_eq!(requested[0]["run_id"], run.as_str());
    assert!(
        requested[0]["reason"]
            .as_str()
            .unwrap()
            .contains("`*__echo`")
    );
    assert!(requested[0]["expires_at"].is_string());
    let started = of_type(&events, "tool.started");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0]["name"], "well-behaved__greet");
    let completed = of_type(&events, "tool.completed");
    assert_eq!(completed[0]["name"], "well-behaved__greet");
    let waiting = get(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(waiting["status"], "waiting_approval", "{waiting}");
    assert_eq!(
        waiting["config"]["tool_approval"],
        json!({"require": ["*__echo"], "timeout_seconds": 600})
    );

    let listed = get(&app, &format!("/v1/runs/{run}/approvals")).await;
    assert_eq!(listed["total"], 2, "{listed}");
    let first = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let second = listed["data"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["data"][0]["status"], "pending");
    assert_eq!(listed["data"][0]["arguments"], json!({"n": 1}));
    assert_eq!(listed["data"][1]["arguments"], json!({"n": 2}));
    let inbox = get(&app, "/v1/approvals?status=pending").await;
    assert_eq!(inbox["total"], 2, "{inbox}");
    assert_eq!(inbox["data"][0]["session_id"], sid.as_str());

    // One decision: 200 with who decided; the run still waits for the other.
    let (status, approved) = decide(
        &app,
        &run,
        &first,
        json!({"decision": "approve", "reason": "fine"}),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decision_reason"], "fine");
    let keys = get(&app, "/v1/api-keys").await;
    assert_eq!(approved["decided_by"], keys["data"][0]["id"]);
    assert_eq!(
        get(&app, &format!("/v1/runs/{run}")).await["status"],
        "waiting_approval"
    );
    // The same approval again: 409, saying why.
    let (status, problem) = decide(&app, &run, &first, json!({"decision": "reject"})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("already decided"),
        "{problem}"
    );

    // The last decision resumes the run: the approved call runs, the rejected one tells the
    // model why.
    let (status, rejected) = decide(
        &app,
        &run,
        &second,
        json!({"decision": "reject", "reason": "not that one"}),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    let events = until_n(&mut sse, "run.completed", 1).await;
    let resolved = of_type(&events, "tool.approval_resolved");
    assert_eq!(resolved.len(), 2, "{events:?}");
    assert_eq!(resolved[0]["decision"], "approved");
    assert_eq!(resolved[1]["decision"], "rejected");
    assert_eq!(resolved[1]["reason"], "not that one");
    let started = of_type(&events, "tool.started");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0]["arguments"], "{\"n\":1}");
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "{\"args\":{\"n\":1},\"version\":\"0.1.0\"}"
    );
    let blocked = of_type(&events, "tool.blocked");
    assert_eq!(blocked[0]["blocked_by"], "approval");
    assert_eq!(blocked[0]["reason"], "not that one");
    let told = llm.requests().last().unwrap().tool_results();
    assert_eq!(told.len(), 3);
    assert!(
        told[2].1.contains("rejected") && told[2].1.contains("not that one"),
        "{told:?}"
    );
    let done = get(&app, &format!("/v1/runs/{run}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(get(&app, "/v1/approvals?status=pending").await["total"], 0);
    // A decision on a finished run: 409.
    let (status, _) = decide(&app, &run, &second, json!({"decision": "approve"})).await;
    assert_eq!(status, 409);
    app.stop().await;
}

async fn unanswered_approvals_expire_as_rejections(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    calls_then_report(&llm, vec![("well-behaved__echo", json!({"n": 1}))]);
    let app = start(db, &llm, dir.path()).await;
    let sid = session(
        &app,
        "hasty",
        json!({"require": ["well-behaved__echo"], "timeout_seconds": 1}),
    )
    .await;
    let mut sse = follow(&app, &sid).await;
    let run = post(&app, &sid, "echo").await;
    // The sweeper expires it within its deadline plus a sweep; the run then completes.
    let events = until_n(&mut sse, "run.completed", 1).await;
    let resolved = of_type(&events, "tool.approval_resolved");
    assert_eq!(resolved[0]["decision"], "expired", "{events:?}");
    assert_eq!(resolved[0]["decided_by"], Value::Null);
    assert!(of_type(&events, "tool.started").is_empty());
    let told = &llm.requests().last().unwrap().tool_results()[0].1;
    assert!(told.contains("not approved in time"), "{told}");
    let approvals = get(&app, &format!("/v1/runs/{run}/approvals")).await;
    assert_eq!(approvals["data"][0]["status"], "expired");
    let id = approvals["data"][0]["id"].as_str().unwrap();
    let (status, problem) = decide(&app, &run, id, json!({"decision": "approve"})).await;
    assert_eq!(status, 409, "{problem}");
    app.stop().await;
}

async fn cancelling_a_waiting_run_cancels_it_at_once(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    calls_then_report(&llm, vec![("well-behaved__echo", json!({"n": 1}))]);
    let app = start(db, &llm, dir.path()).await;
    let sid = session(&app, "stopped", json!({"require": ["*"]})).await;
    let mut sse = follow(&app, &sid).await;
    let run = post(&app, &sid, "echo").await;
    until_n(&mut sse, "tool.approval_requested", 1).await;
    let cancelled = json_of(
        app.post(&format!("/v1/runs/{run}/cancel"))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let events = until_n(&mut sse, "run.cancelled", 1).await;
    assert_eq!(
        of_type(&events, "tool.approval_resolved")[0]["decision"],
        "cancelled"
    );
    let approvals = get(&app, &format!("/v1/runs/{run}/approvals")).await;
    assert_eq!(approvals["data"][0]["status"], "cancelled");
    let id = approvals["data"][0]["id"].as_str().unwrap();
    let (status, problem) = decide(&app, &run, id, json!({"decision": "approve"})).await;
    assert_eq!(status, 409, "{problem}");
    // The session takes new messages.
    let session = get(&app, &format!("/v1/sessions/{sid}")).await;
    assert_eq!(session["status"], "idle");
    app.stop().await;
}

async fn the_approved_arguments_are_the_ones_that_run(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    calls_then_report(
        &llm,
        vec![
            ("well-behaved__echo", json!({"file": "report.txt"})),
            ("well-behaved__echo", json!({"file": "notes.txt"})),
        ],
    );
    let app = start(db, &llm, dir.path()).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "audited", "capabilities": [{"id": "well-behaved"}],
                "tool_approval": {"require": ["*__echo"]}}),
        )
        .await;
    let sid = app
        .create("/v1/sessions", json!({"agent_id": agent["id"]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sse = follow(&app, &sid).await;
    let run = post(&app, &sid, "echo the files").await;
    until_n(&mut sse, "tool.approval_requested", 2).await;

    // Someone rewrites the journaled calls, and the agent drops its policy and its plugin
    // config; then someone alters the second approval's arguments.
    let rewrite = match db.backend() {
        "postgres" => {
            "UPDATE steps SET output = REPLACE(output::text, 'report.txt', 'secrets.txt')::json \
             WHERE run_id = $1 AND kind = 'llm'"
        }
        _ => {
            "UPDATE steps SET output = REPLACE(output, 'report.txt', 'secrets.txt') \
             WHERE run_id = $1 AND kind = 'llm'"
        }
    };
    let tampered = db.execute(rewrite, &run).await;
    assert_eq!(tampered, 1);
    let patched = app
        .patch(&format!("/v1/agents/{}", agent["id"].as_str().unwrap()))
        .json(&json!({"tool_approval": null, "capabilities": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let approvals = get(&app, &format!("/v1/runs/{run}/approvals")).await;
    let first = approvals["data"][0]["id"].as_str().unwrap().to_owned();
    let second = approvals["data"][1]["id"].as_str().unwrap().to_owned();
    let altered = db
        .execute(
            "UPDATE approvals SET arguments = '{\"file\":\"passwd\"}' WHERE id = $1",
            &second,
        )
        .await;
    assert_eq!(altered, 1);

    for id in [&first, &second] {
        let (status, body) = decide(&app, &run, id, json!({"decision": "approve"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let events = until_n(&mut sse, "run.completed", 1).await;
    // What was shown and approved ran, from the run's own configuration.
    let started = of_type(&events, "tool.started");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0]["arguments"], "{\"file\":\"report.txt\"}");
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "{\"args\":{\"file\":\"report.txt\"},\"version\":\"0.1.0\"}"
    );
    // Arguments altered after approval do not run at all.
    let blocked = of_type(&events, "tool.blocked");
    assert!(
        blocked[0]["reason"].as_str().unwrap().contains("altered"),
        "{events:?}"
    );
    assert!(!format!("{events:?}").contains("passwd"), "{events:?}");
    assert!(!format!("{events:?}").contains("secrets.txt"), "{events:?}");
    app.stop().await;
}

/// Policies are checked like the rest of an agent; decisions too.
#[tokio::test]
async fn bad_policies_and_decisions_are_refused_naming_the_field() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    let app = start(&db, &llm, dir.path()).await;
    for (policy, field) in [
        (json!({"require": ["["]}), "tool_approval.require[0]"),
        (json!({"require": [""]}), "tool_approval.require[0]"),
        (
            json!({"require": ["ok"], "timeout_seconds": 0}),
            "tool_approval.timeout_seconds",
        ),
        (
            json!({"require": [], "timeout_seconds": 604_801}),
            "tool_approval.timeout_seconds",
        ),
    ] {
        let response = app
            .post("/v1/agents")
            .json(&json!({"name": "bad", "tool_approval": policy}))
            .send()
            .await
            .unwrap();
        let problem = json_of(response, 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let agent = app.create("/v1/agents", json!({"name": "fine"})).await;
    let response = app
        .post("/v1/sessions")
        .json(&json!({"agent_id": agent["id"],
            "overrides": {"tool_approval": {"require": ["a", "[z"]}}}))
        .send()
        .await
        .unwrap();
    let problem = json_of(response, 422).await;
    assert_eq!(
        problem["errors"][0]["field"], "overrides.tool_approval.require[1]",
        "{problem}"
    );

    // Decisions: unknown ids are 404, bad bodies 4xx naming the field.
    let unknown_run = "run_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f";
    let unknown = "apr_0192f3c4a1b2000000010a1b2c3d4e5f";
    let (status, _) = decide(&app, unknown_run, unknown, json!({"decision": "approve"})).await;
    assert_eq!(status, 404);
    let (status, _) = decide(
        &app,
        unknown_run,
        "apr_nope",
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, problem) = decide(&app, unknown_run, unknown, json!({"decision": "maybe"})).await;
    assert_eq!(status, 422, "{problem}");
    assert!(format!("{problem}").contains("decision"), "{problem}");
    let (status, problem) = decide(
        &app,
        unknown_run,
        unknown,
        json!({"decision": "reject", "reason": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "reason");
    let response = app.get("/v1/approvals?status=maybe").send().await.unwrap();
    assert_eq!(response.status(), 400);
    app.stop().await;
    db.cleanup().await;
}

/// A session's overrides turn approval on for its runs only.
#[tokio::test]
async fn a_session_can_require_approval_its_agent_does_not() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start().await;
    calls_then_report(&llm, vec![("well-behaved__greet", json!({"name": "Bo"}))]);
    let app = start(&db, &llm, dir.path()).await;
    let agent = app
        .create(
            "/v1/agents",
            json!({"name": "open", "capabilities": [{"id": "well-behaved"}]}),
        )
        .await;
    let sid = app
        .create(
            "/v1/sessions",
            json!({"agent_id": agent["id"],
                "overrides": {"tool_approval": {"require": ["well-behaved__*"]}}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sse = follow(&app, &sid).await;
    let run = post(&app, &sid, "greet").await;
    let events = until_n(&mut sse, "tool.approval_requested", 1).await;
    assert_eq!(
        of_type(&events, "tool.approval_requested")[0]["name"],
        "well-behaved__greet"
    );
    let approvals = get(&app, &format!("/v1/runs/{run}/approvals")).await;
    let id = approvals["data"][0]["id"].as_str().unwrap();
    assert_eq!(
        decide(&app, &run, id, json!({"decision": "approve"}))
            .await
            .0,
        200
    );
    let events = until_n(&mut sse, "run.completed", 1).await;
    assert_eq!(
        of_type(&events, "tool.completed")[0]["output"],
        "hello, Bo!"
    );
    app.stop().await;
    db.cleanup().await;
}
