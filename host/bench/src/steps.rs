//! `steps`: throughput of the durable executor on PostgreSQL. 64 runs at once, each in its own
//! session; the fake LLM answers instantly with a call of the well-behaved plugin's no-op
//! `ping` tool, 10 times, then with text: 21 journaled steps per run. Compared with the bare
//! commit rate of the same database in the same process: 64 tasks doing
//! `BEGIN; INSERT <step-sized row>; COMMIT` on a pool of the server's size. Each round is
//! run three times, alternately: plain, with the `guardrails` built-in on every run (its
//! `before-tool` and `after-tool` hooks on every call), and plain with the server's telemetry
//! on (Prometheus metrics recorded, every span exported over OTLP/HTTP to a local sink; off
//! in the other two, see `observe`), so all figures come from one run of the benchmark.

use std::time::{Duration, Instant};

use anyhow::bail;
use everruns_testkit::Reply;
use futures::future::try_join_all;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::setup::{Setup, tool_results_this_turn};
use crate::stats::{load_average, round1};

const RUNS: usize = 64;
const TOOL_CALLS: usize = 10;
const ROUNDS: usize = 4;
/// Database connections of the server (and of the baseline's pool).
const POOL: u32 = 32;
/// Length of the baseline measurement.
const BASELINE: Duration = Duration::from_secs(3);

pub(crate) async fn run() -> anyhow::Result<()> {
    // On while the server starts: handles registered once (per plugin) are real throughout.
    let observed = crate::observe::install().await?;
    let setup = Setup::start_with(POOL, true).await?;
    setup.llm.set_fallback(|request| {
        if tool_results_this_turn(request) < TOOL_CALLS {
            Reply::tool_call("well-behaved__ping", json!({}))
        } else {
            Reply::text("done")
        }
    });
    // The loop guard must allow the runs' ten identical pings.
    let guarded = json!([{"id": "well-behaved"},
        {"id": "guardrails", "config": {"max_identical_calls": 100, "redact": ["secret-[0-9]+"],
            "block_tools": ["*__delete_*"]}}]);
    let (mut plain, mut guarded_sessions, mut observed_sessions) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        plain.push(setup.session("steps").await?);
        guarded_sessions.push(setup.session_with("steps-guarded", guarded.clone()).await?);
        observed_sessions.push(setup.session("steps-observed").await?);
    }
    // Observes progress (and runs the baseline) on a pool of the server's size.
    let pool = PgPoolOptions::new()
        .max_connections(POOL)
        .connect(setup.db.url())
        .await?;

    // Per variant (plain, guarded, observed): steps and time of the measured rounds.
    let mut measured = [(0i64, Duration::ZERO); 3];
    let mut finished = 0usize;
    for round in 0..=ROUNDS {
        for (variant, sessions) in [&plain, &guarded_sessions, &observed_sessions]
            .into_iter()
            .enumerate()
        {
            crate::observe::set(variant == 2);
            let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM steps")
                .fetch_one(&pool)
                .await?;
            let t = Instant::now();
            try_join_all(sessions.iter().map(|s| setup.post_message(s))).await?;
            finished += RUNS;
            loop {
                let done: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM runs \
                     WHERE status IN ('completed', 'failed', 'cancelled')",
                )
                .fetch_one(&pool)
                .await?;
                if done >= finished as i64 {
                    break;
                }
                // Not faster: this count competes with the server for the database.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let took = t.elapsed();
            let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM steps")
                .fetch_one(&pool)
                .await?;
            let round_steps = after - before;
            eprintln!(
                "round {round}{} {}: {round_steps} steps in {:.0} ms = {:.0} steps/s",
                if round == 0 { " (warm-up)" } else { "" },
                ["plain", "guardrails", "observed"][variant],
                took.as_secs_f64() * 1e3,
                round_steps as f64 / took.as_secs_f64()
            );
            if round > 0 {
                measured[variant].0 += round_steps;
                measured[variant].1 += took;
            }
        }
    }
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status <> 'completed'")
        .fetch_one(&pool)
        .await?;
    if failed > 0 {
        let error: Option<String> =
            sqlx::query_scalar("SELECT error FROM runs WHERE status <> 'completed' LIMIT 1")
                .fetch_one(&pool)
                .await?;
        bail!("{failed} runs did not complete: {error:?}");
    }
    let per_s = |(steps, elapsed): (i64, Duration)| steps as f64 / elapsed.as_secs_f64();
    let (steps_per_s, guarded_per_s, observed_per_s) =
        (per_s(measured[0]), per_s(measured[1]), per_s(measured[2]));
    let steps = measured[0].0;
    eprintln!(
        "with guardrails: {guarded_per_s:.0} steps/s, {:.1}% of plain",
        100.0 * guarded_per_s / steps_per_s
    );
    crate::observe::set(true);
    let (exports, exported) = (observed.exports.clone(), observed.bytes.clone());
    observed.finish().await?;
    eprintln!(
        "with metrics and OTLP export: {observed_per_s:.0} steps/s, {:.1}% of plain ({} \
         export requests, {} KiB of spans)",
        100.0 * observed_per_s / steps_per_s,
        exports.load(std::sync::atomic::Ordering::Relaxed),
        exported.load(std::sync::atomic::Ordering::Relaxed) / 1024
    );

    eprintln!("baseline: bare INSERT+COMMIT from {RUNS} tasks for {BASELINE:?} ...");
    let commits_per_s = commit_baseline(&pool).await?;
    let ratio = commits_per_s / steps_per_s;
    eprintln!(
        "steps {steps_per_s:.0}/s, commits {commits_per_s:.0}/s, ratio {ratio:.2} (1-min load {:?})",
        load_average()
    );
    setup.finish().await;
    println!(
        "{}",
        json!({
            "steps_per_s": steps_per_s.round(),
            "guardrails_steps_per_s": guarded_per_s.round(),
            "guardrails_ratio": (guarded_per_s / steps_per_s * 1000.0).round() / 1000.0,
            "observed_steps_per_s": observed_per_s.round(),
            "observed_ratio": (observed_per_s / steps_per_s * 1000.0).round() / 1000.0,
            "commit_baseline_per_s": commits_per_s.round(),
            "ratio_step_to_commit": (ratio * 100.0).round() / 100.0,
            "runs": RUNS,
            "steps_per_run": 2 * TOOL_CALLS + 1,
            "steps_measured": steps,
            "pool": POOL,
            "load_avg_1m": load_average().map(round1),
        })
    );
    Ok(())
}

