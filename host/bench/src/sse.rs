//! A lean SSE client for the benchmarks: splits frames, keeps only `id` and `event`, and
//! stamps each with the time its bytes arrived.

use std::collections::VecDeque;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

/// One event as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub seq: i64,
    pub event: String,
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

/// An open `text/event-stream` response.
pub(crate) struct SseStream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    ready: VecDeque<Received>,
}

impl SseStream {
    /// Opens the session's stream on `app` (from the start of the log, or after `since`).
    pub(crate) async fn open(
        app: &everruns_testkit::TestApp,
        session: &str,
        since: Option<i64>,
    ) -> anyhow::Result<Self> {
        let mut request = app
            .get(&format!("/v1/sessions/{session}/events"))
            .header("accept", "text/event-stream");
        if let Some(since) = since {
            request = request.header("last-event-id", since.to_string());
        }
        let response = request.send().await?;
        anyhow::ensure!(response.status() == 200, "SSE: {}", response.status());
        Ok(Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            ready: VecDeque::new(),
        })
    }

    /// The next event; `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> Option<Received> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let chunk = self.body.next().await?.ok()?;
            let (at, wall) = (Instant::now(), Utc::now());
            self.buffer.extend_from_slice(&chunk);
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let (mut seq, mut event) = (None, None);
                for line in frame.split(|b| *b == b'\n') {
                    let line = std::str::from_utf8(line).unwrap_or_default();
                    if let Some(v) = line.strip_prefix("id:") {
                        seq = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    }
                }
                if let (Some(seq), Some(event)) = (seq, event) {
                    self.ready.push_back(Received {
                        seq,
                        event,
                        at,
                        wall,
                    });
                }
            }
        }
    }
}
