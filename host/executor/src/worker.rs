//! The worker: claims runs while it has capacity, executes each in its own task, and sleeps
//! until woken (a run queued or freed in this process, or on PostgreSQL in any process), the
//! poll interval passes, or a run finishes.

use std::sync::Arc;
use std::time::Duration;

use everruns_runtime::Runtime;
use everruns_store::Store;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ExecutorConfig;
use crate::providers::Providers;
use crate::run;

/// Everything a run task needs, shared by all of them.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub runtime: Runtime,
    pub providers: Providers,
    pub config: ExecutorConfig,
    pub wake: Arc<Notify>,
}

/// Wakes the worker of this process (after a run was queued or cancelled here).
#[derive(Debug, Clone)]
pub struct Waker(Arc<Notify>);

impl Waker {
    /// Asks the worker to look for work now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The durable executor of one process.
#[derive(Debug, Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

impl Executor {
    /// An executor over `store`, calling tools through `runtime` and models through
    /// `providers`.
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Runtime,
        providers: Providers,
        config: ExecutorConfig,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                runtime,
                providers,
                config,
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// A handle that wakes this executor's worker.
    pub fn waker(&self) -> Waker {
        Waker(self.shared.wake.clone())
    }

    /// Claims and executes runs until `shutdown` is cancelled. Runs in flight then stop at
    /// their next step boundary or await point and release their lease, so the next start
    /// (or another process) resumes them from their last recorded step.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.shared.config;
        let permits = Arc::new(Semaphore::new(config.max_concurrent_runs.max(1)));
        let mut tasks = JoinSet::new();
        // Runs queued, finished or cancelled anywhere (NOTIFY on PostgreSQL) wake the worker.
        let mut runs_changed = self.shared.store.run_signal().subscribe();
        tracing::info!(owner = %config.owner, "executor started");
        loop {
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                match self
                    .shared
                    .store
                    .claim_run(&config.owner, config.lease)
                    .await
                {
                    Ok(Some((run, lease))) => {
                        let shared = self.shared.clone();
                        let stop = shutdown.child_token();
                        tasks.spawn(async move {
                            run::execute(shared, run, lease, stop).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming a run failed; retrying later");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                _ = runs_changed.changed() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        tracing::info!("executor stopped");
    }
}

/// Lease renewals never wait longer than this for the database.
pub(crate) const RENEW_TIMEOUT: Duration = Duration::from_secs(5);
