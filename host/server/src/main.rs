//! The `everruns` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = everruns_server::Cli::parse();
    everruns_server::run(cli)
}
