//! [`EventSignal`]: wakes readers of the event log (SSE streams) when a write in this process
//! appended events, so they re-read the log at once instead of waiting for their poll.

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

    /// A receiver that sees every later bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Bumps `signal` when `result` is a success, then hands the result back.
pub(crate) fn after<T, E>(signal: &EventSignal, result: Result<T, E>) -> Result<T, E> {
    if result.is_ok() {
        signal.bump();
    }
    result
}
