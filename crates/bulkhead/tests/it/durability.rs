//! End to end: an acknowledged write survives `kill -9`, and a clean shutdown
//! (SIGTERM) mid-ingest exits 0 and loses nothing acknowledged.
//!
//! What is proven: every `POST /v1/documents` that the server answered with
//! `201 Created` can be read back, with the same text, after the server process
//! is killed with SIGKILL in the middle of ingest and started again on the same
//! data directory. SIGKILL gives the process no chance to flush a buffer, finish
//! a queue or run a destructor, so a server that acknowledged a write before
//! handing it to the operating system would lose it here.
//!
//! How: the real `bulkhead` binary is started on a temporary data directory and
//! a free port. Four tenants with one key each are created through the admin
//! plane, then 16 concurrent writers post ~1 KiB documents, each recorded only
//! after its 201 has arrived. After about 1.5 s of ingest the server is killed
//! while the writers are still sending, the binary is started again on the same
//! directory (it reuses the development master key it generated there), and
//! every recorded document is fetched with its own tenant's key. As an isolation
//! sanity check, one tenant's document must be a 404 for another tenant's key.
//!
//! What is not proven: durability across power loss. A killed process leaves the
//! kernel's page cache intact, so this test cannot tell an fsync from a plain
//! write; that needs a fault-injecting file system or a virtual machine whose
//! power is cut.
//!
//! Nothing here asserts on timing; the 1.5 s only decides when to pull the plug.

#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_test_support::{Server, expect_json, lock, string_field};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::BULKHEAD;

const TENANTS: usize = 4;
const WRITERS: usize = 16;
const INGEST_BEFORE_KILL: Duration = Duration::from_millis(1500);
/// How long ingest may run without a single acknowledgement before the test
/// gives up; far above anything a working server needs.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Readers that check the acknowledged documents after the restart.
const VERIFIERS: usize = 8;
const SIGKILL: i32 = 9;

/// How the first server life ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: no chance to flush anything.
    Kill9,
    /// SIGTERM: a clean shutdown that lets in-flight requests finish.
    Term,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_documents_survive_kill_9() {
    ingest_then_stop_then_verify(Stop::Kill9).await;
}

/// SIGTERM during ingest: the server exits 0 after finishing in-flight requests,
/// and every document it acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_mid_ingest_loses_nothing_acknowledged() {
    ingest_then_stop_then_verify(Stop::Term).await;
}

