//! Alerts: a blocked cross-tenant leak and a burst of refused credentials raise
//! alerts that the operator reads at `/admin/v1/alerts`, that land in the operator
//! log, and that a webhook receives signed (retried after a failure).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bulkhead_server::alerts::{AlertSettings, Alerts, Containment};
use bulkhead_types::TenantId;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api};

async fn alerts(api: &Api) -> Vec<Value> {
    api.call("GET", "/admin/v1/alerts", Some(ADMIN), None)
        .await
        .json()["alerts"]
        .as_array()
        .unwrap()
        .clone()
}

/// Has the guard scan, for the key `to`, a text carrying tenant `from`'s canary
/// (a model regurgitating it); asserts the block and returns the canary.
async fn leak_canary(api: &Api, from: &str, to: &str) -> String {
    let canary = api
        .state
        .guard
        .guard
        .canaries(&TenantId::parse(from).unwrap())
        .remove(0);
    let scan = api
        .call(
            "POST",
            "/v1/guard/scan",
            Some(to),
            Some(json!({"text": format!("here: {canary}")})),
        )
        .await;
    assert_eq!(scan.json()["verdict"], "blocked");
    canary
}

/// Deliveries a receiver accepted: headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A webhook receiver that fails its first delivery and records the rest.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let calls = Arc::new(Mutex::new(0u32));
    let (g, c) = (Arc::clone(&got), Arc::clone(&calls));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (g, c) = (Arc::clone(&g), Arc::clone(&c));
            async move {
                let mut n = c.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().unwrap().push((headers, body.to_vec()));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test]
async fn a_blocked_leak_raises_a_signed_alert_and_bursts_of_bad_keys_raise_one() {
    let (url, got) = receiver().await;
    let mut api = Api::new().await;
    api.state = api
        .state
        .clone()
        .with_alerts(Alerts::with_settings(AlertSettings {
            webhook_url: Some(url),
            webhook_secret: Some("hook-secret".into()),
            auth_failure_burst: 5,
            ..AlertSettings::default()
        }));
    let (a, _key_a) = api.tenant_with_key("Acme").await;
    let (b, key_b) = api.tenant_with_key("Globex").await;
    assert!(alerts(&api).await.is_empty());

    // B receives a text carrying A's canary: blocked, and an alert is raised.
    let canary_a = leak_canary(&api, &a, &key_b).await;
    let raised = alerts(&api).await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0]["kind"], "cross_tenant_leak");
    assert_eq!(raised[0]["severity"], "critical");
    assert_eq!(raised[0]["tenant"], b.as_str());
    assert!(raised[0]["related"].as_array().unwrap().contains(&json!(a)));
    assert!(
        !raised[0].to_string().contains(&canary_a),
        "never the content"
    );

    // Ten refused credentials in one minute: one burst alert, not two.
    for _ in 0..10 {
        let r = api
            .call(
                "GET",
                "/v1/documents",
                Some("bhk_0000000000000000.nope"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let kinds: Vec<String> = alerts(&api)
        .await
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["auth_failure_burst", "cross_tenant_leak"],
        "newest first"
    );
    // Both are in the operator log.
    assert_eq!(api.events("/admin/v1/audit", ADMIN, "alert").await.len(), 2);

    // The webhook got both, signed, the first after a retry.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "webhook never received both alerts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (headers, body) in got.lock().unwrap().iter() {
        let mac = bulkhead_crypto::hmac_sha256(b"hook-secret", body);
        let want = format!("sha256={}", bulkhead_types::hex_lower(&mac));
        assert_eq!(headers["x-bulkhead-signature"], want.as_str());
        let alert: Value = serde_json::from_slice(body).unwrap();
        assert!(alert["id"].as_str().unwrap().starts_with("al_"));
    }
}

