//! Test support for Everruns.
//!
//! Modules:
//! - `app`: [`TestApp`], the real server spawned in-process on port 0, driven over HTTP.
//! - `guests`: real WASM test plugins built from source, and plugin directories.
//! - `polyglot`: the pinned Python and JavaScript guest toolchains, the SDK examples built
//!   from source, and plugins scaffolded from the SDK templates.
//! - `db`: [`TestDb`], a fresh PostgreSQL database or SQLite file per test.
//! - `fake_llm`: [`FakeLlm`], an HTTP server speaking the OpenAI and Anthropic streaming wire
//!   formats, scripted per test with [`Reply`]s, recording every request.

mod app;
mod db;
mod fake_llm;
pub mod guests;
pub mod polyglot;

pub use app::{TEST_API_KEY, TEST_SECRET_KEY, TestApp};
pub use db::{DEFAULT_TEST_DATABASE_URL, TEST_DATABASE_URL_ENV, TestDb};
pub use fake_llm::{FAKE_LLM_API_KEY, FakeLlm, FakeToolCall, RecordedRequest, Reply, WireFormat};
