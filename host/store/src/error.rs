//! The store's error type.

use everruns_core::RunId;

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What can go wrong in the store. Callers map `NotFound` to 404, `Conflict` to 409 and
/// `Invalid` to 422; `LeaseLost` tells the executor to stop working on that run; everything
/// else is an internal error that must not reach clients verbatim.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such entity (`entity` is e.g. "agent", `id` what was asked for).
    #[error("{entity} `{id}` not found")]
    NotFound { entity: &'static str, id: String },
    /// A uniqueness constraint was violated (message says which, in user terms).
    #[error("{0}")]
    Conflict(String),
    /// Input the database refused for a reason the caller can fix.
    #[error("{0}")]
    Invalid(String),
    /// A fenced write for a run whose lease is no longer the caller's: another worker took the
    /// run over (the lease token changed) or the run was finished. Nothing was written; the
    /// caller must stop working on the run.
    #[error("the lease on run `{run_id}` was lost")]
    LeaseLost { run_id: RunId },
    /// The database URL or store configuration is wrong.
    #[error("store configuration: {0}")]
    Config(String),
    /// The database could not be reached or opened when the store was opened. `target` never
    /// contains a password.
    #[error("cannot connect to {backend} at {target}: {detail}")]
    Connect {
        /// "PostgreSQL" or "SQLite".
        backend: &'static str,
        /// `host:port/database` or the SQLite file.
        target: String,
        /// The cause, as the driver reported it.
        detail: String,
    },
    /// Applying migrations failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The write could not be carried out, for a reason the text gives: the batch it was
    /// written in failed (each of its writes gets the database's message), or the store is
    /// shutting down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded (corrupt or from an incompatible version).
    #[error("decoding stored {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl StoreError {
    /// [`StoreError::NotFound`] for `entity` with the id asked for.
    pub(crate) fn not_found(entity: &'static str, id: &impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }
}
