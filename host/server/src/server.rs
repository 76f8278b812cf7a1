//! The running server: opens the store, makes sure an API key exists, and serves HTTP until the
//! shutdown token is cancelled (in-flight requests finish first).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use everruns_api::{AppState, MIN_KEY_LEN, generate_key, key_record};
use everruns_store::{Store, StoreConfig};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    store: Arc<dyn Store>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Server {
    /// Opens the store (applying migrations), creates the first API key when the database has
    /// none, and binds the listening socket.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store = open_store(config).await?;
        bootstrap_api_key(store.as_ref(), config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            store,
            listener,
            local_addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            addr = %self.local_addr,
            store = self.store.backend(),
            "everruns is serving"
        );
        let app = everruns_api::app(AppState {
            store: self.store,
            wake: everruns_api::Wake::none(),
        });
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server failed")?;
        tracing::info!("everruns stopped");
        Ok(())
    }
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
            (key_record("admin", key), None)
        }
        None => {
            let generated = generate_key("admin");
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
