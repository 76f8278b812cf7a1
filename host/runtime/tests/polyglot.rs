//! The Python and JavaScript SDKs end to end: the examples in `plugins/examples/` built
//! from source with the pinned toolchains against `wit/0.2.0`, loaded by the real runtime
//! and called (tool arguments, key-value state across calls, sessions and a runtime
//! restart, prompt fragments with config, bad arguments and handler exceptions as tool
//! errors, every hook's decisions, hook exceptions failing closed). Plugins scaffolded from
//! the templates are built and called through the binary in `host/server/tests/plugin_sdk.rs`.

mod support;

use std::path::{Path, PathBuf};

use everruns_runtime::{
    CacheStatus, CallContext, CapabilityId, Hook, KvBackend, KvOwner, KvScope, KvWrites, MemoryKv,
    ModelDecision, ModelRequest, Plugin, Runtime, ToolCall, ToolDecision, ToolError, ToolFailure,
    ToolOutput, ToolRequest,
};
use everruns_testkit::polyglot::{self, Lang};
use serde_json::{Value, json};
use support::*;

fn ctx(agent: &str, session: &str) -> CallContext {
    CallContext {
        agent_id: agent.into(),
        session_id: session.into(),
        run_id: "run_1".into(),
        idempotency_key: Some("run_1:1:call_1".into()),
        config: None,
    }
}

async fn call(
    runtime: &Runtime,
    id: &str,
    ctx: &CallContext,
    tool: &str,
    arguments: Value,
) -> Result<ToolOutput, ToolFailure> {
    let call = ToolCall {
        name: tool.into(),
        arguments,
    };
    runtime.call_tool(id, ctx, &call).await.unwrap().result
}

async fn json_of(runtime: &Runtime, id: &str, ctx: &CallContext, tool: &str, args: Value) -> Value {
    match call(runtime, id, ctx, tool, args).await {
        Ok(ToolOutput::Json(v)) => v,
        other => panic!("{tool}: expected JSON output, got {other:?}"),
    }
}

async fn text_of(
    runtime: &Runtime,
    id: &str,
    ctx: &CallContext,
    tool: &str,
    args: Value,
) -> String {
    match call(runtime, id, ctx, tool, args).await {
        Ok(ToolOutput::Text(t)) => t,
        other => panic!("{tool}: expected text output, got {other:?}"),
    }
}

/// The tool error a call returned (a plugin error, not a host failure).
async fn tool_error(
    runtime: &Runtime,
    id: &str,
    ctx: &CallContext,
    tool: &str,
    args: Value,
) -> ToolError {
    match call(runtime, id, ctx, tool, args).await {
        Err(ToolFailure::Plugin(e)) => e,
        other => panic!("{tool}: expected a tool error, got {other:?}"),
    }
}

async fn built_example(lang: Lang, root: &Path) -> PathBuf {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || polyglot::example_plugin(lang, &root))
        .await
        .unwrap()
}

/// Loads and registers the plugin in `dir`.
async fn load(runtime: &Runtime, dir: &Path) -> CacheStatus {
    let plugin = runtime
        .load_plugin(dir)
        .await
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let status = plugin.cache_status();
    runtime.insert(plugin);
    status
}

const ALL_HOOKS: [Hook; 3] = [Hook::BeforeModel, Hook::BeforeTool, Hook::AfterTool];

fn model_request(step: u32) -> ModelRequest {
    ModelRequest {
        last_user_message: "Hi".into(),
        tools: vec!["notes__add_note".into(), "tally__add".into()],
        step,
    }
}

fn tool_request(name: &str, arguments: Value) -> ToolRequest {
    ToolRequest {
        name: name.into(),
        arguments,
        tool_call_id: "call_1".into(),
        step: 1,
    }
}

