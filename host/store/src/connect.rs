//! Opening a store from a URL: `postgres://...` selects PostgreSQL, `sqlite:...` SQLite.
//! Migrations are applied before the store is returned.
//!
//! Error messages name the server or file but never a password: URLs are redacted before they
//! appear in any message.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, PgConnection};

use crate::{PgStore, Result, SqliteStore, Store, StoreError};

/// How long a SQLite connection waits for another writer before giving up with "database is
/// locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://...`/`postgresql://...` or `sqlite://PATH` (created when missing).
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

/// Opens the store named by `config.url` and applies pending migrations.
///
/// Any number of processes may call this at once on the same database: on PostgreSQL sqlx
/// serialises migrators with an advisory lock, on SQLite the migration runs in a
/// `BEGIN IMMEDIATE` transaction.
pub async fn connect(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    if config.max_connections == 0 {
        return Err(StoreError::Config(
            "max_connections must be at least 1".to_owned(),
        ));
    }
    let url = config.url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(open_postgres(config).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(open_sqlite(config).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL `{}`: expected `postgres://USER@HOST:PORT/DATABASE`, \
             `postgresql://...` or `sqlite://PATH`",
            redact(url)
        )))
    }
}

async fn open_postgres(config: &StoreConfig) -> Result<PgStore> {
    let options = PgConnectOptions::from_str(&config.url).map_err(|err| {
        StoreError::Config(format!(
            "invalid PostgreSQL URL `{}`: {err}",
            redact(&config.url)
        ))
    })?;
    let target = match options.get_database() {
        Some(db) => format!("{}:{}/{db}", options.get_host(), options.get_port()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let unreachable = |err: sqlx::Error| StoreError::Connect {
        backend: "PostgreSQL",
        target: target.clone(),
        detail: err.to_string(),
    };

    // Migrate on a connection of its own: sqlx's migration lock is session-scoped, so if
    // migrating fails half-way the lock must die with the connection, not return to a pool.
    let mut conn = options.connect().await.map_err(unreachable)?;
    PgStore::migrate(&mut conn).await?;
    close_quietly(conn).await;

    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        // sqlx pings every connection before handing it out: a round trip per query. A busy
        // connection is known to be alive; only one idle for a while is checked (a dead one
        // is then replaced, not handed out).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(unreachable)?;
    tracing::info!(target = %target, "opened PostgreSQL store");
    Ok(PgStore::new(pool))
}

/// A pooled PostgreSQL connection idle this long is pinged before it is used again.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

async fn close_quietly(conn: PgConnection) {
    use sqlx::Connection;
    if let Err(err) = conn.close().await {
        // The migrations are committed; a failed goodbye only leaves a socket to time out.
        tracing::debug!(error = %err, "closing the migration connection");
    }
}

async fn open_sqlite(config: &StoreConfig) -> Result<SqliteStore> {
    let url = config.url.as_str();
    let options = SqliteConnectOptions::from_str(url).map_err(|err| {
        StoreError::Config(format!("invalid SQLite URL `{}`: {err}", redact(url)))
    })?;
    let in_memory = is_in_memory(url);
    let target = if in_memory {
        "an in-memory database".to_owned()
    } else {
        options.get_filename().display().to_string()
    };
    if !in_memory {
        create_parent_dir(options.get_filename(), &target).await?;
    }
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);

    // Several processes opening a new file at once race to switch it to WAL, and SQLite answers
    // that switch with SQLITE_BUSY at once instead of waiting on the busy timeout: retry.
    let mut attempt = 0;
    let pool = loop {
        match sqlite_pool(config, in_memory, options.clone()).await {
            Err(err) if attempt < 50 && is_busy(&err) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt.min(10))).await;
            }
            other => break other,
        }
    }
    .map_err(|err| StoreError::Connect {
        backend: "SQLite",
        target: target.clone(),
        detail: err.to_string(),
    })?;

    let mut conn = pool.acquire().await?;
    SqliteStore::migrate(&mut conn).await?;
    drop(conn);
    tracing::info!(target = %target, "opened SQLite store");
    Ok(SqliteStore::new(pool))
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6): another connection holds the lock for a moment.
fn is_busy(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6")))
}

async fn sqlite_pool(
    config: &StoreConfig,
    in_memory: bool,
    options: SqliteConnectOptions,
) -> std::result::Result<sqlx::SqlitePool, sqlx::Error> {
    if in_memory {
        // The database lives as long as a connection to it does, and shared-cache connections
        // would fail with SQLITE_LOCKED instead of waiting: keep exactly one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(config.max_connections)
    }
    // An embedded database's connections do not drop: no ping (a hop to its thread) first.
    .test_before_acquire(false)
    .connect_with(options)
    .await
}

/// `sqlite::memory:` or `sqlite:...?mode=memory`.
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    path == ":memory:" || query.split('&').any(|param| param == "mode=memory")
}

async fn create_parent_dir(file: &Path, target: &str) -> Result<()> {
    let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|err| StoreError::Connect {
            backend: "SQLite",
            target: target.to_owned(),
            detail: format!("cannot create directory {}: {err}", parent.display()),
        })
}

/// `url` with any password replaced by `***`: the one in `user:password@` and any
/// `password=` query parameter.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return redact_query(url);
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let mut out = url[..scheme_end].to_owned();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_query(&url[authority_end..]));
    out
}

fn redact_query(rest: &str) -> String {
    let Some((path, query)) = rest.split_once('?') else {
        return rest.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://alice:s3cret@db.example:5432/everruns"),
            "postgres://alice:***@db.example:5432/everruns"
        );
        assert_eq!(
            redact("postgresql://alice@db/x?sslmode=require&password=s3cret"),
            "postgresql://alice@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgres://a:p%40ss@h/d"),
            "postgres://a:***@h/d",
            "an encoded @ in the password stays hidden"
        );
        assert_eq!(redact("postgres://h:5432/d"), "postgres://h:5432/d");
        assert_eq!(redact("sqlite://data/e.db"), "sqlite://data/e.db");
        assert_eq!(redact("mysql://u:pw@h/d"), "mysql://u:***@h/d");
    }

    #[test]
    fn in_memory_urls_are_recognised() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://x.db?mode=memory"));
        assert!(!is_in_memory("sqlite://data/everruns.db"));
    }

    #[tokio::test]
    async fn unknown_schemes_are_a_config_error_without_the_password() {
        let err = connect(&StoreConfig {
            url: "mysql://root:hunter2@localhost/db".into(),
            max_connections: 1,
        })
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Config(_)), "{msg}");
        assert!(msg.contains("sqlite://PATH"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[tokio::test]
    async fn unreachable_postgres_names_the_server_but_not_the_password() {
        // Port 1 on localhost: nothing listens there, the connection is refused at once.
        let err = connect(&StoreConfig {
            url: "postgres://everruns:hunter2@127.0.0.1:1/everruns".into(),
            max_connections: 1,
        })
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot connect to PostgreSQL at 127.0.0.1:1/everruns: "),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
