//! Fresh databases for tests: a PostgreSQL database created for one test and dropped after it,
//! or a SQLite file in a temporary directory.
//!
//! PostgreSQL is required: when it cannot be reached the test panics with instructions rather
//! than being skipped, so a green run always means both backends were exercised.

use std::path::Path;

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

/// The server used when `EVERRUNS_TEST_DATABASE_URL` is not set.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Environment variable naming a PostgreSQL server (any database on it; tests create their own).
pub const TEST_DATABASE_URL_ENV: &str = "EVERRUNS_TEST_DATABASE_URL";

/// A database that exists for one test. Call [`TestDb::cleanup`] at the end of the test; if the
/// test panics first, dropping the value removes the database on a best-effort basis.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Postgres {
        /// URL of the server's maintenance database, used to create and drop ours.
        admin_url: String,
        name: String,
        dropped: bool,
    },
    Sqlite {
        /// Deleted (with the database file) when dropped.
        dir: tempfile::TempDir,
    },
}

impl TestDb {
    /// Creates an empty database `everruns_test_<uuid>` on the server named by
    /// `EVERRUNS_TEST_DATABASE_URL` (default [`DEFAULT_TEST_DATABASE_URL`]).
    ///
    /// # Panics
    /// When PostgreSQL is not reachable: the suite needs it.
    pub async fn postgres() -> Self {
        let admin_url = std::env::var(TEST_DATABASE_URL_ENV)
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_owned());
        Self::postgres_on(&admin_url).await
    }

    /// Creates an empty database `everruns_test_<uuid>` on the server of `admin_url` (any
    /// database on it), e.g. for benchmarks given a `DATABASE_URL`.
    ///
    /// # Panics
    /// When PostgreSQL is not reachable there.
    pub async fn postgres_on(admin_url: &str) -> Self {
        let admin_url = admin_url.to_owned();
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "PostgreSQL is required for the test suite and is not reachable at {}: {err}. \
                     Start one with `docker compose -f docker/compose.yml up -d postgres` or a \
                     local install (apt-get install postgresql), or point \
                     {TEST_DATABASE_URL_ENV} at one.",
                    redact_password(&admin_url)
                )
            });
        let name = format!("everruns_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|err| panic!("creating test database {name}: {err}"));
        // The database exists either way; a failed goodbye only leaves a socket to time out.
        let _ = admin.close().await;
        Self {
            url: with_database(&admin_url, &name),
            backend: Backend::Postgres {
                admin_url,
                name,
                dropped: false,
            },
        }
    }

    /// A SQLite database file (not yet created) in a fresh temporary directory.
    ///
    /// # Panics
    /// When no temporary directory can be created.
    pub fn sqlite() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("everruns-test-")
            .tempdir()
            .unwrap_or_else(|err| panic!("creating a temporary directory: {err}"));
        Self {
            url: sqlite_url(&dir.path().join("everruns.db")),
            backend: Backend::Sqlite { dir },
        }
    }

    /// The database URL, for `everruns_store::connect` or the server's config.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// "postgres" or "sqlite".
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Postgres { .. } => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }

    /// How many rows of `table` have `column` = `value`, read directly with SQL: what tests
    /// use to see what the store's API cannot show (rows a delete left behind).
    pub async fn count_rows(&self, table: &str, column: &str, value: &str) -> i64 {
        self.count_where(table, &format!("{column} = $1"), value)
            .await
    }

    /// How many rows of `table` hold `needle` anywhere in one of `columns` (read as text):
    /// what tests use to prove a value never reached the database.
    pub async fn count_containing(&self, table: &str, columns: &[&str], needle: &str) -> i64 {
        let condition = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT) LIKE '%' || $1 || '%'"))
            .collect::<Vec<_>>()
            .join(" OR ");
        self.count_where(table, &condition, needle).await
    }

    async fn count_where(&self, table: &str, condition: &str, value: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {condition}");
        let counted = match self.backend {
            Backend::Postgres { .. } => match PgConnection::connect(&self.url).await {
                Ok(mut conn) => {
                    sqlx::query_scalar(&sql)
                        .bind(value)
                        .fetch_one(&mut conn)
                        .await
                }
                Err(err) => Err(err),
            },
            Backend::Sqlite { .. } => match SqliteConnection::connect(&self.url).await {
                Ok(mut conn) => {
                    sqlx::query_scalar(&sql)
                        .bind(value)
                        .fetch_one(&mut conn)
                        .await
                }
                Err(err) => Err(err),
            },
        };
        counted.unwrap_or_else(|err| panic!("counting rows of {table}: {err}"))
    }

    /// Runs one SQL statement with `$1` bound to `value` directly on the database (what tests
    /// use to play an operator or an attacker editing rows); returns the rows it changed.
    pub async fn execute(&self, sql: &str, value: &str) -> u64 {
        let done = match self.backend {
            Backend::Postgres { .. } => match PgConnection::connect(&self.url).await {
                Ok(mut conn) => sqlx::query(sql)
                    .bind(value)
                    .execute(&mut conn)
                    .await
                    .map(|r| r.rows_affected()),
                Err(err) => Err(err),
            },
            Backend::Sqlite { .. } => match SqliteConnection::connect(&self.url).await {
                Ok(mut conn) => sqlx::query(sql)
                    .bind(value)
                    .execute(&mut conn)
                    .await
                    .map(|r| r.rows_affected()),
                Err(err) => Err(err),
            },
        };
        done.unwrap_or_else(|err| panic!("executing `{sql}`: {err}"))
    }

    /// The temporary directory holding the SQLite file; `None` for PostgreSQL.
    pub fn sqlite_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite { dir } => Some(dir.path()),
            Backend::Postgres { .. } => None,
        }
    }

    /// Removes the database (PostgreSQL: `DROP DATABASE ... WITH (FORCE)`, which also ends
    /// connections still open to it; SQLite: the temporary directory).
    ///
    /// # Panics
    /// When the PostgreSQL database cannot be dropped.
    pub async fn cleanup(mut self) {
        if let Backend::Postgres {
            admin_url,
            name,
            dropped,
        } = &mut self.backend
        {
            drop_database(admin_url, name)
                .await
                .unwrap_or_else(|err| panic!("dropping test database {name}: {err}"));
            *dropped = true;
        }
        // Dropping `self` removes a SQLite directory.
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Backend::Postgres {
            admin_url,
            name,
            dropped: false,
        } = &self.backend
        else {
            return;
        };
        // The test ended without `cleanup` (usually a panic). Drop cannot await, and the test's
        // runtime may be shutting down, so use a private runtime on a thread of its own.
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(drop_database(&admin_url, &name)).ok()
        });
        // Best effort: a leftover `everruns_test_*` database is harmless.
        let _ = dropper.join();
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await?;
    let _ = admin.close().await;
    Ok(())
}

/// `sqlite://` followed by the path (absolute paths give `sqlite:///...`).
fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// `url` with its database (the path) replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let query = url[path_start..]
        .find('?')
        .map_or("", |i| &url[path_start + i..]);
    format!("{}/{name}{query}", &url[..path_start])
}

/// `url` with the password of `user:password@` replaced by `***`.
fn redact_password(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:***{}",
                &url[..authority_start],
                &url[authority_start + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_swapped_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t1"),
            "postgres://h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "t1"),
            "postgres://h/t1?sslmode=disable"
        );
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact_password("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_password("postgres://postgres@h/db"),
            "postgres://postgres@h/db"
        );
    }

    #[test]
    fn sqlite_urls_are_absolute() {
        let db = TestDb::sqlite();
        assert!(db.url().starts_with("sqlite:///"), "{}", db.url());
        assert!(db.url().ends_with("/everruns.db"));
        assert_eq!(db.backend(), "sqlite");
    }
}
