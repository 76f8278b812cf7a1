//! `plugin-load`: the figures in `sdk/python/README.md` and `sdk/js/README.md`. For the
//! Python and JavaScript SDK examples (built from source with the pinned toolchains): the
//! component's size, a cold load (read, sha256, compile to native code, write the compile
//! cache, instantiate and ask `info`/`tools`), a warm load (the same from the compile
//! cache), and one tool call in a fresh instance.
//!
//! Each figure is reported as wall-clock time (median) and as the process's CPU time
//! (user + system, all threads, averaged per operation): on a shared machine the wall
//! clock mostly measures the neighbours, the CPU time much less so.

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

/// CPU time (user + system) of this process so far, all threads, from `/proc/self/stat`
/// (Linux; in clock ticks of 1/100 s, the USER_HZ of every mainstream Linux target).
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/self/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .context("unexpected /proc/self/stat format")?
            .parse()?)
    };
    // utime and stime are fields 14 and 15 of the line; 3 (the state) is index 0 here.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// Runs `op` `runs` times; returns the median wall-clock time and the mean CPU time per
/// run, both in ms.
async fn timed<F, Fut>(runs: usize, mut op: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut wall = Vec::with_capacity(runs);
    let cpu_before = cpu_time()?;
    for run in 0..runs {
        let t = Instant::now();
        op(run).await?;
        wall.push(t.elapsed());
    }
    let cpu = (cpu_time()? - cpu_before).as_secs_f64() * 1e3 / runs as f64;
    Ok((median_ms(wall), cpu))
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

    // Each cold run gets a new runtime with an empty cache directory (built outside the
    // timing: engine and pool set-up are not part of loading a plugin).
    let mut runtimes = (0..COLD_RUNS)
        .map(|run| runtime(&work.join(format!("{name}-cold-{run}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (cold_ms, cold_cpu_ms) = timed(COLD_RUNS, |run| {
        let (runtime, dir) = (runtimes[run].clone(), plugin_dir.clone());
        async move {
            let plugin = runtime.load_plugin(&dir).await?;
            if plugin.cache_status() != CacheStatus::Miss {
                bail!("cold load did not compile");
            }
            Ok(())
        }
    })
    .await?;

    // The first cold run's cache now holds the compiled component.
    let runtime = runtimes.swap_remove(0);
    drop(runtimes);
    let (warm_ms, warm_cpu_ms) = timed(WARM_RUNS, |_| {
        let (runtime, dir) = (runtime.clone(), plugin_dir.clone());
        async move {
            let plugin = runtime.load_plugin(&dir).await?;
            if plugin.cache_status() != CacheStatus::Hit {
                bail!("warm load missed the cache");
            }
            Ok(())
        }
    })
    .await?;

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
    let (call_ms, call_cpu_ms) = timed(CALLS, |_| {
        let (plugin, ctx, call) = (plugin.clone(), ctx.clone(), call.clone());
        async move {
            plugin
                .call_tool(&ctx, &call)
                .await
                .result
                .map_err(|e| anyhow::anyhow!("call failed: {e}"))?;
            Ok(())
        }
    })
    .await?;

    println!(
        "{name}: {:.1} MB; cold load {cold_ms:.0} ms wall (median of {COLD_RUNS}), \
         {cold_cpu_ms:.0} ms CPU; warm load {warm_ms:.1} ms wall (median of {WARM_RUNS}), \
         {warm_cpu_ms:.1} ms CPU; tool call {call_ms:.2} ms wall (median of {CALLS}), \
         {call_cpu_ms:.2} ms CPU",
        size as f64 / 1e6
    );
    Ok(serde_json::json!({
        "size_bytes": size,
        "cold_load_ms": round(cold_ms, 0),
        "cold_load_cpu_ms": round(cold_cpu_ms, 0),
        "warm_load_ms": round(warm_ms, 1),
        "warm_load_cpu_ms": round(warm_cpu_ms, 1),
        "call_ms": round(call_ms, 2),
        "call_cpu_ms": round(call_cpu_ms, 2),
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