async fn ingest_then_stop_then_verify(stop: Stop) {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let client = Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTP client");

    // First life: set up tenants, then write until the plug is pulled.
    let mut server = Server::start(BULKHEAD, data_dir.path()).await;
    let mut tenants = Vec::with_capacity(TENANTS);
    for index in 0..TENANTS {
        let (id, key) = bulkhead_test_support::tenant_with_key(
            &client,
            &server.base_url,
            &format!("durability-{index}"),
        )
        .await;
        tenants.push(Tenant { id, key });
    }
    let tenants = Arc::new(tenants);

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let killed = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            tokio::spawn(write_until_error(Writer {
                client: client.clone(),
                base_url: server.base_url.clone(),
                writer,
                tenants: Arc::clone(&tenants),
                acked: Arc::clone(&acked),
                killed: Arc::clone(&killed),
            }))
        })
        .collect();

    let ingest_started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let acked_count = lock(&acked).len();
        let elapsed = ingest_started.elapsed();
        if elapsed >= INGEST_BEFORE_KILL && acked_count > 0 {
            break;
        }
        // Every writer has stopped on its own: the outcomes below say why.
        if writers.iter().all(tokio::task::JoinHandle::is_finished) {
            break;
        }
        assert!(
            elapsed < FIRST_ACK_TIMEOUT,
            "no document was acknowledged within {FIRST_ACK_TIMEOUT:?}\n{}",
            server.log_tail()
        );
    }

    // Set the flag before the kill so that any transport error a writer sees
    // while the flag is still clear is a genuine failure, not the kill.
    killed.store(true, Ordering::SeqCst);
    match stop {
        Stop::Kill9 => {
            let status = server.kill_9();
            assert_eq!(
                status.signal(),
                Some(SIGKILL),
                "the server should have been running until SIGKILL, but it ended with {status}\n{}",
                server.log_tail()
            );
        }
        Stop::Term => {
            let status = server.terminate();
            assert!(
                status.success(),
                "after SIGTERM the server should exit 0, but it ended with {status}\n{}",
                server.log_tail()
            );
            // The log is drained by a thread; give it a moment to read the last lines.
            for _ in 0..50 {
                if server.log_tail().contains("bulkhead stopped cleanly") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                server.log_tail().contains("bulkhead stopped cleanly"),
                "the server did not report a clean stop\n{}",
                server.log_tail()
            );
        }
    }
    drop(server);

    let mut writer_failures = Vec::new();
    for writer in writers {
        if let Err(failure) = writer.await.expect("writer task panicked") {
            writer_failures.push(failure);
        }
    }
    assert!(
        writer_failures.is_empty(),
        "writers failed before the kill:\n{}",
        writer_failures.join("\n")
    );

    let acked = Arc::new(std::mem::take(&mut *lock(&acked)));
    assert!(
        !acked.is_empty(),
        "no document was acknowledged before the kill"
    );
    let per_tenant: Vec<usize> = (0..TENANTS)
        .map(|tenant| acked.iter().filter(|doc| doc.tenant == tenant).count())
        .collect();
    println!(
        "acknowledged before kill -9: {} documents (per tenant {per_tenant:?}) in {:.2?}",
        acked.len(),
        ingest_started.elapsed()
    );

    // Second life: everything acknowledged must be there, unchanged.
    let server = Server::start(BULKHEAD, data_dir.path()).await;
    let failures = verify_all(&client, &server.base_url, &tenants, &acked).await;
    assert!(
        failures.is_empty(),
        "{} of {} acknowledged documents were lost or changed across kill -9; first ones:\n{}\n{}",
        failures.len(),
        acked.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        server.log_tail()
    );
    println!(
        "all {} acknowledged documents read back after restart",
        acked.len()
    );

    // The audit log is as durable as the data: every acknowledged create is in its
    // tenant's log, and the log verifies against a checkpoint signed by the same key.
    let vkey = client
        .get(format!("{}/v1/audit/public-key", server.base_url))
        .send()
        .await
        .expect("GET the public key")
        .text()
        .await
        .expect("read the public key");
    let verifier = bulkhead_ledger::note::NoteVerifier::from_vkey(&vkey).expect("a valid vkey");
    for (index, tenant) in tenants.iter().enumerate() {
        let logged = audited_document_ids(&client, &server.base_url, tenant, &verifier).await;
        for doc in acked.iter().filter(|d| d.tenant == index) {
            assert!(
                logged.contains(&doc.id),
                "document {} was acknowledged but its creation is not in tenant {index}'s audit log",
                doc.id
            );
        }
    }

    // Isolation sanity: a document of tenant 0 does not exist for tenant 1.
    let (owner, other) = (0, 1);
    let doc = acked.iter().find(|doc| doc.tenant == owner).expect(
        "writers 0, 4, 8 and 12 write for tenant 0, so some document of it was acknowledged",
    );
    let response = client
        .get(format!("{}/v1/documents/{}", server.base_url, doc.id))
        .bearer_auth(&tenants[other].key)
        .send()
        .await
        .expect("GET another tenant's document");
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "tenant {other} could see tenant {owner}'s document {}",
        doc.id
    );
}

