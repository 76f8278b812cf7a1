//! Runs, steps and events on PostgreSQL.
//!
//! Locking: a fenced write first locks its run row (`FOR UPDATE`, or the `UPDATE` that checks
//! the token), then the session row (to number its events). Starting a run locks only the
//! session row. So locks are always taken run before session, and claims, which lock a run
//! row with `SKIP LOCKED`, never wait for a run. Lease expiry is judged by the database's `now()`, so
//! every process agrees on it whatever its own clock says.

use std::time::Duration;

use everruns_core::{
    Event, EventType, Lease, Message, MessageId, MessageRole, NewEvent, Page, PageRequest, Run,
    RunConfig, RunId, RunStatus, SessionId, StartedRun, Step, Timestamp, Usage,
};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

use crate::codec::{self, from_json_text, parse_id, reject_nul, to_json_text};
use crate::run_codec::{self, active_statuses};
use crate::{Claim, Result, StoreError, paging};

macro_rules! run_columns {
    () => {
        "id, session_id, status, trigger_message_id, idempotency_key, lease_owner, lease_token, \
         lease_expires_at, recovery_attempts, steps_completed, error, input_tokens, \
         output_tokens, created_at, started_at, finished_at, updated_at, config::text AS config, \
         trace_parent"
    };
}
pub(super) use run_columns;
macro_rules! step_columns {
    () => {
        "run_id, step_no, kind, input::text AS input, output::text AS output, status, attempt, \
         capability_id, digest, started_at, finished_at"
    };
}
macro_rules! event_columns {
    () => {
        "session_id, seq, event_type, payload::text AS payload, run_id, created_at"
    };
}

/// The fence every worker write passes: the run is still leased by this token and owner.
macro_rules! fenced {
    () => {
        "id = $1 AND lease_token = $2 AND lease_owner = $3 \
         AND status IN ('running', 'cancelling')"
    };
}
pub(super) use fenced;

pub(super) async fn queue_stats(pool: &PgPool) -> Result<crate::QueueStats> {
    let (waiting, active, oldest): (i64, i64, Option<Timestamp>) =
        sqlx::query_as(run_codec::QUEUE_STATS_SQL)
            .bind(codec::now())
            .bind(i64::from(crate::QUEUE_STATS_SCAN))
            .fetch_one(pool)
            .await?;
    Ok(crate::QueueStats {
        waiting: run_codec::to_u64("waiting runs", waiting)?,
        active: run_codec::to_u64("active runs", active)?,
        oldest_waiting_since: oldest,
    })
}

pub(super) fn run_from_row(row: &PgRow) -> Result<Run> {
    Ok(Run {
        id: parse_id("run id", row.try_get("id")?, RunId::parse)?,
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        status: run_codec::parse_run_status(row.try_get("status")?)?,
        trigger_message_id: parse_id(
            "message id",
            row.try_get("trigger_message_id")?,
            MessageId::parse,
        )?,
        idempotency_key: row.try_get("idempotency_key")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_token: row.try_get("lease_token")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        recovery_attempts: run_codec::to_u32(
            "run recovery attempts",
            row.try_get("recovery_attempts")?,
        )?,
        steps_completed: run_codec::to_u32("run steps completed", row.try_get("steps_completed")?)?,
        error: row.try_get("error")?,
        usage: Usage {
            input_tokens: run_codec::to_u64("run input tokens", row.try_get("input_tokens")?)?,
            output_tokens: run_codec::to_u64("run output tokens", row.try_get("output_tokens")?)?,
        },
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
        config: codec::from_optional_json_text("run config", row.try_get("config")?)?,
        trace_parent: row.try_get("trace_parent")?,
    })
}

