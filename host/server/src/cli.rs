//! The command line: `everruns serve` and the admin subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use everruns_core::Role;

/// Everruns: durable AI agents with sandboxed WASM capabilities.
#[derive(Debug, Parser)]
#[command(name = "everruns", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands. Each can also come from the environment or from
/// `everruns.toml`; a flag wins over the environment, which wins over the file.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Directory for the embedded database, plugins and caches [env: EVERRUNS_DATA_DIR]
    /// [default: ./.everruns]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL URL (postgres://user@host/db); without it the embedded SQLite file in the
    /// data directory is used [env: DATABASE_URL or EVERRUNS_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Configuration file [env: EVERRUNS_CONFIG] [default: ./everruns.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format: `text` or `json` (filter with RUST_LOG, e.g. RUST_LOG=everruns=debug)
    /// [env: EVERRUNS_LOG_FORMAT] [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server.
    Serve(ServeArgs),
    /// Execute runs without serving HTTP (several workers may share one PostgreSQL).
    Worker,
    /// Manage capability plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage API keys.
    #[command(name = "api-key", subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage the encryption of provider keys and secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Tools for trying Everruns out and developing against it.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Serve a scripted stand-in for an LLM (OpenAI and Anthropic wire formats, streaming), to
    /// watch runs and tool calls without an API key. It echoes each message; a message that
    /// names one of the agent's tools (`now`, or `current_time__now`) calls it, with the JSON
    /// object after the name as arguments. Prints the EVERRUNS_LLM_* settings for the server.
    FakeLlm {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every provider key and secret under the current master key
    /// (EVERRUNS_SECRET_KEY; values under EVERRUNS_SECRET_KEY_PREVIOUS are moved to it). Safe to
    /// run again and while servers run.
    Rotate,
    /// Print a new random master key (`KEYID:BASE64`) for EVERRUNS_SECRET_KEY.
    GenerateKey {
        /// The new key's id (1 to 64 of `A-Z a-z 0-9 _ . -`); use a new id for every key.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [env: EVERRUNS_LISTEN] [default: 127.0.0.1:9000]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve the API only; runs are executed by `everruns worker` processes on the same
    /// PostgreSQL [env: EVERRUNS_WORKER=false]
    #[arg(long)]
    pub no_worker: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it (it is shown only this once).
    Create {
        /// A name to recognise the key by.
        name: String,
        /// What the key may do: `admin` (everything), `operator` (agents, sessions, runs,
        /// approvals; no keys, providers or secrets) or `reader` (reads only).
        #[arg(long, default_value = "operator", value_parser = parse_role)]
        role: Role,
    },
    /// List API keys (name, role, prefix, status).
    List,
    /// Revoke an API key by id (`key_...`) or name.
    Revoke {
        /// Key id or name.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Validate a plugin directory (manifest + component against the WIT world) and print its
    /// tools.
    Check {
        /// Directory with `capability.toml` and the component.
        path: PathBuf,
    },
    /// Check a plugin, copy it into the data directory's plugins and precompile it.
    Install {
        /// Directory with `capability.toml` and the component.
        path: PathBuf,
    },
    /// List the plugins of every plugin directory (built-ins included): id, version, status.
    List,
    /// Create a plugin project from a template: manifest, source, build script.
    New {
        /// Capability id (lowercase letters, digits, `-` and `_`).
        name: String,
        /// Language of the plugin.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Directory to create [default: ./NAME]
        #[arg(long, value_name = "PATH")]
        dir: Option<PathBuf>,
    },
    /// Remove an installed plugin by id.
    Remove {
        /// Capability id.
        id: String,
    },
    /// Show the key-value state a plugin keeps, per owner (agent, session or global): keys
    /// and bytes, against its quota.
    Usage {
        /// Capability id.
        id: String,
    },
}

/// Languages `plugin new` has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with the `everruns-sdk` crate (`sdk/rust`).
    Rust,
    /// Python with componentize-py (`sdk/python`).
    Python,
    /// JavaScript with componentize-js / jco (`sdk/js`).
    Js,
}

impl Lang {
    /// The template directory name under `sdk/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// A `--role` value.
fn parse_role(value: &str) -> Result<Role, String> {
    value.parse()
}
