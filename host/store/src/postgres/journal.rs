//! The journal writer: records the steps of many runs in one statement and one commit.
//!
//! Workers hand each finished step to one task per store. While a batch is being written,
//! the steps finished meanwhile queue up and go together in the next batch, so under load
//! one commit (and one round trip) carries the steps of many runs, and with no load a step
//! goes alone at once. Only one batch is in flight at a time: two batches never lock the same
//! runs in different orders, and the batch's connection is kept, not pinged per step.
//!
//! A step that ends its run (`Store::record_final_step`) also sets the run's final status and
//! releases its lease in that statement; a batch with such steps is a transaction whose second
//! statement settles their sessions and wakes the workers of every process. The plugin
//! key-value writes of the steps whose fence held are applied by the batch statement itself
//! (in request order, the last write of a key winning), so state is committed exactly when
//! its step is, at no extra round trip.
//!
//! A batch is one statement (or one transaction), so it is atomic: fenced per run (a request
//! whose lease is lost writes nothing and gets [`StoreError::LeaseLost`], the others are
//! written), and a database error (a step recorded twice, a deadlock with another process)
//! aborts it whole, after which each of its requests is written again alone, so every request
//! gets its own exact outcome.

use everruns_core::{
    Lease, Message, NewEvent, NewStep, RecordedStep, RunStatus, SessionId, Step, Timestamp, Usage,
};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Connection, Postgres};
use tokio::sync::{mpsc, oneshot};

use super::runs::{RUNS_CHANNEL, is_duplicate_step, numbered};
use crate::codec::{self, parse_id, to_json_text};
use crate::run_codec::{self, active_statuses};
use crate::{Result, StoreError};

/// Steps written by one statement at most (its arrays grow with it; beyond this the commit
/// is no longer what a step waits for).
const MAX_BATCH: usize = 128;

/// One step to record, with its documents already serialised (by the caller's task, not the
/// writer's), and where its outcome goes.
struct Request {
    lease: Lease,
    step: NewStep,
    events: Vec<NewEvent>,
    usage: Usage,
    /// The run's final status when this step ends it.
    finish: Option<RunStatus>,
    input: String,
    output: String,
    metadata: Option<String>,
    payloads: Vec<String>,
    reply: oneshot::Sender<Result<RecordedStep>>,
}

/// The handle workers record steps through; the writer task ends when every handle is gone.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    requests: mpsc::UnboundedSender<Request>,
}

impl Journal {
    /// Starts the writer task over `pool`.
    pub(crate) fn start(pool: PgPool) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(pool, queue));
        Self { requests }
    }

    /// Records a finished step (see `Store::record_step`), batched with whatever other steps
    /// are waiting; with `finish`, the step ends its run with that status
    /// (`Store::record_final_step`).
    pub(crate) async fn record(
        &self,
        lease: &Lease,
        step: NewStep,
        events: Vec<NewEvent>,
        usage: Usage,
        finish: Option<RunStatus>,
    ) -> Result<RecordedStep> {
        run_codec::check_new_step(&step)?;
        if let Some(status) = finish {
            run_codec::check_final_status(status)?;
        }
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            lease: lease.clone(),
            input: to_json_text("step input", &step.input)?,
            output: to_json_text("step output", &step.output)?,
            metadata: step
                .message
                .as_ref()
                .map(|m| to_json_text("message metadata", &m.metadata))
                .transpose()?,
            payloads: events
                .iter()
                .map(|e| to_json_text("event payload", &e.payload))
                .collect::<Result<_>>()?,
            step,
            events,
            usage,
            finish,
            reply,
        };
        let stopped = || StoreError::Unavailable("the journal writer has stopped".to_owned());
        self.requests.send(request).map_err(|_| stopped())?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The writer task: takes whatever is queued (up to [`MAX_BATCH`]) and writes it as one batch.
async fn write_batches(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Request>) {
    let mut conn: Option<PoolConnection<Postgres>> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let requests = std::mem::take(&mut batch);
        write_with_fallback(&pool, &mut conn, requests).await;
    }
}

