//! [`EventSignal`]: a wake-up counter. The store keeps two: one bumped after writes that
//! appended events (SSE readers re-read the log at once instead of waiting for their poll), one
//! bumped when a run may have become claimable (workers look for work at once). On PostgreSQL
//! the run signal is also bumped by `NOTIFY`s from other processes.

use std::sync::Arc;

use tokio::sync::watch;

/// A counter bumped after every committed write that appended events. Readers compare it
/// with what they saw last; it carries no data, the log in the store is the truth.
#[derive(Debug, Clone)]
pub struct EventSignal {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for EventSignal {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl EventSignal {
    /// Records that events were appended.
    pub(crate) fn bump(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A handle that does not keep the signal alive (for background listeners).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<watch::Sender<u64>> {
        Arc::downgrade(&self.tx)
    }

    /// Bumps through a weak handle; `false` once the signal is gone.
    pub(crate) fn bump_weak(weak: &std::sync::Weak<watch::Sender<u64>>) -> bool {
        match weak.upgrade() {
            Some(tx) => {
                tx.send_modify(|n| *n = n.wrapping_add(1));
                true
            }
            None => false,
        }
    }

    /// A receiver that sees every later bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Bumps every signal in `signals` when `result` is a success, then hands the result back.
pub(crate) fn after<T, E>(signals: &[&EventSignal], result: Result<T, E>) -> Result<T, E> {
    if result.is_ok() {
        for signal in signals {
            signal.bump();
        }
    }
    result
}
