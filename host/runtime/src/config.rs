//! `RuntimeConfig`: the operator's knobs for the runtime, in one typed value.

use std::path::PathBuf;

use crate::permissions::Grants;

/// How the runtime is sized and what it allows. `Default` is a sane single-node setup.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How many plugin calls may run at once across all plugins. The instance pool is
    /// sized to this; further calls wait for a slot.
    pub max_concurrent_calls: u32,
    /// The largest linear memory any plugin may have, in MiB. Each pool slot reserves
    /// this much address space; a manifest may ask for less, never more.
    pub max_memory_mib: u64,
    /// Memory limit for plugins whose manifest sets none, in MiB.
    pub default_memory_mib: u64,
    /// Wall-clock budget per call for plugins whose manifest sets none, in ms.
    pub default_timeout_ms: u64,
    /// Largest accepted output (tool output, prompt fragment, tool list), in bytes.
    pub max_output_bytes: usize,
    /// Log lines kept per call; further lines are counted and dropped.
    pub max_log_lines: usize,
    /// Longest log line kept, in bytes; longer lines are truncated.
    pub max_log_line_bytes: usize,
    /// Turn on fuel metering in the engine so manifests can set `limits.fuel`. Costs a
    /// little speed on every call; when off, a manifest asking for fuel fails to load.
    pub fuel: bool,
    /// Where compiled components are cached (`None`: compile on every load). The
    /// directory must be trusted: it holds native code the server will run.
    pub cache_dir: Option<PathBuf>,
    /// What the operator grants to plugins (intersected with what manifests ask for).
    pub grants: Grants,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 256,
            max_memory_mib: 64,
            default_memory_mib: 32,
            default_timeout_ms: 10_000,
            max_output_bytes: 1024 * 1024,
            max_log_lines: 200,
            max_log_line_bytes: 4096,
            fuel: true,
            cache_dir: None,
            grants: Grants::default(),
        }
    }
}
