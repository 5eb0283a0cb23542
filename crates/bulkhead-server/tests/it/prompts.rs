//! Invariant 3 for what tenants send, not only what they store: a prompt (of any
//! role), a tool result or session history of tenant B that a regurgitating model
//! hands to tenant A is blocked, whole and streamed, and logged for the operator;
//! a tenant's own prompt coming back is not. The protection lasts the window,
//! survives a restart (sealed keyed evidence in the store), and ends with the
//! window or the tenant's erasure. `/v1/guard/scan` is no oracle.

use std::time::Duration;

use axum::http::StatusCode;
use bulkhead_gateway::{ECHO_LEAKY_MODEL, ECHO_MODEL, Timeouts, UpstreamConfig};
use bulkhead_types::TenantId;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, Reply, assert_problem};

/// Tenant B's message: salient facts, no document anywhere.
const B_PROMPT: &str = "Draft the renewal letter for Halvorsen Maritime: deal HX-77120, \
     contact dana.whitfield@halvorsen-maritime.com, amount $1,284,500, account 40021873355.";
const B_FACTS: &[&str] = &[
    "HX-77120",
    "dana.whitfield@halvorsen-maritime.com",
    "40021873355",
];

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(1),
        idle: Duration::from_secs(1),
        total: Duration::from_secs(3),
    }
}

async fn echo_api() -> Api {
    Api::new()
        .await
        .with_upstreams(vec![UpstreamConfig::echo()], timeouts())
}

async fn chat(api: &Api, key: &str, model: &str, messages: Value, stream: bool) -> Reply {
    api.call(
        "POST",
        "/v1/chat/completions",
        Some(key),
        Some(json!({"model": model, "messages": messages, "stream": stream})),
    )
    .await
}

fn text_of(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn no_fact_of_b(body: &str) {
    for fact in B_FACTS {
        assert!(!body.contains(fact), "B's {fact} reached A");
    }
}

async fn operator_leaks(api: &Api) -> Vec<Value> {
    let r = api
        .call("GET", "/admin/v1/audit/entries", Some(ADMIN), None)
        .await
        .json();
    r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["kind"] == "guard.leak")
        .collect()
}

async fn scan(api: &Api, key: &str, text: &str) -> Reply {
    api.call(
        "POST",
        "/v1/guard/scan",
        Some(key),
        Some(json!({"text": text})),
    )
    .await
}

