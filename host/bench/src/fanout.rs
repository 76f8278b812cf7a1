//! `fanout`: 1,000 SSE subscribers on one session. Runs answered with one word produce events
//! (message, run, delta, step, usage); for every event and subscriber, the latency from the
//! event's `created_at` (taken just before its write commits) to the subscriber receiving it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use everruns_testkit::Reply;
use futures::future::try_join_all;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::setup::Setup;
use crate::sse::SseStream;
use crate::stats::{load_average, ms, percentile, round1};

const SUBSCRIBERS: usize = 1_000;
const WARMUP_RUNS: usize = 3;
const RUNS: usize = 20;
/// Subscribers connecting at once.
const CONNECT_BATCH: usize = 100;

pub(crate) async fn run() -> anyhow::Result<()> {
    let setup = Setup::start(10).await?;
    setup.llm.set_fallback(|_| Reply::text("ok"));
    let session = setup.session("fanout").await?;

    eprintln!("connecting {SUBSCRIBERS} subscribers ...");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    for batch in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
        let streams = try_join_all(
            batch
                .iter()
                .map(|_| SseStream::open(&setup.app, &session, None)),
        )
        .await?;
        for mut stream in streams {
            let done = done_tx.clone();
            let mut stop = stop_rx.clone();
            clients.push(tokio::spawn(async move {
                let mut seen: Vec<(i64, DateTime<Utc>)> = Vec::new();
                // Registered once: a `changed()` per event would take the watch's lock twice
                // per event and subscriber, measuring the bench's own contention.
                let stopped = stop.changed();
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        biased;
                        event = stream.next() => {
                            let Some(event) = event else { break };
                            seen.push((event.seq, event.wall));
                            if event.event == "run.completed" {
                                let _ = done.send(());
                            }
                        }
                        _ = &mut stopped => break,
                    }
                }
                seen
            }));
        }
    }

    let mut measured_after = 0;
    for run in 0..WARMUP_RUNS + RUNS {
        if run == WARMUP_RUNS {
            measured_after = last_seq(&setup, &session).await?;
        }
        setup.post_message(&session).await?;
        for _ in 0..SUBSCRIBERS {
            done_rx.recv().await.context("a subscriber ended")?;
        }
        if (run + 1) % 5 == 0 {
            eprintln!("{} runs delivered to every subscriber", run + 1);
        }
    }
    stop_tx.send_replace(true);
    let mut received = Vec::new();
    for client in clients {
        received.push(client.await?);
    }

    let created = created_at(&setup, &session).await?;
    let mut latencies = Vec::new();
    for seen in &received {
        for (seq, at) in seen {
            if *seq <= measured_after {
                continue;
            }
            let made = created.get(seq).context("event in the log")?;
            latencies.push((*at - *made).to_std().unwrap_or(Duration::ZERO));
        }
    }
    latencies.sort();
    let events = created.keys().filter(|s| **s > measured_after).count();
    anyhow::ensure!(
        latencies.len() == events * SUBSCRIBERS,
        "every subscriber receives every event: {} of {}",
        latencies.len(),
        events * SUBSCRIBERS
    );
    let (p50, p99) = (
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    );
    eprintln!(
        "{events} events x {SUBSCRIBERS} subscribers: commit -> received p50 {p50} ms, p99 {p99} ms, max {} ms (1-min load {:?})",
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        load_average()
    );
    setup.finish().await;
    println!(
        "{}",
        json!({
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": ms(*latencies.last().unwrap_or(&Duration::ZERO)),
            "subscribers": SUBSCRIBERS,
            "events": events,
            "load_avg_1m": load_average().map(round1),
        })
    );
    Ok(())
}

async fn last_seq(setup: &Setup, session: &str) -> anyhow::Result<i64> {
    Ok(created_at(setup, session)
        .await?
        .keys()
        .max()
        .copied()
        .unwrap_or(0))
}

/// `created_at` of every event of the session, by sequence number.
async fn created_at(setup: &Setup, session: &str) -> anyhow::Result<HashMap<i64, DateTime<Utc>>> {
    let mut out = HashMap::new();
    let mut since = 0;
    loop {
        let page: Value = setup
            .app
            .get(&format!(
                "/v1/sessions/{session}/events?since={since}&limit=500"
            ))
            .send()
            .await?
            .json()
            .await?;
        for event in page["data"].as_array().context("events")? {
            let seq = event["seq"].as_i64().context("seq")?;
            let at: DateTime<Utc> = event["created_at"]
                .as_str()
                .context("created_at")?
                .parse()?;
            out.insert(seq, at);
        }
        match page["next_since"].as_i64() {
            Some(next) => since = next,
            None => return Ok(out),
        }
    }
}
