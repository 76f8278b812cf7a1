//! Runs, steps and events on SQLite.
//!
//! Every write that reads first runs in a `BEGIN IMMEDIATE` transaction, which holds the
//! database's single write lock from the start: the fence check, the sequence numbers and the
//! inserts cannot interleave with another writer. A claim is one `UPDATE` statement, atomic on
//! its own. SQLite serves one process, so lease expiry is judged by this process's clock.

use std::time::Duration;

use everruns_core::{
    Event, Lease, Message, MessageId, MessageRole, NewEvent, NewStep, Page, PageRequest,
    RecordedStep, Run, RunConfig, RunId, RunStatus, SessionId, StartedRun, Step, Timestamp, Usage,
};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};

use super::{optional_timestamp, timestamp};
use crate::codec::{self, from_json_text, parse_id, reject_nul, timestamp_to_text, to_json_text};
use crate::run_codec::{self, active_statuses};
use crate::{Claim, Result, StoreError, paging};

macro_rules! run_columns {
    () => {
        "id, session_id, status, trigger_message_id, idempotency_key, lease_owner, lease_token, \
         lease_expires_at, recovery_attempts, steps_completed, error, input_tokens, \
         output_tokens, created_at, started_at, finished_at, updated_at, config, \
         trace_parent"
    };
}
pub(super) use run_columns;
macro_rules! step_columns {
    () => {
        "run_id, step_no, kind, input, output, status, attempt, \
         capability_id, digest, started_at, finished_at"
    };
}
macro_rules! event_columns {
    () => {
        "session_id, seq, event_type, payload, run_id, created_at"
    };
}

/// When a lease of `duration` taken at `now` runs out.
fn expiry(now: Timestamp, duration: Duration) -> Timestamp {
    now + chrono::TimeDelta::microseconds(run_codec::lease_micros(duration))
}

/// The fence every worker write passes: the run is still leased by this token and owner.
macro_rules! fenced {
    () => {
        "id = $1 AND lease_token = $2 AND lease_owner = $3 \
         AND status IN ('running', 'cancelling')"
    };
}
pub(super) use fenced;

pub(super) async fn queue_stats(pool: &SqlitePool) -> Result<crate::QueueStats> {
    let row = sqlx::query(run_codec::QUEUE_STATS_SQL)
        .bind(timestamp_to_text(&codec::now()))
        .bind(i64::from(crate::QUEUE_STATS_SCAN))
        .fetch_one(pool)
        .await?;
    let oldest: Option<String> = row.try_get(2)?;
    Ok(crate::QueueStats {
        waiting: run_codec::to_u64("waiting runs", row.try_get(0)?)?,
        active: run_codec::to_u64("active runs", row.try_get(1)?)?,
        oldest_waiting_since: oldest
            .as_deref()
            .map(|text| codec::timestamp_from_text("oldest waiting run", text))
            .transpose()?,
    })
}

pub(super) fn run_from_row(row: &SqliteRow) -> Result<Run> {
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
        lease_expires_at: optional_timestamp(row, "lease_expires_at")?,
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
        created_at: timestamp(row, "created_at")?,
        started_at: optional_timestamp(row, "started_at")?,
        finished_at: optional_timestamp(row, "finished_at")?,
        updated_at: timestamp(row, "updated_at")?,
        config: codec::from_optional_json_text("run config", row.try_get("config")?)?,
        trace_parent: row.try_get("trace_parent")?,
    })
}

