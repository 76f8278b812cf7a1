//! Tool approvals on SQLite: parking a run, deciding, expiring and cancelling its approvals,
//! and listing them. Every write is one `BEGIN IMMEDIATE` transaction (the database's single
//! write lock), so of two racing deciders the second sees the first one's decision.

use everruns_core::{
    ApiKeyId, Approval, ApprovalId, ApprovalStatus, Lease, NewApproval, NewEvent, Page,
    PageRequest, Run, RunId, RunStatus, SessionId, Timestamp,
};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};

use super::runs::{
    fenced, insert_events, run_columns, run_from_row, settle_session_status, take_seqs,
};
use super::{optional_timestamp, timestamp};
use crate::approval_codec::{self, Resolve, approval_columns};
use crate::codec::{self, parse_id, timestamp_to_text};
use crate::run_codec::{self, WAITING};
use crate::{Result, StoreError, paging};

fn approval_from_row(row: &SqliteRow) -> Result<Approval> {
    let decided_by: Option<&str> = row.try_get("decided_by")?;
    Ok(Approval {
        id: parse_id("approval id", row.try_get("id")?, ApprovalId::parse)?,
        run_id: parse_id("run id", row.try_get("run_id")?, RunId::parse)?,
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        step_no: run_codec::to_u32("approval step", row.try_get("step_no")?)?,
        tool_call_id: row.try_get("tool_call_id")?,
        name: row.try_get("name")?,
        capability: row.try_get("capability")?,
        arguments: row.try_get("arguments")?,
        arguments_sha256: row.try_get("arguments_sha256")?,
        reason: row.try_get("reason")?,
        requested_by: row.try_get("requested_by")?,
        status: approval_codec::parse_status(row.try_get("status")?)?,
        decision_reason: row.try_get("decision_reason")?,
        decided_by: decided_by
            .map(|id| parse_id("API key id", id, ApiKeyId::parse))
            .transpose()?,
        decided_at: optional_timestamp(row, "decided_at")?,
        expires_at: timestamp(row, "expires_at")?,
        created_at: timestamp(row, "created_at")?,
    })
}

/// Writes `events` for the run's session in the transaction, numbered after its log.
async fn log(
    conn: &mut SqliteConnection,
    run: &Run,
    events: Vec<NewEvent>,
    now: Timestamp,
) -> Result<Vec<everruns_core::Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let last = take_seqs(conn, &run.session_id, events.len())
        .await?
        .ok_or_else(|| StoreError::not_found("session", &run.session_id))?;
    insert_events(conn, &run.session_id, last, Some(&run.id), events, now).await
}

pub(super) async fn park_run(
    pool: &SqlitePool,
    lease: &Lease,
    approvals: Vec<NewApproval>,
    events: Vec<NewEvent>,
) -> Result<(Run, Vec<everruns_core::Event>)> {
    approval_codec::check_new(&approvals)?;
    let now = codec::now();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE ",
        fenced!(),
        ""
    ))
    .bind(lease.run_id.as_str())
    .bind(lease.token)
    .bind(&lease.owner)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(run_codec::lease_lost(lease));
    };
    let run = run_from_row(&row)?;
    if run.status == RunStatus::Cancelling {
        // Asked to stop: cancelled instead of parked.
        let row = sqlx::query(concat!(
            "UPDATE runs SET status = 'cancelled', finished_at = $2, updated_at = $2, \
               lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 RETURNING ",
            run_columns!()
        ))
        .bind(run.id.as_str())
        .bind(timestamp_to_text(&now))
        .fetch_one(&mut *tx)
        .await?;
        let run = run_from_row(&row)?;
        let written = log(&mut tx, &run, vec![run_codec::cancelled_event(&run)], now).await?;
        settle_session_status(&mut tx, &run.session_id).await?;
        tx.commit().await?;
        return Ok((run, written));
    }
    let mut events = events;
    for new in &approvals {
        // An approval requested by an earlier attempt stays as it is (and is not announced
        // again).
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, run_id, session_id, step_no, tool_call_id, name, \
               capability, arguments, arguments_sha256, reason, requested_by, status, \
               expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13) \
             ON CONFLICT DO NOTHING",
        )
        .bind(new.id.as_str())
        .bind(run.id.as_str())
        .bind(run.session_id.as_str())
        .bind(i64::from(new.step_no))
        .bind(&new.tool_call_id)
        .bind(&new.name)
        .bind(new.capability.as_deref())
        .bind(&new.arguments)
        .bind(&new.arguments_sha256)
        .bind(&new.reason)
        .bind(&new.requested_by)
        .bind(timestamp_to_text(&new.expires_at))
        .bind(timestamp_to_text(&now))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            events.push(approval_codec::requested_event(&run.id, new));
        }
    }
    let row = sqlx::query(concat!(
        "UPDATE runs SET status = $2, lease_owner = NULL, lease_expires_at = NULL, \
           updated_at = $3 \
         WHERE id = $1 RETURNING ",
        run_columns!()
    ))
    .bind(run.id.as_str())
    .bind(WAITING)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let run = run_from_row(&row)?;
    let written = log(&mut tx, &run, events, now).await?;
    tx.commit().await?;
    Ok((run, written))
}

