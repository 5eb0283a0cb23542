//! Embedders per region: a tenant's documents and queries reach only the HTTP
//! embedder of its own region (two mock embedders record every body they get),
//! and a tenant of a region without one stores documents without vectors, keeps
//! BM25 search (the server's hybrid default becomes BM25 for it), is refused
//! vector and hybrid search, and sends its text to no embedder at all.

use std::sync::Arc;

use axum::http::StatusCode;
use bulkhead_index::{Embedder, HttpEmbedder, HttpEmbedderConfig, IndexConfig, SearchMode};
use bulkhead_mock_upstream::{MockOptions, MockUpstream};
use bulkhead_server::retrieval::{Embedders, Retrieval};
use bulkhead_types::Region;
use serde_json::{Value, json};

use crate::common::{Api, Reply, assert_problem};

/// The mock's vector length when a request names none.
const DIMS: usize = 8;

fn http(mock: &MockUpstream) -> Arc<dyn Embedder> {
    Arc::new(HttpEmbedder::new(HttpEmbedderConfig::new(mock.base_url(), "echo", DIMS)).unwrap())
}

/// Every text a mock embedder was sent.
fn seen(mock: &MockUpstream) -> String {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/v1/embeddings")
        .map(|r| r.body["input"].to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn search(api: &Api, key: &str, query: &str, mode: Option<&str>) -> Reply {
    let mut body = json!({ "query": query });
    if let Some(mode) = mode {
        body["mode"] = Value::String(mode.into());
    }
    api.call("POST", "/v1/search", Some(key), Some(body)).await
}

fn found(reply: &Reply) -> Vec<String> {
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenants_text_reaches_only_its_regions_embedder() {
    let eu = MockUpstream::start(MockOptions::default()).await.unwrap();
    let us = MockUpstream::start(MockOptions::default()).await.unwrap();
    let embedders = Embedders::by_region([
        (Region::parse("eu-west").unwrap(), http(&eu)),
        (Region::parse("us-east").unwrap(), http(&us)),
    ])
    .unwrap();
    let api = Api::with_retrieval(Retrieval {
        index: IndexConfig {
            vector_dims: embedders.dimensions(),
            ..IndexConfig::default()
        },
        embedders,
        default_mode: SearchMode::Hybrid,
        ..Retrieval::with_defaults()
    })
    .await;
    let tenants = [
        ("eu-west", "marmalade"),
        ("us-east", "pumpernickel"),
        ("ap-south", "quesadilla"),
    ];
    let mut keys = Vec::new();
    for (region, word) in tenants {
        let (_, key) = api
            .tenant_from(json!({ "name": region, "region": region }))
            .await;
        let r = api
            .call(
                "POST",
                "/v1/documents",
                Some(&key),
                Some(json!({
                    "id": "doc",
                    "text": format!("The {word} ledger of the {region} office."),
                })),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{region}: {}",
            String::from_utf8_lossy(&r.body)
        );
        keys.push(key);
    }
    // Served regions: every mode works, the default (hybrid) included.
    for key in &keys[..2] {
        for mode in [None, Some("vector"), Some("hybrid"), Some("bm25")] {
            let query = match keys.iter().position(|k| k == key) {
                Some(0) => "marmalade ledger",
                _ => "pumpernickel ledger",
            };
            assert_eq!(found(&search(&api, key, query, mode).await), ["doc"]);
        }
    }
    // Region ap-south has no embedder: its document was stored (BM25 finds
    // it, also under the server's hybrid default), vector search is refused.
    let key_ap = &keys[2];
    assert_eq!(
        found(&search(&api, key_ap, "quesadilla ledger", None).await),
        ["doc"]
    );
    assert_eq!(
        found(&search(&api, key_ap, "quesadilla ledger", Some("bm25")).await),
        ["doc"]
    );
    for mode in ["vector", "hybrid"] {
        let r = search(&api, key_ap, "quesadilla ledger", Some(mode)).await;
        assert_problem(&r, StatusCode::CONFLICT, mode);
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("no embedder serves region ap-south"),
            "{detail}"
        );
    }
    // The search the default turned into BM25 is logged as BM25.
    let modes: Vec<Value> = api
        .events("/v1/audit", key_ap, "search")
        .await
        .iter()
        .map(|e| e["attrs"]["mode"].clone())
        .collect();
    assert_eq!(modes, [json!("bm25"), json!("bm25")]);

    let (eu_saw, us_saw) = (seen(&eu), seen(&us));
    // Each embedder got its own region's document and queries...
    assert!(
        eu_saw.contains("marmalade ledger of the eu-west office"),
        "{eu_saw}"
    );
    assert!(eu_saw.contains("marmalade ledger\""), "{eu_saw}");
    assert!(
        us_saw.contains("pumpernickel ledger of the us-east office"),
        "{us_saw}"
    );
    assert!(us_saw.contains("pumpernickel ledger\""), "{us_saw}");
    // ...and never another region's text, nor that of the region without one.
    for word in ["pumpernickel", "quesadilla"] {
        assert!(!eu_saw.contains(word), "eu-west's embedder saw {word}");
    }
    for word in ["marmalade", "quesadilla"] {
        assert!(!us_saw.contains(word), "us-east's embedder saw {word}");
    }
}
