//! Cold open of a tenant's search index end to end, as a request sees it: read the
//! tenant's chunk records from SQLite, open each under the tenant key, build the
//! index — then one search. Issue 4's target is ≤ 20 ms for 1,000 chunks.
//! `bulkhead-index`'s own bench times the build alone; this one adds the store and
//! the decryption, through the same `POST /v1/search` handler a client calls.
//!
//! Run: `cargo bench -p bulkhead-server --bench cold_open` (BENCH_CHUNKS sets the
//! tenant's chunks, default 1,000; BENCH_ROUNDS the cold opens timed, default 50).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bulkhead_crypto::{LocalKek, SecretKey};
use bulkhead_server::retrieval::Retrieval;
use bulkhead_server::{AppState, ServerLimits, app};
use bulkhead_store::{SqliteOptions, SqliteStore};
use bulkhead_types::{PolicyName, Region, SystemClock};
use bulkhead_vault::{NewTenant, Vault, VaultLimits};
use tower::ServiceExt;

const WORDS: &[&str] = &[
    "ledger",
    "harbour",
    "invoice",
    "renewal",
    "quarterly",
    "region",
    "falcon",
    "contract",
    "schedule",
    "pricing",
    "support",
    "incident",
    "backup",
    "policy",
    "customer",
    "review",
    "latency",
    "storage",
    "account",
    "report",
    "vendor",
    "audit",
    "budget",
    "roadmap",
];

/// About 800 characters of deterministic text per chunk, ten chunks a document.
fn document(seed: usize) -> String {
    let mut out = String::new();
    let mut x = seed as u64 * 2_654_435_761 + 1;
    for paragraph in 0..10 {
        for _ in 0..110 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
            out.push(' ');
        }
        out.push_str(&format!("paragraph{paragraph}.\n\n"));
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let chunks: usize = std::env::var("BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).expect("store"));
        let kek = Arc::new(LocalKek::new(&SecretKey::generate().expect("key"), "bench").expect("kek"));
        let vault = Arc::new(
            Vault::open(store, kek, Arc::new(SystemClock), VaultLimits::default()).await.expect("vault"),
        );
        let signer = bulkhead_ledger::note::NoteSigner::generate("bulkhead.bench").expect("signer");
        let audit = bulkhead_audit::Audit::start(Arc::clone(&vault), signer, bulkhead_audit::AuditOptions::default())
            .expect("audit");
        let guard = Arc::new(bulkhead_server::guard::GuardState::new(&vault));
        let state = AppState::new(vault, audit, Arc::new(Retrieval::with_defaults()), guard, "bench-admin-token-0123456789", ServerLimits::default());
        let tenant = state
            .vault
            .create_tenant(NewTenant { name: "bench".into(), region: Region::default(), policy: PolicyName::default(), models: None })
            .await
            .expect("tenant");
        let key = state.vault.issue_api_key(&tenant.id, None).await.expect("key").token.to_string();
        let router = app(state.clone());
        let call = |path: &str, body: String| {
            Request::builder()
                .method("POST")
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .expect("request")
        };
        let mut stored = 0;
        let mut doc = 0;
        while stored < chunks {
            let body = serde_json::json!({ "text": document(doc) }).to_string();
            let response = router.clone().oneshot(call("/v1/documents", body)).await.expect("ingest");
            assert_eq!(response.status(), StatusCode::CREATED);
            let bytes = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
            let created: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            stored += created["chunks"].as_u64().expect("chunks") as usize;
            doc += 1;
        }
        let search = serde_json::json!({ "query": "quarterly renewal invoice", "top_k": 10 }).to_string();
        let mut cold = Vec::with_capacity(rounds);
        let mut warm = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            state.retrieval.forget(&tenant.id);
            let start = Instant::now();
            let response = router.clone().oneshot(call("/v1/search", search.clone())).await.expect("search");
            assert_eq!(response.status(), StatusCode::OK);
            cold.push(start.elapsed().as_secs_f64() * 1000.0);
            let start = Instant::now();
            let response = router.clone().oneshot(call("/v1/search", search.clone())).await.expect("search");
            assert_eq!(response.status(), StatusCode::OK);
            warm.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        cold.sort_by(f64::total_cmp);
        warm.sort_by(f64::total_cmp);
        println!("cargo bench -p bulkhead-server --bench cold_open   ({stored} chunks in {doc} documents, {rounds} rounds)");
        println!("{:<44} {:>9} {:>9}", "", "p50 ms", "p99 ms");
        println!("{:<44} {:>9.2} {:>9.2}", "cold: read + open chunks, build, search, log", percentile(&cold, 0.5), percentile(&cold, 0.99));
        println!("{:<44} {:>9.2} {:>9.2}", "warm: search, open hits, log", percentile(&warm, 0.5), percentile(&warm, 0.99));
    });
}
