//! [`EventSignal`]: a wake-up counter, bumped when a run may have become claimable (workers
//! look for work at once). On PostgreSQL it is also bumped by `NOTIFY`s from other processes.

use std::sync::Arc;

use tokio::sync::watch;

/// A counter bumped after every committed write that may have made a run claimable. It
/// carries no data: the runs table is the truth.
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
    /// Records that something changed.
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