/// The ids of every `document.create` in the tenant's audit log, after checking the
/// signed checkpoint and recomputing its root from every entry.
async fn audited_document_ids(
    client: &Client,
    base_url: &str,
    tenant: &Tenant,
    verifier: &bulkhead_ledger::note::NoteVerifier,
) -> std::collections::HashSet<String> {
    let note = client
        .get(format!("{base_url}/v1/audit/checkpoint"))
        .bearer_auth(&tenant.key)
        .send()
        .await
        .expect("GET the checkpoint")
        .text()
        .await
        .expect("read the checkpoint");
    let checkpoint = bulkhead_ledger::checkpoint::Checkpoint::open(&note, verifier)
        .expect("the checkpoint verifies under the server's key");
    let mut range = bulkhead_ledger::CompactRange::new();
    let mut ids = std::collections::HashSet::new();
    while range.size() < checkpoint.size {
        let page = expect_json(
            client
                .get(format!(
                    "{base_url}/v1/audit/entries?start={}&end={}",
                    range.size(),
                    checkpoint.size
                ))
                .bearer_auth(&tenant.key),
            StatusCode::OK,
            "audit entries",
        )
        .await;
        for entry in page["entries"].as_array().expect("entries") {
            let leaf = bulkhead_ledger::hash_from_b64(entry["leaf_hash"].as_str().unwrap())
                .expect("a base64 leaf hash");
            range.push(leaf);
            let event = &entry["event"];
            assert_eq!(
                bulkhead_ledger::event::leaf_hash_of_json(event).unwrap(),
                leaf
            );
            if event["kind"] == "document.create" {
                ids.insert(string_field(&event["subjects"][0], "id"));
            }
        }
    }
    assert_eq!(
        range.root(),
        checkpoint.root,
        "the audit log's root does not match its checkpoint"
    );
    ids
}

/// A tenant created through the admin plane, with one API key.
#[derive(Debug)]
struct Tenant {
    id: String,
    key: String,
}

/// A document the server answered with 201.
#[derive(Debug)]
struct Acked {
    tenant: usize,
    id: String,
    text: String,
}

struct Writer {
    client: Client,
    base_url: String,
    writer: usize,
    tenants: Arc<Vec<Tenant>>,
    acked: Arc<Mutex<Vec<Acked>>>,
    killed: Arc<AtomicBool>,
}

/// Posts documents for one tenant until a request fails. A transport error
/// after the kill is the expected end; anything else is returned as a failure.
async fn write_until_error(w: Writer) -> Result<(), String> {
    let tenant = w.writer % TENANTS;
    let key = &w.tenants[tenant].key;
    for n in 0_u64.. {
        let id = format!("w{}-n{n}", w.writer);
        let text = document_text(&id);
        let sent = w
            .client
            .post(format!("{}/v1/documents", w.base_url))
            .bearer_auth(key)
            .json(&json!({ "id": id, "text": text }))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(_) if w.killed.load(Ordering::SeqCst) => return Ok(()),
            Err(error) => return Err(format!("writer {}: {id}: {error}", w.writer)),
        };
        match response.status() {
            // Only now is the document acknowledged.
            StatusCode::CREATED => lock(&w.acked).push(Acked { tenant, id, text }),
            // Back-pressure is a legitimate answer; the document was not taken.
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(format!("writer {}: {id}: {status}: {body}", w.writer));
            }
        }
    }
    unreachable!("the writer loop only ends by returning")
}

/// About 1 KiB of text that names its document, so a mix-up shows.
fn document_text(id: &str) -> String {
    const FILLER: &str = "Every tenant's documents are sealed under that tenant's own key. ";
    let mut text = format!("Document {id} begins. ");
    while text.len() < 1000 {
        text.push_str(FILLER);
    }
    text.push_str(&format!("Document {id} ends."));
    text
}

