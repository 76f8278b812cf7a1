//! Opening stores: the URL forms accepted, how a SQLite file is set up, and what the errors say
//! when the database cannot be reached.

use std::str::FromStr;

use everruns_core::{NewAgent, PageRequest};
use everruns_store::{StoreConfig, StoreError, connect};
use everruns_testkit::TestDb;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

fn config(url: &str) -> StoreConfig {
    StoreConfig {
        url: url.to_owned(),
        max_connections: 4,
    }
}

fn agent(name: &str) -> NewAgent {
    NewAgent {
        name: name.to_owned(),
        system_prompt: String::new(),
        model: Default::default(),
        capabilities: Vec::new(),
        tool_approval: None,
    }
}

#[tokio::test]
async fn sqlite_creates_missing_directories_and_uses_wal() {
    let db = TestDb::sqlite();
    let dir = db
        .sqlite_dir()
        .expect("a SQLite test database has a directory");
    let file = dir.join("nested/deeper/everruns.db");
    let store = connect(&config(&format!("sqlite://{}", file.display())))
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.create_agent(agent("a")).await.unwrap();
    assert!(file.is_file(), "the database file is created");

    // The journal mode is a property of the file, visible from any connection.
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_accepts_the_url_without_slashes() {
    let db = TestDb::sqlite();
    let dir = db
        .sqlite_dir()
        .expect("a SQLite test database has a directory");
    let file = dir.join("plain.db");
    let store = connect(&config(&format!("sqlite:{}", file.display())))
        .await
        .unwrap();
    store.create_agent(agent("a")).await.unwrap();
    assert!(file.is_file());
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data_for_the_life_of_the_store() {
    let store = connect(&config("sqlite::memory:")).await.unwrap();
    for i in 0..3 {
        store.create_agent(agent(&format!("a{i}"))).await.unwrap();
    }
    let page = store.list_agents(&PageRequest::default()).await.unwrap();
    assert_eq!(page.total, 3);
}

#[tokio::test]
async fn an_unwritable_sqlite_path_is_a_connect_error_naming_the_file() {
    let db = TestDb::sqlite();
    let dir = db
        .sqlite_dir()
        .expect("a SQLite test database has a directory");
    // A regular file where a directory is needed.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let file = blocker.join("everruns.db");
    let err = connect(&config(&format!("sqlite://{}", file.display())))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!("cannot connect to SQLite at {}: ", file.display())),
        "{msg}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_missing_postgres_database_is_a_connect_error_naming_it() {
    let db = TestDb::postgres().await;
    let url = db.url().to_owned();
    db.cleanup().await;
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let err = connect(&config(&url)).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(msg.starts_with("cannot connect to PostgreSQL at "), "{msg}");
    assert!(
        msg.contains(&format!("/{name}: ")),
        "the target names the database: {msg}"
    );
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn zero_connections_is_a_config_error() {
    let err = connect(&StoreConfig {
        url: "sqlite::memory:".to_owned(),
        max_connections: 0,
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err}");
}
