//! Test support for Everruns.
//!
//! Modules:
//! - `app`: [`TestApp`], the real server spawned in-process on port 0, driven over HTTP.
//! - `guests`: real WASM test plugins built from source, and plugin directories.
//! - `polyglot`: the pinned Python and JavaScript guest toolchains, the SDK examples built
//!   from source, and plugins scaffolded from the SDK templates.
//! - `db`: [`TestDb`], a fresh PostgreSQL database or SQLite file per test;
//!   [`on_both_stores!`] runs a test case on each.
//! - `sse`: [`SseReader`], the event stream as tests read it, and [`json_of`].
//!
//! [`FakeLlm`] and its [`Reply`]s are re-exported from `everruns-fake-llm`, so tests name
//! everything they use from this crate.

mod app;
mod db;
pub mod guests;
pub mod polyglot;
mod sse;

pub use app::{TEST_API_KEY, TEST_SECRET_KEY, TestApp};
pub use db::{DEFAULT_TEST_DATABASE_URL, TEST_DATABASE_URL_ENV, TestDb};
pub use everruns_fake_llm::{
    FAKE_LLM_API_KEY, FakeLlm, FakeToolCall, RecordedRequest, Reply, WireFormat,
};
pub use sse::{SseEvent, SseReader, json_of};

/// Instantiates each case, an `async fn(&TestDb)`, once per store: as the tests
/// `sqlite::<case>` and `postgres::<case>` (a fresh database each, removed afterwards).
#[macro_export]
macro_rules! on_both_stores {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = $crate::TestDb::sqlite();
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = $crate::TestDb::postgres().await;
                    super::$case(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}
