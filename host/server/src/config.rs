//! One typed configuration tree, loaded once: defaults, then `everruns.toml`, then `EVERRUNS_*`
//! environment variables (and `DATABASE_URL`), then command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, ServeArgs};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Embedded database, plugins and caches live here.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; `None` selects the embedded SQLite database.
    pub database_url: Option<SecretString>,
    /// Database connection pool size.
    pub database_max_connections: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// Admin key to create on first start instead of a random one.
    pub bootstrap_api_key: Option<SecretString>,
}

/// Keys accepted from the environment (after stripping `EVERRUNS_`); other `EVERRUNS_*`
/// variables belong to other tools (tests, scripts) and are ignored.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "database_max_connections",
    "log_format",
    "bootstrap_api_key",
];

#[derive(Serialize)]
struct Defaults {
    listen: SocketAddr,
    data_dir: PathBuf,
    database_max_connections: u32,
    log_format: LogFormat,
}

impl Config {
    /// Loads the configuration for a command.
    pub fn load(global: &GlobalArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Self> {
        let defaults = Defaults {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            data_dir: PathBuf::from(".everruns"),
            database_max_connections: 10,
            log_format: LogFormat::Text,
        };
        let mut figment = Figment::from(Serialized::defaults(defaults));

        let explicit_file = global
            .config
            .clone()
            .or_else(|| std::env::var_os("EVERRUNS_CONFIG").map(PathBuf::from));
        match &explicit_file {
            Some(path) if !path.exists() => {
                bail!("configuration file {} does not exist", path.display())
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("everruns.toml").exists() => {
                figment = figment.merge(Toml::file_exact("everruns.toml"));
            }
            None => {}
        }

        figment = figment
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .merge(Env::prefixed("EVERRUNS_").only(ENV_KEYS));

        if let Some(dir) = &global.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        if let Some(url) = &global.database_url {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        if let Some(format) = &global.log_format {
            figment = figment.merge(Serialized::default("log_format", format));
        }
        if let Some(listen) = serve.and_then(|s| s.listen) {
            figment = figment.merge(Serialized::default("listen", listen));
        }

        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        // An empty variable means "not set" (common in compose files and CI matrices).
        for secret in [&mut config.database_url, &mut config.bootstrap_api_key] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().is_empty())
            {
                *secret = None;
            }
        }
        if config.database_max_connections == 0 {
            bail!("invalid configuration: database_max_connections must be at least 1");
        }
        Ok(config)
    }

    /// The database URL to open: PostgreSQL when configured, else SQLite in the data directory.
    pub fn store_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("DATABASE_URL must start with postgres:// or postgresql://");
            }
            return Ok(url.to_owned());
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating the data directory {}", self.data_dir.display()))?;
        let path = self.data_dir.join("everruns.db");
        Ok(format!("sqlite://{}", path.display()))
    }
}
