//! The policy baseline's hash is pinned: an unchanged default policy keeps the
//! hash it had before the closed-set types replaced `Debug` names, so no store
//! sees false drift after an upgrade.

use axum::http::StatusCode;

use crate::common::{ADMIN, Api};

/// The hash of the default configuration's effective policy (built-in packs, no
/// upstreams, default gateway and alert settings), computed on the code before
/// enums were named explicitly.
const DEFAULT_POLICY_HASH: &str =
    "sha256:d1d2801a31aa5a79b0f50081e7599ad626403c8c428c60eb88896b31e6379695";

#[tokio::test]
async fn the_default_policy_keeps_its_hash() {
    let api = Api::new().await;
    let reply = api
        .call("GET", "/admin/v1/config/policy", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let status = reply.json();
    assert_eq!(status["hash"], DEFAULT_POLICY_HASH);
    assert_eq!(status["drift"], false);
}

/// Background trace commits and key containment: the two enums the policy
/// names keep the names they had.
const TUNED_POLICY_HASH: &str =
    "sha256:3665cfeed9ad6bb6a286aba7f8ef8d95eb1a6a98fa3c433b850bfc0c599a62b6";

#[tokio::test]
async fn a_tuned_policy_keeps_its_hash() {
    let mut api = Api::new().await.with_upstreams_and(
        Vec::new(),
        bulkhead_gateway::Timeouts::default(),
        |gw| gw.trace_commit = bulkhead_server::gateway::TraceCommit::Background,
    );
    api.state = api
        .state
        .clone()
        .with_alerts(bulkhead_server::alerts::Alerts::with_settings(
            bulkhead_server::alerts::AlertSettings {
                auth_failure_burst: 20,
                contain_on_leak: bulkhead_server::alerts::Containment::Key,
                ..bulkhead_server::alerts::AlertSettings::default()
            },
        ));
    let reply = api
        .call("GET", "/admin/v1/config/policy", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let status = reply.json();
    assert_eq!(status["hash"], TUNED_POLICY_HASH);
}
