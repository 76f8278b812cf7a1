//! Executor settings in one value.

use std::time::Duration;

/// How the executor claims and runs work.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Identifies this worker in leases (host, pid and a random suffix by default).
    pub owner: String,
    /// How long a claim lasts without renewal; another worker takes the run over after that.
    pub lease: Duration,
    /// How often the lease is renewed (well under `lease`).
    pub heartbeat: Duration,
    /// How often to look for work when nothing woke the worker.
    pub poll_interval: Duration,
    /// How often a running run checks whether it was cancelled.
    pub cancel_check: Duration,
    /// Runs executed at once by this worker.
    pub max_concurrent_runs: usize,
    /// Takeovers without progress after which a run fails instead of being retried again.
    pub max_recoveries: u32,
    /// Step limit for agents that set none.
    pub default_max_steps: u32,
    /// Token deltas are coalesced into one `message.delta` event per this interval.
    pub delta_flush: Duration,
    /// How often this process expires the approvals nobody decided in time.
    pub approval_sweep: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            owner: default_owner(),
            lease: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            cancel_check: Duration::from_millis(200),
            max_concurrent_runs: 64,
            max_recoveries: 3,
            default_max_steps: 50,
            delta_flush: Duration::from_millis(30),
            approval_sweep: Duration::from_secs(1),
        }
    }
}

/// `worker-<pid>-<random>`: unique per process start, readable in logs.
pub fn default_owner() -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("worker-{}-{}", std::process::id(), &suffix[..8])
}
