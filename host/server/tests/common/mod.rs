//! Real `everruns serve` processes for the process-level tests (crash recovery,
//! observability): spawned on a free port against a test database and the fake LLM,
//! SIGKILLed on drop, and the JSON helpers their tests share.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod otlp;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use everruns_testkit::{FakeLlm, TestDb};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_everruns");
pub const KEY: &str = "evr_crash_test_bootstrap_key_0001";
pub const LEASE_MS: u64 = 1_500;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `everruns serve` (or `everruns worker`) process; SIGKILLed on drop.
pub struct Everruns {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Drop for Everruns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Everruns {
    /// Starts a process on `dir` (which holds the plugin) with output in `dir/everruns-N.log`;
    /// on `db`'s PostgreSQL, or on SQLite when `db` is SQLite (then `dir` must be its
    /// directory: the server's database file is `everruns.db` in its data directory).
    pub fn spawn(dir: &Path, db: &TestDb, llm: &FakeLlm, n: usize) -> Self {
        Self::spawn_with(dir, db, llm, n, &[])
    }

    /// [`Everruns::spawn`] with more environment variables.
    pub fn spawn_with(
        dir: &Path,
        db: &TestDb,
        llm: &FakeLlm,
        n: usize,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start(dir, db, llm, n, env, false)
    }

    /// A worker-only process (`everruns worker`), which serves `/metrics` and `/health` on
    /// its listen address.
    pub fn spawn_worker(
        dir: &Path,
        db: &TestDb,
        llm: &FakeLlm,
        n: usize,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start(dir, db, llm, n, env, true)
    }

    fn start(
        dir: &Path,
        db: &TestDb,
        llm: &FakeLlm,
        n: usize,
        env: &[(&str, &str)],
        worker: bool,
    ) -> Self {
        let port = free_port();
        let log = dir.join(format!("everruns-{n}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(BIN);
        for var in [
            "DATABASE_URL",
            "EVERRUNS_DATABASE_URL",
            "EVERRUNS_LISTEN",
            "EVERRUNS_DATA_DIR",
            "EVERRUNS_CONFIG",
            "EVERRUNS_PLUGIN_DIRS",
            "EVERRUNS_WORKER",
            "EVERRUNS_LOG_FORMAT",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        if db.sqlite_dir().is_none() {
            cmd.env("DATABASE_URL", db.url());
        }
        let listen = format!("127.0.0.1:{port}");
        cmd.arg("--data-dir").arg(dir);
        if worker {
            cmd.arg("worker").env("EVERRUNS_LISTEN", &listen);
        } else {
            cmd.args(["serve", "--listen", &listen]);
        }
        cmd.env("EVERRUNS_BOOTSTRAP_API_KEY", KEY)
            .env("EVERRUNS_LLM_KIND", "openai")
            .env("EVERRUNS_LLM_BASE_URL", llm.openai_base_url())
            .env("EVERRUNS_LLM_API_KEY", llm.api_key())
            .env("EVERRUNS_LLM_MODEL", "m")
            .env("EVERRUNS_EXECUTOR_LEASE_MS", LEASE_MS.to_string())
            // These runs use no built-in; compiling them on every fresh data directory (a
            // debug build takes seconds) would delay a joining process past the runs it is
            // meant to take over.
            .env("EVERRUNS_BUILTIN_PLUGINS", "false")
            // The tests post bursts no client would; the limits have tests of their own.
            .env("EVERRUNS_RATE_LIMIT_PER_KEY", "0")
            .env("EVERRUNS_RUN_START_LIMIT_PER_KEY", "0")
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        Self {
            child: cmd.spawn().expect("start everruns"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `/health` answers 200.
    pub async fn healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health", self.base)).await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("everruns exited with {status}:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "everruns did not become healthy:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, and reap.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).bearer_auth(KEY).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "GET {url}: {text}");
    serde_json::from_str(&text).unwrap()
}

pub async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = client
        .post(url)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}