fn step_from_row(row: &SqliteRow) -> Result<Step> {
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
        started_at: timestamp(row, "started_at")?,
        finished_at: timestamp(row, "finished_at")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event> {
    let run_id: Option<&str> = row.try_get("run_id")?;
    Ok(Event {
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        seq: row.try_get("seq")?,
        event_type: run_codec::parse_event_type(row.try_get("event_type")?)?,
        payload: from_json_text("event payload", row.try_get("payload")?)?,
        run_id: run_id
            .map(|id| parse_id("run id", id, RunId::parse))
            .transpose()?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn message_from_row(row: &SqliteRow) -> Result<Message> {
    Ok(Message {
        id: parse_id("message id", row.try_get("id")?, MessageId::parse)?,
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        role: codec::parse_role(row.try_get("role")?)?,
        content: row.try_get("content")?,
        metadata: from_json_text("message metadata", row.try_get("metadata")?)?,
        created_at: timestamp(row, "created_at")?,
    })
}

/// Takes `count` sequence numbers of the session and returns the last one; `None` when the
/// session does not exist.
pub(super) async fn take_seqs(
    conn: &mut SqliteConnection,
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
    conn: &mut SqliteConnection,
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
    let created_at = timestamp_to_text(&now);
    // Row by row: SQLite has no arrays, and inside one transaction each insert is a cheap
    // call into the library, not a round trip.
    for (event, seq) in events.iter().zip(first..) {
        sqlx::query(
            "INSERT INTO events (session_id, seq, event_type, payload, run_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session.as_str())
        .bind(seq)
        .bind(event.event_type.as_str())
        .bind(to_json_text("event payload", &event.payload)?)
        .bind(run.map(RunId::as_str))
        .bind(&created_at)
        .execute(&mut *conn)
        .await?;
    }
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
/// it `running`, this is bookkeeping, not an edit: `updated_at` stays.
pub(super) async fn settle_session_status(
    conn: &mut SqliteConnection,
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
    conn: &mut SqliteConnection,
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
    conn: &mut SqliteConnection,
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

pub(super) async fn start_run(
    pool: &SqlitePool,
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
    // A retried request usually finds its run here, without taking the write lock.
    if let Some(key) = &idempotency_key {
        let mut conn = pool.acquire().await?;
        if let Some(found) = started_by_key(&mut conn, session, key).await? {
            return Ok((found, Vec::new()));
        }
    }

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // The write lock is held from the start: the idempotency check below cannot race, and
    // queue positions follow commit order.
    let last_seq: Option<i64> = sqlx::query_scalar(
        "UPDATE sessions SET last_event_seq = last_event_seq + 2, status = 'running' \
         WHERE id = $1 RETURNING last_event_seq",
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
    let queue_seq = last_seq;
    let queued_behind = first_active_before(&mut tx, session, queue_seq).await?;
    // Claimed at once only when it would be the next claimable run of its session anyway.
    let claim = claim.filter(|_| queued_behind.is_none());

    let now = codec::now();
    let message = Message {
        id: MessageId::new(),
        session_id: session.clone(),
        role: MessageRole::User,
        content,
        metadata: serde_json::Value::Null,
        created_at: now,
    };
    let mut run = Run {
        id: RunId::new(),
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
    sqlx::query(
        "INSERT INTO messages (id, session_id, role, content, metadata, created_at) \
         VALUES ($1, $2, $3, $4, 'null', $5)",
    )
    .bind(message.id.as_str())
    .bind(session.as_str())
    .bind(message.role.as_str())
    .bind(&message.content)
    .bind(timestamp_to_text(&now))
    .execute(&mut *tx)
    .await?;
    let mut events: Vec<NewEvent> =
        run_codec::start_events(&run.id, &message, queued_behind.as_ref()).into();
    let mut last_seq = last_seq;
    if let Some(claim) = claim {
        // Running under the claim's lease, with `run.started` in this commit.
        run.status = RunStatus::Running;
        run.lease_owner = Some(claim.owner.clone());
        run.lease_token = 1;
        run.lease_expires_at = Some(expiry(now, claim.lease));
        run.started_at = Some(now);
        events.push(run_codec::started_event(&run, &claim.owner));
        last_seq = take_seqs(&mut tx, session, 1)
            .await?
            .ok_or_else(|| StoreError::not_found("session", session))?;
    }
    sqlx::query(
        "INSERT INTO runs (id, session_id, queue_seq, status, trigger_message_id, \
         idempotency_key, lease_owner, lease_token, lease_expires_at, started_at, created_at, \
         updated_at, config, trace_parent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13)",
    )
    .bind(run.id.as_str())
    .bind(session.as_str())
    .bind(queue_seq)
    .bind(run.status.as_str())
    .bind(message.id.as_str())
    .bind(run.idempotency_key.as_deref())
    .bind(run.lease_owner.as_deref())
    .bind(run.lease_token)
    .bind(run.lease_expires_at.as_ref().map(timestamp_to_text))
    .bind(run.started_at.as_ref().map(timestamp_to_text))
    .bind(timestamp_to_text(&now))
    .bind(config_text)
    .bind(trace_parent)
    .execute(&mut *tx)
    .await?;
    let written = insert_events(&mut tx, session, last_seq, Some(&run.id), events, now).await?;
    tx.commit().await?;
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
    pool: &SqlitePool,
    owner: &str,
    lease: Duration,
) -> Result<Option<(Run, Lease, Event)>> {
    run_codec::check_owner(owner)?;
    let now = codec::now();
    // The claim and its `run.started` event commit together.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // The sub-select picks the oldest claimable run and the UPDATE takes it. A queued run is
    // claimable only at the head of its session's queue; a running or cancelling one only once
    // its lease has expired (a takeover, counted in recovery_attempts).
    let row = sqlx::query(concat!(
        "UPDATE runs SET \
           status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, \
           lease_owner = $1, \
           lease_token = lease_token + 1, \
           lease_expires_at = $2, \
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
        ") ELSE c.lease_expires_at < $3 END \
           ORDER BY c.created_at, c.id LIMIT 1) \
         RETURNING ",
        run_columns!()
    ))
    .bind(owner)
    .bind(timestamp_to_text(&expiry(now, lease)))
    .bind(timestamp_to_text(&now))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        return Ok(None);
    };
    let run = run_from_row(&row)?;
    let lease = Lease {
        run_id: run.id.clone(),
        owner: owner.to_owned(),
        token: run.lease_token,
    };
    let last = take_seqs(&mut tx, &run.session_id, 1)
        .await?
        .ok_or_else(|| StoreError::not_found("session", &run.session_id))?;
    let started = insert_events(
        &mut tx,
        &run.session_id,
        last,
        Some(&run.id),
        vec![run_codec::started_event(&run, owner)],
        now,
    )
    .await?;
    tx.commit().await?;
    let started = started
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Invalid("the run.started event was not written".to_owned()))?;
    Ok(Some((run, lease, started)))
}

pub(super) async fn renew_lease(
    pool: &SqlitePool,
    lease: &Lease,
    duration: Duration,
) -> Result<()> {
    let now = codec::now();
    let done = sqlx::query(concat!(
        "UPDATE runs SET lease_expires_at = $4, updated_at = $5 \
         WHERE ",
        fenced!()
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .bind(timestamp_to_text(&expiry(now, duration)))
    .bind(timestamp_to_text(&now))
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(run_codec::lease_lost(lease));
    }
    Ok(())
}

/// Checks, inside a `BEGIN IMMEDIATE` transaction, that the lease still holds (nothing can
/// change the run until commit), or fails with LeaseLost.
async fn fence(conn: &mut SqliteConnection, lease: &Lease) -> Result<SessionId> {
    let session: Option<String> =
        sqlx::query_scalar(concat!("SELECT session_id FROM runs WHERE ", fenced!()))
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

pub(super) async fn append_events(
    pool: &SqlitePool,
    lease: &Lease,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let session = fence(&mut tx, lease).await?;
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(Vec::new());
    }
    let last = take_seqs(&mut tx, &session, events.len())
        .await?
        .ok_or_else(|| StoreError::not_found("session", &session))?;
    let events = insert_events(
        &mut tx,
        &session,
        last,
        Some(&lease.run_id),
        events,
        codec::now(),
    )
    .await?;
    tx.commit().await?;
    Ok(events)
}

/// Records a step; with `finish`, also ends the run with that status in the same transaction
/// (`Store::record_final_step`).
pub(super) async fn record_step(
    pool: &SqlitePool,
    lease: &Lease,
    new: NewStep,
    events: Vec<NewEvent>,
    usage_delta: Usage,
    finish: Option<RunStatus>,
) -> Result<RecordedStep> {
    run_codec::check_new_step(&new)?;
    if let Some(status) = finish {
        run_codec::check_final_status(status)?;
    }
    let input = to_json_text("step input", &new.input)?;
    let output = to_json_text("step output", &new.output)?;
    let metadata = new
        .message
        .as_ref()
        .map(|m| to_json_text("message metadata", &m.metadata))
        .transpose()?;
    let now = codec::now();

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // The fence and the run's counters (and its end, with `finish`) in one statement; a
    // duplicate step below rolls them back with everything else.
    let session: Option<String> = sqlx::query_scalar(concat!(
        "UPDATE runs SET steps_completed = steps_completed + 1, \
           input_tokens = input_tokens + $4, output_tokens = output_tokens + $5, \
           recovery_attempts = 0, updated_at = $6, status = COALESCE($7, status), \
           finished_at = CASE WHEN $7 IS NULL THEN finished_at ELSE $6 END, \
           lease_owner = CASE WHEN $7 IS NULL THEN lease_owner END, \
           lease_expires_at = CASE WHEN $7 IS NULL THEN lease_expires_at END \
         WHERE ",
        fenced!(),
        " RETURNING session_id"
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .bind(run_codec::to_i64(usage_delta.input_tokens))
    .bind(run_codec::to_i64(usage_delta.output_tokens))
    .bind(timestamp_to_text(&now))
    .bind(finish.map(RunStatus::as_str))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(session) = session else {
        return Err(run_codec::lease_lost(lease));
    };
    let session = parse_id("session id", &session, SessionId::parse)?;

    let step = Step {
        run_id: lease.run_id.clone(),
        step_no: new.step_no,
        kind: new.kind,
        input: new.input,
        output: new.output,
        status: new.status,
        attempt: new.attempt,
        capability_id: new.capability_id,
        digest: new.digest,
        started_at: codec::truncate(new.started_at),
        finished_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO steps (run_id, step_no, kind, input, output, status, attempt, \
         capability_id, digest, started_at, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(step.run_id.as_str())
    .bind(i64::from(step.step_no))
    .bind(step.kind.as_str())
    .bind(input)
    .bind(output)
    .bind(step.status.as_str())
    .bind(i64::from(step.attempt))
    .bind(step.capability_id.as_deref())
    .bind(step.digest.as_deref())
    .bind(timestamp_to_text(&step.started_at))
    .bind(timestamp_to_text(&step.finished_at))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(err) if run_codec::is_duplicate_step(&err) => {
            return Err(run_codec::duplicate_step(&step.run_id, step.step_no));
        }
        Err(err) => return Err(err.into()),
    }

    let message = match (new.message, metadata) {
        (Some(m), Some(metadata)) => {
            sqlx::query(
                "INSERT INTO messages (id, session_id, role, content, metadata, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(m.id.as_str())
            .bind(session.as_str())
            .bind(m.role.as_str())
            .bind(&m.content)
            .bind(metadata)
            .bind(timestamp_to_text(&now))
            .execute(&mut *tx)
            .await?;
            Some(Message {
                id: m.id,
                session_id: session.clone(),
                role: m.role,
                content: m.content,
                metadata: m.metadata,
                created_at: now,
            })
        }
        _ => None,
    };

    let events = if events.is_empty() {
        Vec::new()
    } else {
        let last = take_seqs(&mut tx, &session, events.len())
            .await?
            .ok_or_else(|| StoreError::not_found("session", &session))?;
        insert_events(&mut tx, &session, last, Some(&lease.run_id), events, now).await?
    };
    // The step's plugin state, exactly once: committed with the step or not at all. State of
    // an agent or session deleted meanwhile is not written (its run goes with it).
    for write in &new.kv_writes {
        match &write.value {
            Some(value) => {
                super::put_kv(&mut tx, &write.scope, &write.key, value, &now).await?;
            }
            None => {
                super::delete_kv(&mut tx, &write.scope, &write.key).await?;
            }
        }
    }
    if finish.is_some() {
        settle_session_status(&mut tx, &session).await?;
    }
    tx.commit().await?;
    Ok(RecordedStep {
        step,
        message,
        events,
    })
}

pub(super) async fn list_steps(pool: &SqlitePool, run: &RunId) -> Result<Vec<Step>> {
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
    pool: &SqlitePool,
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
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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
    .bind(timestamp_to_text(&now))
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
    tx.commit().await?;
    Ok((run, written))
}

pub(super) async fn request_cancel(pool: &SqlitePool, id: &RunId) -> Result<(Run, Vec<Event>)> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1"
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
            .bind(timestamp_to_text(&now))
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
            .bind(timestamp_to_text(&now))
            .fetch_one(&mut *tx)
            .await?;
            run_from_row(&row)?
        }
        RunStatus::Cancelling | RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled => {
            run
        }
    };
    tx.commit().await?;
    Ok((run, written))
}

pub(super) async fn session_history(
    pool: &SqlitePool,
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

pub(super) async fn cancelling_runs(pool: &SqlitePool, owner: &str) -> Result<Vec<RunId>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM runs WHERE status = 'cancelling' AND lease_owner = $1")
            .bind(owner)
            .fetch_all(pool)
            .await?;
    ids.iter()
        .map(|id| parse_id("run id", id, RunId::parse))
        .collect()
}

pub(super) async fn get_run(pool: &SqlitePool, id: &RunId) -> Result<Run> {
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
    pool: &SqlitePool,
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

pub(super) async fn active_run(pool: &SqlitePool, session: &SessionId) -> Result<Option<Run>> {
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
    pool: &SqlitePool,
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

pub(super) async fn last_event_seq(pool: &SqlitePool, session: &SessionId) -> Result<i64> {
    let seq = sqlx::query_scalar("SELECT last_event_seq FROM sessions WHERE id = $1")
        .bind(session.as_str())
        .fetch_optional(pool)
        .await?;
    seq.ok_or_else(|| StoreError::not_found("session", session))
}
