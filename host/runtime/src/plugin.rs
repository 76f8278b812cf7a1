//! A loaded plugin: manifest, digest, effective permissions, one `InstancePre`, and the
//! `info()`/`tools()` answers recorded at load. Every call gets a fresh `Store` with a
//! memory limit, an epoch deadline, optional fuel and an output cap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::everruns::capability::types as wit;
use crate::bindings::{Plugin as PluginBindings, PluginPre};
use crate::cache::{CacheStatus, CompileCache, sha256_hex};
use crate::config::RuntimeConfig;
use crate::engine::Ticker;
use crate::error::{Error, Result};
use crate::host::{HostState, KvBackend, KvOwner, KvScope, LogBuffer, LogRecord, SecretSource};
use crate::http::HttpPolicy;
use crate::id::CapabilityId;
use crate::limits::{MemoryLimiter, classify, deadline_callback};
use crate::manifest::{KvScopeKind, MANIFEST_FILE, Manifest};
use crate::permissions::Permissions;

/// Everything plugins share: the engine, the linker, the cache, backends and the
/// concurrency limit. Owned by [`crate::Runtime`]; plugins keep it alive while in use.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) cache: CompileCache,
    pub(crate) config: RuntimeConfig,
    pub(crate) kv: Arc<dyn KvBackend>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) _ticker: Ticker,
}

/// Who is calling: ids, idempotency key, and the agent's config for this plugin.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The agent (`agt_...`).
    pub agent_id: String,
    /// The session (`ses_...`).
    pub session_id: String,
    /// The run.
    pub run_id: String,
    /// Stable across retries of the same tool step.
    pub idempotency_key: Option<String>,
    /// The agent's settings for this plugin; overlaid on the manifest defaults.
    pub config: Option<serde_json::Value>,
}

/// A tool call from the model.
#[derive(Debug, Clone)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments (normally a JSON object).
    pub arguments: serde_json::Value,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityInfo {
    /// Capability id (equals the manifest's).
    pub id: String,
    /// Version (equals the manifest's).
    pub version: String,
    /// One line for humans.
    pub description: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name, unique within the plugin.
    pub name: String,
    /// Description for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

/// A successful tool result.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutput {
    /// Plain text.
    Text(String),
    /// A JSON document.
    Json(serde_json::Value),
}

/// An error the plugin returned: data for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// Bad arguments.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// Unknown tool or object.
    #[error("not found: {0}")]
    NotFound(String),
    /// The tool failed.
    #[error("failed: {0}")]
    Failed(String),
    /// The plugin refused.
    #[error("denied: {0}")]
    Denied(String),
}

/// Why a tool call did not produce output.
#[derive(Debug, thiserror::Error)]
pub enum ToolFailure {
    /// The plugin returned an error (data for the model).
    #[error("{0}")]
    Plugin(ToolError),
    /// The host stopped or rejected the call (timeout, limit, trap).
    #[error("{0}")]
    Runtime(Error),
}

/// The record of one tool call: its result plus what the step should store.
#[derive(Debug)]
pub struct CallOutcome {
    /// Output, plugin error, or host failure.
    pub result: Result<ToolOutput, ToolFailure>,
    /// Lines the plugin logged (capped).
    pub logs: Vec<LogRecord>,
    /// Lines dropped beyond the cap.
    pub logs_dropped: u64,
    /// The plugin that ran.
    pub capability: CapabilityId,
    /// Its version.
    pub version: String,
    /// sha256 of the component that ran.
    pub digest: String,
    /// Wall-clock time of the call, including waiting for a slot.
    pub elapsed: Duration,
}

/// A plugin ready to be called. Cheap to share (`Arc<Plugin>`); a call keeps using the
/// version it started with even if the registry replaces it meanwhile.
pub struct Plugin {
    shared: Arc<Shared>,
    manifest: Manifest,
    dir: PathBuf,
    digest: String,
    permissions: Arc<Permissions>,
    pre: PluginPre<HostState>,
    info: CapabilityInfo,
    tools: Vec<ToolSpec>,
    imports: Vec<String>,
    cache_status: CacheStatus,
    memory_limit_mib: u64,
    timeout_ms: u64,
    fuel: Option<u64>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.manifest.id)
            .field("version", &self.manifest.version)
            .field("digest", &self.digest)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

