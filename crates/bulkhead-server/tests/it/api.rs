//! The HTTP contract, driven through `app(state)` with `oneshot` (no sockets).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::common::{ADMIN, Api, assert_problem};

#[tokio::test]
async fn bad_input_gets_problem_json_and_writes_nothing() {
    let api = Api::new().await;
    let (tenant, key) = api.tenant_with_key("a").await;
    let before = api.counts().await;

    let doc = |body: Body, content_type: &str, token: &str| {
        Request::builder()
            .method("POST")
            .uri("/v1/documents")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap()
    };
    let forged = format!("{}.{}", key.split_once('.').unwrap().0, "B".repeat(43));
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "malformed JSON",
            doc(Body::from("{\"text\": "), "application/json", &key),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not an object",
            doc(Body::from("[1,2]"), "application/json", &key),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            doc(
                Body::from(r#"{"text":"x","ttl_secs":5}"#),
                "application/json",
                &key,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing field",
            doc(Body::from(r#"{"metadata":{}}"#), "application/json", &key),
            StatusCode::BAD_REQUEST,
        ),
        (
            "invalid UTF-8",
            doc(
                Body::from(b"{\"text\":\"\xff\xfe\"}".to_vec()),
                "application/json",
                &key,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong content type",
            doc(Body::from(r#"{"text":"x"}"#), "text/plain", &key),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversize body",
            doc(
                Body::from(format!(r#"{{"text":"{}"}}"#, "x".repeat(20_000))),
                "application/json",
                &key,
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "text over its limit",
            doc(
                Body::from(format!(r#"{{"text":"{}"}}"#, "x".repeat(5_000))),
                "application/json",
                &key,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad document id",
            doc(
                Body::from(r#"{"id":"a/b","text":"x"}"#),
                "application/json",
                &key,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "zero ttl",
            doc(
                Body::from(r#"{"text":"x","ttl_seconds":0}"#),
                "application/json",
                &key,
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown key",
            doc(
                Body::from(r#"{"text":"x"}"#),
                "application/json",
                "bhk_0000000000000000.AAAA",
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "forged key",
            doc(Body::from(r#"{"text":"x"}"#), "application/json", &forged),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "admin token on the tenant plane",
            doc(Body::from(r#"{"text":"x"}"#), "application/json", ADMIN),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no credential",
            Request::builder()
                .method("POST")
                .uri("/v1/documents")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"text":"x"}"#))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "tenant key on the admin plane",
            Request::builder()
                .method("POST")
                .uri("/admin/v1/tenants")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"x"}"#))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown field on the admin plane",
            Request::builder()
                .method("POST")
                .uri("/admin/v1/tenants")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"x","tenant_id":"tn_1"}"#))
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad region",
            Request::builder()
                .method("POST")
                .uri("/admin/v1/tenants")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"x","region":"EU WEST"}"#))
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty tenant name",
            Request::builder()
                .method("POST")
                .uri("/admin/v1/tenants")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"name":"  "}"#))
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad page size",
            Request::builder()
                .uri("/v1/documents?limit=0")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown query parameter",
            Request::builder()
                .uri("/v1/documents?tenant=tn_x")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "forged cursor",
            Request::builder()
                .uri("/v1/documents?cursor=zzz")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong method",
            Request::builder()
                .method("PUT")
                .uri("/v1/documents")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "unknown route",
            Request::builder()
                .uri("/v2/nothing")
                .body(Body::empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (what, request, status) in cases {
        let reply = api.raw(request).await;
        assert_problem(&reply, status, what);
        assert_eq!(api.counts().await, before, "{what} changed the store");
    }
    // Unauthorized answers say how to authenticate.
    let r = api
        .raw(
            Request::builder()
                .uri("/v1/documents")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Nothing above created a document, and the tenant is intact.
    let t = api
        .call(
            "GET",
            &format!("/admin/v1/tenants/{tenant}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(t.json()["status"], "active");
}

#[tokio::test]
async fn a_foreign_document_id_is_byte_identical_to_a_missing_one() {
    let api = Api::new().await;
    let (_, key_a) = api.tenant_with_key("a").await;
    let (_, key_b) = api.tenant_with_key("b").await;
    let created = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_a),
            Some(json!({ "id": "contract-7", "text": "A's contract" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);

    let foreign = api
        .call("GET", "/v1/documents/contract-7", Some(&key_b), None)
        .await;
    let missing = api
        .call("GET", "/v1/documents/contract-8", Some(&key_b), None)
        .await;
    assert_problem(&foreign, StatusCode::NOT_FOUND, "foreign id");
    assert_eq!(foreign.body, missing.body);
    assert_eq!(foreign.content_type, missing.content_type);
    let foreign_delete = api
        .call("DELETE", "/v1/documents/contract-7", Some(&key_b), None)
        .await;
    let missing_delete = api
        .call("DELETE", "/v1/documents/contract-8", Some(&key_b), None)
        .await;
    assert_eq!(
        (foreign_delete.status, &foreign_delete.body),
        (missing_delete.status, &missing_delete.body)
    );
    // B may use the same id for its own document without learning that A has one.
    let b_own = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_b),
            Some(json!({ "id": "contract-7", "text": "B's" })),
        )
        .await;
    assert_eq!(b_own.status, StatusCode::CREATED);
    let a_view = api
        .call("GET", "/v1/documents/contract-7", Some(&key_a), None)
        .await;
    assert_eq!(a_view.json()["text"], "A's contract");
    // B's list holds only B's.
    let list = api.call("GET", "/v1/documents", Some(&key_b), None).await;
    assert_eq!(list.json()["documents"].as_array().unwrap().len(), 1);
    // A foreign tenant id on the admin plane looks like a missing one too.
    let bogus = api
        .call(
            "GET",
            "/admin/v1/tenants/tn_000000000000000000000000",
            Some(ADMIN),
            None,
        )
        .await;
    let malformed = api
        .call("GET", "/admin/v1/tenants/whatever", Some(ADMIN), None)
        .await;
    assert_eq!(bogus.body, malformed.body);
}

#[tokio::test]
async fn revocation_and_quarantine_take_effect_on_the_next_request() {
    let api = Api::new().await;
    let (tenant, key) = api.tenant_with_key("a").await;
    let ok = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key),
            Some(json!({ "id": "d", "text": "kept" })),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);

    let q = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{tenant}/quarantine"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(q.json()["status"], "quarantined");
    let denied = api.call("GET", "/v1/documents/d", Some(&key), None).await;
    assert_problem(&denied, StatusCode::FORBIDDEN, "quarantined");
    assert_eq!(denied.json()["type"], "/problems/tenant-quarantined");
    api.call(
        "DELETE",
        &format!("/admin/v1/tenants/{tenant}/quarantine"),
        Some(ADMIN),
        None,
    )
    .await;
    let back = api.call("GET", "/v1/documents/d", Some(&key), None).await;
    assert_eq!(
        back.json()["text"],
        "kept",
        "quarantine must leave data untouched"
    );

    let key_id = key.split_once('.').unwrap().0;
    let revoke = api
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/{tenant}/keys/{key_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let after = api.call("GET", "/v1/documents/d", Some(&key), None).await;
    assert_problem(&after, StatusCode::UNAUTHORIZED, "revoked");
    // Revoking someone else's key id under this tenant is a 404.
    let (_, other_key) = api.tenant_with_key("b").await;
    let other_id = other_key.split_once('.').unwrap().0;
    let cross = api
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/{tenant}/keys/{other_id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_problem(&cross, StatusCode::NOT_FOUND, "foreign key id");
    let still = api
        .call("GET", "/v1/documents", Some(&other_key), None)
        .await;
    assert_eq!(still.status, StatusCode::OK);
}

#[tokio::test]
async fn rotation_erasure_paging_and_ops_endpoints() {
    let api = Api::new().await;
    let (tenant, key) = api.tenant_with_key("a").await;
    for i in 0..5 {
        let r = api
            .call(
                "POST",
                "/v1/documents",
                Some(&key),
                Some(json!({ "text": format!("doc {i}"), "metadata": { "n": i } })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/documents?limit=2&cursor={c}"),
            None => "/v1/documents?limit=2".into(),
        };
        let page = api.call("GET", &path, Some(&key), None).await.json();
        for d in page["documents"].as_array().unwrap() {
            seen.push(d["metadata"]["n"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);

    let rotated = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{tenant}/rotate-key"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(rotated.json()["key_version"], 2);
    let list = api
        .call("GET", "/v1/documents?limit=100", Some(&key), None)
        .await;
    assert_eq!(list.json()["documents"].as_array().unwrap().len(), 5);

    let metrics = api.call("GET", "/metrics", None, None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("bulkhead_documents 5"), "{text}");
    assert!(text.contains("route=\"/v1/documents\""));
    assert!(!text.contains(&tenant), "metrics must not carry tenant ids");
    assert_eq!(
        api.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/readyz", None, None).await.status,
        StatusCode::OK
    );
    let doc = api.call("GET", "/problems/not-found", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);

    let erased = api
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/{tenant}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(erased.status, StatusCode::OK);
    let receipt = erased.json();
    // Five documents, their five chunks and the tenant's canary.
    assert_eq!(receipt["records_deleted"], 11);
    assert!(receipt["data_keys_destroyed"].as_u64().unwrap() >= 1);
    let gone = api.call("GET", "/v1/documents", Some(&key), None).await;
    assert_problem(&gone, StatusCode::UNAUTHORIZED, "erased tenant's key");
    let again = api
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/{tenant}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_problem(&again, StatusCode::NOT_FOUND, "erase twice");
}

/// One key can be contained without stopping the tenant: the quarantined key gets
/// 403 (and the attempt is in the tenant's log), its sibling keeps working, and a
/// release restores it. Unknown or foreign keys are the same 404.
#[tokio::test]
async fn one_key_is_quarantined_and_released_while_its_siblings_work() {
    let api = Api::new().await;
    let (tenant, key_a) = api.tenant_with_key("Acme").await;
    let key_b = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{tenant}/keys"),
            Some(ADMIN),
            None,
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (other, _) = api.tenant_with_key("Globex").await;
    let key_a_id = key_a.split('.').next().unwrap().to_owned();
    let list = |key: String| {
        let api = &api;
        async move { api.call("GET", "/v1/documents", Some(&key), None).await }
    };
    let path = format!("/admin/v1/tenants/{tenant}/keys/{key_a_id}/quarantine");
    let q = api.call("POST", &path, Some(ADMIN), None).await;
    assert_eq!(q.status, StatusCode::NO_CONTENT);
    let refused = list(key_a.clone()).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "quarantined key");
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("quarantined")
    );
    assert_eq!(
        list(key_b.clone()).await.status,
        StatusCode::OK,
        "its sibling works"
    );
    // A key named under another tenant, or one that does not exist: one 404.
    let foreign = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{other}/keys/{key_a_id}/quarantine"),
            Some(ADMIN),
            None,
        )
        .await;
    let missing = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{tenant}/keys/bhk_0000000000000000/quarantine"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_problem(&foreign, StatusCode::NOT_FOUND, "foreign key");
    assert_eq!(foreign.body, missing.body);
    let r = api.call("DELETE", &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(list(key_a).await.status, StatusCode::OK, "released");
    let log = api
        .call(
            "GET",
            "/v1/audit/entries?start=0&end=1000",
            Some(&key_b),
            None,
        )
        .await
        .json()
        .to_string();
    for kind in ["key.quarantine", "key.release", "key_quarantined"] {
        assert!(log.contains(kind), "{kind} in the tenant's log");
    }
}

/// A data subject's export: everything the tenant stored, opened, and the export
/// itself in both audit logs. An unknown tenant is a 404.
#[tokio::test]
async fn a_tenant_export_holds_its_data_and_is_logged() {
    let api = Api::new().await;
    let (tenant, key) = api.tenant_with_key("Acme").await;
    let (_other, other_key) = api.tenant_with_key("Globex").await;
    for (k, text) in [
        (&key, "Acme's own words"),
        (&other_key, "Globex's own words"),
    ] {
        let r = api
            .call(
                "POST",
                "/v1/documents",
                Some(k),
                Some(json!({ "text": text })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let session = api
        .call("POST", "/v1/sessions", Some(&key), None)
        .await
        .json();
    let export = api
        .call(
            "GET",
            &format!("/admin/v1/tenants/{tenant}/export"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(export.status, StatusCode::OK);
    let body = export.json();
    assert_eq!(body["tenant"]["id"], tenant.as_str());
    assert_eq!(body["documents"][0]["text"], "Acme's own words");
    assert_eq!(
        body["documents"].as_array().unwrap().len(),
        1,
        "its own only"
    );
    assert_eq!(body["sessions"][0]["id"], session["id"]);
    assert!(!export.body.windows(6).any(|w| w == b"Globex"));
    let missing = api
        .call(
            "GET",
            "/admin/v1/tenants/tn_000000000000000000000000/export",
            Some(ADMIN),
            None,
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "unknown tenant");
    let refused = api
        .call(
            "GET",
            &format!("/admin/v1/tenants/{tenant}/export"),
            Some(&key),
            None,
        )
        .await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "a tenant key");
    // The export, and the refused one for the unknown tenant, are both logged.
    let outcomes: Vec<String> = api
        .events("/admin/v1/audit", ADMIN, "tenant.export")
        .await
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(outcomes, ["allowed", "denied"]);
    assert_eq!(
        api.events("/v1/audit", &key, "tenant.export").await.len(),
        1
    );
}

/// A request from `ip` with this bearer token (the peer address as the serving
/// loop hands it to the router).
fn from_address(ip: [u8; 4], path: &str, token: &str) -> axum::http::Request<axum::body::Body> {
    let mut req = axum::http::Request::builder()
        .uri(path)
        .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 40_000,
        ))));
    req
}

/// An unauthenticated flood from one address is limited before any store write:
/// past `auth_failures_per_address_per_min` refused credentials in a minute the
/// address gets 429 problem+json with `Retry-After`, one `address_flood` event
/// marks the start, and nothing more is written to the operator log. Another
/// address is still answered 401 and logged; a valid key from the flooding
/// address still works.
#[tokio::test]
async fn a_credential_flood_from_one_address_is_limited_before_any_write() {
    let api = Api::new().await;
    let (_tenant, key) = api.tenant_with_key("Acme").await;
    let limit = bulkhead_server::ServerLimits::default().auth_failures_per_address_per_min;
    let operator_size = || async {
        api.call(
            "GET",
            "/admin/v1/audit/entries?start=0&end=100000",
            Some(ADMIN),
            None,
        )
        .await
        .json()["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    let refusals = || async { api.events("/admin/v1/audit", ADMIN, "auth").await.len() };
    let attacker = [198, 51, 100, 7];
    for i in 0..limit {
        let r = api
            .raw(from_address(attacker, "/v1/documents", "bhk_nope.guess"))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "refusal {i}");
    }
    assert_eq!(
        refusals().await,
        limit as usize,
        "each refusal under the limit is logged"
    );
    let tripped = api
        .raw(from_address(attacker, "/v1/documents", "bhk_nope.guess"))
        .await;
    assert_eq!(tripped.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(tripped.content_type, "application/problem+json");
    assert_eq!(tripped.json()["type"], "/problems/rate-limited");
    let retry: u64 = tripped.headers[axum::http::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        refusals().await,
        limit as usize + 1,
        "the flood's start is logged once"
    );
    let after_trip = operator_size().await;
    let flood = api.events("/admin/v1/audit", ADMIN, "auth").await;
    assert_eq!(flood.last().unwrap()["reason"], "address_flood");
    for _ in 0..50 {
        let r = api
            .raw(from_address(attacker, "/v1/documents", "bhk_nope.guess"))
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        let r = api
            .raw(from_address(
                attacker,
                "/admin/v1/tenants",
                "not-the-admin-token",
            ))
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(
        operator_size().await,
        after_trip,
        "nothing written past the limit"
    );
    // Another address: answered and logged as usual.
    let r = api
        .raw(from_address(
            [203, 0, 113, 9],
            "/v1/documents",
            "bhk_nope.guess",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(operator_size().await, after_trip + 1);
    // A valid key from the flooding address still works.
    let r = api.raw(from_address(attacker, "/v1/documents", &key)).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Many addresses, each under its own limit, cannot make the server write without
/// bound: past the server's budget of logged refusals a minute they are answered
/// 401 as usual and counted, and one entry the next minute says how many went
/// unlogged. Every refusal still counts in the metrics.
#[tokio::test]
async fn refusals_from_many_addresses_are_logged_within_a_budget() {
    let mut api = crate::common::Api::with_clock(bulkhead_test_support::TestClock::fixed(
        bulkhead_types::UnixMillis(1_800_000_000_000),
    ))
    .await;
    api.state.auth_flood =
        std::sync::Arc::new(bulkhead_server::flood::AuthFlood::with_budget(60, 10));
    let refusals = || async { api.events("/admin/v1/audit", ADMIN, "auth").await };
    for i in 0..40u8 {
        let r = api
            .raw(from_address(
                [198, 51, 100, i],
                "/v1/documents",
                "bhk_nope.guess",
            ))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "address {i}");
    }
    assert_eq!(refusals().await.len(), 10, "only the budget is logged");
    api.clock.advance_secs(60);
    let r = api
        .raw(from_address(
            [203, 0, 113, 1],
            "/v1/documents",
            "bhk_nope.guess",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let logged = refusals().await;
    assert_eq!(logged.len(), 12, "the summary, then the refusal itself");
    let summary = &logged[10];
    assert_eq!(summary["reason"], "refusals_not_logged");
    assert_eq!(summary["attrs"]["count"], 30, "{summary}");
    let metrics = api.call("GET", "/metrics", None, None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("bulkhead_auth_failures_total{plane=\"tenant\"} 41"),
        "every refusal is counted: {text}"
    );
}

/// With `metrics_token` set, /metrics answers only that bearer token.
#[tokio::test]
async fn metrics_can_require_a_token() {
    let mut api = crate::common::Api::new().await;
    api.state.limits.metrics_token = Some("scrape-token-0123456789".into());
    let none = api.call("GET", "/metrics", None, None).await;
    assert_problem(&none, StatusCode::UNAUTHORIZED, "no token");
    let wrong = api.call("GET", "/metrics", Some(ADMIN), None).await;
    assert_problem(&wrong, StatusCode::UNAUTHORIZED, "another token");
    let ok = api
        .call("GET", "/metrics", Some("scrape-token-0123456789"), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(
        String::from_utf8(ok.body)
            .unwrap()
            .contains("bulkhead_tenants")
    );
}
