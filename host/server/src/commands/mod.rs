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
            let telemetry = telemetry::init(&config)?;
            let shutdown = shutdown::on_signal();
            let served = async { Server::build(&config).await?.run(shutdown).await }.await;
            telemetry.shutdown().await;
            served
        }
        Command::Worker => {
            let config = Config::load(&cli.global, None)?;
            let telemetry = telemetry::init(&config)?;
            let worked = crate::server::run_worker(&config, shutdown::on_signal()).await;
            telemetry.shutdown().await;
            worked
        }
        Command::Plugin(command) => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(&config)?;
            plugin::run(&config, command).await
        }
        Command::ApiKey(command) => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(&config)?;
            api_key::run(&config, command).await
        }
        Command::Secrets(command) => {
            let config = Config::load(&cli.global, None)?;
            telemetry::init(&config)?;
            secrets::run(&config, command).await
        }
        Command::Dev(command) => dev::run(command, shutdown::on_signal()).await,
    }
}
