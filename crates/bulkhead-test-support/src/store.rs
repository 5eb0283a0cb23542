//! Stores for tests: a SQLite file in a temporary folder, and a PostgreSQL store
//! on a fresh database of the test server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_store::{PgOptions, PgStore, SqliteOptions, SqliteStore};

/// Opens (creating it if needed) the SQLite store at `path` with default options.
pub fn open_sqlite(path: &Path) -> Arc<SqliteStore> {
    let store = SqliteStore::open(path, SqliteOptions::default())
        .unwrap_or_else(|error| panic!("open the SQLite store {}: {error}", path.display()));
    Arc::new(store)
}

/// A SQLite store in a new temporary folder, deleted when this is dropped.
#[derive(Debug)]
pub struct TempSqlite {
    /// Holds the folder; the store's file is `path` inside it.
    pub dir: tempfile::TempDir,
    /// The database file, for tests that read it directly.
    pub path: PathBuf,
    pub store: Arc<SqliteStore>,
}

impl TempSqlite {
    /// A new store in the file `db` of a new temporary folder.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let path = dir.path().join("db");
        let store = open_sqlite(&path);
        Self { dir, path, store }
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        Self::new()
    }
}

/// A PostgreSQL store on a new, empty database of the test server.
pub async fn fresh_pg() -> Arc<PgStore> {
    let url = crate::pg::fresh_database().await;
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .unwrap_or_else(|error| panic!("connect the PostgreSQL store to {url}: {error}"));
    Arc::new(store)
}
