//! Impact assessment: the report for a tenant and window lists what was read,
//! returned and blocked — from its own log and the operator log — each item with
//! an inclusion proof that verifies against the report's signed checkpoint, and
//! nothing outside the window. A blocked leak opens an incident by itself.

use axum::http::StatusCode;
use bulkhead_gateway::UpstreamConfig;
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_types::TenantId;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, assert_problem};

fn quick() -> bulkhead_gateway::Timeouts {
    bulkhead_gateway::Timeouts {
        connect: std::time::Duration::from_secs(2),
        first_byte: std::time::Duration::from_secs(5),
        idle: std::time::Duration::from_secs(5),
        total: std::time::Duration::from_secs(10),
    }
}

/// RFC 3339 with exactly three fraction digits, so times compare as strings
/// (`…15.1Z` is written without trailing zeros and would sort after `…15.104Z`).
fn fixed_millis(t: &str) -> String {
    let body = t.trim_end_matches('Z');
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{secs}.{:0<3}Z", &frac[..frac.len().min(3)])
}

fn now(api: &Api) -> bulkhead_types::UnixMillis {
    api.state.vault.now()
}

async fn impact(api: &Api, tenant: &str, from: &str, to: &str) -> Value {
    let reply = api
        .call(
            "GET",
            &format!(
                "/admin/v1/tenants/{tenant}/impact?from={}&to={}",
                from.replace('+', "%2B"),
                to.replace('+', "%2B")
            ),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// Every item's proof verifies against its section's signed checkpoint.
fn verify_all(api: &Api, report: &Value) -> usize {
    let verifier = NoteVerifier::from_vkey(&api.state.audit.vkey()).unwrap();
    let mut n = 0;
    for (section, log) in [("tenant_log", "tenant"), ("operator_log", "operator")] {
        let body = verifier
            .open(report[section]["checkpoint"].as_str().unwrap())
            .expect("the checkpoint is signed by the server");
        let cp = Checkpoint::parse_body(body).unwrap();
        for list in ["read", "returned", "blocked", "other"] {
            for item in report[list].as_array().unwrap() {
                if item["log"] != log {
                    continue;
                }
                let leaf =
                    bulkhead_ledger::hash_from_b64(item["leaf_hash"].as_str().unwrap()).unwrap();
                let proof: Vec<_> = item["proof"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| bulkhead_ledger::hash_from_b64(h.as_str().unwrap()).unwrap())
                    .collect();
                bulkhead_ledger::proof::verify_inclusion(
                    item["index"].as_u64().unwrap(),
                    cp.size,
                    &leaf,
                    &proof,
                    &cp.root,
                )
                .expect("inclusion proof verifies");
                n += 1;
            }
        }
    }
    n
}

fn kinds(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_impact_report_lists_reads_answers_and_blocks_with_proofs() {
    let api = Api::new()
        .await
        .with_upstreams(vec![UpstreamConfig::echo()], quick());
    let (acme, acme_key) = api.tenant_with_key("Acme").await;
    let (globex, globex_key) = api.tenant_with_key("Globex").await;

    // Before the window: a document write and read by Globex.
    let doc = api
        .call(
            "POST",
            "/v1/documents",
            Some(&globex_key),
            Some(json!({"id": "early", "text": "an early note about shipping"})),
        )
        .await;
    assert_eq!(doc.status, StatusCode::CREATED);
    api.call("GET", "/v1/documents/early", Some(&globex_key), None)
        .await;
    api.clock.advance_secs(3600);
    let from = now(&api).rfc3339();

    // In the window: a read, a search, a model answer, a refused id, and a leak of
    // Acme's canary to Globex that the guard blocks.
    api.call("GET", "/v1/documents/early", Some(&globex_key), None)
        .await;
    api.call(
        "POST",
        "/v1/search",
        Some(&globex_key),
        Some(json!({"query": "shipping"})),
    )
    .await;
    let answer = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&globex_key),
            Some(json!({"model": "bulkhead-echo", "messages": [{"role": "user", "content": "hello"}]})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let trace_id = answer.json()["bulkhead"]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing = api
        .call("GET", "/v1/documents/not-there", Some(&globex_key), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let canary = api
        .state
        .guard
        .guard
        .canaries(&TenantId::parse(&acme).unwrap())
        .remove(0);
    let scan = api
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&globex_key),
            Some(json!({"text": format!("psst {canary}")})),
        )
        .await;
    assert_eq!(scan.json()["verdict"], "blocked");
    let to = now(&api).rfc3339();

    api.clock.advance_secs(3600);
    // After the window: another read that must not show.
    api.call("GET", "/v1/documents/early", Some(&globex_key), None)
        .await;
    let _ = acme_key;

    let report = impact(&api, &globex, &from, &to).await;
    let s = &report["summary"];
    assert_eq!(s["reads"], 2, "one read and one search: {s}");
    assert_eq!(kinds(&report, "read"), ["document.read", "search"]);
    assert_eq!(s["model_calls_returned"], 1);
    assert_eq!(report["returned"][0]["kind"], "model.call");
    assert!(
        report["returned"][0]["subjects"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("trace:{trace_id}@sha256:")),
        "the model call names its trace and hash: {}",
        report["returned"][0]
    );
    assert_eq!(s["traces"], json!([trace_id]));
    assert_eq!(s["leaks_blocked_to_tenant"], 1);
    assert_eq!(s["leaks_blocked_of_tenant"], 0);
    let blocked = kinds(&report, "blocked");
    assert!(
        blocked.contains(&"document.read".to_owned()),
        "the refused id is listed: {blocked:?}"
    );
    assert!(blocked.contains(&"guard.leak".to_owned()), "{blocked:?}");
    assert!(blocked.contains(&"guard.scan".to_owned()), "{blocked:?}");
    assert!(
        report["read"].as_array().unwrap().iter().all(|i| {
            let t = fixed_millis(i["time"].as_str().unwrap());
            t >= fixed_millis(&from) && t <= fixed_millis(&to)
        }),
        "nothing outside the window"
    );
    let proofs = verify_all(&api, &report);
    assert!(proofs >= 7, "every item carries a proof ({proofs})");
    let text = report.to_string();
    assert!(!text.contains(&canary), "the report never holds content");
    assert!(!text.contains("shipping"), "the report never holds content");

    // Acme's report for the same window sees its data leak attempt, from the
    // operator log, and nothing of Globex's own activity.
    let acme_report = impact(&api, &acme, &from, &to).await;
    assert_eq!(acme_report["summary"]["leaks_blocked_of_tenant"], 1);
    assert_eq!(acme_report["summary"]["reads"], 0);
    assert_eq!(acme_report["returned"], json!([]));
    verify_all(&api, &acme_report);

    // The leak opened an incident for Globex naming Acme; its report is the same.
    let incidents = api
        .call("GET", "/admin/v1/incidents", Some(ADMIN), None)
        .await
        .json();
    let incident = &incidents["incidents"][0];
    assert_eq!(incident["tenant"], globex.as_str());
    assert_eq!(incident["related_tenants"], json!([acme]));
    assert_eq!(incident["status"], "open");
    let id = incident["id"].as_str().unwrap();
    let shown = api
        .call(
            "GET",
            &format!("/admin/v1/incidents/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(
        shown.json()["report"]["summary"]["leaks_blocked_to_tenant"],
        1
    );
    let closed = api
        .call(
            "POST",
            &format!("/admin/v1/incidents/{id}/close"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(closed.json()["status"], "closed");
    let opened = api.events("/admin/v1/audit", ADMIN, "incident.open").await;
    assert_eq!(opened.len(), 1, "opening is in the operator log");
    assert_eq!(
        api.events("/admin/v1/audit", ADMIN, "incident.report")
            .await
            .len(),
        2,
        "each report is logged"
    );
}

#[tokio::test]
async fn impact_requests_are_checked() {
    let api = Api::new().await;
    let (tenant, _) = api.tenant_with_key("Acme").await;
    let t = now(&api).rfc3339();
    for (path, status, what) in [
        (
            format!("/admin/v1/tenants/{tenant}/impact?from=yesterday&to={t}"),
            StatusCode::BAD_REQUEST,
            "RFC 3339",
        ),
        (
            format!("/admin/v1/tenants/{tenant}/impact?from={t}"),
            StatusCode::BAD_REQUEST,
            "to",
        ),
        (
            format!("/admin/v1/tenants/{tenant}/impact?from={t}&to={t}&tenant=x"),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            format!("/admin/v1/tenants/tn_000000000000000000000000/impact?from={t}&to={t}"),
            StatusCode::NOT_FOUND,
            "",
        ),
    ] {
        let reply = api.call("GET", &path, Some(ADMIN), None).await;
        assert_problem(&reply, status, what);
    }
    let (_, tenant_key) = api.tenant_with_key("Globex").await;
    let reply = api
        .call(
            "GET",
            &format!("/admin/v1/tenants/{tenant}/impact?from={t}&to={t}"),
            Some(&tenant_key),
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "a tenant key cannot"
    );
    let bad = api
        .call(
            "POST",
            "/admin/v1/incidents",
            Some(ADMIN),
            Some(json!({"tenant": tenant, "from": t, "window": 1})),
        )
        .await;
    assert_problem(&bad, StatusCode::BAD_REQUEST, "window");
    assert_eq!(
        api.call("GET", "/admin/v1/incidents", Some(ADMIN), None)
            .await
            .json()["incidents"],
        json!([]),
        "a refused request opens nothing"
    );
}
