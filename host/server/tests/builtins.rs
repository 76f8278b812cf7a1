//! The built-in capabilities as shipped (the components embedded in the binary, written
//! out by `builtins::materialize`), loaded by the real runtime and called with real
//! arguments: results, argument errors that name the field, limits, state isolation, and
//! `web_fetch` against a local HTTP server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use everruns_runtime::{
    CallContext, Grant, Grants, HostPattern, MemoryKv, MemorySecrets, Runtime, RuntimeConfig,
    ToolCall, ToolError, ToolFailure, ToolOutput,
};
use serde_json::{Value, json};

/// The built-ins written once per test process; every runtime compiles from here and
/// shares one compile cache.
fn builtin_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = everruns_testkit::guests::target_dir()
            .join(format!("builtin-plugins-test-{}", std::process::id()));
        everruns_server::builtins::materialize(&root, &[]).expect("materialize built-ins");
        root
    })
}

async fn runtime_with(id: &str, grants: Grants) -> Runtime {
    let runtime = Runtime::new(
        RuntimeConfig {
            max_concurrent_calls: 8,
            cache_dir: Some(everruns_testkit::guests::target_dir().join("builtin-cache")),
            grants,
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryKv::default()),
        Arc::new(MemorySecrets::default()),
    )
    .unwrap();
    let plugin = runtime
        .load_plugin(&builtin_dir().join(id))
        .await
        .unwrap_or_else(|e| panic!("{id} does not load: {e}"));
    runtime.insert(plugin);
    runtime
}

async fn runtime(id: &str) -> Runtime {
    runtime_with(id, Grants::default()).await
}

fn ctx(agent: &str, session: &str) -> CallContext {
    CallContext {
        agent_id: agent.into(),
        session_id: session.into(),
        run_id: "run_test".into(),
        idempotency_key: Some("k".into()),
        config: None,
    }
}

async fn call(
    rt: &Runtime,
    id: &str,
    ctx: &CallContext,
    tool: &str,
    args: Value,
) -> Result<ToolOutput, ToolError> {
    let outcome = rt
        .call_tool(
            id,
            ctx,
            &ToolCall {
                name: tool.into(),
                arguments: args,
            },
        )
        .await
        .unwrap();
    match outcome.result {
        Ok(out) => Ok(out),
        Err(ToolFailure::Plugin(e)) => Err(e),
        Err(ToolFailure::Runtime(e)) => panic!("{id}.{tool} failed in the host: {e}"),
    }
}

