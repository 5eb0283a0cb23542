//! End to end: the audit CLI against a real server. An auditor with nothing but the
//! public key exports and verifies a tenant's log, keeps a checkpoint, and later
//! catches each way an insider could rewrite the trail: an edited export, a forged
//! checkpoint signature, a database rolled back to an older backup, an edited
//! interior hash, a truncated log.

#![cfg(unix)]

use std::path::Path;
use std::process::Output;

use bulkhead_test_support::cli::{self, run};
use bulkhead_test_support::{ADMIN_TOKEN, Server, describe};
use reqwest::Client;
use serde_json::{Value, json};

use crate::BULKHEAD;

fn cli(server: &Server, data_dir: &Path, args: &[&str]) -> Output {
    run(server
        .cli()
        .arg("audit")
        .args(args)
        .env("BULKHEAD_DATA_DIR", data_dir))
}

fn offline(args: &[&str]) -> Output {
    // Nothing listens at the server address: an offline check must not need a server.
    run(cli::offline(BULKHEAD).arg("audit").args(args))
}

fn assert_verified(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{}", describe(output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("OK"),
        "{}",
        describe(output)
    );
}

/// Verification failed (exit 3) and the report says `needle`.
fn assert_caught(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(3), "{}", describe(output));
    let all = describe(output).to_lowercase();
    assert!(
        all.contains(needle),
        "expected the report to mention {needle:?}:\n{all}"
    );
    println!(
        "caught, as expected ({needle}):\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

async fn admin(
    client: &Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let response = client
        .request(method, format!("{}{path}", server.base_url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap_or(Value::Null)
}

async fn add_documents(client: &Client, server: &Server, key: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let response = client
            .post(format!("{}/v1/documents", server.base_url))
            .bearer_auth(key)
            .json(&json!({"id": format!("{prefix}-{i}"), "text": format!("{prefix} text {i}")}))
            .send()
            .await
            .expect("create a document");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    }
}

fn sqlite(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).expect("open the stopped server's database");
    conn.execute_batch(sql).expect("tamper with the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_with_only_the_public_key_catches_every_rewrite() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let client = Client::new();

    // Life 1: a tenant with some history; then a backup of the database.
    let mut server = Server::start(BULKHEAD, data.path()).await;
    let tenant = admin(
        &client,
        &server,
        reqwest::Method::POST,
        "/admin/v1/tenants",
        json!({"name": "acme"}),
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let key = admin(
        &client,
        &server,
        reqwest::Method::POST,
        &format!("/admin/v1/tenants/{tenant_id}/keys"),
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    add_documents(&client, &server, &key, "early", 5).await;

    let vkey = cli(&server, data.path(), &["public-key"]);
    assert_eq!(vkey.status.code(), Some(0), "{}", describe(&vkey));
    let vkey = String::from_utf8(vkey.stdout).unwrap().trim().to_owned();
    let local = cli(&server, data.path(), &["public-key", "--local"]);
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).trim(),
        vkey,
        "{}",
        describe(&local)
    );
    std::fs::write(file("server.vkey"), &vkey).unwrap();
    assert!(server.terminate().success());
    let db = data.path().join("bulkhead.db");
    let backup = std::fs::read(&db).unwrap();

    // Life 2: more history; the auditor exports, verifies offline and keeps the
    // checkpoint.
    let mut server = Server::start(BULKHEAD, data.path()).await;
    add_documents(&client, &server, &key, "late", 5).await;
    let export = cli(
        &server,
        data.path(),
        &["export", "--api-key", &key, "--out", &file("acme.json")],
    );
    assert_eq!(export.status.code(), Some(0), "{}", describe(&export));
    assert_verified(&offline(&[
        "verify",
        "--file",
        &file("acme.json"),
        "--vkey-file",
        &file("server.vkey"),
        "--save-checkpoint",
        &file("acme.cp"),
    ]));
    // Live, by the operator, for the same tenant and for the operator log.
    assert_verified(&cli(
        &server,
        data.path(),
        &[
            "verify",
            "--tenant",
            &tenant_id,
            "--vkey",
            &vkey,
            "--old-checkpoint",
            &file("acme.cp"),
        ],
    ));
    assert_verified(&cli(
        &server,
        data.path(),
        &["verify", "--operator", "--vkey", &vkey],
    ));

    // An edited export: one event's subject changed.
    let exported = std::fs::read_to_string(file("acme.json")).unwrap();
    let edited = exported.replacen("late-3", "late-X", 1);
    assert_ne!(edited, exported);
    std::fs::write(file("edited.json"), edited).unwrap();
    assert_caught(
        &offline(&[
            "verify",
            "--file",
            &file("edited.json"),
            "--vkey-file",
            &file("server.vkey"),
        ]),
        "does not hash to its leaf",
    );
    // A forged checkpoint: one signature byte changed.
    let cp = std::fs::read_to_string(file("acme.cp")).unwrap();
    let sig_at = cp.rfind(" ").unwrap() + 30;
    let mut forged = cp.clone().into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    std::fs::write(file("forged.cp"), forged).unwrap();
    assert_caught(
        &cli(
            &server,
            data.path(),
            &[
                "verify",
                "--api-key",
                &key,
                "--vkey",
                &vkey,
                "--old-checkpoint",
                &file("forged.cp"),
            ],
        ),
        "signature",
    );
    // Another key than the server's: nothing verifies.
    let stranger = bulkhead_ledger::note::NoteSigner::generate("bulkhead.local")
        .unwrap()
        .vkey();
    assert_caught(
        &cli(
            &server,
            data.path(),
            &["verify", "--api-key", &key, "--vkey", &stranger],
        ),
        "signature",
    );
    assert!(server.terminate().success());

    // Life 3: the database is rolled back to the backup. The server happily serves
    // the older log; the auditor's kept checkpoint exposes it. (A second auditor,
    // arriving now, starts a fresh chain from the rolled-back log: `early.cp`.)
    std::fs::write(&db, &backup).unwrap();
    let _ = std::fs::remove_file(data.path().join("bulkhead.db-wal"));
    let mut server = Server::start(BULKHEAD, data.path()).await;
    assert_caught(
        &cli(
            &server,
            data.path(),
            &[
                "verify",
                "--api-key",
                &key,
                "--vkey",
                &vkey,
                "--old-checkpoint",
                &file("acme.cp"),
            ],
        ),
        "rollback",
    );
    assert_verified(&cli(
        &server,
        data.path(),
        &[
            "verify",
            "--api-key",
            &key,
            "--vkey",
            &vkey,
            "--save-checkpoint",
            &file("early.cp"),
        ],
    ));
    add_documents(&client, &server, &key, "again", 250).await;
    assert!(server.terminate().success());

    // Life 4: an interior hash of the tenant's tree is edited (node 3/1, the root of
    // leaves 8..16, which the consistency proof from `early.cp` uses: that
    // checkpoint is of size 8 — seven entries and the verify's own `audit.read` —
    // so the proof starts from the sibling of the first eight leaves; the 250
    // documents above filled the first tile, and full tiles are what is stored).
    // The entries still hash to the signed root, but the server's proof no longer
    // holds.
    let log_seq = format!("(SELECT seq FROM audit_logs WHERE log_id = '{tenant_id}')");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tile_sql =
        format!("SELECT data FROM audit_tiles WHERE log = {log_seq} AND level = 0 AND idx = 0");
    let mut tile: Vec<u8> = conn.query_row(&tile_sql, [], |r| r.get(0)).unwrap();
    // Row j of a tile of width w holds w >> j hashes; row 3 starts after rows 0–2.
    let width = (1..=256usize)
        .find(|w| (0..8).map(|j| w >> j).sum::<usize>() * 32 == tile.len())
        .expect("a tile's length gives its width");
    tile[(width + width / 2 + width / 4 + 1) * 32] ^= 0x01;
    conn.execute(
        &format!(
            "UPDATE audit_tiles SET data = ?1 WHERE log = {log_seq} AND level = 0 AND idx = 0"
        ),
        [tile],
    )
    .unwrap();
    drop(conn);
    let mut server = Server::start(BULKHEAD, data.path()).await;
    let caught = cli(
        &server,
        data.path(),
        &[
            "verify",
            "--api-key",
            &key,
            "--vkey",
            &vkey,
            "--old-checkpoint",
            &file("early.cp"),
        ],
    );
    assert_caught(&caught, "consistency");
    assert!(server.terminate().success());

    // Life 5: the log truncated in place (entries and size cut back): the signed
    // checkpoint commits to more entries than the server can produce.
    sqlite(
        &db,
        &format!(
            "DELETE FROM audit_entries WHERE log = {log_seq} AND idx >= 4;
             UPDATE audit_logs SET size = 4 WHERE log_id = '{tenant_id}';"
        ),
    );
    let server = Server::start(BULKHEAD, data.path()).await;
    let truncated = cli(
        &server,
        data.path(),
        &["verify", "--api-key", &key, "--vkey", &vkey],
    );
    assert_caught(&truncated, "truncated");
}

/// Nothing listening at `--server`: every client command says what to check,
/// rather than only the socket error.
#[test]
fn an_unreachable_server_is_explained() {
    for args in [
        &["tenant", "list"][..],
        &["audit", "checkpoint", "--operator"][..],
    ] {
        let output = run(std::process::Command::new(BULKHEAD)
            .args(args)
            .args([
                "--server",
                "http://127.0.0.1:9",
                "--admin-token",
                "0123456789abcdef0123",
            ])
            .env_remove("BULKHEAD_API_KEY"));
        assert!(!output.status.success(), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("is `bulkhead serve` running? see --server"),
            "{}",
            describe(&output)
        );
    }
}
