//! Both WIT versions side by side: the 0.1.0 built-ins exactly as they shipped (frozen in
//! `tests/fixtures/v0.1.0`) load and work next to 0.2.0 components with hooks, in one
//! runtime; a 0.1.0 component cannot claim hooks; key-value writes are buffered for the
//! caller, read back inside the call, and dropped when the call fails.

mod support;

use std::path::{Path, PathBuf};

use everruns_runtime::{
    CallContext, Error, KvOwner, KvScope, KvWrites, ModelDecision, ModelRequest, ToolCall,
    ToolDecision, ToolOutput, ToolRequest,
};
use serde_json::json;
use support::*;

fn fixture(id: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v0.1.0")
        .join(id)
}

fn ctx(config: serde_json::Value) -> CallContext {
    CallContext {
        agent_id: "agt_v".into(),
        session_id: "ses_v".into(),
        run_id: "run_v".into(),
        idempotency_key: Some("run_v:1:call_1".into()),
        config: Some(config),
    }
}

#[tokio::test]
async fn the_shipped_0_1_0_builtins_work_next_to_0_2_0_plugins() {
    let runtime = runtime();
    for id in [
        "current_time",
        "web_fetch",
        "session_files",
        "todo",
        "memory",
    ] {
        let plugin = runtime.load_plugin(&fixture(id)).await.unwrap();
        assert_eq!(plugin.wit_version(), "0.1.0", "{id}");
        assert!(plugin.hooks().is_empty());
        assert!(!plugin.tools().is_empty(), "{id}");
        runtime.insert(plugin);
    }
    let root = tempfile::tempdir().unwrap();
    let hooks = plugin_dir(
        root.path(),
        "hooks",
        "hooks",
        everruns_testkit::guests::HOOKS,
    );
    let hooks = runtime.load_plugin(&hooks).await.unwrap();
    assert_eq!(hooks.wit_version(), "0.2.0");
    assert_eq!(hooks.hooks().len(), 3);
    runtime.insert(hooks.clone());

    // A 0.1.0 tool call and a 0.2.0 hook, from the same runtime.
    let now = runtime
        .call_tool(
            "current_time",
            &ctx(json!({})),
            &ToolCall {
                name: "now".into(),
                arguments: json!({"timezone": "UTC"}),
            },
        )
        .await
        .unwrap();
    assert!(now.result.is_ok(), "{:?}", now.result);
    // The 0.1.0 todo plugin writes its state through the buffer like any call.
    let todo = runtime.get("todo").unwrap();
    let mut writes = KvWrites::default();
    let added = todo
        .call_tool_buffered(
            &ctx(json!({})),
            &ToolCall {
                name: "write_todos".into(),
                arguments: json!({"todos": [{"content": "ship 0.2.0", "status": "pending"}]}),
            },
            &mut writes,
        )
        .await;
    assert!(added.result.is_ok(), "{:?}", added.result);
    assert!(!writes.is_empty(), "the call's writes are buffered");

    let mut hook_writes = KvWrites::default();
    let decision = hooks
        .before_tool(
            &ctx(json!({"before_tool": "rewrite:{\"a\":1}"})),
            &ToolRequest {
                name: "todo__add".into(),
                arguments: json!({"title": "x"}),
                tool_call_id: "call_1".into(),
                step: 1,
            },
            &mut hook_writes,
        )
        .await
        .unwrap();
    assert_eq!(decision, ToolDecision::Rewrite(json!({"a": 1})));
    let decision = hooks
        .before_model(
            &ctx(json!({"before_model": "add-context:be nice"})),
            &ModelRequest {
                last_user_message: "hi".into(),
                tools: vec!["todo__add".into()],
                step: 0,
            },
            &mut hook_writes,
        )
        .await
        .unwrap();
    assert_eq!(decision, ModelDecision::AddContext("be nice".into()));
    // Each hook counted its call in the buffer; the second saw the first's write.
    let scope = KvScope {
        plugin: hooks.id().clone(),
        owner: KvOwner::Session("ses_v".into()),
    };
    let counted: Vec<(String, String)> = hook_writes
        .iter()
        .filter(|(s, ..)| **s == scope)
        .map(|(_, k, v)| {
            (
                k.to_owned(),
                String::from_utf8(v.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counted,
        [
            ("calls/before-model".to_owned(), "1".to_owned()),
            ("calls/before-tool".to_owned(), "1".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_0_1_0_component_cannot_claim_hooks() {
    let root = tempfile::tempdir().unwrap();
    let manifest =
        std::fs::read_to_string(fixture("current_time").join("capability.toml")).unwrap();
    let dir = root.path().join("current_time");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("current_time").join("current_time.wasm"),
        dir.join("current_time.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.join("capability.toml"),
        format!("hooks = [\"before-tool\"]\n{manifest}"),
    )
    .unwrap();
    match runtime().load_plugin(&dir).await {
        Err(Error::Manifest { field, message, .. }) => {
            assert_eq!(field, "hooks");
            assert!(message.contains("0.1.0"), "{message}");
        }
        other => panic!("expected a manifest error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_call_leaves_the_buffer_as_it_was() {
    let runtime = runtime();
    let root = tempfile::tempdir().unwrap();
    let dir = plugin_dir(
        root.path(),
        "hooks",
        "hooks",
        everruns_testkit::guests::HOOKS,
    );
    let hooks = runtime.load_plugin(&dir).await.unwrap();
    let call = |name: &str| ToolCall {
        name: name.into(),
        arguments: json!({"ms": 0}),
    };
    let mut writes = KvWrites::default();
    let first = hooks
        .call_tool_buffered(&ctx(json!({})), &call("bump"), &mut writes)
        .await;
    assert_eq!(first.result.unwrap(), ToolOutput::Text("1".into()));
    // The second call reads the first one's (uncommitted) write.
    let second = hooks
        .call_tool_buffered(&ctx(json!({})), &call("bump"), &mut writes)
        .await;
    assert_eq!(second.result.unwrap(), ToolOutput::Text("2".into()));
    let before = writes.clone();
    // A hook that traps keeps nothing it wrote before the trap.
    let failed = hooks
        .before_tool(
            &ctx(json!({"before_tool": "trap"})),
            &ToolRequest {
                name: "hooks__bump".into(),
                arguments: json!({}),
                tool_call_id: "call_2".into(),
                step: 2,
            },
            &mut writes,
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(writes, before);
    // Nothing reached the backend: a fresh buffer starts from the stored state again.
    let mut fresh = KvWrites::default();
    let again = hooks
        .call_tool_buffered(&ctx(json!({})), &call("bump"), &mut fresh)
        .await;
    assert_eq!(again.result.unwrap(), ToolOutput::Text("1".into()));
}
