//! Domain types of Everruns: prefixed ids, agents, sessions, messages, API keys, pages and
//! plugin key-value scopes.
//!
//! This crate does no I/O. Modules:
//! - `id`: validated, prefixed identifiers (`agt_...`, `ses_...`).
//! - `agent`: agents, their model settings and ordered capability list.
//! - `session`: conversations belonging to an agent.
//! - `message`: the conversation's messages.
//! - `api_key`: API key records (only hashes, never the secret).
//! - `page`: cursor pagination shared by every list.
//! - `kv`: scopes of the plugins' durable key-value state.

mod agent;
mod api_key;
mod id;
mod kv;
mod message;
mod page;
mod session;

pub use agent::{
    AGENT_NAME_MAX, Agent, AgentPatch, CapabilityRef, ModelSettings, NewAgent, SYSTEM_PROMPT_MAX,
};
pub use api_key::{ApiKey, NewApiKey};
pub use id::{AgentId, ApiKeyId, IdError, MessageId, SessionId};
pub use kv::{KV_KEY_MAX, KvScope};
pub use message::{Message, MessageRole, NewMessage};
pub use page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest};
pub use session::{NewSession, Session, SessionPatch, SessionStatus};

/// Timestamps are UTC everywhere.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