enum Request {
    Info,
    SystemPrompt(wit::CallContext),
    Tools(wit::CallContext),
    Call(wit::CallContext, wit::ToolCall),
}

enum Response {
    Info(wit::CapabilityInfo),
    SystemPrompt(Option<String>),
    Tools(Vec<wit::ToolSpec>),
    Call(Result<wit::ToolOutput, wit::ToolError>),
}

impl Plugin {
    /// Loads the plugin in `dir` (which holds `capability.toml`): parses the manifest,
    /// checks the digest, compiles (or loads from cache), links against the host, then
    /// calls `info()` and `tools()` once.
    pub(crate) async fn load(shared: Arc<Shared>, dir: &Path) -> Result<Plugin> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = Manifest::from_file(&manifest_path)?;
        let config = &shared.config;
        let field_err = |field: &str, message: String| Error::Manifest {
            path: manifest_path.clone(),
            field: field.into(),
            message,
        };
        let memory_limit_mib = manifest
            .limits
            .memory_mib
            .unwrap_or(config.default_memory_mib);
        if memory_limit_mib > config.max_memory_mib {
            return Err(field_err(
                "limits.memory_mib",
                format!(
                    "{memory_limit_mib} exceeds the server's maximum of {} MiB",
                    config.max_memory_mib
                ),
            ));
        }
        if manifest.limits.fuel.is_some() && !config.fuel {
            return Err(field_err(
                "limits.fuel",
                "fuel metering is disabled on this server".into(),
            ));
        }
        let timeout_ms = manifest
            .limits
            .timeout_ms
            .unwrap_or(config.default_timeout_ms);

        let component_path = dir.join(&manifest.component);
        let wasm = tokio::fs::read(&component_path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", component_path.display()), e))?;
        let digest = sha256_hex(&wasm);
        if let Some(expected) = &manifest.sha256
            && *expected != digest
        {
            return Err(Error::DigestMismatch {
                path: component_path,
                expected: expected.clone(),
                actual: digest,
            });
        }

        // Compilation is CPU-bound (up to seconds for big guests): keep it off the
        // async worker threads.
        let (component, cache_status) = {
            let shared = shared.clone();
            let digest = digest.clone();
            let path = component_path.clone();
            tokio::task::spawn_blocking(move || {
                shared.cache.load(&shared.engine, &wasm, &digest, &path)
            })
            .await
            .map_err(|e| Error::Engine(format!("compile task failed: {e}")))??
        };

        let imports = component
            .component_type()
            .imports(&shared.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let invalid = |what: &str, e: wasmtime::Error| Error::InvalidComponent {
            path: component_path.clone(),
            message: format!("{what}: {}", crate::error::chain(&e)),
        };
        let instance_pre = shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid("imports something the host does not offer", e))?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| invalid("does not export everruns:capability/capability@0.1.0", e))?;

        let permissions = Arc::new(Permissions::effective(&manifest, &config.grants));
        let mut plugin = Plugin {
            shared,
            dir: dir.to_path_buf(),
            digest,
            permissions,
            pre,
            info: CapabilityInfo {
                id: manifest.id.to_string(),
                version: manifest.version.clone(),
                description: manifest.description.clone(),
            },
            manifest,
            tools: Vec::new(),
            imports,
            cache_status,
            memory_limit_mib,
            timeout_ms,
            fuel: None,
        };
        plugin.fuel = plugin.manifest.limits.fuel;