fn step_from_row(row: &PgRow) -> Result<Step> {
    Ok(Step {
        run_id: parse_id("run id", row.try_get("run_id")?, RunId::parse)?,
        step_no: run_codec::to_u32("step number", row.try_get("step_no")?)?,
        kind: run_codec::parse_step_kind(row.try_get("kind")?)?,
        input: from_json_text("step input", row.try_get("input")?)?,
        output: from_json_text("step output", row.try_get("output")?)?,
        status: run_codec::parse_step_status(row.try_get("status")?)?,
        attempt: run_codec::to_u32("step attempt", row.try_get("attempt")?)?,
        capability_id: row.try_get("capability_id")?,
        digest: row.try_get("digest")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<Event> {
    let run_id: Option<&str> = row.try_get("run_id")?;
    Ok(Event {
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        seq: row.try_get("seq")?,
        event_type: run_codec::parse_event_type(row.try_get("event_type")?)?,
        payload: from_json_text("event payload", row.try_get("payload")?)?,
        run_id: run_id
            .map(|id| parse_id("run id", id, RunId::parse))
            .transpose()?,
        created_at: row.try_get("created_at")?,
    })
}

fn message_from_row(row: &PgRow) -> Result<Message> {
    Ok(Message {
        id: parse_id("message id", row.try_get("id")?, MessageId::parse)?,
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        role: codec::parse_role(row.try_get("role")?)?,
        content: row.try_get("content")?,
        metadata: from_json_text("message metadata", row.try_get("metadata")?)?,
        created_at: row.try_get("created_at")?,
    })
}

/// Takes `count` sequence numbers of the session (locking its row until commit) and returns
/// the last one; `None` when the session does not exist.
pub(super) async fn take_seqs(
    conn: &mut PgConnection,
    session: &SessionId,
    count: usize,
) -> Result<Option<i64>> {
    let last = sqlx::query_scalar(
        "UPDATE sessions SET last_event_seq = last_event_seq + $2 WHERE id = $1 \
         RETURNING last_event_seq",
    )
    .bind(session.as_str())
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .fetch_optional(conn)
    .await?;
    Ok(last)
}

/// Inserts `events` numbered up to `last_seq` (taken with [`take_seqs`]) in one statement.
pub(super) async fn insert_events(
    conn: &mut PgConnection,
    session: &SessionId,
    last_seq: i64,
    run: Option<&RunId>,
    events: Vec<NewEvent>,
    now: Timestamp,
) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let first = last_seq - i64::try_from(events.len()).unwrap_or(i64::MAX) + 1;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads = events
        .iter()
        .map(|e| to_json_text("event payload", &e.payload))
        .collect::<Result<Vec<_>>>()?;
    // One statement whatever the number of events, so it is prepared once.
    sqlx::query(
        "INSERT INTO events (session_id, seq, event_type, payload, run_id, created_at) \
         SELECT $1, $2 + e.ord - 1, e.event_type, e.payload::json, $3, $4 \
         FROM UNNEST($5::text[], $6::text[]) WITH ORDINALITY AS e (event_type, payload, ord)",
    )
    .bind(session.as_str())
    .bind(first)
    .bind(run.map(RunId::as_str))
    .bind(now)
    .bind(&types)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(events
        .into_iter()
        .zip(first..)
        .map(|(event, seq)| Event {
            session_id: session.clone(),
            seq,
            event_type: event.event_type,
            payload: event.payload,
            run_id: run.cloned(),
            created_at: now,
        })
        .collect())
}

/// Sets the session `idle` unless one of its runs is still active. Like `start_run` setting
/// it `running`, this is bookkeeping, not an edit: `updated_at` stays. Run after the session
/// row is locked ([`take_seqs`]): under READ COMMITTED this statement's snapshot then
/// includes every run a concurrent `start_run` committed.
pub(super) async fn settle_session_status(
    conn: &mut PgConnection,
    session: &SessionId,
) -> Result<()> {
    sqlx::query(concat!(
        "UPDATE sessions SET status = 'idle' \
         WHERE id = $1 AND status <> 'idle' AND NOT EXISTS \
           (SELECT 1 FROM runs WHERE session_id = $1 AND status IN ",
        active_statuses!(),
        ")"
    ))
    .bind(session.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The earliest active run of the session queued before `queue_seq`.
async fn first_active_before(
    conn: &mut PgConnection,
    session: &SessionId,
    queue_seq: i64,
) -> Result<Option<RunId>> {
    let id: Option<String> = sqlx::query_scalar(concat!(
        "SELECT id FROM runs WHERE session_id = $1 AND queue_seq < $2 AND status IN ",
        active_statuses!(),
        " ORDER BY queue_seq LIMIT 1"
    ))
    .bind(session.as_str())
    .bind(queue_seq)
    .fetch_optional(conn)
    .await?;
    id.map(|id| parse_id("run id", &id, RunId::parse))
        .transpose()
}

/// The run started with `key` in the session, as `start_run` returns it for a repeated key.
async fn started_by_key(
    conn: &mut PgConnection,
    session: &SessionId,
    key: &str,
) -> Result<Option<StartedRun>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        ", queue_seq FROM runs WHERE session_id = $1 AND idempotency_key = $2"
    ))
    .bind(session.as_str())
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let run = run_from_row(&row)?;
    let queue_seq: i64 = row.try_get("queue_seq")?;
    let message = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = $1"
    ))
    .bind(run.trigger_message_id.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let queued_behind = if run.status.is_terminal() {
        None
    } else {
        first_active_before(conn, session, queue_seq).await?
    };
    Ok(Some(StartedRun {
        run,
        message: message_from_row(&message)?,
        created: false,
        queued_behind,
    }))
}

