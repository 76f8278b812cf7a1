//! [`EventHub`]: fan-out of live events. Per session followed by at least one SSE stream, one
//! task learns of new events (from the store's event bus, or by re-reading the log when a
//! notice does not continue where it stopped, or every poll interval), encodes each once and
//! broadcasts it to every stream of that session. So N streams cost one read per new event
//! (none for writes of this process), not N. The events of one commit travel as one frame,
//! so a stream wakes, encodes and writes once per commit, not once per event.
//!
//! The log stays the truth: streams replay from the store, then take live frames, skipping
//! what they already sent; a stream that falls behind the broadcast buffer (a slow client)
//! goes back to reading the store instead of holding the others up.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use everruns_core::{Event, SessionId};
use everruns_store::Store;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::routes::events::EventResponse;

/// Frames kept per session for streams that are momentarily behind; a stream further behind
/// re-reads the log.
const BUFFER: usize = 1024;
/// Events per frame at most (a commit's events are one frame; a long catch-up read is split),
/// which bounds what the buffer holds.
const FRAME_EVENTS: usize = 8;
/// Events read per query when catching up.
const READ_BATCH: u32 = 1000;
/// Pause after a failed read before trying again.
const RETRY: Duration = Duration::from_millis(500);

/// Consecutive events (`first..=last`), encoded once as complete SSE events (`id:`,
/// `event:`, `data:`) that every stream writes as they are (a reference-counted buffer, never
/// copied per stream; a stream that already sent the first few writes a slice of it).
#[derive(Debug)]
pub(crate) struct Frame {
    pub first: i64,
    pub last: i64,
    sse: Bytes,
    /// Where each event after the first starts in `sse`.
    starts: Vec<usize>,
}

impl Frame {
    /// The frame of `events`, which must be consecutive and not empty.
    pub(crate) fn of(events: &[Event]) -> Self {
        let mut sse = String::new();
        let mut starts = Vec::with_capacity(events.len().saturating_sub(1));
        for event in events {
            if !sse.is_empty() {
                starts.push(sse.len());
            }
            // serde_json escapes control characters inside strings, so the JSON is one line,
            // as a single `data:` field requires.
            let data = serde_json::to_string(&EventResponse::from(event.clone()))
                .unwrap_or_else(|_| "{}".to_owned());
            // Writing to a String cannot fail.
            let _ = write!(
                sse,
                "id: {}\nevent: {}\ndata: {data}\n\n",
                event.seq,
                event.event_type.as_str()
            );
        }
        Self {
            first: events.first().map_or(0, |e| e.seq),
            last: events.last().map_or(0, |e| e.seq),
            sse: Bytes::from(sse),
            starts,
        }
    }

    /// The events after `seq` (which must be in `first - 1..last`).
    pub(crate) fn after(&self, seq: i64) -> Bytes {
        let skip = usize::try_from(seq + 1 - self.first).unwrap_or(0);
        match skip.checked_sub(1).and_then(|i| self.starts.get(i)) {
            Some(&start) => self.sse.slice(start..),
            None => self.sse.clone(),
        }
    }
}

/// The fan-out of every followed session of this process.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    store: Arc<dyn Store>,
    poll: Duration,
    heartbeat: Duration,
    closing: CancellationToken,
    sessions: Mutex<HashMap<SessionId, Weak<SessionHub>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts and removes: the map is consistent whatever panicked holding it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventHub {
    /// A hub over `store`; a followed session's log is re-read every `poll` when nothing
    /// announced new events (the fallback for missed cross-process notifications), and a
    /// stream that sent nothing for `heartbeat` sends a comment. Once
    /// `closing` is cancelled (the server is shutting down), every stream ends, so that
    /// graceful shutdown does not wait for SSE clients that would never leave; they resume
    /// elsewhere (or after the restart) with `Last-Event-ID`.
    pub fn new(
        store: Arc<dyn Store>,
        poll: Duration,
        heartbeat: Duration,
        closing: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(HubInner {
                store,
                poll,
                heartbeat,
                closing,
                sessions: Mutex::default(),
            }),
        }
    }

    /// How long a stream may stay silent before it sends a heartbeat comment.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.inner.heartbeat
    }

    /// Resolves when streams must end (the server is shutting down).
    pub(crate) fn closing(&self) -> WaitForCancellationFutureOwned {
        self.inner.closing.clone().cancelled_owned()
    }

    /// Subscribes to the live events of `session`. Once this returns, every event after
    /// those already in the log reaches the subscription (or it learns that it lagged).
    pub(crate) async fn subscribe(&self, session: &SessionId) -> Subscription {
        let hub = {
            let mut sessions = lock(&self.inner.sessions);
            match sessions.get(session).and_then(Weak::upgrade) {
                Some(hub) => hub,
                None => {
                    let hub = SessionHub::start(&self.inner, session);
                    sessions.insert(session.clone(), Arc::downgrade(&hub));
                    hub
                }
            }
        };
        let rx = hub.tx.subscribe();
        // Until the follower knows where the log ends, a frame it sends later could skip
        // events this subscriber's replay has not read yet.
        let mut ready = hub.ready.clone();
        // Fails only if the follower task is gone, which ends the subscription's frames too.
        let _ = ready.wait_for(|ready| *ready).await;
        Subscription { _hub: hub, rx }
    }
}

