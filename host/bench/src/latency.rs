//! `latency`: one client, one session, one SSE stream. For each run: the time from sending
//! `POST /v1/sessions/{id}/messages` to `run.started` arriving on the stream, and to
//! `run.completed` for a run whose model makes two (parallel) calls of the no-op `ping` tool,
//! then answers.

use std::time::{Duration, Instant};

use anyhow::Context;
use everruns_testkit::Reply;
use serde_json::json;
use tokio::sync::mpsc;

use crate::setup::{Setup, tool_results_this_turn};
use crate::sse::{Received, SseStream};
use crate::stats::{load_average, ms, percentile, round1};

const WARMUP: usize = 30;
const SAMPLES: usize = 300;

pub(crate) async fn run() -> anyhow::Result<()> {
    let setup = Setup::start(10).await?;
    setup.llm.set_fallback(|request| {
        if tool_results_this_turn(request) < 2 {
            Reply::tool_calls([
                ("well-behaved__ping", json!({})),
                ("well-behaved__ping", json!({})),
            ])
        } else {
            Reply::text("done")
        }
    });
    let session = setup.session("latency").await?;
    let mut stream = SseStream::open(&setup.app, &session, None).await?;
    // Arrival times are taken by the reader as bytes come in, whatever the main task does.
    let (tx, mut rx) = mpsc::unbounded_channel::<Received>();
    let reader = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });

    let (mut started, mut completed) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + SAMPLES {
        let sent = Instant::now();
        setup.post_message(&session).await?;
        let mut started_at = None;
        let completed_at = loop {
            let event = rx.recv().await.context("the stream ended")?;
            match event.event.as_str() {
                "run.started" => started_at = Some(event.at),
                "run.completed" => break event.at,
                "run.failed" | "run.cancelled" => anyhow::bail!("run ended: {}", event.event),
                _ => {}
            }
        };
        let started_at = started_at.context("run.started before run.completed")?;
        if i >= WARMUP {
            started.push(started_at - sent);
            completed.push(completed_at - sent);
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{} runs", i + 1);
        }
    }
    reader.abort();
    started.sort();
    completed.sort();
    let p = |v: &[Duration], q| ms(percentile(v, q));
    eprintln!(
        "POST -> run.started p50 {} ms p99 {} ms; -> run.completed p50 {} ms p99 {} ms (1-min load {:?})",
        p(&started, 0.5),
        p(&started, 0.99),
        p(&completed, 0.5),
        p(&completed, 0.99),
        load_average()
    );
    setup.finish().await;
    println!(
        "{}",
        json!({
            "started_p50_ms": p(&started, 0.5),
            "started_p99_ms": p(&started, 0.99),
            "completed_p50_ms": p(&completed, 0.5),
            "completed_p99_ms": p(&completed, 0.99),
            "samples": SAMPLES,
            "load_avg_1m": load_average().map(round1),
        })
    );
    Ok(())
}