/// The channel that tells workers a run became claimable (queued, or freed by a finish).
pub(crate) const RUNS_CHANNEL: &str = "everruns_runs";

/// The channel that tells other processes a session's event log grew (see `notify_events`).
pub(crate) const EVENTS_CHANNEL: &str = "everruns_events";

pub(super) async fn start_run(
    pool: &PgPool,
    session: &SessionId,
    content: String,
    idempotency_key: Option<String>,
    config: Option<&RunConfig>,
    trace_parent: Option<&str>,
    claim: Option<&Claim>,
) -> Result<(StartedRun, Vec<Event>)> {
    let config_text = codec::optional_json_text("run config", config)?;
    run_codec::check_trace_parent(trace_parent)?;
    reject_nul("message content", &content)?;
    run_codec::check_idempotency_key(idempotency_key.as_deref())?;
    if let Some(claim) = claim {
        run_codec::check_owner(&claim.owner)?;
    }
    // A retried request usually finds its run here, without taking any lock.
    if let Some(key) = &idempotency_key {
        let mut conn = pool.acquire().await?;
        if let Some(found) = started_by_key(&mut conn, session, key).await? {
            return Ok((found, Vec::new()));
        }
    }

    let mut tx = pool.begin().await?;
    // Locking the session row first serialises the starts of one session: the idempotency
    // check below cannot race, and queue positions follow commit order.
    let last_seq: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET status = 'running' WHERE id = $1 RETURNING last_event_seq",
    )
    .bind(session.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last_seq) = last_seq else {
        return Err(StoreError::not_found("session", session));
    };
    if let Some(key) = &idempotency_key
        && let Some(found) = started_by_key(&mut tx, session, key).await?
    {
        tx.rollback().await?;
        return Ok((found, Vec::new()));
    }
    // The run's position is the sequence number of its `run.queued` event.
    let queue_seq = last_seq + 2;
    let now = codec::now();
    let message = Message {
        id: MessageId::new(),
        session_id: session.clone(),
        role: MessageRole::User,
        content,
        metadata: serde_json::Value::Null,
        created_at: now,
    };
    let run_id = RunId::new();
    let [created, _] = run_codec::start_events(&run_id, &message, None);
    let created_payload = to_json_text("event payload", &created.payload)?;
    // The rest in one statement, whose snapshot (taken after the session row was locked
    // above) includes every run a concurrent start of this session committed: the run it
    // queues behind if any, the message, the run (running under the claim's lease when it
    // queues behind nothing, else queued), the events (`run.started` only when claimed, with
    // the payload of [`run_codec::started_event`]) and the session's sequence numbers.
    let row: (Option<String>, bool, Option<Timestamp>) = sqlx::query_as(concat!(
        "WITH behind AS (SELECT id FROM runs WHERE session_id = $2 AND queue_seq < $7 \
           AND status IN ",
        active_statuses!(),
        " ORDER BY queue_seq LIMIT 1), \
         claimed AS (SELECT $9::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM behind) AS yes), \
         msg AS (INSERT INTO messages (id, session_id, role, content, metadata, created_at) \
           VALUES ($1, $2, $3, $4, 'null'::json, $5)), \
         run AS (INSERT INTO runs (id, session_id, queue_seq, status, trigger_message_id, \
           idempotency_key, lease_owner, lease_token, lease_expires_at, started_at, created_at, \
           updated_at, config, trace_parent) \
           SELECT $6, $2, $7, CASE WHEN c.yes THEN 'running' ELSE 'queued' END, $1, $8, \
             CASE WHEN c.yes THEN $9 END, CASE WHEN c.yes THEN 1 ELSE 0 END, \
             CASE WHEN c.yes THEN now() + make_interval(secs => $10) END, \
             CASE WHEN c.yes THEN $5 END, $5, $5, $16::json, $17 \
           FROM claimed c RETURNING lease_expires_at), \
         ev_rows AS (SELECT 1 AS ord, $11::text AS event_type, $12::text AS payload \
           UNION ALL SELECT 2, $13, json_build_object('run_id', $6::text, \
             'queued_behind', (SELECT id FROM behind))::text \
           UNION ALL SELECT 3, $14, json_build_object('run_id', $6::text, 'worker', $9::text, \
             'takeover', false)::text FROM claimed WHERE claimed.yes), \
         seq AS (UPDATE sessions SET last_event_seq = last_event_seq + \
           (SELECT count(*) FROM ev_rows) WHERE id = $2), \
         ev AS (INSERT INTO events (session_id, seq, event_type, payload, run_id, created_at) \
           SELECT $2, $15 + ord, event_type, payload::json, $6, $5 FROM ev_rows) \
         SELECT (SELECT id FROM behind), (SELECT yes FROM claimed), \
           (SELECT lease_expires_at FROM run)"
    ))
    .bind(message.id.as_str())
    .bind(session.as_str())
    .bind(message.role.as_str())
    .bind(&message.content)
    .bind(now)
    .bind(run_id.as_str())
    .bind(queue_seq)
    .bind(idempotency_key.as_deref())
    .bind(claim.map(|c| c.owner.as_str()))
    .bind(claim.map_or(0.0, |c| run_codec::lease_micros(c.lease) as f64 / 1e6))
    .bind(created.event_type.as_str())
    .bind(created_payload)
    .bind(EventType::RunQueued.as_str())
    .bind(EventType::RunStarted.as_str())
    .bind(last_seq)
    .bind(config_text)
    .bind(trace_parent)
    .fetch_one(&mut *tx)
    .await?;
    let (behind, claimed, expires) = row;
    let queued_behind = behind
        .map(|id| parse_id("run id", &id, RunId::parse))
        .transpose()?;
    let claim = claim.filter(|_| claimed);
    let mut run = Run {
        id: run_id,
        session_id: session.clone(),
        status: RunStatus::Queued,
        trigger_message_id: message.id.clone(),
        idempotency_key,
        lease_owner: None,
        lease_token: 0,
        lease_expires_at: None,
        recovery_attempts: 0,
        steps_completed: 0,
        error: None,
        usage: Usage::default(),
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        config: config.cloned(),
        trace_parent: trace_parent.map(str::to_owned),
    };
    let mut events: Vec<NewEvent> =
        run_codec::start_events(&run.id, &message, queued_behind.as_ref()).into();
    if let Some(claim) = claim {
        run.status = RunStatus::Running;
        run.lease_owner = Some(claim.owner.clone());
        run.lease_token = 1;
        run.lease_expires_at = expires;
        run.started_at = Some(now);
        events.push(run_codec::started_event(&run, &claim.owner));
    } else {
        // Wakes workers in every process at commit. A claimed run needs no worker to look
        // for it.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(RUNS_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let written = numbered(
        session,
        last_seq + events.len() as i64,
        &run.id,
        events,
        now,
    );
    Ok((
        StartedRun {
            run,
            message,
            created: true,
            queued_behind,
        },
        written,
    ))
}

