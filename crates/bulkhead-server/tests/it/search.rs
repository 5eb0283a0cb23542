//! `POST /v1/search` over HTTP: a tenant finds its own chunks and never another's,
//! deletions and expiry take effect at once, every search is logged with the chunk
//! ids and hashes it returned, and bad input is a problem+json.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, assert_problem};

async fn put(api: &Api, key: &str, body: Value) -> Value {
    let r = api
        .call("POST", "/v1/documents", Some(key), Some(body))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

async fn search(api: &Api, key: &str, body: Value) -> Vec<Value> {
    let r = api.call("POST", "/v1/search", Some(key), Some(body)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()["results"].as_array().unwrap().clone()
}

fn ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenant_finds_its_own_chunks_and_never_anothers() {
    let api = Api::new().await;
    let (_a, key_a) = api.tenant_with_key("a").await;
    let (_b, key_b) = api.tenant_with_key("b").await;
    // Warm A's index first, so later writes go through the hot path too.
    assert!(
        search(&api, &key_a, json!({"query": "anything"}))
            .await
            .is_empty()
    );
    let long = "Quarterly revenue grew in the northern region. ".repeat(60);
    let created = put(
        &api,
        &key_a,
        json!({"id": "report", "text": long, "metadata": {"kind": "finance"}}),
    )
    .await;
    assert!(
        created["chunks"].as_u64().unwrap() >= 2,
        "a long document is cut into chunks: {created}"
    );
    put(&api, &key_a, json!({"id": "memo", "text": "The falcon canary ZEBRA-7731 lives in memo A.", "metadata": {"kind": "memo"}})).await;
    put(
        &api,
        &key_b,
        json!({"id": "memo", "text": "Tenant B secret canary QUOKKA-4410 in the B memo."}),
    )
    .await;

    let hits = search(&api, &key_a, json!({"query": "ZEBRA-7731 canary"})).await;
    assert_eq!(ids(&hits)[0], "memo");
    assert!(hits[0]["chunk_id"].as_str().unwrap().starts_with("memo#"));
    assert!(hits[0]["text"].as_str().unwrap().contains("ZEBRA-7731"));
    // B's canary, searched by A in every mode: nothing of B comes back.
    for mode in ["bm25", "vector", "hybrid"] {
        let hits = search(
            &api,
            &key_a,
            json!({"query": "QUOKKA-4410 secret canary B memo", "mode": mode, "top_k": 50}),
        )
        .await;
        let text = serde_json::to_string(&hits).unwrap();
        assert!(!text.contains("QUOKKA"), "{mode}: A saw B's chunk: {text}");
    }
    let hits = search(&api, &key_b, json!({"query": "QUOKKA-4410"})).await;
    assert!(hits[0]["text"].as_str().unwrap().contains("QUOKKA-4410"));
    // Metadata filters.
    let hits = search(
        &api,
        &key_a,
        json!({"query": "revenue canary", "filter": {"kind": "memo"}}),
    )
    .await;
    assert_eq!(ids(&hits), ["memo"]);
    let hits = search(
        &api,
        &key_a,
        json!({"query": "revenue northern", "top_k": 2}),
    )
    .await;
    assert_eq!(hits.len(), 2);
    assert!(ids(&hits).iter().all(|d| d == "report"));
}

#[tokio::test]
async fn deleted_and_expired_documents_disappear_at_once() {
    let api = Api::new().await;
    let (_a, key) = api.tenant_with_key("a").await;
    put(
        &api,
        &key,
        json!({"id": "keep", "text": "pelican harbour schedule"}),
    )
    .await;
    put(
        &api,
        &key,
        json!({"id": "gone", "text": "pelican harbour secret plan"}),
    )
    .await;
    put(
        &api,
        &key,
        json!({"id": "brief", "text": "pelican harbour short lived", "ttl_seconds": 60}),
    )
    .await;
    assert_eq!(
        search(&api, &key, json!({"query": "pelican harbour"}))
            .await
            .len(),
        3
    );
    assert_eq!(
        api.call("DELETE", "/v1/documents/gone", Some(&key), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let after = ids(&search(&api, &key, json!({"query": "pelican harbour secret"})).await);
    assert!(!after.contains(&"gone".to_owned()), "{after:?}");
    api.clock.advance_secs(61);
    let after = ids(&search(&api, &key, json!({"query": "pelican harbour short lived"})).await);
    assert_eq!(after, ["keep"]);
    // A re-created id is found again, with its new text only.
    put(
        &api,
        &key,
        json!({"id": "gone", "text": "pelican harbour new text"}),
    )
    .await;
    let hits = search(&api, &key, json!({"query": "pelican new"})).await;
    assert_eq!(hits[0]["document_id"], "gone");
    assert!(
        !serde_json::to_string(&hits)
            .unwrap()
            .contains("secret plan")
    );
}

#[tokio::test]
async fn every_search_is_logged_with_chunk_ids_and_hashes() {
    let api = Api::new().await;
    let (_a, key) = api.tenant_with_key("a").await;
    put(
        &api,
        &key,
        json!({"id": "d1", "text": "otters hold hands while sleeping"}),
    )
    .await;
    let hits = search(&api, &key, json!({"query": "otters sleeping"})).await;
    assert_eq!(hits.len(), 1);
    let entries = api
        .call("GET", "/v1/audit/entries", Some(&key), None)
        .await
        .json();
    // The last entry is this read's own `audit.read`; the search is before it.
    let all = entries["entries"].as_array().unwrap();
    assert_eq!(all.last().unwrap()["event"]["kind"], "audit.read");
    let event = all[all.len() - 2]["event"].clone();
    assert_eq!(event["kind"], "search");
    assert_eq!(event["subjects"][0]["kind"], "chunk");
    assert_eq!(event["subjects"][0]["id"], hits[0]["chunk_id"]);
    let text = hits[0]["text"].as_str().unwrap();
    assert_eq!(
        event["subjects"][0]["hash"],
        bulkhead_ledger::event::content_hash(text.as_bytes())
    );
    assert_eq!(event["attrs"]["count"], 1);
    assert!(
        !event.to_string().contains("otters"),
        "no query or chunk text in the log"
    );
}

#[tokio::test]
async fn bad_searches_are_problems_and_erasure_drops_the_index() {
    let api = Api::new().await;
    let (a, key) = api.tenant_with_key("a").await;
    put(&api, &key, json!({"text": "walrus"})).await;
    for (body, what) in [
        (json!({"query": ""}), "empty query"),
        (json!({"query": "x".repeat(5000)}), "query too long"),
        (json!({"query": "walrus", "top_k": 0}), "top_k 0"),
        (json!({"query": "walrus", "top_k": 51}), "top_k too big"),
        (json!({"query": "walrus", "tenant": a}), "unknown field"),
        (
            json!({"query": "walrus", "mode": "psychic"}),
            "unknown mode",
        ),
        (
            json!({"query": "walrus", "filter": {"k": {"nested": 1}}}),
            "filter value",
        ),
    ] {
        let r = api.call("POST", "/v1/search", Some(&key), Some(body)).await;
        let status = r.status;
        assert!(status == StatusCode::BAD_REQUEST, "{what}: {status}");
        assert_problem(&r, status, what);
    }
    assert_eq!(
        search(&api, &key, json!({"query": "walrus"})).await.len(),
        1
    );
    assert!(api.state.retrieval.cache.stats().entries >= 1);
    let metrics = String::from_utf8(api.call("GET", "/metrics", None, None).await.body).unwrap();
    assert!(
        metrics.contains("bulkhead_index_hot_tenants 1"),
        "{metrics}"
    );
    api.call(
        "DELETE",
        &format!("/admin/v1/tenants/{a}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        api.state.retrieval.cache.stats().entries,
        0,
        "the erased tenant's index is dropped"
    );
}
