//! The worker: claims runs while it has capacity, executes each in its own task, and sleeps
//! until woken (a run queued or freed in this process, or on PostgreSQL in any process), the
//! poll interval passes, or a run finishes. Runs started in this process while it has a free
//! slot skip the claim: [`Starter`] claims them in the commit that starts them and hands them
//! over. One watcher finds the cancel requests of all runs in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use everruns_core::metrics::WORKER_SLOTS_AVAILABLE;
use everruns_core::{Lease, Overrides, Run, RunId, SessionId, StartedRun};
use everruns_runtime::Runtime;
use everruns_store::{Claim, Store, StoreError};
use tokio::sync::mpsc::{self, error::SendError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
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
    pub in_flight: InFlight,
    /// The worker's slots: one per run it executes.
    pub permits: Arc<Semaphore>,
    /// Runs claimed by [`Starter`], to the worker loop.
    pub handoff: mpsc::UnboundedSender<Handoff>,
    /// The worker loop's end of `handoff`, taken when it starts.
    pub handed: Mutex<Option<mpsc::UnboundedReceiver<Handoff>>>,
}

/// How a run in flight is told that a cancel was requested.
#[derive(Debug, Clone, Default)]
pub(crate) struct CancelSignal {
    /// Cancelled to stop the run's in-flight LLM call or tool call.
    pub stop: CancellationToken,
    /// Set before `stop` fires when the reason is a cancel request.
    pub requested: Arc<AtomicBool>,
}

impl CancelSignal {
    fn fire(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.stop.cancel();
    }
}

/// The runs this process executes, by run id and lease token (a run taken back after a lost
/// lease can briefly be in flight twice): one query finds the cancel requests of all of them.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashMap<(RunId, i64), CancelSignal>>);

impl InFlight {
    /// Registers the run under `lease` until the returned guard is dropped.
    pub fn register(&self, lease: &Lease) -> (CancelSignal, InFlightGuard<'_>) {
        let signal = CancelSignal::default();
        let key = (lease.run_id.clone(), lease.token);
        self.lock().insert(key.clone(), signal.clone());
        (
            signal,
            InFlightGuard {
                in_flight: self,
                key,
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(RunId, i64), CancelSignal>> {
        // The map stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Fires the signal of every registered run in `ids`.
    fn cancel(&self, ids: &[RunId]) {
        for ((id, _), signal) in self.lock().iter() {
            if ids.contains(id) {
                signal.fire();
            }
        }
    }
}

/// Removes a run from [`InFlight`] when its execution ends.
pub(crate) struct InFlightGuard<'a> {
    in_flight: &'a InFlight,
    key: (RunId, i64),
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.key);
    }
}

/// A run claimed when it was started, on its way to this process's worker with the slot
/// reserved for it.
type Handoff = (Run, Lease, OwnedSemaphorePermit);

/// Starts runs for the API. When this process has a worker with a free slot, the new run is
/// claimed in the commit that starts it and handed straight to that worker: one commit from
/// the POST to `run.started`, and no claim query. Otherwise (no free slot, a run queued behind
/// another, or no worker here) the run is queued and the workers are woken.
#[derive(Debug, Clone)]
pub struct Starter {
    store: Arc<dyn Store>,
    runtime: Runtime,
    default_max_steps: u32,
    local: Option<Arc<Shared>>,
}

impl Starter {
    /// A starter for a process without a worker: runs are queued for workers elsewhere, which
    /// PostgreSQL's NOTIFY (or their polling) wakes.
    /// Its runs' configurations list the tools of `runtime`'s capabilities and default to
    /// `default_max_steps`.
    pub fn queue_only(store: Arc<dyn Store>, runtime: Runtime, default_max_steps: u32) -> Self {
        Self {
            store,
            runtime,
            default_max_steps,
            local: None,
        }
    }

    /// Starts a run for `content` in `session` (see `Store::start_run`), with the
    /// configuration resolved now from the agent, the session's overrides and `overrides`
    /// (the message's), stored with the run.
    pub async fn start_run(
        &self,
        session: &SessionId,
        content: String,
        idempotency_key: Option<String>,
        overrides: Option<&Overrides>,
    ) -> Result<StartedRun, StoreError> {
        let config = crate::resolve::run_config(
            self.store.as_ref(),
            &self.runtime,
            session,
            overrides,
            self.default_max_steps,
        )
        .await?;
        // The request's span (when spans are exported): the run's spans continue its trace.
        let trace = crate::telemetry::current_traceparent();
        let permit = self
            .local
            .as_ref()
            .and_then(|shared| shared.permits.clone().try_acquire_owned().ok());
        // No worker here, or no free slot: queue it (and wake this process's worker, if any).
        let (Some(shared), Some(permit)) = (&self.local, permit) else {
            let started = self
                .store
                .start_run_with(
                    session,
                    content,
                    idempotency_key,
                    Some(&config),
                    trace.as_deref(),
                    None,
                )
                .await?;
            if started.created {
                self.wake();
            }
            return Ok(started);
        };
        let (shared, session) = (shared.clone(), session.clone());
        // Its own task: once the claim commits, the run must reach the worker even when the
        // request that started it goes away.
        let task = tokio::spawn(async move {
            let claim = Claim {
                owner: shared.config.owner.clone(),
                lease: shared.config.lease,
            };
            let started = shared
                .store
                .start_run_with(
                    &session,
                    content,
                    idempotency_key,
                    Some(&config),
                    trace.as_deref(),
                    Some(&claim),
                )
                .await?;
            let claimed =
                started.created && started.run.lease_owner.as_deref() == Some(claim.owner.as_str());
            if claimed {
                let lease = Lease {
                    run_id: started.run.id.clone(),
                    owner: claim.owner,
                    token: started.run.lease_token,
                };
                if let Err(SendError((_, lease, _))) =
                    shared.handoff.send((started.run.clone(), lease, permit))
                {
                    // The worker has stopped: let the next start (or another process) take
                    // the run over at once.
                    let _ = shared.store.renew_lease(&lease, Duration::ZERO).await;
                }
            } else {
                drop(permit);
                if started.created {
                    shared.wake.notify_one();
                }
            }
            Ok(started)
        });
        match task.await {
            Ok(started) => started,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime that is shutting down cancels the task.
            Err(_) => Err(StoreError::Unavailable(
                "the server is shutting down".to_owned(),
            )),
        }
    }

