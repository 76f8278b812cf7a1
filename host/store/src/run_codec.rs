//! The backend-independent parts of runs, steps and events: the events the store writes on
//! its own (starting, claiming and cancelling a run), input checks, and integer conversions
//! between domain counters and columns.

use std::time::Duration;

use everruns_core::{
    EventType, Lease, Message, NewEvent, NewStep, Run, RunId, RunStatus, StepKind, StepStatus,
};
use serde_json::json;

use crate::codec::reject_nul;
use crate::{Result, StoreError};

/// Largest page of events [`crate::Store::list_events`] returns.
pub(crate) const MAX_EVENTS_PAGE: u32 = 1000;

/// Statuses that hold a session's turn, as an SQL list.
macro_rules! active_statuses {
    () => {
        "('queued', 'running', 'waiting', 'cancelling')"
    };
}
pub(crate) use active_statuses;

/// The events of a new run: the user message, then the run's place in the queue.
pub(crate) fn start_events(
    run: &RunId,
    message: &Message,
    queued_behind: Option<&RunId>,
) -> [NewEvent; 2] {
    [
        NewEvent::new(
            EventType::MessageCreated,
            json!({
                "message_id": message.id.as_str(),
                "run_id": run.as_str(),
                "role": message.role.as_str(),
                "content": message.content,
            }),
        ),
        NewEvent::new(
            EventType::RunQueued,
            json!({
                "run_id": run.as_str(),
                "queued_behind": queued_behind.map(RunId::as_str),
            }),
        ),
    ]
}

/// The event of a claim: `worker` took `run` (after the claim: `recovery_attempts > 0` means
/// it took the run over from another worker). The PostgreSQL claim builds the same payload
/// in SQL.
pub(crate) fn started_event(run: &Run, worker: &str) -> NewEvent {
    NewEvent::new(
        EventType::RunStarted,
        json!({
            "run_id": run.id.as_str(),
            "worker": worker,
            "takeover": run.recovery_attempts > 0,
        }),
    )
}

/// The event of a run cancelled before any worker held it.
pub(crate) fn cancelled_event(run: &Run) -> NewEvent {
    NewEvent::new(
        EventType::RunCancelled,
        json!({ "run_id": run.id.as_str(), "status": RunStatus::Cancelled.as_str() }),
    )
}

/// [`crate::Store::queue_stats`] on both backends: waiting, active, the oldest waiting since,
/// over the oldest unfinished runs (bound: `$1` = now, `$2` = the scan limit).
pub(crate) const QUEUE_STATS_SQL: &str = "SELECT \
     COALESCE(SUM(CASE WHEN status = 'queued' OR lease_expires_at < $1 THEN 1 ELSE 0 END), 0), \
     COALESCE(SUM(CASE WHEN status <> 'queued' AND lease_expires_at >= $1 THEN 1 ELSE 0 END), 0), \
     MIN(CASE WHEN status = 'queued' THEN updated_at \
              WHEN lease_expires_at < $1 THEN lease_expires_at END) \
     FROM (SELECT status, updated_at, lease_expires_at FROM runs \
           WHERE status IN ('queued', 'running', 'cancelling') \
           ORDER BY created_at LIMIT $2) unfinished";

/// A run's trace parent is a W3C `traceparent` (version 00): `00-` 32 hex digits `-` 16 hex
/// digits `-` 2 hex digits, lower case.
pub(crate) fn check_trace_parent(trace_parent: Option<&str>) -> Result<()> {
    let Some(value) = trace_parent else {
        return Ok(());
    };
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
    {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "a run's trace parent must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
                .to_owned(),
        ))
    }
}

/// `finish_run` only ends runs.
pub(crate) fn check_final_status(status: RunStatus) -> Result<()> {
    if status.is_terminal() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a run can only be finished as completed, failed or cancelled, not {}",
            status.as_str()
        )))
    }
}

pub(crate) fn check_idempotency_key(key: Option<&str>) -> Result<()> {
    match key {
        Some("") => Err(StoreError::Invalid(
            "an idempotency key must not be empty".to_owned(),
        )),
        Some(key) => reject_nul("an idempotency key", key),
        None => Ok(()),
    }
}

pub(crate) fn check_new_step(step: &NewStep) -> Result<()> {
    if step.kind == StepKind::Tool && step.capability_id.is_none() {
        return Err(StoreError::Invalid(
            "a tool step names the capability it ran".to_owned(),
        ));
    }
    for (field, value) in [
        ("a capability id", step.capability_id.as_deref()),
        ("a component digest", step.digest.as_deref()),
    ] {
        if let Some(value) = value {
            reject_nul(field, value)?;
        }
    }
    if let Some(message) = &step.message {
        reject_nul("message content", &message.content)?;
    }
    for write in &step.kv_writes {
        crate::codec::check_kv_key(&write.scope, &write.key)?;
    }
    Ok(())
}

pub(crate) fn check_owner(owner: &str) -> Result<()> {
    if owner.is_empty() {
        return Err(StoreError::Invalid(
            "a lease owner must not be empty".to_owned(),
        ));
    }
    reject_nul("a lease owner", owner)
}

/// The lease as microseconds, the precision timestamps are stored with (at least 1).
pub(crate) fn lease_micros(lease: Duration) -> i64 {
    i64::try_from(lease.as_micros()).unwrap_or(i64::MAX).max(1)
}

/// The error of a fenced write whose lease no longer holds.
pub(crate) fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        run_id: lease.run_id.clone(),
    }
}

/// A counter column as a domain `u32`.
pub(crate) fn to_u32(what: &'static str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{value} is out of range"),
    })
}

/// A token counter column as a domain `u64`.
pub(crate) fn to_u64(what: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what,
        detail: format!("{value} is negative"),
    })
}

/// A domain token count as a column value; counts beyond `i64::MAX` saturate (they cannot
/// happen in practice, and a counter must not wrap negative).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The stored status of a run. A run waiting for approval is stored as `waiting`, the status
/// the schema reserved for a paused run (migration 0002); its API name is `waiting_approval`.
pub(crate) fn parse_run_status(value: &str) -> Result<RunStatus> {
    if value == WAITING {
        return Ok(RunStatus::WaitingApproval);
    }
    RunStatus::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "run status",
        detail: format!("unknown status `{value}`"),
    })
}

/// How [`RunStatus::WaitingApproval`] is stored.
pub(crate) const WAITING: &str = "waiting";

pub(crate) fn parse_step_kind(value: &str) -> Result<StepKind> {
    StepKind::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "step kind",
        detail: format!("unknown kind `{value}`"),
    })
}

pub(crate) fn parse_step_status(value: &str) -> Result<StepStatus> {
    StepStatus::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "step status",
        detail: format!("unknown status `{value}`"),
    })
}

pub(crate) fn parse_event_type(value: &str) -> Result<EventType> {
    EventType::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "event type",
        detail: format!("unknown type `{value}`"),
    })
}

/// Whether `err` is a duplicate key in `steps` (its only unique constraint is the primary key).
pub(crate) fn is_duplicate_step(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// The conflict of recording a step twice.
pub(crate) fn duplicate_step(run: &RunId, step_no: u32) -> StoreError {
    StoreError::Conflict(format!("step {step_no} of run `{run}` is already recorded"))
}
