//! PostgreSQL implementation of the store.
//!
//! JSON documents are bound as text and cast to `json` in SQL, and read back with `::text`,
//! so the stored text is exactly what was written. Timestamps are `timestamptz` (microsecond
//! precision, matching [`codec::now`]). Runs, steps and events live in the `runs` submodule,
//! providers and secrets in `vault`.

// Before the submodules, which read messages too.
macro_rules! message_columns {
    () => {
        "id, session_id, role, content, metadata::text AS metadata, created_at"
    };
}

mod approvals;
mod journal;
mod runs;
mod vault;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use everruns_core::{
    Agent, AgentId, AgentPatch, ApiKey, ApiKeyId, Approval, ApprovalId, ApprovalStatus, Decision,
    Event, KvScope, KvUsage, Lease, Message, MessageId, NewAgent, NewApiKey, NewApproval, NewEvent,
    NewMessage, NewProvider, NewSession, NewStep, Overrides, Page, PageRequest, Provider,
    ProviderId, ProviderPatch, RecordedStep, Run, RunConfig, RunId, RunStatus, Sealed, SealedOwner,
    SealedRef, Secret, Session, SessionId, SessionPatch, SessionStatus, StartedRun, Step, Usage,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};
use tokio::sync::mpsc;

use crate::bus::EventBus;
use crate::codec::{self, from_json_text, parse_id, reject_nul, to_json_text};
use crate::signal::EventSignal;
use crate::{Claim, KV_USAGE_OWNERS, Result, Store, StoreError, paging};

/// The PostgreSQL schema, embedded at build time.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Transaction-scoped advisory lock serialising [`Store::create_first_api_key`] across
/// processes. The value is arbitrary but must never change (ASCII "everruns").
const FIRST_API_KEY_LOCK: i64 = 0x6576_6572_7275_6e73;

macro_rules! agent_columns {
    () => {
        "id, name, system_prompt, model::text AS model, capabilities::text AS capabilities, \
         archived, tool_approval::text AS tool_approval, created_at, updated_at"
    };
}
macro_rules! session_columns {
    () => {
        "id, agent_id, title, overrides::text AS overrides, status, created_at, updated_at"
    };
}
macro_rules! api_key_columns {
    () => {
        "id, name, prefix, role, created_at, last_used_at, revoked_at"
    };
}

/// The PostgreSQL store: a connection pool over a migrated database. Safe to share between
/// any number of server processes.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    journal: journal::Journal,
    bus: EventBus,
    run_signal: EventSignal,
}

impl PgStore {
    /// Wraps a pool whose database has been migrated (see [`crate::connect`]).
    pub(crate) fn new(pool: PgPool) -> Self {
        let (outbox, pending) = mpsc::unbounded_channel();
        let store = Self {
            journal: journal::Journal::start(pool.clone()),
            pool,
            bus: EventBus::with_outbox(outbox),
            run_signal: EventSignal::default(),
        };
        // Tells notices of this process from those of others on the shared channel.
        let origin = random_origin();
        tokio::spawn(notify_events(store.pool.clone(), origin.clone(), pending));
        spawn_listener(store.pool.clone(), origin, &store.run_signal, &store.bus);
        store
    }

    /// Applies pending migrations on `conn`. sqlx holds a session-level advisory lock keyed on
    /// the database name while it migrates, so concurrent callers wait for each other; the
    /// caller passes a dedicated connection so that, should migrating fail half-way, the lock
    /// dies with the connection instead of going back into a pool.
    pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<()> {
        MIGRATOR.run_direct(conn).await?;
        Ok(())
    }
}

