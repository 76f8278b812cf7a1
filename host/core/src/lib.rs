//! Domain types of Everruns: prefixed ids, agents, sessions, messages, runs, steps, events,
//! API keys, providers, secrets, pages and plugin key-value scopes.
//!
//! This crate does no I/O. Modules:
//! - `id`: validated, prefixed identifiers (`agt_...`, `ses_...`).
//! - `agent`: agents, their model settings and ordered capability list.
//! - `session`: conversations belonging to an agent.
//! - `message`: the conversation's messages.
//! - `run`: runs (one per user message), their status, usage and the worker's lease.
//! - `step`: the journal of a run, one exactly-once record per LLM or tool call.
//! - `event`: the per-session event log that clients replay over SSE.
//! - `api_key`: API key records (only hashes, never the secret) and their roles.
//! - `provider`: LLM providers configured through the API (key sealed).
//! - `secret`: named secrets for plugins (value sealed).
//! - `sealed`: the stored form of an encrypted value and the row it belongs to.
//! - `page`: cursor pagination shared by every list.
//! - `kv`: scopes of the plugins' durable key-value state.
//! - `approval`: tool approval policies and the approval records of runs waiting for them.
//! - `metrics`: the Prometheus metrics every process exposes (names, labels, help).
//! - `overrides`: configuration overrides of sessions and messages, and the configuration
//!   snapshot each run executes with.

mod agent;
mod api_key;
mod approval;
mod event;
mod id;
mod kv;
mod message;
pub mod metrics;
mod overrides;
mod page;
mod provider;
mod run;
mod sealed;
mod secret;
mod session;
mod step;

pub use agent::{
    AGENT_NAME_MAX, Agent, AgentPatch, CapabilityRef, ModelSettings, NewAgent, SYSTEM_PROMPT_MAX,
};
pub use api_key::{ApiKey, NewApiKey, Role};
pub use approval::{
    APPROVAL_PATTERNS_MAX, APPROVAL_TIMEOUT_DEFAULT, APPROVAL_TIMEOUT_MAX, Approval,
    ApprovalMatcher, ApprovalStatus, DECISION_REASON_MAX, Decision, NewApproval, ToolApproval,
    fingerprint,
};
pub use event::{Event, EventType, NewEvent};
pub use id::{AgentId, ApiKeyId, ApprovalId, IdError, MessageId, ProviderId, RunId, SessionId};
pub use kv::{KV_KEY_MAX, KvOwnerRow, KvScope, KvUsage, KvWrite};
pub use message::{Message, MessageRole, NewMessage};
pub use overrides::{CapabilityOverride, Overrides, RunConfig};
pub use page::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest};
pub use provider::{NewProvider, PROVIDER_NAME_MAX, Provider, ProviderKind, ProviderPatch};
pub use run::{Lease, Run, RunStatus, StartedRun, Usage};
pub use sealed::{Sealed, SealedOwner, SealedRef};
pub use secret::{SECRET_NAME_MAX, Secret, is_valid_secret_name};
pub use session::{NewSession, Session, SessionPatch, SessionStatus};
pub use step::{NewStep, RecordedStep, Step, StepKind, StepMessage, StepStatus};

/// Timestamps are UTC everywhere.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
