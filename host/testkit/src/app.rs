//! Spawns the real Everruns server in-process on 127.0.0.1:0 and talks to it over HTTP.

use std::net::SocketAddr;
use std::path::Path;

use everruns_server::{Config, LogFormat, Server};
use secrecy::SecretString;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The admin key every test server is bootstrapped with.
pub const TEST_API_KEY: &str = "evr_test_admin_key_0123456789abcdef";

/// The master key of test servers on PostgreSQL (`EVERRUNS_SECRET_KEY`): there every process
/// must be given the same key. On SQLite test servers generate their key file instead.
pub const TEST_SECRET_KEY: &str = "test:ZXZlcnJ1bnMtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";

/// A server running for one test.
#[derive(Debug)]
pub struct TestApp {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The admin API key.
    pub api_key: String,
    /// An HTTP client (no default auth header: use [`TestApp::get`] and friends for that).
    pub client: reqwest::Client,
    config: Config,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts a server with its data in `data_dir` and, when `database_url` is given, its
    /// database in PostgreSQL (else SQLite inside `data_dir`).
    pub async fn start(data_dir: &Path, database_url: Option<&str>) -> Self {
        Self::start_configured(data_dir, database_url, |_| {}).await
    }

    /// Like [`TestApp::start`], with `configure` adjusting the configuration first (LLM
    /// provider, plugin directories, built-in plugins (off unless turned on), lease, ...).
    /// The API's rate limits and stream caps are off unless turned on: tests send bursts no
    /// client would.
    pub async fn start_configured(
        data_dir: &Path,
        database_url: Option<&str>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            database_url: database_url.map(|u| SecretString::from(u.to_owned())),
            database_max_connections: 5,
            log_format: LogFormat::Text,
            bootstrap_api_key: Some(SecretString::from(TEST_API_KEY.to_owned())),
            // Compiling the built-in plugins costs every start seconds; tests that use
            // them turn them on.
            builtin_plugins: false,
            secret_key: database_url.map(|_| SecretString::from(TEST_SECRET_KEY.to_owned())),
            rate_limit_per_key: 0,
            run_start_limit_per_key: 0,
            max_streams_per_key: 0,
            max_streams: 0,
            ..Config::default()
        };
        configure(&mut config);
        Self::start_with_config(config).await
    }

    async fn start_with_config(config: Config) -> Self {
        let server = Server::build(&config)
            .await
            .unwrap_or_else(|e| panic!("test server failed to start: {e:#}"));
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(server.run(shutdown.clone()));
        Self {
            addr,
            base_url: format!("http://{addr}"),
            api_key: TEST_API_KEY.to_owned(),
            client: reqwest::Client::new(),
            config,
            shutdown,
            handle,
        }
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        match self.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("test server failed: {e:#}"),
            Err(e) => panic!("test server task panicked: {e}"),
        }
    }

    /// Stops the server and starts a new one on the same data directory and database.
    pub async fn restart(self) -> Self {
        let config = self.config.clone();
        self.stop().await;
        Self::start_with_config(config).await
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// An authenticated GET.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.api_key)
    }

    /// An authenticated POST.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(&self.api_key)
    }

    /// An authenticated PATCH.
    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path)).bearer_auth(&self.api_key)
    }

    /// An authenticated PUT.
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.put(self.url(path)).bearer_auth(&self.api_key)
    }

    /// An authenticated DELETE.
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(self.url(path))
            .bearer_auth(&self.api_key)
    }

    /// POSTs `body` to `path` and returns the created resource, asserting a 201.
    pub async fn create(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .post(path)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        crate::json_of(response, 201).await
    }

    /// Creates an agent from `agent` (a `POST /v1/agents` body) and a session of it; returns
    /// the session's id.
    pub async fn session_with(&self, agent: serde_json::Value) -> String {
        let agent = self.create("/v1/agents", agent).await;
        let session = self
            .create("/v1/sessions", serde_json::json!({"agent_id": agent["id"]}))
            .await;
        session["id"].as_str().expect("a session id").to_owned()
    }
}
