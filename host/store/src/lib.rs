//! Persistence for Everruns: the [`Store`] trait and its two implementations.
//!
//! Modules:
//! - `error`: [`StoreError`], the one error type of this crate.
//! - `postgres`: [`PgStore`], the production and multi-process store.
//! - `sqlite`: [`SqliteStore`], the embedded single-file default.
//! - `connect`: [`connect`] picks the implementation from a URL and applies migrations.
//! - `codec`: column encodings both backends share (timestamps, JSON, enums) and the
//!   classification of constraint violations.
//! - `bus`: [`EventBus`], tells followers of a session (SSE) that its event log grew: the
//!   events themselves for writes of this process, `NOTIFY`ed log ends for writes of others
//!   on PostgreSQL.
//! - `signal`: [`EventSignal`], wakes workers when a run may have become claimable.
//! - `paging`: turning an over-fetched row list into a [`Page`].
//! - `approval_codec`: the backend-independent parts of tool approvals (events, decision
//!   rules, checks).
//! - `run_codec`: the backend-independent parts of runs, steps and events (the events the
//!   store writes itself, input checks, counter conversions).
//!
//! Both backends keep the same semantics, checked by one conformance suite:
//! - lists are in id order (ids are time ordered) and resume strictly after the cursor;
//! - timestamps are taken in Rust, truncated to microseconds, so what a write returns equals
//!   what a later read returns;
//! - read-then-write operations are single statements or run under a lock (PostgreSQL
//!   advisory lock or row lock, SQLite `BEGIN IMMEDIATE`), so they are safe across processes;
//! - a session's events are numbered by `sessions.last_event_seq`, bumped in the transaction
//!   that inserts them: strictly increasing, without gaps, in commit order;
//! - every write a worker makes for a run is fenced: it carries the [`Lease`] and the store
//!   checks the lease token in the same transaction, writing nothing
//!   ([`StoreError::LeaseLost`]) once another claim has taken the run over. Lease expiry is
//!   judged by the database's clock on PostgreSQL, so several processes agree.
//!
//! Provider API keys and secret values are stored sealed (see `everruns-secrets`): the store
//! keeps the sealed bytes and never sees plaintext; sealing and opening happen above it.
//!
//! This crate knows nothing about HTTP; it is the only crate that contains SQL.

mod approval_codec;
mod bus;
mod codec;
mod connect;
mod error;
mod paging;
mod postgres;
mod run_codec;
mod signal;
mod sqlite;

use async_trait::async_trait;
use std::time::Duration;

use everruns_core::{
    Agent, AgentId, AgentPatch, ApiKey, ApiKeyId, Approval, ApprovalId, ApprovalStatus, Decision,
    Event, KvScope, KvUsage, Lease, Message, NewAgent, NewApiKey, NewApproval, NewEvent,
    NewMessage, NewProvider, NewSession, NewStep, Overrides, Page, PageRequest, Provider,
    ProviderId, ProviderPatch, RecordedStep, Run, RunConfig, RunId, RunStatus, Sealed, SealedOwner,
    SealedRef, Secret, Session, SessionId, SessionPatch, StartedRun, Step, Timestamp, Usage,
};

pub use bus::{Appended, EventBus, SessionFeed};
pub use connect::{StoreConfig, connect};
pub use error::{Result, StoreError};
pub use postgres::PgStore;
pub use signal::EventSignal;
pub use sqlite::SqliteStore;

/// Most owners [`Store::kv_usage_by_owner`] lists.
pub const KV_USAGE_OWNERS: u32 = 10_000;

/// Most unfinished runs [`Store::queue_stats`] reads.
pub const QUEUE_STATS_SCAN: u32 = 100_000;

/// The run queue at one moment, for monitoring (see [`Store::queue_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Runs waiting for a worker: queued, or left with an expired lease (a takeover waits).
    pub waiting: u64,
    /// Runs held by a worker with a live lease.
    pub active: u64,
    /// Since when the longest-waiting run waits (queued, or its lease ran out).
    pub oldest_waiting_since: Option<Timestamp>,
}

