//! `plugin-load`: the figures in `sdk/python/README.md` and `sdk/js/README.md`. For the
//! Python and JavaScript SDK examples (built from source with the pinned toolchains): the
//! component's size, a cold load (read, sha256, compile to native code, write the compile
//! cache, instantiate and ask `info`/`tools`), a warm load (the same from the compile
//! cache), and one tool call in a fresh instance.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use everruns_runtime::{
    CacheStatus, CallContext, MemoryKv, MemorySecrets, Runtime, RuntimeConfig, ToolCall,
};
use everruns_testkit::polyglot::{self, Lang};

/// Cold loads per language (each compiles from scratch: seconds for Python).
const COLD_RUNS: usize = 3;
/// Warm loads per language.
const WARM_RUNS: usize = 20;
/// Tool calls per language.
const CALLS: usize = 200;

fn runtime(cache: &Path) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(
        RuntimeConfig {
            cache_dir: Some(cache.to_path_buf()),
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryKv::default()),
        Arc::new(MemorySecrets::default()),
    )?)
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

async fn measure(lang: Lang, work: &Path) -> anyhow::Result<serde_json::Value> {
    let name = lang.dir_name();
    println!("building the {name} example...");
    let plugin_dir = polyglot::example_plugin(lang, &work.join(name));
    let manifest = everruns_runtime::Manifest::from_file(&plugin_dir.join("capability.toml"))?;
    let size = std::fs::metadata(plugin_dir.join(&manifest.component))?.len();

    let mut cold = Vec::with_capacity(COLD_RUNS);
    for run in 0..COLD_RUNS {
        // A new runtime with an empty cache directory: nothing compiled yet.
        let runtime = runtime(&work.join(format!("{name}-cold-{run}")))?;
        let t = Instant::now();
        let plugin = runtime.load_plugin(&plugin_dir).await?;
        cold.push(t.elapsed());
        if plugin.cache_status() != CacheStatus::Miss {
            bail!("{name}: cold load did not compile");
        }
    }

    let runtime = runtime(&work.join(format!("{name}-cold-0")))?;
    let mut warm = Vec::with_capacity(WARM_RUNS);
    for _ in 0..WARM_RUNS {
        let t = Instant::now();
        let plugin = runtime.load_plugin(&plugin_dir).await?;
        warm.push(t.elapsed());
        if plugin.cache_status() != CacheStatus::Hit {
            bail!("{name}: warm load missed the cache");
        }
    }

    let plugin = runtime.load_plugin(&plugin_dir).await?;
    let ctx = CallContext {
        agent_id: "agt_bench".into(),
        session_id: "ses_bench".into(),
        run_id: "run_bench".into(),
        ..CallContext::default()
    };
    let call = ToolCall {
        name: match lang {
            Lang::Python => "list_notes",
            Lang::Js => "list",
        }
        .into(),
        arguments: serde_json::json!({}),
    };
    let mut calls = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let outcome = plugin.call_tool(&ctx, &call).await;
        calls.push(t.elapsed());
        outcome
            .result
            .map_err(|e| anyhow::anyhow!("{name}: call failed: {e}"))?;
    }

    let (cold_ms, warm_ms, call_ms) = (median_ms(cold), median_ms(warm), median_ms(calls));
    println!(
        "{name}: {:.1} MB, cold load {cold_ms:.0} ms (median of {COLD_RUNS}), warm load \
         {warm_ms:.1} ms (median of {WARM_RUNS}), tool call {call_ms:.2} ms (median of {CALLS})",
        size as f64 / 1e6
    );
    Ok(serde_json::json!({
        "size_bytes": size,
        "cold_load_ms": round(cold_ms, 0),
        "warm_load_ms": round(warm_ms, 1),
        "call_ms": round(call_ms, 2),
    }))
}

pub async fn run(work: &Path) -> anyhow::Result<()> {
    let python = measure(Lang::Python, work)
        .await
        .context("python example")?;
    let js = measure(Lang::Js, work).await.context("js example")?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "plugin-load",
            "profile": if cfg!(debug_assertions) { "dev" } else { "release" },
            "python": python,
            "js": js,
        })
    );
    Ok(())
}