fn text(out: Result<ToolOutput, ToolError>) -> String {
    match out {
        Ok(ToolOutput::Text(t)) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

fn json_out(out: Result<ToolOutput, ToolError>) -> Value {
    match out {
        Ok(ToolOutput::Json(v)) => v,
        other => panic!("expected JSON, got {other:?}"),
    }
}

/// The message of an invalid-arguments error.
fn invalid(out: Result<ToolOutput, ToolError>) -> String {
    match out {
        Err(ToolError::InvalidArguments(m)) => m,
        other => panic!("expected invalid arguments, got {other:?}"),
    }
}

#[tokio::test]
async fn current_time_tells_converts_and_computes() {
    let rt = runtime("current_time").await;
    let c = ctx("agt_a", "ses_a");
    let now = json_out(
        call(
            &rt,
            "current_time",
            &c,
            "now",
            json!({"timezone": "Asia/Tokyo"}),
        )
        .await,
    );
    assert_eq!(now["timezone"], "Asia/Tokyo");
    assert_eq!(now["utc_offset"], "+09:00");
    let unix = now["unix_seconds"].as_i64().unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((unix - host_now).abs() < 60, "{now}");

    let converted = json_out(
        call(
            &rt,
            "current_time",
            &c,
            "convert",
            json!({"datetime": "2025-01-15T12:00:00Z", "to_timezone": "America/New_York"}),
        )
        .await,
    );
    assert_eq!(converted["datetime"], "2025-01-15T07:00:00-05:00");
    assert_eq!(converted["weekday"], "Wednesday");
    let local = json_out(
        call(
            &rt,
            "current_time",
            &c,
            "convert",
            json!({"datetime": "2025-07-01 09:30", "from_timezone": "Europe/Paris", "to_timezone": "UTC"}),
        )
        .await,
    );
    assert_eq!(local["datetime"], "2025-07-01T07:30:00+00:00");

    // A calendar day across the US daylight-saving switch is 23 hours.
    let added = json_out(
        call(
            &rt,
            "current_time",
            &c,
            "add",
            json!({"datetime": "2025-03-08T12:00", "timezone": "America/New_York", "duration": "1 day"}),
        )
        .await,
    );
    assert_eq!(added["datetime"], "2025-03-09T12:00:00-04:00");
    let back = json_out(
        call(
            &rt,
            "current_time",
            &c,
            "add",
            json!({"datetime": "2025-01-01T00:00:00Z", "duration": "-PT90M"}),
        )
        .await,
    );
    assert_eq!(back["datetime"], "2024-12-31T22:30:00+00:00");
    let diff = json_out(
        call(
            &rt,
            "current_time",
            &c,
            "difference",
            json!({"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T01:30:00Z"}),
        )
        .await,
    );
    assert_eq!(diff["seconds"], 91_800);
    assert_eq!(diff["human"], "1d 1h 30m");

    // Bad arguments are tool errors that name the field.
    let m = invalid(
        call(
            &rt,
            "current_time",
            &c,
            "now",
            json!({"timezone": "Mars/Olympus"}),
        )
        .await,
    );
    assert!(
        m.starts_with("timezone:") && m.contains("Mars/Olympus"),
        "{m}"
    );
    let m = invalid(call(&rt, "current_time", &c, "now", json!({"timezone": 5})).await);
    assert!(m.starts_with("timezone: invalid type"), "{m}");
    let m = invalid(
        call(
            &rt,
            "current_time",
            &c,
            "convert",
            json!({"datetime": "2025-01-01T00:00:00Z"}),
        )
        .await,
    );
    assert!(m.contains("missing field `to_timezone`"), "{m}");
    let m = invalid(call(&rt, "current_time", &c, "now", json!({"zone": "UTC"})).await);
    assert!(m.contains("unknown field `zone`"), "{m}");
    let m = invalid(call(&rt, "current_time", &c, "add", json!({"duration": "soon"})).await);
    assert!(m.starts_with("duration:"), "{m}");
    let m = invalid(
        call(
            &rt,
            "current_time",
            &c,
            "convert",
            json!({"datetime": "yesterday", "to_timezone": "UTC"}),
        )
        .await,
    );
    assert!(m.starts_with("datetime:"), "{m}");
    let m = invalid(call(&rt, "current_time", &c, "now", json!([1])).await);
    assert!(m.contains("JSON object"), "{m}");

    // The advertised schema matches what the tool accepts.
    let tools = rt.get("current_time").unwrap().tools().to_vec();
    let convert = tools.iter().find(|t| t.name == "convert").unwrap();
    assert_eq!(convert.parameters["type"], "object");
    let required: Vec<&str> = convert.parameters["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["datetime", "to_timezone"]);
    assert!(
        convert.parameters["properties"]["datetime"]["description"]
            .as_str()
            .unwrap()
            .contains("RFC 3339")
    );
}

#[tokio::test]
async fn session_files_is_a_file_system_per_session() {
    let rt = runtime("session_files").await;
    let s1 = ctx("agt_a", "ses_1");
    let s2 = ctx("agt_a", "ses_2");
    let id = "session_files";
    let w = |path: &str, content: &str| json!({"path": path, "content": content});
    assert_eq!(
        text(
            call(
                &rt,
                id,
                &s1,
                "write_file",
                w("/notes/plan.md", "step one\nstep two\nstep three\n")
            )
            .await
        ),
        "wrote 29 bytes to notes/plan.md"
    );
    call(&rt, id, &s1, "write_file", w("notes/todo.txt", "buy milk"))
        .await
        .unwrap();
    call(&rt, id, &s1, "write_file", w("readme.md", "# Project"))
        .await
        .unwrap();

    assert_eq!(
        text(call(&rt, id, &s1, "read_file", json!({"path": "notes/plan.md"})).await),
        "step one\nstep two\nstep three\n"
    );
    assert_eq!(
        text(
            call(
                &rt,
                id,
                &s1,
                "read_file",
                json!({"path": "notes/plan.md", "offset": 2, "limit": 1})
            )
            .await
        ),
        "step two"
    );
    assert_eq!(
        text(
            call(
                &rt,
                id,
                &s1,
                "edit_file",
                json!({"path": "notes/plan.md", "old_string": "two", "new_string": "2"})
            )
            .await
        ),
        "replaced 1 occurrence(s) in notes/plan.md"
    );
    let m = invalid(
        call(
            &rt,
            id,
            &s1,
            "edit_file",
            json!({"path": "notes/plan.md", "old_string": "step", "new_string": "s"}),
        )
        .await,
    );
    assert!(m.starts_with("old_string: occurs 3 times"), "{m}");
    call(&rt, id, &s1, "edit_file", json!({"path": "notes/plan.md", "old_string": "step", "new_string": "s", "replace_all": true}))
        .await
        .unwrap();
    assert_eq!(
        text(call(&rt, id, &s1, "read_file", json!({"path": "notes/plan.md"})).await),
        "s one\ns 2\ns three\n"
    );
    let m = invalid(
        call(
            &rt,
            id,
            &s1,
            "edit_file",
            json!({"path": "notes/plan.md", "old_string": "absent", "new_string": ""}),
        )
        .await,
    );
    assert!(m.starts_with("old_string: not found"), "{m}");

    let root = json_out(call(&rt, id, &s1, "list_directory", json!({})).await);
    assert_eq!(
        root["entries"],
        json!([{"name": "notes/", "type": "directory"}, {"name": "readme.md", "type": "file", "size": 9}])
    );
    let notes = json_out(call(&rt, id, &s1, "list_directory", json!({"path": "notes"})).await);
    assert_eq!(notes["entries"].as_array().unwrap().len(), 2);
    assert!(matches!(
        call(&rt, id, &s1, "list_directory", json!({"path": "nowhere"})).await,
        Err(ToolError::NotFound(_))
    ));

    assert_eq!(
        text(call(&rt, id, &s1, "grep", json!({"pattern": "^s (one|2)$"})).await),
        "notes/plan.md:1: s one\nnotes/plan.md:2: s 2"
    );
    assert_eq!(
        text(
            call(
                &rt,
                id,
                &s1,
                "grep",
                json!({"pattern": "MILK", "ignore_case": true, "path": "notes"})
            )
            .await
        ),
        "notes/todo.txt:1: buy milk"
    );
    let m = invalid(call(&rt, id, &s1, "grep", json!({"pattern": "(unclosed"})).await);
    assert!(m.starts_with("pattern:"), "{m}");

    // Another session of the same agent sees none of it.
    assert!(matches!(
        call(&rt, id, &s2, "read_file", json!({"path": "notes/plan.md"})).await,
        Err(ToolError::NotFound(_))
    ));
    assert_eq!(
        json_out(call(&rt, id, &s2, "list_directory", json!({})).await)["entries"],
        json!([])
    );

    assert_eq!(
        text(
            call(
                &rt,
                id,
                &s1,
                "delete_file",
                json!({"path": "notes/todo.txt"})
            )
            .await
        ),
        "deleted notes/todo.txt"
    );
    assert!(matches!(
        call(
            &rt,
            id,
            &s1,
            "delete_file",
            json!({"path": "notes/todo.txt"})
        )
        .await,
        Err(ToolError::NotFound(_))
    ));

    // Limits and bad paths.
    let big = "x".repeat(64 * 1024 + 1);
    let m = invalid(call(&rt, id, &s1, "write_file", w("big.txt", &big)).await);
    assert!(m.starts_with("content:") && m.contains("65536"), "{m}");
    call(&rt, id, &s1, "write_file", w("exactly-64k.txt", &big[1..]))
        .await
        .unwrap();
    let m = invalid(call(&rt, id, &s1, "read_file", json!({"path": "../etc/passwd"})).await);
    assert!(m.starts_with("path:"), "{m}");
    let m = invalid(call(&rt, id, &s1, "write_file", w(&"d/".repeat(150), "x")).await);
    assert!(m.starts_with("path: longer than"), "{m}");
    let m = invalid(call(&rt, id, &s1, "write_file", json!({"path": "a.txt"})).await);
    assert!(m.contains("missing field `content`"), "{m}");
    let m = invalid(
        call(
            &rt,
            id,
            &s1,
            "read_file",
            json!({"path": "readme.md", "offset": "two"}),
        )
        .await,
    );
    assert!(m.starts_with("offset: invalid type"), "{m}");
}

#[tokio::test]
async fn todo_keeps_a_list_per_session_and_shows_it_in_the_prompt() {
    let rt = runtime("todo").await;
    let s1 = ctx("agt_a", "ses_1");
    let items = json!({"todos": [
        {"content": "Read the brief", "status": "completed"},
        {"content": "Write the draft", "status": "in_progress"},
        {"content": "Send it", "status": "pending"},
    ]});
    let shown = text(call(&rt, "todo", &s1, "write_todos", items).await);
    assert_eq!(
        shown,
        "1. [x] Read the brief\n2. [~] Write the draft\n3. [ ] Send it"
    );
    assert_eq!(
        text(call(&rt, "todo", &s1, "read_todos", json!({})).await),
        shown
    );
    let prompt = rt.system_prompt("todo", &s1).await.unwrap().unwrap();
    assert!(
        prompt.contains("todo__write_todos") && prompt.ends_with(&shown),
        "{prompt}"
    );
    let other = ctx("agt_a", "ses_2");
    assert_eq!(
        text(call(&rt, "todo", &other, "read_todos", json!({})).await),
        "The todo list is empty."
    );

    let m = invalid(
        call(
            &rt,
            "todo",
            &s1,
            "write_todos",
            json!({"todos": [{"content": "x", "status": "done"}]}),
        )
        .await,
    );
    assert!(
        m.starts_with("todos[0].status: unknown variant `done`"),
        "{m}"
    );
    let two = json!({"todos": [{"content": "a", "status": "in_progress"}, {"content": "b", "status": "in_progress"}]});
    let m = invalid(call(&rt, "todo", &s1, "write_todos", two).await);
    assert!(m.starts_with("todos:") && m.contains("at most one"), "{m}");
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"content": format!("t{i}"), "status": "pending"}))
        .collect();
    let m = invalid(call(&rt, "todo", &s1, "write_todos", json!({"todos": many})).await);
    assert!(m.starts_with("todos: at most 100"), "{m}");
    let m = invalid(
        call(
            &rt,
            "todo",
            &s1,
            "write_todos",
            json!({"todos": [{"content": " ", "status": "pending"}]}),
        )
        .await,
    );
    assert!(m.starts_with("todos[0].content:"), "{m}");
    // The failed writes left the list alone.
    assert_eq!(
        text(call(&rt, "todo", &s1, "read_todos", json!({})).await),
        shown
    );
}

