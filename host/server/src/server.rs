//! The running server: opens the store, loads the master key and checks the database's
//! encrypted values open with it, makes sure an API key exists, loads the plugins,
//! starts the executor (unless this process only serves the API) and serves HTTP until the
//! shutdown token is cancelled (SSE streams end; other in-flight requests get a grace period).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use everruns_api::{
    AppState, EventHub, Limits, MIN_KEY_LEN, MetricsEndpoint, generate_key, key_record,
};
use everruns_core::Role;
use everruns_executor::{Executor, ExecutorConfig, Providers, Starter};
use everruns_runtime::Runtime;
use everruns_secrets::Keyring;
use everruns_store::{Store, StoreConfig};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{master_key, plugins};

/// A server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    store: Arc<dyn Store>,
    keyring: Option<Arc<Keyring>>,
    runtime: Runtime,
    executor: Option<Executor>,
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
}

impl Server {
    /// Opens the store (applying migrations), creates the first API key when the database has
    /// none, starts the plugin runtime and binds the listening socket.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        // Before anything registers a metric (plugins register theirs when they load).
        crate::telemetry::prometheus();
        let store = open_store(config).await?;
        let keyring = open_keyring(config, store.as_ref()).await?;
        bootstrap_api_key(store.as_ref(), config).await?;
        let runtime = build_runtime(config, &store, &keyring)?;
        let executor = if config.worker {
            Some(build_executor(
                config,
                store.clone(),
                runtime.clone(),
                keyring.clone(),
            )?)
        } else {
            None
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            store,
            keyring,
            runtime,
            executor,
            listener,
            local_addr,
            config: config.clone(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests and runs stop.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        plugins::load_and_watch(&self.runtime, &self.config, &shutdown).await;
        let runs = match &self.executor {
            Some(executor) => executor.starter(),
            None => Starter::queue_only(
                self.store.clone(),
                self.runtime.clone(),
                ExecutorConfig::default().default_max_steps,
            ),
        };
        let worker = self
            .executor
            .map(|executor| tokio::spawn(executor.run(shutdown.clone())));
        tracing::info!(
            addr = %self.local_addr,
            store = self.store.backend(),
            worker = worker.is_some(),
            "everruns is serving"
        );
        let events = EventHub::new(
            self.store.clone(),
            Duration::from_millis(self.config.events_poll_ms.max(10)),
            Duration::from_millis(self.config.sse_heartbeat_ms.max(10)),
            shutdown.clone(),
        );
        let app = everruns_api::app(AppState {
            store: self.store,
            runtime: self.runtime,
            runs,
            keyring: self.keyring,
            events,
            metrics: MetricsEndpoint::new(
                crate::telemetry::prometheus(),
                self.config.metrics_public,
            ),
            limits: Arc::new(Limits::new(self.config.limits())),
            mcp: self.config.mcp(),
        });
        let serving = everruns_api::serve(
            self.listener,
            app,
            Duration::from_millis(self.config.idle_timeout_ms),
            shutdown.clone(),
        );
        // Streams end at shutdown; a request that still has not finished after the grace
        // period is cut off rather than holding the process.
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            () = serving => {}
            () = grace => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight after the grace period; closing them");
            }
        }
        shutdown.cancel();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        tracing::info!("everruns stopped");
        Ok(())
    }
}

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs only the executor (the `worker` subcommand) until `shutdown`.
/// It serves `/metrics` and `/health` on the configured listen address.
pub async fn run_worker(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::telemetry::prometheus();
    let store = open_store(config).await?;
    let keyring = open_keyring(config, store.as_ref()).await?;
    let runtime = build_runtime(config, &store, &keyring)?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (a worker serves /metrics and /health there; give each \
             process its own EVERRUNS_LISTEN)",
            config.listen
        )
    })?;
    plugins::load_and_watch(&runtime, config, &shutdown).await;
    let executor = build_executor(config, store.clone(), runtime.clone(), keyring.clone())?;
    let monitoring = everruns_api::monitoring_app(AppState {
        runs: Starter::queue_only(
            store.clone(),
            runtime.clone(),
            ExecutorConfig::default().default_max_steps,
        ),
        events: EventHub::new(
            store.clone(),
            Duration::from_millis(config.events_poll_ms.max(10)),
            Duration::from_millis(config.sse_heartbeat_ms.max(10)),
            shutdown.clone(),
        ),
        store,
        runtime,
        keyring,
        metrics: MetricsEndpoint::new(crate::telemetry::prometheus(), config.metrics_public),
        limits: Arc::new(Limits::new(config.limits())),
        mcp: config.mcp(),
    });
    tracing::info!(addr = %listener.local_addr()?, "worker serving /metrics and /health");
    let serving = tokio::spawn(everruns_api::serve(
        listener,
        monitoring,
        Duration::from_millis(config.idle_timeout_ms),
        shutdown.clone(),
    ));
    executor.run(shutdown).await;
    serving.abort();
    Ok(())
}

