//! The `everruns` binary as a library: configuration, telemetry, wiring, CLI subcommands and
//! shutdown. `main.rs` only parses arguments and calls [`run`].
//!
//! Modules:
//! - `cli`: the command line (clap).
//! - `config`: one typed configuration tree (defaults, `everruns.toml`, `EVERRUNS_*`, flags).
//! - [`telemetry`]: log lines (text or JSON, `RUST_LOG`), OTLP span export, and the
//!   process's Prometheus recorder.
//! - `server`: [`Server`]: opens the store, creates the first API key, serves HTTP until shutdown.
//! - `shutdown`: SIGINT/SIGTERM become one cancellation token.
//! - `plugins`: the capability runtime wired to the store (plugin state) and the plugin
//!   directories (loaded at start, then watched).
//! - [`builtins`]: the built-in capabilities embedded in the binary and written into the
//!   data directory at start.
//! - `templates`: the plugin templates of `everruns plugin new`, embedded at build time.
//! - `master_key`: the master keys sealing provider keys and secrets (environment or the
//!   generated key file) and the start-up check that stored values open with them.
//! - `commands`: the other subcommands (`worker`, `plugin ...`, `api-key ...`, `secrets ...`).

pub mod builtins;
mod cli;
mod commands;
mod config;
mod master_key;
mod plugins;
mod server;
mod shutdown;
pub mod telemetry;
mod templates;

pub use cli::Cli;
pub use config::{Config, LogFormat, PluginGrant};
pub use server::Server;

use std::process::ExitCode;

/// Runs the command the user asked for and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