#[tokio::test]
async fn memory_is_per_agent_across_sessions_and_listed_in_the_prompt() {
    let rt = runtime("memory").await;
    let a1 = ctx("agt_a", "ses_1");
    let a2 = ctx("agt_a", "ses_2");
    let b = ctx("agt_b", "ses_3");
    assert_eq!(
        text(
            call(
                &rt,
                "memory",
                &a1,
                "remember",
                json!({"name": "user.city", "fact": "Lives in Lyon"})
            )
            .await
        ),
        "remembered `user.city`"
    );
    call(
        &rt,
        "memory",
        &a1,
        "remember",
        json!({"name": "user.language", "fact": "Prefers French"}),
    )
    .await
    .unwrap();
    call(
        &rt,
        "memory",
        &a1,
        "remember",
        json!({"name": "user.city", "fact": "Moved to Nantes"}),
    )
    .await
    .unwrap();

    // Another session of the same agent remembers; another agent does not.
    let recalled = json_out(call(&rt, "memory", &a2, "recall", json!({})).await);
    assert_eq!(
        recalled["facts"],
        json!([{"name": "user.city", "fact": "Moved to Nantes"}, {"name": "user.language", "fact": "Prefers French"}])
    );
    let filtered = json_out(call(&rt, "memory", &a2, "recall", json!({"query": "french"})).await);
    assert_eq!(filtered["facts"].as_array().unwrap().len(), 1);
    assert_eq!(
        json_out(call(&rt, "memory", &b, "recall", json!({})).await)["facts"],
        json!([])
    );

    let prompt = rt.system_prompt("memory", &a2).await.unwrap().unwrap();
    assert!(
        prompt.contains("- user.city: Moved to Nantes\n- user.language: Prefers French"),
        "{prompt}"
    );
    let prompt_b = rt.system_prompt("memory", &b).await.unwrap().unwrap();
    assert!(
        prompt_b.contains("Nothing is remembered yet."),
        "{prompt_b}"
    );

    assert_eq!(
        text(
            call(
                &rt,
                "memory",
                &a2,
                "forget",
                json!({"name": "user.language"})
            )
            .await
        ),
        "forgot `user.language`"
    );
    assert!(matches!(
        call(
            &rt,
            "memory",
            &a2,
            "forget",
            json!({"name": "user.language"})
        )
        .await,
        Err(ToolError::NotFound(_))
    ));
    let m = invalid(
        call(
            &rt,
            "memory",
            &a1,
            "remember",
            json!({"name": "x", "fact": ""}),
        )
        .await,
    );
    assert!(m.starts_with("fact:"), "{m}");
    let m = invalid(
        call(
            &rt,
            "memory",
            &a1,
            "remember",
            json!({"name": "n".repeat(101), "fact": "f"}),
        )
        .await,
    );
    assert!(m.starts_with("name:"), "{m}");
    let m = invalid(call(&rt, "memory", &a1, "remember", json!({"name": "x"})).await);
    assert!(m.contains("missing field `fact`"), "{m}");
}

