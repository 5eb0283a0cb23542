//! The evidence report re-verifies the tenant's log and says so, counts erasures,
//! escapes what it renders, holds no content — and catches a log edited on disk.
//! Configuration drift: a changed policy differs from the approved baseline,
//! raises `config_drift`, and approving is audited.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, assert_problem};

async fn evidence(api: &Api, tenant: &str, query: &str) -> crate::common::Reply {
    api.call(
        "GET",
        &format!("/admin/v1/tenants/{tenant}/evidence{query}"),
        Some(ADMIN),
        None,
    )
    .await
}

#[tokio::test]
async fn the_evidence_report_verifies_the_log_and_notices_an_edit() {
    let api = Api::new().await;
    let (tenant, key) = api
        .tenant_from(json!({"name": "Acme <script>alert(1)</script>", "policy": "soc2"}))
        .await;
    for id in ["a", "b"] {
        let r = api
            .call(
                "POST",
                "/v1/documents",
                Some(&key),
                Some(json!({"id": id, "text": "the secret merger codename is BLUEFIN"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = api
        .call("DELETE", "/v1/documents/a", Some(&key), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let reply = evidence(&api, &tenant, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let report = reply.json();
    let log = &report["audit"]["tenant_log"];
    assert_eq!(log["ok"], true, "{log}");
    assert_eq!(log["signature_ok"], true);
    assert_eq!(log["leaves_checked"], log["size"]);
    assert!(log["size"].as_u64().unwrap() >= 3);
    assert_eq!(report["audit"]["operator_log"]["ok"], true);
    assert_eq!(report["audit"]["retention_days_min"], 365);
    assert_eq!(report["tenant"]["policy"], "soc2");
    assert_eq!(report["encryption"]["current_key_version"], 1);
    assert_eq!(report["erasures"]["documents_deleted"], 1);
    assert_eq!(report["activity"]["events"]["document.create"], 2);
    assert_eq!(report["residency"]["allowed"], true);
    assert_eq!(report["findings"], json!([]), "all in order");
    assert!(!report.to_string().contains("BLUEFIN"), "no content");

    let html = evidence(&api, &tenant, "?format=html").await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.content_type.starts_with("text/html"));
    let page = String::from_utf8(html.body.clone()).unwrap();
    assert!(page.contains("Isolation evidence report"));
    assert!(page.contains("Acme &lt;script&gt;"), "the name is escaped");
    assert!(!page.contains("<script>"), "nothing the tenant named runs");
    assert!(!page.contains("BLUEFIN"));

    // Someone edits an entry's leaf hash on disk: the next report says the log
    // no longer verifies, and lists it as a finding.
    let db = rusqlite::Connection::open(api.dir.path().join("db")).unwrap();
    let changed = db
        .execute(
            "UPDATE audit_entries SET leaf_hash = zeroblob(32)
             WHERE idx = 1 AND log = (SELECT seq FROM audit_logs WHERE log_id = ?1)",
            [&tenant],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let report = evidence(&api, &tenant, "").await.json();
    let log = &report["audit"]["tenant_log"];
    assert_eq!(log["ok"], false, "{log}");
    assert!(log["detail"].as_str().unwrap().contains("altered"), "{log}");
    let findings = report["findings"].to_string();
    assert!(
        findings.contains("tenant audit log did not verify"),
        "{findings}"
    );

    // Each report is itself logged, in both logs.
    assert_eq!(
        api.events("/admin/v1/audit", ADMIN, "compliance.report")
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn evidence_requests_are_checked() {
    let api = Api::new().await;
    let (tenant, key) = api.tenant_with_key("Acme").await;
    for (query, what) in [
        ("?format=pdf", "format"),
        ("?from=last-week", "RFC 3339"),
        ("?tenant=x", "unknown field"),
        (
            "?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "after",
        ),
    ] {
        assert_problem(
            &evidence(&api, &tenant, query).await,
            StatusCode::BAD_REQUEST,
            what,
        );
    }
    let missing = evidence(&api, "tn_000000000000000000000000", "").await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "");
    let as_tenant = api
        .call(
            "GET",
            &format!("/admin/v1/tenants/{tenant}/evidence"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(as_tenant.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_changed_policy_is_drift_until_approved() {
    let mut api = Api::new().await;
    let first: Value = api
        .call("GET", "/admin/v1/config/policy", Some(ADMIN), None)
        .await
        .json();
    assert_eq!(
        first["drift"], false,
        "a fresh store takes the current policy"
    );
    assert_eq!(first["hash"], first["approved_hash"]);
    assert!(first["effective"]["packs"]["gdpr"].is_object());

    // An operator pack appears (a file dropped in the packs folder).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.toml"),
        "name = \"acme-strict\"\ndescription = \"x\"\n[retention]\naudit_retention_days_min = 400\n",
    )
    .unwrap();
    api.state = api
        .state
        .clone()
        .with_packs(bulkhead_server::packs::Packs::with_folder(dir.path()).unwrap());
    let status = bulkhead_server::drift::check(&api.state).await.unwrap();
    assert!(status.drift);
    assert_eq!(status.changed, ["packs.acme-strict"]);
    let alerts = api
        .call("GET", "/admin/v1/alerts", Some(ADMIN), None)
        .await
        .json();
    assert_eq!(alerts["alerts"][0]["kind"], "config_drift");
    assert!(
        alerts["alerts"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("bulkhead config approve")
    );

    let approved = api
        .call("POST", "/admin/v1/config/approve", Some(ADMIN), None)
        .await;
    assert_eq!(approved.status, StatusCode::OK);
    assert_eq!(approved.json()["drift"], false);
    assert_ne!(approved.json()["hash"], first["hash"]);
    let logged = api.events("/admin/v1/audit", ADMIN, "config.approve").await;
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["attrs"]["changed"], "packs.acme-strict");
    assert!(
        !bulkhead_server::drift::check(&api.state)
            .await
            .unwrap()
            .drift
    );
}
