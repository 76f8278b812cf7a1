//! Dispatches the parsed command line to the matching subcommand.

mod api_key;
mod dev;
mod plugin;
mod secrets;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::server::Server;
use crate::{shutdown, telemetry};

/// Runs one subcommand to completion.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(&cli.global, Some(&args))?;
            telemetry::init(config.log_format);
            let shutdown = shutdown::on_signal();
            Server::build(&config).await?.run(shutdown).await
        }
        Command::Worker => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(config.log_format);
            crate::server::run_worker(&config, shutdown::on_signal()).await
        }
        Command::Plugin(command) => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(config.log_format);
            plugin::run(&config, command).await
        }
        Command::ApiKey(command) => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(config.log_format);
            api_key::run(&config, command).await
        }
        Command::Secrets(command) => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(config.log_format);
            secrets::run(&config, command).await
        }
        Command::Dev(command) => dev::run(command, shutdown::on_signal()).await,
    }
}
