//! Test support for Everruns.
//!
//! Modules:
//! - `app`: [`TestApp`], the real server spawned in-process on port 0, driven over HTTP.
//! - `db`: [`TestDb`], a fresh PostgreSQL database or SQLite file per test.

mod app;
mod db;

pub use app::{TEST_API_KEY, TestApp};
pub use db::{DEFAULT_TEST_DATABASE_URL, TEST_DATABASE_URL_ENV, TestDb};
