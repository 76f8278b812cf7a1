//! The `everruns` binary: parses the command line and hands over to the library.

use clap::Parser;

/// jemalloc instead of the system allocator: measured faster on the executor's hot path
/// (`everruns-bench steps`, which runs with it too) at the same idle memory.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = everruns_server::Cli::parse();
    everruns_server::run(cli)
}
