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
    }
}
