//! Scopes of the durable key-value state plugins keep between calls.

use std::fmt;

use crate::{AgentId, SessionId};

/// Longest accepted key, in bytes.
pub const KV_KEY_MAX: usize = 512;

/// Where a plugin's key-value entries live: the plugin's id plus an owner.
///
/// Entries of different plugins, and of different owners of one plugin, never see each other.
/// The owner is `global`, `agent:<agent id>` or `session:<session id>`; build it with the
/// constructors rather than by hand so the spelling stays uniform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvScope {
    /// Capability (plugin) id.
    pub plugin: String,
    /// `global`, `agent:agt_...` or `session:ses_...`.
    pub owner: String,
}

impl KvScope {
    /// The owner string of state shared by every agent and session.
    pub const GLOBAL_OWNER: &'static str = "global";

    /// State of `plugin` shared across the whole server.
    pub fn global(plugin: impl Into<String>) -> Self {
        Self {
            plugin: plugin.into(),
            owner: Self::GLOBAL_OWNER.to_owned(),
        }
    }

    /// State of `plugin` belonging to one agent.
    pub fn agent(plugin: impl Into<String>, agent: &AgentId) -> Self {
        Self {
            plugin: plugin.into(),
            owner: Self::agent_owner(agent),
        }
    }

    /// State of `plugin` belonging to one session.
    pub fn session(plugin: impl Into<String>, session: &SessionId) -> Self {
        Self {
            plugin: plugin.into(),
            owner: Self::session_owner(session),
        }
    }

    /// The owner string of the state of the agent with id `agent` (in any plugin).
    pub fn agent_owner(agent: impl fmt::Display) -> String {
        format!("agent:{agent}")
    }

    /// The owner string of the state of the session with id `session` (in any plugin).
    pub fn session_owner(session: impl fmt::Display) -> String {
        format!("session:{session}")
    }

    /// The agent or session whose state this is; a store writes state only while that row
    /// exists, so nothing is left behind by a write that races the owner's delete.
    pub fn owner_row(&self) -> KvOwnerRow<'_> {
        if let Some(id) = self.owner.strip_prefix("agent:") {
            KvOwnerRow::Agent(id)
        } else if let Some(id) = self.owner.strip_prefix("session:") {
            KvOwnerRow::Session(id)
        } else {
            KvOwnerRow::None
        }
    }
}

/// One plugin key-value write, committed with a journal step ([`crate::NewStep::kv_writes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// Whose state.
    pub scope: KvScope,
    /// The key.
    pub key: String,
    /// The new value; `None` deletes the key.
    pub value: Option<Vec<u8>>,
}

/// How much state one scope holds: its keys, and their bytes (keys and values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    /// Number of keys.
    pub keys: u64,
    /// Bytes of keys and values together.
    pub bytes: u64,
}

/// The row a [`KvScope`]'s state belongs to ([`KvScope::owner_row`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOwnerRow<'a> {
    /// Global state: no row.
    None,
    /// The agent with this id.
    Agent(&'a str),
    /// The session with this id.
    Session(&'a str),
}

impl<'a> KvOwnerRow<'a> {
    /// The owning agent's id, if the state is an agent's.
    pub fn agent(self) -> Option<&'a str> {
        match self {
            Self::Agent(id) => Some(id),
            _ => None,
        }
    }

    /// The owning session's id, if the state is a session's.
    pub fn session(self) -> Option<&'a str> {
        match self {
            Self::Session(id) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Display for KvScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.plugin, self.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_spelled_uniformly() {
        let agent = AgentId::new();
        let session = SessionId::new();
        assert_eq!(KvScope::global("p").owner, "global");
        assert_eq!(KvScope::agent("p", &agent).owner, format!("agent:{agent}"));
        assert_eq!(
            KvScope::session("p", &session).owner,
            format!("session:{session}")
        );
        assert_eq!(KvScope::global("clock").to_string(), "clock@global");
        assert_eq!(KvScope::global("p").owner_row(), KvOwnerRow::None);
        let agent_owner = agent.to_string();
        assert_eq!(
            KvScope::agent("p", &agent).owner_row(),
            KvOwnerRow::Agent(&agent_owner)
        );
        let session_owner = session.to_string();
        assert_eq!(
            KvScope::session("p", &session).owner_row().session(),
            Some(session_owner.as_str())
        );
    }
}
