//! What the host gives a plugin: the per-call store state (`HostState`), the `log`, `kv`
//! and `secrets` interfaces, and the backend traits the server plugs its storage into
//! (`KvBackend`, `SecretSource`), with in-memory implementations for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::everruns::capability::{kv, log, secrets, types};
use crate::http::HttpPolicy;
use crate::id::CapabilityId;
use crate::limits::MemoryLimiter;
use crate::permissions::Permissions;

/// Longest accepted KV key, in bytes.
pub const MAX_KV_KEY_BYTES: usize = 256;
/// Largest accepted KV value, in bytes.
pub const MAX_KV_VALUE_BYTES: usize = 64 * 1024;
/// Most keys returned by one `list-keys`.
pub const MAX_KV_LIST: usize = 1000;

/// Whom a piece of key-value state belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KvOwner {
    /// Shared by every session of this agent.
    Agent(String),
    /// Private to one session.
    Session(String),
}

/// The namespace one plugin call reads and writes: plugin id plus owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvScope {
    /// The plugin.
    pub plugin: CapabilityId,
    /// The owner (agent or session).
    pub owner: KvOwner,
}

/// A storage failure, reported to the plugin as `kv-error.backend`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Durable key-value storage for plugins. The server adapts its store to this; keys are
/// already validated and size-checked by the runtime.
#[async_trait]
pub trait KvBackend: Send + Sync + std::fmt::Debug + 'static {
    /// Reads a value.
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Writes a value. State of an agent or session that was deleted is not written (an error
    /// that says so, not a retryable backend failure).
    async fn set(&self, scope: &KvScope, key: &str, value: Vec<u8>) -> Result<(), BackendError>;
    /// Deletes a key; returns whether it existed.
    async fn delete(&self, scope: &KvScope, key: &str) -> Result<bool, BackendError>;
    /// Lists keys starting with `prefix`, sorted, at most `limit`.
    async fn list_keys(
        &self,
        scope: &KvScope,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError>;
}

/// Where secret values come from. The runtime only asks for names the plugin was
/// granted; the source decides whether a value exists.
#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug + 'static {
    /// The value of secret `name` for `plugin`, if configured.
    async fn get(&self, plugin: &CapabilityId, name: &str) -> Result<Option<String>, BackendError>;
}

type KvMap = BTreeMap<(KvScope, String), Vec<u8>>;

/// In-memory [`KvBackend`]; clones share the same data (so two runtimes can share it).
#[derive(Debug, Clone, Default)]
pub struct MemoryKv {
    data: Arc<Mutex<KvMap>>,
}

impl MemoryKv {
    fn lock(&self) -> std::sync::MutexGuard<'_, KvMap> {
        // A panic while holding this lock cannot leave the map half-updated (each
        // operation is one map call), so a poisoned lock is still usable.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl KvBackend for MemoryKv {
    async fn get(&self, scope: &KvScope, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().get(&(scope.clone(), key.to_owned())).cloned())
    }
    async fn set(&self, scope: &KvScope, key: &str, value: Vec<u8>) -> Result<(), BackendError> {
        self.lock().insert((scope.clone(), key.to_owned()), value);
        Ok(())
    }
    async fn delete(&self, scope: &KvScope, key: &str) -> Result<bool, BackendError> {
        Ok(self
            .lock()
            .remove(&(scope.clone(), key.to_owned()))
            .is_some())
    }
    async fn list_keys(
        &self,
        scope: &KvScope,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        Ok(self
            .lock()
            .keys()
            .filter(|(s, k)| s == scope && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .take(limit)
            .collect())
    }
}

/// In-memory [`SecretSource`]: the same secrets for every plugin (grants still apply).
#[derive(Debug, Clone, Default)]
pub struct MemorySecrets {
    values: Arc<HashMap<String, String>>,
}

impl MemorySecrets {
    /// Secrets from `(name, value)` pairs.
    pub fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }
}

#[async_trait]
impl SecretSource for MemorySecrets {
    async fn get(
        &self,
        _plugin: &CapabilityId,
        name: &str,
    ) -> Result<Option<String>, BackendError> {
        Ok(self.values.get(name).cloned())
    }
}

/// Severity of a plugin log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Diagnostics.
    Debug,
    /// Progress.
    Info,
    /// Recovered problem.
    Warn,
    /// Failure.
    Error,
}

/// One line a plugin logged during a call; part of the run's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The (possibly truncated) message.
    pub message: String,
}

/// Log lines collected during one call, capped.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    pub(crate) records: Vec<LogRecord>,
    pub(crate) dropped: u64,
    pub(crate) max_lines: usize,
    pub(crate) max_line_bytes: usize,
}

/// The data of one call's `Store`: WASI (empty), wasi-http with our policy, the memory
/// limiter, and the plugin's view of logs, KV and secrets.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http_ctx: WasiHttpCtx,
    pub(crate) http: HttpPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) plugin: CapabilityId,
    pub(crate) permissions: Arc<Permissions>,
    pub(crate) kv_scope: Option<KvScope>,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) logs: LogBuffer,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let buf = &mut self.logs;
        if buf.records.len() >= buf.max_lines {
            buf.dropped += 1;
            return;
        }
        let mut message = message;
        if message.len() > buf.max_line_bytes {
            message.truncate(message.floor_char_boundary(buf.max_line_bytes));
            message.push('…');
        }
        tracing::debug!(capability = %self.plugin, ?level, %message, "plugin log");
        buf.records.push(LogRecord { level, message });
    }
}

impl HostState {
    fn kv_scope(&self) -> Result<&KvScope, kv::KvError> {
        self.kv_scope.as_ref().ok_or(kv::KvError::NotGranted)
    }
}

fn check_key(key: &str) -> Result<(), kv::KvError> {
    if key.len() > MAX_KV_KEY_BYTES {
        return Err(kv::KvError::TooLarge(format!(
            "key of {} bytes exceeds {MAX_KV_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn backend(e: BackendError) -> kv::KvError {
    kv::KvError::Backend(e.0)
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        check_key(&key)?;
        let scope = self.kv_scope()?;
        self.kv.get(scope, &key).await.map_err(backend)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        check_key(&key)?;
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(kv::KvError::TooLarge(format!(
                "value of {} bytes exceeds {MAX_KV_VALUE_BYTES}",
                value.len()
            )));
        }
        let scope = self.kv_scope()?;
        self.kv.set(scope, &key, value).await.map_err(backend)
    }

    async fn delete(&mut self, key: String) -> Result<bool, kv::KvError> {
        check_key(&key)?;
        let scope = self.kv_scope()?;
        self.kv.delete(scope, &key).await.map_err(backend)
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, kv::KvError> {
        check_key(&prefix)?;
        let scope = self.kv_scope()?;
        self.kv
            .list_keys(scope, &prefix, MAX_KV_LIST)
            .await
            .map_err(backend)
    }
}

impl secrets::Host for HostState {
    async fn get(&mut self, name: String) -> Result<String, secrets::SecretError> {
        if !self.permissions.secrets.contains(&name) {
            tracing::info!(capability = %self.plugin, secret = %name, "secret not granted");
            return Err(secrets::SecretError::NotGranted);
        }
        match self.secrets.get(&self.plugin, &name).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(secrets::SecretError::NotFound),
            Err(e) => {
                tracing::warn!(capability = %self.plugin, secret = %name, error = %e,
                    "secret source failed");
                Err(secrets::SecretError::NotFound)
            }
        }
    }
}
