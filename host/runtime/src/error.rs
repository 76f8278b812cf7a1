//! The crate's error type: load failures, limit hits and traps, each a typed variant.
//!
//! An error a plugin *returns* (`tool-error` in the WIT) is not here: it is data, carried in
//! [`crate::ToolError`]. Everything here is the host's verdict about a plugin or a call.

use std::path::PathBuf;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest could not be read or is invalid; `field` names the offending key
    /// (dotted path, e.g. `permissions.allowed_hosts[1]`) when one can be named.
    #[error("invalid manifest {path}: {field}: {message}", path = path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Dotted path of the offending field, or `.` for the document.
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// The component's sha256 differs from the one in the manifest.
    #[error("component digest mismatch for {path}: manifest says {expected}, file is {actual}", path = path.display())]
    DigestMismatch {
        /// The component file.
        path: PathBuf,
        /// Digest from the manifest.
        expected: String,
        /// Digest of the file.
        actual: String,
    },

    /// The component could not be compiled, or does not match the `plugin` world (missing
    /// exports, or imports the host does not offer).
    #[error("invalid component {path}: {message}", path = path.display())]
    InvalidComponent {
        /// The component file.
        path: PathBuf,
        /// Why (the wasmtime message, with its cause chain).
        message: String,
    },

    /// The plugin's own `info()` disagrees with its manifest.
    #[error("plugin info does not match manifest: {0}")]
    InfoMismatch(String),

    /// No plugin with this id is loaded.
    #[error("no capability `{0}` is loaded")]
    NotLoaded(String),

    /// No plugin with this id is installed in the plugins directory.
    #[error("no capability `{0}` is installed")]
    NotInstalled(String),

    /// A capability id that is not `[a-z0-9][a-z0-9_-]{{0,63}}`.
    #[error("`{0}` is not a valid capability id (lowercase letters, digits, `-`, `_`; 1-64 chars)")]
    InvalidId(String),

    /// The call ran past its wall-clock budget.
    #[error("plugin call timed out after {0} ms")]
    Timeout(u64),

    /// The plugin tried to grow its memory past its limit.
    #[error("plugin exceeded its memory limit of {limit_mib} MiB")]
    MemoryLimit {
        /// The limit in MiB.
        limit_mib: u64,
    },

    /// The plugin exhausted its call stack (deep or infinite recursion).
    #[error("plugin overflowed its stack")]
    StackOverflow,

    /// The plugin ran out of fuel (instruction budget).
    #[error("plugin exhausted its fuel budget")]
    FuelExhausted,

    /// The plugin produced more output than the host accepts.
    #[error("plugin output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// Size of the output (or a lower bound when the guest was stopped early).
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The plugin declared JSON output that does not parse.
    #[error("plugin returned invalid JSON output: {0}")]
    InvalidOutput(String),

    /// The plugin trapped (panic, unreachable, out-of-bounds access, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),

    /// Filesystem trouble in the plugins directory or the compile cache.
    #[error("{context}: {source}")]
    Io {
        /// What the runtime was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The wasmtime engine could not be set up (bad pool sizing, unsupported host).
    #[error("engine setup failed: {0}")]
    Engine(String),

    /// A bad argument from the caller (e.g. an install path without a manifest).
    #[error("{0}")]
    Invalid(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for errors that are a verdict on one call (limits, traps), as opposed to
    /// load or setup failures. The executor reports these as a failed tool step.
    pub fn is_call_failure(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_)
                | Error::MemoryLimit { .. }
                | Error::StackOverflow
                | Error::FuelExhausted
                | Error::OutputTooLarge { .. }
                | Error::InvalidOutput(_)
                | Error::Trap(_)
        )
    }
}

/// Renders an error with its cause chain on one line, for messages and logs.
pub(crate) fn chain(err: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}