/// Resolves approval `id` of `run` in one transaction: the decision, its
/// `tool.approval_resolved` event, and when none of the run's approvals is pending any more,
/// the run queued again for any worker. `None`: an expiry that had nothing to do.
pub(super) async fn resolve(
    pool: &SqlitePool,
    run: &RunId,
    id: &ApprovalId,
    how: Resolve<'_>,
) -> Result<Option<(Approval, Vec<everruns_core::Event>)>> {
    if let Resolve::Decide { reason, .. } = &how {
        approval_codec::check_reason(*reason)?;
    }
    let now = codec::now();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1"
    ))
    .bind(run.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(StoreError::not_found("run", run));
    };
    let locked = run_from_row(&row)?;
    let row = sqlx::query(concat!(
        "SELECT ",
        approval_columns!(),
        " FROM approvals WHERE id = $1 AND run_id = $2"
    ))
    .bind(id.as_str())
    .bind(run.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(StoreError::not_found("approval", id));
    };
    let approval = approval_from_row(&row)?;
    let Some((status, reason, by)) =
        approval_codec::resolution(&how, &approval, locked.status, now)?
    else {
        return Ok(None);
    };
    let row = sqlx::query(concat!(
        "UPDATE approvals SET status = $2, decision_reason = $3, decided_by = $4, \
           decided_at = $5 WHERE id = $1 RETURNING ",
        approval_columns!()
    ))
    .bind(id.as_str())
    .bind(status.as_str())
    .bind(reason.as_deref())
    .bind(by.map(ApiKeyId::as_str))
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let approval = approval_from_row(&row)?;
    let written = log(
        &mut tx,
        &locked,
        vec![approval_codec::resolved_event(&approval)],
        now,
    )
    .await?;
    if locked.status == RunStatus::WaitingApproval {
        sqlx::query(
            "UPDATE runs SET status = 'queued', updated_at = $2 \
             WHERE id = $1 AND NOT EXISTS \
               (SELECT 1 FROM approvals WHERE run_id = $1 AND status = 'pending')",
        )
        .bind(run.as_str())
        .bind(timestamp_to_text(&now))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some((approval, written)))
}

/// Pending approvals past their deadline (at most `limit`), oldest deadline first.
pub(super) async fn due(pool: &SqlitePool, limit: u32) -> Result<Vec<(RunId, ApprovalId)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT run_id, id FROM approvals WHERE status = 'pending' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2",
    )
    .bind(timestamp_to_text(&codec::now()))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|(run, id)| {
            Ok((
                parse_id("run id", run, RunId::parse)?,
                parse_id("approval id", id, ApprovalId::parse)?,
            ))
        })
        .collect()
}

/// Cancels the pending approvals of `run` (being cancelled in the caller's transaction,
/// which holds its row): their `tool.approval_resolved` events.
pub(super) async fn cancel_pending(
    conn: &mut SqliteConnection,
    run: &RunId,
    now: Timestamp,
) -> Result<Vec<NewEvent>> {
    let rows = sqlx::query(concat!(
        "UPDATE approvals SET status = 'cancelled', decision_reason = 'the run was cancelled', \
           decided_at = $2 WHERE run_id = $1 AND status = 'pending' RETURNING ",
        approval_columns!()
    ))
    .bind(run.as_str())
    .bind(now)
    .fetch_all(conn)
    .await?;
    let mut approvals = rows
        .iter()
        .map(approval_from_row)
        .collect::<Result<Vec<_>>>()?;
    approvals.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(approvals
        .iter()
        .map(approval_codec::resolved_event)
        .collect())
}

pub(super) async fn list(
    pool: &SqlitePool,
    run: Option<&RunId>,
    status: Option<ApprovalStatus>,
    page: &PageRequest,
) -> Result<Page<Approval>> {
    let mut conn = pool.acquire().await?;
    if let Some(run) = run {
        // Tells "none yet" from "no such run".
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM runs WHERE id = $1")
            .bind(run.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found("run", run));
        }
    }
    let (run, status) = (run.map(RunId::as_str), status.map(ApprovalStatus::as_str));
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM approvals \
         WHERE ($1 IS NULL OR run_id = $1) AND ($2 IS NULL OR status = $2)",
    )
    .bind(run)
    .bind(status)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        approval_columns!(),
        " FROM approvals \
         WHERE ($1 IS NULL OR run_id = $1) AND ($2 IS NULL OR status = $2) \
           AND id > $3 ORDER BY id LIMIT $4"
    ))
    .bind(run)
    .bind(status)
    .bind(page.after.as_deref().unwrap_or(""))
    .bind(paging::fetch_limit(page))
    .fetch_all(&mut *conn)
    .await?;
    let items = rows
        .iter()
        .map(approval_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(paging::finish(page, items, total, |a| a.id.to_string()))
}

pub(super) async fn of_run(pool: &SqlitePool, run: &RunId) -> Result<Vec<Approval>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        approval_columns!(),
        " FROM approvals WHERE run_id = $1 ORDER BY step_no"
    ))
    .bind(run.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter().map(approval_from_row).collect()
}
