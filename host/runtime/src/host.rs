//! What the host gives a plugin: the per-call store state (`HostState`), the `log`, `kv`
//! and `secrets` interfaces of every supported WIT version, the call's buffered key-value
//! writes (`KvWrites`: committed by the caller with the call's journal step, so state is
//! written exactly once), and the backend traits the server plugs its storage into
//! (`KvBackend`, `SecretSource`), with in-memory implementations for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use everruns_core::KvUsage;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

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
    /// What `scope` holds (keys, and bytes of keys and values), leaving out the keys in
    /// `excluding`.
    async fn usage(&self, scope: &KvScope, excluding: &[&str]) -> Result<KvUsage, BackendError>;
}

/// Key-value writes buffered during calls and not yet committed: per scope and key, the new
/// value (`None`: deleted). Reads of a call see them over the backend's state (through the
/// run's [`KvCache`] when it has one). The caller commits them with the journal step the
/// calls belong to ([`KvWrites::apply`] writes them straight to a backend, for callers
/// without a journal).
#[derive(Debug, Clone, Default)]
pub struct KvWrites {
    map: BTreeMap<(KvScope, String), Option<Vec<u8>>>,
    /// Keys and values buffered, in bytes.
    bytes: usize,
    /// The run's cache of committed state, read through before the backend.
    cache: Option<Arc<KvCache>>,
    /// Per scope, how far below its quota the scope was at the last measurement, less what
    /// writes since then may have added: growth within it needs no new measurement.
    headroom: BTreeMap<KvScope, KvUsage>,
}

/// Equal when the buffered writes are (whichever cache they read through).
impl PartialEq for KvWrites {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl Eq for KvWrites {}

/// The committed key-value state of one run's own session, as that run has read and written
/// it, kept between its steps so a plugin's reads of it cost no database round trip after
/// the first. Sound because nothing else writes that state while the run holds its lease:
/// a session executes one run at a time, and every write of the run goes through its
/// fenced journal (the run updates the cache only after a step committed). Agent-scoped
/// state, which other sessions' runs write, is never cached. Bounded: past
/// [`KvCache::MAX_ENTRIES`] entries or [`KvCache::MAX_BYTES`] it starts over.
#[derive(Debug)]
pub struct KvCache {
    session: String,
    entries: Mutex<CacheEntries>,
}

#[derive(Debug, Default)]
struct CacheEntries {
    map: HashMap<(KvScope, String), Option<Vec<u8>>>,
    bytes: usize,
}

impl CacheEntries {
    fn insert(&mut self, entry: (KvScope, String), value: Option<Vec<u8>>) {
        let key_len = entry.1.len();
        let size = key_len + value.as_ref().map_or(0, Vec::len);
        if self.map.len() >= KvCache::MAX_ENTRIES || self.bytes + size > KvCache::MAX_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        let old = self.map.insert(entry, value);
        let old_size = old.map_or(0, |v| key_len + v.map_or(0, |v| v.len()));
        self.bytes = self.bytes + size - old_size;
    }
}

impl KvCache {
    /// Most entries kept.
    pub const MAX_ENTRIES: usize = 4096;
    /// Most bytes (keys and values) kept.
    pub const MAX_BYTES: usize = 4 * 1024 * 1024;