pub(super) async fn claim_run(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
) -> Result<Option<(Run, Lease, Event)>> {
    run_codec::check_owner(owner)?;
    let now = codec::now();
    // One statement (one round trip, one commit). `claimed`: the sub-select picks the oldest
    // claimable run and locks it, skipping rows other claimers (or fenced writers) hold; the
    // UPDATE takes it. A queued run is claimable only at the head of its session's queue; a
    // running or cancelling one only once its lease has expired (a takeover, counted in
    // recovery_attempts). Then the session's next sequence number and the `run.started`
    // event ([`run_codec::started_event`] has the same payload), locks run before session.
    let row = sqlx::query(concat!(
        "WITH claimed AS (UPDATE runs SET \
           status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, \
           lease_owner = $1, \
           lease_token = lease_token + 1, \
           lease_expires_at = now() + make_interval(secs => $2), \
           recovery_attempts = recovery_attempts \
             + CASE WHEN status = 'queued' THEN 0 ELSE 1 END, \
           started_at = COALESCE(started_at, $3), \
           updated_at = $3 \
         WHERE id = ( \
           SELECT c.id FROM runs c \
           WHERE c.status IN ('queued', 'running', 'cancelling') \
             AND CASE WHEN c.status = 'queued' \
                   THEN NOT EXISTS (SELECT 1 FROM runs o \
                     WHERE o.session_id = c.session_id AND o.queue_seq < c.queue_seq \
                       AND o.status IN ",
        active_statuses!(),
        ") ELSE c.lease_expires_at < now() END \
           ORDER BY c.created_at, c.id LIMIT 1 \
           FOR UPDATE SKIP LOCKED) \
         RETURNING ",
        run_columns!(),
        "), \
         seq AS (UPDATE sessions s SET last_event_seq = s.last_event_seq + 1 FROM claimed \
           WHERE s.id = claimed.session_id RETURNING s.last_event_seq), \
         ev AS (INSERT INTO events (session_id, seq, event_type, payload, run_id, created_at) \
           SELECT claimed.session_id, seq.last_event_seq, $4, \
             json_build_object('run_id', claimed.id, 'worker', $1::text, \
               'takeover', claimed.recovery_attempts > 0), \
             claimed.id, $3 \
           FROM claimed, seq RETURNING seq, payload::text AS payload) \
         SELECT claimed.*, ev.seq AS event_seq, ev.payload AS event_payload FROM claimed, ev"
    ))
    .bind(owner)
    .bind(run_codec::lease_micros(lease) as f64 / 1e6)
    .bind(now)
    .bind(EventType::RunStarted.as_str())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let run = run_from_row(&row)?;
    let lease = Lease {
        run_id: run.id.clone(),
        owner: owner.to_owned(),
        token: run.lease_token,
    };
    let started = Event {
        session_id: run.session_id.clone(),
        seq: row.try_get("event_seq")?,
        event_type: EventType::RunStarted,
        payload: from_json_text("event payload", row.try_get("event_payload")?)?,
        run_id: Some(run.id.clone()),
        created_at: now,
    };
    Ok(Some((run, lease, started)))
}

