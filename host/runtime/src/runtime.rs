//! `Runtime`: the facade the server uses. It owns the engine, linker, compile cache,
//! backends, the concurrency limit and the registry; cheap to clone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{v0_1, v0_2};
use crate::cache::CompileCache;
use crate::config::RuntimeConfig;
use crate::engine::{self, Ticker};
use crate::error::{Error, Result};
use crate::host::{HostState, KvBackend, SecretSource};
use crate::plugin::{CallContext, CallOutcome, Plugin, Shared, ToolCall, ToolSpec};
use crate::registry::{self, LoadFailure, Registry, ScanReport};

/// The WASM capability runtime. Clones share everything.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field(
                "plugins",
                &self.registry.snapshot().keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (pool sized by `config`), starts the epoch ticker and links the
    /// host interfaces. Loads no plugins.
    pub fn new(
        config: RuntimeConfig,
        kv: Arc<dyn KvBackend>,
        secrets: Arc<dyn SecretSource>,
    ) -> Result<Self> {
        let engine = engine::build(&config)?;
        let ticker = Ticker::start(&engine)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        let link_err = |e: wasmtime::Error| Error::Engine(crate::error::chain(&e));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;
        // The imports of every supported WIT version (`log`, `kv`, `secrets`, `types`).
        v0_1::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(link_err)?;
        v0_2::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(link_err)?;
        let cache = CompileCache::new(&engine, config.cache_dir.clone());
        let permits = Arc::new(Semaphore::new(config.max_concurrent_calls as usize));
        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                linker,
                cache,
                config,
                kv,
                secrets,
                permits,
                _ticker: ticker,
            }),
            registry: Arc::new(Registry::default()),
        })
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Loads the plugin in `dir` without registering it (validation, tests, tools).
    pub async fn load_plugin(&self, dir: &Path) -> Result<Arc<Plugin>> {
        Plugin::load(self.shared.clone(), dir).await.map(Arc::new)
    }

    /// Registers a loaded plugin, replacing any with the same id; returns the old one.
    pub fn insert(&self, plugin: Arc<Plugin>) -> Option<Arc<Plugin>> {
        self.registry.insert(plugin)
    }

    /// Unregisters a plugin; in-flight calls finish normally.
    pub fn remove(&self, id: &str) -> Option<Arc<Plugin>> {
        let id = crate::id::CapabilityId::parse(id).ok()?;
        self.registry.remove(&id)
    }

    /// The loaded plugin with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.registry.get(id)
    }

    /// All loaded plugins, sorted by id.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.registry.snapshot().values().cloned().collect()
    }

    /// Plugin directories that failed to load (and why), as of the last scan.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.registry.failures()
    }

    /// Runs a tool of the plugin `id`. `Err` only if no such plugin is loaded; every
    /// per-call failure (trap, timeout, limit, plugin error) is in the outcome.
    pub async fn call_tool(
        &self,
        id: &str,
        ctx: &CallContext,
        call: &ToolCall,
    ) -> Result<CallOutcome> {
        let plugin = self
            .get(id)
            .ok_or_else(|| Error::NotLoaded(id.to_owned()))?;
        Ok(plugin.call_tool(ctx, call).await)
    }

    /// The system-prompt fragment of plugin `id` for this context.
    pub async fn system_prompt(&self, id: &str, ctx: &CallContext) -> Result<Option<String>> {
        let plugin = self
            .get(id)
            .ok_or_else(|| Error::NotLoaded(id.to_owned()))?;
        plugin.system_prompt(ctx).await
    }

    /// The tools of plugin `id` for this context (the agent's config may change them).
    pub async fn tools(&self, id: &str, ctx: &CallContext) -> Result<Vec<ToolSpec>> {
        let plugin = self
            .get(id)
            .ok_or_else(|| Error::NotLoaded(id.to_owned()))?;
        plugin.tools_for(ctx).await
    }

    /// Brings the registry in line with `plugins_dir`: loads new and changed plugin
    /// directories, unloads removed ones. A failing directory is recorded and skipped;
    /// it never stops the scan.
    pub async fn sync_dir(&self, plugins_dir: &Path) -> ScanReport {
        let _scan = self.registry.scan_lock.lock().await;
        let mut report = ScanReport::default();
        let dirs = match registry::plugin_dirs(plugins_dir) {
            Ok(dirs) => dirs,
            Err(e) => {
                tracing::warn!(dir = %plugins_dir.display(), error = %e, "cannot scan plugins directory");
                return report;
            }
        };
        for dir in &dirs {
            let Ok(fp) = registry::fingerprint(dir) else {
                continue;
            };
            if !self.registry.fingerprint_changed(dir, fp) {
                continue;
            }
            self.load_into_registry(dir, &mut report).await;
        }
        for gone in self.registry.forget_missing(plugins_dir, &dirs) {
            self.registry.clear_failure(&gone);
            for plugin in self.plugins() {
                if plugin.dir() == gone {
                    self.registry.remove(plugin.id());
                    tracing::info!(capability = %plugin.id(), "plugin removed");
                    report.removed.push(plugin.id().clone());
                }
            }
        }
        report
    }

    async fn load_into_registry(&self, dir: &Path, report: &mut ScanReport) {
        match self.load_plugin(dir).await {
            Ok(plugin) => {
                let existing = self.get(plugin.id().as_str());
                if let Some(other) = existing.as_ref().filter(|o| o.dir() != dir) {
                    let error = format!(
                        "duplicate capability id `{}`: already loaded from {}",
                        plugin.id(),
                        other.dir().display()
                    );
                    tracing::warn!(dir = %dir.display(), %error, "plugin not loaded");
                    self.registry.set_failure(dir, error);
                    report.failed.push(dir.to_path_buf());
                    return;
                }
                // The directory may have switched to a different id.
                for old in self.plugins() {
                    if old.dir() == dir && old.id() != plugin.id() {
                        self.registry.remove(old.id());
                        report.removed.push(old.id().clone());
                    }
                }
                self.registry.clear_failure(dir);
                tracing::info!(capability = %plugin.id(), version = %plugin.manifest().version,
                    digest = %plugin.digest(), tools = plugin.tools().len(), "plugin loaded");
                let id = plugin.id().clone();
                if self.registry.insert(plugin).is_some() {
                    report.replaced.push(id);
                } else {
                    report.added.push(id);
                }
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(dir = %dir.display(), %error, "plugin failed to load");
                self.registry.set_failure(dir, error);
                report.failed.push(dir.to_path_buf());
            }
        }
    }

    /// Scans `plugins_dir` every `interval` until `cancel` fires (see [`Self::sync_dir`]).
    pub fn spawn_watcher(
        &self,
        plugins_dir: PathBuf,
        interval: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let runtime = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {
                        runtime.sync_dir(&plugins_dir).await;
                    }
                }
            }
        })
    }

    /// How many calls can start right now without waiting.
    pub fn available_slots(&self) -> usize {
        self.shared.permits.available_permits()
    }

    /// The compile-cache file a component with this digest uses, if caching is on.
    pub fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        self.shared.cache.path_for(digest)
    }
}
