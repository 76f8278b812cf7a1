//! [`EventBus`]: tells whoever follows a session that its event log grew. Writes of this
//! process deliver the committed events themselves; on PostgreSQL, writes of other processes
//! arrive through `LISTEN/NOTIFY` as a bare "the log now ends at seq N" (read the log).
//!
//! Only sessions somebody watches cost anything beyond a map lookup. A watcher sees the
//! newest notice only (a `watch`): notices may be skipped, so a watcher whose notice does not
//! continue exactly where it stopped reads the log, which is the truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use everruns_core::{Event, SessionId};
use tokio::sync::{mpsc, watch};

/// What a session's log gained: its last sequence number after the write and, for writes of
/// this process, the events themselves (empty when only the number is known).
#[derive(Debug, Clone, Default)]
pub struct Appended {
    /// The session's last sequence number after the write.
    pub last_seq: i64,
    /// The events written, in sequence order, ending at `last_seq`; may be empty.
    pub events: Arc<[Event]>,
}

/// Routes notices of appended events to the watchers of each session.
#[derive(Debug, Clone, Default)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: Mutex<HashMap<SessionId, watch::Sender<Appended>>>,
    /// Where local writes are also sent to reach other processes (PostgreSQL `NOTIFY`).
    outbox: Option<mpsc::UnboundedSender<(SessionId, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent whatever panicked while holding it (single inserts/removes).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventBus {
    /// A bus that also hands every local notice to `outbox` (for other processes).
    pub(crate) fn with_outbox(outbox: mpsc::UnboundedSender<(SessionId, i64)>) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: Mutex::default(),
                outbox: Some(outbox),
            }),
        }
    }

    /// Publishes events this process committed (all of one session, in sequence order).
    pub(crate) fn committed(&self, events: &[Event]) {
        let Some(last) = events.last() else {
            return;
        };
        let session = &last.session_id;
        if let Some(outbox) = &self.inner.outbox {
            // Fails only once the notifier is gone (the store is being dropped).
            let _ = outbox.send((session.clone(), last.seq));
        }
        let sessions = lock(&self.inner.sessions);
        if let Some(tx) = sessions.get(session) {
            offer(
                tx,
                Appended {
                    last_seq: last.seq,
                    events: events.into(),
                },
            );
        }
    }

    /// Publishes that another process made the session's log end at `last_seq`.
    pub(crate) fn remote(&self, session: &SessionId, last_seq: i64) {
        let sessions = lock(&self.inner.sessions);
        if let Some(tx) = sessions.get(session) {
            offer(
                tx,
                Appended {
                    last_seq,
                    events: Arc::new([]),
                },
            );
        }
    }

    /// Follows `session`: the returned feed sees every later notice of it (or a newer one).
    pub fn watch(&self, session: &SessionId) -> SessionFeed {
        let mut sessions = lock(&self.inner.sessions);
        let rx = match sessions.get(session) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(Appended::default());
                sessions.insert(session.clone(), tx);
                rx
            }
        };
        SessionFeed {
            bus: self.inner.clone(),
            session: session.clone(),
            rx,
        }
    }

    pub(crate) fn downgrade(&self) -> WeakBus {
        WeakBus(Arc::downgrade(&self.inner))
    }
}

/// Replaces the current notice unless it already went further: notices of concurrent writes
/// may be published out of commit order, and the newest log end must win.
fn offer(tx: &watch::Sender<Appended>, notice: Appended) {
    tx.send_if_modified(|current| {
        if notice.last_seq > current.last_seq {
            *current = notice;
            true
        } else {
            false
        }
    });
}

/// One follower of one session's notices; stops counting as a watcher when dropped.
#[derive(Debug)]
pub struct SessionFeed {
    bus: Arc<Inner>,
    session: SessionId,
    rx: watch::Receiver<Appended>,
}

impl SessionFeed {
    /// Waits for the next notice and returns it (or a newer one, if several came).
    /// `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Appended> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

impl Drop for SessionFeed {
    fn drop(&mut self) {
        let mut sessions = lock(&self.bus.sessions);
        // Our receiver is still alive here, so 1 means "the last one": stop routing.
        if sessions
            .get(&self.session)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            sessions.remove(&self.session);
        }
    }
}

/// A handle on the bus that does not keep it alive (for the PostgreSQL listener).
#[derive(Debug, Clone)]
pub(crate) struct WeakBus(std::sync::Weak<Inner>);

impl WeakBus {
    /// Delivers a remote notice; `false` once the bus is gone.
    pub(crate) fn remote(&self, session: &SessionId, last_seq: i64) -> bool {
        match self.0.upgrade() {
            Some(inner) => {
                EventBus { inner }.remote(session, last_seq);
                true
            }
            None => false,
        }
    }

    /// Whether the bus still exists.
    pub(crate) fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}