/// Writes `requests` as one batch; when that fails on a database error and there were several,
/// writes each alone so that one bad request does not fail the others.
async fn write_with_fallback(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    requests: Vec<Request>,
) {
    let now = codec::now();
    match write(pool, conn, &requests, now).await {
        Ok(rows) => {
            for (mut request, row) in requests.into_iter().zip(rows) {
                let outcome = recorded(&mut request, row, now);
                let _ = request.reply.send(outcome);
            }
        }
        Err(err) if requests.len() == 1 || !matches!(err, sqlx::Error::Database(_)) => {
            let message = err.to_string();
            let mut first = Some(error_of(err, &requests[0]));
            for request in requests {
                let err = first
                    .take()
                    .unwrap_or_else(|| StoreError::Unavailable(message.clone()));
                let _ = request.reply.send(Err(err));
            }
        }
        Err(err) => {
            tracing::debug!(error = %err, steps = requests.len(), "a journal batch failed; writing its steps one by one");
            for mut request in requests {
                let now = codec::now();
                let outcome = match write(pool, conn, std::slice::from_ref(&request), now).await {
                    Ok(rows) => match rows.into_iter().next() {
                        Some(row) => recorded(&mut request, row, now),
                        None => Err(StoreError::Unavailable(
                            "a step got no result row".to_owned(),
                        )),
                    },
                    Err(err) => Err(error_of(err, &request)),
                };
                let _ = request.reply.send(outcome);
            }
        }
    }
}

/// The store error for `err` failing `request` (a second record of its step is a conflict).
fn error_of(err: sqlx::Error, request: &Request) -> StoreError {
    if is_duplicate_step(&err) {
        run_codec::duplicate_step(&request.lease.run_id, request.step.step_no)
    } else {
        err.into()
    }
}