/// The follower of one session, alive while a subscription holds it.
#[derive(Debug)]
struct SessionHub {
    session: SessionId,
    hub: Weak<HubInner>,
    tx: broadcast::Sender<Arc<Frame>>,
    ready: watch::Receiver<bool>,
    task: AbortHandle,
}

impl SessionHub {
    fn start(inner: &Arc<HubInner>, session: &SessionId) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BUFFER);
        let (ready_tx, ready) = watch::channel(false);
        let task = tokio::spawn(follow(
            inner.store.clone(),
            session.clone(),
            tx.clone(),
            ready_tx,
            inner.poll,
        ))
        .abort_handle();
        Arc::new(Self {
            session: session.clone(),
            hub: Arc::downgrade(inner),
            tx,
            ready,
            task,
        })
    }
}

impl Drop for SessionHub {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(hub) = self.hub.upgrade() {
            let mut sessions = lock(&hub.sessions);
            // A new follower may already have replaced this one.
            if sessions
                .get(&self.session)
                .is_some_and(|weak| weak.strong_count() == 0)
            {
                sessions.remove(&self.session);
            }
        }
    }
}

/// One stream's view of a session's live frames.
#[derive(Debug)]
pub(crate) struct Subscription {
    _hub: Arc<SessionHub>,
    rx: broadcast::Receiver<Arc<Frame>>,
}

impl Subscription {
    /// The next frame; `Lagged` when frames were dropped because this subscriber was too
    /// slow (re-read the log), `Closed` if the follower is gone.
    pub(crate) async fn recv(&mut self) -> Result<Arc<Frame>, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

/// The follower task: broadcasts every event after the log end it found at start, in
/// sequence order without gaps.
async fn follow(
    store: Arc<dyn Store>,
    session: SessionId,
    tx: broadcast::Sender<Arc<Frame>>,
    ready: watch::Sender<bool>,
    poll: Duration,
) {
    // Watch first, then read the log end: nothing committed in between is missed.
    let mut feed = store.event_bus().watch(&session);
    let mut last = loop {
        match store.last_event_seq(&session).await {
            Ok(seq) => break seq,
            Err(e) => {
                tracing::warn!(error = %e, session = %session, "reading the log end failed");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    ready.send_replace(true);
    loop {
        let notice = tokio::select! {
            notice = feed.next() => notice,
            _ = tokio::time::sleep(poll) => None,
        };
        match notice {
            Some(notice) if notice.last_seq <= last => {}
            // Written by this process right after what was sent last: no read needed.
            Some(notice) if notice.events.first().is_some_and(|e| e.seq == last + 1) => {
                broadcast(&tx, &notice.events);
                last = notice.last_seq;
            }
            _ => last = catch_up(store.as_ref(), &session, last, &tx).await,
        }
    }
}

/// Sends consecutive `events` to the session's streams, in frames of at most [`FRAME_EVENTS`].
fn broadcast(tx: &broadcast::Sender<Arc<Frame>>, events: &[Event]) {
    for chunk in events.chunks(FRAME_EVENTS) {
        // No subscriber at this instant is fine: they read the log.
        let _ = tx.send(Arc::new(Frame::of(chunk)));
    }
}

/// Reads and broadcasts the events after `last`; returns the new last sequence number.
async fn catch_up(
    store: &dyn Store,
    session: &SessionId,
    mut last: i64,
    tx: &broadcast::Sender<Arc<Frame>>,
) -> i64 {
    loop {
        match store.list_events(session, last, READ_BATCH).await {
            Ok(events) => {
                let full = events.len() as u32 == READ_BATCH;
                if let Some(event) = events.last() {
                    broadcast(tx, &events);
                    last = event.seq;
                }
                if !full {
                    return last;
                }
            }
            Err(e) => {
                // The next notice or poll tries again.
                tracing::warn!(error = %e, session = %session, "reading new events failed");
                return last;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use everruns_core::{EventType, SessionId};

    use super::*;

    fn event(seq: i64) -> Event {
        Event {
            session_id: SessionId::new(),
            seq,
            event_type: EventType::MessageDelta,
            payload: serde_json::json!({"delta": format!("d{seq}")}),
            run_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn ids(sse: &Bytes) -> Vec<i64> {
        String::from_utf8_lossy(sse)
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| id.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_frame_is_its_events_and_any_tail_of_them() {
        let frame = Frame::of(&[event(7), event(8), event(9)]);
        assert_eq!((frame.first, frame.last), (7, 9));
        assert_eq!(ids(&frame.after(6)), [7, 8, 9]);
        assert_eq!(ids(&frame.after(7)), [8, 9]);
        assert_eq!(ids(&frame.after(8)), [9]);
        let whole = String::from_utf8_lossy(&frame.after(6)).into_owned();
        assert!(whole.starts_with("id: 7\nevent: message.delta\ndata: {"));
        assert!(whole.ends_with("}\n\n"));
        assert_eq!(whole.matches("\n\n").count(), 3);
    }
}