pub(super) async fn renew_lease(pool: &PgPool, lease: &Lease, duration: Duration) -> Result<()> {
    let done = sqlx::query(concat!(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => $4), updated_at = $5 \
         WHERE ",
        fenced!()
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .bind(run_codec::lease_micros(duration) as f64 / 1e6)
    .bind(codec::now())
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(run_codec::lease_lost(lease));
    }
    Ok(())
}

/// Locks the leased run's row until commit, or fails with LeaseLost. A concurrent claim
/// either waits for this transaction or has already changed the token, which this
/// statement then sees (READ COMMITTED re-checks a row updated while it waited).
async fn fence(conn: &mut PgConnection, lease: &Lease) -> Result<SessionId> {
    let session: Option<String> = sqlx::query_scalar(concat!(
        "SELECT session_id FROM runs WHERE ",
        fenced!(),
        " FOR UPDATE"
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .fetch_optional(conn)
    .await?;
    match session {
        Some(id) => parse_id("session id", &id, SessionId::parse),
        None => Err(run_codec::lease_lost(lease)),
    }
}

/// The event rows of `events` numbered up to `last_seq`, as [`insert_events`] or the
/// single-statement writes below stored them.
pub(super) fn numbered(
    session: &SessionId,
    last_seq: i64,
    run: &RunId,
    events: Vec<NewEvent>,
    now: Timestamp,
) -> Vec<Event> {
    let first = last_seq - i64::try_from(events.len()).unwrap_or(i64::MAX) + 1;
    events
        .into_iter()
        .zip(first..)
        .map(|(event, seq)| Event {
            session_id: session.clone(),
            seq,
            event_type: event.event_type,
            payload: event.payload,
            run_id: Some(run.clone()),
            created_at: now,
        })
        .collect()
}

/// Event types and payload texts, bound as two arrays and unnested in SQL.
fn event_arrays(events: &[NewEvent]) -> Result<(Vec<&'static str>, Vec<String>)> {
    let types = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads = events
        .iter()
        .map(|e| to_json_text("event payload", &e.payload))
        .collect::<Result<_>>()?;
    Ok((types, payloads))
}

pub(super) async fn append_events(
    pool: &PgPool,
    lease: &Lease,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>> {
    if events.is_empty() {
        // Nothing to write, but the caller still learns whether its lease holds.
        let mut conn = pool.acquire().await?;
        fence(&mut conn, lease).await?;
        return Ok(Vec::new());
    }
    let (types, payloads) = event_arrays(&events)?;
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let now = codec::now();
    // One statement (one round trip, its own transaction): lock the leased run, take the
    // sequence numbers from the session row, insert. Each part reads the one before, so locks
    // are taken run before session, and nothing is written when the fence finds no row.
    let row: Option<(String, i64)> = sqlx::query_as(concat!(
        "WITH fence AS (SELECT session_id FROM runs WHERE ",
        fenced!(),
        " FOR UPDATE), \
         seq AS (UPDATE sessions s SET last_event_seq = s.last_event_seq + $4 FROM fence \
           WHERE s.id = fence.session_id RETURNING s.id, s.last_event_seq), \
         ev AS (INSERT INTO events (session_id, seq, event_type, payload, run_id, created_at) \
           SELECT seq.id, seq.last_event_seq - $4 + e.ord, e.event_type, e.payload::json, $1, $5 \
           FROM seq, UNNEST($6::text[], $7::text[]) WITH ORDINALITY AS e (event_type, payload, ord)) \
         SELECT id, last_event_seq FROM seq"
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .bind(count)
    .bind(now)
    .bind(&types)
    .bind(&payloads)
    .fetch_optional(pool)
    .await?;
    let Some((session, last_seq)) = row else {
        return Err(run_codec::lease_lost(lease));
    };
    let session = parse_id("session id", &session, SessionId::parse)?;
    Ok(numbered(&session, last_seq, &lease.run_id, events, now))
}

/// Whether `err` is the steps primary key refusing a second record of a step (and not, say,
/// a duplicate message id in the same statement).
pub(super) fn is_duplicate_step(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some("steps_pkey"))
}

pub(super) async fn list_steps(pool: &PgPool, run: &RunId) -> Result<Vec<Step>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM steps WHERE run_id = $1 ORDER BY step_no"
    ))
    .bind(run.as_str())
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        // Tells "no steps yet" from "no such run".
        get_run(pool, run).await?;
    }
    rows.iter().map(step_from_row).collect()
}

