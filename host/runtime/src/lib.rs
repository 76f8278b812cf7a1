//! The WASM capability host of Everruns: loads plugin components, sandboxes every call,
//! and is the only crate that knows wasmtime.
//!
//! Module map:
//! - `config`: [`RuntimeConfig`], the operator's knobs (pool size, limits, cache, grants).
//! - `engine`: the one wasmtime `Engine` (async, epoch interruption, pooling allocator,
//!   optional fuel) and the 10 ms epoch ticker thread.
//! - `cache`: on-disk compiled-component cache keyed by sha256 + engine compatibility.
//! - `manifest`: `capability.toml` parsing and validation ([`Manifest`]).
//! - `permissions`: host patterns, operator [`Grants`], effective [`Permissions`],
//!   public-address checks.
//! - `bindings`: host bindings generated from `wit/0.1.0` and `wit/0.2.0` (world `plugin`
//!   of each; components of both versions load side by side).
//! - `host`: per-call store state and the `log`, `kv`, `secrets` host interfaces, the
//!   call's buffered key-value writes ([`KvWrites`]), and the [`KvBackend`] and
//!   [`SecretSource`] traits the server implements.
//! - `http`: `wasi:http` outgoing requests checked against allowed hosts and resolved
//!   addresses (SSRF protection).
//! - `limits`: the memory limiter, deadlines, and trap-to-[`Error`] mapping.
//! - `plugin`: a loaded [`Plugin`] and its calls and hooks (fresh `Store` per call).
//! - `registry`: the loaded plugin set and the plugins-directory scanner.
//! - `runtime`: [`Runtime`], the facade the server holds.
//! - `install`: `check` / `install` / `list` / `remove` for the CLI.
//! - `id`: [`CapabilityId`].
//! - `telemetry`: each plugin's Prometheus handles (calls by outcome, duration, refused
//!   egress).
//! - `error`: [`Error`] and [`Result`].
//!
//! Invariants: a plugin never crashes the host (traps and limit hits become
//! [`ToolFailure::Runtime`]); plugin-returned errors are data ([`ToolFailure::Plugin`]);
//! nothing here reads the environment or knows HTTP routes or SQL.

mod bindings;
mod cache;
mod config;
mod engine;
mod error;
mod host;
mod http;
mod id;
mod install;
mod limits;
mod manifest;
mod permissions;
mod plugin;
mod registry;
mod runtime;
mod telemetry;

pub use cache::CacheStatus;
pub use config::RuntimeConfig;
pub use error::{Error, Result};
pub use host::{
    BackendError, KvBackend, KvCache, KvOwner, KvScope, KvWrites, LogLevel, LogRecord,
    MAX_KV_BUFFERED_BYTES, MAX_KV_BUFFERED_KEYS, MAX_KV_KEY_BYTES, MAX_KV_LIST, MAX_KV_VALUE_BYTES,
    MemoryKv, MemorySecrets, SecretSource,
};
pub use id::CapabilityId;
pub use install::{InstallStep, InstalledPlugin, PluginReport, check, install, list, remove};
pub use manifest::{
    DEFAULT_HOOK_TIMEOUT_MS, Hook, KvScopeKind, Limits, MANIFEST_FILE, MAX_HOOK_TIMEOUT_MS,
    MAX_TIMEOUT_MS, Manifest, OnError, RequestedPermissions,
};
pub use permissions::{Grant, Grants, HostPattern, KvQuota, Permissions, Scheme, is_public_ip};
pub use plugin::{
    CallContext, CallOutcome, CapabilityInfo, ModelDecision, ModelRequest, Plugin, ToolCall,
    ToolDecision, ToolError, ToolFailure, ToolOutput, ToolRequest, ToolResultView, ToolSpec,
};
pub use registry::{LoadFailure, ScanReport};
pub use runtime::Runtime;
