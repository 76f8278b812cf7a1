//! SQLite implementation of the store.
/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore;