/// A worker's claim on the run being started (see [`Store::start_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The worker that will execute the run (the lease owner).
    pub owner: String,
    /// The lease, from the commit.
    pub lease: Duration,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Which backend this is, e.g. "postgres" or "sqlite" (for logs and `/health`).
    fn backend(&self) -> &'static str;

    /// Carries, per session, notices of committed writes that appended events: from this
    /// store value with the events, and on PostgreSQL from other processes (`LISTEN/NOTIFY`,
    /// one coalesced `NOTIFY` per round trip, not one per event) with the new log end only.
    /// SSE follows it, with polling as the fallback.
    fn event_bus(&self) -> &EventBus;

    /// Bumped when a run may have become claimable: after writes of this store value that
    /// queue, finish or cancel a run and, on PostgreSQL, after such writes in any process
    /// (`LISTEN`/`NOTIFY`). Workers wait on it, with polling as the fallback.
    fn run_signal(&self) -> EventSignal;

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
    /// The session's agent and the session's overrides, in one read: what a new run's
    /// configuration is resolved from. An unknown session is [`StoreError::NotFound`].
    async fn session_agent(&self, id: &SessionId) -> Result<(Agent, Option<Overrides>)>;
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
    /// The active (not revoked) key with this hash, recording `last_used_at` (rewritten at most
    /// once a minute: this runs on every request).
    async fn authenticate_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// All keys, revoked ones included, in id order.
    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>>;
    /// Marks the key revoked; NotFound when absent. Revoking twice is fine and keeps the first
    /// `revoked_at`.
    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<ApiKey>;

    // ---- providers ----
    /// Stores a provider under the caller's id; a duplicate name is [`StoreError::Conflict`].
    async fn create_provider(&self, new: NewProvider) -> Result<Provider>;
    /// [`StoreError::NotFound`] when absent.
    async fn get_provider(&self, id: &ProviderId) -> Result<Provider>;
    /// The provider with this exact name; [`StoreError::NotFound`] when none.
    async fn get_provider_by_name(&self, name: &str) -> Result<Provider>;
    /// The provider an agent names: by id when `name_or_id` is a provider id, else by name.
    async fn find_provider(&self, name_or_id: &str) -> Result<Provider> {
        match ProviderId::parse(name_or_id) {
            Ok(id) => self.get_provider(&id).await,
            Err(_) => self.get_provider_by_name(name_or_id).await,
        }
    }
    /// Providers in id (creation) order.
    async fn list_providers(&self, page: &PageRequest) -> Result<Page<Provider>>;
    /// Applies the patch; NotFound / Conflict (name) as above. Bumps `updated_at`.
    async fn update_provider(&self, id: &ProviderId, patch: ProviderPatch) -> Result<Provider>;
    /// [`StoreError::NotFound`] when absent. Agents naming it keep the name (their runs fail).
    async fn delete_provider(&self, id: &ProviderId) -> Result<()>;

    // ---- secrets ----
    /// Creates or replaces the secret `name`; `true` when it was created.
    async fn put_secret(&self, name: &str, value: Sealed) -> Result<(Secret, bool)>;
    /// [`StoreError::NotFound`] when absent.
    async fn get_secret(&self, name: &str) -> Result<Secret>;
    /// Secrets in name (byte) order; the cursor is the last name of the previous page.
    async fn list_secrets(&self, page: &PageRequest) -> Result<Page<Secret>>;
    /// [`StoreError::NotFound`] when absent.
    async fn delete_secret(&self, name: &str) -> Result<()>;

    // ---- sealed values ----
    /// One sealed value for each master key id in use (providers first, then secrets), so
    /// start-up can check every key the database needs is configured and right.
    async fn sealed_samples(&self) -> Result<Vec<SealedRef>>;
    /// Replaces `owner`'s sealed value with `new` only if it is still `current` (compared by
    /// nonce, unique per sealing), without touching `updated_at`: key rotation never
    /// overwrites a value changed meanwhile. `false` when it was changed or deleted.
    async fn replace_sealed(
        &self,
        owner: &SealedOwner,
        current: &Sealed,
        new: &Sealed,
    ) -> Result<bool>;

    // ---- plugin key-value state ----
    // Usage (`kv_usage`) counts a key's and its value's bytes, as the quotas do.
    // Keys are 1..=KV_KEY_MAX bytes without NUL (`StoreError::Invalid` otherwise); values are
    // opaque bytes. An agent's or session's entries are deleted with it.
    /// The value stored under `key`, if any.
    async fn kv_get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`, replacing any previous value. State of an agent or session
    /// that does not exist (any more) is not written: [`StoreError::NotFound`] for it.
    async fn kv_set(&self, scope: &KvScope, key: &str, value: &[u8]) -> Result<()>;
    /// Removes `key`; `true` when it existed.
    async fn kv_delete(&self, scope: &KvScope, key: &str) -> Result<bool>;
    /// Up to `limit` keys starting with `prefix` (taken literally: `%` and `_` are not
    /// wildcards), in byte order.
    async fn kv_list(&self, scope: &KvScope, prefix: &str, limit: u32) -> Result<Vec<String>>;
    /// What `scope` holds, not counting the keys in `excluding` (the keys a caller is about to
    /// rewrite, whose new sizes it counts itself).
    async fn kv_usage(&self, scope: &KvScope, excluding: &[&str]) -> Result<KvUsage>;
    /// What each owner of `plugin`'s state holds, by owner, at most [`KV_USAGE_OWNERS`]
    /// owners (the largest first).
    async fn kv_usage_by_owner(&self, plugin: &str) -> Result<Vec<(String, KvUsage)>>;

    // ---- runs ----
    // A session executes one run at a time, in the order the runs were started; the others
    // wait `queued`. "Active" below means not terminal (queued, running, waiting, cancelling).

    /// Starts a run in one transaction: the user message, a `queued` run, and the events
    /// `message.created` and `run.queued`; the session becomes `running`. When
    /// `idempotency_key` names a run already started in this session, that run and its message
    /// are returned with `created: false` and nothing is written. An unknown session is
    /// [`StoreError::NotFound`].
    ///
    /// With a `claim`, a run that is not queued behind another is claimed in the same commit,
    /// as [`Store::claim_run`] would: `running`, leased to the claim's owner with token 1, and
    /// `run.started` follows `run.queued`. The caller finds that in the returned run
    /// (`lease_owner`), and must then execute it or let its lease expire. A run queued behind
    /// another is started as without a claim.
    async fn start_run(
        &self,
        session: &SessionId,
        content: String,
        idempotency_key: Option<String>,
        claim: Option<&Claim>,
    ) -> Result<StartedRun> {
        self.start_run_with(session, content, idempotency_key, None, None, claim)
            .await
    }

    /// [`Store::start_run`], storing `config` with the run: the configuration it executes
    /// with, resolved by the caller when the run is created (`None` leaves it unrecorded),
    /// and `trace_parent`, the W3C `traceparent` its spans continue (checked:
    /// [`StoreError::Invalid`] unless it is one).
    async fn start_run_with(
        &self,
        session: &SessionId,
        content: String,
        idempotency_key: Option<String>,
        config: Option<&RunConfig>,
        trace_parent: Option<&str>,
        claim: Option<&Claim>,
    ) -> Result<StartedRun>;

    /// Claims the oldest claimable run for `owner`, with a lease of `lease` from now. Claimable
    /// is: `queued` and the first active run of its session, or `running`/`cancelling` with
    /// an expired lease (a takeover). The claim bumps the lease token, moves `queued` to
    /// `running` (a `cancelling` run stays `cancelling`), sets `started_at` once, and on a
    /// takeover increments `recovery_attempts` (reset by [`Store::record_step`]); the caller
    /// decides when too many takeovers without progress fail the run (with
    /// [`Store::finish_run`]). Two claimers never get the same run with the same token.
    /// The same commit appends the `run.started` event (`run_id`, `worker` = `owner`,
    /// `takeover` = whether this claim took the run over).
    async fn claim_run(&self, owner: &str, lease: Duration) -> Result<Option<(Run, Lease)>>;

    /// Extends the lease to `duration` from now. [`StoreError::LeaseLost`] when the run was
    /// taken over or finished.
    async fn renew_lease(&self, lease: &Lease, duration: Duration) -> Result<()>;

    /// Appends events for the leased run (fenced), returning them with their sequence numbers.
    async fn append_events(&self, lease: &Lease, events: Vec<NewEvent>) -> Result<Vec<Event>>;

    /// Records a finished step (fenced), in one transaction: the step row (a second record of
    /// the same `step_no` is [`StoreError::Conflict`]), the step's message if any, the events,
    /// and on the run `steps_completed + 1`, `usage + usage_delta`, `recovery_attempts = 0`.
    async fn record_step(
        &self,
        lease: &Lease,
        step: NewStep,
        events: Vec<NewEvent>,
        usage_delta: Usage,
    ) -> Result<RecordedStep>;

    /// Records the run's last step and ends the run with it, in one transaction: what
    /// [`Store::record_step`] and then [`Store::finish_run`] with `status` (terminal, else
    /// [`StoreError::Invalid`]) and no error would write, as one commit. `events` are the
    /// step's and the run's, in that order.
    async fn record_final_step(
        &self,
        lease: &Lease,
        step: NewStep,
        events: Vec<NewEvent>,
        usage_delta: Usage,
        status: RunStatus,
    ) -> Result<RecordedStep>;

    /// The steps of a run by `step_no`; an unknown run is [`StoreError::NotFound`].
    async fn list_steps(&self, run: &RunId) -> Result<Vec<Step>>;

    /// Ends the run (fenced) with a terminal `status` (anything else is
    /// [`StoreError::Invalid`]) and `error`, appending `events`, releasing the lease, and
    /// setting the session `idle` unless another run of it is active.
    async fn finish_run(
        &self,
        lease: &Lease,
        status: RunStatus,
        error: Option<String>,
        events: Vec<NewEvent>,
    ) -> Result<Run>;

    /// Asks a run to stop. `queued` or `waiting` (no worker holds it): `cancelled` at once,
    /// with a `run.cancelled` event. `running`: `cancelling`, for its worker to finish.
    /// `cancelling` or terminal: returned unchanged. An unknown run is NotFound.
    async fn request_cancel(&self, run: &RunId) -> Result<Run>;

    /// [`StoreError::NotFound`] when absent.
    async fn get_run(&self, run: &RunId) -> Result<Run>;

    /// All runs and all messages of the session, each in id (creation) order, in two reads:
    /// what a worker rebuilds a run's conversation from. An unknown session is NotFound.
    async fn session_history(&self, session: &SessionId) -> Result<(Vec<Run>, Vec<Message>)>;

    /// The runs leased by `owner` that were asked to stop (`cancelling`): how a worker learns
    /// of cancel requests for all its runs with one query.
    async fn cancelling_runs(&self, owner: &str) -> Result<Vec<RunId>>;

    /// The run queue now, in one query over at most [`QUEUE_STATS_SCAN`] unfinished runs
    /// (the oldest first; a queue longer than that reads as that long): what `/metrics`
    /// reports.
    async fn queue_stats(&self) -> Result<QueueStats>;

    /// Runs of a session in id (creation) order; an unknown session is NotFound.
    async fn list_runs(&self, session: &SessionId, page: &PageRequest) -> Result<Page<Run>>;

    /// The session's active run that goes first (the one executing, or next to), if any; an
    /// unknown session is NotFound.
    async fn active_run(&self, session: &SessionId) -> Result<Option<Run>>;

    // ---- tool approval ----
    // A run whose tool calls need a person's decision is parked (`waiting_approval`: no lease,
    // no worker) until every approval of it is decided, expired or cancelled; then it is
    // queued again and any worker continues it from its journal.

    /// Parks the leased run (fenced), in one transaction: inserts `approvals` (one that exists
    /// already, requested by an earlier attempt, stays as it is and is not announced again),
    /// appends `events` and a `tool.approval_requested` event per inserted approval, and sets
    /// the run `waiting_approval` with its lease released. A run asked to stop
    /// (`cancelling`) is cancelled instead. Returns the run as written.
    async fn park_run(
        &self,
        lease: &Lease,
        approvals: Vec<NewApproval>,
        events: Vec<NewEvent>,
    ) -> Result<Run>;

    /// Decides approval `id` of `run`, recording the API key that decided, with a
    /// `tool.approval_resolved` event; when no approval of the run is pending any more, the
    /// run is queued again. [`StoreError::Conflict`] (saying why) when the approval is not
    /// pending, has expired, or its run is not waiting; NotFound for an unknown run, or an
    /// approval that is not the run's. Of two racing decisions (any processes) one wins.
    async fn decide_approval(
        &self,
        run: &RunId,
        id: &ApprovalId,
        decision: Decision,
        reason: Option<&str>,
        decided_by: &ApiKeyId,
    ) -> Result<Approval>;

    /// Expires up to `limit` pending approvals past their deadline, as a rejection decided by
    /// nobody (`expired`), each like [`Store::decide_approval`]; returns how many it expired.
    /// Safe to run in every process at once: each approval expires once.
    async fn expire_approvals(&self, limit: u32) -> Result<u32>;

    /// Approvals in id order (a run's by step), of one run (NotFound when it does not exist)
    /// or all, optionally only those with `status`.
    async fn list_approvals(
        &self,
        run: Option<&RunId>,
        status: Option<ApprovalStatus>,
        page: &PageRequest,
    ) -> Result<Page<Approval>>;

    /// Every approval of `run`, by step: what a worker resuming it reads.
    async fn run_approvals(&self, run: &RunId) -> Result<Vec<Approval>>;

    // ---- events ----

    /// Up to `limit` (clamped to 1..=1000) events of the session with `seq > after_seq`, in
    /// sequence order; an unknown session is NotFound.
    async fn list_events(
        &self,
        session: &SessionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Event>>;

    /// The sequence number of the session's last event (0 when none); NotFound when absent.
    async fn last_event_seq(&self, session: &SessionId) -> Result<i64>;
}
