//! A test client for the session event stream: splits `text/event-stream` frames (buffering
//! bytes, so a character split across chunks is fine), skips comments such as heartbeats, and
//! bounds every wait so a test that expects an event that never comes fails instead of hanging
//! on heartbeats. Also [`json_of`], the status check every API test starts with.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

/// How long [`SseReader::next`] waits for an event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// One event as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:`, the event's sequence number.
    pub id: i64,
    /// `event:`, the event type.
    pub event: String,
    /// `data:`, the event as JSON.
    pub data: Value,
}

impl SseEvent {
    /// `(id, event, data)`.
    pub fn into_parts(self) -> (i64, String, Value) {
        (self.id, self.event, self.data)
    }
}

/// Reads events from an SSE response, only when asked.
pub struct SseReader {
    stream: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl SseReader {
    /// Reads `response` (which must be a `text/event-stream`).
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            stream: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        }
    }

    /// The next event; panics when none comes within 30 s, the stream ends, or an event is
    /// malformed.
    pub async fn next(&mut self) -> SseEvent {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&frame) {
                    return event;
                }
            }
            let chunk = tokio::time::timeout(EVENT_TIMEOUT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no SSE event within {EVENT_TIMEOUT:?}"))
                .expect("the SSE stream ended")
                .expect("reading the SSE stream");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The events up to and including the first for which `done` holds.
    pub async fn until(&mut self, mut done: impl FnMut(&SseEvent) -> bool) -> Vec<SseEvent> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let last = done(&event);
            events.push(event);
            if last {
                return events;
            }
        }
    }

    /// Waits up to `within` for the server to end the stream; panics if it does not, or if
    /// an event comes first (comments such as heartbeats may).
    pub async fn expect_end(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("the SSE stream did not end within {within:?}"),
                Ok(None | Some(Err(_))) => break,
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
            }
        }
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse(&frame) {
                panic!("an SSE event after the end: {event:?}");
            }
        }
    }
}

/// One frame as an event; `None` for a frame without an id (a comment such as a heartbeat).
fn parse(frame: &[u8]) -> Option<SseEvent> {
    let frame = std::str::from_utf8(frame).expect("SSE frames are UTF-8");
    let (mut id, mut event, mut data) = (None, None, None);
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(
                v.trim()
                    .parse::<i64>()
                    .expect("an SSE id is a sequence number"),
            );
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(serde_json::from_str::<Value>(v.trim()).expect("SSE data is JSON"));
        }
    }
    Some(SseEvent {
        id: id?,
        event: event.expect("an SSE event has a type"),
        data: data.expect("an SSE event has data"),
    })
}

/// Asserts `response` has `status` (showing the body when not) and returns its JSON body
/// (`Null` for an empty one, as of a 204).
pub async fn json_of(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("reading the response body");
    assert_eq!(got, status, "{text}");
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