/// One statement for the whole batch: per run, the fence (lease token, owner and an active
/// status) also bumps the run's counters (and for a final step sets the final status and
/// releases the lease; `RETURNING` gives the lease it matched, not the cleared one); the
/// steps, messages and events of the fenced requests are inserted, and each session's
/// sequence numbers are taken in request order.
/// Every written request's session is locked (even with no events: [`SETTLE_SESSIONS`] needs
/// that, as a message insert does). The plugin key-value writes of the fenced requests are
/// applied too, the last write of a key in request order winning (as if written one by one;
/// never two changes of one row in the statement), each only while its agent (held
/// `FOR KEY SHARE`, as `Store::kv_set` does) or session (the statement updates, so locks, its
/// row: `seq`) exists. Locks are taken run before session, as everywhere else.
const RECORD_STEPS: &str = "WITH req AS (SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], \
       $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], \
       $11::bigint[], $12::text[], $13::text[], $14::timestamptz[], $15::text[], $16::text[], \
       $17::text[], $18::text[], $19::bigint[], $25::text[]) WITH ORDINALITY AS r (run_id, token, \
       owner, input_tokens, output_tokens, step_no, kind, input, output, status, attempt, \
       capability_id, digest, started_at, message_id, role, content, metadata, events, finish, \
       i)), \
     fence AS (UPDATE runs SET steps_completed = runs.steps_completed + a.n, \
       input_tokens = runs.input_tokens + a.input_tokens, \
       output_tokens = runs.output_tokens + a.output_tokens, \
       recovery_attempts = 0, updated_at = $20, status = COALESCE(a.finish, runs.status), \
       finished_at = CASE WHEN a.finish IS NULL THEN runs.finished_at ELSE $20 END, \
       lease_owner = CASE WHEN a.finish IS NULL THEN runs.lease_owner END, \
       lease_expires_at = CASE WHEN a.finish IS NULL THEN runs.lease_expires_at END \
       FROM (SELECT run_id, token, owner, count(*) AS n, \
         sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens, \
         max(finish) AS finish FROM req GROUP BY run_id, token, owner) a \
       WHERE runs.id = a.run_id AND runs.lease_token = a.token AND runs.lease_owner = a.owner \
         AND runs.status IN ('running', 'cancelling') \
       RETURNING runs.id, runs.session_id, a.token AS lease_token, a.owner AS lease_owner), \
     ok AS (SELECT req.*, fence.session_id FROM req JOIN fence ON fence.id = req.run_id \
       AND fence.lease_token = req.token AND fence.lease_owner = req.owner), \
     step AS (INSERT INTO steps (run_id, step_no, kind, input, output, status, attempt, \
       capability_id, digest, started_at, finished_at) \
       SELECT run_id, step_no, kind, input::json, output::json, status, attempt, \
         capability_id, digest, started_at, $20 FROM ok), \
     msg AS (INSERT INTO messages (id, session_id, role, content, metadata, created_at) \
       SELECT message_id, session_id, role, content, metadata::json, $20 FROM ok \
       WHERE message_id IS NOT NULL), \
     seq AS (UPDATE sessions s SET last_event_seq = s.last_event_seq + a.n \
       FROM (SELECT session_id, sum(events)::bigint AS n FROM ok GROUP BY session_id) a \
       WHERE s.id = a.session_id \
       RETURNING s.id, s.last_event_seq - a.n AS before), \
     base AS (SELECT ok.i, ok.session_id, ok.run_id, seq.before - ok.events \
         + (sum(ok.events) OVER (PARTITION BY ok.session_id ORDER BY ok.i))::bigint AS base \
       FROM ok JOIN seq ON seq.id = ok.session_id), \
     ev AS (INSERT INTO events (session_id, seq, event_type, payload, run_id, created_at) \
       SELECT base.session_id, base.base + e.k, e.event_type, e.payload::json, base.run_id, $20 \
       FROM UNNEST($21::bigint[], $22::bigint[], $23::text[], $24::text[]) \
         AS e (i, k, event_type, payload) \
       JOIN base ON base.i = e.i), \
     kvw AS (SELECT DISTINCT ON (w.plugin, w.owner, w.key) w.* \
       FROM UNNEST($26::bigint[], $27::text[], $28::text[], $29::text[], $30::bytea[], \
         $31::text[], $32::text[]) WITH ORDINALITY \
         AS w (i, plugin, owner, key, value, agent, session, n) \
       JOIN ok ON ok.i = w.i ORDER BY w.plugin, w.owner, w.key, w.n DESC), \
     kvput AS (INSERT INTO plugin_kv (plugin, owner, key, value, updated_at) \
       SELECT plugin, owner, key, value, $20 FROM kvw WHERE value IS NOT NULL \
         AND (agent IS NULL OR EXISTS (SELECT 1 FROM agents WHERE id = kvw.agent FOR KEY SHARE)) \
         AND (session IS NULL OR EXISTS (SELECT 1 FROM seq WHERE seq.id = kvw.session)) \
       ON CONFLICT (plugin, owner, key) \
       DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at), \
     kvdel AS (DELETE FROM plugin_kv p USING kvw WHERE kvw.value IS NULL \
       AND p.plugin = kvw.plugin AND p.owner = kvw.owner AND p.key = kvw.key) \
     SELECT req.i, fence.session_id, base.base FROM req \
       LEFT JOIN fence ON fence.id = req.run_id AND fence.lease_token = req.token \
         AND fence.lease_owner = req.owner \
       LEFT JOIN base ON base.i = req.i \
     ORDER BY req.i";

/// After a batch with final steps, in its transaction: the sessions left without an active run
/// become idle (a statement of its own, so that it sees the runs a concurrent start committed
/// while the batch waited for the session's row), and workers everywhere learn that runs
/// ended (the next of a session's queue may start).
const SETTLE_SESSIONS: &str = concat!(
    "WITH idle AS (UPDATE sessions s SET status = 'idle' \
       WHERE s.id = ANY($1::text[]) AND s.status <> 'idle' AND NOT EXISTS \
         (SELECT 1 FROM runs WHERE runs.session_id = s.id AND runs.status IN ",
    active_statuses!(),
    ")) SELECT pg_notify($2, '')"
);

/// What the batch statement says about one request: its session when the fence held (else
/// the lease was lost), and the sequence number before its first event.
type Row = (Option<String>, Option<i64>);

