//! Compliance packs over HTTP: a tenant's pack decides what the guard does with
//! its answers, the retention of what it stores and where it may live; changing
//! it is an audited admin action; a bad pack name or region is a problem that
//! changes nothing.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{ADMIN, Api, assert_problem};

async fn verdict(api: &Api, key: &str, text: &str) -> String {
    api.call(
        "POST",
        "/v1/guard/scan",
        Some(key),
        Some(json!({ "text": text })),
    )
    .await
    .json()["verdict"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn packs_set_guard_actions_retention_and_residency_per_tenant() {
    let api = Api::new().await;
    let list = api
        .call("GET", "/admin/v1/policies", Some(ADMIN), None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<String> = list.json()["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["default", "gdpr", "hipaa", "pci-dss", "soc2"]);

    // Unknown packs and regions a pack forbids are refused, and nothing is created.
    let before = api.counts().await.0;
    for (body, needle) in [
        (json!({"name": "X", "policy": "sox"}), "not a pack"),
        (json!({"name": "X", "policy": "gdpr"}), "requires a region"),
        (
            json!({"name": "X", "policy": "gdpr", "region": "us-east"}),
            "requires a region",
        ),
    ] {
        let r = api
            .call("POST", "/admin/v1/tenants", Some(ADMIN), Some(body))
            .await;
        assert_problem(&r, StatusCode::BAD_REQUEST, needle);
        assert!(r.json()["detail"].as_str().unwrap().contains(needle));
    }
    assert_eq!(api.counts().await.0, before);

    // The same answer, three packs, three decisions.
    let (_d, key_default) = api.tenant_from(json!({"name": "Plain"})).await;
    let (_p, key_pci) = api
        .tenant_from(json!({"name": "Shop", "policy": "pci-dss"}))
        .await;
    let (eu, key_gdpr) = api
        .tenant_from(json!({"name": "Euro", "policy": "gdpr", "region": "eu-west"}))
        .await;
    let card = "Your card 4111 1111 1111 1111 was charged.";
    assert_eq!(verdict(&api, &key_default, card).await, "redacted");
    assert_eq!(verdict(&api, &key_pci, card).await, "blocked");
    let email = "Write to jo.doe@example.com for details.";
    assert_eq!(verdict(&api, &key_default, email).await, "allow");
    assert_eq!(verdict(&api, &key_gdpr, email).await, "redacted");

    // GDPR retention: a document without a TTL gets the pack's default; one
    // beyond the pack's maximum is refused; sessions are capped.
    let doc = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_gdpr),
            Some(json!({"text": "minutes"})),
        )
        .await;
    assert_eq!(doc.status, StatusCode::CREATED);
    assert!(
        doc.json()["expires_at"].is_string(),
        "the pack's default TTL"
    );
    let plain_doc = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_default),
            Some(json!({"text": "minutes"})),
        )
        .await;
    assert!(plain_doc.json()["expires_at"].is_null());
    let too_long = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_gdpr),
            Some(json!({"text": "x", "ttl_seconds": 3 * 365 * 24 * 3600})),
        )
        .await;
    assert_problem(&too_long, StatusCode::BAD_REQUEST, "document ttl");
    let session = api
        .call(
            "POST",
            "/v1/sessions",
            Some(&key_gdpr),
            Some(json!({"ttl_seconds": 90 * 24 * 3600})),
        )
        .await;
    assert_problem(&session, StatusCode::BAD_REQUEST, "session ttl");

    // Changing the pack is an admin action, audited in both logs.
    let r = api
        .call(
            "PUT",
            &format!("/admin/v1/tenants/{eu}/policy"),
            Some(ADMIN),
            Some(json!({"policy": "pci-dss"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["policy"], "pci-dss");
    assert_eq!(verdict(&api, &key_gdpr, card).await, "blocked");
    let bad = api
        .call(
            "PUT",
            &format!("/admin/v1/tenants/{eu}/policy"),
            Some(ADMIN),
            Some(json!({"policy": "nope"})),
        )
        .await;
    assert_problem(&bad, StatusCode::BAD_REQUEST, "unknown pack");
    let changes = api.events("/admin/v1/audit", ADMIN, "tenant.policy").await;
    assert_eq!(changes.len(), 1, "one change, logged once");
    let mine = api.events("/v1/audit", &key_gdpr, "tenant.policy").await;
    assert_eq!(mine.len(), 1, "the tenant's own log has it too");
}