fn agent_from_row(row: &PgRow) -> Result<Agent> {
    Ok(Agent {
        id: parse_id("agent id", row.try_get("id")?, AgentId::parse)?,
        name: row.try_get("name")?,
        system_prompt: row.try_get("system_prompt")?,
        model: from_json_text("agent model settings", row.try_get("model")?)?,
        capabilities: from_json_text("agent capabilities", row.try_get("capabilities")?)?,
        archived: row.try_get("archived")?,
        tool_approval: codec::from_optional_json_text(
            "agent tool approval",
            row.try_get("tool_approval")?,
        )?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn session_from_row(row: &PgRow) -> Result<Session> {
    Ok(Session {
        id: parse_id("session id", row.try_get("id")?, SessionId::parse)?,
        agent_id: parse_id("agent id", row.try_get("agent_id")?, AgentId::parse)?,
        title: row.try_get("title")?,
        overrides: codec::from_optional_json_text("session overrides", row.try_get("overrides")?)?,
        status: codec::parse_status(row.try_get("status")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn message_from_row(row: &PgRow) -> Result<Message> {
    Ok(Message {
        id: parse_id("message id", row.try_get("id")?, MessageId::parse)?,
        session_id: parse_id("session id", row.try_get("session_id")?, SessionId::parse)?,
        role: codec::parse_role(row.try_get("role")?)?,
        content: row.try_get("content")?,
        metadata: from_json_text("message metadata", row.try_get("metadata")?)?,
        created_at: row.try_get("created_at")?,
    })
}

fn api_key_from_row(row: &PgRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: parse_id("API key id", row.try_get("id")?, ApiKeyId::parse)?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        role: codec::role(row.try_get("role")?)?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Inserts a key record with `executor` (the pool, or a transaction).
async fn insert_api_key<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    new: &NewApiKey,
) -> Result<ApiKey> {
    let key = ApiKey {
        id: ApiKeyId::new(),
        name: new.name.clone(),
        prefix: new.prefix.clone(),
        role: new.role,
        created_at: codec::now(),
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, name, prefix, hash, role, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.id.as_str())
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(&new.hash)
    .bind(key.role.as_str())
    .bind(key.created_at)
    .execute(executor)
    .await
    .map_err(|err| codec::api_key_conflict(err, new))?;
    Ok(key)
}

/// Deletes what no foreign key cascades to (migration 0005) of `sessions`, which the caller
/// has just deleted: their event logs, conversations and plugin state, and the plugin state of
/// `owners` besides. Run after the sessions' own `DELETE` in the same transaction: that
/// `DELETE` (through its cascade to the runs) waited for every writer holding one of their
/// runs or rows, and no writer can add to a deleted session afterwards, so this statement's
/// snapshot holds every row there is to delete.
async fn delete_session_logs(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sessions: &[impl AsRef<str>],
    mut owners: Vec<String>,
) -> Result<()> {
    let ids: Vec<&str> = sessions.iter().map(AsRef::as_ref).collect();
    for table in ["events", "messages"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE session_id = ANY($1)"))
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
    }
    owners.extend(ids.iter().map(KvScope::session_owner));
    sqlx::query("DELETE FROM plugin_kv WHERE owner = ANY($1)")
        .bind(&owners)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn event_bus(&self) -> &EventBus {
        &self.bus
    }

    fn run_signal(&self) -> EventSignal {
        self.run_signal.clone()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- agents ----

    async fn create_agent(&self, new: NewAgent) -> Result<Agent> {
        reject_nul("an agent name", &new.name)?;
        reject_nul("a system prompt", &new.system_prompt)?;
        let model = to_json_text("agent model settings", &new.model)?;
        let capabilities = to_json_text("agent capabilities", &new.capabilities)?;
        let tool_approval =
            codec::optional_json_text("agent tool approval", new.tool_approval.as_ref())?;
        let now = codec::now();
        let agent = Agent {
            id: AgentId::new(),
            name: new.name,
            system_prompt: new.system_prompt,
            model: new.model,
            capabilities: new.capabilities,
            archived: false,
            tool_approval: new.tool_approval,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO agents \
             (id, name, system_prompt, model, capabilities, archived, tool_approval, created_at, \
              updated_at) \
             VALUES ($1, $2, $3, $4::json, $5::json, FALSE, $7::json, $6, $6)",
        )
        .bind(agent.id.as_str())
        .bind(&agent.name)
        .bind(&agent.system_prompt)
        .bind(model)
        .bind(capabilities)
        .bind(now)
        .bind(tool_approval)
        .execute(&self.pool)
        .await
        .map_err(|err| codec::agent_name_conflict(err, &agent.name))?;
        Ok(agent)
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Agent> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => agent_from_row(&row),
            None => Err(StoreError::not_found("agent", id)),
        }
    }

    async fn list_agents(&self, page: &PageRequest) -> Result<Page<Agent>> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(paging::fetch_limit(page))
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(paging::finish(page, items, total, |a| a.id.to_string()))
    }

    async fn update_agent(&self, id: &AgentId, patch: AgentPatch) -> Result<Agent> {
        if let Some(name) = &patch.name {
            reject_nul("an agent name", name)?;
        }
        if let Some(prompt) = &patch.system_prompt {
            reject_nul("a system prompt", prompt)?;
        }
        let model = patch
            .model
            .as_ref()
            .map(|m| to_json_text("agent model settings", m))
            .transpose()?;
        let capabilities = patch
            .capabilities
            .as_ref()
            .map(|c| to_json_text("agent capabilities", c))
            .transpose()?;
        let tool_approval = match &patch.tool_approval {
            Some(policy) => codec::optional_json_text("agent tool approval", policy.as_ref())?,
            None => None,
        };
        let row = sqlx::query(concat!(
            "UPDATE agents SET \
               name = COALESCE($2, name), \
               system_prompt = COALESCE($3, system_prompt), \
               model = COALESCE($4::json, model), \
               capabilities = COALESCE($5::json, capabilities), \
               archived = COALESCE($6, archived), \
               tool_approval = CASE WHEN $8 THEN $9::json ELSE tool_approval END, \
               updated_at = $7 \
             WHERE id = $1 RETURNING ",
            agent_columns!()
        ))
        .bind(id.as_str())
        .bind(patch.name.as_deref())
        .bind(patch.system_prompt.as_deref())
        .bind(model)
        .bind(capabilities)
        .bind(patch.archived)
        .bind(codec::now())
        .bind(patch.tool_approval.is_some())
        .bind(tool_approval)
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| {
            codec::agent_name_conflict(err, patch.name.as_deref().unwrap_or_default())
        })?;
        match row {
            Some(row) => agent_from_row(&row),
            None => Err(StoreError::not_found("agent", id)),
        }
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // The agent locked first: no session of it can be created meanwhile.
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(StoreError::not_found("agent", id));
        }
        // Cascades to their runs and steps.
        let sessions: Vec<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE agent_id = $1 RETURNING id")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await?;
        delete_session_logs(&mut tx, &sessions, vec![KvScope::agent_owner(id)]).await?;
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- sessions ----

    async fn create_session(&self, new: NewSession) -> Result<Session> {
        if let Some(title) = &new.title {
            reject_nul("a session title", title)?;
        }
        let overrides = codec::optional_json_text("session overrides", new.overrides.as_ref())?;
        let now = codec::now();
        let session = Session {
            id: SessionId::new(),
            agent_id: new.agent_id,
            title: new.title,
            overrides: new.overrides,
            status: SessionStatus::Idle,
            created_at: now,
            updated_at: now,
        };
        // Inserting only when the agent exists reports an unknown agent without relying on
        // the driver's foreign key error; the error still covers a concurrent delete.
        let done = sqlx::query(
            "INSERT INTO sessions (id, agent_id, title, overrides, status, created_at, updated_at) \
             SELECT $1, $2, $3, $6::json, $4, $5, $5 \
             WHERE EXISTS (SELECT 1 FROM agents WHERE id = $2)",
        )
        .bind(session.id.as_str())
        .bind(session.agent_id.as_str())
        .bind(session.title.as_deref())
        .bind(session.status.as_str())
        .bind(now)
        .bind(overrides)
        .execute(&self.pool)
        .await;
        match done {
            Ok(done) if done.rows_affected() == 1 => Ok(session),
            Ok(_) => Err(StoreError::not_found("agent", &session.agent_id)),
            Err(err) if codec::is_foreign_key_violation(&err) => {
                Err(StoreError::not_found("agent", &session.agent_id))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn session_agent(&self, id: &SessionId) -> Result<(Agent, Option<Overrides>)> {
        let row = sqlx::query(
            "SELECT a.id, a.name, a.system_prompt, a.model::text AS model, a.capabilities::text AS capabilities, \
             a.archived, a.tool_approval::text AS tool_approval, a.created_at, a.updated_at, \
             s.overrides::text AS session_overrides \
             FROM sessions s JOIN agents a ON a.id = s.agent_id WHERE s.id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found("session", id));
        };
        let overrides =
            codec::from_optional_json_text("session overrides", row.try_get("session_overrides")?)?;
        Ok((agent_from_row(&row)?, overrides))
    }

    async fn get_session(&self, id: &SessionId) -> Result<Session> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => session_from_row(&row),
            None => Err(StoreError::not_found("session", id)),
        }
    }

    async fn list_sessions(
        &self,
        agent: Option<&AgentId>,
        page: &PageRequest,
    ) -> Result<Page<Session>> {
        let agent = agent.map(AgentId::as_str);
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE ($1::text IS NULL OR agent_id = $1)",
        )
        .bind(agent)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE ($1::text IS NULL OR agent_id = $1) AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(agent)
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(paging::fetch_limit(page))
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(paging::finish(page, items, total, |s| s.id.to_string()))
    }

    async fn update_session(&self, id: &SessionId, patch: SessionPatch) -> Result<Session> {
        if let Some(Some(title)) = &patch.title {
            reject_nul("a session title", title)?;
        }
        let overrides = match &patch.overrides {
            Some(o) => codec::optional_json_text("session overrides", o.as_ref())?,
            None => None,
        };
        let row = sqlx::query(concat!(
            "UPDATE sessions SET \
               title = CASE WHEN $2 THEN $3 ELSE title END, \
               overrides = CASE WHEN $5 THEN $6::json ELSE overrides END, \
               updated_at = $4 \
             WHERE id = $1 RETURNING ",
            session_columns!()
        ))
        .bind(id.as_str())
        .bind(patch.title.is_some())
        .bind(patch.title.flatten())
        .bind(codec::now())
        .bind(patch.overrides.is_some())
        .bind(overrides)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => session_from_row(&row),
            None => Err(StoreError::not_found("session", id)),
        }
    }

    async fn delete_session(&self, id: &SessionId) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Cascades to its runs and their steps.
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("session", id));
        }
        delete_session_logs(&mut tx, &[id.as_str()], Vec::new()).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- messages ----

    async fn append_message(&self, new: NewMessage) -> Result<Message> {
        reject_nul("message content", &new.content)?;
        let metadata = to_json_text("message metadata", &new.metadata)?;
        let message = Message {
            id: MessageId::new(),
            session_id: new.session_id,
            role: new.role,
            content: new.content,
            metadata: new.metadata,
            created_at: codec::now(),
        };
        let done = sqlx::query(
            // The session row is share-locked (as a foreign key would), so a delete of it
            // waits for this message and then deletes it too.
            "INSERT INTO messages (id, session_id, role, content, metadata, created_at) \
             SELECT $1, id, $3, $4, $5::json, $6 FROM sessions WHERE id = $2 FOR KEY SHARE",
        )
        .bind(message.id.as_str())
        .bind(message.session_id.as_str())
        .bind(message.role.as_str())
        .bind(&message.content)
        .bind(metadata)
        .bind(message.created_at)
        .execute(&self.pool)
        .await;
        match done {
            Ok(done) if done.rows_affected() == 1 => Ok(message),
            Ok(_) => Err(StoreError::not_found("session", &message.session_id)),
            Err(err) if codec::is_foreign_key_violation(&err) => {
                Err(StoreError::not_found("session", &message.session_id))
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn list_messages(
        &self,
        session: &SessionId,
        page: &PageRequest,
    ) -> Result<Page<Message>> {
        let (exists, total): (bool, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1), \
                    (SELECT COUNT(*) FROM messages WHERE session_id = $1)",
        )
        .bind(session.as_str())
        .fetch_one(&self.pool)
        .await?;
        if !exists {
            return Err(StoreError::not_found("session", session));
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(session.as_str())
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(paging::fetch_limit(page))
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(paging::finish(page, items, total, |m| m.id.to_string()))
    }

    // ---- API keys ----

    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKey> {
        codec::check_new_api_key(&new)?;
        insert_api_key(&self.pool, &new).await
    }

    async fn create_first_api_key(&self, new: NewApiKey) -> Result<Option<ApiKey>> {
        codec::check_new_api_key(&new)?;
        let mut tx = self.pool.begin().await?;
        // Every process takes the same lock before looking, so exactly one sees no keys. Under
        // READ COMMITTED the check below runs on a snapshot taken after the lock was granted,
        // i.e. after the previous holder committed.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FIRST_API_KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            tx.rollback().await?;
            return Ok(None);
        }
        let key = insert_api_key(&mut *tx, &new).await?;
        tx.commit().await?;
        Ok(Some(key))
    }

    async fn authenticate_api_key(&self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM api_keys WHERE hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut key) = row.as_ref().map(api_key_from_row).transpose()? else {
            return Ok(None);
        };
        let now = codec::now();
        if codec::key_use_is_stale(key.last_used_at, now) {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(key.id.as_str())
                .bind(now)
                .execute(&self.pool)
                .await?;
            key.last_used_at = Some(now);
        }
        Ok(Some(key))
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_key_columns!(),
            " FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(paging::fetch_limit(page))
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(api_key_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(paging::finish(page, items, total, |k| k.id.to_string()))
    }

    async fn revoke_api_key(&self, id: &ApiKeyId) -> Result<ApiKey> {
        let row = sqlx::query(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING ",
            api_key_columns!()
        ))
        .bind(id.as_str())
        .bind(codec::now())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => api_key_from_row(&row),
            None => Err(StoreError::not_found("API key", id)),
        }
    }

    // ---- plugin key-value state ----

    async fn kv_get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>> {
        codec::check_kv_key(scope, key)?;
        let value = sqlx::query_scalar(
            "SELECT value FROM plugin_kv WHERE plugin = $1 AND owner = $2 AND key = $3",
        )
        .bind(&scope.plugin)
        .bind(&scope.owner)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(value)
    }

    async fn kv_set(&self, scope: &KvScope, key: &str, value: &[u8]) -> Result<()> {
        codec::check_kv_key(scope, key)?;
        // Written only while the owning agent or session exists, holding it as a foreign key
        // would (FOR KEY SHARE): a delete either waits for this write and then removes it, or
        // goes first and this writes nothing.
        let owner = scope.owner_row();
        let done = sqlx::query(
            "INSERT INTO plugin_kv (plugin, owner, key, value, updated_at) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE ($6::text IS NULL \
                    OR EXISTS (SELECT 1 FROM agents WHERE id = $6 FOR KEY SHARE)) \
               AND ($7::text IS NULL \
                    OR EXISTS (SELECT 1 FROM sessions WHERE id = $7 FOR KEY SHARE)) \
             ON CONFLICT (plugin, owner, key) \
             DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
        )
        .bind(&scope.plugin)
        .bind(&scope.owner)
        .bind(key)
        .bind(value)
        .bind(codec::now())
        .bind(owner.agent())
        .bind(owner.session())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(codec::kv_owner_gone(scope));
        }
        Ok(())
    }

    async fn kv_delete(&self, scope: &KvScope, key: &str) -> Result<bool> {
        codec::check_kv_key(scope, key)?;
        let done =
            sqlx::query("DELETE FROM plugin_kv WHERE plugin = $1 AND owner = $2 AND key = $3")
                .bind(&scope.plugin)
                .bind(&scope.owner)
                .bind(key)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn kv_list(&self, scope: &KvScope, prefix: &str, limit: u32) -> Result<Vec<String>> {
        codec::check_kv_scope(scope)?;
        reject_nul("a key prefix", prefix)?;
        // `key >= prefix` lets the primary key index start at the prefix; `starts_with` takes
        // the prefix literally (no LIKE wildcards to escape).
        let keys = sqlx::query_scalar(
            "SELECT key FROM plugin_kv \
             WHERE plugin = $1 AND owner = $2 AND key >= $3 AND starts_with(key, $3) \
             ORDER BY key LIMIT $4",
        )
        .bind(&scope.plugin)
        .bind(&scope.owner)
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(keys)
    }

    async fn kv_usage(&self, scope: &KvScope, excluding: &[&str]) -> Result<KvUsage> {
        let excluded = codec::kv_excluded(scope, excluding)?;
        let (keys, bytes): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), SUM(octet_length(key) + octet_length(value))::BIGINT \
             FROM plugin_kv WHERE plugin = $1 AND owner = $2 \
               AND key NOT IN (SELECT jsonb_array_elements_text($3::jsonb))",
        )
        .bind(&scope.plugin)
        .bind(&scope.owner)
        .bind(excluded)
        .fetch_one(&self.pool)
        .await?;
        Ok(codec::kv_usage(keys, bytes))
    }

    async fn kv_usage_by_owner(&self, plugin: &str) -> Result<Vec<(String, KvUsage)>> {
        reject_nul("a plugin id", plugin)?;
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT owner, COUNT(*), SUM(octet_length(key) + octet_length(value))::BIGINT \
             FROM plugin_kv WHERE plugin = $1 GROUP BY owner ORDER BY 3 DESC, owner LIMIT $2",
        )
        .bind(plugin)
        .bind(i64::from(KV_USAGE_OWNERS))
        .fetch_all(&self.pool)
        .await?;
        Ok(codec::kv_usage_by_owner(rows))
    }

    // ---- providers ----

    async fn create_provider(&self, new: NewProvider) -> Result<Provider> {
        vault::create_provider(&self.pool, new).await
    }

    async fn get_provider(&self, id: &ProviderId) -> Result<Provider> {
        vault::get_provider(&self.pool, id).await
    }

    async fn get_provider_by_name(&self, name: &str) -> Result<Provider> {
        vault::get_provider_by_name(&self.pool, name).await
    }

    async fn list_providers(&self, page: &PageRequest) -> Result<Page<Provider>> {
        vault::list_providers(&self.pool, page).await
    }

    async fn update_provider(&self, id: &ProviderId, patch: ProviderPatch) -> Result<Provider> {
        vault::update_provider(&self.pool, id, patch).await
    }

    async fn delete_provider(&self, id: &ProviderId) -> Result<()> {
        vault::delete_provider(&self.pool, id).await
    }

    // ---- secrets ----

    async fn put_secret(&self, name: &str, value: Sealed) -> Result<(Secret, bool)> {
        vault::put_secret(&self.pool, name, &value).await
    }

    async fn get_secret(&self, name: &str) -> Result<Secret> {
        vault::get_secret(&self.pool, name).await
    }

    async fn list_secrets(&self, page: &PageRequest) -> Result<Page<Secret>> {
        vault::list_secrets(&self.pool, page).await
    }

    async fn delete_secret(&self, name: &str) -> Result<()> {
        vault::delete_secret(&self.pool, name).await
    }

    // ---- sealed values ----

    async fn sealed_samples(&self) -> Result<Vec<SealedRef>> {
        vault::sealed_samples(&self.pool).await
    }

    async fn replace_sealed(
        &self,
        owner: &SealedOwner,
        current: &Sealed,
        new: &Sealed,
    ) -> Result<bool> {
        vault::replace_sealed(&self.pool, owner, current, new).await
    }

    // ---- runs ----

    async fn start_run_with(
        &self,
        session: &SessionId,
        content: String,
        idempotency_key: Option<String>,
        config: Option<&RunConfig>,
        trace_parent: Option<&str>,
        claim: Option<&Claim>,
    ) -> Result<StartedRun> {
        let (started, events) = runs::start_run(
            &self.pool,
            session,
            content,
            idempotency_key,
            config,
            trace_parent,
            claim,
        )
        .await?;
        self.bus.committed(&events);
        if started.run.lease_owner.is_none() {
            self.run_signal.bump();
        }
        Ok(started)
    }

    async fn claim_run(&self, owner: &str, lease: Duration) -> Result<Option<(Run, Lease)>> {
        let Some((run, lease, started)) = runs::claim_run(&self.pool, owner, lease).await? else {
            return Ok(None);
        };
        self.bus.committed(std::slice::from_ref(&started));
        Ok(Some((run, lease)))
    }

    async fn renew_lease(&self, lease: &Lease, duration: Duration) -> Result<()> {
        runs::renew_lease(&self.pool, lease, duration).await
    }

    async fn append_events(&self, lease: &Lease, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        let events = runs::append_events(&self.pool, lease, events).await?;
        self.bus.committed(&events);
        Ok(events)
    }

    async fn record_step(
        &self,
        lease: &Lease,
        step: NewStep,
        events: Vec<NewEvent>,
        usage_delta: Usage,
    ) -> Result<RecordedStep> {
        let recorded = self
            .journal
            .record(lease, step, events, usage_delta, None)
            .await?;
        self.bus.committed(&recorded.events);
        Ok(recorded)
    }

    async fn record_final_step(
        &self,
        lease: &Lease,
        step: NewStep,
        events: Vec<NewEvent>,
        usage_delta: Usage,
        status: RunStatus,
    ) -> Result<RecordedStep> {
        let recorded = self
            .journal
            .record(lease, step, events, usage_delta, Some(status))
            .await?;
        self.bus.committed(&recorded.events);
        self.run_signal.bump();
        Ok(recorded)
    }

    async fn list_steps(&self, run: &RunId) -> Result<Vec<Step>> {
        runs::list_steps(&self.pool, run).await
    }

    async fn finish_run(
        &self,
        lease: &Lease,
        status: RunStatus,
        error: Option<String>,
        events: Vec<NewEvent>,
    ) -> Result<Run> {
        let (run, events) = runs::finish_run(&self.pool, lease, status, error, events).await?;
        self.bus.committed(&events);
        self.run_signal.bump();
        Ok(run)
    }

    async fn request_cancel(&self, run: &RunId) -> Result<Run> {
        let (run, events) = runs::request_cancel(&self.pool, run).await?;
        self.bus.committed(&events);
        self.run_signal.bump();
        Ok(run)
    }

    async fn park_run(
        &self,
        lease: &Lease,
        approvals: Vec<NewApproval>,
        events: Vec<NewEvent>,
    ) -> Result<Run> {
        let (run, events) = approvals::park_run(&self.pool, lease, approvals, events).await?;
        self.bus.committed(&events);
        if run.status.is_terminal() {
            self.run_signal.bump();
        }
        Ok(run)
    }

    async fn decide_approval(
        &self,
        run: &RunId,
        id: &ApprovalId,
        decision: Decision,
        reason: Option<&str>,
        decided_by: &ApiKeyId,
    ) -> Result<Approval> {
        let how = crate::approval_codec::Resolve::Decide {
            decision,
            reason,
            by: decided_by,
        };
        let (approval, events) = approvals::resolve(&self.pool, run, id, how)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("approval `{id}` was not decided")))?;
        self.bus.committed(&events);
        self.run_signal.bump();
        Ok(approval)
    }

    async fn expire_approvals(&self, limit: u32) -> Result<u32> {
        let mut expired = 0;
        for (run, id) in approvals::due(&self.pool, limit).await? {
            match approvals::resolve(
                &self.pool,
                &run,
                &id,
                crate::approval_codec::Resolve::Expire,
            )
            .await
            {
                Ok(Some((_, events))) => {
                    self.bus.committed(&events);
                    expired += 1;
                }
                // Decided, expired by another process, or deleted meanwhile.
                Ok(None) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if expired > 0 {
            self.run_signal.bump();
        }
        Ok(expired)
    }

    async fn list_approvals(
        &self,
        run: Option<&RunId>,
        status: Option<ApprovalStatus>,
        page: &PageRequest,
    ) -> Result<Page<Approval>> {
        approvals::list(&self.pool, run, status, page).await
    }

    async fn run_approvals(&self, run: &RunId) -> Result<Vec<Approval>> {
        approvals::of_run(&self.pool, run).await
    }

    async fn get_run(&self, run: &RunId) -> Result<Run> {
        runs::get_run(&self.pool, run).await
    }

    async fn session_history(&self, session: &SessionId) -> Result<(Vec<Run>, Vec<Message>)> {
        runs::session_history(&self.pool, session).await
    }

    async fn cancelling_runs(&self, owner: &str) -> Result<Vec<RunId>> {
        runs::cancelling_runs(&self.pool, owner).await
    }

    async fn queue_stats(&self) -> Result<crate::QueueStats> {
        runs::queue_stats(&self.pool).await
    }

    async fn list_runs(&self, session: &SessionId, page: &PageRequest) -> Result<Page<Run>> {
        runs::list_runs(&self.pool, session, page).await
    }

    async fn active_run(&self, session: &SessionId) -> Result<Option<Run>> {
        runs::active_run(&self.pool, session).await
    }

    // ---- events ----

    async fn list_events(
        &self,
        session: &SessionId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Event>> {
        runs::list_events(&self.pool, session, after_seq, limit).await
    }

    async fn last_event_seq(&self, session: &SessionId) -> Result<i64> {
        runs::last_event_seq(&self.pool, session).await
    }
}

/// A random tag of this store value, carried in its event notifications.
fn random_origin() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per process and per value: enough to tell stores apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Longest `NOTIFY` payload sent (PostgreSQL's limit is 8000 bytes).
const NOTIFY_PAYLOAD_MAX: usize = 7_000;

/// Sends the event notices of this process to the others: `origin session:seq ...` on
/// [`runs::EVENTS_CHANNEL`]. Everything queued while one `NOTIFY` is in flight goes into the
/// next, with one entry per session (its newest seq), so the rate stays at most one
/// statement per round trip however many events are written. Ends with the store.
async fn notify_events(
    pool: PgPool,
    origin: String,
    mut pending: mpsc::UnboundedReceiver<(SessionId, i64)>,
) {
    let mut newest: HashMap<SessionId, i64> = HashMap::new();
    while let Some((session, seq)) = pending.recv().await {
        newest.insert(session, seq);
        while let Ok((session, seq)) = pending.try_recv() {
            let entry = newest.entry(session).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        let mut payloads = vec![origin.clone()];
        for (session, seq) in newest.drain() {
            let entry = format!(" {session}:{seq}");
            if payloads
                .last()
                .is_some_and(|p| p.len() + entry.len() > NOTIFY_PAYLOAD_MAX)
            {
                payloads.push(origin.clone());
            }
            if let Some(last) = payloads.last_mut() {
                last.push_str(&entry);
            }
        }
        for payload in payloads {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(runs::EVENTS_CHANNEL)
                .bind(&payload)
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                // Other processes' SSE streams fall back to polling for this one.
                tracing::debug!(error = %e, "notifying other processes of events failed");
            }
        }
    }
}

/// Parses `origin session:seq ...`; `None` for notices of `own` origin or malformed ones.
fn parse_event_notice<'a>(
    payload: &'a str,
    own: &str,
) -> Option<impl Iterator<Item = (SessionId, i64)> + 'a> {
    let mut parts = payload.split(' ');
    let origin = parts.next()?;
    if origin == own {
        return None;
    }
    Some(parts.filter_map(|part| {
        let (session, seq) = part.split_once(':')?;
        Some((SessionId::parse(session).ok()?, seq.parse().ok()?))
    }))
}

/// Listens on both channels: `everruns_runs` notifications from every process bump `signal`,
/// so idle workers claim new runs at once; `everruns_events` notices of other processes go to
/// the event bus, so SSE streams here follow runs executing there. Reconnects after errors
/// (then bumps the run signal once, as something may have been missed; SSE streams catch up
/// by polling); ends when the store is dropped.
fn spawn_listener(pool: PgPool, origin: String, signal: &EventSignal, bus: &EventBus) {
    let weak = signal.downgrade();
    let bus = bus.downgrade();
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::debug!(error = %e, "listener cannot connect; retrying");
                    if pool.is_closed() || weak.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let channels = [runs::RUNS_CHANNEL, runs::EVENTS_CHANNEL];
            if let Err(e) = listener.listen_all(channels).await {
                tracing::debug!(error = %e, "listener cannot LISTEN; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // After (re)connecting, something may have been missed: look for work once.
            if !EventSignal::bump_weak(&weak) {
                return;
            }
            loop {
                // Wake up now and then to notice a dropped store even when nothing arrives.
                match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
                    Ok(Ok(notification)) if notification.channel() == runs::EVENTS_CHANNEL => {
                        let Some(notices) = parse_event_notice(notification.payload(), &origin)
                        else {
                            continue;
                        };
                        for (session, seq) in notices {
                            if !bus.remote(&session, seq) {
                                return;
                            }
                        }
                    }
                    Ok(Ok(_)) => {
                        if !EventSignal::bump_weak(&weak) {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "listener lost its connection; reconnecting");
                        break;
                    }
                    Err(_) if !bus.alive() || weak.strong_count() == 0 || pool.is_closed() => {
                        return;
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}
