//! Shared fixtures of the API tests: a running server on either backend.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::Path;

use everruns_testkit::{TestApp, TestDb};
use reqwest::Response;
use serde_json::Value;

/// Which store the server under test uses.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A server plus what must outlive it (its data directory and database).
#[derive(Debug)]
pub struct Harness {
    pub app: TestApp,
    pub db: Option<TestDb>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`Harness::start`], but runs `prepare` on the data directory before the server
    /// starts (e.g. to install plugins under `<data-dir>/plugins`).
    pub async fn start_with(backend: Backend, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDb::postgres().await),
        };
        // The API alone: no worker picks runs up, so tests see them as the API left them.
        let app = TestApp::start_configured(dir.path(), db.as_ref().map(|d| d.url()), |config| {
            config.worker = false;
        })
        .await;
        Self { app, db, dir }
    }

    pub async fn restart(self) -> Self {
        let Harness { app, db, dir } = self;
        let app = app.restart().await;
        Harness { app, db, dir }
    }

    pub async fn finish(self) {
        self.app.stop().await;
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}

/// Generates one `#[tokio::test]` per backend for an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Asserts the status and that the body is problem+json with that status; returns the body.
pub async fn expect_problem(response: Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert_eq!(content_type, "application/problem+json", "body: {text}");
    let body: Value = serde_json::from_str(&text).expect("problem body is JSON");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(body["title"].as_str().is_some(), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
