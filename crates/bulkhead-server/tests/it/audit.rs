//! The audit trail over HTTP: what gets logged where (invariant 4), checkpoints and
//! proofs a client verifies with nothing but the public key, tenant scoping of the
//! read endpoints, and logs that still verify after a crypto-shred.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::leaf_hash_of_json;
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_ledger::proof::{verify_consistency, verify_inclusion};
use bulkhead_ledger::{Hash, root_of};
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, assert_problem, hashes};

/// The log behind `prefix` (`/v1/audit` with a key, or an admin path), checked end
/// to end: checkpoint signature, every event hashing to its leaf, the root, and an
/// inclusion proof for every entry. Returns the checkpoint and the events.
async fn verified_log(api: &Api, prefix: &str, token: &str) -> (Checkpoint, Vec<Value>) {
    let vkey = api.call("GET", "/v1/audit/public-key", None, None).await;
    assert_eq!(vkey.status, StatusCode::OK);
    let verifier = NoteVerifier::from_vkey(std::str::from_utf8(&vkey.body).unwrap()).unwrap();
    let note = api
        .call("GET", &format!("{prefix}/checkpoint"), Some(token), None)
        .await;
    assert_eq!(
        note.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&note.body)
    );
    assert!(note.content_type.starts_with("text/plain"));
    let checkpoint = Checkpoint::open(std::str::from_utf8(&note.body).unwrap(), &verifier).unwrap();
    let entries = api
        .call(
            "GET",
            &format!("{prefix}/entries?start=0&end={}", checkpoint.size),
            Some(token),
            None,
        )
        .await
        .json();
    let entries = entries["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len() as u64, checkpoint.size);
    let mut leaves = Vec::new();
    let mut events = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["index"], i as u64);
        let leaf: Hash = STANDARD
            .decode(entry["leaf_hash"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        if !entry["event"].is_null() {
            assert_eq!(
                leaf_hash_of_json(&entry["event"]).unwrap(),
                leaf,
                "entry {i}"
            );
        }
        leaves.push(leaf);
        events.push(entry["event"].clone());
    }
    assert_eq!(root_of(&leaves), checkpoint.root);
    for (i, leaf) in leaves.iter().enumerate() {
        let p = api
            .call(
                "GET",
                &format!(
                    "{prefix}/proof/inclusion?index={i}&size={}",
                    checkpoint.size
                ),
                Some(token),
                None,
            )
            .await
            .json();
        assert_eq!(p["leaf_hash"], STANDARD.encode(leaf));
        verify_inclusion(
            i as u64,
            checkpoint.size,
            leaf,
            &hashes(&p["proof"]),
            &checkpoint.root,
        )
        .unwrap();
    }
    (checkpoint, events)
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let outcome = if e["outcome"] == "denied" {
                format!(" denied:{}", e["reason"].as_str().unwrap())
            } else {
                String::new()
            };
            format!("{}{outcome}", e["kind"].as_str().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn every_access_admin_action_and_denial_lands_in_the_right_log() {
    let api = Api::new().await;
    let (a, key_a) = api.tenant_with_key("a").await;
    let (b, key_b) = api.tenant_with_key("b").await;

    let created = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_a),
            Some(json!({"id": "plan", "text": "secret plan"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let request_id = created.headers["x-request-id"].to_str().unwrap().to_owned();
    api.call(
        "POST",
        "/v1/documents",
        Some(&key_b),
        Some(json!({"id": "b-doc", "text": "b text"})),
    )
    .await;
    assert_eq!(
        api.call("GET", "/v1/documents/plan", Some(&key_a), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/v1/documents", Some(&key_a), None)
            .await
            .status,
        StatusCode::OK
    );
    // A's probe for B's document: a 404 in A's log, nothing in B's.
    assert_eq!(
        api.call("GET", "/v1/documents/b-doc", Some(&key_a), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("DELETE", "/v1/documents/plan", Some(&key_a), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Denied: A's key id with a wrong secret, an unknown key, the admin plane with a
    // tenant key, no credential at all.
    let forged = format!("{}.{}", key_a.split_once('.').unwrap().0, "x".repeat(43));
    assert_eq!(
        api.call("GET", "/v1/documents", Some(&forged), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let unknown = format!("bhk_00000000000000ff.{}", "y".repeat(43));
    assert_eq!(
        api.call("GET", "/v1/documents", Some(&unknown), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call("GET", "/admin/v1/tenants", Some(&key_a), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call("GET", "/v1/documents", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Admin actions on A, then a quarantined request.
    api.call(
        "POST",
        &format!("/admin/v1/tenants/{a}/quarantine"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        api.call("GET", "/v1/documents", Some(&key_a), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    api.call(
        "DELETE",
        &format!("/admin/v1/tenants/{a}/quarantine"),
        Some(ADMIN),
        None,
    )
    .await;
    api.call(
        "POST",
        &format!("/admin/v1/tenants/{a}/quarantine"),
        Some(ADMIN),
        None,
    )
    .await;
    api.call(
        "DELETE",
        &format!("/admin/v1/tenants/{a}/quarantine"),
        Some(ADMIN),
        None,
    )
    .await;
    let missing = "tn_000000000000000000000000";
    assert_eq!(
        api.call(
            "POST",
            &format!("/admin/v1/tenants/{missing}/rotate-key"),
            Some(ADMIN),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let (_, events_a) = verified_log(&api, "/v1/audit", &key_a).await;
    assert_eq!(
        kinds(&events_a),
        [
            "tenant.create",
            "key.issue",
            "document.create",
            "document.read",
            "document.list",
            "document.read denied:not_found",
            "document.delete",
            "auth denied:invalid_secret",
            "tenant.quarantine",
            "auth denied:quarantined",
            "tenant.release",
            "tenant.quarantine",
            "tenant.release",
            // Reading the log is logged, before the read is answered.
            "audit.read",
        ]
    );
    assert_eq!(events_a[2]["request_id"], request_id.as_str());
    assert_eq!(events_a[2]["subjects"][0]["id"], "plan");
    assert!(
        events_a[2]["subjects"][0]["hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let a_text = serde_json::to_string(&events_a).unwrap();
    assert!(
        !a_text.contains("secret plan"),
        "content never enters the log"
    );
    assert!(!a_text.contains(&b), "nothing of B in A's log");

    let (_, events_b) = verified_log(&api, "/v1/audit", &key_b).await;
    assert_eq!(
        kinds(&events_b),
        [
            "tenant.create",
            "key.issue",
            "document.create",
            "audit.read"
        ]
    );

    let (_, operator) = verified_log(&api, "/admin/v1/audit", ADMIN).await;
    let op = kinds(&operator);
    for expected in [
        "tenant.create",
        "key.issue",
        "auth denied:unknown_key",
        "admin.auth denied:invalid_admin_token",
        "auth denied:missing_credential",
        "tenant.quarantine",
        "tenant.release",
        "tenant.rotate_key denied:not_found",
    ] {
        assert!(
            op.contains(&expected.to_owned()),
            "operator log lacks {expected}: {op:?}"
        );
    }
    assert_eq!(operator[0]["tenant"], a.as_str());
    // The admin's reads of the operator log just now are in it, once per kind
    // of read (the next read of the entries is only counted).
    let reads = api.events("/admin/v1/audit", ADMIN, "admin.read").await;
    assert!(
        reads
            .iter()
            .any(|e| e["attrs"]["read"] == "/admin/v1/audit/entries"),
        "{reads:?}"
    );
    let again = api.events("/admin/v1/audit", ADMIN, "admin.read").await;
    assert_eq!(
        again.len(),
        reads.len(),
        "bounded: a repeat read is counted, not logged"
    );
    // An admin read of one tenant is in that tenant's own log too.
    let shown = api
        .call("GET", &format!("/admin/v1/tenants/{b}"), Some(ADMIN), None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let seen = api.events("/v1/audit", &key_b, "admin.read").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["attrs"]["read"], "/admin/v1/tenants/{id}");
    assert_eq!(seen[0]["actor"], "admin");

    let metrics = api.call("GET", "/metrics", None, None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    let events: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bulkhead_audit_events_total "))
        .expect("the audit event counter is exported")
        .parse()
        .unwrap();
    assert!(events >= (events_a.len() + events_b.len() + operator.len()) as u64);
    assert!(text.contains("bulkhead_audit_signing_refusals_total 0"));
}

#[tokio::test]
async fn a_tenant_reads_only_its_own_log_and_bad_queries_are_problems() {
    let api = Api::new().await;
    let (a, key_a) = api.tenant_with_key("a").await;
    let (_b, key_b) = api.tenant_with_key("b").await;
    // No parameter names a log on the tenant plane: trying one is a 400.
    let r = api
        .call(
            "GET",
            &format!("/v1/audit/entries?tenant={a}"),
            Some(&key_b),
            None,
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "tenant parameter");
    let size_b = api
        .call("GET", "/v1/audit/entries", Some(&key_b), None)
        .await
        .json()["entries"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        size_b, 3,
        "tenant.create, key.issue, and this read's audit.read"
    );
    for (path, what) in [
        (
            "/v1/audit/proof/inclusion?index=2&size=2",
            "index beyond size",
        ),
        (
            "/v1/audit/proof/inclusion?index=0&size=99",
            "size beyond log",
        ),
        ("/v1/audit/proof/inclusion?index=x", "non-numeric"),
        (
            "/v1/audit/proof/consistency?old=0&new=2",
            "from the empty tree",
        ),
        ("/v1/audit/proof/consistency?old=2&new=1", "reversed"),
        ("/v1/audit/entries?start=5&end=1", "end below start"),
    ] {
        let r = api.call("GET", path, Some(&key_a), None).await;
        assert_problem(&r, StatusCode::BAD_REQUEST, what);
    }
    // The admin plane's audit endpoints refuse tenant keys; tenant ones refuse the
    // admin token.
    let r = api
        .call("GET", "/admin/v1/audit/checkpoint", Some(&key_a), None)
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "tenant key on admin audit");
    let r = api
        .call("GET", "/v1/audit/checkpoint", Some(ADMIN), None)
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "admin token on tenant audit");
    // A foreign or missing tenant id on the admin path: identical 404s.
    let r = api
        .call(
            "GET",
            "/admin/v1/audit/tenants/tn_000000000000000000000000/checkpoint",
            Some(ADMIN),
            None,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "missing tenant log");
}

#[tokio::test]
async fn checkpoints_stay_consistent_and_logs_verify_after_rotation_and_crypto_shred() {
    let api = Api::new().await;
    let (a, key_a) = api.tenant_with_key("a").await;
    for i in 0..5 {
        api.call(
            "POST",
            "/v1/documents",
            Some(&key_a),
            Some(json!({"text": format!("doc {i}")})),
        )
        .await;
    }
    let (first, _) = verified_log(&api, "/v1/audit", &key_a).await;

    // Rotation: the events move to the new key and stay readable.
    api.call(
        "POST",
        &format!("/admin/v1/tenants/{a}/rotate-key"),
        Some(ADMIN),
        None,
    )
    .await;
    let id = bulkhead_types::TenantId::parse(&a).unwrap();
    while api.state.vault.reseal(&id, 256).await.unwrap() > 0 {}
    api.state.vault.reseal(&id, 256).await.unwrap();
    let keys = api.state.vault.store().data_keys(&id).await.unwrap();
    assert_eq!(
        keys.len(),
        1,
        "the old key is destroyed once events are re-sealed"
    );
    let (second, events) = verified_log(&api, "/v1/audit", &key_a).await;
    assert!(events.iter().all(|e| !e.is_null()));
    let p = api
        .call(
            "GET",
            &format!(
                "/v1/audit/proof/consistency?old={}&new={}",
                first.size, second.size
            ),
            Some(&key_a),
            None,
        )
        .await
        .json();
    verify_consistency(
        first.size,
        second.size,
        &hashes(&p["proof"]),
        &first.root,
        &second.root,
    )
    .unwrap();

    // Crypto-shred: the operator can still verify the tenant's log; every event
    // reads as null, the hashes and the root still hold.
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/admin/v1/tenants/{a}"),
            Some(ADMIN),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let (after, events) = verified_log(&api, &format!("/admin/v1/audit/tenants/{a}"), ADMIN).await;
    assert_eq!(after.size, second.size);
    assert_eq!(after.root, second.root);
    assert!(
        events.iter().all(Value::is_null),
        "events are unreadable after the shred"
    );
    let (_, operator) = verified_log(&api, "/admin/v1/audit", ADMIN).await;
    assert!(kinds(&operator).contains(&"tenant.erase".to_owned()));
    // The shredded tenant's key no longer reaches anything.
    let r = api
        .call("GET", "/v1/audit/checkpoint", Some(&key_a), None)
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "erased tenant's key");
}