/// The `before-model` decision; the hook must not write state.
async fn before_model(plugin: &Plugin, ctx: &CallContext, step: u32) -> ModelDecision {
    let mut writes = KvWrites::default();
    let decision = plugin
        .before_model(ctx, &model_request(step), &mut writes)
        .await
        .unwrap();
    assert!(writes.is_empty(), "{writes:?}");
    decision
}

/// The `before-tool` decision; the hook must not write state.
async fn before_tool(plugin: &Plugin, ctx: &CallContext, tool: &str, args: Value) -> ToolDecision {
    let mut writes = KvWrites::default();
    let decision = plugin
        .before_tool(ctx, &tool_request(tool, args), &mut writes)
        .await
        .unwrap();
    assert!(writes.is_empty(), "{writes:?}");
    decision
}

/// The `after-tool` replacement (`None`: kept); the hook must not write state.
async fn after_tool(
    plugin: &Plugin,
    ctx: &CallContext,
    tool: &str,
    args: Value,
    result: Result<ToolOutput, String>,
) -> Option<Result<ToolOutput, String>> {
    let mut writes = KvWrites::default();
    let replaced = plugin
        .after_tool(ctx, &tool_request(tool, args), &result, &mut writes)
        .await
        .unwrap();
    assert!(writes.is_empty(), "{writes:?}");
    replaced
}

