//! `approval`: one client, one session, one SSE stream, an agent whose `tool_approval` requires
//! the well-behaved plugin's `echo`. For each run (the model calls `echo` once, then answers):
//! wait for `tool.approval_requested`, then the time from sending
//! `POST /v1/runs/{id}/approvals/{approval_id}` (`approve`) to `tool.started` of the approved
//! call arriving on the stream (and to the decision's response), then wait for `run.completed`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use everruns_testkit::Reply;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::setup::{Setup, tool_results_this_turn};
use crate::sse::{Received, SseStream};
use crate::stats::{load_average, ms, percentile, round1};

const WARMUP: usize = 20;
const SAMPLES: usize = 200;
/// The tool that needs approval.
const TOOL: &str = "well-behaved__echo";

pub(crate) async fn run() -> anyhow::Result<()> {
    let setup = Setup::start(10).await?;
    setup.llm.set_fallback(|request| {
        if tool_results_this_turn(request) < 1 {
            Reply::tool_call(TOOL, json!({"n": 1}))
        } else {
            Reply::text("done")
        }
    });
    let session = session(&setup).await?;
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

    let (mut started, mut answered) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + SAMPLES {
        let run = setup.post_message(&session).await?;
        until(&mut rx, "tool.approval_requested").await?;
        // The approval's id (the bench's SSE client keeps no payloads), before the clock.
        let approvals: Value = setup
            .app
            .get(&format!("/v1/runs/{run}/approvals"))
            .send()
            .await?
            .json()
            .await?;
        let approval = approvals["data"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["status"] == "pending"))
            .and_then(|x| x["id"].as_str())
            .context("a pending approval")?
            .to_owned();

        let sent = Instant::now();
        let response = setup
            .app
            .post(&format!("/v1/runs/{run}/approvals/{approval}"))
            .json(&json!({"decision": "approve"}))
            .send()
            .await?;
        let answered_at = Instant::now();
        if response.status() != 200 {
            bail!("approving: {}", response.text().await?);
        }
        let started_at = until(&mut rx, "tool.started").await?;
        until(&mut rx, "run.completed").await?;
        if i >= WARMUP {
            started.push(started_at - sent);
            answered.push(answered_at - sent);
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{} runs", i + 1);
        }
    }
    reader.abort();
    started.sort();
    answered.sort();
    let p = |v: &[Duration], q| ms(percentile(v, q));
    eprintln!(
        "approve -> tool.started p50 {} ms p99 {} ms; -> 200 p50 {} ms p99 {} ms (1-min load {:?})",
        p(&started, 0.5),
        p(&started, 0.99),
        p(&answered, 0.5),
        p(&answered, 0.99),
        load_average()
    );
    setup.finish().await;
    println!(
        "{}",
        json!({
            "decision_to_tool_started_p50_ms": p(&started, 0.5),
            "decision_to_tool_started_p99_ms": p(&started, 0.99),
            "decision_response_p50_ms": p(&answered, 0.5),
            "decision_response_p99_ms": p(&answered, 0.99),
            "samples": SAMPLES,
            "load_avg_1m": load_average().map(round1),
        })
    );
    Ok(())
}

/// A session of a new agent with the well-behaved plugin whose `tool_approval` requires
/// [`TOOL`] (with a timeout no iteration comes near).
async fn session(setup: &Setup) -> anyhow::Result<String> {
    let created = setup
        .app
        .post("/v1/agents")
        .json(&json!({
            "name": "approval",
            "system_prompt": "You benchmark.",
            "capabilities": [{"id": "well-behaved"}],
            "tool_approval": {"require": [TOOL], "timeout_seconds": 3600},
        }))
        .send()
        .await?;
    if created.status() != 201 {
        bail!("creating the agent: {}", created.text().await?);
    }
    let agent: Value = created.json().await?;
    setup.session_of(&agent["id"]).await
}

/// Reads events until one of type `kind`; returns its arrival time. A run that ends
/// otherwise is an error.
async fn until(rx: &mut mpsc::UnboundedReceiver<Received>, kind: &str) -> anyhow::Result<Instant> {
    loop {
        let event = rx.recv().await.context("the stream ended")?;
        match event.event.as_str() {
            e if e == kind => return Ok(event.at),
            "run.failed" | "run.cancelled" | "tool.blocked" => {
                bail!("waiting for {kind}: {}", event.event)
            }
            _ => {}
        }
    }
}
