//! The throwaway PostgreSQL server of `scripts/pg-test-server`, and a fresh
//! database on it for each test, so tests never see each other's rows.
//!
//! `scripts/test` starts the server and names it in `BULKHEAD_TEST_PG_URL`; a
//! plain `cargo test` without that variable runs the script itself. A missing
//! PostgreSQL is a failure, never a silent skip.

use std::process::Command;
use std::sync::OnceLock;

/// The environment variable `scripts/test` sets to the server's URL.
pub const URL_VAR: &str = "BULKHEAD_TEST_PG_URL";

/// The URL of the test server's default database: `BULKHEAD_TEST_PG_URL`, or
/// what `scripts/pg-test-server` prints (run once per test process; the
/// script is idempotent and reuses a running server).
pub fn server_url() -> String {
    if let Ok(url) = std::env::var(URL_VAR) {
        return url;
    }
    static STARTED: OnceLock<String> = OnceLock::new();
    STARTED.get_or_init(run_script).clone()
}

fn run_script() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-test-server");
    let out = Command::new(script)
        .output()
        .expect("run scripts/pg-test-server");
    assert!(
        out.status.success(),
        "scripts/pg-test-server failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("scripts/pg-test-server prints a URL")
        .trim()
        .to_owned()
}

/// Creates a new, empty database on the test server and returns its URL.
pub async fn fresh_database() -> String {
    let url = server_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    let name = format!("bh_{:016x}", random_u64());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error}"));
    let base = url.rsplit_once('/').expect("a URL with a database").0;
    format!("{base}/{name}")
}

/// Unique enough for database names: the standard library's per-process random
/// hash keys over the current time.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
