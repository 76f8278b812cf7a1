//! `builtin-load [DIR...]`: for the built-in plugins (`plugins/dist`) and any plugin
//! directories given, the component size, the cold load (compile + cache write) and the warm
//! load (from the compile cache).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use everruns_runtime::{MemoryKv, MemorySecrets, Runtime, RuntimeConfig};

use crate::plugin_call::tempfile_dir;
use crate::stats::round1;

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

pub(crate) async fn run(extra: Vec<PathBuf>) -> anyhow::Result<()> {
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
