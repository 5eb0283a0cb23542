//! Retention with an injected clock (no test sleeps for a TTL): an expired item is
//! invisible at once; the sweeper then deletes its rows in bounded batches, drops
//! its guard fingerprints and hot-index entries, and logs what expired in the
//! tenant's log and a summary in the operator log. Live records are never touched.

use axum::http::StatusCode;
use bulkhead_gateway::{ECHO_MODEL, Timeouts, UpstreamConfig};
use bulkhead_server::retention::sweep_once;
use bulkhead_types::{RecordKind, TenantId, UnixMillis};
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, assert_problem};

/// Every row of the kind the tenant has, expired or not.
async fn rows(api: &Api, tenant: &str, kind: RecordKind) -> usize {
    api.state
        .vault
        .store()
        .list_records(
            &TenantId::parse(tenant).unwrap(),
            kind,
            0,
            1000,
            UnixMillis(0),
        )
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn expired_items_vanish_at_once_and_the_sweeper_deletes_them() {
    let api = Api::new().await.with_upstreams_and(
        vec![UpstreamConfig::echo()],
        Timeouts::default(),
        |gw| gw.trace_ttl_secs = Some(60),
    );
    let (a, key_a) = api.tenant_with_key("Acme").await;
    let (_b, key_b) = api.tenant_with_key("Globex").await;
    let secret = "The Borealis supplier contract renews on the first of June at eleven \
                  percent above list, with a penalty clause that nobody outside finance \
                  has read, and a termination window of ninety days for either party.";
    let short = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_a),
            Some(json!({"id": "short-lived", "text": secret, "ttl_seconds": 60})),
        )
        .await;
    assert_eq!(short.status, StatusCode::CREATED);
    let kept = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_a),
            Some(json!({"id": "kept", "text": "A record with no expiry at all."})),
        )
        .await;
    assert_eq!(kept.status, StatusCode::CREATED);
    let session = api
        .call(
            "POST",
            "/v1/sessions",
            Some(&key_a),
            Some(json!({"ttl_seconds": 60})),
        )
        .await
        .json();
    let sid = session["id"].as_str().unwrap().to_owned();
    let chat = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key_a),
            Some(
                json!({"model": ECHO_MODEL, "messages": [{"role": "user", "content": "hi"}],
                        "bulkhead": {"session_id": sid}}),
            ),
        )
        .await;
    assert_eq!(chat.status, StatusCode::OK);
    let trace_id = chat.json()["bulkhead"]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Before expiry: the guard knows the document (B cannot receive its text) and
    // nothing is swept.
    let scan = |key: String| {
        let api = &api;
        async move {
            api.call(
                "POST",
                "/v1/guard/scan",
                Some(&key),
                Some(json!({"text": secret})),
            )
            .await
            .json()["verdict"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(scan(key_b.clone()).await, "blocked");
    assert_eq!(sweep_once(&api.state, 1000).await.unwrap().total(), 0);

    api.clock.advance_secs(61);
    // Invisible at once, before any sweep.
    for path in [
        "/v1/documents/short-lived".to_owned(),
        format!("/v1/sessions/{sid}/messages"),
        format!("/v1/traces/{trace_id}"),
    ] {
        let r = api.call("GET", &path, Some(&key_a), None).await;
        assert_problem(&r, StatusCode::NOT_FOUND, &path);
    }
    assert!(
        rows(&api, &a, RecordKind::DOCUMENT).await == 2,
        "still on disk"
    );

    // The sweep, in batches of two: bounded work per tick, everything in the end.
    let mut total = 0;
    let mut sweeps = 0;
    loop {
        let stats = sweep_once(&api.state, 2).await.unwrap();
        assert!(stats.total() <= 2);
        total += stats.total();
        sweeps += 1;
        if stats.total() == 0 {
            break;
        }
        assert!(sweeps < 50, "the sweep does not converge");
    }
    // Document + its chunk, session + its two messages, the trace.
    assert_eq!(total, 6, "exactly the expired rows");
    assert_eq!(
        rows(&api, &a, RecordKind::DOCUMENT).await,
        1,
        "the live one stays"
    );
    for kind in [
        RecordKind::SESSION,
        RecordKind::SESSION_MESSAGE,
        RecordKind::TRACE,
    ] {
        assert_eq!(rows(&api, &a, kind).await, 0, "{}", kind.as_str());
    }
    let live = api
        .call("GET", "/v1/documents/kept", Some(&key_a), None)
        .await;
    assert_eq!(live.status, StatusCode::OK);

    // The guard forgot the document's fingerprints.
    assert_eq!(scan(key_b).await, "allow");

    // What expired is in the tenant's log (ids only), the sweeps in the operator's.
    let mine = api
        .call(
            "GET",
            "/v1/audit/entries?start=0&end=1000",
            Some(&key_a),
            None,
        )
        .await
        .json();
    let expired: Vec<&Value> = mine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["kind"] == "retention.expired")
        .collect();
    let subjects: Vec<String> = expired
        .iter()
        .flat_map(|e| e["event"]["subjects"].as_array().unwrap().iter())
        .map(|s| {
            format!(
                "{}:{}",
                s["kind"].as_str().unwrap(),
                s["id"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "document:short-lived".to_owned(),
        format!("session:{sid}"),
        format!("trace:{trace_id}"),
    ] {
        assert!(subjects.contains(&want), "{want} in {subjects:?}");
    }
    assert!(
        !mine.to_string().contains("Borealis"),
        "ids only, never content"
    );
    assert_eq!(
        api.events("/admin/v1/audit", ADMIN, "retention.sweep")
            .await
            .len(),
        3,
        "one summary per sweep that deleted something"
    );
}