#[tokio::test]
async fn another_tenants_prompt_regurgitated_is_blocked_whole_and_streamed() {
    let api = echo_api().await;
    let (_, key_a) = api.tenant_with_key("a").await;
    let (b, key_b) = api.tenant_with_key("b").await;
    for stream in [false, true] {
        // B talks to the leaky model; A is the next caller and gets B's prompt.
        let r = chat(
            &api,
            &key_b,
            ECHO_LEAKY_MODEL,
            json!([{"role": "user", "content": B_PROMPT}]),
            false,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", text_of(&r));
        let r = chat(
            &api,
            &key_a,
            ECHO_LEAKY_MODEL,
            json!([{"role": "user", "content": "What is on my calendar?"}]),
            stream,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        let body = text_of(&r);
        no_fact_of_b(&body);
        assert!(body.contains("content_filter"), "stream={stream}: {body}");
    }
    let leaks = operator_leaks(&api).await;
    assert_eq!(leaks.len(), 2, "{leaks:?}");
    assert!(leaks.iter().all(|e| e["subjects"][0]["id"] == b.as_str()));
}

#[tokio::test]
async fn every_role_and_tool_results_are_protected_and_own_prompts_come_back() {
    let api = echo_api().await;
    let (_, key_a) = api.tenant_with_key("a").await;
    let (_, key_b) = api.tenant_with_key("b").await;
    // B's facts only in a system prompt and a tool result.
    let messages = json!([
        {"role": "system", "content": "You assist the Halvorsen Maritime account team (deal HX-77120)."},
        {"role": "user", "content": "Look up the contact."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "crm_lookup", "arguments": "{\"deal\":\"x\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "contact: dana.whitfield@halvorsen-maritime.com, account 40021873355"}
    ]);
    let r = chat(&api, &key_b, ECHO_LEAKY_MODEL, messages.clone(), false).await;
    assert_eq!(r.status, StatusCode::OK, "{}", text_of(&r));
    // B's own data echoed back to B is B's to see.
    let own = chat(&api, &key_b, ECHO_MODEL, messages, false).await;
    let own_body = text_of(&own);
    assert!(
        own_body.contains("dana.whitfield@halvorsen-maritime.com"),
        "{own_body}"
    );
    assert!(!own_body.contains("content_filter"));
    // The leaky model now hands B's turn to A.
    let r = chat(
        &api,
        &key_a,
        ECHO_LEAKY_MODEL,
        json!([{"role": "user", "content": "hello"}]),
        false,
    )
    .await;
    let body = text_of(&r);
    no_fact_of_b(&body);
    assert!(body.contains("content_filter"), "{body}");
}

#[tokio::test]
async fn protection_survives_a_restart_and_ends_with_the_window_or_erasure() {
    let api = echo_api().await;
    let (a, key_a) = api.tenant_with_key("a").await;
    let (b, key_b) = api.tenant_with_key("b").await;
    let (_, key_c) = api.tenant_with_key("c").await;
    let b_id = TenantId::parse(&b).unwrap();
    for key in [&key_b, &key_c] {
        let prompt = if key == &key_b {
            B_PROMPT.to_owned()
        } else {
            "Invoice INV-2026-00417 for Orsolya Kertesz, orsolya.kertesz@example.org, 77 410 EUR."
                .to_owned()
        };
        let r = chat(
            &api,
            key,
            ECHO_MODEL,
            json!([{"role": "user", "content": prompt}]),
            false,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // The evidence is stored sealed in the background: wait for it.
    let mut stored = 0;
    for _ in 0..100 {
        stored = api.state.vault.guard_evidence(&b_id).await.unwrap().len();
        if stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, 1, "one record per distinct text");

    // A restarted server (a fresh guard from the same store) still protects it.
    let fresh = bulkhead_server::guard::GuardState::new(&api.state.vault);
    fresh.rebuild(&api.state.vault).await.unwrap();
    let a_id = TenantId::parse(&a).unwrap();
    let out = fresh.guard.scan(
        &a_id,
        &format!("Here you go: {B_PROMPT}"),
        &bulkhead_guard::Policy::default(),
    );
    assert_eq!(out.verdict, bulkhead_guard::Verdict::Blocked, "{out:?}");

    // Erasure forgets B's prompts at once; C's stay protected.
    let r = api
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/{b}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", text_of(&r));
    let after = scan(&api, &key_a, &format!("Here you go: {B_PROMPT}"))
        .await
        .json();
    assert_eq!(after["verdict"], "allow", "{after}");
    let c_leak = scan(&api, &key_a, "orsolya.kertesz@example.org")
        .await
        .json();
    assert_eq!(c_leak["verdict"], "blocked", "{c_leak}");

    // Past the window (default one hour) the sweep forgets C's too, and deletes
    // the sealed evidence.
    api.clock.advance_secs(3_601);
    bulkhead_server::retention::sweep_once(&api.state, 1000)
        .await
        .unwrap();
    let late = scan(&api, &key_a, "orsolya.kertesz@example.org")
        .await
        .json();
    assert_eq!(late["verdict"], "allow", "{late}");
    assert_eq!(api.state.guard.guard.ephemeral_count(), 0);
}

#[tokio::test]
async fn the_scan_endpoint_says_blocked_and_nothing_else_and_limits_repeats() {
    let api = echo_api().await;
    let (_, key_a) = api.tenant_with_key("a").await;
    let (_, key_b) = api.tenant_with_key("b").await;
    let r = chat(
        &api,
        &key_b,
        ECHO_MODEL,
        json!([{"role": "user", "content": B_PROMPT}]),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // The same text for both a hit and a PII-rich answer: no spans, no types, no
    // counts, no text.
    for i in 0..bulkhead_server::guard::SCAN_HITS_PER_MINUTE_MAX {
        let probe = format!("attempt {i}: the contact is dana.whitfield@halvorsen-maritime.com");
        let hit = scan(&api, &key_a, &probe).await;
        assert_eq!(hit.status, StatusCode::OK);
        assert_eq!(
            hit.json(),
            json!({"verdict": "blocked", "findings": [], "text": null})
        );
    }
    let refused = scan(&api, &key_a, "dana.whitfield@halvorsen-maritime.com").await;
    assert_problem(&refused, StatusCode::TOO_MANY_REQUESTS, "too many scans");
    // Even a clean text is refused from that key for the rest of the minute; another
    // tenant's key is unaffected.
    let clean = scan(&api, &key_a, "hello there").await;
    assert_eq!(clean.status, StatusCode::TOO_MANY_REQUESTS);
    let other = scan(&api, &key_b, "hello there").await;
    assert_eq!(other.status, StatusCode::OK);
    api.clock.advance_secs(61);
    assert_eq!(
        scan(&api, &key_a, "hello there").await.status,
        StatusCode::OK
    );
    // Every hit raised the alert path.
    assert_eq!(
        operator_leaks(&api).await.len(),
        bulkhead_server::guard::SCAN_HITS_PER_MINUTE_MAX as usize
    );
}
