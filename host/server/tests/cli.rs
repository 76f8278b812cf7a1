//! The `everruns` binary as a user runs it: `serve` on SQLite and PostgreSQL, the first-start
//! key, graceful shutdown on SIGTERM, the `api-key` and `plugin` subcommands, and a run
//! against `dev fake-llm`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, free_port};
use everruns_testkit::TestDb;

fn everruns(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("EVERRUNS_DATABASE_URL")
        .env_remove("EVERRUNS_BOOTSTRAP_API_KEY")
        .env_remove("EVERRUNS_LISTEN")
        .env_remove("EVERRUNS_DATA_DIR")
        .current_dir(data_dir);
    cmd
}

/// A running `everruns serve` process, killed on drop.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(mut cmd: Command) -> Served {
    let port = free_port();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("start everruns");
    let served = Served {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/health", served.base)).await
            && r.status() == 200
        {
            return served;
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_with_key(base: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/agents"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "EVERRUNS_LISTEN",
        "--data-dir",
        "EVERRUNS_DATA_DIR",
        "DATABASE_URL",
        "--config",
        "--log-format",
    ] {
        assert!(
            help.contains(needle),
            "`serve --help` lacks {needle}:\n{help}"
        );
    }
}

#[tokio::test]
async fn first_start_prints_a_working_key_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve(everruns(dir.path())).await;
    assert!(
        dir.path().join("everruns.db").exists(),
        "SQLite file in the data dir"
    );

    // The key is printed on stdout, once.
    let stdout = served.child.stdout.take().unwrap();
    let key = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim().to_owned())
            .find(|l| l.starts_with("evr_"))
    })
    .await
    .unwrap()
    .expect("a key was printed");
    assert_eq!(status_with_key(&served.base, &key).await, 200);
    assert_eq!(status_with_key(&served.base, "evr_wrong").await, 401);

    sigterm(&served.child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "graceful exit: {status:?}");

    // A second start does not create (or print) another key.
    let mut again = serve(everruns(dir.path())).await;
    let base = again.base.clone();
    assert_eq!(status_with_key(&base, &key).await, 200);
    sigterm(&again.child);
    let out = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut again.child.stdout.take().unwrap(), &mut text).unwrap();
        text
    })
    .await
    .unwrap();
    assert!(!out.contains("evr_"), "second start printed a key: {out}");
}