        let info = match plugin.invoke(None, Request::Info).await.0? {
            Response::Info(info) => info,
            _ => unreachable!("invoke answers Info with Info"),
        };
        if info.id != plugin.manifest.id.as_str() || info.version != plugin.manifest.version {
            return Err(Error::InfoMismatch(format!(
                "plugin says {} {}, manifest says {} {}",
                info.id, info.version, plugin.manifest.id, plugin.manifest.version
            )));
        }
        plugin.info = CapabilityInfo {
            id: info.id,
            version: info.version,
            description: info.description,
        };
        plugin.tools = plugin.tools_for(&CallContext::default()).await?;
        Ok(plugin)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The capability id.
    pub fn id(&self) -> &CapabilityId {
        &self.manifest.id
    }
    /// The plugin's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Lowercase hex sha256 of the component.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// What `info()` returned at load.
    pub fn info(&self) -> &CapabilityInfo {
        &self.info
    }
    /// What `tools()` returned at load (empty context, default config).
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }
    /// The component's imports (interface names, e.g. `wasi:http/outgoing-handler@0.2.4`).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
    /// The effective permissions.
    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }
    /// Whether the compiled code came from the cache.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }
    /// Memory limit per call, in MiB.
    pub fn memory_limit_mib(&self) -> u64 {
        self.memory_limit_mib
    }
    /// Wall-clock budget per call, in ms.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// The key-value namespace of a call in `ctx`: this plugin plus the agent or session
    /// the manifest asked for; `None` without the permission or without an owner id.
    fn kv_scope(&self, ctx: &CallContext) -> Option<KvScope> {
        self.permissions.kv.and_then(|kind| {
            let owner = match kind {
                KvScopeKind::Agent => KvOwner::Agent(ctx.agent_id.clone()),
                KvScopeKind::Session => KvOwner::Session(ctx.session_id.clone()),
            };
            let id = match &owner {
                KvOwner::Agent(id) | KvOwner::Session(id) => id,
            };
            (!id.is_empty()).then(|| KvScope {
                plugin: self.manifest.id.clone(),
                owner,
            })
        })
    }

    /// The plugin's system-prompt fragment for this context. The plugin may read its
    /// key-value state (e.g. to list what it remembers).
    pub async fn system_prompt(&self, ctx: &CallContext) -> Result<Option<String>> {
        match self
            .invoke(
                self.kv_scope(ctx),
                Request::SystemPrompt(self.wit_context(ctx)),
            )
            .await
            .0?
        {
            Response::SystemPrompt(p) => {
                if let Some(p) = &p {
                    self.check_size(p.len())?;
                }
                Ok(p)
            }
            _ => unreachable!("invoke answers SystemPrompt with SystemPrompt"),
        }
    }

    /// The tools for this context (the config may change them).
    pub async fn tools_for(&self, ctx: &CallContext) -> Result<Vec<ToolSpec>> {
        let specs = match self
            .invoke(None, Request::Tools(self.wit_context(ctx)))
            .await
            .0?
        {
            Response::Tools(t) => t,
            _ => unreachable!("invoke answers Tools with Tools"),
        };
        let total: usize = specs
            .iter()
            .map(|s| s.name.len() + s.description.len() + s.parameters_schema.len())
            .sum();
        self.check_size(total)?;
        let mut tools: Vec<ToolSpec> = Vec::with_capacity(specs.len());
        for spec in specs {
            let valid_name = !spec.name.is_empty()
                && spec.name.len() <= 64
                && spec
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name || tools.iter().any(|t| t.name == spec.name) {
                return Err(Error::InvalidOutput(format!(
                    "tool name `{}` is invalid or duplicated",
                    spec.name
                )));
            }
            let parameters: serde_json::Value = serde_json::from_str(&spec.parameters_schema)
                .map_err(|e| {
                    Error::InvalidOutput(format!("tool `{}`: schema is not JSON: {e}", spec.name))
                })?;
            if !parameters.is_object() {
                return Err(Error::InvalidOutput(format!(
                    "tool `{}`: schema must be a JSON object",
                    spec.name
                )));
            }
            tools.push(ToolSpec {
                name: spec.name,
                description: spec.description,
                parameters,
            });
        }
        Ok(tools)
    }

    /// Runs one tool call in a fresh instance.
    pub async fn call_tool(&self, ctx: &CallContext, call: &ToolCall) -> CallOutcome {
        let started = Instant::now();
        let kv_scope = self.kv_scope(ctx);
        let request = Request::Call(
            self.wit_context(ctx),
            wit::ToolCall {
                name: call.name.clone(),
                arguments: call.arguments.to_string(),
            },
        );
        let span = tracing::info_span!(
            "plugin_call",
            capability = %self.manifest.id,
            tool = %call.name,
            run_id = %ctx.run_id,
        );
        let (response, logs) = self.invoke(kv_scope, request).instrument(span).await;
        let result = match response {
            Err(e) => Err(ToolFailure::Runtime(e)),
            Ok(Response::Call(Ok(output))) => self.convert_output(output),
            Ok(Response::Call(Err(e))) => {
                let (size, e) = match e {
                    wit::ToolError::InvalidArguments(m) => {
                        (m.len(), ToolError::InvalidArguments(m))
                    }
                    wit::ToolError::NotFound(m) => (m.len(), ToolError::NotFound(m)),
                    wit::ToolError::Failed(m) => (m.len(), ToolError::Failed(m)),
                    wit::ToolError::Denied(m) => (m.len(), ToolError::Denied(m)),
                };
                match self.check_size(size) {
                    Ok(()) => Err(ToolFailure::Plugin(e)),
                    Err(too_large) => Err(ToolFailure::Runtime(too_large)),
                }
            }
            Ok(_) => unreachable!("invoke answers Call with Call"),
        };
        if let Err(ToolFailure::Runtime(e)) = &result {
            tracing::warn!(capability = %self.manifest.id, tool = %call.name, error = %e, "tool call failed");
        }
        CallOutcome {
            result,
            logs: logs.records,
            logs_dropped: logs.dropped,
            capability: self.manifest.id.clone(),
            version: self.manifest.version.clone(),
            digest: self.digest.clone(),
            elapsed: started.elapsed(),
        }
    }

    fn convert_output(&self, output: wit::ToolOutput) -> Result<ToolOutput, ToolFailure> {
        let fail = ToolFailure::Runtime;
        match output {
            wit::ToolOutput::Text(t) => {
                self.check_size(t.len()).map_err(fail)?;
                Ok(ToolOutput::Text(t))
            }
            wit::ToolOutput::Json(j) => {
                self.check_size(j.len()).map_err(fail)?;
                serde_json::from_str(&j)
                    .map(ToolOutput::Json)
                    .map_err(|e| fail(Error::InvalidOutput(e.to_string())))
            }
        }
    }

    fn check_size(&self, size: usize) -> Result<()> {
        let limit = self.shared.config.max_output_bytes;
        if size > limit {
            return Err(Error::OutputTooLarge {
                size: size as u64,
                limit: limit as u64,
            });
        }
        Ok(())
    }

    fn wit_context(&self, ctx: &CallContext) -> wit::CallContext {
        wit::CallContext {
            agent_id: ctx.agent_id.clone(),
            session_id: ctx.session_id.clone(),
            run_id: ctx.run_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            config: self
                .manifest
                .effective_config(ctx.config.as_ref())
                .to_string(),
        }
    }

    /// Instantiates the plugin in a fresh store and runs one export, within the limits.
    /// Returns the log lines even when the call fails.
    async fn invoke(
        &self,
        kv_scope: Option<KvScope>,
        request: Request,
    ) -> (Result<Response>, LogBuffer) {
        let shared = &self.shared;
        let config = &shared.config;
        // The semaphore is sized to the instance pool and never closed.
        let _permit = match shared.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => {
                return (
                    Err(Error::Engine("runtime is shutting down".into())),
                    LogBuffer::default(),
                );
            }
        };
        let state = HostState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http: HttpPolicy {
                plugin: self.manifest.id.clone(),
                permissions: self.permissions.clone(),
            },
            limiter: MemoryLimiter {
                max_bytes: (self.memory_limit_mib * 1024 * 1024) as usize,
                hit: false,
            },
            plugin: self.manifest.id.clone(),
            permissions: self.permissions.clone(),
            kv_scope,
            kv: shared.kv.clone(),
            secrets: shared.secrets.clone(),
            logs: LogBuffer {
                max_lines: config.max_log_lines,
                max_line_bytes: config.max_log_line_bytes,
                ..LogBuffer::default()
            },
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        if config.fuel {
            let fuel = self.fuel.unwrap_or(u64::MAX);
            if let Err(e) = store.set_fuel(fuel) {
                return (
                    Err(Error::Engine(crate::error::chain(&e))),
                    LogBuffer::default(),
                );
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.timeout_ms);
        let mut on_tick = deadline_callback(deadline);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| on_tick());

        let run = async {
            let bindings: PluginBindings = self.pre.instantiate_async(&mut store).await?;
            let guest = bindings.everruns_capability_capability();
            Ok::<_, wasmtime::Error>(match request {
                Request::Info => Response::Info(guest.call_info(&mut store).await?),
                Request::SystemPrompt(ctx) => {
                    Response::SystemPrompt(guest.call_system_prompt(&mut store, &ctx).await?)
                }
                Request::Tools(ctx) => Response::Tools(guest.call_tools(&mut store, &ctx).await?),
                Request::Call(ctx, call) => {
                    Response::Call(guest.call_call_tool(&mut store, &ctx, &call).await?)
                }
            })
        };
        // The epoch deadline stops guest code; this outer timeout also covers time spent
        // in host calls (a slow HTTP response or KV backend).
        let grace = Duration::from_millis(self.timeout_ms) + Duration::from_millis(500);
        let result = match tokio::time::timeout(grace, run).await {
            Err(_) => Err(Error::Timeout(self.timeout_ms)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(e, self.timeout_ms, self.memory_limit_mib)),
        };
        let result = match result {
            // A limiter hit may surface as a guest abort (e.g. Rust's alloc error handler)
            // rather than our typed error; the limiter remembers.
            Err(Error::Trap(_)) if store.data().limiter.hit => Err(Error::MemoryLimit {
                limit_mib: self.memory_limit_mib,
            }),
            other => other,
        };
        let logs = std::mem::take(&mut store.data_mut().logs);
        (result, logs)
    }
}

