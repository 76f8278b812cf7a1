//! `everruns-bench`: Everruns benchmarks. `plugin-call` measures a trivial plugin tool
//! call on a fresh store per call (what production does) against calls on one reused
//! instance, and the time to load 10 plugins from a warm compile cache. `plugin-load`
//! measures size, cold and warm load and a call of the Python and JavaScript SDK examples.
//! `builtin-load [DIR...]` measures, for the built-in plugins (`plugins/dist`) and any
//! plugin directories given, the component size, the cold load (compile + cache write) and
//! the warm load (from the compile cache).
//!
//! Output: human-readable lines, then as the LAST line one JSON object.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use everruns_runtime::{CallContext, MemoryKv, MemorySecrets, Runtime, RuntimeConfig, ToolCall};

mod plugin_load;

const CALLS: usize = 5_000;
const WARMUP: usize = 200;

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "plugin-call" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(plugin_call()),
        "plugin-load" => {
            let work = tempfile_dir()?;
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(plugin_load::run(&work));
            let _ = std::fs::remove_dir_all(&work);
            result
        }
        "builtin-load" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(builtin_load(
                std::env::args().skip(2).map(PathBuf::from).collect(),
            )),
        _ => bail!("usage: everruns-bench plugin-call | plugin-load | builtin-load [PLUGIN_DIR...]"),
    }
}

/// Builds the test guests (their own cargo workspace) and returns the well-behaved one.
fn build_guest(target: &Path) -> anyhow::Result<PathBuf> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/guests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "well-behaved",
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
    Ok(target.join("wasm32-wasip2/release/well_behaved.wasm"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

async fn plugin_call() -> anyhow::Result<()> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests");
    let wasm = build_guest(&target)?;
    let work = tempfile_dir()?;
    let dir = work.join("well-behaved");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&wasm, dir.join("plugin.wasm"))?;
    std::fs::write(
        dir.join("capability.toml"),
        "id = \"well-behaved\"\nversion = \"0.1.0\"\ncomponent = \"plugin.wasm\"\n",
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

    let fresh_p50 = percentile(&fresh, 0.50);
    let fresh_p99 = percentile(&fresh, 0.99);
    let reused_p50 = percentile(&reused, 0.50);
    let reused_p99 = percentile(&reused, 0.99);
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
            "load_10_plugins_warm_ms": round1(load_10_ms),
        })
    );
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("everruns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

const BUILTINS: &[&str] = &[
    "current_time",
    "web_fetch",
    "session_files",
    "todo",
    "memory",
];
const COLD_RUNS: usize = 3;
const WARM_RUNS: usize = 10;

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Lays out the built-ins from `plugins/` (manifest) and `plugins/dist` (component).
fn builtin_dirs(work: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let mut dirs = Vec::new();
    for id in BUILTINS {
        let dir = work.join("builtins").join(id);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            plugins.join(id).join("capability.toml"),
            dir.join("capability.toml"),
        )?;
        std::fs::copy(
            plugins.join("dist").join(format!("{id}.wasm")),
            dir.join(format!("{id}.wasm")),
        )?;
        dirs.push(dir);
    }
    Ok(dirs)
}

async fn builtin_load(extra: Vec<PathBuf>) -> anyhow::Result<()> {
    let work = tempfile_dir()?;
    let mut dirs = builtin_dirs(&work)?;
    dirs.extend(extra);
    let mut figures = serde_json::Map::new();
    for dir in &dirs {
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut size = 0;
        let mut id = String::new();
        for run in 0..COLD_RUNS {
            let cache = work.join(format!("cache-{}-{run}", figures.len()));
            let runtime = Runtime::new(
                RuntimeConfig {
                    max_concurrent_calls: 4,
                    cache_dir: Some(cache),
                    ..RuntimeConfig::default()
                },
                Arc::new(MemoryKv::default()),
                Arc::new(MemorySecrets::default()),
            )?;
            let t = Instant::now();
            let plugin = runtime
                .load_plugin(dir)
                .await
                .with_context(|| format!("loading {}", dir.display()))?;
            cold.push(t.elapsed());
            id = plugin.id().to_string();
            size = std::fs::metadata(dir.join(&plugin.manifest().component))?.len();
            if run == 0 {
                for _ in 0..WARM_RUNS {
                    let t = Instant::now();
                    runtime.load_plugin(dir).await?;
                    warm.push(t.elapsed());
                }
            }
        }
        let (cold_ms, warm_ms) = (median_ms(cold), median_ms(warm));
        println!(
            "{id:<16} {:>8.1} KiB  cold load {cold_ms:>7.1} ms  warm load {warm_ms:>6.2} ms",
            size as f64 / 1024.0
        );
        figures.insert(
            id,
            serde_json::json!({
                "size_bytes": size,
                "cold_load_ms": round1(cold_ms),
                "warm_load_ms": (warm_ms * 100.0).round() / 100.0,
            }),
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}
