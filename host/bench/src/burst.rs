//! `burst`: 1,000 one-message sessions, their messages posted over HTTP all at once, the model
//! answering at once (text, no tools); on PostgreSQL and then on SQLite. Reports turns per
//! second (runs completed over the time from the first POST sent to the last run finished)
//! and p50/p99 of each run's POST -> completion, taken from the run's own timestamps
//! (`created_at` when the POST wrote it, `finished_at` in the commit that completed it).

use std::time::{Duration, Instant};

use anyhow::bail;
use everruns_testkit::Reply;
use futures::future::try_join_all;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::setup::Setup;
use crate::stats::{load_average, ms, percentile, round1};

/// Sessions (and runs) per burst.
const SESSIONS: usize = 1_000;
/// Database connections of the server.
const POOL: u32 = 32;

/// Figures of one store.
struct Figures {
    turns_per_s: f64,
    p50: Duration,
    p99: Duration,
}

pub(crate) async fn run() -> anyhow::Result<()> {
    let postgres = burst(false).await?;
    let sqlite = burst(true).await?;
    println!(
        "{}",
        json!({
            "sessions": SESSIONS,
            "postgres_turns_per_s": round1(postgres.turns_per_s),
            "postgres_p50_ms": ms(postgres.p50),
            "postgres_p99_ms": ms(postgres.p99),
            "sqlite_turns_per_s": round1(sqlite.turns_per_s),
            "sqlite_p50_ms": ms(sqlite.p50),
            "sqlite_p99_ms": ms(sqlite.p99),
            "load_avg_1m": load_average(),
        })
    );
    Ok(())
}

async fn burst(sqlite: bool) -> anyhow::Result<Figures> {
    let setup = Setup::start_on(sqlite, POOL, false).await?;
    setup.llm.set_recording(false);
    setup.llm.set_fallback(|_| Reply::text("ok"));
    let backend = setup.db.backend();
    eprintln!("{backend}: creating {SESSIONS} sessions ...");
    let first = setup.session("burst").await?;
    let agent: Value = setup
        .app
        .get(&format!("/v1/sessions/{first}"))
        .send()
        .await?
        .json()
        .await?;
    let agent_id = agent["agent_id"].clone();
    let mut sessions = vec![first];
    while sessions.len() < SESSIONS {
        sessions.push(setup.session_of(&agent_id).await?);
    }

    let mut db = Db::open(&setup).await?;
    eprintln!("{backend}: posting {SESSIONS} messages at once ...");
    let sent = Instant::now();
    let runs = try_join_all(sessions.iter().map(|s| setup.post_message(s))).await?;
    let posted = sent.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let done = db.finished().await?;
        if done >= runs.len() as i64 {
            break sent.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "{backend}: only {done} of {} runs finished in 120 s",
                runs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut latencies = run_latencies(&setup).await?;
    latencies.sort();
    let figures = Figures {
        turns_per_s: runs.len() as f64 / finished.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    };
    eprintln!(
        "{backend}: {} runs posted in {:.0} ms, all finished after {:.0} ms = {:.0} turns/s; \
         POST -> completed p50 {} ms p99 {} ms",
        runs.len(),
        posted.as_secs_f64() * 1e3,
        finished.as_secs_f64() * 1e3,
        figures.turns_per_s,
        ms(figures.p50),
        ms(figures.p99),
    );
    setup.finish().await;
    Ok(figures)
}

/// One connection to the server's database, kept for the polling (a new connection per poll
/// would cost the database more than the query).
enum Db {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Db {
    async fn open(setup: &Setup) -> anyhow::Result<Self> {
        Ok(if setup.db.sqlite_dir().is_some() {
            Self::Sqlite(sqlx::SqliteConnection::connect(setup.db.url()).await?)
        } else {
            Self::Postgres(sqlx::PgConnection::connect(setup.db.url()).await?)
        })
    }

    /// Runs that reached a terminal status; a failed one stops the benchmark.
    async fn finished(&mut self) -> anyhow::Result<i64> {
        let sql = "SELECT COUNT(*) AS n, \
                   COUNT(*) FILTER (WHERE status <> 'completed') AS bad \
                   FROM runs WHERE status IN ('completed', 'failed', 'cancelled')";
        let (n, bad): (i64, i64) = match self {
            Self::Sqlite(conn) => {
                let row = sqlx::query(sql).fetch_one(conn).await?;
                (row.get("n"), row.get("bad"))
            }
            Self::Postgres(conn) => {
                let row = sqlx::query(sql).fetch_one(conn).await?;
                (row.get("n"), row.get("bad"))
            }
        };
        if bad > 0 {
            bail!("{bad} runs did not complete");
        }
        Ok(n)
    }
}

/// Every run's `finished_at - created_at`.
async fn run_latencies(setup: &Setup) -> anyhow::Result<Vec<Duration>> {
    let parse = |text: &str| -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        Ok(chrono::DateTime::parse_from_rfc3339(text)?.with_timezone(&chrono::Utc))
    };
    let pairs: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        if setup.db.sqlite_dir().is_some() {
            let mut conn = sqlx::SqliteConnection::connect(setup.db.url()).await?;
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT created_at, finished_at FROM runs")
                    .fetch_all(&mut conn)
                    .await?;
            rows.iter()
                .map(|(a, b)| Ok((parse(a)?, parse(b)?)))
                .collect::<anyhow::Result<_>>()?
        } else {
            let mut conn = sqlx::PgConnection::connect(setup.db.url()).await?;
            sqlx::query_as("SELECT created_at, finished_at FROM runs")
                .fetch_all(&mut conn)
                .await?
        };
    Ok(pairs
        .into_iter()
        .map(|(created, finished)| (finished - created).to_std().unwrap_or_default())
        .collect())
}