/// The master keys, checked against the database's encrypted values (a wrong or missing key
/// stops start-up here).
async fn open_keyring(config: &Config, store: &dyn Store) -> anyhow::Result<Option<Arc<Keyring>>> {
    let keyring = master_key::load(config)?;
    master_key::check(store, keyring.as_ref()).await?;
    if keyring.is_none() {
        tracing::warn!(
            "EVERRUNS_SECRET_KEY is not set: providers and secrets cannot be stored until every \
             process sharing this database is given the same key"
        );
    }
    Ok(keyring.map(Arc::new))
}

fn build_runtime(
    config: &Config,
    store: &Arc<dyn Store>,
    keyring: &Option<Arc<Keyring>>,
) -> anyhow::Result<Runtime> {
    plugins::build_runtime(
        config,
        plugins::store_kv(store.clone()),
        plugins::store_secrets(config, store.clone(), keyring.clone()),
    )
}

fn build_executor(
    config: &Config,
    store: Arc<dyn Store>,
    runtime: Runtime,
    keyring: Option<Arc<Keyring>>,
) -> anyhow::Result<Executor> {
    let default = match config.llm_provider()? {
        Some(provider) => Some(
            everruns_llm::LlmClient::new(provider)
                .map_err(|e| anyhow::anyhow!("invalid LLM provider configuration: {e}"))?,
        ),
        None => {
            tracing::info!(
                "no default LLM provider configured (EVERRUNS_LLM_*): agents must name one of \
                 /v1/providers"
            );
            None
        }
    };
    let providers = Providers::new(default, keyring);
    let lease = Duration::from_millis(config.executor_lease_ms.max(100));
    let executor_config = ExecutorConfig {
        lease,
        heartbeat: lease / 3,
        poll_interval: Duration::from_millis(config.executor_poll_ms.max(10)),
        max_concurrent_runs: config.executor_max_runs.max(1),
        ..ExecutorConfig::default()
    };
    Ok(Executor::new(store, runtime, providers, executor_config))
}

/// Opens the configured store and applies migrations.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.store_url()?;
    let store = everruns_store::connect(&StoreConfig {
        url,
        max_connections: config.database_max_connections,
    })
    .await
    .context("opening the database")?;
    Ok(store)
}

/// On first start (no API key at all), creates the admin key: the operator's
/// `EVERRUNS_BOOTSTRAP_API_KEY` if given, else a random one printed once.
async fn bootstrap_api_key(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    let (record, generated) = match &config.bootstrap_api_key {
        Some(key) => {
            let key = key.expose_secret();
            if key.len() < MIN_KEY_LEN || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!(
                    "EVERRUNS_BOOTSTRAP_API_KEY must be at least {MIN_KEY_LEN} characters without \
                     whitespace"
                );
            }
            (key_record("admin", key, Role::Admin), None)
        }
        None => {
            let generated = generate_key("admin", Role::Admin);
            (generated.record, Some(generated.secret))
        }
    };
    if store.create_first_api_key(record).await?.is_some() {
        match generated {
            Some(secret) => {
                // Printed on stdout, never logged: this is the only time the key is shown.
                println!(
                    "\n  First start: created the admin API key (shown only this once):\n\n    \
                     {secret}\n\n  Use it as `Authorization: Bearer <key>`.\n"
                );
            }
            None => tracing::info!("first start: created the admin API key from the environment"),
        }
    }
    Ok(())
}
