//! Sessions: one conversation with one agent.

use crate::{AgentId, Overrides, SessionId, Timestamp};

/// Whether a run is active in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Idle,
    Running,
}

impl SessionStatus {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "idle" => Some(Self::Idle),
            "running" => Some(Self::Running),
            _ => None,
        }
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub agent_id: AgentId,
    pub title: Option<String>,
    /// Changes to the agent's configuration for this session's runs.
    pub overrides: Option<Overrides>,
    pub status: SessionStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What is needed to create a session.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    pub agent_id: AgentId,
    pub title: Option<String>,
    pub overrides: Option<Overrides>,
}

/// A partial update of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPatch {
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    /// `Some(None)` clears the overrides.
    pub overrides: Option<Option<Overrides>>,
}