impl Plugin {
    /// For the benchmark only: instantiates once and calls `call` `n` times on the same
    /// instance, returning each call's latency. Production calls always use a fresh
    /// store ([`Plugin::call_tool`]); this measures what that isolation costs.
    #[doc(hidden)]
    pub async fn bench_reused_instance(
        &self,
        ctx: &CallContext,
        call: &ToolCall,
        n: usize,
    ) -> Result<Vec<Duration>> {
        let fail = |e: wasmtime::Error| Error::Trap(crate::error::chain(&e));
        let state = HostState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http: HttpPolicy {
                plugin: self.manifest.id.clone(),
                permissions: self.permissions.clone(),
            },
            limiter: MemoryLimiter {
                max_bytes: (self.memory_limit_mib * 1024 * 1024) as usize,
                hit: false,
            },
            plugin: self.manifest.id.clone(),
            permissions: self.permissions.clone(),
            kv_scope: None,
            kv: self.shared.kv.clone(),
            secrets: self.shared.secrets.clone(),
            logs: LogBuffer::default(),
        };
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.shared.config.fuel {
            store.set_fuel(u64::MAX).map_err(fail)?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        let bindings: PluginBindings =
            self.pre.instantiate_async(&mut store).await.map_err(fail)?;
        let guest = bindings.everruns_capability_capability();
        let ctx = self.wit_context(ctx);
        let call = wit::ToolCall {
            name: call.name.clone(),
            arguments: call.arguments.to_string(),
        };
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let out = guest
                .call_call_tool(&mut store, &ctx, &call)
                .await
                .map_err(fail)?;
            latencies.push(t.elapsed());
            std::hint::black_box(out).ok();
        }
        Ok(latencies)
    }
}