fn scope(plugin: &str, owner: KvOwner) -> KvScope {
    KvScope {
        plugin: CapabilityId::parse(plugin).unwrap(),
        owner,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_example(Lang::Python, tmp.path()).await;
    let kv = MemoryKv::default();
    let runtime = runtime_with(config(8), kv.clone());
    load(&runtime, &dir).await;

    let plugin = runtime.get("notes").unwrap();
    assert_eq!(plugin.info().version, "0.1.0");
    assert_eq!(
        plugin.info().description,
        "A notebook for the session: add, read, list and delete notes"
    );
    let names: Vec<_> = plugin.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["add_note", "read_note", "list_notes", "delete_note"]
    );
    let add = &plugin.tools()[0];
    assert_eq!(add.parameters["required"], json!(["title", "text"]));
    assert_eq!(add.parameters["properties"]["title"]["type"], "string");
    assert_eq!(
        plugin.tools()[2].parameters,
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    );

    // The prompt fragment, with the manifest's default config and an agent's override.
    let s1 = ctx("agt_1", "ses_1");
    let prompt = runtime.system_prompt("notes", &s1).await.unwrap().unwrap();
    assert!(prompt.contains("`add_note`"), "{prompt}");
    assert!(prompt.ends_with("Keep notes short."), "{prompt}");
    let mut detailed = s1.clone();
    detailed.config = Some(json!({"style": "detailed"}));
    let prompt = runtime
        .system_prompt("notes", &detailed)
        .await
        .unwrap()
        .unwrap();
    assert!(prompt.ends_with("Keep notes detailed."), "{prompt}");

    // Arguments in, state kept across calls (each call is a fresh instance).
    let out = runtime
        .call_tool(
            "notes",
            &s1,
            &ToolCall {
                name: "add_note".into(),
                arguments: json!({"title": "groceries", "text": "milk"}),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        out.result.unwrap(),
        ToolOutput::Json(json!({"saved": "groceries", "replaced": false, "notes": 1}))
    );
    assert_eq!(out.logs.len(), 1);
    assert_eq!(out.logs[0].message, "saved note 'groceries'");
    let added = json_of(
        &runtime,
        "notes",
        &s1,
        "add_note",
        json!({"title": "todo", "text": "call Ada"}),
    )
    .await;
    assert_eq!(
        added,
        json!({"saved": "todo", "replaced": false, "notes": 2})
    );
    let replaced = json_of(
        &runtime,
        "notes",
        &s1,
        "add_note",
        json!({"title": "groceries", "text": "milk, eggs"}),
    )
    .await;
    assert_eq!(
        replaced,
        json!({"saved": "groceries", "replaced": true, "notes": 2})
    );
    assert_eq!(
        text_of(
            &runtime,
            "notes",
            &s1,
            "read_note",
            json!({"title": "groceries"})
        )
        .await,
        "milk, eggs"
    );
    assert_eq!(
        json_of(&runtime, "notes", &s1, "list_notes", json!({})).await,
        json!(["groceries", "todo"])
    );

    // The manifest scopes state to the session.
    let s2 = ctx("agt_1", "ses_2");
    assert_eq!(
        json_of(&runtime, "notes", &s2, "list_notes", json!({})).await,
        json!([])
    );

    // Bad arguments are tool errors naming the field; the host is not involved.
    let e = tool_error(
        &runtime,
        "notes",
        &s1,
        "add_note",
        json!({"title": 5, "text": "x"}),
    )
    .await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`title`: expected string, got integer".into())
    );
    let e = tool_error(&runtime, "notes", &s1, "add_note", json!({"title": "x"})).await;
    assert_eq!(e, ToolError::InvalidArguments("`text`: required".into()));
    let e = tool_error(
        &runtime,
        "notes",
        &s1,
        "add_note",
        json!({"title": "", "text": "x"}),
    )
    .await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`title`: must be at least 1 characters".into())
    );
    let e = tool_error(
        &runtime,
        "notes",
        &s1,
        "read_note",
        json!({"title": "x", "colour": "red"}),
    )
    .await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`colour`: unknown field".into())
    );
    let e = tool_error(&runtime, "notes", &s1, "list_notes", json!([1])).await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("the arguments: expected object, got array".into())
    );
    let e = tool_error(&runtime, "notes", &s1, "nope", json!({})).await;
    assert_eq!(e, ToolError::NotFound("no tool named `nope`".into()));
    let e = tool_error(
        &runtime,
        "notes",
        &s1,
        "read_note",
        json!({"title": "missing"}),
    )
    .await;
    assert_eq!(e, ToolError::NotFound("no note titled 'missing'".into()));

    // A handler that raises (here: on a value it cannot parse) is a `failed` tool error
    // with the exception, and a log line with the traceback; never a trap.
    let session = scope("notes", KvOwner::Session("ses_1".into()));
    kv.set(&session, "note:broken", b"{not json".to_vec())
        .await
        .unwrap();
    let out = runtime
        .call_tool(
            "notes",
            &s1,
            &ToolCall {
                name: "read_note".into(),
                arguments: json!({"title": "broken"}),
            },
        )
        .await
        .unwrap();
    match out.result {
        Err(ToolFailure::Plugin(ToolError::Failed(m))) => {
            assert!(m.starts_with("JSONDecodeError: "), "{m}")
        }
        other => panic!("expected a failed tool error, got {other:?}"),
    }
    assert!(out.logs[0].message.contains("Traceback"), "{:?}", out.logs);
    assert!(kv.delete(&session, "note:broken").await.unwrap());

    // Hooks. `before-model` reminds the model of the session's notes (none in ses_2).
    assert_eq!(plugin.wit_version(), "0.2.0");
    assert_eq!(plugin.hooks(), ALL_HOOKS);
    assert_eq!(
        before_model(&plugin, &s1, 0).await,
        ModelDecision::AddContext("Notes saved so far: groceries, todo.".into())
    );
    assert_eq!(before_model(&plugin, &s2, 0).await, ModelDecision::Continue);

    // `before-tool` blocks a note mentioning a password, lets everything else through, and
    // fails closed when it raises (here: `text` is not a string).
    assert_eq!(
        before_tool(
            &plugin,
            &s1,
            "notes__add_note",
            json!({"title": "wifi", "text": "The PASSWORD is hunter2"})
        )
        .await,
        ToolDecision::Block("notes must not hold passwords".into())
    );
    for (tool, args) in [
        (
            "notes__add_note",
            json!({"title": "wifi", "text": "ask the host"}),
        ),
        ("notes__read_note", json!({"title": "password"})),
        ("tally__add", json!({"counter": "password"})),
    ] {
        assert_eq!(
            before_tool(&plugin, &s1, tool, args).await,
            ToolDecision::Continue,
            "{tool}"
        );
    }
    match before_tool(
        &plugin,
        &s1,
        "notes__add_note",
        json!({"title": "t", "text": 5}),
    )
    .await
    {
        ToolDecision::Block(reason) => assert!(
            reason.starts_with("hook `before-tool` failed: AttributeError: "),
            "{reason}"
        ),
        other => panic!("expected a block, got {other:?}"),
    }

    // `after-tool` redacts long numbers from what `read_note` returns, and keeps the rest.
    let read = json!({"title": "card"});
    assert_eq!(
        after_tool(
            &plugin,
            &s1,
            "notes__read_note",
            read.clone(),
            Ok(ToolOutput::Text("card 4111111111111111, pin 1234".into()))
        )
        .await,
        Some(Ok(ToolOutput::Text("card [redacted], pin 1234".into())))
    );
    for (tool, result) in [
        ("notes__read_note", Ok(ToolOutput::Text("pin 1234".into()))),
        ("notes__read_note", Err("no note titled 'card'".to_string())),
        (
            "notes__list_notes",
            Ok(ToolOutput::Json(json!(["4111111111111111"]))),
        ),
        (
            "other__echo",
            Ok(ToolOutput::Text("4111111111111111".into())),
        ),
    ] {
        assert_eq!(
            after_tool(&plugin, &s1, tool, read.clone(), result).await,
            None,
            "{tool}"
        );
    }

    assert_eq!(
        text_of(
            &runtime,
            "notes",
            &s1,
            "delete_note",
            json!({"title": "todo"})
        )
        .await,
        "deleted 'todo'"
    );

    // A restarted runtime (same KV backend, same compile cache) sees the same notes and
    // loads the component from the cache.
    drop(runtime);
    let runtime = runtime_with(config(8), kv);
    assert_eq!(load(&runtime, &dir).await, CacheStatus::Hit);
    assert_eq!(
        json_of(&runtime, "notes", &s1, "list_notes", json!({})).await,
        json!(["groceries"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_example_tally() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_example(Lang::Js, tmp.path()).await;
    let kv = MemoryKv::default();
    let runtime = runtime_with(config(8), kv.clone());
    load(&runtime, &dir).await;

    let plugin = runtime.get("tally").unwrap();
    assert_eq!(plugin.info().version, "0.1.0");
    let names: Vec<_> = plugin.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["add", "get", "reset", "list"]);
    assert_eq!(plugin.tools()[0].parameters["required"], json!(["counter"]));
    assert_eq!(
        plugin.tools()[0].parameters["properties"]["amount"]["type"],
        "integer"
    );

    let a1 = ctx("agt_1", "ses_1");
    let prompt = runtime.system_prompt("tally", &a1).await.unwrap().unwrap();
    assert!(
        prompt.starts_with("You can keep named counts of things"),
        "{prompt}"
    );
    let mut tea = a1.clone();
    tea.config = Some(json!({"unit": "cups of tea"}));
    let prompt = runtime.system_prompt("tally", &tea).await.unwrap().unwrap();
    assert!(
        prompt.starts_with("You can keep named counts of cups of tea"),
        "{prompt}"
    );

    let out = runtime
        .call_tool(
            "tally",
            &a1,
            &ToolCall {
                name: "add".into(),
                arguments: json!({"counter": "cups"}),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        out.result.unwrap(),
        ToolOutput::Json(json!({"counter": "cups", "value": 1}))
    );
    assert_eq!(out.logs.len(), 1);
    assert_eq!(out.logs[0].message, "cups is now 1");
    let added = json_of(
        &runtime,
        "tally",
        &a1,
        "add",
        json!({"counter": "cups", "amount": 2}),
    )
    .await;
    assert_eq!(added, json!({"counter": "cups", "value": 3}));
    json_of(
        &runtime,
        "tally",
        &a1,
        "add",
        json!({"counter": "naps", "amount": -1}),
    )
    .await;

    // Agent-scoped state: another session of the agent sees it, another agent does not.
    let a1_other_session = ctx("agt_1", "ses_9");
    assert_eq!(
        json_of(
            &runtime,
            "tally",
            &a1_other_session,
            "get",
            json!({"counter": "cups"})
        )
        .await,
        json!({"counter": "cups", "value": 3})
    );
    assert_eq!(
        json_of(&runtime, "tally", &a1, "list", json!({})).await,
        json!({"cups": 3, "naps": -1})
    );
    let a2 = ctx("agt_2", "ses_1");
    let e = tool_error(&runtime, "tally", &a2, "get", json!({"counter": "cups"})).await;
    assert_eq!(e, ToolError::NotFound("no counter named `cups`".into()));

    // Bad arguments are tool errors naming the field.
    let e = tool_error(
        &runtime,
        "tally",
        &a1,
        "add",
        json!({"counter": "cups", "amount": "two"}),
    )
    .await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`amount`: expected integer, got string".into())
    );
    let e = tool_error(
        &runtime,
        "tally",
        &a1,
        "add",
        json!({"counter": "cups", "amount": 1.5}),
    )
    .await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`amount`: expected integer, got number".into())
    );
    let e = tool_error(&runtime, "tally", &a1, "add", json!({"counter": "Cups!"})).await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`counter`: must match ^[a-z0-9_-]{1,40}$".into())
    );
    let e = tool_error(&runtime, "tally", &a1, "add", json!({})).await;
    assert_eq!(e, ToolError::InvalidArguments("`counter`: required".into()));
    let e = tool_error(
        &runtime,
        "tally",
        &a1,
        "add",
        json!({"counter": "c", "amount": 2000000}),
    )
    .await;
    assert_eq!(
        e,
        ToolError::InvalidArguments("`amount`: must be <= 1000000".into())
    );

    // A handler that throws is a `failed` tool error with the exception; never a trap.
    let agent = scope("tally", KvOwner::Agent("agt_1".into()));
    kv.set(&agent, "counter:broken", b"{not json".to_vec())
        .await
        .unwrap();
    let e = tool_error(&runtime, "tally", &a1, "get", json!({"counter": "broken"})).await;
    assert!(
        matches!(&e, ToolError::Failed(m) if m.starts_with("SyntaxError: ")),
        "{e:?}"
    );
    assert!(kv.delete(&agent, "counter:broken").await.unwrap());

    // Hooks. `before-model` enforces the step budget from the config (default 20).
    assert_eq!(plugin.wit_version(), "0.2.0");
    assert_eq!(plugin.hooks(), ALL_HOOKS);
    assert_eq!(
        before_model(&plugin, &a1, 19).await,
        ModelDecision::Continue
    );
    assert_eq!(
        before_model(&plugin, &a1, 20).await,
        ModelDecision::Block("step budget of 20 model calls used up".into())
    );
    let mut short = a1.clone();
    short.config = Some(json!({"max_steps": 3}));
    assert_eq!(
        before_model(&plugin, &short, 3).await,
        ModelDecision::Block("step budget of 3 model calls used up".into())
    );

    // `before-tool` lowercases counter names, wants approval for large amounts, leaves
    // other calls alone, and fails closed when it throws (here: `counter` is a number).
    assert_eq!(
        before_tool(
            &plugin,
            &a1,
            "tally__add",
            json!({"counter": "Cups", "amount": 2})
        )
        .await,
        ToolDecision::Rewrite(json!({"counter": "cups", "amount": 2}))
    );
    assert_eq!(
        before_tool(
            &plugin,
            &a1,
            "tally__add",
            json!({"counter": "cups", "amount": -5000})
        )
        .await,
        ToolDecision::RequireApproval("changing `cups` by -5000".into())
    );
    for (tool, args) in [
        ("tally__add", json!({"counter": "cups", "amount": 1000})),
        ("tally__list", json!({})),
        ("notes__add_note", json!({"counter": "Cups"})),
    ] {
        assert_eq!(
            before_tool(&plugin, &a1, tool, args).await,
            ToolDecision::Continue,
            "{tool}"
        );
    }
    match before_tool(&plugin, &a1, "tally__get", json!({"counter": 5})).await {
        ToolDecision::Block(reason) => assert!(
            reason.starts_with("hook `before-tool` failed: TypeError: "),
            "{reason}"
        ),
        other => panic!("expected a block, got {other:?}"),
    }

    // `after-tool` adds the configured unit to what `get` returns, and keeps the rest.
    let get = json!({"counter": "cups"});
    let count = || Ok(ToolOutput::Json(json!({"counter": "cups", "value": 3})));
    assert_eq!(
        after_tool(&plugin, &a1, "tally__get", get.clone(), count()).await,
        Some(Ok(ToolOutput::Json(
            json!({"counter": "cups", "value": 3, "unit": "things"})
        )))
    );
    assert_eq!(
        after_tool(&plugin, &tea, "tally__get", get.clone(), count()).await,
        Some(Ok(ToolOutput::Json(
            json!({"counter": "cups", "value": 3, "unit": "cups of tea"})
        )))
    );
    for (tool, result) in [
        ("tally__get", Err("no counter named `cups`".to_string())),
        ("tally__list", count()),
        ("notes__read_note", count()),
    ] {
        assert_eq!(
            after_tool(&plugin, &a1, tool, get.clone(), result).await,
            None,
            "{tool}"
        );
    }

    assert_eq!(
        text_of(&runtime, "tally", &a1, "reset", json!({"counter": "naps"})).await,
        "reset naps"
    );

    drop(runtime);
    let runtime = runtime_with(config(8), kv);
    assert_eq!(load(&runtime, &dir).await, CacheStatus::Hit);
    assert_eq!(
        json_of(&runtime, "tally", &a1, "list", json!({})).await,
        json!({"cups": 3})
    );
}