/// A small web server: an HTML page, redirects (one within the grant, one to a host
/// outside it), a large body, a long text and a 404.
async fn web_server() -> (u16, tokio::task::JoinHandle<()>) {
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = r#"<!doctype html><html><head><title>The &amp; Page</title>
        <style>body { color: red }</style><script>alert("no")</script></head>
        <body><nav><a href="/">Home</a></nav>
        <h1>Main   title</h1><p>First <b>bold</b> paragraph with a <a href="/docs?x=1">link</a>.</p>
        <ul><li>one</li><li>two &lt;2&gt;</li></ul><!-- hidden comment -->
        <pre>keep   spacing</pre></body></html>"#;
    let app = Router::new()
        .route(
            "/page",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        )
        .route("/redirect", get(|| async { Redirect::to("/page") }))
        .route(
            "/away",
            get(move || async move { Redirect::to(&format!("http://localhost:{port}/page")) }),
        )
        .route("/big", get(|| async { "y".repeat(3 * 1024 * 1024) }))
        .route("/long", get(|| async { "z".repeat(50_000) }))
        .route(
            "/image",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0u8; 16]) }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "nope").into_response() }),
        );
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, handle)
}

#[tokio::test]
async fn web_fetch_reads_pages_follows_allowed_redirects_and_keeps_its_limits() {
    let (port, server) = web_server().await;
    let base = format!("http://127.0.0.1:{port}");
    // Test-only operator config: private networks allowed, and web_fetch narrowed to the
    // local server.
    let grants = Grants {
        allow_private_networks: true,
        plugins: HashMap::from([(
            "web_fetch".to_owned(),
            Grant {
                allowed_hosts: Some(vec![base.parse::<HostPattern>().unwrap()]),
                ..Grant::as_requested()
            },
        )]),
        ..Grants::default()
    };
    let rt = runtime_with("web_fetch", grants).await;
    let c = ctx("agt_a", "ses_a");
    let fetch = |url: String| json!({"url": url});

    let page = json_out(call(&rt, "web_fetch", &c, "fetch", fetch(format!("{base}/page"))).await);
    assert_eq!(page["status"], 200);
    assert_eq!(page["title"], "The & Page");
    assert_eq!(
        page["content"],
        format!(
            "[Home]({base}/)\n\n# Main title\n\nFirst **bold** paragraph with a [link]({base}/docs?x=1).\n\n\
             - one\n- two <2>\n\n```\nkeep   spacing\n```"
        )
    );
    assert_eq!(page["truncated"], false);

    // A redirect within the grant is followed.
    let redirected = json_out(
        call(
            &rt,
            "web_fetch",
            &c,
            "fetch",
            fetch(format!("{base}/redirect")),
        )
        .await,
    );
    assert_eq!(redirected["url"], format!("{base}/page"));
    assert_eq!(redirected["title"], "The & Page");
    // A redirect to a host outside the grant is refused by the host.
    match call(&rt, "web_fetch", &c, "fetch", fetch(format!("{base}/away"))).await {
        Err(ToolError::Denied(m)) => {
            assert!(
                m.contains(&format!("redirect to http://localhost:{port}/page refused")),
                "{m}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Limits: text cut at max_chars; bodies over 2 MiB refused; non-text refused.
    let long = json_out(
        call(
            &rt,
            "web_fetch",
            &c,
            "fetch",
            json!({"url": format!("{base}/long"), "max_chars": 1000}),
        )
        .await,
    );
    assert_eq!(long["content"].as_str().unwrap().len(), 1000);
    assert_eq!(long["truncated"], true);
    assert_eq!(long["total_chars"], 50_000);
    match call(&rt, "web_fetch", &c, "fetch", fetch(format!("{base}/big"))).await {
        Err(ToolError::Failed(m)) => assert!(m.contains("larger than 2097152 bytes"), "{m}"),
        other => panic!("expected a size failure, got {other:?}"),
    }
    match call(
        &rt,
        "web_fetch",
        &c,
        "fetch",
        fetch(format!("{base}/image")),
    )
    .await
    {
        Err(ToolError::Failed(m)) => assert!(m.contains("image/png"), "{m}"),
        other => panic!("expected a content-type failure, got {other:?}"),
    }
    assert!(matches!(
        call(&rt, "web_fetch", &c, "fetch", fetch(format!("{base}/missing"))).await,
        Err(ToolError::NotFound(m)) if m.contains("HTTP 404")
    ));

    // Bad arguments name the field.
    let m = invalid(
        call(
            &rt,
            "web_fetch",
            &c,
            "fetch",
            json!({"url": "ftp://example.com/"}),
        )
        .await,
    );
    assert!(m.starts_with("url:"), "{m}");
    let m = invalid(
        call(
            &rt,
            "web_fetch",
            &c,
            "fetch",
            json!({"url": format!("{base}/page"), "max_chars": 0}),
        )
        .await,
    );
    assert!(m.starts_with("max_chars:"), "{m}");
    let m = invalid(call(&rt, "web_fetch", &c, "fetch", json!({})).await);
    assert!(m.contains("missing field `url`"), "{m}");

    // With the default policy (as shipped), the same local server is a private address.
    let default_rt = runtime("web_fetch").await;
    match call(
        &default_rt,
        "web_fetch",
        &c,
        "fetch",
        fetch(format!("{base}/page")),
    )
    .await
    {
        Err(ToolError::Denied(m)) => assert!(m.contains("private address"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.abort();
}