pub(super) async fn finish_run(
    pool: &PgPool,
    lease: &Lease,
    status: RunStatus,
    error: Option<String>,
    events: Vec<NewEvent>,
) -> Result<(Run, Vec<Event>)> {
    run_codec::check_final_status(status)?;
    if let Some(error) = &error {
        reject_nul("a run error", error)?;
    }
    let now = codec::now();
    let mut tx = pool.begin().await?;
    let row = sqlx::query(concat!(
        "UPDATE runs SET status = $4, error = $5, finished_at = $6, updated_at = $6, \
           lease_owner = NULL, lease_expires_at = NULL \
         WHERE ",
        fenced!(),
        " RETURNING ",
        run_columns!()
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .bind(status.as_str())
    .bind(error.as_deref())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(run_codec::lease_lost(lease));
    };
    let run = run_from_row(&row)?;
    let last = take_seqs(&mut tx, &run.session_id, events.len())
        .await?
        .ok_or_else(|| StoreError::not_found("session", &run.session_id))?;
    let written = insert_events(&mut tx, &run.session_id, last, Some(&run.id), events, now).await?;
    settle_session_status(&mut tx, &run.session_id).await?;
    // Wakes workers in every process at commit (PostgreSQL folds repeats in one transaction).
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(RUNS_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((run, written))
}

pub(super) async fn request_cancel(pool: &PgPool, id: &RunId) -> Result<(Run, Vec<Event>)> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1 FOR UPDATE"
    ))
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(StoreError::not_found("run", id));
    };
    let run = run_from_row(&row)?;
    let now = codec::now();
    let mut written = Vec::new();
    let run = match run.status {
        RunStatus::Queued | RunStatus::WaitingApproval => {
            // No worker holds it: cancelled now, and the session's queue moves on.
            let row = sqlx::query(concat!(
                "UPDATE runs SET status = 'cancelled', finished_at = $2, updated_at = $2, \
                   lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $1 RETURNING ",
                run_columns!()
            ))
            .bind(id.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let run = run_from_row(&row)?;
            // Its pending approvals go with it, announced before the run's end.
            let mut events = super::approvals::cancel_pending(&mut tx, &run.id, now).await?;
            events.push(run_codec::cancelled_event(&run));
            let last = take_seqs(&mut tx, &run.session_id, events.len())
                .await?
                .ok_or_else(|| StoreError::not_found("session", &run.session_id))?;
            written =
                insert_events(&mut tx, &run.session_id, last, Some(&run.id), events, now).await?;
            settle_session_status(&mut tx, &run.session_id).await?;
            run
        }
        RunStatus::Running => {
            let row = sqlx::query(concat!(
                "UPDATE runs SET status = 'cancelling', updated_at = $2 WHERE id = $1 \
                 RETURNING ",
                run_columns!()
            ))
            .bind(id.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            run_from_row(&row)?
        }
        RunStatus::Cancelling | RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled => {
            run
        }
    };
    // Wakes workers in every process at commit (PostgreSQL folds repeats in one transaction).
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(RUNS_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((run, written))
}

pub(super) async fn session_history(
    pool: &PgPool,
    session: &SessionId,
) -> Result<(Vec<Run>, Vec<Message>)> {
    let mut conn = pool.acquire().await?;
    let runs = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE session_id = $1 ORDER BY id"
    ))
    .bind(session.as_str())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(run_from_row)
    .collect::<Result<Vec<_>>>()?;
    let messages = sqlx::query(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE session_id = $1 ORDER BY id"
    ))
    .bind(session.as_str())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(message_from_row)
    .collect::<Result<Vec<_>>>()?;
    if runs.is_empty() && messages.is_empty() {
        // Tells "nothing yet" from "no such session".
        last_event_seq(pool, session).await?;
    }
    Ok((runs, messages))
}

