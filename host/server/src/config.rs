//! One typed configuration tree, loaded once: defaults, then `everruns.toml`, then `EVERRUNS_*`
//! environment variables (and `DATABASE_URL`), then command-line flags.

use std::collections::HashMap;
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

/// What the operator grants one plugin; an unset list grants what the manifest asks for.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginGrant {
    /// Destinations (`scheme://host[:port]`, `*.` for subdomains) the plugin may reach.
    pub allowed_hosts: Option<Vec<String>>,
    /// Secret names the plugin may read.
    pub secrets: Option<Vec<String>>,
    /// Whether the plugin may keep durable key-value state (default: yes).
    pub kv: Option<bool>,
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
    /// Plugin directories loaded besides `<data_dir>/plugins`.
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    /// Let plugins reach private, loopback and link-local addresses (development only).
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Load the built-in capabilities shipped inside the binary (`current_time`,
    /// `web_fetch`, `session_files`, `todo`, `memory`).
    #[serde(default = "enabled")]
    pub builtin_plugins: bool,
    /// Built-in capabilities not to load (e.g. to install a replacement with the same id).
    #[serde(default)]
    pub disabled_builtin_plugins: Vec<String>,
    /// Secret values plugins may be granted, by name (`[plugin_secrets]` in the file).
    #[serde(default)]
    pub plugin_secrets: HashMap<String, SecretString>,
    /// Narrower grants per capability id (`[plugin_grants.<id>]` in the file): the plugin
    /// gets what its manifest asks for, intersected with this. Plugins without an entry get
    /// what their manifest asks for.
    #[serde(default)]
    pub plugin_grants: HashMap<String, PluginGrant>,
    /// Master key sealing provider keys and secrets, `KEYID:BASE64` (32 bytes). Unset: a key
    /// file generated in the data directory (SQLite), or no sealing at all (PostgreSQL).
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// The master key before the last rotation; values sealed with it stay readable.
    #[serde(default)]
    pub secret_key_previous: Option<SecretString>,
    /// Default LLM provider: `openai` (any OpenAI-compatible server) or `anthropic`.
    #[serde(default)]
    pub llm_kind: Option<String>,
    /// Its API base URL including the version, e.g. `https://api.openai.com/v1`.
    #[serde(default)]
    pub llm_base_url: Option<String>,
    /// Its API key.
    #[serde(default)]
    pub llm_api_key: Option<SecretString>,
    /// The model used when an agent names none.
    #[serde(default)]
    pub llm_model: Option<String>,
    /// Whether this process executes runs (`serve --no-worker` turns it off).
    #[serde(default = "enabled")]
    pub worker: bool,
    /// How long a worker's claim on a run lasts without renewal, in milliseconds.
    #[serde(default = "default_lease_ms")]
    pub executor_lease_ms: u64,
    /// How often an idle worker looks for runs when nothing woke it, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub executor_poll_ms: u64,
    /// Runs this process's worker executes at once (its slots). A run waiting for tool
    /// approval holds none.
    #[serde(default = "default_max_runs")]
    pub executor_max_runs: usize,
    /// How often a followed session's event log is re-read when nothing announced new events
    /// (the fallback for missed PostgreSQL notifications), in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub events_poll_ms: u64,
    /// After this long with nothing sent, an SSE stream sends a `: heartbeat` comment (keeps
    /// proxies from closing idle streams), in milliseconds.
    #[serde(default = "default_sse_heartbeat_ms")]
    pub sse_heartbeat_ms: u64,
    /// Serve `/metrics` without an API key (for scrapers inside a private network).
    #[serde(default)]
    pub metrics_public: bool,
    /// Where spans are exported over OTLP/HTTP (protobuf), e.g.
    /// `http://otel-collector:4318` (`/v1/traces` is appended unless the URL ends with it);
    /// unset: no spans are exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces exported, 0.0 to 1.0 (a request that arrives with a sampled
    /// `traceparent` is always followed).
    #[serde(default = "default_trace_sample_ratio")]
    pub trace_sample_ratio: f64,
    /// Requests per second one API key may make (bursts of twice that); 0: unlimited.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_key: u32,
    /// Runs per second one API key may start (bursts of twice that); 0: unlimited.
    #[serde(default = "default_run_start_limit")]
    pub run_start_limit_per_key: u32,
    /// Event streams one API key may hold open at once; 0: unlimited.
    #[serde(default = "default_max_streams_per_key")]
    pub max_streams_per_key: u32,
    /// Event streams this process holds open at once; 0: unlimited.
    #[serde(default = "default_max_streams")]
    pub max_streams: u32,
    /// How long a request may take to produce its response, in milliseconds; 0: no limit.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a kept-alive connection may sit without a new request before it is closed,
    /// in milliseconds (also the deadline for a request's headers to arrive).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most keys a plugin may keep per owner (agent or session); a manifest may ask for fewer.
    #[serde(default = "default_plugin_kv_max_keys")]
    pub plugin_kv_max_keys: u64,
    /// Most bytes (keys and values) a plugin may keep per owner; a manifest may ask for fewer.
    #[serde(default = "default_plugin_kv_max_bytes")]
    pub plugin_kv_max_bytes: u64,
    /// Host names (any port) `/mcp` answers: DNS-rebinding protection. Default: loopback only;
    /// a public deployment lists its own names.
    #[serde(default = "default_mcp_hosts")]
    pub mcp_server_allowed_hosts: Vec<String>,
    /// Origins (`https://app.example.com`) browsers may call `/mcp` from; default none.
    #[serde(default)]
    pub mcp_server_allowed_origins: Vec<String>,
}

