//! Runs: the agent's work in answer to one user message, and the lease a worker holds on one.

use crate::{Message, MessageId, RunId, SessionId, Timestamp};

/// Where a run is in its life. A session runs one run at a time; later runs wait `Queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting for a worker (or for an earlier run of its session to finish).
    Queued,
    /// A worker holds its lease and is executing steps.
    Running,
    /// Parked until people decide on its tool calls that need approval (no worker, no lease);
    /// holds its session's turn. Stored as `waiting`, the name the schema reserved for it.
    WaitingApproval,
    /// The model answered; terminal.
    Completed,
    /// Gave up with an error; terminal.
    Failed,
    /// Cancel was requested while a worker held it; the worker finishes it as `Cancelled`.
    Cancelling,
    /// Cancelled; terminal.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::WaitingApproval,
        Self::Completed,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
    ];

    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::WaitingApproval => "waiting_approval",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Whether the run is over: nothing will change it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Tokens spent, as reported by the LLM provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// The sum of two usages (saturating: a counter never wraps).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
        }
    }

    /// Whether nothing was spent.
    pub fn is_zero(self) -> bool {
        self == Usage::default()
    }
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: RunId,
    pub session_id: SessionId,
    pub status: RunStatus,
    /// The user message that started the run.
    pub trigger_message_id: MessageId,
    /// The client's `Idempotency-Key`, unique per session.
    pub idempotency_key: Option<String>,
    /// Which worker holds (or last held) the lease; `None` when no worker does.
    pub lease_owner: Option<String>,
    /// The fencing counter: bumped by every claim, checked by every fenced write.
    pub lease_token: i64,
    /// When the current lease runs out (by the database's clock on PostgreSQL).
    pub lease_expires_at: Option<Timestamp>,
    /// Takeovers of an expired lease since the last completed step.
    pub recovery_attempts: u32,
    /// Completed steps (the exactly-once records in `steps`).
    pub steps_completed: u32,
    /// Why the run failed.
    pub error: Option<String>,
    /// Tokens spent by all of the run's steps.
    pub usage: Usage,
    pub created_at: Timestamp,
    /// When a worker first claimed it.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal status.
    pub finished_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// The configuration the run executes with, resolved when it was created; `None` for
    /// runs created before configurations were recorded (they use the agent's at execution).
    pub config: Option<crate::RunConfig>,
    /// The W3C `traceparent` the run's spans continue (the request that started it), so a
    /// run taken over by another process stays in one trace; `None` when tracing was off.
    pub trace_parent: Option<String>,
}

/// The lease a worker holds on a run. Every write the worker makes for the run carries it, and
/// the store refuses the write (`LeaseLost`) once another claim has bumped the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub run_id: RunId,
    pub owner: String,
    pub token: i64,
}

/// What starting a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedRun {
    pub run: Run,
    /// The user message that triggered it.
    pub message: Message,
    /// `false` when the idempotency key matched an existing run, which is returned instead.
    pub created: bool,
    /// The earliest unfinished run of the session that this one waits for, if any.
    pub queued_behind: Option<RunId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_know_when_they_are_final() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("done"), None);
        let terminal: Vec<_> = RunStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                RunStatus::Completed,
                RunStatus::Failed,
                RunStatus::Cancelled
            ]
        );
    }

    #[test]
    fn usage_adds_up_without_wrapping() {
        let a = Usage {
            input_tokens: 3,
            output_tokens: u64::MAX,
        };
        let sum = a.plus(Usage {
            input_tokens: 4,
            output_tokens: 1,
        });
        assert_eq!(sum.input_tokens, 7);
        assert_eq!(sum.output_tokens, u64::MAX);
        assert!(Usage::default().is_zero());
    }
}