pub(super) async fn cancelling_runs(pool: &PgPool, owner: &str) -> Result<Vec<RunId>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM runs WHERE status = 'cancelling' AND lease_owner = $1")
            .bind(owner)
            .fetch_all(pool)
            .await?;
    ids.iter()
        .map(|id| parse_id("run id", id, RunId::parse))
        .collect()
}

pub(super) async fn get_run(pool: &PgPool, id: &RunId) -> Result<Run> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => run_from_row(&row),
        None => Err(StoreError::not_found("run", id)),
    }
}

pub(super) async fn list_runs(
    pool: &PgPool,
    session: &SessionId,
    page: &PageRequest,
) -> Result<Page<Run>> {
    let (exists, total): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1), \
                (SELECT COUNT(*) FROM runs WHERE session_id = $1)",
    )
    .bind(session.as_str())
    .fetch_one(pool)
    .await?;
    if !exists {
        return Err(StoreError::not_found("session", session));
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(session.as_str())
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(paging::fetch_limit(page))
    .fetch_all(pool)
    .await?;
    let items = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
    Ok(paging::finish(page, items, total, |r| r.id.to_string()))
}

pub(super) async fn active_run(pool: &PgPool, session: &SessionId) -> Result<Option<Run>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE session_id = $1 AND status IN ",
        active_statuses!(),
        " ORDER BY queue_seq LIMIT 1"
    ))
    .bind(session.as_str())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(Some(run_from_row(&row)?)),
        None => {
            last_event_seq(pool, session).await?;
            Ok(None)
        }
    }
}

pub(super) async fn list_events(
    pool: &PgPool,
    session: &SessionId,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<Event>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(session.as_str())
    .bind(after_seq)
    .bind(i64::from(limit.clamp(1, run_codec::MAX_EVENTS_PAGE)))
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        // Tells "nothing new" from "no such session".
        last_event_seq(pool, session).await?;
    }
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn last_event_seq(pool: &PgPool, session: &SessionId) -> Result<i64> {
    let seq = sqlx::query_scalar("SELECT last_event_seq FROM sessions WHERE id = $1")
        .bind(session.as_str())
        .fetch_optional(pool)
        .await?;
    seq.ok_or_else(|| StoreError::not_found("session", session))
}