#[tokio::test]
async fn api_key_commands_and_bootstrap_key() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = "evr_bootstrap_key_for_tests_0001";
    let mut cmd = everruns(dir.path());
    cmd.env("EVERRUNS_BOOTSTRAP_API_KEY", bootstrap);
    let served = serve(cmd).await;
    assert_eq!(status_with_key(&served.base, bootstrap).await, 200);

    let out = everruns(dir.path())
        .args(["api-key", "create", "deploy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout
        .lines()
        .find(|l| l.starts_with("evr_"))
        .expect("key printed")
        .to_owned();
    assert_eq!(status_with_key(&served.base, &key).await, 200);

    let out = everruns(dir.path())
        .args(["api-key", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("deploy") && list.contains("admin"), "{list}");
    assert!(!list.contains(&key), "list never shows the key");
    assert!(list.contains(&key[..12]), "list shows the prefix: {list}");

    let out = everruns(dir.path())
        .args(["api-key", "revoke", "deploy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status_with_key(&served.base, &key).await, 401);
    let list = String::from_utf8(
        everruns(dir.path())
            .args(["api-key", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(list.contains("revoked"), "{list}");

    let out = everruns(dir.path())
        .args(["api-key", "revoke", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API key"));

    // Roles: a reader key reads and may not change anything; a role that does not exist is
    // refused, naming the ones that do.
    let out = everruns(dir.path())
        .args(["api-key", "create", "watcher", "--role", "reader"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("created reader API key `watcher`"),
        "{stdout}"
    );
    let reader = stdout.lines().find(|l| l.starts_with("evr_")).unwrap();
    assert_eq!(status_with_key(&served.base, reader).await, 200);
    let created = reqwest::Client::new()
        .post(format!("{}/v1/agents", served.base))
        .bearer_auth(reader)
        .json(&serde_json::json!({"name": "nope", "system_prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 403);
    let out = everruns(dir.path())
        .args(["api-key", "create", "x", "--role", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin, operator or reader"));
    let list = String::from_utf8(
        everruns(dir.path())
            .args(["api-key", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains("watcher") && l.contains("reader")),
        "{list}"
    );
}

#[tokio::test]
async fn database_url_selects_postgres() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let key = "evr_bootstrap_key_for_tests_0002";
    let mut cmd = everruns(dir.path());
    cmd.env("DATABASE_URL", db.url())
        .env("EVERRUNS_BOOTSTRAP_API_KEY", key);
    let served = serve(cmd).await;
    let health: serde_json::Value = reqwest::get(format!("{}/health", served.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["store"], "postgres");
    assert_eq!(status_with_key(&served.base, key).await, 200);
    assert!(
        !dir.path().join("everruns.db").exists(),
        "no SQLite file with PostgreSQL"
    );
    drop(served);
    db.cleanup().await;
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = everruns(dir.path())
        .args(["serve"])
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres://"), "{err}");

    let out = everruns(dir.path())
        .args(["serve"])
        .env("EVERRUNS_BOOTSTRAP_API_KEY", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    // A grant pattern that does not parse names the plugin and the pattern; an unknown grant
    // field is refused by name.
    let config = dir.path().join("grants.toml");
    let refused = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        let out = everruns(dir.path())
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused("[plugin_grants.web_fetch]\nallowed_hosts = [\"ftp://files.example.com\"]\n");
    assert!(
        err.contains("plugin_grants.web_fetch.allowed_hosts")
            && err.contains("ftp://files.example.com"),
        "{err}"
    );
    let err = refused("[plugin_grants.web_fetch]\nhosts = []\n");
    assert!(
        err.contains("unknown field") && err.contains("`hosts`"),
        "{err}"
    );
}

#[test]
fn plugin_commands_check_install_list_and_remove() {
    use everruns_testkit::guests::{WELL_BEHAVED, plugin_dir};
    let src = tempfile::tempdir().unwrap();
    let plugin = plugin_dir(src.path(), "well-behaved", "well-behaved", WELL_BEHAVED);
    let dir = tempfile::tempdir().unwrap();

    let out = everruns(dir.path())
        .args(["plugin", "check"])
        .arg(&plugin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("greet") && text.contains("well-behaved"),
        "{text}"
    );
    // The test guest targets the frozen 0.1.0 interface; `check` says which one.
    assert!(
        text.contains("interface:   everruns:capability@0.1.0"),
        "{text}"
    );

    let out = everruns(dir.path())
        .args(["plugin", "install"])
        .arg(&plugin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("compiling") && text.contains("compiled in"),
        "progress: {text}"
    );
    assert!(
        dir.path()
            .join("plugins/well-behaved/capability.toml")
            .exists()
    );

    // A broken plugin is listed as failed with its reason; the good one as loaded.
    let broken = dir.path().join("plugins/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("capability.toml"),
        "id = \"broken\"\nbogus = 1\n",
    )
    .unwrap();
    let out = everruns(dir.path())
        .args(["plugin", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l == "well-behaved\t0.1.0\tloaded"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("broken\t-\tfailed") && l.contains("bogus")),
        "{text}"
    );

    let out = everruns(dir.path())
        .args(["plugin", "remove", "well-behaved"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = everruns(dir.path())
        .args(["plugin", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("well-behaved"));

    let out = everruns(dir.path())
        .args(["plugin", "check", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("capability.toml"));
}

/// `everruns dev fake-llm` as the README shows it: the server it points at runs an agent whose
/// message names a built-in tool through a tool call to a completed answer, no API key needed.
#[tokio::test]
async fn dev_fake_llm_runs_a_tool_call_for_a_newcomer() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Command::new(BIN)
        .args(["dev", "fake-llm", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start everruns dev fake-llm");
    let stdout = fake.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(3)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let served = Served {
        child: fake,
        base: String::new(),
    };
    // The printed command line carries every setting the server needs.
    let settings: Vec<(String, String)> = printed
        .iter()
        .find(|l| l.contains("everruns serve"))
        .unwrap_or_else(|| panic!("no server command printed: {printed:?}"))
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(settings.len(), 4, "{settings:?}");

    let key = "evr_dev_fake_llm_test_key_00001";
    let mut cmd = everruns(dir.path());
    cmd.env("EVERRUNS_BOOTSTRAP_API_KEY", key).envs(settings);
    let server = serve(cmd).await;
    let http = reqwest::Client::new();
    let call = |request: reqwest::RequestBuilder| async move {
        let response = request.bearer_auth(key).send().await.unwrap();
        response.json::<serde_json::Value>().await.unwrap()
    };
    let post = |path: &str, body: serde_json::Value| {
        call(http.post(format!("{}{path}", server.base)).json(&body))
    };
    let get = |path: &str| call(http.get(format!("{}{path}", server.base)));
    let agent = post(
        "/v1/agents",
        serde_json::json!({"name": "demo", "system_prompt": "Be brief.",
            "capabilities": [{"id": "current_time"}]}),
    )
    .await;
    let session = post("/v1/sessions", serde_json::json!({"agent_id": agent["id"]})).await;
    let session = session["id"].as_str().unwrap();
    let run = post(
        &format!("/v1/sessions/{session}/messages"),
        serde_json::json!({"content": "what time is it now?"}),
    )
    .await;
    let run_path = format!("/v1/runs/{}", run["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run = get(&run_path).await;
        if run["status"] != "queued" && run["status"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "run did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");

    let events = get(&format!("/v1/sessions/{session}/events")).await;
    let events = events["data"].as_array().expect("a page of events");
    let tool = events
        .iter()
        .find(|e| e["type"] == "tool.completed")
        .unwrap_or_else(|| panic!("no tool call: {events:?}"));
    assert!(tool.to_string().contains("now"), "{tool}");
    let answer = events
        .iter()
        .rev()
        .find(|e| e["type"] == "message.completed")
        .unwrap()
        .to_string();
    assert!(answer.contains("The tool call returned"), "{answer}");
    drop(served);
}
