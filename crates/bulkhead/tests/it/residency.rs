//! End to end: residency on disk. A real server with two regions, each with its
//! own SQLite store and its own upstream; a tenant in each writes documents,
//! sessions and model calls. After a clean stop, each file is opened directly:
//! a tenant's id appears in no table (and no byte) of the other region's store
//! or of the home store, and its audit log lives only in its own store and still
//! verifies. A tenant asking for a model only the other region offers is refused
//! and nothing reaches that region's upstream.

#![cfg(unix)]

use std::path::{Path, PathBuf};

use bulkhead_mock_upstream::{MockOptions, MockUpstream};
use bulkhead_test_support::cli::{self, run};
use bulkhead_test_support::{ADMIN_TOKEN, Server, describe, expect_json, string_field};
use reqwest::{Client, StatusCode};
use rusqlite::types::ValueRef;
use serde_json::{Value, json};

use crate::BULKHEAD;

struct Tenant {
    id: String,
    key: String,
}

async fn tenant_in(client: &Client, base: &str, name: &str, region: &str) -> Tenant {
    let tenant = expect_json(
        client
            .post(format!("{base}/admin/v1/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": name, "region": region})),
        StatusCode::CREATED,
        "create a tenant",
    )
    .await;
    assert_eq!(tenant["region"], region);
    let id = string_field(&tenant, "id");
    let key = expect_json(
        client
            .post(format!("{base}/admin/v1/tenants/{id}/keys"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({})),
        StatusCode::CREATED,
        "create a tenant key",
    )
    .await;
    Tenant {
        id,
        key: string_field(&key, "key"),
    }
}

/// A document, a session and a model call in that session (a trace).
async fn use_everything(client: &Client, base: &str, t: &Tenant, model: &str) {
    expect_json(
        client
            .post(format!("{base}/v1/documents"))
            .bearer_auth(&t.key)
            .json(&json!({"id": "handbook", "text": "Refunds take five working days."})),
        StatusCode::CREATED,
        "create a document",
    )
    .await;
    let session = expect_json(
        client
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(&t.key)
            .json(&json!({})),
        StatusCode::CREATED,
        "create a session",
    )
    .await;
    let session_id = string_field(&session, "id");
    let answer = expect_json(
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&t.key)
            .json(&json!({
                "model": model,
                "messages": [{"role": "user", "content": "How long do refunds take?"}],
                "bulkhead": {"session_id": session_id, "retrieve": {"top_k": 1}},
            })),
        StatusCode::OK,
        "a model call",
    )
    .await;
    let trace_id = answer["bulkhead"]["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a trace id in {answer}"));
    expect_json(
        client
            .get(format!("{base}/v1/traces/{trace_id}"))
            .bearer_auth(&t.key),
        StatusCode::OK,
        "read the trace",
    )
    .await;
}

fn audit_cli(base: &str, data_dir: &Path, args: &[&str]) -> std::process::Output {
    run(cli::operator(BULKHEAD, base)
        .arg("audit")
        .args(args)
        .env("BULKHEAD_DATA_DIR", data_dir))
}

fn open(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()))
}

/// Every `table.column` of the database with a text or blob value that contains
/// `needle`.
fn cells_containing(db: &Path, needle: &str) -> Vec<String> {
    let conn = open(db);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        tables.iter().any(|t| t == "tenants"),
        "{}: {tables:?}",
        db.display()
    );
    let needle = needle.as_bytes();
    let mut hits = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for (i, column) in columns.iter().enumerate() {
                let bytes = match row.get_ref(i).unwrap() {
                    ValueRef::Text(b) | ValueRef::Blob(b) => b,
                    _ => continue,
                };
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(format!("{table}.{column}"));
                }
            }
        }
    }
    hits
}