/// Reads every acknowledged document back with its tenant's key and returns a
/// description of each one that is missing or different.
async fn verify_all(
    client: &Client,
    base_url: &str,
    tenants: &Arc<Vec<Tenant>>,
    acked: &Arc<Vec<Acked>>,
) -> Vec<String> {
    let verifiers: Vec<_> = (0..VERIFIERS)
        .map(|verifier| {
            let (client, base_url) = (client.clone(), base_url.to_owned());
            let (tenants, acked) = (Arc::clone(tenants), Arc::clone(acked));
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for doc in acked.iter().skip(verifier).step_by(VERIFIERS) {
                    if let Err(failure) = verify_one(&client, &base_url, &tenants, doc).await {
                        failures.push(failure);
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for verifier in verifiers {
        failures.extend(verifier.await.expect("verifier task panicked"));
    }
    failures
}

async fn verify_one(
    client: &Client,
    base_url: &str,
    tenants: &[Tenant],
    doc: &Acked,
) -> Result<(), String> {
    let response = client
        .get(format!("{base_url}/v1/documents/{}", doc.id))
        .bearer_auth(&tenants[doc.tenant].key)
        .send()
        .await
        .map_err(|error| format!("{}: GET failed: {error}", doc.id))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status != StatusCode::OK {
        let tenant = &tenants[doc.tenant];
        return Err(format!(
            "{} (tenant {} {}): {status}: {body}",
            doc.id, doc.tenant, tenant.id
        ));
    }
    let read: Value = serde_json::from_str(&body)
        .map_err(|error| format!("{}: body is not JSON ({error}): {body}", doc.id))?;
    if read["id"] != doc.id.as_str() {
        return Err(format!("{}: read back with id {}", doc.id, read["id"]));
    }
    if read["text"] != doc.text.as_str() {
        return Err(format!("{}: text differs: {}", doc.id, read["text"]));
    }
    Ok(())
}

/// Issue 17, item 2: a tenant holding more than its quota (the operator lowered
/// it after the tenant filled up) cannot stop the server from restarting. The
/// restart reads the tenant page by page, serves it, still refuses its new
/// writes, and its documents are protected by the guard again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quota_does_not_stop_a_restart() {
    use bulkhead_test_support::ADMIN_TOKEN;
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let client = Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTP client");
    let mut server = Server::start(BULKHEAD, data_dir.path()).await;
    let base = server.base_url.clone();
    let (owner, owner_key) =
        bulkhead_test_support::tenant_with_key(&client, &base, "hoarder").await;
    let (_, other_key) = bulkhead_test_support::tenant_with_key(&client, &base, "other").await;
    // More documents than one page of the rebuild (16), each with text of its own.
    let text = |i: usize| {
        format!(
            "Ledger entry {i}: the quarterly reconciliation of account {} moved {} units \
             from the reserve to the operating pool after the audit committee signed off.",
            1000 + i * 37,
            50 + i * 11
        )
    };
    let mut first = String::new();
    for i in 0..40 {
        let doc = expect_json(
            client
                .post(format!("{base}/v1/documents"))
                .bearer_auth(&owner_key)
                .json(&json!({ "text": text(i) })),
            StatusCode::CREATED,
            "store a document",
        )
        .await;
        if i == 0 {
            first = string_field(&doc, "id");
        }
    }
    let quotas = client
        .put(format!("{base}/admin/v1/tenants/{owner}/quotas"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "documents": 5, "stored_bytes": 1024 }))
        .send()
        .await
        .expect("set the quotas");
    assert!(quotas.status().is_success(), "{:?}", quotas.text().await);
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log_tail());
    drop(server);

    let server = Server::start(BULKHEAD, data_dir.path()).await;
    let base = server.base_url.clone();
    let usage = expect_json(
        client
            .get(format!("{base}/v1/usage"))
            .bearer_auth(&owner_key),
        StatusCode::OK,
        "read the usage",
    )
    .await;
    assert_eq!(usage["documents"]["used"], 40, "{usage}");
    assert_eq!(usage["documents"]["limit"], 5, "{usage}");
    // Its data is served …
    let doc = expect_json(
        client
            .get(format!("{base}/v1/documents/{first}"))
            .bearer_auth(&owner_key),
        StatusCode::OK,
        "read a document after the restart",
    )
    .await;
    assert_eq!(doc["text"], text(0));
    // … new writes are refused by the quota, not by a broken server …
    let refused = client
        .post(format!("{base}/v1/documents"))
        .bearer_auth(&owner_key)
        .json(&json!({ "text": "one more" }))
        .send()
        .await
        .expect("send a write");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // … and the guard knows every page of it again: the last document, in
    // another tenant's output, is blocked.
    let scan = expect_json(
        client
            .post(format!("{base}/v1/guard/scan"))
            .bearer_auth(&other_key)
            .json(&json!({ "text": format!("Sure. {}", text(39)), "direction": "output" })),
        StatusCode::OK,
        "scan another tenant's output",
    )
    .await;
    assert_eq!(scan["verdict"], "blocked", "{scan}");
}