/// Commits per second of `BEGIN; INSERT; COMMIT` with a row the size of a tool step (its
/// input, output and events as JSON), from `RUNS` tasks at once.
async fn commit_baseline(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    sqlx::query(
        "CREATE TABLE bench_commits (id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, \
         step_no BIGINT NOT NULL, payload JSON NOT NULL, created_at TIMESTAMPTZ NOT NULL)",
    )
    .execute(pool)
    .await?;
    let payload = json!({
        "input": {"tool_call_id": "call_fake_123", "name": "well-behaved__ping", "arguments": {}},
        "output": {"text": "pong"},
        "events": [
            {"type": "tool.completed", "run_id": "run_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f",
             "step_no": 2, "tool_call_id": "call_fake_123", "name": "well-behaved__ping",
             "capability": "well-behaved", "output": "pong"},
            {"type": "step.completed", "run_id": "run_0192f3c4a1b27c3d8e9f0a1b2c3d4e5f",
             "step_no": 2, "kind": "tool"},
        ],
    })
    .to_string();
    let start = Instant::now();
    let tasks = (0..RUNS).map(|task| {
        let pool = pool.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            let mut commits = 0u64;
            while start.elapsed() < BASELINE {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO bench_commits (run_id, step_no, payload, created_at) \
                     VALUES ($1, $2, $3::json, now())",
                )
                .bind(format!("run_{task}"))
                .bind(commits as i64)
                .bind(&payload)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                commits += 1;
            }
            anyhow::Ok(commits)
        })
    });
    let mut total = 0;
    for task in try_join_all(tasks).await? {
        total += task?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
