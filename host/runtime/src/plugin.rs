//! A loaded plugin: manifest, digest, effective permissions, the WIT version it targets, one
//! `InstancePre`, and the `info()`/`tools()` answers recorded at load. Every call (tool call
//! or hook) gets a fresh `Store` with a memory limit, an epoch deadline, optional fuel and an
//! output cap; its key-value writes are buffered in a [`KvWrites`] the caller commits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::component::{InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::{v0_1, v0_2};
use crate::cache::{CacheStatus, CompileCache, sha256_hex};
use crate::config::RuntimeConfig;
use crate::engine::Ticker;
use crate::error::{Error, Result};
use crate::host::{
    HostState, KvBackend, KvOwner, KvScope, KvWrites, LogBuffer, LogRecord, SecretSource,
};
use crate::http::HttpPolicy;
use crate::id::CapabilityId;
use crate::limits::{MemoryLimiter, classify, deadline_callback};
use crate::manifest::{DEFAULT_HOOK_TIMEOUT_MS, Hook, KvScopeKind, MANIFEST_FILE, Manifest};
use crate::permissions::Permissions;
use crate::telemetry::{Outcome, PluginMetrics};

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

/// What a `before-model` hook sees of the model call about to be made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelRequest {
    /// The user message that started the run.
    pub last_user_message: String,
    /// The namespaced names of the tools offered.
    pub tools: Vec<String>,
    /// The model call's step number in the run.
    pub step: u32,
}

/// A `before-model` hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDecision {
    /// Ask the model as planned.
    Continue,
    /// Append this text to the system prompt for this model call only.
    AddContext(String),
    /// Do not ask the model; the run fails with this reason.
    Block(String),
}

/// What `before-tool` and `after-tool` hooks see of a tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    /// The namespaced tool name (`<capability>__<tool>`).
    pub name: String,
    /// The arguments (after earlier hooks' rewrites).
    pub arguments: serde_json::Value,
    /// The model's id of the call.
    pub tool_call_id: String,
    /// The step number the call is recorded as.
    pub step: u32,
}

/// A `before-tool` hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolDecision {
    /// Run the call as it is.
    Continue,
    /// Run it with these arguments.
    Rewrite(serde_json::Value),
    /// Do not run it; the model gets the reason.
    Block(String),
    /// A person must approve the call first.
    RequireApproval(String),
}

/// A tool result as hooks see it: the output, or the error text the model would see.
pub type ToolResultView = std::result::Result<ToolOutput, String>;

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
    pre: InstancePre<HostState>,
    exports: Exports,
    info: CapabilityInfo,
    tools: Vec<ToolSpec>,
    imports: Vec<String>,
    cache_status: CacheStatus,
    memory_limit_mib: u64,
    timeout_ms: u64,
    hook_timeout_ms: u64,
    fuel: Option<u64>,
    metrics: PluginMetrics,
}

/// Where a component's exports are, by the WIT version it targets.
enum Exports {
    /// `everruns:capability@0.1.0`.
    V0_1(v0_1::exports::everruns::capability::capability::GuestIndices),
    /// `everruns:capability@0.2.0`, with `hooks` when the component exports it.
    V0_2 {
        capability: v0_2::exports::everruns::capability::capability::GuestIndices,
        hooks: Option<v0_2::exports::everruns::capability::hooks::GuestIndices>,
    },
}

