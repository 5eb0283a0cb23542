//! Every server answer the CLI and the demo read, taken from a real server in
//! this process, decoded as its `bulkhead-api` type and encoded back: the result
//! must equal the answer as sent. A field the server adds, renames or retypes
//! without the type following fails here, not in a user's terminal.

use std::fmt::Debug;

use bulkhead_api::admin_views::{DriftStatus, TenantExport};
use bulkhead_api::chat::ChatCompletionResponse;
use bulkhead_api::incident::{ImpactReport, Incident, IncidentList, IncidentShown};
use bulkhead_api::receipt::ErasureReceipt;
use bulkhead_api::search::SearchResponse;
use bulkhead_api::traces::TraceResponse;
use bulkhead_api::{
    CreateDocumentResponse, IssuedKeyResponse, RotateKeyResponse, TenantListResponse,
    TenantResponse,
};
use bulkhead_client::{Client, ClientConfig, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::ServeArgs;

const ADMIN_TOKEN: &str = "bha_api-types-test-token-0123456789abcdef";

/// One call: a success decoded as `T`, which must encode back to exactly the
/// JSON the server sent.
async fn read<T: DeserializeOwned + Serialize + Debug>(
    client: &Client,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> T {
    let answer = client
        .json::<T, Value>(method.clone(), path, Some(token), body.as_ref(), "")
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    // Through text, as the wire carries it: `to_value` would widen an f32 score
    // to f64 digits the server never wrote.
    let text = serde_json::to_string(&answer.value).expect("a decoded answer encodes");
    let encoded: Value = serde_json::from_str(&text).expect("its encoding is JSON");
    assert_eq!(
        encoded, answer.raw,
        "{method} {path}: the type does not carry the answer field for field"
    );
    answer.value
}

#[tokio::test]
async fn every_answer_read_is_its_api_type_field_for_field() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = ServeArgs {
        data_dir: Some(dir.path().to_owned()),
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        echo_models: Some(true),
        ..ServeArgs::default()
    }
    .resolve()
    .expect("test settings are valid");
    let server = crate::serve::start(settings)
        .await
        .expect("the server starts");
    let client = Client::new(ClientConfig {
        no_proxy: true,
        ..ClientConfig::new(&format!("http://{}", server.addr()))
    })
    .expect("a client");
    calls(&client).await;
    drop(client);
    server.stop_handle().stop();
    server.wait().await.expect("the server stops cleanly");
}

/// The calls in the order a user makes them, each answer checked by [`read`].
async fn calls(client: &Client) {
    let admin = ADMIN_TOKEN;
    let tenant: TenantResponse = read(
        client,
        Method::POST,
        "/admin/v1/tenants",
        admin,
        Some(json!({"name": "Acme"})),
    )
    .await;
    let id = tenant.id;
    let list: TenantListResponse = read(
        client,
        Method::GET,
        "/admin/v1/tenants?limit=100",
        admin,
        None,
    )
    .await;
    assert_eq!(list.tenants.len(), 1);
    let _: RotateKeyResponse = read(
        client,
        Method::POST,
        &format!("/admin/v1/tenants/{id}/rotate-key"),
        admin,
        None,
    )
    .await;
    let key: IssuedKeyResponse = read(
        client,
        Method::POST,
        &format!("/admin/v1/tenants/{id}/keys"),
        admin,
        Some(json!({})),
    )
    .await;
    let key = key.key;
    tenant_plane(client, &key).await;

    let export: TenantExport = read(
        client,
        Method::GET,
        &format!("/admin/v1/tenants/{id}/export"),
        admin,
        None,
    )
    .await;
    assert_eq!((export.documents.len(), export.traces.len()), (1, 1));
    let _: DriftStatus = read(client, Method::GET, "/admin/v1/config/policy", admin, None).await;
    incidents(client, &id).await;
    let receipt: ErasureReceipt = read(
        client,
        Method::DELETE,
        &format!("/admin/v1/tenants/{id}"),
        admin,
        None,
    )
    .await;
    assert!(receipt.operator_log.is_some());
}

/// A document, a search that finds it, a chat call and its trace.
async fn tenant_plane(client: &Client, key: &str) {
    let _: CreateDocumentResponse = read(
        client,
        Method::POST,
        "/v1/documents",
        key,
        Some(json!({"text": "Our launch code is ZEPHYR."})),
    )
    .await;
    let search: SearchResponse = read(
        client,
        Method::POST,
        "/v1/search",
        key,
        Some(json!({"query": "launch code ZEPHYR", "top_k": 5})),
    )
    .await;
    assert!(!search.results.is_empty(), "the search finds the document");
    let chat: ChatCompletionResponse = read(
        client,
        Method::POST,
        "/v1/chat/completions",
        key,
        Some(json!({
            "model": "bulkhead-echo",
            "messages": [{"role": "user", "content": "launch code?"}],
            "bulkhead": {"retrieve": {"top_k": 3}},
        })),
    )
    .await;
    assert_eq!(chat.choices.len(), 1);
    let trace: TraceResponse = read(
        client,
        Method::GET,
        &format!("/v1/traces/{}", chat.bulkhead.trace_id),
        key,
        None,
    )
    .await;
    assert!(
        !trace.trace.context.is_empty(),
        "the trace lists its context"
    );
}

/// An incident opened, listed, shown and closed, and the tenant's impact report.
async fn incidents(client: &Client, tenant: &str) {
    let admin = ADMIN_TOKEN;
    let window = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z");
    let report: ImpactReport = read(
        client,
        Method::GET,
        &format!(
            "/admin/v1/tenants/{tenant}/impact?from={}&to={}",
            window.0, window.1
        ),
        admin,
        None,
    )
    .await;
    assert!(!report.read.is_empty(), "the report lists the reads");
    let opened: Incident = read(
        client,
        Method::POST,
        "/admin/v1/incidents",
        admin,
        Some(json!({"tenant": tenant, "from": window.0, "to": window.1, "title": "look"})),
    )
    .await;
    let list: IncidentList = read(client, Method::GET, "/admin/v1/incidents", admin, None).await;
    assert_eq!(list.incidents.len(), 1);
    let _: IncidentShown = read(
        client,
        Method::GET,
        &format!("/admin/v1/incidents/{}", opened.id),
        admin,
        None,
    )
    .await;
    let closed: Incident = read(
        client,
        Method::POST,
        &format!("/admin/v1/incidents/{}/close", opened.id),
        admin,
        None,
    )
    .await;
    assert_eq!(closed.status, "closed");
}
