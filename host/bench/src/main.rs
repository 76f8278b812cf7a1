//! `everruns-bench`: Everruns benchmarks. `cargo run --release -p everruns-bench -- NAME`:
//! - `plugin-call` (`plugin_call`): a plugin tool call on a fresh store per call vs a reused
//!   instance, and loading plugins from a warm compile cache.
//! - `steps` (`steps`): executor throughput on PostgreSQL against the bare commit rate, plain,
//!   with `guardrails`, and with metrics and OTLP span export on (`observe`).
//! - `latency` (`latency`): POST message -> `run.started` / `run.completed` seen on SSE.
//! - `approval` (`approval`): approving a parked tool call -> its `tool.started` seen on SSE.
//! - `fanout` (`fanout`): commit -> received latency for 1,000 SSE subscribers of a session.
//! - `burst` (`burst`): 1,000 one-message sessions posted at once, on PostgreSQL and SQLite:
//!   turns per second and POST -> completion p50/p99.
//! - `plugin-load` (`plugin_load`): size, cold and warm load and a call of the Python and
//!   JavaScript SDK examples.
//! - `builtin-load [DIR...]` (`builtin_load`): size, cold and warm load of the built-in
//!   plugins and of any plugin directories given.
//!
//! `steps`, `latency`, `approval`, `fanout` and `burst` run the real server in-process
//! (`setup`) on a fresh database on `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; `burst` also on a SQLite file),
//! with the fake LLM and the well-behaved test plugin, over real HTTP (`sse` is their SSE
//! client). Progress goes to stderr; the LAST line on stdout is one JSON object with the
//! figures.

/// The allocator the `everruns` binary uses, so the in-process server is measured as shipped.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod approval;
mod builtin_load;
mod burst;
mod fanout;
mod latency;
mod observe;
mod plugin_call;
mod plugin_load;
mod setup;
mod sse;
mod stats;
mod steps;

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match mode.as_str() {
        "plugin-call" => runtime.block_on(plugin_call::run()),
        "steps" => runtime.block_on(steps::run()),
        "latency" => runtime.block_on(latency::run()),
        "approval" => runtime.block_on(approval::run()),
        "fanout" => runtime.block_on(fanout::run()),
        "burst" => runtime.block_on(burst::run()),
        "plugin-load" => {
            let work = plugin_call::tempfile_dir()?;
            let result = runtime.block_on(plugin_load::run(&work));
            let _ = std::fs::remove_dir_all(&work);
            result
        }
        "builtin-load" => runtime.block_on(builtin_load::run(
            std::env::args()
                .skip(2)
                .map(std::path::PathBuf::from)
                .collect(),
        )),
        _ => bail!(
            "usage: everruns-bench plugin-call|steps|latency|approval|fanout|burst|plugin-load|builtin-load [DIR...]"
        ),
    }
}