impl Exports {
    /// Finds the `capability` export of a supported version (the newest first).
    fn find(pre: &InstancePre<HostState>) -> std::result::Result<Self, String> {
        if let Ok(capability) =
            v0_2::exports::everruns::capability::capability::GuestIndices::new(pre)
        {
            let hooks = v0_2::exports::everruns::capability::hooks::GuestIndices::new(pre).ok();
            return Ok(Exports::V0_2 { capability, hooks });
        }
        match v0_1::exports::everruns::capability::capability::GuestIndices::new(pre) {
            Ok(capability) => Ok(Exports::V0_1(capability)),
            Err(e) => Err(format!(
                "does not export everruns:capability/capability@0.2.0 or @0.1.0 ({})",
                crate::error::chain(&e)
            )),
        }
    }
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

/// The call context as every WIT version passes it.
struct WitContext {
    agent_id: String,
    session_id: String,
    run_id: String,
    idempotency_key: Option<String>,
    config: String,
}

/// A tool call or tool request as the WIT passes it (arguments as JSON text).
struct WitCall {
    name: String,
    arguments: String,
    tool_call_id: String,
    step: u32,
}

/// A tool output as the WIT passes it.
enum RawOutput {
    Text(String),
    Json(String),
}

/// A tool spec as the WIT passes it.
struct RawSpec {
    name: String,
    description: String,
    parameters_schema: String,
}

/// A `before-tool` answer as the WIT passes it.
enum RawToolDecision {
    Continue,
    Rewrite(String),
    Block(String),
    RequireApproval(String),
}

enum Request {
    Info,
    SystemPrompt(WitContext),
    Tools(WitContext),
    Call(WitContext, WitCall),
    BeforeModel(WitContext, ModelRequest),
    BeforeTool(WitContext, WitCall),
    AfterTool(WitContext, WitCall, std::result::Result<RawOutput, String>),
}

enum Response {
    Info(CapabilityInfo),
    SystemPrompt(Option<String>),
    Tools(Vec<RawSpec>),
    Call(std::result::Result<RawOutput, ToolError>),
    BeforeModel(ModelDecision),
    BeforeTool(RawToolDecision),
    AfterTool(Option<std::result::Result<RawOutput, String>>),
}

/// One instantiation: what to call, with which key-value view and deadline.
struct Invocation<'a> {
    kv_scope: Option<KvScope>,
    request: Request,
    /// The buffer the call reads through and writes into (writable); `None`: read-only.
    writes: Option<&'a mut KvWrites>,
    timeout_ms: u64,
}

/// `c` (a [`WitContext`]) as the `call-context` of the version whose `types` module is `$t`.
macro_rules! wit_context {
    ($t:ident, $c:expr) => {{
        let c: WitContext = $c;
        $t::CallContext {
            agent_id: c.agent_id,
            session_id: c.session_id,
            run_id: c.run_id,
            idempotency_key: c.idempotency_key,
            config: c.config,
        }
    }};
}

/// The capability calls of one WIT version (their generated types are distinct, their shape
/// the same).
macro_rules! capability_call {
    ($version:ident, $indices:expr, $store:expr, $instance:expr, $request:expr) => {{
        use $version::everruns::capability::types as t;
        let ctx = |c: WitContext| wit_context!(t, c);
        let guest = $indices.load(&mut *$store, $instance)?;
        Ok::<_, wasmtime::Error>(match $request {
            Request::Info => {
                let info = guest.call_info(&mut *$store).await?;
                Response::Info(CapabilityInfo {
                    id: info.id,
                    version: info.version,
                    description: info.description,
                })
            }
            Request::SystemPrompt(c) => {
                Response::SystemPrompt(guest.call_system_prompt(&mut *$store, &ctx(c)).await?)
            }
            Request::Tools(c) => Response::Tools(
                guest
                    .call_tools(&mut *$store, &ctx(c))
                    .await?
                    .into_iter()
                    .map(|s| RawSpec {
                        name: s.name,
                        description: s.description,
                        parameters_schema: s.parameters_schema,
                    })
                    .collect(),
            ),
            Request::Call(c, call) => {
                let call = t::ToolCall {
                    name: call.name,
                    arguments: call.arguments,
                };
                let result = guest.call_call_tool(&mut *$store, &ctx(c), &call).await?;
                Response::Call(match result {
                    Ok(t::ToolOutput::Text(text)) => Ok(RawOutput::Text(text)),
                    Ok(t::ToolOutput::Json(json)) => Ok(RawOutput::Json(json)),
                    Err(t::ToolError::InvalidArguments(m)) => Err(ToolError::InvalidArguments(m)),
                    Err(t::ToolError::NotFound(m)) => Err(ToolError::NotFound(m)),
                    Err(t::ToolError::Failed(m)) => Err(ToolError::Failed(m)),
                    Err(t::ToolError::Denied(m)) => Err(ToolError::Denied(m)),
                })
            }
            Request::BeforeModel(..) | Request::BeforeTool(..) | Request::AfterTool(..) => {
                unreachable!("hooks are dispatched before capability calls")
            }
        })
    }};
}

