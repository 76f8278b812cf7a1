//! Persistence for Everruns: the [`Store`] trait and its two implementations.
//!
//! Modules:
//! - `error`: [`StoreError`], the one error type of this crate.
//! - `postgres`: [`PgStore`], the production and multi-process store.
//! - `sqlite`: [`SqliteStore`], the embedded single-file default.
//! - `connect`: [`connect`] picks the implementation from a URL and applies migrations.
//! - `codec`: column encodings both backends share (timestamps, JSON, enums) and the
//!   classification of constraint violations.
//! - `paging`: turning an over-fetched row list into a [`Page`].
//!
//! Both backends keep the same semantics, checked by one conformance suite:
//! - lists are in id order (ids are time ordered) and resume strictly after the cursor;
//! - timestamps are taken in Rust, truncated to microseconds, so what a write returns equals
//!   what a later read returns;
//! - read-then-write operations are single statements or run under a lock (PostgreSQL
//!   advisory lock, SQLite `BEGIN IMMEDIATE`), so they are safe across processes.
//!
//! This crate knows nothing about HTTP; it is the only crate that contains SQL.

mod codec;
mod connect;
mod error;
mod paging;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use everruns_core::{
    Agent, AgentId, AgentPatch, ApiKey, ApiKeyId, KvScope, Message, NewAgent, NewApiKey,
    NewMessage, NewSession, Page, PageRequest, Session, SessionId, SessionPatch,
};

pub use connect::{StoreConfig, connect};
pub use error::{Result, StoreError};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Everything the server persists. Both implementations pass the same conformance suite
/// (`tests/conformance.rs`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Which backend this is, e.g. "postgres" or "sqlite" (for logs and `/health`).
    fn backend(&self) -> &'static str;

    /// Cheap round trip to the database.
    async fn ping(&self) -> Result<()>;

    // ---- agents ----
    /// Creates an agent; a duplicate name is [`StoreError::Conflict`].
    async fn create_agent(&self, new: NewAgent) -> Result<Agent>;
    /// [`StoreError::NotFound`] when absent.
    async fn get_agent(&self, id: &AgentId) -> Result<Agent>;
    /// Agents in id (creation) order.
    async fn list_agents(&self, page: &PageRequest) -> Result<Page<Agent>>;
    /// Applies the patch; NotFound / Conflict (name) as above. Bumps `updated_at`.
    async fn update_agent(&self, id: &AgentId, patch: AgentPatch) -> Result<Agent>;
    /// Deletes the agent with its sessions and their messages.
    async fn delete_agent(&self, id: &AgentId) -> Result<()>;

    // ---- sessions ----
    /// Creates a session; an unknown agent is [`StoreError::NotFound`].
    async fn create_session(&self, new: NewSession) -> Result<Session>;
    async fn get_session(&self, id: &SessionId) -> Result<Session>;
    /// Sessions in id order, optionally only those of one agent.
    async fn list_sessions(
        &self,
        agent: Option<&AgentId>,
        page: &PageRequest,
    ) -> Result<Page<Session>>;
    async fn update_session(&self, id: &SessionId, patch: SessionPatch) -> Result<Session>;
    /// Deletes the session and its messages.
    async fn delete_session(&self, id: &SessionId) -> Result<()>;

    // ---- messages ----
    /// Appends a message; an unknown session is [`StoreError::NotFound`].
    async fn append_message(&self, new: NewMessage) -> Result<Message>;
    /// Messages of a session in id order; an unknown session is [`StoreError::NotFound`].
    async fn list_messages(&self, session: &SessionId, page: &PageRequest)
    -> Result<Page<Message>>;

    // ---- API keys ----
    /// Stores a key record; a duplicate name among keys is [`StoreError::Conflict`].
    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKey>;
    /// Creates the key only if no API key exists at all (first start). Returns `None` when keys
    /// already exist. Safe against two processes starting at once.
    async fn create_first_api_key(&self, new: NewApiKey) -> Result<Option<ApiKey>>;
    /// The active (not revoked) key with this hash, recording `last_used_at`.
    async fn authenticate_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// All keys, revoked ones included, in id order.
    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>>;
    /// Marks the key revoked; NotFound when absent. Revoking twice is fine and keeps the first
    /// `revoked_at`.
    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<ApiKey>;

    // ---- plugin key-value state ----
    // Keys are 1..=KV_KEY_MAX bytes without NUL (`StoreError::Invalid` otherwise); values are
    // opaque bytes. Entries are not deleted with the agent or session their owner names.
    /// The value stored under `key`, if any.
    async fn kv_get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`, replacing any previous value.
    async fn kv_set(&self, scope: &KvScope, key: &str, value: &[u8]) -> Result<()>;
    /// Removes `key`; `true` when it existed.
    async fn kv_delete(&self, scope: &KvScope, key: &str) -> Result<bool>;
    /// Up to `limit` keys starting with `prefix` (taken literally: `%` and `_` are not
    /// wildcards), in byte order.
    async fn kv_list(&self, scope: &KvScope, prefix: &str, limit: u32) -> Result<Vec<String>>;
}