fn default_mcp_hosts() -> Vec<String> {
    everruns_api::McpSettings::default().allowed_hosts
}

fn default_rate_limit() -> u32 {
    everruns_api::LimitSettings::default().rate_limit_per_key
}

fn default_run_start_limit() -> u32 {
    everruns_api::LimitSettings::default().run_start_limit_per_key
}

fn default_max_streams_per_key() -> u32 {
    everruns_api::LimitSettings::default().max_streams_per_key
}

fn default_max_streams() -> u32 {
    everruns_api::LimitSettings::default().max_streams
}

fn default_request_timeout_ms() -> u64 {
    everruns_api::LimitSettings::default().request_timeout_ms
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_plugin_kv_max_keys() -> u64 {
    everruns_runtime::KvQuota::default().max_keys
}

fn default_plugin_kv_max_bytes() -> u64 {
    everruns_runtime::KvQuota::default().max_bytes
}

fn default_trace_sample_ratio() -> f64 {
    1.0
}

fn default_sse_heartbeat_ms() -> u64 {
    15_000
}

fn default_poll_ms() -> u64 {
    1_000
}

fn default_max_runs() -> usize {
    64
}

fn enabled() -> bool {
    true
}

fn default_lease_ms() -> u64 {
    15_000
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            data_dir: PathBuf::from(".everruns"),
            database_url: None,
            database_max_connections: 10,
            log_format: LogFormat::Text,
            bootstrap_api_key: None,
            plugin_dirs: Vec::new(),
            allow_private_networks: false,
            builtin_plugins: true,
            disabled_builtin_plugins: Vec::new(),
            plugin_secrets: HashMap::new(),
            plugin_grants: HashMap::new(),
            secret_key: None,
            secret_key_previous: None,
            llm_kind: None,
            llm_base_url: None,
            llm_api_key: None,
            llm_model: None,
            worker: true,
            executor_lease_ms: default_lease_ms(),
            executor_poll_ms: default_poll_ms(),
            executor_max_runs: default_max_runs(),
            events_poll_ms: default_poll_ms(),
            sse_heartbeat_ms: default_sse_heartbeat_ms(),
            metrics_public: false,
            otlp_endpoint: None,
            trace_sample_ratio: default_trace_sample_ratio(),
            rate_limit_per_key: default_rate_limit(),
            run_start_limit_per_key: default_run_start_limit(),
            max_streams_per_key: default_max_streams_per_key(),
            max_streams: default_max_streams(),
            request_timeout_ms: default_request_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            plugin_kv_max_keys: default_plugin_kv_max_keys(),
            plugin_kv_max_bytes: default_plugin_kv_max_bytes(),
            mcp_server_allowed_hosts: default_mcp_hosts(),
            mcp_server_allowed_origins: Vec::new(),
        }
    }
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
    "plugin_dirs",
    "allow_private_networks",
    "builtin_plugins",
    "disabled_builtin_plugins",
    "secret_key",
    "secret_key_previous",
    "llm_kind",
    "llm_base_url",
    "llm_api_key",
    "llm_model",
    "executor_lease_ms",
    "executor_poll_ms",
    "executor_max_runs",
    "events_poll_ms",
    "sse_heartbeat_ms",
    "worker",
    "metrics_public",
    "otlp_endpoint",
    "trace_sample_ratio",
    "rate_limit_per_key",
    "run_start_limit_per_key",
    "max_streams_per_key",
    "max_streams",
    "request_timeout_ms",
    "idle_timeout_ms",
    "plugin_kv_max_keys",
    "plugin_kv_max_bytes",
    "mcp_server_allowed_hosts",
    "mcp_server_allowed_origins",
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
        let base = Config::default();
        let defaults = Defaults {
            listen: base.listen,
            data_dir: base.data_dir,
            database_max_connections: base.database_max_connections,
            log_format: base.log_format,
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
        if serve.is_some_and(|s| s.no_worker) {
            figment = figment.merge(Serialized::default("worker", false));
        }

        let mut config: Config = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        // An empty variable means "not set" (common in compose files and CI matrices).
        for secret in [
            &mut config.database_url,
            &mut config.bootstrap_api_key,
            &mut config.llm_api_key,
            &mut config.secret_key,
            &mut config.secret_key_previous,
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().trim().is_empty())
            {
                *secret = None;
            }
        }
        if config
            .otlp_endpoint
            .as_ref()
            .is_some_and(|e| e.trim().is_empty())
        {
            config.otlp_endpoint = None;
        }
        if let Some(endpoint) = &config.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            bail!("invalid configuration: otlp_endpoint must be an http:// or https:// URL");
        }
        if !(0.0..=1.0).contains(&config.trace_sample_ratio) {
            bail!("invalid configuration: trace_sample_ratio must be between 0.0 and 1.0");
        }
        if config.idle_timeout_ms == 0 {
            bail!("invalid configuration: idle_timeout_ms must be at least 1");
        }
        if config.plugin_kv_max_keys == 0 || config.plugin_kv_max_bytes == 0 {
            bail!(
                "invalid configuration: plugin_kv_max_keys and plugin_kv_max_bytes must be at \
                 least 1 (a plugin that may not keep state is denied `kv` in plugin_grants)"
            );
        }
        if config.database_max_connections == 0 {
            bail!("invalid configuration: database_max_connections must be at least 1");
        }
        if let Some(unknown) = config
            .disabled_builtin_plugins
            .iter()
            .find(|id| !crate::builtins::IDS.contains(&id.as_str()))
        {
            bail!(
                "invalid configuration: disabled_builtin_plugins: `{unknown}` is not a built-in \
                 capability (they are {})",
                crate::builtins::IDS.join(", ")
            );
        }
        Ok(config)
    }

    /// The default LLM provider, when one is configured.
    pub fn llm_provider(&self) -> anyhow::Result<Option<everruns_llm::ProviderConfig>> {
        let Some(kind) = self.llm_kind.as_deref().filter(|k| !k.trim().is_empty()) else {
            return Ok(None);
        };
        let kind: everruns_llm::ProviderKind = kind.parse().map_err(|e: String| {
            anyhow::anyhow!("invalid configuration: EVERRUNS_LLM_KIND: {e}")
        })?;
        let base_url = match (&self.llm_base_url, kind) {
            (Some(url), _) if !url.trim().is_empty() => url.trim().to_owned(),
            (_, everruns_llm::ProviderKind::OpenAi) => "https://api.openai.com/v1".to_owned(),
            (_, everruns_llm::ProviderKind::Anthropic) => "https://api.anthropic.com/v1".to_owned(),
        };
        Ok(Some(everruns_llm::ProviderConfig {
            kind,
            base_url,
            api_key: self
                .llm_api_key
                .clone()
                .unwrap_or_else(|| SecretString::from(String::new())),
            default_model: self.llm_model.clone().filter(|m| !m.trim().is_empty()),
        }))
    }

    /// The API's rate limits, stream caps and request deadline.
    pub fn limits(&self) -> everruns_api::LimitSettings {
        everruns_api::LimitSettings {
            rate_limit_per_key: self.rate_limit_per_key,
            run_start_limit_per_key: self.run_start_limit_per_key,
            max_streams_per_key: self.max_streams_per_key,
            max_streams: self.max_streams,
            request_timeout_ms: self.request_timeout_ms,
        }
    }

    /// Which hosts and origins `/mcp` answers.
    pub fn mcp(&self) -> everruns_api::McpSettings {
        everruns_api::McpSettings {
            allowed_hosts: self.mcp_server_allowed_hosts.clone(),
            allowed_origins: self.mcp_server_allowed_origins.clone(),
        }
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
