//! Opening a store from a URL: `postgres://...` selects PostgreSQL, `sqlite:...` SQLite.
//! Migrations are applied before the store is returned.

use std::sync::Arc;

use crate::{Result, Store};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://...`/`postgresql://...` or `sqlite://PATH` (created when missing).
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

/// Opens the store named by `config.url` and applies pending migrations.
pub async fn connect(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    let _ = config;
    Err(crate::StoreError::Config("not implemented yet".into()))
}