    /// Asks this process's worker, if any, to look for work now (after a cancel request).
    pub fn wake(&self) {
        if let Some(shared) = &self.local {
            shared.wake.notify_one();
        }
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
        let (handoff, handed) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(Shared {
                store,
                runtime,
                providers,
                permits: Arc::new(Semaphore::new(config.max_concurrent_runs.max(1))),
                config,
                wake: Arc::new(Notify::new()),
                in_flight: InFlight::default(),
                handoff,
                handed: Mutex::new(Some(handed)),
            }),
        }
    }

    /// Starts runs through this executor (see [`Starter`]).
    pub fn starter(&self) -> Starter {
        Starter {
            store: self.shared.store.clone(),
            runtime: self.shared.runtime.clone(),
            default_max_steps: self.shared.config.default_max_steps,
            local: Some(self.shared.clone()),
        }
    }

    /// Claims and executes runs until `shutdown` is cancelled. Runs in flight then stop at
    /// their next step boundary or await point and release their lease, so the next start
    /// (or another process) resumes them from their last recorded step.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.shared.config;
        let permits = &self.shared.permits;
        let taken = self
            .shared
            .handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut handed) = taken else {
            tracing::error!("this executor is already running");
            return;
        };
        let mut tasks = JoinSet::new();
        let slots = metrics::gauge!(WORKER_SLOTS_AVAILABLE);
        let spawn = |tasks: &mut JoinSet<()>, run: Run, lease: Lease, permit| {
            let shared = self.shared.clone();
            let stop = shutdown.child_token();
            tasks.spawn(async move {
                run::execute(shared, run, lease, stop).await;
                drop(permit);
            });
        };
        // Runs queued, finished or cancelled anywhere (NOTIFY on PostgreSQL) wake the worker.
        let mut runs_changed = self.shared.store.run_signal().subscribe();
        let watcher = tokio::spawn(watch_cancels(self.shared.clone()));
        let sweeper = tokio::spawn(expire_approvals(self.shared.clone()));
        tracing::info!(owner = %config.owner, "executor started");
        loop {
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                match self
                    .shared
                    .store
                    .claim_run(&config.owner, config.lease)
                    .await
                {
                    Ok(Some((run, lease))) => spawn(&mut tasks, run, lease, permit),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming a run failed; retrying later");
                        break;
                    }
                }
            }
            slots.set(permits.available_permits() as f64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some((run, lease, permit)) = handed.recv() => spawn(&mut tasks, run, lease, permit),
                _ = self.shared.wake.notified() => {}
                _ = runs_changed.changed() => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Runs handed over from now on find the channel closed and release their lease; those
        // already handed over are released here, for the next start to take over at once.
        handed.close();
        while let Some((_, lease, _)) = handed.recv().await {
            let _ = self.shared.store.renew_lease(&lease, Duration::ZERO).await;
        }
        while tasks.join_next().await.is_some() {}
        watcher.abort();
        sweeper.abort();
        tracing::info!("executor stopped");
    }
}

/// Looks for cancel requests for this worker's runs every `cancel_check`, with one query for
/// all of them, and stops the in-flight LLM call or tool call of each.
async fn watch_cancels(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.config.cancel_check).await;
        if shared.in_flight.is_empty() {
            continue;
        }
        match shared.store.cancelling_runs(&shared.config.owner).await {
            Ok(ids) if !ids.is_empty() => shared.in_flight.cancel(&ids),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for cancel requests failed; retrying"),
        }
    }
}

/// Expires the approvals nobody decided in time, every `approval_sweep` (every process does:
/// each approval expires once, whoever gets to it first). A run whose last pending approval
/// expires is queued again and continues with the call refused.
async fn expire_approvals(shared: Arc<Shared>) {
    /// At most this many per round; a full round goes again at once.
    const BATCH: u32 = 100;
    loop {
        match shared.store.expire_approvals(BATCH).await {
            Ok(n) if n == BATCH => continue,
            Ok(n) if n > 0 => tracing::info!(expired = n, "approvals expired"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "expiring approvals failed; retrying"),
        }
        tokio::time::sleep(shared.config.approval_sweep).await;
    }
}

/// Lease renewals never wait longer than this for the database.
pub(crate) const RENEW_TIMEOUT: Duration = Duration::from_secs(5);
