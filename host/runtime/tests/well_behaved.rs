//! The well-behaved plugin end to end: load, info, tools, prompt, calls with config,
//! idempotency key and KV, KV surviving a runtime restart, and the CLI operations.

mod support;

use everruns_runtime::{
    CallContext, LogLevel, MemoryKv, ToolCall, ToolError, ToolFailure, ToolOutput,
};
use serde_json::json;
use support::*;

fn ctx(agent: &str, key: Option<&str>) -> CallContext {
    CallContext {
        agent_id: agent.into(),
        session_id: "ses_1".into(),
        run_id: "run_1".into(),
        idempotency_key: key.map(str::to_owned),
        config: None,
    }
}

fn call(name: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        name: name.into(),
        arguments,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_plugin_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path(), "wb", "well-behaved", WELL_BEHAVED);
    let runtime = runtime();
    let plugin = runtime.load_plugin(&dir).await.unwrap();
    runtime.insert(plugin.clone());

    assert_eq!(plugin.info().id, "well-behaved");
    assert_eq!(plugin.info().version, "0.1.0");
    let names: Vec<_> = plugin.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["greet", "count", "ping", "echo"]);
    assert_eq!(plugin.tools()[0].parameters["required"], json!(["name"]));
    assert_eq!(plugin.digest().len(), 64);

    // Prompt fragment uses the default config, then the agent's override.
    let prompt = plugin.system_prompt(&ctx("agt_a", None)).await.unwrap();
    assert_eq!(
        prompt.as_deref(),
        Some("You can greet people; say `hello`.")
    );
    let mut custom = ctx("agt_a", None);
    custom.config = Some(json!({"greeting": "ahoy"}));
    let prompt = plugin.system_prompt(&custom).await.unwrap();
    assert_eq!(prompt.as_deref(), Some("You can greet people; say `ahoy`."));

    // A call using the config, with a log line in the trace.
    let out = runtime
        .call_tool(
            "well-behaved",
            &custom,
            &call("greet", json!({"name": "Ada"})),
        )
        .await
        .unwrap();
    assert_eq!(out.result.unwrap(), ToolOutput::Text("ahoy, Ada!".into()));
    assert_eq!(out.logs.len(), 1);
    assert_eq!(out.logs[0].level, LogLevel::Info);
    assert_eq!(out.logs[0].message, "greeting Ada");
    assert_eq!(out.digest, plugin.digest());
    assert_eq!(out.version, "0.1.0");

    // Plugin-reported errors are data.
    let out = runtime
        .call_tool("well-behaved", &custom, &call("greet", json!({})))
        .await
        .unwrap();
    assert!(matches!(
        out.result,
        Err(ToolFailure::Plugin(ToolError::InvalidArguments(m))) if m.contains("name")
    ));
    let out = runtime
        .call_tool("well-behaved", &custom, &call("nope", json!({})))
        .await
        .unwrap();
    assert!(matches!(
        out.result,
        Err(ToolFailure::Plugin(ToolError::NotFound(_)))
    ));
    assert!(matches!(
        runtime
            .call_tool("missing", &custom, &call("x", json!({})))
            .await,
        Err(everruns_runtime::Error::NotLoaded(_))
    ));

    // KV counter per agent, idempotent per key.
    let count = |agent: &'static str, key: &'static str| {
        let runtime = runtime.clone();
        async move {
            match runtime
                .call_tool(
                    "well-behaved",
                    &ctx(agent, Some(key)),
                    &call("count", json!({})),
                )
                .await
                .unwrap()
                .result
                .unwrap()
            {
                ToolOutput::Json(v) => (
                    v["count"].as_u64().unwrap(),
                    v["replayed"].as_bool().unwrap(),
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    assert_eq!(count("agt_a", "k1").await, (1, false));
    assert_eq!(count("agt_a", "k2").await, (2, false));
    assert_eq!(
        count("agt_a", "k2").await,
        (2, true),
        "retry with the same key replays"
    );
    assert_eq!(
        count("agt_b", "k1").await,
        (1, false),
        "agents have separate state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_state_survives_a_runtime_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    plugin_dir(&plugins, "wb", "well-behaved", WELL_BEHAVED);
    let kv = MemoryKv::default();
    let count = |runtime: everruns_runtime::Runtime, key: &'static str| async move {
        match runtime
            .call_tool(
                "well-behaved",
                &ctx("agt_r", Some(key)),
                &call("count", json!({})),
            )
            .await
            .unwrap()
            .result
            .unwrap()
        {
            ToolOutput::Json(v) => v["count"].as_u64().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };

    let first = runtime_with(config(8), kv.clone());
    let report = first.sync_dir(&plugins).await;
    assert_eq!(report.added.len(), 1, "{report:?}");
    assert_eq!(count(first.clone(), "a").await, 1);
    assert_eq!(count(first.clone(), "b").await, 2);
    drop(first);

    let second = runtime_with(config(8), kv);
    second.sync_dir(&plugins).await;
    assert_eq!(count(second.clone(), "c").await, 3);
    assert_eq!(
        count(second.clone(), "b").await,
        2,
        "idempotency record survived too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_install_list_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let src = plugin_dir(tmp.path(), "src", "well-behaved", WELL_BEHAVED);
    let plugins = tmp.path().join("plugins");

    let report = everruns_runtime::check(&src).await.unwrap();
    assert_eq!(report.info.id, "well-behaved");
    assert_eq!(report.tools.len(), 4);
    assert!(report.requested.kv.is_some());
    assert!(
        report
            .imports
            .iter()
            .any(|i| i.starts_with("everruns:capability/kv@0.1.0")),
        "{:?}",
        report.imports
    );

    let mut steps = Vec::new();
    let installed =
        everruns_runtime::install(&src.join("capability.toml"), &plugins, |s| steps.push(s))
            .await
            .unwrap();
    assert_eq!(installed.dir, plugins.join("well-behaved"));
    assert!(matches!(
        steps.last(),
        Some(everruns_runtime::InstallStep::Installed(_))
    ));
    assert!(plugins.join("well-behaved/plugin.wasm").is_file());

    // Reinstalling replaces in place.
    everruns_runtime::install(&src, &plugins, |_| {})
        .await
        .unwrap();
    let listed = everruns_runtime::list(&plugins).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].manifest.as_ref().unwrap().id.as_str(),
        "well-behaved"
    );

    // A plugin whose manifest disagrees with the component is rejected by check.
    let bad = plugin_dir(
        tmp.path(),
        "bad",
        "well-behaved",
        &WELL_BEHAVED.replace("id = \"well-behaved\"", "id = \"other\""),
    );
    let err = everruns_runtime::check(&bad).await.unwrap_err();
    assert!(
        matches!(err, everruns_runtime::Error::InfoMismatch(_)),
        "{err}"
    );
    // A digest mismatch is caught before compiling.
    let pinned = plugin_dir(
        tmp.path(),
        "pinned",
        "well-behaved",
        &format!("sha256 = \"{}\"\n{WELL_BEHAVED}", "0".repeat(64)),
    );
    let err = everruns_runtime::check(&pinned).await.unwrap_err();
    assert!(
        matches!(err, everruns_runtime::Error::DigestMismatch { .. }),
        "{err}"
    );
    // Not a component at all.
    let junk = plugin_dir(tmp.path(), "junk", "well-behaved", WELL_BEHAVED);
    std::fs::write(junk.join("plugin.wasm"), b"not wasm").unwrap();
    let err = everruns_runtime::check(&junk).await.unwrap_err();
    assert!(
        matches!(err, everruns_runtime::Error::InvalidComponent { .. }),
        "{err}"
    );

    let removed = everruns_runtime::remove(&plugins, "well-behaved").unwrap();
    assert!(!removed.exists());
    assert!(everruns_runtime::list(&plugins).unwrap().is_empty());
    assert!(matches!(
        everruns_runtime::remove(&plugins, "well-behaved"),
        Err(everruns_runtime::Error::NotInstalled(_))
    ));
}