/// With `contain_on_leak = key`, the key that received a leaked text is
/// quarantined at once (its sibling keeps working), and the system's action is in
/// both logs. The same leak again (same tenant, same owner), to the sibling, is a
/// repeat of the one alert and its incident, and contains the sibling too. A hit of `/v1/guard/scan` is
/// alerted but never contained: the scanned text is the requester's own.
#[tokio::test]
async fn a_confirmed_leak_quarantines_the_receiving_key_when_configured() {
    let (_mock, api) = crate::framing::contained_api(Containment::Key).await;
    let (a, key_a) = api.tenant_with_key("Acme").await;
    let (b, key_b) = api.tenant_with_key("Globex").await;
    let new_key = || async {
        api.call(
            "POST",
            &format!("/admin/v1/tenants/{b}/keys"),
            Some(ADMIN),
            None,
        )
        .await
        .json()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (sibling, spare) = (new_key().await, new_key().await);
    let r = api
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&key_b),
            Some(json!({"text": format!("here: {}", api.state.guard.guard.canaries(&TenantId::parse(&a).unwrap())[0])})),
        )
        .await;
    assert_eq!(r.json()["verdict"], "blocked");
    assert_eq!(
        api.call("GET", "/v1/documents", Some(&key_b), None)
            .await
            .status,
        StatusCode::OK,
        "a scanned text never contains its sender"
    );
    // The shared (leaky) model repeats A's context, canary and all, to B.
    let leak_to = |key: String| {
        let (api, key_a) = (&api, key_a.clone());
        async move {
            let doc = json!({"text": "Acme's merger closes in March."});
            api.call("POST", "/v1/documents", Some(&key_a), Some(doc))
                .await;
            let ask = json!({"model": "leaky", "messages": [{"role": "user", "content": "merger"}],
                             "bulkhead": {"retrieve": {"top_k": 1}}});
            api.call("POST", "/v1/chat/completions", Some(&key_a), Some(ask))
                .await;
            let r = api
                .call(
                    "POST",
                    "/v1/chat/completions",
                    Some(&key),
                    Some(
                        json!({"model": "leaky", "messages": [{"role": "user", "content": "hi"}]}),
                    ),
                )
                .await;
            assert_eq!(r.json()["bulkhead"]["blocked"], true);
        }
    };
    leak_to(key_b.clone()).await;
    let next = api.call("GET", "/v1/documents", Some(&key_b), None).await;
    assert_eq!(
        next.status,
        StatusCode::FORBIDDEN,
        "the receiving key is contained"
    );
    let other = api.call("GET", "/v1/documents", Some(&spare), None).await;
    assert_eq!(other.status, StatusCode::OK, "the tenant is not taken down");
    let done = api.events("/admin/v1/audit", ADMIN, "key.quarantine").await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["actor"], "system:containment");
    assert_eq!(
        api.events("/v1/audit", &spare, "key.quarantine")
            .await
            .len(),
        1,
        "the tenant's own log shows it too"
    );

    // The same leak to the sibling key: contained too, but one alert, one incident.
    leak_to(sibling.clone()).await;
    let next = api.call("GET", "/v1/documents", Some(&sibling), None).await;
    assert_eq!(next.status, StatusCode::FORBIDDEN);
    let leaks: Vec<Value> = alerts(&api)
        .await
        .into_iter()
        .filter(|al| al["kind"] == "cross_tenant_leak")
        .collect();
    assert_eq!(
        leaks.len(),
        1,
        "the scan's alert, the model's leaks repeat it: {leaks:?}"
    );
    assert_eq!(leaks[0]["repeats"], 2);
    let incidents = api
        .call("GET", "/admin/v1/incidents", Some(ADMIN), None)
        .await
        .json()["incidents"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(incidents, 1, "a repeated alert is the same incident");
}

/// A tenant's requests per minute jump far above its own baseline: one
/// `traffic_anomaly` alert for that tenant, in the operator log; a steady
/// neighbour raises nothing. Minutes pass on the injected clock.
#[tokio::test]
async fn a_traffic_spike_above_a_tenants_baseline_raises_one_anomaly_alert() {
    let mut api = Api::new().await;
    api.state = api
        .state
        .clone()
        .with_alerts(Alerts::with_settings(AlertSettings {
            auth_failure_burst: 1000,
            anomaly: bulkhead_server::anomaly::AnomalySettings {
                min_requests_per_min: 20,
                warmup_minutes: 3,
                ..Default::default()
            },
            ..AlertSettings::default()
        }));
    let (a, key_a) = api.tenant_with_key("Acme").await;
    let (_b, key_b) = api.tenant_with_key("Globex").await;
    let get = |key: String| {
        let api = &api;
        async move {
            let r = api
                .call("GET", "/v1/audit/checkpoint", Some(&key), None)
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
    };
    for _minute in 0..5 {
        for _ in 0..10 {
            get(key_a.clone()).await;
            get(key_b.clone()).await;
        }
        api.clock.advance_secs(60);
    }
    assert!(alerts(&api).await.is_empty(), "steady traffic is normal");
    for _ in 0..100 {
        get(key_a.clone()).await;
    }
    for _ in 0..10 {
        get(key_b.clone()).await;
    }
    // The alert is raised off the request path; wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let raised = loop {
        let raised = alerts(&api).await;
        if !raised.is_empty() {
            break raised;
        }
        assert!(std::time::Instant::now() < deadline, "no anomaly alert");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["kind"], "traffic_anomaly");
    assert_eq!(raised[0]["tenant"], a.as_str());
    assert!(
        raised[0]["summary"]
            .as_str()
            .unwrap()
            .contains("bulkhead incident report"),
        "it says what to do next"
    );
    let logged = api.events("/admin/v1/audit", ADMIN, "alert").await;
    assert_eq!(logged[0]["attrs"]["alert_kind"], "traffic_anomaly");
}

/// A tenant asking for many ids it does not have — every answer the same 404 —
/// raises one `id_enumeration` alert naming that tenant.
#[tokio::test]
async fn guessing_ids_raises_one_enumeration_alert() {
    let mut api = Api::new().await;
    api.state = api
        .state
        .clone()
        .with_alerts(Alerts::with_settings(AlertSettings {
            auth_failure_burst: 1000,
            not_found_burst: 10,
            ..AlertSettings::default()
        }));
    let (a, key_a) = api.tenant_with_key("Acme").await;
    for i in 0..25 {
        let kind = ["documents", "sessions", "traces"][i % 3];
        let path = match kind {
            "sessions" => format!("/v1/sessions/ses_{i:024}/messages"),
            "traces" => format!("/v1/traces/tr_{i:024}"),
            _ => format!("/v1/documents/guess-{i}"),
        };
        let r = api.call("GET", &path, Some(&key_a), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let raised = loop {
        let raised = alerts(&api).await;
        if !raised.is_empty() {
            break raised;
        }
        assert!(std::time::Instant::now() < deadline, "no enumeration alert");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(raised.len(), 1, "once per window: {raised:?}");
    assert_eq!(raised[0]["kind"], "id_enumeration");
    assert_eq!(raised[0]["tenant"], a.as_str());
}