/// The templates ship copies of the SDK and the WIT (a scaffolded plugin builds on its
/// own); they must not drift from the originals.
#[test]
fn template_copies_match_the_sdk_and_wit() {
    let root = polyglot::repo_root();
    let wit = std::fs::read_to_string(root.join("wit/0.2.0/capability.wit")).unwrap();
    for (lang, sdk_file, pin) in [
        ("python", "everruns_sdk.py", "requirements.txt"),
        ("js", "everruns.js", "package.json"),
    ] {
        let sdk = root.join("sdk").join(lang);
        let template = sdk.join("template");
        let copy = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            copy(&template.join("wit/capability.wit")),
            wit,
            "sdk/{lang}/template/wit/capability.wit differs from wit/0.2.0/capability.wit: copy it over"
        );
        assert_eq!(
            copy(&template.join(sdk_file)),
            copy(&sdk.join(sdk_file)),
            "sdk/{lang}/template/{sdk_file} differs from sdk/{lang}/{sdk_file}: copy it over"
        );
        if lang == "python" {
            assert_eq!(copy(&template.join(pin)), copy(&sdk.join(pin)));
        } else {
            // The template's npm manifest and lockfile pin the same toolchain.
            let pins = |p: &Path| -> Value {
                let v: Value = serde_json::from_str(&copy(p)).unwrap();
                v["devDependencies"].clone()
            };
            assert_eq!(pins(&template.join(pin)), pins(&sdk.join(pin)));
            let lock = |p: &Path| -> Value {
                let mut v: Value = serde_json::from_str(&copy(p)).unwrap();
                let packages = v["packages"].as_object_mut().unwrap();
                packages.remove("");
                Value::Object(packages.clone())
            };
            assert_eq!(
                lock(&template.join("package-lock.json")),
                lock(&sdk.join("package-lock.json")),
                "the template's package-lock.json must lock what sdk/js's does"
            );
        }
    }
}