/// Writes one batch; returns one row per request, in request order.
async fn write(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    requests: &[Request],
    now: Timestamp,
) -> std::result::Result<Vec<Row>, sqlx::Error> {
    let mut cols = Columns::default();
    for (i, request) in requests.iter().enumerate() {
        cols.push(i, request);
    }
    let connection = match conn {
        Some(connection) => connection,
        None => conn.insert(pool.acquire().await?),
    };
    let finishing = requests.iter().any(|r| r.finish.is_some());
    let result = if finishing {
        write_finishing(connection, &cols, requests, now).await
    } else {
        record_steps(connection, &cols, now).await
    };
    match result {
        Ok(rows) if rows.len() == requests.len() => Ok(rows),
        Ok(rows) => Err(sqlx::Error::Protocol(format!(
            "the journal batch of {} steps returned {} rows",
            requests.len(),
            rows.len()
        ))),
        Err(err) => {
            if !matches!(err, sqlx::Error::Database(_)) {
                // The connection may be broken: give it back for the pool to check, and take
                // another next time.
                *conn = None;
            }
            Err(err)
        }
    }
}

/// A batch with final steps: the batch statement and then [`SETTLE_SESSIONS`], as one
/// transaction (rolled back when dropped unfinished).
async fn write_finishing(
    connection: &mut PoolConnection<Postgres>,
    cols: &Columns<'_>,
    requests: &[Request],
    now: Timestamp,
) -> std::result::Result<Vec<Row>, sqlx::Error> {
    let mut tx = connection.begin().await?;
    let rows = record_steps(&mut tx, cols, now).await?;
    let sessions: Vec<&str> = rows
        .iter()
        .zip(requests)
        .filter(|(_, request)| request.finish.is_some())
        .filter_map(|((session, _), _)| session.as_deref())
        .collect();
    sqlx::query(SETTLE_SESSIONS)
        .bind(&sessions)
        .bind(RUNS_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Runs the batch statement; one row per request, in request order.
async fn record_steps(
    connection: &mut sqlx::PgConnection,
    cols: &Columns<'_>,
    now: Timestamp,
) -> std::result::Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query_as::<_, (i64, Option<String>, Option<i64>)>(RECORD_STEPS)
        .bind(&cols.run_id)
        .bind(&cols.token)
        .bind(&cols.owner)
        .bind(&cols.input_tokens)
        .bind(&cols.output_tokens)
        .bind(&cols.step_no)
        .bind(&cols.kind)
        .bind(&cols.input)
        .bind(&cols.output)
        .bind(&cols.status)
        .bind(&cols.attempt)
        .bind(&cols.capability_id)
        .bind(&cols.digest)
        .bind(&cols.started_at)
        .bind(&cols.message_id)
        .bind(&cols.role)
        .bind(&cols.content)
        .bind(&cols.metadata)
        .bind(&cols.events)
        .bind(now)
        .bind(&cols.event_request)
        .bind(&cols.event_no)
        .bind(&cols.event_type)
        .bind(&cols.event_payload)
        .bind(&cols.finish)
        .bind(&cols.kv_request)
        .bind(&cols.kv_plugin)
        .bind(&cols.kv_owner)
        .bind(&cols.kv_key)
        .bind(&cols.kv_value)
        .bind(&cols.kv_agent)
        .bind(&cols.kv_session)
        .fetch_all(connection)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(_, session, base)| (session, base))
        .collect())
}

/// The outcome of `request` from its result row (its documents are moved into it).
fn recorded(request: &mut Request, (session, base): Row, now: Timestamp) -> Result<RecordedStep> {
    let Some(session) = session else {
        return Err(run_codec::lease_lost(&request.lease));
    };
    let session = parse_id("session id", &session, SessionId::parse)?;
    let new = &mut request.step;
    let lease = &request.lease;
    let step = Step {
        run_id: lease.run_id.clone(),
        step_no: new.step_no,
        kind: new.kind,
        input: std::mem::take(&mut new.input),
        output: std::mem::take(&mut new.output),
        status: new.status,
        attempt: new.attempt,
        capability_id: new.capability_id.clone(),
        digest: new.digest.clone(),
        started_at: codec::truncate(new.started_at),
        finished_at: now,
    };
    let message = new.message.take().map(|m| Message {
        id: m.id,
        session_id: session.clone(),
        role: m.role,
        content: m.content,
        metadata: m.metadata,
        created_at: now,
    });
    let events = match base {
        Some(base) if !request.events.is_empty() => {
            let last = base + i64::try_from(request.events.len()).unwrap_or(i64::MAX);
            numbered(
                &session,
                last,
                &lease.run_id,
                std::mem::take(&mut request.events),
                now,
            )
        }
        _ => Vec::new(),
    };
    Ok(RecordedStep {
        step,
        message,
        events,
    })
}