    /// An empty cache for a run of `session`.
    pub fn for_session(session: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            session: session.into(),
            entries: Mutex::new(CacheEntries::default()),
        })
    }

    fn covers(&self, scope: &KvScope) -> bool {
        matches!(&scope.owner, KvOwner::Session(s) if *s == self.session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The committed value of `key`, when known.
    fn get(&self, scope: &KvScope, key: &str) -> Option<Option<Vec<u8>>> {
        if !self.covers(scope) {
            return None;
        }
        self.lock()
            .map
            .get(&(scope.clone(), key.to_owned()))
            .cloned()
    }

    /// Remembers what the backend answered for `key`.
    fn remember(&self, scope: &KvScope, key: &str, value: Option<&[u8]>) {
        if self.covers(scope) {
            self.lock()
                .insert((scope.clone(), key.to_owned()), value.map(<[u8]>::to_vec));
        }
    }

    /// Takes in `writes` once the step that carried them has committed.
    pub fn committed(&self, writes: &KvWrites) {
        let mut entries = self.lock();
        for ((scope, key), value) in &writes.map {
            if self.covers(scope) {
                entries.insert((scope.clone(), key.clone()), value.clone());
            }
        }
    }
}

/// Most keys the calls of one step may write.
pub const MAX_KV_BUFFERED_KEYS: usize = 1_000;
/// Most bytes (keys and values) the calls of one step may write.
pub const MAX_KV_BUFFERED_BYTES: usize = 8 * 1024 * 1024;

impl KvWrites {
    /// An empty buffer whose reads go through `cache` (the run's) before the backend.
    pub fn reading_through(cache: Arc<KvCache>) -> Self {
        Self {
            cache: Some(cache),
            ..Self::default()
        }
    }

    /// The committed value of `key` as the run's cache knows it.
    fn cached(&self, scope: &KvScope, key: &str) -> Option<Option<Vec<u8>>> {
        self.cache.as_ref()?.get(scope, key)
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many keys were written.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The writes in scope and key order: scope, key, value (`None`: deleted).
    pub fn iter(&self) -> impl Iterator<Item = (&KvScope, &str, Option<&[u8]>)> {
        self.map
            .iter()
            .map(|((scope, key), value)| (scope, key.as_str(), value.as_deref()))
    }

    /// The writes, consumed (see [`KvWrites::iter`]).
    pub fn into_writes(self) -> impl Iterator<Item = (KvScope, String, Option<Vec<u8>>)> {
        self.map
            .into_iter()
            .map(|((scope, key), value)| (scope, key, value))
    }

    /// Adds `later`'s writes on top of these (a key written by both keeps `later`'s value).
    pub fn extend(&mut self, later: KvWrites) {
        self.map.extend(later.map);
        // What was measured no longer covers both buffers.
        self.headroom.clear();
        self.bytes = self
            .map
            .iter()
            .map(|((_, k), v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
    }

    /// Whether any write belongs to `plugin`.
    pub fn touches(&self, plugin: &CapabilityId) -> bool {
        self.map.keys().any(|(scope, _)| &scope.plugin == plugin)
    }

    /// Writes them to `backend` one by one (not atomically): for tools and tests that have
    /// no journal to commit them with.
    pub async fn apply(self, backend: &dyn KvBackend) -> Result<(), BackendError> {
        for (scope, key, value) in self.into_writes() {
            match value {
                Some(value) => backend.set(&scope, &key, value).await?,
                None => {
                    backend.delete(&scope, &key).await?;
                }
            }
        }
        Ok(())
    }

    fn get(&self, scope: &KvScope, key: &str) -> Option<Option<&[u8]>> {
        self.map
            .get(&(scope.clone(), key.to_owned()))
            .map(|v| v.as_deref())
    }

    /// Buffers a write; past [`MAX_KV_BUFFERED_KEYS`] keys or [`MAX_KV_BUFFERED_BYTES`] bytes
    /// (host memory, outside the plugin's limit) it is refused.
    fn put(&mut self, scope: &KvScope, key: String, value: Option<Vec<u8>>) -> Result<(), KvFail> {
        let entry = (scope.clone(), key);
        let size = |k: &str, v: &Option<Vec<u8>>| k.len() + v.as_ref().map_or(0, Vec::len);
        let old = self.map.get(&entry).map_or(0, |v| size(&entry.1, v));
        let bytes = self.bytes - old + size(&entry.1, &value);
        let keys = self.map.len() + usize::from(!self.map.contains_key(&entry));
        if keys > MAX_KV_BUFFERED_KEYS || bytes > MAX_KV_BUFFERED_BYTES {
            return Err(KvFail::TooLarge(format!(
                "one step may write at most {MAX_KV_BUFFERED_KEYS} keys and \
                 {MAX_KV_BUFFERED_BYTES} bytes"
            )));
        }
        self.bytes = bytes;
        self.map.insert(entry, value);
        Ok(())
    }

    /// Takes `grow` out of `scope`'s headroom; `false` (and nothing taken) when the headroom
    /// is unknown or too small.
    fn take_headroom(&mut self, scope: &KvScope, grow: KvUsage) -> bool {
        match self.headroom.get_mut(scope) {
            Some(room) if room.keys >= grow.keys && room.bytes >= grow.bytes => {
                room.keys -= grow.keys;
                room.bytes -= grow.bytes;
                true
            }
            _ => false,
        }
    }

    /// The buffered writes of `scope`: (key, new size in bytes if set).
    fn in_scope<'a>(
        &'a self,
        scope: &'a KvScope,
    ) -> impl Iterator<Item = (&'a str, Option<usize>)> + 'a {
        self.map
            .iter()
            .filter(move |((s, _), _)| s == scope)
            .map(|((_, k), v)| (k.as_str(), v.as_ref().map(|v| k.len() + v.len())))
    }

    /// The buffered keys of `scope` starting with `prefix`: (key, still set).
    fn with_prefix<'a>(
        &'a self,
        scope: &'a KvScope,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, bool)> + 'a {
        self.map
            .iter()
            .filter(move |((s, k), _)| s == scope && k.starts_with(prefix))
            .map(|((_, k), v)| (k.as_str(), v.is_some()))
    }
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
    async fn usage(&self, scope: &KvScope, excluding: &[&str]) -> Result<KvUsage, BackendError> {
        let mut usage = KvUsage::default();
        for ((s, k), v) in self.lock().iter() {
            if s == scope && !excluding.contains(&k.as_str()) {
                usage.keys += 1;
                usage.bytes += (k.len() + v.len()) as u64;
            }
        }
        Ok(usage)
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
    /// This call's writes (and those of earlier calls of the same step), uncommitted.
    pub(crate) kv_writes: KvWrites,
    /// Whether `set`/`delete` are allowed (not in `system-prompt` and `tools`).
    pub(crate) kv_writable: bool,
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

/// A key-value failure, before it becomes a version's `kv-error`.
pub(crate) enum KvFail {
    NotGranted,
    TooLarge(String),
    Backend(String),
}

/// A secret failure, before it becomes a version's `secret-error`.
pub(crate) enum SecretFail {
    NotGranted,
    NotFound,
}

/// The store's rules for keys (1 to [`MAX_KV_KEY_BYTES`] bytes, no NUL), checked when the
/// plugin writes, not when the step commits: a key the store would refuse never reaches it.
fn check_key(key: &str) -> Result<(), KvFail> {
    if key.len() > MAX_KV_KEY_BYTES {
        return Err(KvFail::TooLarge(format!(
            "key of {} bytes exceeds {MAX_KV_KEY_BYTES}",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(KvFail::Backend("a key must not contain NUL".into()));
    }
    Ok(())
}

/// A key to write or delete: also not empty (a prefix may be).
fn check_write_key(key: &str) -> Result<(), KvFail> {
    if key.is_empty() {
        return Err(KvFail::Backend("a key must not be empty".into()));
    }
    check_key(key)
}

fn backend(e: BackendError) -> KvFail {
    KvFail::Backend(e.0)
}

/// The committed value of `key`: from the run's cache (through `writes`), else from the
/// backend (and then remembered).
async fn stored(
    kv: &Arc<dyn KvBackend>,
    writes: &KvWrites,
    scope: &KvScope,
    key: &str,
) -> Result<Option<Vec<u8>>, KvFail> {
    if let Some(known) = writes.cached(scope, key) {
        return Ok(known);
    }
    let value = kv.get(scope, key).await.map_err(backend)?;
    if let Some(cache) = &writes.cache {
        cache.remember(scope, key, value.as_deref());
    }
    Ok(value)
}

/// The host side of `log`, `kv` and `secrets`, the same for every WIT version.
impl HostState {
    fn kv_scope(&self) -> Result<&KvScope, KvFail> {
        self.kv_scope.as_ref().ok_or(KvFail::NotGranted)
    }

    fn kv_writable(&self) -> Result<(), KvFail> {
        if self.kv_writable {
            Ok(())
        } else {
            Err(KvFail::Backend(
                "key-value state is read-only here (writes are kept only in tool calls and hooks)"
                    .into(),
            ))
        }
    }

    pub(crate) fn do_log(&mut self, level: LogLevel, message: String) {
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

    pub(crate) async fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvFail> {
        check_key(&key)?;
        let scope = self.kv_scope()?;
        if let Some(buffered) = self.kv_writes.get(scope, &key) {
            return Ok(buffered.map(<[u8]>::to_vec));
        }
        stored(&self.kv, &self.kv_writes, scope, &key).await
    }

    pub(crate) async fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvFail> {
        check_write_key(&key)?;
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(KvFail::TooLarge(format!(
                "value of {} bytes exceeds {MAX_KV_VALUE_BYTES}",
                value.len()
            )));
        }
        let scope = self.kv_scope()?.clone();
        self.kv_writable()?;
        self.check_quota(&scope, &key, value.len()).await?;
        self.kv_writes.put(&scope, key, Some(value))
    }

    /// Refuses a write that would take `scope` past the plugin's quota: setting `key` to a
    /// value of `len` bytes. A write that adds no key and no bytes always passes (so state
    /// over a lowered quota can still shrink); otherwise the scope's committed usage (less
    /// the keys this step rewrote) plus this step's buffered writes is measured, once, and
    /// later growth in the same step is taken from what was left.
    async fn check_quota(&mut self, scope: &KvScope, key: &str, len: usize) -> Result<(), KvFail> {
        let new = (key.len() + len) as u64;
        let old = match self.kv_writes.get(scope, key) {
            Some(buffered) => buffered.map(|v| key.len() + v.len()),
            None => stored(&self.kv, &self.kv_writes, scope, key)
                .await?
                .map(|v| key.len() + v.len()),
        };
        let grow = KvUsage {
            keys: u64::from(old.is_none()),
            bytes: new.saturating_sub(old.unwrap_or(0) as u64),
        };
        if grow == KvUsage::default() || self.kv_writes.take_headroom(scope, grow) {
            return Ok(());
        }
        let quota = self.permissions.kv_quota;
        let mut excluding: Vec<&str> = vec![key];
        let mut usage = KvUsage {
            keys: 1,
            bytes: new,
        };
        for (buffered, size) in self.kv_writes.in_scope(scope) {
            if buffered != key {
                excluding.push(buffered);
                if let Some(size) = size {
                    usage.keys += 1;
                    usage.bytes += size as u64;
                }
            }
        }
        let committed = self.kv.usage(scope, &excluding).await.map_err(backend)?;
        usage.keys += committed.keys;
        usage.bytes += committed.bytes;
        if usage.keys > quota.max_keys || usage.bytes > quota.max_bytes {
            return Err(KvFail::TooLarge(format!(
                "quota exceeded: plugin `{}` may keep at most {} keys and {} bytes per owner; \
                 with this write its state would hold {} keys and {} bytes (delete keys first)",
                scope.plugin, quota.max_keys, quota.max_bytes, usage.keys, usage.bytes
            )));
        }
        self.kv_writes.headroom.insert(
            scope.clone(),
            KvUsage {
                keys: quota.max_keys - usage.keys,
                bytes: quota.max_bytes - usage.bytes,
            },
        );
        Ok(())
    }

    pub(crate) async fn kv_delete(&mut self, key: String) -> Result<bool, KvFail> {
        check_write_key(&key)?;
        let scope = self.kv_scope()?.clone();
        self.kv_writable()?;
        let existed = match self.kv_writes.get(&scope, &key) {
            Some(buffered) => buffered.is_some(),
            None => stored(&self.kv, &self.kv_writes, &scope, &key)
                .await?
                .is_some(),
        };
        self.kv_writes.put(&scope, key, None)?;
        Ok(existed)
    }

    pub(crate) async fn kv_list_keys(&mut self, prefix: String) -> Result<Vec<String>, KvFail> {
        check_key(&prefix)?;
        let scope = self.kv_scope()?;
        // Ask for enough to still have MAX_KV_LIST after removing the buffered deletes.
        let deleted = self
            .kv_writes
            .with_prefix(scope, &prefix)
            .filter(|(_, set)| !set)
            .count();
        let stored = self
            .kv
            .list_keys(scope, &prefix, MAX_KV_LIST + deleted)
            .await
            .map_err(backend)?;
        let mut keys: std::collections::BTreeSet<String> = stored.into_iter().collect();
        for (key, set) in self.kv_writes.with_prefix(scope, &prefix) {
            if set {
                keys.insert(key.to_owned());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys.into_iter().take(MAX_KV_LIST).collect())
    }

    pub(crate) async fn secret_get(&mut self, name: String) -> Result<String, SecretFail> {
        if !self.permissions.secrets.contains(&name) {
            tracing::info!(capability = %self.plugin, secret = %name, "secret not granted");
            self.http.denied = true;
            return Err(SecretFail::NotGranted);
        }
        match self.secrets.get(&self.plugin, &name).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(SecretFail::NotFound),
            Err(e) => {
                tracing::warn!(capability = %self.plugin, secret = %name, error = %e,
                    "secret source failed");
                Err(SecretFail::NotFound)
            }
        }
    }
}

/// Implements one WIT version's `types`, `log`, `kv` and `secrets` host traits over the
/// version-independent methods above (the versions' generated types are distinct).
macro_rules! host_interfaces {
    ($version:ident) => {
        mod $version {
            use super::{HostState, KvFail, LogLevel, SecretFail};
            use crate::bindings::$version::everruns::capability::{kv, log, secrets, types};

            impl types::Host for HostState {}

            fn kv_error(e: KvFail) -> kv::KvError {
                match e {
                    KvFail::NotGranted => kv::KvError::NotGranted,
                    KvFail::TooLarge(m) => kv::KvError::TooLarge(m),
                    KvFail::Backend(m) => kv::KvError::Backend(m),
                }
            }

            impl log::Host for HostState {
                async fn log(&mut self, level: log::Level, message: String) {
                    let level = match level {
                        log::Level::Trace => LogLevel::Trace,
                        log::Level::Debug => LogLevel::Debug,
                        log::Level::Info => LogLevel::Info,
                        log::Level::Warn => LogLevel::Warn,
                        log::Level::Error => LogLevel::Error,
                    };
                    self.do_log(level, message);
                }
            }

            impl kv::Host for HostState {
                async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
                    self.kv_get(key).await.map_err(kv_error)
                }
                async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
                    self.kv_set(key, value).await.map_err(kv_error)
                }
                async fn delete(&mut self, key: String) -> Result<bool, kv::KvError> {
                    self.kv_delete(key).await.map_err(kv_error)
                }
                async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, kv::KvError> {
                    self.kv_list_keys(prefix).await.map_err(kv_error)
                }
            }

            impl secrets::Host for HostState {
                async fn get(&mut self, name: String) -> Result<String, secrets::SecretError> {
                    self.secret_get(name).await.map_err(|e| match e {
                        SecretFail::NotGranted => secrets::SecretError::NotGranted,
                        SecretFail::NotFound => secrets::SecretError::NotFound,
                    })
                }
            }
        }
    };
}

host_interfaces!(v0_1);
host_interfaces!(v0_2);

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> KvScope {
        KvScope {
            plugin: CapabilityId::parse("p").unwrap(),
            owner: KvOwner::Session("ses_1".into()),
        }
    }

    #[test]
    fn keys_follow_the_stores_rules() {
        assert!(check_write_key("ok").is_ok());
        assert!(matches!(check_write_key(""), Err(KvFail::Backend(_))));
        assert!(matches!(check_write_key("a\0b"), Err(KvFail::Backend(_))));
        let long = "k".repeat(MAX_KV_KEY_BYTES + 1);
        assert!(matches!(check_write_key(&long), Err(KvFail::TooLarge(_))));
        // A prefix may be empty.
        assert!(check_key("").is_ok());
    }

    #[test]
    fn a_step_buffers_a_bounded_number_of_keys_and_bytes() {
        let mut writes = KvWrites::default();
        for i in 0..MAX_KV_BUFFERED_KEYS {
            assert!(writes.put(&scope(), format!("k{i}"), None).is_ok());
        }
        // Rewriting a buffered key is fine; one more key is not.
        assert!(writes.put(&scope(), "k0".into(), Some(vec![1])).is_ok());
        assert!(matches!(
            writes.put(&scope(), "one-more".into(), None),
            Err(KvFail::TooLarge(_))
        ));
        let mut writes = KvWrites::default();
        let value = vec![0u8; MAX_KV_VALUE_BYTES];
        let fits = MAX_KV_BUFFERED_BYTES / (MAX_KV_VALUE_BYTES + 8);
        for i in 0..fits {
            assert!(
                writes
                    .put(&scope(), format!("{i:08}"), Some(value.clone()))
                    .is_ok()
            );
        }
        assert!(matches!(
            writes.put(&scope(), "overflow".into(), Some(value.clone())),
            Err(KvFail::TooLarge(_))
        ));
        // Shrinking a value frees its bytes.
        assert!(writes.put(&scope(), "00000000".into(), None).is_ok());
        assert!(writes.put(&scope(), "overflow".into(), Some(value)).is_ok());
    }

    #[tokio::test]
    async fn a_runs_cache_answers_reads_of_its_own_session_after_the_first() {
        let backend = MemoryKv::default();
        let kv: Arc<dyn KvBackend> = Arc::new(backend.clone());
        let own = scope();
        let agent = KvScope {
            owner: KvOwner::Agent("agt_1".into()),
            ..scope()
        };
        for s in [&own, &agent] {
            backend.set(s, "k", b"1".to_vec()).await.unwrap();
        }
        let cache = KvCache::for_session("ses_1");
        let writes = KvWrites::reading_through(cache.clone());
        for s in [&own, &agent] {
            assert_eq!(
                stored(&kv, &writes, s, "k").await.ok(),
                Some(Some(b"1".to_vec()))
            );
            assert_eq!(stored(&kv, &writes, s, "absent").await.ok(), Some(None));
        }
        // Changed behind the run's back (which cannot happen to its own session's state):
        // the session's reads come from the cache, the agent's from the backend.
        for s in [&own, &agent] {
            backend.set(s, "k", b"2".to_vec()).await.unwrap();
            backend.set(s, "absent", b"x".to_vec()).await.unwrap();
        }
        assert_eq!(
            stored(&kv, &writes, &own, "k").await.ok(),
            Some(Some(b"1".to_vec()))
        );
        assert_eq!(stored(&kv, &writes, &own, "absent").await.ok(), Some(None));
        assert_eq!(
            stored(&kv, &writes, &agent, "k").await.ok(),
            Some(Some(b"2".to_vec()))
        );
        // A committed step's writes are what later steps read.
        let mut step = KvWrites::reading_through(cache.clone());
        step.put(&own, "k".into(), Some(b"3".to_vec()))
            .ok()
            .unwrap();
        step.put(&own, "absent".into(), None).ok().unwrap();
        cache.committed(&step);
        let later = KvWrites::reading_through(cache.clone());
        assert_eq!(
            stored(&kv, &later, &own, "k").await.ok(),
            Some(Some(b"3".to_vec()))
        );
        assert_eq!(stored(&kv, &later, &own, "absent").await.ok(), Some(None));
        // Bounded: past its limit it starts over (and reads the backend again).
        for i in 0..KvCache::MAX_ENTRIES {
            cache.remember(&own, &format!("filler{i}"), None);
        }
        assert_eq!(
            stored(&kv, &later, &own, "k").await.ok(),
            Some(Some(b"2".to_vec()))
        );
    }
}
