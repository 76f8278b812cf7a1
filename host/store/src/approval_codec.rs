//! The backend-independent parts of tool approvals: the events the store writes for them,
//! the rules a decision must pass, and input checks. The two backends differ only in SQL.

use everruns_core::{
    ApiKeyId, Approval, ApprovalStatus, DECISION_REASON_MAX, Decision, EventType, NewApproval,
    NewEvent, RunId, RunStatus, Timestamp,
};
use serde_json::json;

use crate::codec::reject_nul;
use crate::{Result, StoreError};

/// Approval columns, the same on both backends except for how timestamps are read.
macro_rules! approval_columns {
    () => {
        "id, run_id, session_id, step_no, tool_call_id, name, capability, arguments, \
         arguments_sha256, reason, requested_by, status, decision_reason, decided_by, \
         decided_at, expires_at, created_at"
    };
}
pub(crate) use approval_columns;

/// The `tool.approval_requested` event of an approval just inserted for `run`.
pub(crate) fn requested_event(run: &RunId, new: &NewApproval) -> NewEvent {
    let arguments = serde_json::from_str::<serde_json::Value>(&new.arguments)
        .unwrap_or_else(|_| json!(new.arguments));
    NewEvent::new(
        EventType::ToolApprovalRequested,
        json!({
            "approval_id": new.id.as_str(),
            "run_id": run.as_str(),
            "step_no": new.step_no,
            "tool_call_id": new.tool_call_id,
            "name": new.name,
            "capability": new.capability,
            "arguments": arguments,
            "reason": new.reason,
            "requested_by": new.requested_by,
            "expires_at": new.expires_at,
        }),
    )
}

/// The `tool.approval_resolved` event of a decided (expired, cancelled) approval.
pub(crate) fn resolved_event(approval: &Approval) -> NewEvent {
    NewEvent::new(
        EventType::ToolApprovalResolved,
        json!({
            "approval_id": approval.id.as_str(),
            "run_id": approval.run_id.as_str(),
            "step_no": approval.step_no,
            "tool_call_id": approval.tool_call_id,
            "name": approval.name,
            "decision": approval.status.as_str(),
            "reason": approval.decision_reason,
            "decided_by": approval.decided_by.as_ref().map(|k| k.as_str()),
        }),
    )
}

/// Text fields of approvals to request: no NUL (neither backend stores it in text).
pub(crate) fn check_new(approvals: &[NewApproval]) -> Result<()> {
    for a in approvals {
        for (field, value) in [
            ("an approval's tool call id", a.tool_call_id.as_str()),
            ("an approval's tool name", a.name.as_str()),
            ("an approval's arguments", a.arguments.as_str()),
            ("an approval's reason", a.reason.as_str()),
            ("an approval's requester", a.requested_by.as_str()),
        ] {
            reject_nul(field, value)?;
        }
        if let Some(capability) = &a.capability {
            reject_nul("an approval's capability", capability)?;
        }
    }
    Ok(())
}

/// Whether `approval` of a run in `run_status` may be decided at `now`: pending, not expired,
/// and the run waits for it. The conflict says why not.
fn check_decidable(approval: &Approval, run_status: RunStatus, now: Timestamp) -> Result<()> {
    match approval.status {
        ApprovalStatus::Pending => {}
        status => {
            let by = match &approval.decided_by {
                Some(key) => format!(" by API key `{key}`"),
                None => String::new(),
            };
            let at = approval
                .decided_at
                .map(|t| format!(" at {}", t.to_rfc3339()))
                .unwrap_or_default();
            return Err(StoreError::Conflict(format!(
                "approval `{}` was already decided: {}{by}{at}",
                approval.id,
                status.as_str()
            )));
        }
    }
    if approval.expires_at <= now {
        return Err(StoreError::Conflict(format!(
            "approval `{}` expired at {}",
            approval.id,
            approval.expires_at.to_rfc3339()
        )));
    }
    if run_status != RunStatus::WaitingApproval {
        return Err(StoreError::Conflict(format!(
            "run `{}` is not waiting for approval (it is {})",
            approval.run_id,
            run_status.as_str()
        )));
    }
    Ok(())
}

/// A decision's reason: no NUL, at most [`DECISION_REASON_MAX`] characters.
pub(crate) fn check_reason(reason: Option<&str>) -> Result<()> {
    if let Some(reason) = reason {
        reject_nul("a decision's reason", reason)?;
        if reason.chars().count() > DECISION_REASON_MAX {
            return Err(StoreError::Invalid(format!(
                "a decision's reason must be at most {DECISION_REASON_MAX} characters"
            )));
        }
    }
    Ok(())
}

/// What resolving an approval does.
pub(crate) enum Resolve<'a> {
    /// A person's decision: the approval must be pending, not expired, its run waiting.
    Decide {
        decision: Decision,
        reason: Option<&'a str>,
        by: &'a ApiKeyId,
    },
    /// The sweeper: only a pending approval past its deadline; anything else is left alone.
    Expire,
}

/// What a resolution writes: the approval's new status, the reason, and who decided.
pub(crate) type Resolution<'a> = (ApprovalStatus, Option<String>, Option<&'a ApiKeyId>);

/// What resolving `approval` (of a run in `run_status`) at `now` writes: its new status, the
/// reason and who decided. A decision that may not be made is a conflict saying why; an
/// expiry with nothing to do is `None`.
pub(crate) fn resolution<'a>(
    how: &Resolve<'a>,
    approval: &Approval,
    run_status: RunStatus,
    now: Timestamp,
) -> Result<Option<Resolution<'a>>> {
    match how {
        Resolve::Decide {
            decision,
            reason,
            by,
        } => {
            check_decidable(approval, run_status, now)?;
            Ok(Some((
                decision.status(),
                reason.map(str::to_owned),
                Some(*by),
            )))
        }
        Resolve::Expire => Ok((approval.status == ApprovalStatus::Pending
            && approval.expires_at <= now)
            .then(|| {
                (
                    ApprovalStatus::Expired,
                    Some("nobody decided before the approval expired".to_owned()),
                    None,
                )
            })),
    }
}

/// The stored status of an approval.
pub(crate) fn parse_status(value: &str) -> Result<ApprovalStatus> {
    ApprovalStatus::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: "approval status",
        detail: format!("unknown status `{value}`"),
    })
}