/// The hook calls (WIT 0.2.0).
async fn hook_call(
    indices: &v0_2::exports::everruns::capability::hooks::GuestIndices,
    store: &mut Store<HostState>,
    instance: &wasmtime::component::Instance,
    request: Request,
) -> wasmtime::Result<Response> {
    use v0_2::everruns::capability::types as t;
    use v0_2::exports::everruns::capability::hooks as h;
    let ctx = |c: WitContext| wit_context!(t, c);
    let tool_request = |c: WitCall| h::ToolRequest {
        name: c.name,
        arguments: c.arguments,
        tool_call_id: c.tool_call_id,
        step: c.step,
    };
    let from_output = |o: RawOutput| match o {
        RawOutput::Text(text) => t::ToolOutput::Text(text),
        RawOutput::Json(json) => t::ToolOutput::Json(json),
    };
    let to_output = |o: t::ToolOutput| match o {
        t::ToolOutput::Text(text) => RawOutput::Text(text),
        t::ToolOutput::Json(json) => RawOutput::Json(json),
    };
    let guest = indices.load(&mut *store, instance)?;
    Ok(match request {
        Request::BeforeModel(c, request) => {
            let request = h::ModelRequest {
                last_user_message: request.last_user_message,
                tools: request.tools,
                step: request.step,
            };
            Response::BeforeModel(
                match guest
                    .call_before_model(&mut *store, &ctx(c), &request)
                    .await?
                {
                    h::ModelDecision::Continue => ModelDecision::Continue,
                    h::ModelDecision::AddContext(text) => ModelDecision::AddContext(text),
                    h::ModelDecision::Block(reason) => ModelDecision::Block(reason),
                },
            )
        }
        Request::BeforeTool(c, call) => Response::BeforeTool(
            match guest
                .call_before_tool(&mut *store, &ctx(c), &tool_request(call))
                .await?
            {
                h::ToolDecision::Continue => RawToolDecision::Continue,
                h::ToolDecision::Rewrite(arguments) => RawToolDecision::Rewrite(arguments),
                h::ToolDecision::Block(reason) => RawToolDecision::Block(reason),
                h::ToolDecision::RequireApproval(reason) => {
                    RawToolDecision::RequireApproval(reason)
                }
            },
        ),
        Request::AfterTool(c, call, result) => {
            let result = result.map(from_output);
            Response::AfterTool(
                guest
                    .call_after_tool(&mut *store, &ctx(c), &tool_request(call), &result)
                    .await?
                    .map(|r| r.map(to_output)),
            )
        }
        _ => unreachable!("capability calls are dispatched to capability_call"),
    })
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
        let pre = shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid("imports something the host does not offer", e))?;
        let exports = Exports::find(&pre).map_err(|message| Error::InvalidComponent {
            path: component_path.clone(),
            message,
        })?;
        match &exports {
            Exports::V0_1(_) if !manifest.hooks.is_empty() => {
                return Err(field_err(
                    "hooks",
                    "the component targets everruns:capability@0.1.0, which has no hooks \
                     (hooks need @0.2.0)"
                        .into(),
                ));
            }
            Exports::V0_2 { hooks: None, .. } if !manifest.hooks.is_empty() => {
                return Err(field_err(
                    "hooks",
                    "the component does not export everruns:capability/hooks@0.2.0".into(),
                ));
            }
            _ => {}
        }
        let hook_timeout_ms = manifest
            .limits
            .hook_timeout_ms
            .unwrap_or(DEFAULT_HOOK_TIMEOUT_MS);

        let permissions = Arc::new(Permissions::effective(&manifest, &config.grants));
        let metrics = PluginMetrics::new(manifest.id.as_str());
        let mut plugin = Plugin {
            shared,
            dir: dir.to_path_buf(),
            digest,
            permissions,
            pre,
            exports,
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
            hook_timeout_ms,
            fuel: None,
            metrics,
        };
        plugin.fuel = plugin.manifest.limits.fuel;

        let info = match plugin
            .invoke(plugin.read_only(None, Request::Info))
            .await
            .0?
        {
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
    /// Wall-clock budget per hook call, in ms.
    pub fn hook_timeout_ms(&self) -> u64 {
        self.hook_timeout_ms
    }
    /// The `everruns:capability` version the component targets: `0.1.0` or `0.2.0`.
    pub fn wit_version(&self) -> &'static str {
        match self.exports {
            Exports::V0_1(_) => "0.1.0",
            Exports::V0_2 { .. } => "0.2.0",
        }
    }
    /// The hooks the host calls (the manifest's list; the component exports them).
    pub fn hooks(&self) -> &[Hook] {
        &self.manifest.hooks
    }
    /// Whether the host calls `hook` of this plugin.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.manifest.hooks.contains(&hook)
    }

    /// A read-only invocation with the per-call deadline.
    fn read_only(&self, kv_scope: Option<KvScope>, request: Request) -> Invocation<'static> {
        Invocation {
            kv_scope,
            request,
            writes: None,
            timeout_ms: self.timeout_ms,
        }
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
    /// What it writes is applied at once, not with a step (as in 0.1.0).
    pub async fn system_prompt(&self, ctx: &CallContext) -> Result<Option<String>> {
        let mut writes = KvWrites::default();
        let invocation = Invocation {
            kv_scope: self.kv_scope(ctx),
            request: Request::SystemPrompt(self.wit_context(ctx)),
            writes: Some(&mut writes),
            timeout_ms: self.timeout_ms,
        };
        let prompt = match self.invoke(invocation).await.0? {
            Response::SystemPrompt(p) => {
                if let Some(p) = &p {
                    self.check_size(p.len())?;
                    check_text(p)?;
                }
                p
            }
            _ => unreachable!("invoke answers SystemPrompt with SystemPrompt"),
        };
        if let Err(e) = writes.apply(self.shared.kv.as_ref()).await {
            tracing::warn!(capability = %self.manifest.id, error = %e, "writing plugin state failed");
        }
        Ok(prompt)
    }

    /// The tools for this context (the config may change them).
    pub async fn tools_for(&self, ctx: &CallContext) -> Result<Vec<ToolSpec>> {
        let specs = match self
            .invoke(self.read_only(None, Request::Tools(self.wit_context(ctx))))
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

    /// Runs one tool call in a fresh instance and writes its key-value writes straight to
    /// the backend (not atomically with anything): for callers without a journal. The
    /// executor uses [`Plugin::call_tool_buffered`].
    pub async fn call_tool(&self, ctx: &CallContext, call: &ToolCall) -> CallOutcome {
        let mut writes = KvWrites::default();
        let outcome = self.call_tool_buffered(ctx, call, &mut writes).await;
        if let Err(e) = writes.apply(self.shared.kv.as_ref()).await {
            tracing::warn!(capability = %self.manifest.id, error = %e, "writing plugin state failed");
        }
        outcome
    }

    /// Runs one tool call in a fresh instance. Its key-value writes go into `writes` (which
    /// it reads through), for the caller to commit with the call's journal step; a call that
    /// traps or times out leaves `writes` as it was.
    pub async fn call_tool_buffered(
        &self,
        ctx: &CallContext,
        call: &ToolCall,
        writes: &mut KvWrites,
    ) -> CallOutcome {
        let started = Instant::now();
        let kv_scope = self.kv_scope(ctx);
        let request = Request::Call(
            self.wit_context(ctx),
            WitCall {
                name: call.name.clone(),
                arguments: call.arguments.to_string(),
                tool_call_id: String::new(),
                step: 0,
            },
        );
        let span = tracing::info_span!(
            "plugin_call",
            capability = %self.manifest.id,
            tool = %call.name,
            run_id = %ctx.run_id,
        );
        let before = writes.clone();
        let invocation = Invocation {
            kv_scope,
            request,
            writes: Some(writes),
            timeout_ms: self.timeout_ms,
        };
        let (response, logs) = self.invoke(invocation).instrument(span).await;
        let result = match response {
            Err(e) => Err(ToolFailure::Runtime(e)),
            Ok(Response::Call(Ok(output))) => self.convert_output(output),
            Ok(Response::Call(Err(e))) => {
                let size = match &e {
                    ToolError::InvalidArguments(m)
                    | ToolError::NotFound(m)
                    | ToolError::Failed(m)
                    | ToolError::Denied(m) => m.len(),
                };
                let text = match &e {
                    ToolError::InvalidArguments(m)
                    | ToolError::NotFound(m)
                    | ToolError::Failed(m)
                    | ToolError::Denied(m) => m,
                };
                match self.check_size(size).and_then(|()| check_text(text)) {
                    Ok(()) => Err(ToolFailure::Plugin(e)),
                    Err(bad) => Err(ToolFailure::Runtime(bad)),
                }
            }
            Ok(_) => unreachable!("invoke answers Call with Call"),
        };
        if let Err(ToolFailure::Runtime(e)) = &result {
            tracing::warn!(capability = %self.manifest.id, tool = %call.name, error = %e, "tool call failed");
            // A call the host failed (limit, invalid output) commits nothing it wrote.
            *writes = before;
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

    /// Runs one hook in a fresh instance with the hook deadline; its key-value writes go
    /// into `writes` (left as they were when it fails).
    async fn hook(
        &self,
        hook: Hook,
        ctx: &CallContext,
        request: Request,
        writes: &mut KvWrites,
    ) -> Result<Response> {
        if !matches!(self.exports, Exports::V0_2 { hooks: Some(_), .. }) {
            return Err(Error::Invalid(format!(
                "capability `{}` does not export hooks",
                self.manifest.id
            )));
        }
        let span = tracing::info_span!(
            "plugin_hook",
            capability = %self.manifest.id,
            hook = hook.as_str(),
            run_id = %ctx.run_id,
        );
        let invocation = Invocation {
            kv_scope: self.kv_scope(ctx),
            request,
            writes: Some(writes),
            timeout_ms: self.hook_timeout_ms,
        };
        let (response, _logs) = self.invoke(invocation).instrument(span).await;
        if let Err(e) = &response {
            tracing::warn!(capability = %self.manifest.id, hook = hook.as_str(), error = %e, "hook failed");
        }
        response
    }

    /// Calls the `before-model` hook. When it fails, `writes` is left as it was.
    pub async fn before_model(
        &self,
        ctx: &CallContext,
        request: &ModelRequest,
        writes: &mut KvWrites,
    ) -> Result<ModelDecision> {
        let before = writes.clone();
        let request = Request::BeforeModel(self.hook_context(ctx), request.clone());
        let decided = match self.hook(Hook::BeforeModel, ctx, request, writes).await {
            Ok(Response::BeforeModel(decision)) => match &decision {
                ModelDecision::AddContext(text) | ModelDecision::Block(text) => self
                    .check_size(text.len())
                    .and_then(|()| check_text(text))
                    .map(|()| decision),
                ModelDecision::Continue => Ok(decision),
            },
            Ok(_) => unreachable!("invoke answers BeforeModel with BeforeModel"),
            Err(e) => Err(e),
        };
        if decided.is_err() {
            *writes = before;
        }
        decided
    }

    /// Calls the `before-tool` hook. When it fails, `writes` is left as it was.
    pub async fn before_tool(
        &self,
        ctx: &CallContext,
        request: &ToolRequest,
        writes: &mut KvWrites,
    ) -> Result<ToolDecision> {
        let before = writes.clone();
        let request = Request::BeforeTool(self.hook_context(ctx), wit_call(request));
        let decided = match self.hook(Hook::BeforeTool, ctx, request, writes).await {
            Ok(Response::BeforeTool(decision)) => self.tool_decision(decision),
            Ok(_) => unreachable!("invoke answers BeforeTool with BeforeTool"),
            Err(e) => Err(e),
        };
        if decided.is_err() {
            *writes = before;
        }
        decided
    }

    /// A `before-tool` answer, checked: sizes, text without NUL, rewritten arguments a JSON
    /// object.
    fn tool_decision(&self, decision: RawToolDecision) -> Result<ToolDecision> {
        Ok(match decision {
            RawToolDecision::Continue => ToolDecision::Continue,
            RawToolDecision::Rewrite(arguments) => {
                self.check_size(arguments.len())?;
                let arguments: serde_json::Value =
                    serde_json::from_str(&arguments).map_err(|e| {
                        Error::InvalidOutput(format!("rewritten arguments are not JSON: {e}"))
                    })?;
                if !arguments.is_object() {
                    return Err(Error::InvalidOutput(
                        "rewritten arguments must be a JSON object".into(),
                    ));
                }
                ToolDecision::Rewrite(arguments)
            }
            RawToolDecision::Block(reason) => {
                self.check_size(reason.len())?;
                check_text(&reason)?;
                ToolDecision::Block(reason)
            }
            RawToolDecision::RequireApproval(reason) => {
                self.check_size(reason.len())?;
                check_text(&reason)?;
                ToolDecision::RequireApproval(reason)
            }
        })
    }

    /// Calls the `after-tool` hook: `Some` replaces the result. When it fails, `writes` is
    /// left as it was.
    pub async fn after_tool(
        &self,
        ctx: &CallContext,
        request: &ToolRequest,
        result: &ToolResultView,
        writes: &mut KvWrites,
    ) -> Result<Option<ToolResultView>> {
        let result = match result {
            Ok(ToolOutput::Text(text)) => Ok(RawOutput::Text(text.clone())),
            Ok(ToolOutput::Json(json)) => Ok(RawOutput::Json(json.to_string())),
            Err(message) => Err(message.clone()),
        };
        let before = writes.clone();
        let request = Request::AfterTool(self.hook_context(ctx), wit_call(request), result);
        let decided = match self.hook(Hook::AfterTool, ctx, request, writes).await {
            Ok(Response::AfterTool(None)) => Ok(None),
            Ok(Response::AfterTool(Some(Ok(output)))) => self
                .convert_output(output)
                .map(|output| Some(Ok(output)))
                .map_err(|failure| match failure {
                    ToolFailure::Runtime(e) => e,
                    ToolFailure::Plugin(e) => Error::InvalidOutput(e.to_string()),
                }),
            Ok(Response::AfterTool(Some(Err(message)))) => self
                .check_size(message.len())
                .and_then(|()| check_text(&message))
                .map(|()| Some(Err(message))),
            Ok(_) => unreachable!("invoke answers AfterTool with AfterTool"),
            Err(e) => Err(e),
        };
        if decided.is_err() {
            *writes = before;
        }
        decided
    }

    /// A hook's context: no idempotency key.
    fn hook_context(&self, ctx: &CallContext) -> WitContext {
        let mut ctx = self.wit_context(ctx);
        ctx.idempotency_key = None;
        ctx
    }

    fn convert_output(&self, output: RawOutput) -> Result<ToolOutput, ToolFailure> {
        let fail = ToolFailure::Runtime;
        match output {
            RawOutput::Text(t) => {
                self.check_size(t.len()).map_err(fail)?;
                check_text(&t).map_err(fail)?;
                Ok(ToolOutput::Text(t))
            }
            RawOutput::Json(j) => {
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

    fn wit_context(&self, ctx: &CallContext) -> WitContext {
        WitContext {
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
    /// Returns the log lines even when the call fails. A call with a write buffer reads
    /// through it and, when it succeeds, leaves its writes in it; a failed call leaves the
    /// buffer as it was.
    async fn invoke(&self, invocation: Invocation<'_>) -> (Result<Response>, LogBuffer) {
        let Invocation {
            kv_scope,
            request,
            writes,
            timeout_ms,
        } = invocation;
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
        let kv_writable = writes.is_some();
        let before = writes.as_deref().cloned().unwrap_or_default();
        let mut state = self.host_state(kv_scope);
        state.kv_writes = before.clone();
        state.kv_writable = kv_writable;
        state.logs = LogBuffer {
            max_lines: config.max_log_lines,
            max_line_bytes: config.max_log_line_bytes,
            ..LogBuffer::default()
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
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut on_tick = deadline_callback(deadline);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| on_tick());

        let started = Instant::now();
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let is_hook = matches!(
                request,
                Request::BeforeModel(..) | Request::BeforeTool(..) | Request::AfterTool(..)
            );
            match &self.exports {
                Exports::V0_2 {
                    hooks: Some(hooks), ..
                } if is_hook => hook_call(hooks, &mut store, &instance, request).await,
                Exports::V0_2 { .. } if is_hook => {
                    Err(wasmtime::format_err!("the component does not export hooks"))
                }
                Exports::V0_1(indices) => {
                    let store = &mut store;
                    capability_call!(v0_1, indices, store, &instance, request)
                }
                Exports::V0_2 { capability, .. } => {
                    let store = &mut store;
                    capability_call!(v0_2, capability, store, &instance, request)
                }
            }
        };
        // The epoch deadline stops guest code; this outer timeout also covers time spent
        // in host calls (a slow HTTP response or KV backend).
        let grace = Duration::from_millis(timeout_ms) + Duration::from_millis(500);
        let result = match tokio::time::timeout(grace, run).await {
            Err(_) => Err(Error::Timeout(timeout_ms)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(e, timeout_ms, self.memory_limit_mib)),
        };
        let result = match result {
            // A limiter hit may surface as a guest abort (e.g. Rust's alloc error handler)
            // rather than our typed error; the limiter remembers.
            Err(Error::Trap(_)) if store.data().limiter.hit => Err(Error::MemoryLimit {
                limit_mib: self.memory_limit_mib,
            }),
            other => other,
        };
        let data = store.data_mut();
        let outcome = match &result {
            Ok(Response::Call(Err(_))) | Err(_) if data.http.denied => Outcome::Denied,
            Ok(Response::Call(Err(_))) => Outcome::ToolError,
            Ok(_) => Outcome::Ok,
            Err(Error::Timeout(_)) => Outcome::Timeout,
            Err(_) => Outcome::Trap,
        };
        self.metrics.record(outcome, started.elapsed());
        if let Some(writes) = writes {
            *writes = if result.is_ok() {
                std::mem::take(&mut data.kv_writes)
            } else {
                before
            };
        }
        let logs = std::mem::take(&mut data.logs);
        (result, logs)
    }

    /// A call's store state: empty WASI, the HTTP policy, the memory limiter, and the
    /// plugin's view of key-value state (read-only, nothing buffered) and secrets.
    fn host_state(&self, kv_scope: Option<KvScope>) -> HostState {
        HostState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http: HttpPolicy {
                plugin: self.manifest.id.clone(),
                permissions: self.permissions.clone(),
                egress_denied: self.metrics.egress_denied.clone(),
                denied: false,
            },
            limiter: MemoryLimiter {
                max_bytes: (self.memory_limit_mib * 1024 * 1024) as usize,
                hit: false,
            },
            plugin: self.manifest.id.clone(),
            permissions: self.permissions.clone(),
            kv_scope,
            kv: self.shared.kv.clone(),
            kv_writes: KvWrites::default(),
            kv_writable: false,
            secrets: self.shared.secrets.clone(),
            logs: LogBuffer::default(),
        }
    }
}

/// Text a plugin returns must not contain NUL (nothing downstream can store it).
fn check_text(text: &str) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::InvalidOutput(
            "the text contains a NUL character".into(),
        ));
    }
    Ok(())
}

/// A tool request as the WIT passes it.
fn wit_call(request: &ToolRequest) -> WitCall {
    WitCall {
        name: request.name.clone(),
        arguments: request.arguments.to_string(),
        tool_call_id: request.tool_call_id.clone(),
        step: request.step,
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
        let mut store = Store::new(&self.shared.engine, self.host_state(None));
        store.limiter(|s| &mut s.limiter);
        if self.shared.config.fuel {
            store.set_fuel(u64::MAX).map_err(fail)?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
        let instance = self.pre.instantiate_async(&mut store).await.map_err(fail)?;
        let ctx = self.wit_context(ctx);
        let mut latencies = Vec::with_capacity(n);
        macro_rules! calls {
            ($version:ident, $indices:expr) => {{
                use $version::everruns::capability::types as t;
                let guest = $indices.load(&mut store, &instance).map_err(fail)?;
                let ctx = wit_context!(t, ctx);
                let call = t::ToolCall {
                    name: call.name.clone(),
                    arguments: call.arguments.to_string(),
                };
                for _ in 0..n {
                    let t = Instant::now();
                    let out = guest
                        .call_call_tool(&mut store, &ctx, &call)
                        .await
                        .map_err(fail)?;
                    latencies.push(t.elapsed());
                    std::hint::black_box(out).ok();
                }
            }};
        }
        match &self.exports {
            Exports::V0_1(indices) => calls!(v0_1, indices),
            Exports::V0_2 { capability, .. } => calls!(v0_2, capability),
        }
        Ok(latencies)
    }
}