/// The database file and any WAL or journal left beside it, as raw bytes: the
/// id must not sit in free pages either.
fn file_bytes_contain(db: &Path, needle: &str) -> bool {
    ["", "-wal", "-journal"].iter().any(|suffix| {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        std::fs::read(PathBuf::from(path))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

fn count(db: &Path, sql: &str, param: &str) -> i64 {
    open(db).query_row(sql, [param], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_regions_tenants_live_only_in_its_store_and_reach_only_its_upstreams() {
    let eu_upstream = MockUpstream::start(MockOptions::default()).await.unwrap();
    let us_upstream = MockUpstream::start(MockOptions::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("bulkhead.toml");
    // `echo` is offered only in eu-west, `fast` only in us-east.
    std::fs::write(
        &config,
        format!(
            r#"
[[regions]]
name = "eu-west"
store = "eu-west.db"

[[regions]]
name = "us-east"
store = "us-east.db"

[[upstreams]]
name = "eu"
base_url = "{eu}"
region = "eu-west"
models = ["echo"]

[[upstreams]]
name = "us"
base_url = "{us}"
region = "us-east"
models = ["fast"]
"#,
            eu = eu_upstream.base_url(),
            us = us_upstream.base_url(),
        ),
    )
    .unwrap();
    let mut server = Server::start_with(
        BULKHEAD,
        data.path(),
        &[("BULKHEAD_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let base = server.base_url.clone();
    let client = Client::new();

    let eu = tenant_in(&client, &base, "Acme EU", "eu-west").await;
    let us = tenant_in(&client, &base, "Globex US", "us-east").await;
    use_everything(&client, &base, &eu, "echo").await;
    use_everything(&client, &base, &us, "fast").await;
    assert_eq!(eu_upstream.requests().len(), 1, "the eu tenant's one call");
    assert_eq!(us_upstream.requests().len(), 1, "the us tenant's one call");

    // The evidence report says where each tenant's rows are, and which upstream
    // its calls can reach.
    let evidence = expect_json(
        client
            .get(format!("{base}/admin/v1/tenants/{}/evidence", eu.id))
            .bearer_auth(ADMIN_TOKEN),
        StatusCode::OK,
        "the eu tenant's evidence report",
    )
    .await;
    assert_eq!(
        evidence["residency"]["store"],
        "the store of region eu-west, apart from every other region's"
    );
    assert_eq!(evidence["residency"]["upstreams"][0]["region"], "eu-west");

    // A us-east tenant asking for the eu-west model: refused, and the eu upstream
    // never hears of it.
    let refused = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&us.key)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("model `echo` does not exist or is not available to this tenant"),
        "{problem}"
    );
    assert_eq!(
        eu_upstream.requests().len(),
        1,
        "nothing more reached eu-west"
    );
    assert_eq!(us_upstream.requests().len(), 1, "nor us-east");

    // Both logs verify against the server's public key while it runs.
    let vkey = audit_cli(&base, data.path(), &["public-key"]);
    assert_eq!(vkey.status.code(), Some(0), "{}", describe(&vkey));
    let vkey = String::from_utf8(vkey.stdout).unwrap().trim().to_owned();
    for t in [&eu, &us] {
        let verified = audit_cli(
            &base,
            data.path(),
            &["verify", "--tenant", &t.id, "--vkey", &vkey],
        );
        assert_eq!(verified.status.code(), Some(0), "{}", describe(&verified));
        assert!(String::from_utf8_lossy(&verified.stdout).contains("OK"));
    }
    assert!(server.terminate().success(), "{}", server.log_tail());

    let home_db = data.path().join("bulkhead.db");
    let eu_db = data.path().join("eu-west.db");
    let us_db = data.path().join("us-east.db");
    for (own_db, own, foreign) in [(&eu_db, &eu, &us), (&us_db, &us, &eu)] {
        // Its own store holds everything of it: tenant, keys, records of every
        // kind written, and its audit log with the entries.
        assert_eq!(
            count(
                own_db,
                "SELECT COUNT(*) FROM tenants WHERE id = ?1",
                &own.id
            ),
            1
        );
        assert_eq!(
            count(
                own_db,
                "SELECT COUNT(*) FROM api_keys WHERE tenant_id = ?1",
                &own.id
            ),
            1
        );
        assert_eq!(
            count(
                own_db,
                "SELECT COUNT(*) FROM data_keys WHERE tenant_id = ?1",
                &own.id
            ),
            1
        );
        for kind in ["document", "chunk", "session", "session_message", "trace"] {
            let n: i64 = open(own_db)
                .query_row(
                    "SELECT COUNT(*) FROM records WHERE tenant_id = ?1 AND kind = ?2",
                    [&own.id, kind],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(n >= 1, "{}: no {kind} of its tenant", own_db.display());
        }
        assert!(
            count(
                own_db,
                "SELECT COUNT(*) FROM audit_entries e JOIN audit_logs l ON e.log = l.seq WHERE l.log_id = ?1",
                &own.id
            ) >= 3,
            "its audit entries are in its own store"
        );
        // And nothing of the other region's tenant, in any table or byte.
        assert_eq!(cells_containing(own_db, &foreign.id), Vec::<String>::new());
        assert!(
            !file_bytes_contain(own_db, &foreign.id),
            "{}",
            own_db.display()
        );
        // Nor anything of it in the home store: no directory rows at all.
        assert_eq!(cells_containing(&home_db, &own.id), Vec::<String>::new());
        assert!(!file_bytes_contain(&home_db, &own.id));
    }
    // The home store keeps only server-wide rows: no tenants, the operator log.
    assert_eq!(
        count(&home_db, "SELECT COUNT(*) FROM tenants WHERE id <> ?1", ""),
        0
    );
    assert_eq!(
        count(
            &home_db,
            "SELECT COUNT(*) FROM records WHERE tenant_id <> ?1",
            ""
        ),
        0
    );
    assert!(
        count(
            &home_db,
            "SELECT COUNT(*) FROM audit_logs WHERE log_id = ?1",
            "operator"
        ) == 1
    );
    assert_eq!(
        count(
            &eu_db,
            "SELECT COUNT(*) FROM audit_logs WHERE log_id = ?1",
            "operator"
        ),
        0
    );
}

/// A region that gets its store after its tenants were created: they stay in the
/// home store, are still served from there, and the server says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_created_before_their_region_had_a_store_stay_served_and_are_reported() {
    let data = tempfile::tempdir().unwrap();
    let client = Client::new();
    let mut server = Server::start(BULKHEAD, data.path()).await;
    let eu = tenant_in(&client, &server.base_url, "Early EU", "eu-west").await;
    expect_json(
        client
            .post(format!("{}/v1/documents", server.base_url))
            .bearer_auth(&eu.key)
            .json(&json!({"id": "early", "text": "written before the region had a store"})),
        StatusCode::CREATED,
        "create a document",
    )
    .await;
    assert!(server.terminate().success(), "{}", server.log_tail());

    let config = data.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        "[[regions]]\nname = \"eu-west\"\nstore = \"eu-west.db\"\n",
    )
    .unwrap();
    let mut server = Server::start_with(
        BULKHEAD,
        data.path(),
        &[("BULKHEAD_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let doc = expect_json(
        client
            .get(format!("{}/v1/documents/early", server.base_url))
            .bearer_auth(&eu.key),
        StatusCode::OK,
        "read the early document",
    )
    .await;
    assert_eq!(doc["text"], "written before the region had a store");
    // A tenant created now goes to the region's own store.
    let late = tenant_in(&client, &server.base_url, "Late EU", "eu-west").await;
    assert!(server.terminate().success(), "{}", server.log_tail());
    let log = server.log_tail();
    assert!(
        log.contains("TENANTS LIVE IN THE HOME STORE") && log.contains(&eu.id),
        "{log}"
    );
    let eu_db = data.path().join("eu-west.db");
    assert_eq!(
        count(
            &eu_db,
            "SELECT COUNT(*) FROM tenants WHERE id = ?1",
            &late.id
        ),
        1
    );
    assert_eq!(
        count(&eu_db, "SELECT COUNT(*) FROM tenants WHERE id = ?1", &eu.id),
        0
    );
}
