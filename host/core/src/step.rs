//! Steps: the journal of a run. A stored step is the exactly-once record that the step's work
//! (one LLM call or one tool call) is done; recovery resumes after the last one.

use crate::{Event, Message, MessageId, MessageRole, RunId, Timestamp};

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    /// One LLM call; its output is the full response, tool calls included.
    Llm,
    /// One tool call into a capability.
    Tool,
}

impl StepKind {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Tool => "tool",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "llm" => Some(Self::Llm),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }
}

/// How a recorded step ended. A failed tool call is still a finished step: its error is the
/// result the model sees, and it is not run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepStatus {
    Completed,
    Failed,
}

impl StepStatus {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A stored step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub run_id: RunId,
    /// Position in the run, from 0; unique per run.
    pub step_no: u32,
    pub kind: StepKind,
    pub input: serde_json::Value,
    pub output: serde_json::Value,
    pub status: StepStatus,
    /// 1 for the first execution; more when the step ran again after a takeover.
    pub attempt: u32,
    /// The capability a tool step ran in.
    pub capability_id: Option<String>,
    /// The digest of the component a tool step ran.
    pub digest: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// A finished step to record, with the message it adds to the conversation, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    pub step_no: u32,
    pub kind: StepKind,
    pub input: serde_json::Value,
    pub output: serde_json::Value,
    pub status: StepStatus,
    pub attempt: u32,
    pub capability_id: Option<String>,
    pub digest: Option<String>,
    pub started_at: Timestamp,
    /// Appended to the run's session in the same transaction as the step.
    pub message: Option<StepMessage>,
    /// Plugin key-value writes made by the step's calls (tool call, hooks), committed in the
    /// same transaction as the step, so a call re-run after a crash never applies them twice.
    pub kv_writes: Vec<crate::KvWrite>,
}

/// A conversation message written together with a step (the assistant's answer, a tool
/// result). The caller picks the id so that the step's events can name the message.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMessage {
    pub id: MessageId,
    pub role: MessageRole,
    pub content: String,
    pub metadata: serde_json::Value,
}

/// What recording a step wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedStep {
    pub step: Step,
    pub message: Option<Message>,
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip() {
        for kind in [StepKind::Llm, StepKind::Tool] {
            assert_eq!(StepKind::parse(kind.as_str()), Some(kind));
        }
        for status in [StepStatus::Completed, StepStatus::Failed] {
            assert_eq!(StepStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(StepKind::parse("LLM"), None);
        assert_eq!(StepStatus::parse("done"), None);
    }
}
