//! PostgreSQL implementation of the store.
/// The PostgreSQL store.
#[derive(Debug)]
pub struct PgStore;
