//! The system under test: a fresh PostgreSQL database (on `DATABASE_URL`) or SQLite file, the
//! fake LLM, the well-behaved test plugin and the real server in-process on port 0, driven
//! over HTTP.

use std::borrow::Cow;

use anyhow::{Context, bail};
use everruns_testkit::guests::{WELL_BEHAVED, plugin_dir};
use everruns_testkit::{FakeLlm, RecordedRequest, TestApp, TestDb};
use serde::Deserialize;
use serde_json::{Value, json};

/// PostgreSQL server used when `DATABASE_URL` is not set.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A running server with its fake LLM and database.
pub(crate) struct Setup {
    pub app: TestApp,
    pub llm: FakeLlm,
    pub db: TestDb,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// Starts everything; the server's database pool has `pool` connections.
    pub(crate) async fn start(pool: u32) -> anyhow::Result<Self> {
        Self::start_with(pool, false).await
    }

    /// [`Setup::start`], with the built-in plugins loaded when `builtins`.
    pub(crate) async fn start_with(pool: u32, builtins: bool) -> anyhow::Result<Self> {
        Self::start_on(false, pool, builtins).await
    }

    /// [`Setup::start_with`] on a fresh SQLite file (the server's own, in its data
    /// directory) when `sqlite`, else on a fresh PostgreSQL database.
    pub(crate) async fn start_on(sqlite: bool, pool: u32, builtins: bool) -> anyhow::Result<Self> {
        let db = if sqlite {
            TestDb::sqlite()
        } else {
            let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
            TestDb::postgres_on(&url).await
        };
        eprintln!(
            "fresh {} database {}",
            db.backend(),
            db.url().rsplit('/').next().unwrap_or_default()
        );
        let llm = FakeLlm::start().await;
        let dir = tempfile::tempdir()?;
        // A SQLite server keeps its database in its data directory.
        let (data_dir, url) = match db.sqlite_dir() {
            Some(sqlite) => (sqlite.to_path_buf(), None),
            None => (dir.path().to_path_buf(), Some(db.url().to_owned())),
        };
        eprintln!("building the test plugins ...");
        plugin_dir(
            &data_dir.join("plugins"),
            "well-behaved",
            "well-behaved",
            WELL_BEHAVED,
        );
        let (base, key) = (llm.openai_base_url(), llm.api_key().to_owned());
        let app = TestApp::start_configured(&data_dir, url.as_deref(), |config| {
            config.llm_kind = Some("openai".to_owned());
            config.llm_base_url = Some(base);
            config.llm_api_key = Some(key.into());
            config.llm_model = Some("fake".to_owned());
            config.database_max_connections = pool;
            config.builtin_plugins = builtins;
            // Every limit is checked on every request, as in production, but none is hit:
            // a benchmark measures the server, including the cost of its checks.
            config.rate_limit_per_key = 1_000_000;
            config.run_start_limit_per_key = 1_000_000;
            config.max_streams_per_key = 1_000_000;
            config.max_streams = 1_000_000;
            config.request_timeout_ms = 600_000;
        })
        .await;
        Ok(Self {
            app,
            llm,
            db,
            _dir: dir,
        })
    }

    /// An agent with the well-behaved plugin (created once per name) and a new session of it.
    pub(crate) async fn session(&self, agent: &str) -> anyhow::Result<String> {
        self.session_with(agent, json!([{"id": "well-behaved"}]))
            .await
    }

    /// An agent with `capabilities` (created once per name) and a new session of it.
    pub(crate) async fn session_with(
        &self,
        agent: &str,
        capabilities: Value,
    ) -> anyhow::Result<String> {
        let created = self
            .app
            .post("/v1/agents")
            .json(&json!({
                "name": agent,
                "system_prompt": "You benchmark.",
                "capabilities": capabilities,
            }))
            .send()
            .await?;
        let agent_id = match created.status().as_u16() {
            201 => created.json::<Value>().await?["id"].clone(),
            409 => {
                let list: Value = self
                    .app
                    .get("/v1/agents?limit=100")
                    .send()
                    .await?
                    .json()
                    .await?;
                list["data"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["name"] == agent))
                    .map(|x| x["id"].clone())
                    .context("agent listed")?
            }
            status => bail!("creating the agent: {status}: {}", created.text().await?),
        };
        self.session_of(&agent_id).await
    }

    /// A new session of the agent `agent_id`; returns its id.
    pub(crate) async fn session_of(&self, agent_id: &Value) -> anyhow::Result<String> {
        let session: Value = self
            .app
            .post("/v1/sessions")
            .json(&json!({"agent_id": agent_id}))
            .send()
            .await?
            .json()
            .await?;
        session["id"]
            .as_str()
            .map(str::to_owned)
            .context("session id")
    }

    /// Posts a message; returns the run id.
    pub(crate) async fn post_message(&self, session: &str) -> anyhow::Result<String> {
        let response = self
            .app
            .post(&format!("/v1/sessions/{session}/messages"))
            .json(&json!({"content": "go"}))
            .send()
            .await?;
        if response.status() != 202 {
            bail!("posting a message: {}", response.text().await?);
        }
        let run: Value = response.json().await?;
        run["id"].as_str().map(str::to_owned).context("run id")
    }

    pub(crate) async fn finish(self) {
        self.app.stop().await;
        self.db.cleanup().await;
    }
}

/// How many tool results the model has seen since the last user message (the current run's
/// turn; the conversation also holds earlier runs of the session).
/// Reads only the roles (the fake LLM runs in the measured process: a JSON tree of the whole
/// conversation per request would be charged to the server).
pub(crate) fn tool_results_this_turn(request: &RecordedRequest) -> usize {
    #[derive(Deserialize)]
    struct Conversation<'a> {
        #[serde(borrow)]
        messages: Vec<Role<'a>>,
    }
    #[derive(Deserialize)]
    struct Role<'a> {
        #[serde(borrow)]
        role: Cow<'a, str>,
    }
    let Some(conversation) = request.parse::<Conversation>() else {
        return 0;
    };
    conversation
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role != "user")
        .filter(|m| m.role == "tool")
        .count()
}
