//! Events: each session's append-only log, numbered by a per-session sequence without gaps.
//! It is what clients replay over SSE, so the type names are part of the API.

use crate::{RunId, SessionId, Timestamp};

/// The kind of an event; [`EventType::as_str`] is the name clients see (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    RunQueued,
    RunStarted,
    RunCompleted,
    RunFailed,
    RunCancelled,
    MessageCreated,
    /// A chunk of streamed text (possibly several tokens coalesced).
    MessageDelta,
    /// The full text of a message whose deltas were streamed.
    MessageCompleted,
    ToolStarted,
    ToolCompleted,
    ToolFailed,
    /// A tool call a capability's `before-tool` hook stopped: it did not run.
    ToolBlocked,
    /// A capability's hook changed something (a rewrite, a block, added context, a replaced
    /// result); journaled with the step it belongs to.
    HookApplied,
    /// A tool call needs a person's decision; the run waits (`waiting_approval`).
    ToolApprovalRequested,
    /// Someone approved or rejected a call, or its approval expired or was cancelled.
    ToolApprovalResolved,
    StepCompleted,
    Usage,
}

impl EventType {
    /// Every type.
    pub const ALL: [Self; 17] = [
        Self::RunQueued,
        Self::RunStarted,
        Self::RunCompleted,
        Self::RunFailed,
        Self::RunCancelled,
        Self::MessageCreated,
        Self::MessageDelta,
        Self::MessageCompleted,
        Self::ToolStarted,
        Self::ToolCompleted,
        Self::ToolFailed,
        Self::ToolBlocked,
        Self::HookApplied,
        Self::ToolApprovalRequested,
        Self::ToolApprovalResolved,
        Self::StepCompleted,
        Self::Usage,
    ];

    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunQueued => "run.queued",
            Self::RunStarted => "run.started",
            Self::RunCompleted => "run.completed",
            Self::RunFailed => "run.failed",
            Self::RunCancelled => "run.cancelled",
            Self::MessageCreated => "message.created",
            Self::MessageDelta => "message.delta",
            Self::MessageCompleted => "message.completed",
            Self::ToolStarted => "tool.started",
            Self::ToolCompleted => "tool.completed",
            Self::ToolFailed => "tool.failed",
            Self::ToolBlocked => "tool.blocked",
            Self::HookApplied => "hook.applied",
            Self::ToolApprovalRequested => "tool.approval_requested",
            Self::ToolApprovalResolved => "tool.approval_resolved",
            Self::StepCompleted => "step.completed",
            Self::Usage => "usage",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub session_id: SessionId,
    /// 1, 2, 3, ... per session, without gaps, in commit order.
    pub seq: i64,
    pub event_type: EventType,
    pub payload: serde_json::Value,
    /// The run that wrote it, if any.
    pub run_id: Option<RunId>,
    pub created_at: Timestamp,
}

/// An event to append; the store assigns the sequence number, run and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: EventType,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn new(event_type: EventType, payload: serde_json::Value) -> Self {
        Self {
            event_type,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones_and_round_trip() {
        let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "run.queued",
                "run.started",
                "run.completed",
                "run.failed",
                "run.cancelled",
                "message.created",
                "message.delta",
                "message.completed",
                "tool.started",
                "tool.completed",
                "tool.failed",
                "tool.blocked",
                "hook.applied",
                "tool.approval_requested",
                "tool.approval_resolved",
                "step.completed",
                "usage",
            ]
        );
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("run.unknown"), None);
    }
}
