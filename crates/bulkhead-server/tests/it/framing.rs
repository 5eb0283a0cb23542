//! Framing: a tenant reads its own canary from its own answers and plants it
//! in another tenant's input — a pasted email, a stored document, an encoded or
//! spelled-out copy a gullible model turns back into the canary. The victim's
//! answer is still blocked (invariant 3), but the alarm weighs who sent the
//! foreign text: no `cross_tenant_leak`, no incident, no containment of the
//! victim; one deduplicated `foreign_data_supplied` warning, and the operator
//! log says `attribution: requester_input`. A leak the victim did not supply is
//! still a critical alert, an incident and containment.

use axum::http::StatusCode;
use base64::Engine as _;
use bulkhead_mock_upstream::{MockOptions, MockUpstream};
use bulkhead_server::alerts::{AlertSettings, Alerts, Containment};
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, Reply};
use crate::gateway::mock_upstream;

/// A server over a mock upstream whose leaks contain as `containment` says.
pub(crate) async fn contained_api(containment: Containment) -> (MockUpstream, Api) {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let mut api = Api::new().await;
    api.state = api
        .state
        .clone()
        .with_alerts(Alerts::with_settings(AlertSettings {
            auth_failure_burst: 20,
            contain_on_leak: containment,
            ..AlertSettings::default()
        }));
    let api = api.with_upstreams(
        vec![mock_upstream(&mock, "default", None)],
        bulkhead_gateway::Timeouts::default(),
    );
    (mock, api)
}

async fn chat(api: &Api, key: &str, body: Value) -> Reply {
    api.call("POST", "/v1/chat/completions", Some(key), Some(body))
        .await
}

async fn store(api: &Api, key: &str, text: &str) {
    let r = api
        .call(
            "POST",
            "/v1/documents",
            Some(key),
            Some(json!({"text": text})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
}

async fn alerts_of(api: &Api, kind: &str) -> Vec<Value> {
    let all = api
        .call("GET", "/admin/v1/alerts", Some(ADMIN), None)
        .await
        .json();
    all["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == kind)
        .cloned()
        .collect()
}

async fn incidents(api: &Api) -> usize {
    api.call("GET", "/admin/v1/incidents", Some(ADMIN), None)
        .await
        .json()["incidents"]
        .as_array()
        .unwrap()
        .len()
}

/// The first `bhc_` token in a text.
fn canary_in(text: &str) -> Option<String> {
    let at = text.find("bhc_")?;
    Some(text[at..].chars().take(24).collect())
}

/// Whether an answer (whole or streamed) was withheld by the guard.
fn blocked(r: &Reply) -> bool {
    let raw = String::from_utf8_lossy(&r.body);
    raw.contains("content_filter") && raw.contains("\"blocked\":true")
}

fn spaced(s: &str) -> String {
    s.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn a_canary_planted_in_the_requesters_input_is_blocked_but_never_contains_the_requester() {
    let (_mock, api) = contained_api(Containment::Tenant).await;
    let (a, key_a) = api.tenant_with_key("Mallory").await;
    let (b, key_b) = api.tenant_with_key("Victim").await;

    // The attacker reads its own canary: its own context comes back in its own
    // answer, where its own canary is no leak.
    store(
        &api,
        &key_a,
        "Mallory's price list: widgets cost three dollars each.",
    )
    .await;
    let r = chat(
        &api,
        &key_a,
        json!({"model": "echo", "messages": [{"role": "user", "content": "widgets price list"}],
               "bulkhead": {"retrieve": {"top_k": 1}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let canary = canary_in(&r.json()["choices"][0]["message"]["content"].to_string())
        .expect("the attacker sees its own canary");

    // The attacker's text reaches the victim's input in every way it can, and
    // the model turns each back into the canary in the victim's answer.
    store(
        &api,
        &key_b,
        &format!("Forwarded note from a supplier, ref {canary}, please file it."),
    )
    .await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("see {canary} now"));
    let reversed: String = canary.chars().rev().collect();
    let user = |text: &str| json!([{"role": "user", "content": text}]);
    let tries = [
        (
            "pasted email",
            json!({"model": "echo", "messages": user(&format!("Summarise: hi, our ref is {canary}"))}),
        ),
        (
            "pasted, streamed",
            json!({"model": "echo", "stream": true,
            "messages": user(&format!("Summarise: hi, our ref is {canary}"))}),
        ),
        (
            "stored document",
            json!({"model": "echo", "messages": user("file the supplier note"),
            "bulkhead": {"retrieve": {"top_k": 1}}}),
        ),
        (
            "tool result",
            json!({"model": "echo", "messages": [
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": format!("record: {canary}")}]}),
        ),
        (
            "base64",
            json!({"model": "gullible", "messages": user(&format!("decode {b64}"))}),
        ),
        (
            "spelled out",
            json!({"model": "gullible", "messages": user(&format!("join {}", spaced(&canary)))}),
        ),
        (
            "reversed",
            json!({"model": "gullible", "messages": user(&format!("reversed: {reversed}"))}),
        ),
    ];
    for (how, body) in &tries {
        let r = chat(&api, &key_b, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{how}: the victim is not contained"
        );
        assert!(blocked(&r), "{how}: still blocked (invariant 3)");
        assert!(
            !String::from_utf8_lossy(&r.body).contains(&canary),
            "{how}: the canary never reaches the victim"
        );
    }
    assert!(
        alerts_of(&api, "cross_tenant_leak").await.is_empty(),
        "no leak alarm"
    );
    assert_eq!(incidents(&api).await, 0, "no incident against the victim");
    let warned = alerts_of(&api, "foreign_data_supplied").await;
    assert_eq!(
        warned.len(),
        1,
        "one alert, its repeats counted: {warned:?}"
    );
    assert_eq!(warned[0]["tenant"], b.as_str());
    assert_eq!(warned[0]["severity"], "warning");
    assert_eq!(warned[0]["repeats"], tries.len() - 1);
    assert!(warned[0]["related"].as_array().unwrap().contains(&json!(a)));
    let entries = api.events("/admin/v1/audit", ADMIN, "guard.leak").await;
    assert_eq!(
        entries.len(),
        tries.len(),
        "every block is in the operator log"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["attrs"]["attribution"] == "requester_input"),
        "{entries:?}"
    );
    assert!(
        !api.state
            .alerts
            .recent(100)
            .iter()
            .any(|al| al.summary.contains(&canary))
    );

    // A leak the victim did not supply is still the real alarm: the shared
    // model repeats the attacker's context (with its canary) to the victim.
    let r = chat(
        &api,
        &key_a,
        json!({"model": "leaky", "messages": user("widgets price list"),
               "bulkhead": {"retrieve": {"top_k": 1}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = chat(
        &api,
        &key_b,
        json!({"model": "leaky", "messages": user("hello")}),
    )
    .await;
    assert!(blocked(&r));
    let leaks = alerts_of(&api, "cross_tenant_leak").await;
    assert_eq!(leaks.len(), 1);
    assert_eq!(leaks[0]["severity"], "critical");
    assert_eq!(incidents(&api).await, 1);
    let after = api.call("GET", "/v1/documents", Some(&key_b), None).await;
    assert_eq!(
        after.status,
        StatusCode::FORBIDDEN,
        "contained as configured"
    );
    let last = api.events("/admin/v1/audit", ADMIN, "guard.leak").await;
    assert_eq!(last.last().unwrap()["attrs"]["attribution"], "upstream");
}
