//! The test harness shared by the HTTP tests: a server state over a temporary SQLite
//! file, driven through `app(state)` with `oneshot` (no sockets).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bulkhead_app::{App, AppConfig, StoreSpec};
use bulkhead_server::{AppState, ServerLimits, app};
use bulkhead_test_support::TestClock;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

pub struct Api {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    /// The wall clock plus an offset tests move forward, so expiry is tested
    /// without sleeping.
    pub clock: Arc<TestClock>,
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Api {
    pub async fn new() -> Self {
        Self::with_clock(TestClock::wall()).await
    }

    /// A server whose clock stands still until the test moves it (rates and
    /// windows tested without depending on how fast the machine is).
    pub async fn with_clock(clock: TestClock) -> Self {
        Self::with_clock_and_retrieval(
            clock,
            bulkhead_server::retrieval::Retrieval::with_defaults(),
        )
        .await
    }

    /// A server with this retrieval set-up (embedders, index, default mode).
    pub async fn with_retrieval(retrieval: bulkhead_server::retrieval::Retrieval) -> Self {
        Self::with_clock_and_retrieval(TestClock::wall(), retrieval).await
    }

    async fn with_clock_and_retrieval(
        clock: TestClock,
        retrieval: bulkhead_server::retrieval::Retrieval,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(clock);
        // The one composition root, as `bulkhead serve` uses it: the store is
        // `db` in the temporary directory (tests open it with rusqlite).
        let started = App::start(AppConfig {
            store: StoreSpec::Sqlite(dir.path().join("db")),
            admin_token: Some(zeroize::Zeroizing::new(ADMIN.into())),
            document_text_bytes_max: 4096,
            server_name: "bulkhead.test".into(),
            clock: clock.clone(),
            ..AppConfig::in_dir(dir.path())
        })
        .await
        .unwrap();
        let (vault, audit) = (Arc::clone(&started.vault), Arc::clone(&started.audit));
        let server_limits = ServerLimits {
            body_bytes_max: 16 * 1024,
            ..ServerLimits::default()
        };
        Self {
            dir,
            clock,
            state: AppState::new(
                Arc::clone(&vault),
                audit,
                Arc::new(retrieval),
                Arc::new(bulkhead_server::guard::GuardState::new(&vault)),
                started.admin_token(),
                server_limits,
            ),
        }
    }

    /// The same server with these model upstreams and timeouts.
    pub fn with_upstreams(
        self,
        upstreams: Vec<bulkhead_gateway::UpstreamConfig>,
        timeouts: bulkhead_gateway::Timeouts,
    ) -> Self {
        self.with_upstreams_and(upstreams, timeouts, |_| {})
    }

    /// `with_upstreams`, with the gateway's settings adjusted by `tune`.
    pub fn with_upstreams_and(
        mut self,
        upstreams: Vec<bulkhead_gateway::UpstreamConfig>,
        timeouts: bulkhead_gateway::Timeouts,
        tune: impl FnOnce(&mut bulkhead_server::gateway::GatewayState),
    ) -> Self {
        let secret = self
            .state
            .vault
            .derive_server_key(bulkhead_server::gateway::GATEWAY_SECRET_PURPOSE);
        let gateway = bulkhead_gateway::Gateway::new(
            bulkhead_gateway::GatewayConfig {
                upstreams,
                timeouts,
                ..bulkhead_gateway::GatewayConfig::default()
            },
            &secret,
        )
        .unwrap();
        let mut gw = bulkhead_server::gateway::GatewayState::new(gateway);
        gw.client_stall = std::time::Duration::from_secs(5);
        tune(&mut gw);
        self.state = self.state.clone().with_gateway(gw);
        self
    }

    pub async fn raw(&self, request: Request<Body>) -> Reply {
        send(self.state.clone(), request).await
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        send(self.state.clone(), request(method, path, token, body)).await
    }

    pub async fn tenant_with_key(&self, name: &str) -> (String, String) {
        self.tenant_from(json!({ "name": name })).await
    }

    /// A tenant created from this body (name, region, policy, models), with a key.
    pub async fn tenant_from(&self, body: Value) -> (String, String) {
        let t = self
            .call("POST", "/admin/v1/tenants", Some(ADMIN), Some(body))
            .await;
        assert_eq!(t.status, StatusCode::CREATED);
        let id = t.json()["id"].as_str().unwrap().to_owned();
        let k = self
            .call(
                "POST",
                &format!("/admin/v1/tenants/{id}/keys"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(
            k.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&k.body)
        );
        (id, k.json()["key"].as_str().unwrap().to_owned())
    }

    /// The events of entries 0..1000 of a log (`/v1/audit` with a key, or
    /// `/admin/v1/audit` with the admin token) whose kind is `kind`.
    pub async fn events(&self, prefix: &str, token: &str, kind: &str) -> Vec<Value> {
        self.call(
            "GET",
            &format!("{prefix}/entries?start=0&end=1000"),
            Some(token),
            None,
        )
        .await
        .json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].clone())
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    pub async fn counts(&self) -> (u64, u64) {
        let c = self.state.vault.counts().await.unwrap();
        (c.tenants, c.documents)
    }
}

/// A JSON array of base64 hashes (a proof's path), decoded.
pub fn hashes(v: &Value) -> Vec<bulkhead_ledger::Hash> {
    use base64::Engine as _;
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

/// A request as `Api::call` builds it.
pub fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap()
}

/// Sends one request through the router and reads the whole answer (a stream to
/// its end).
pub async fn send(state: AppState, request: Request<Body>) -> Reply {
    let response = app(state).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        content_type,
        headers,
        body,
    }
}

pub fn assert_problem(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(
        reply.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type, "application/problem+json", "{what}");
    let p = reply.json();
    assert_eq!(p["status"], status.as_u16(), "{what}");
    assert!(
        p["type"].as_str().unwrap().starts_with("/problems/"),
        "{what}"
    );
    assert!(p["title"].is_string() && p["detail"].is_string(), "{what}");
}
