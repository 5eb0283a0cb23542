//! Fair sharing over HTTP: per-tenant and per-key rates and concurrency, token
//! and embedding budgets, storage quotas, each enforced exactly under a 64-way
//! concurrent burst (no overspend), with 429 problem+json and `Retry-After`; the
//! usage endpoints; a noisy tenant's limits never touch a quiet one.

use std::time::Duration;

use axum::http::StatusCode;
use bulkhead_mock_upstream::{MockOptions, MockUpstream};
use bulkhead_test_support::TestClock;
use bulkhead_types::UnixMillis;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, Reply, assert_problem, request, send};
use crate::gateway::mock_upstream;

/// The start of a UTC minute, so a burst never straddles a window's end.
const T0: UnixMillis = UnixMillis(1_800_000_000_000 - 1_800_000_000_000 % 86_400_000);

async fn fixed_api() -> Api {
    Api::with_clock(TestClock::fixed(T0)).await
}

async fn set_quotas(api: &Api, tenant: &str, quotas: Value) -> Reply {
    api.call(
        "PUT",
        &format!("/admin/v1/tenants/{tenant}/quotas"),
        Some(ADMIN),
        Some(quotas),
    )
    .await
}

async fn usage(api: &Api, key: &str) -> Value {
    let r = api.call("GET", "/v1/usage", Some(key), None).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// `n` copies of one call, each on a task of its own (the tests run on several
/// worker threads, so they really run at once), all started before any is
/// awaited.
async fn burst(
    api: &Api,
    n: usize,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(send(
                api.state.clone(),
                request(method, path, Some(key), body.clone()),
            ))
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    replies
}

fn count(replies: &[Reply], status: StatusCode) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

/// Every refusal among `replies` is a 429 problem of `code`, with `Retry-After`
/// exactly when waiting helps.
fn assert_refusals(replies: &[Reply], code: &str, retry_after: bool) {
    for r in replies
        .iter()
        .filter(|r| r.status != StatusCode::OK && r.status != StatusCode::CREATED)
    {
        assert_problem(r, StatusCode::TOO_MANY_REQUESTS, code);
        assert_eq!(r.json()["type"], format!("/problems/{code}"));
        let header = r.headers.get("retry-after");
        assert_eq!(header.is_some(), retry_after, "{code}: Retry-After");
        if let Some(h) = header {
            let secs: u64 = h.to_str().unwrap().parse().unwrap();
            assert!(secs >= 1, "Retry-After {secs}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_rates_are_exact_per_tenant_and_per_key_and_leave_others_alone() {
    let api = fixed_api().await;
    let (noisy, key) = api.tenant_with_key("noisy").await;
    let (_quiet, quiet_key) = api.tenant_with_key("quiet").await;
    let r = set_quotas(&api, &noisy, json!({"requests_per_second": 5})).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // The clock stands still: a bucket of 5 gives exactly 5.
    let replies = burst(&api, 64, "GET", "/v1/models", &key, None).await;
    assert_eq!(count(&replies, StatusCode::OK), 5);
    assert_eq!(count(&replies, StatusCode::TOO_MANY_REQUESTS), 59);
    assert_refusals(&replies, "rate-limited", true);
    // Another tenant is untouched.
    let quiet = burst(&api, 64, "GET", "/v1/models", &quiet_key, None).await;
    assert_eq!(count(&quiet, StatusCode::OK), 64);

    // A second later the bucket is full again, and no fuller.
    api.clock.advance_secs(1);
    let replies = burst(&api, 64, "GET", "/v1/models", &key, None).await;
    assert_eq!(count(&replies, StatusCode::OK), 5);

    // Per key: two keys of one tenant each get their own 2 a second.
    let r = set_quotas(&api, &noisy, json!({"requests_per_second_per_key": 2})).await;
    assert_eq!(r.status, StatusCode::OK);
    let second = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{noisy}/keys"),
            Some(ADMIN),
            None,
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    api.clock.advance_secs(1);
    let a = burst(&api, 16, "GET", "/v1/models", &key, None).await;
    let b = burst(&api, 16, "GET", "/v1/models", &second, None).await;
    assert_eq!(
        (count(&a, StatusCode::OK), count(&b, StatusCode::OK)),
        (2, 2)
    );
    assert_refusals(&a, "rate-limited", true);

    let u = usage(&api, &quiet_key).await;
    assert_eq!(u["quotas"], json!({}), "the quiet tenant has no limits");
    api.clock.advance_secs(1);
    let u = usage(&api, &key).await;
    assert_eq!(u["sources"]["requests_per_second_per_key"], "tenant");
    assert_eq!(
        u["sources"]["requests_per_second"], "none",
        "PUT replaced the set"
    );
    assert!(u["refused"]["requests_per_second"].as_u64().unwrap() >= 59 + 59);
    assert!(
        u["refused"]["requests_per_second_per_key"]
            .as_u64()
            .unwrap()
            >= 28
    );
}

/// A server with a mock upstream that waits `latency` before each answer.
async fn slow_mock_api(latency: Duration, clock: TestClock) -> (MockUpstream, Api) {
    let mock = MockUpstream::start(MockOptions {
        latency,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let api = Api::with_clock(clock)
        .await
        .with_upstreams(vec![mock_upstream(&mock, "default", None)], patient());
    (mock, api)
}

/// Timeouts far above what a loaded test machine needs: these tests are about
/// admission, not timeouts.
fn patient() -> bulkhead_gateway::Timeouts {
    bulkhead_gateway::Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        total: Duration::from_secs(60),
    }
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": "echo", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_64_way_burst_gets_exactly_the_concurrency_allowed_streams_included() {
    let (_mock, api) = slow_mock_api(Duration::from_millis(1500), TestClock::fixed(T0)).await;
    let (tenant, key) = api.tenant_with_key("bursty").await;
    set_quotas(&api, &tenant, json!({"concurrent_requests": 8})).await;

    for stream in [false, true] {
        let replies = burst(
            &api,
            64,
            "POST",
            "/v1/chat/completions",
            &key,
            Some(chat_body("hello", stream)),
        )
        .await;
        // Every admitted call waits 1.5 s upstream, so all 64 overlap: exactly 8
        // run, 56 are refused at once.
        let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
        assert_eq!(
            count(&replies, StatusCode::OK),
            8,
            "stream={stream}: {statuses:?}"
        );
        assert_eq!(
            count(&replies, StatusCode::TOO_MANY_REQUESTS),
            56,
            "stream={stream}"
        );
        assert_refusals(&replies, "rate-limited", true);
        let u = usage(&api, &key).await;
        assert_eq!(
            u["concurrent_requests"]["used"], 1,
            "only the usage call itself is in flight"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_budget_is_reserved_before_the_call_and_never_overspent() {
    let (mock, api) = slow_mock_api(Duration::from_millis(300), TestClock::fixed(T0)).await;
    let (tenant, key) = api.tenant_with_key("spender").await;
    let budget = 20_000u64;
    set_quotas(&api, &tenant, json!({"tokens_per_minute": budget})).await;

    let body = json!({"model": "echo", "max_tokens": 200,
                      "messages": [{"role": "user", "content": "count to three, please"}]});
    let replies = burst(&api, 64, "POST", "/v1/chat/completions", &key, Some(body)).await;
    let ok: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    assert!(!ok.is_empty() && ok.len() < 64, "{} admitted", ok.len());
    assert_refusals(&replies, "rate-limited", true);
    let spent: u64 = ok
        .iter()
        .map(|r| r.json()["usage"]["total_tokens"].as_u64().unwrap())
        .sum();
    let u = usage(&api, &key).await;
    let used = u["tokens_this_minute"]["used"].as_u64().unwrap();
    assert_eq!(u["tokens_reserved"], 0, "every reservation settled");
    assert_eq!(used, spent, "settled from the upstream's usage");
    assert!(used <= budget, "{used} of {budget}: overspent");

    // A call without max_tokens is capped upstream by the reserve (or what is
    // left): no answer can run past the budget.
    mock.clear();
    api.clock.advance_secs(60);
    let r = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat_body("hi", false)),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let sent = &mock.requests()[0].body;
    assert_eq!(
        sent["max_tokens"],
        bulkhead_app::quota::COMPLETION_RESERVE_DEFAULT
    );

    // A call larger than the whole budget is refused without Retry-After.
    set_quotas(&api, &tenant, json!({"tokens_per_day": 50})).await;
    let r = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat_body(&"word ".repeat(40), false)),
        )
        .await;
    assert_refusals(std::slice::from_ref(&r), "quota-exceeded", false);
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("whole tokens_per_day budget")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_quotas_hold_exactly_under_a_64_way_burst_and_free_on_delete() {
    let api = fixed_api().await;
    let (tenant, key) = api.tenant_with_key("hoarder").await;
    set_quotas(&api, &tenant, json!({"documents": 10})).await;
    let doc = json!({"text": "a paragraph of the tenant's own text, stored sealed"});
    let replies = burst(&api, 64, "POST", "/v1/documents", &key, Some(doc.clone())).await;
    assert_eq!(count(&replies, StatusCode::CREATED), 10);
    assert_eq!(count(&replies, StatusCode::TOO_MANY_REQUESTS), 54);
    assert_refusals(&replies, "quota-exceeded", false);
    let u = usage(&api, &key).await;
    assert_eq!(u["documents"]["used"], 10);
    let per_doc = u["stored_bytes"]["used"].as_u64().unwrap() / 10;
    assert!(per_doc > 0);

    // Deleting one makes room for exactly one.
    let id = replies
        .iter()
        .find(|r| r.status == StatusCode::CREATED)
        .unwrap()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = api
        .call("DELETE", &format!("/v1/documents/{id}"), Some(&key), None)
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    let replies = burst(&api, 8, "POST", "/v1/documents", &key, Some(doc.clone())).await;
    assert_eq!(count(&replies, StatusCode::CREATED), 1);

    // Bytes: room for three and a half more documents admits exactly three.
    let stored = usage(&api, &key).await["stored_bytes"]["used"]
        .as_u64()
        .unwrap();
    set_quotas(
        &api,
        &tenant,
        json!({"stored_bytes": stored + per_doc * 7 / 2}),
    )
    .await;
    let replies = burst(&api, 64, "POST", "/v1/documents", &key, Some(doc)).await;
    assert_eq!(count(&replies, StatusCode::CREATED), 3);
    assert_refusals(&replies, "quota-exceeded", false);
    let u = usage(&api, &key).await;
    assert!(
        u["stored_bytes"]["used"].as_u64().unwrap() <= u["stored_bytes"]["limit"].as_u64().unwrap()
    );
    // The store agrees with the ledger (a restart would read the same).
    let store = api
        .state
        .vault
        .store()
        .tenant_usage(&bulkhead_types::TenantId::parse(&tenant).unwrap(), T0)
        .await
        .unwrap();
    assert_eq!(store.bytes, u["stored_bytes"]["used"].as_u64().unwrap());
    assert_eq!(store.documents, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedding_budget_is_spent_before_the_embedder_is_asked() {
    let api = fixed_api().await;
    let (tenant, key) = api.tenant_with_key("embedder").await;
    set_quotas(&api, &tenant, json!({"embedding_bytes_per_day": 1000})).await;
    let doc = json!({"text": "x".repeat(400)});
    let replies = burst(&api, 16, "POST", "/v1/documents", &key, Some(doc)).await;
    assert_eq!(count(&replies, StatusCode::CREATED), 2);
    assert_refusals(&replies, "rate-limited", true);
    let u = usage(&api, &key).await;
    assert_eq!(
        u["embedding_bytes_today"],
        json!({"used": 800, "limit": 1000})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_and_quota_endpoints_check_their_input_and_hide_foreign_tenants() {
    let api = fixed_api().await;
    let (tenant, key) = api.tenant_with_key("acme").await;
    for (bad, what) in [
        (json!({"requests_per_second": 0}), "a zero limit"),
        (json!({"requests_per_second": -1}), "a negative limit"),
        (json!({"request_per_second": 3}), "a misspelt field"),
    ] {
        let r = set_quotas(&api, &tenant, bad).await;
        assert_problem(&r, StatusCode::BAD_REQUEST, what);
    }
    assert_eq!(
        usage(&api, &key).await["quotas"],
        json!({}),
        "nothing changed"
    );

    // An unknown tenant id and a malformed one answer like any missing resource.
    let missing = api
        .call(
            "GET",
            "/admin/v1/tenants/tn_00000000000000000000000000/usage",
            Some(ADMIN),
            None,
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND, "unknown tenant");
    let r = set_quotas(&api, "tn_00000000000000000000000000", json!({})).await;
    assert_eq!(r.body, missing.body);
    // The tenant plane has no tenant parameter: /v1/usage is the key's own.
    let (_, other_key) = api.tenant_with_key("other").await;
    set_quotas(&api, &tenant, json!({"documents": 3})).await;
    assert_eq!(
        usage(&api, &other_key).await["documents"]["limit"],
        Value::Null
    );
    let admin_view = api
        .call(
            "GET",
            &format!("/admin/v1/tenants/{tenant}/usage"),
            Some(ADMIN),
            None,
        )
        .await
        .json();
    assert_eq!(admin_view["documents"]["limit"], 3);
    assert_eq!(admin_view["sources"]["documents"], "tenant");
    assert_eq!(admin_view["tenant_id"], tenant);

    // The change is in the operator's audit log, with the values.
    let events = api.events("/admin/v1/audit", ADMIN, "tenant.quotas").await;
    assert!(!events.is_empty());
    // Refusals are counted in the metrics by quota (never by tenant).
    let burst_docs = burst(
        &api,
        8,
        "POST",
        "/v1/documents",
        &key,
        Some(json!({"text": "t"})),
    )
    .await;
    assert_eq!(count(&burst_docs, StatusCode::CREATED), 3);
    let metrics = api.call("GET", "/metrics", None, None).await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("bulkhead_quota_refusals_total{quota=\"documents\"} 5"),
        "{text}"
    );
}

#[tokio::test]
async fn a_session_is_capped_in_bytes_not_only_in_messages() {
    let api = Api::new().await.with_upstreams_and(
        vec![bulkhead_gateway::UpstreamConfig::echo()],
        patient(),
        |gw| gw.sessions.bytes_max = 4096,
    );
    let (_, key) = api.tenant_with_key("talker").await;
    let sid = api
        .call("POST", "/v1/sessions", Some(&key), None)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Each turn stores the user's 600 characters and the echo of them: two or
    // three turns fill 4 KiB, long before the message cap.
    let turn = json!({"model": bulkhead_gateway::ECHO_MODEL,
                      "messages": [{"role": "user", "content": "y".repeat(600)}],
                      "bulkhead": {"session_id": sid}});
    let mut stored = 0;
    let refused = loop {
        let r = api
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(turn.clone()),
            )
            .await;
        if r.status != StatusCode::OK {
            break r;
        }
        stored += 1;
        assert!(stored < 10, "the byte cap never applied");
    };
    assert!(stored >= 1);
    assert_problem(&refused, StatusCode::CONFLICT, "a full session");
    assert!(refused.json()["detail"].as_str().unwrap().contains("bytes"));
    let messages = api
        .call(
            "GET",
            &format!("/v1/sessions/{sid}/messages"),
            Some(&key),
            None,
        )
        .await
        .json();
    let kept = serde_json::to_vec(&messages["messages"]).unwrap().len();
    assert!(kept <= 4096 + 1024, "the session holds {kept} bytes");
}

#[tokio::test]
async fn limits_come_from_the_tenant_else_its_pack_else_the_server() {
    let mut api = fixed_api().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metered.toml"),
        "name = \"metered\"\ndescription = \"metered\"\n[retention]\naudit_retention_days_min = 1\n\
         [quotas]\nrequests_per_second = 50\ndocuments = 100\n",
    )
    .unwrap();
    api.state = api
        .state
        .clone()
        .with_packs(bulkhead_app::packs::Packs::with_folder(dir.path()).unwrap());
    api.state
        .quotas
        .set_defaults(
            bulkhead_api::quotas::Quotas {
                documents: Some(1000),
                tokens_per_day: Some(5000),
                ..Default::default()
            },
            512,
        )
        .unwrap();
    let (tenant, key) = api
        .tenant_from(json!({"name": "m", "policy": "metered"}))
        .await;
    set_quotas(&api, &tenant, json!({"documents": 7})).await;
    let u = usage(&api, &key).await;
    assert_eq!(u["quotas"]["documents"], 7);
    assert_eq!(u["sources"]["documents"], "tenant");
    assert_eq!(u["quotas"]["requests_per_second"], 50);
    assert_eq!(u["sources"]["requests_per_second"], "pack");
    assert_eq!(u["quotas"]["tokens_per_day"], 5000);
    assert_eq!(u["sources"]["tokens_per_day"], "server");
    assert_eq!(u["sources"]["stored_bytes"], "none");
    // Lifting the tenant's own falls back to the pack's.
    set_quotas(&api, &tenant, json!({})).await;
    let u = usage(&api, &key).await;
    assert_eq!(
        (
            u["quotas"]["documents"].clone(),
            u["sources"]["documents"].clone()
        ),
        (json!(100), json!("pack"))
    );
}
