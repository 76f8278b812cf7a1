//! Hot reload through the plugins directory, concurrency, and the compile cache.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use everruns_runtime::{
    CacheStatus, CallContext, Error, MemoryKv, Runtime, RuntimeConfig, ToolCall, ToolOutput,
};
use serde_json::json;
use support::*;
use tokio_util::sync::CancellationToken;

fn ctx(agent: &str) -> CallContext {
    CallContext {
        agent_id: agent.into(),
        session_id: "ses_r".into(),
        run_id: "run_r".into(),
        idempotency_key: None,
        config: None,
    }
}

fn echo() -> ToolCall {
    ToolCall {
        name: "echo".into(),
        arguments: json!({}),
    }
}

async fn version_of(runtime: &Runtime) -> Result<String, Error> {
    let out = runtime
        .call_tool("well-behaved", &ctx("agt_1"), &echo())
        .await?;
    match out.result {
        Ok(ToolOutput::Json(v)) => Ok(v["version"].as_str().unwrap().to_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Replaces a plugin directory's files the way a deploy would: new file, then rename.
fn replace(dir: &Path, wasm_bytes: &[u8], manifest: &str) {
    std::fs::write(dir.join(".plugin.wasm.new"), wasm_bytes).unwrap();
    std::fs::rename(dir.join(".plugin.wasm.new"), dir.join("plugin.wasm")).unwrap();
    std::fs::write(dir.join("capability.toml"), manifest).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_replaces_reports_and_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    let dir = plugin_dir(&plugins, "wb", "well-behaved", WELL_BEHAVED);
    let runtime = runtime();

    let report = runtime.sync_dir(&plugins).await;
    assert_eq!(report.added.len(), 1);
    assert_eq!(version_of(&runtime).await.unwrap(), "0.1.0");
    // Nothing changed: nothing reloaded.
    assert_eq!(runtime.sync_dir(&plugins).await, Default::default());

    // A caller holding the old version keeps it while the new one is swapped in.
    let old = runtime.get("well-behaved").unwrap();
    replace(
        &dir,
        &std::fs::read(wasm("well-behaved-v2")).unwrap(),
        &well_behaved_v2_manifest(),
    );
    let report = runtime.sync_dir(&plugins).await;
    assert_eq!(
        report.replaced.len(),
        1,
        "{report:?} {:?}",
        runtime.failures()
    );
    assert_eq!(version_of(&runtime).await.unwrap(), "0.2.0");
    let out = old.call_tool(&ctx("agt_1"), &echo()).await;
    assert!(matches!(out.result, Ok(ToolOutput::Json(v)) if v["version"] == "0.1.0"));

    // A broken version is reported; the loaded one keeps serving.
    replace(
        &dir,
        b"\0asm garbage",
        &WELL_BEHAVED.replace("0.1.0", "0.3.0"),
    );
    let report = runtime.sync_dir(&plugins).await;
    assert_eq!(report.failed, vec![dir.clone()]);
    let failures = runtime.failures();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].error.contains("invalid component"),
        "{}",
        failures[0].error
    );
    assert_eq!(version_of(&runtime).await.unwrap(), "0.2.0");

    // An invalid manifest names the field.
    std::fs::write(
        dir.join("capability.toml"),
        format!("{WELL_BEHAVED}\n[extra]\n"),
    )
    .unwrap();
    runtime.sync_dir(&plugins).await;
    let failures = runtime.failures();
    assert!(
        failures[0].error.contains("invalid manifest"),
        "{}",
        failures[0].error
    );
    assert_eq!(version_of(&runtime).await.unwrap(), "0.2.0");

    // Removing the directory unloads the plugin and clears the failure.
    std::fs::remove_dir_all(&dir).unwrap();
    let report = runtime.sync_dir(&plugins).await;
    assert_eq!(report.removed.len(), 1);
    assert!(matches!(
        version_of(&runtime).await,
        Err(Error::NotLoaded(_))
    ));
    assert!(runtime.failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_notices_new_and_removed_plugins() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let runtime = runtime();
    let cancel = CancellationToken::new();
    let watcher = runtime.spawn_watcher(plugins.clone(), Duration::from_millis(50), cancel.clone());

    let wait_for = |want: bool| {
        let runtime = runtime.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while runtime.get("well-behaved").is_some() != want {
                assert!(Instant::now() < deadline, "watcher did not react");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Install through the CLI path: staged, then renamed into place.
    let src = plugin_dir(tmp.path(), "src", "well-behaved", WELL_BEHAVED);
    everruns_runtime::install(&src, &plugins, |_| {})
        .await
        .unwrap();
    wait_for(true).await;
    assert_eq!(version_of(&runtime).await.unwrap(), "0.1.0");

    everruns_runtime::remove(&plugins, "well-behaved").unwrap();
    wait_for(false).await;

    cancel.cancel();
    watcher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_plugin_directories_share_the_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let builtins = tmp.path().join("builtin");
    let installed = tmp.path().join("installed");
    plugin_dir(&builtins, "wb", "well-behaved", WELL_BEHAVED);
    let hostile = plugin_dir(&installed, "hostile", "hostile", HOSTILE);
    let runtime = runtime();
    assert_eq!(runtime.sync_dir(&builtins).await.added.len(), 1);
    // Scanning the second directory neither unloads nor reloads the first one's plugins.
    assert_eq!(runtime.sync_dir(&installed).await.added.len(), 1);
    assert_eq!(runtime.sync_dir(&builtins).await, Default::default());
    assert_eq!(runtime.plugins().len(), 2);
    std::fs::remove_dir_all(&hostile).unwrap();
    let report = runtime.sync_dir(&installed).await;
    assert_eq!(report.removed.len(), 1);
    assert!(runtime.get("well-behaved").is_some() && runtime.get("hostile").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_calls_across_plugins() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    plugin_dir(&plugins, "wb", "well-behaved", WELL_BEHAVED);
    plugin_dir(&plugins, "hostile", "hostile", HOSTILE);
    // Fewer slots than calls, so callers queue on the semaphore.
    let runtime = runtime_with(config(32), MemoryKv::default());
    assert_eq!(runtime.sync_dir(&plugins).await.added.len(), 2);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let runtime = runtime.clone();
        tasks.push(tokio::spawn(async move {
            let agent = format!("agt_{i}");
            let (plugin, call, expect) = match i % 4 {
                0 => (
                    "well-behaved",
                    ToolCall {
                        name: "echo".into(),
                        arguments: json!({"i": i}),
                    },
                    ToolOutput::Json(json!({"args": {"i": i}, "version": "0.1.0"})),
                ),
                1 => (
                    "well-behaved",
                    ToolCall {
                        name: "greet".into(),
                        arguments: json!({"name": agent}),
                    },
                    ToolOutput::Text(format!("hello, {agent}!")),
                ),
                2 => (
                    "well-behaved",
                    ToolCall {
                        name: "count".into(),
                        arguments: json!({}),
                    },
                    ToolOutput::Json(json!({"count": 1, "replayed": false, "version": "0.1.0"})),
                ),
                _ => (
                    "hostile",
                    ToolCall {
                        name: "secret".into(),
                        arguments: json!({"name": "GRANTED"}),
                    },
                    ToolOutput::Text("len=6".into()),
                ),
            };
            let out = runtime
                .call_tool(plugin, &ctx(&agent), &call)
                .await
                .unwrap();
            assert_eq!(out.result.unwrap(), expect, "call {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("500 calls in {:?}", started.elapsed());
    assert_eq!(runtime.available_slots(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_cache_hits_on_second_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path(), "wb", "well-behaved", WELL_BEHAVED);
    let cache = tmp.path().join("cache");
    let config = || RuntimeConfig {
        max_concurrent_calls: 4,
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };

    let first = runtime_with(config(), MemoryKv::default());
    let t = Instant::now();
    let plugin = first.load_plugin(&dir).await.unwrap();
    let cold = t.elapsed();
    assert_eq!(plugin.cache_status(), CacheStatus::Miss);
    let file = first.cache_path(plugin.digest()).unwrap();
    assert!(file.is_file(), "{} missing", file.display());
    drop(first);

    let second = runtime_with(config(), MemoryKv::default());
    let t = Instant::now();
    let plugin = second.load_plugin(&dir).await.unwrap();
    let warm = t.elapsed();
    assert_eq!(plugin.cache_status(), CacheStatus::Hit);
    println!("load: cold {cold:?}, warm {warm:?}");
    assert!(
        warm * 2 < cold,
        "cache hit ({warm:?}) not clearly faster than compile ({cold:?})"
    );

    // A corrupted cache entry is recompiled, not trusted.
    std::fs::write(&file, b"garbage").unwrap();
    let plugin = second.load_plugin(&dir).await.unwrap();
    assert_eq!(plugin.cache_status(), CacheStatus::Miss);
}

#[tokio::test]
async fn default_pool_starts() {
    // 256 slots with 64 MiB memories: the reservation must fit a 24 GB machine.
    let runtime = runtime_with(RuntimeConfig::default(), MemoryKv::default());
    assert_eq!(runtime.available_slots(), 256);
}