/// The batch as one array per column (the statement unnests them side by side).
#[derive(Default)]
struct Columns<'a> {
    run_id: Vec<&'a str>,
    token: Vec<i64>,
    owner: Vec<&'a str>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    step_no: Vec<i64>,
    kind: Vec<&'static str>,
    input: Vec<&'a str>,
    output: Vec<&'a str>,
    status: Vec<&'static str>,
    attempt: Vec<i64>,
    capability_id: Vec<Option<&'a str>>,
    digest: Vec<Option<&'a str>>,
    started_at: Vec<Timestamp>,
    message_id: Vec<Option<&'a str>>,
    role: Vec<Option<&'static str>>,
    content: Vec<Option<&'a str>>,
    metadata: Vec<Option<&'a str>>,
    events: Vec<i64>,
    finish: Vec<Option<&'static str>>,
    event_request: Vec<i64>,
    event_no: Vec<i64>,
    event_type: Vec<&'static str>,
    event_payload: Vec<&'a str>,
    kv_request: Vec<i64>,
    kv_plugin: Vec<&'a str>,
    kv_owner: Vec<&'a str>,
    kv_key: Vec<&'a str>,
    kv_value: Vec<Option<&'a [u8]>>,
    kv_agent: Vec<Option<&'a str>>,
    kv_session: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    /// Adds request number `i` (0-based; SQL's ordinality is 1-based).
    fn push(&mut self, i: usize, request: &'a Request) {
        let ordinal = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        let (lease, step) = (&request.lease, &request.step);
        for (k, (event, payload)) in request.events.iter().zip(&request.payloads).enumerate() {
            self.event_request.push(ordinal);
            self.event_no.push(i64::try_from(k).unwrap_or(i64::MAX) + 1);
            self.event_type.push(event.event_type.as_str());
            self.event_payload.push(payload);
        }
        self.run_id.push(lease.run_id.as_str());
        self.token.push(lease.token);
        self.owner.push(&lease.owner);
        self.input_tokens
            .push(run_codec::to_i64(request.usage.input_tokens));
        self.output_tokens
            .push(run_codec::to_i64(request.usage.output_tokens));
        self.step_no.push(i64::from(step.step_no));
        self.kind.push(step.kind.as_str());
        self.input.push(&request.input);
        self.output.push(&request.output);
        self.status.push(step.status.as_str());
        self.attempt.push(i64::from(step.attempt));
        self.capability_id.push(step.capability_id.as_deref());
        self.digest.push(step.digest.as_deref());
        self.started_at.push(codec::truncate(step.started_at));
        let message = step.message.as_ref();
        self.message_id.push(message.map(|m| m.id.as_str()));
        self.role.push(message.map(|m| m.role.as_str()));
        self.content.push(message.map(|m| m.content.as_str()));
        self.metadata.push(request.metadata.as_deref());
        self.events
            .push(i64::try_from(request.events.len()).unwrap_or(i64::MAX));
        self.finish.push(request.finish.map(RunStatus::as_str));
        for write in &step.kv_writes {
            let owner = write.scope.owner_row();
            self.kv_request.push(ordinal);
            self.kv_plugin.push(&write.scope.plugin);
            self.kv_owner.push(&write.scope.owner);
            self.kv_key.push(&write.key);
            self.kv_value.push(write.value.as_deref());
            self.kv_agent.push(owner.agent());
            self.kv_session.push(owner.session());
        }
    }
}
