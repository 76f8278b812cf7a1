//! `plugin-call`: a trivial plugin tool call on a fresh store per call (what production
//! does) against calls on one reused instance, a `before-tool` hook that continues (fresh
//! store per call, WIT 0.2.0), the `guardrails` built-in's `before-tool` and `after-tool` as
//! `steps` configures them, and the time to load 10 plugins from a warm compile cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use everruns_runtime::{
    CallContext, KvWrites, MemoryKv, MemorySecrets, Runtime, RuntimeConfig, ToolCall, ToolDecision,
    ToolRequest,
};

use crate::stats::{percentile, round1};

const CALLS: usize = 5_000;
const WARMUP: usize = 200;

/// Builds the test guests (their own cargo workspace) and returns the well-behaved one and
/// the hooks one.
fn build_guest(target: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/guests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "well-behaved",
            "-p",
            "hooks",
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(&guests)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo to build the guest")?;
    if !status.success() {
        bail!("guest build failed (is `rustup target add wasm32-wasip2` done?)");
    }
    let release = target.join("wasm32-wasip2/release");
    Ok((
        release.join("well_behaved.wasm"),
        release.join("hooks.wasm"),
    ))
}

pub(crate) async fn run() -> anyhow::Result<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests");
    let (wasm, hooks_wasm) = build_guest(&target)?;
    let work = tempfile_dir()?;
    let dir = work.join("well-behaved");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&wasm, dir.join("plugin.wasm"))?;
    std::fs::write(
        dir.join("capability.toml"),
        "id = \"well-behaved\"\nversion = \"0.1.0\"\ncomponent = \"plugin.wasm\"\n",
    )?;
    let hooks_dir = work.join("hooks");
    std::fs::create_dir_all(&hooks_dir)?;
    std::fs::copy(&hooks_wasm, hooks_dir.join("plugin.wasm"))?;
    std::fs::write(
        hooks_dir.join("capability.toml"),
        "id = \"hooks\"\nversion = \"0.1.0\"\ncomponent = \"plugin.wasm\"\n\
         hooks = [\"before-tool\"]\n",
    )?;
    let config = RuntimeConfig {
        cache_dir: Some(work.join("cache")),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(
        config,
        Arc::new(MemoryKv::default()),
        Arc::new(MemorySecrets::default()),
    )?;

    let t = Instant::now();
    let plugin = runtime.load_plugin(&dir).await?;
    println!(
        "cold load (compile + cache write): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    for _ in 0..10 {
        runtime.load_plugin(&dir).await?;
    }
    let load_10_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("load 10 plugins from warm cache: {load_10_ms:.1} ms");

    let ctx = CallContext::default();
    let call = ToolCall {
        name: "ping".into(),
        arguments: serde_json::json!({}),
    };
    let mut fresh = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let t = Instant::now();
        let out = plugin.call_tool(&ctx, &call).await;
        let took = t.elapsed();
        out.result
            .map_err(|e| anyhow::anyhow!("call failed: {e}"))?;
        if i >= WARMUP {
            fresh.push(took);
        }
    }
    let mut reused = plugin
        .bench_reused_instance(&ctx, &call, WARMUP + CALLS)
        .await?
        .split_off(WARMUP);
    fresh.sort();
    reused.sort();

    // A `before-tool` hook that continues, on a fresh store per call.
    let hooks = runtime.load_plugin(&hooks_dir).await?;
    let request = ToolRequest {
        name: "well-behaved__ping".into(),
        arguments: serde_json::json!({}),
        tool_call_id: "call_1".into(),
        step: 1,
    };
    let mut hook = Vec::with_capacity(CALLS);
    for i in 0..WARMUP + CALLS {
        let mut writes = KvWrites::default();
        let t = Instant::now();
        let decision = hooks.before_tool(&ctx, &request, &mut writes).await;
        let took = t.elapsed();
        match decision {
            Ok(ToolDecision::Continue) => {}
            other => bail!("the hook answered {other:?}"),
        }
        if i >= WARMUP {
            hook.push(took);
        }
    }
    hook.sort();
    let hook_p50 = micros(percentile(&hook, 0.50));
    let hook_p99 = micros(percentile(&hook, 0.99));
    println!("before-tool hook:     p50 {hook_p50:.1} µs, p99 {hook_p99:.1} µs ({CALLS} calls)");

    // The `guardrails` built-in as `steps` configures it: its `before-tool` (loop guard,
    // patterns) and `after-tool` (redaction) on a fresh store per call.
    let guardrails_dir = work.join("guardrails");
    std::fs::create_dir_all(&guardrails_dir)?;
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    std::fs::copy(
        plugins.join("dist/guardrails.wasm"),
        guardrails_dir.join("guardrails.wasm"),
    )?;
    std::fs::copy(
        plugins.join("guardrails/capability.toml"),
        guardrails_dir.join("capability.toml"),
    )?;
    let guardrails = runtime.load_plugin(&guardrails_dir).await?;
    let guarded = CallContext {
        agent_id: "agt_1".into(),
        session_id: "ses_1".into(),
        run_id: "run_1".into(),
        config: Some(serde_json::json!({"max_identical_calls": 1_000_000,
            "redact": ["secret-[0-9]+"], "block_tools": ["*__delete_*"]})),
        ..CallContext::default()
    };
    let (mut before, mut after) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    let result: everruns_runtime::ToolResultView =
        Ok(everruns_runtime::ToolOutput::Text("pong".into()));
    for i in 0..WARMUP + CALLS {
        let mut writes = KvWrites::default();
        let t = Instant::now();
        let decision = guardrails
            .before_tool(&guarded, &request, &mut writes)
            .await;
        let took = t.elapsed();
        match decision {
            Ok(ToolDecision::Continue) => {}
            other => bail!("guardrails answered {other:?}"),
        }
        let t = Instant::now();
        let replaced = guardrails
            .after_tool(&guarded, &request, &result, &mut writes)
            .await;
        let took_after = t.elapsed();
        replaced.map_err(|e| anyhow::anyhow!("guardrails after-tool failed: {e}"))?;
        if i >= WARMUP {
            before.push(took);
            after.push(took_after);
        }
    }
    before.sort();
    after.sort();
    let guard_before_p50 = micros(percentile(&before, 0.50));
    let guard_after_p50 = micros(percentile(&after, 0.50));
    println!(
        "guardrails hooks:     before-tool p50 {guard_before_p50:.1} µs, after-tool p50 \
         {guard_after_p50:.1} µs ({CALLS} calls each)"
    );

    let fresh_p50 = micros(percentile(&fresh, 0.50));
    let fresh_p99 = micros(percentile(&fresh, 0.99));
    let reused_p50 = micros(percentile(&reused, 0.50));
    let reused_p99 = micros(percentile(&reused, 0.99));
    println!("fresh store per call: p50 {fresh_p50:.1} µs, p99 {fresh_p99:.1} µs ({CALLS} calls)");
    println!(
        "reused instance:      p50 {reused_p50:.1} µs, p99 {reused_p99:.1} µs ({CALLS} calls)"
    );
    let ratio = fresh_p50 / reused_p50.max(0.001);
    println!("isolation cost: fresh/reused p50 ratio {ratio:.1}");
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "{}",
        serde_json::json!({
            "fresh_p50_us": round1(fresh_p50),
            "fresh_p99_us": round1(fresh_p99),
            "reused_p50_us": round1(reused_p50),
            "reused_p99_us": round1(reused_p99),
            "ratio_fresh_to_reused": round1(ratio),
            "hook_p50_us": round1(hook_p50),
            "hook_p99_us": round1(hook_p99),
            "guardrails_before_tool_p50_us": round1(guard_before_p50),
            "guardrails_after_tool_p50_us": round1(guard_after_p50),
            "load_10_plugins_warm_ms": round1(load_10_ms),
        })
    );
    Ok(())
}

pub(crate) fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("everruns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
