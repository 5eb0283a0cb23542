//! The real router, in process, on a temporary SQLite store: the fuzz input is the
//! JSON body (or the query) of a request to one of the API's routes. Never a
//! panic, never a 5xx but the documented upstream and availability ones (502,
//! 503), and every 4xx is a problem+json whose body carries the OpenAI `error`
//! member (what OpenAI SDKs read on `/v1/chat/completions` and `/v1/embeddings`).
//!
//! Input: one byte choosing the route from `ROUTES`, then the body; for a `GET`
//! route the rest is the query string.
//!
//! The world (store, one tenant with a key, a second tenant for the admin routes
//! that change a tenant, the echo models) is made once per process, lazily. A
//! current-thread runtime in a static drives every request with `oneshot`.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bulkhead_app::{App, AppConfig, StoreSpec};
use bulkhead_server::{AppState, ServerLimits, app};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::Input;

const ADMIN: &str = "admin-token-for-fuzzing-0123456789";

/// Who calls a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Admin,
    Tenant,
}

/// Every route that takes a body (POST, PUT), and the GET routes that read a query.
/// `{t}` is the tenant the admin routes may change (never the one the tenant
/// routes use), `{k}` one of its keys.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/admin/v1/tenants"),
    ("POST", "/admin/v1/tenants/{t}/keys"),
    ("POST", "/admin/v1/tenants/{t}/keys/{k}/quarantine"),
    ("POST", "/admin/v1/tenants/{t}/quarantine"),
    ("POST", "/admin/v1/tenants/{t}/rotate-key"),
    ("PUT", "/admin/v1/tenants/{t}/models"),
    ("PUT", "/admin/v1/tenants/{t}/policy"),
    ("POST", "/admin/v1/config/approve"),
    ("POST", "/admin/v1/incidents"),
    (
        "POST",
        "/admin/v1/incidents/inc_0000000000000000000000/close",
    ),
    ("POST", "/admin/v1/alerts/al_0000000000000000000000/ack"),
    ("POST", "/v1/documents"),
    ("POST", "/v1/search"),
    ("POST", "/v1/guard/scan"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/documents"),
    ("GET", "/v1/audit/entries"),
    ("GET", "/v1/audit/proof/inclusion"),
    ("GET", "/v1/audit/proof/consistency"),
    ("GET", "/admin/v1/audit/entries"),
    ("GET", "/admin/v1/audit/proof/consistency"),
    ("GET", "/admin/v1/tenants"),
    ("GET", "/admin/v1/incidents"),
];

pub struct World {
    rt: tokio::runtime::Runtime,
    state: AppState,
    key: String,
    victim: String,
    victim_key_id: String,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl World {
    async fn call(&self, method: &str, uri: &str, token: &str, body: Vec<u8>) -> Option<Reply> {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("a known method"))
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            // A query that is not a valid URI never reaches the server.
            .ok()?;
        let response = app(self.state.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
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
            .expect("an in-process body does not fail")
            .to_bytes()
            .to_vec();
        Some(Reply {
            status,
            content_type,
            body,
        })
    }

    async fn created(&self, uri: &str, body: Value) -> Value {
        let reply = self
            .call("POST", uri, ADMIN, body.to_string().into_bytes())
            .await
            .expect("a valid request");
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{uri}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        serde_json::from_slice(&reply.body).expect("JSON")
    }
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // In memory where there is a tmpfs: every audited request commits (and
        // fsyncs) SQLite, which on a disk would bound the run at a few per second.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary folder");
        let state = rt.block_on(async {
            let started = App::start(AppConfig {
                store: StoreSpec::Sqlite(dir.path().join("db")),
                admin_token: Some(zeroize::Zeroizing::new(ADMIN.into())),
                document_text_bytes_max: 4096,
                server_name: "bulkhead.fuzz".into(),
                ..AppConfig::in_dir(dir.path())
            })
            .await
            .expect("the app starts");
            let vault = Arc::clone(&started.vault);
            let state = AppState::new(
                Arc::clone(&vault),
                Arc::clone(&started.audit),
                Arc::new(bulkhead_server::retrieval::Retrieval::with_defaults()),
                Arc::new(bulkhead_server::guard::GuardState::new(&vault)),
                started.admin_token(),
                ServerLimits {
                    body_bytes_max: 16 * 1024,
                    ..ServerLimits::default()
                },
            );
            let secret = vault.derive_server_key(bulkhead_server::gateway::GATEWAY_SECRET_PURPOSE);
            let gateway = bulkhead_gateway::Gateway::new(
                bulkhead_gateway::GatewayConfig {
                    upstreams: vec![bulkhead_gateway::UpstreamConfig::echo()],
                    ..bulkhead_gateway::GatewayConfig::default()
                },
                &secret,
            )
            .expect("the echo gateway");
            state.with_gateway(bulkhead_server::gateway::GatewayState::new(gateway))
        });
        let mut w = World {
            rt,
            state,
            key: String::new(),
            victim: String::new(),
            victim_key_id: String::new(),
            _dir: dir,
        };
        let (key, victim, victim_key_id) = w.rt.block_on(async {
            let me = w
                .created("/admin/v1/tenants", json!({"name": "fuzz"}))
                .await;
            let me = me["id"].as_str().expect("an id").to_owned();
            let key = w
                .created(&format!("/admin/v1/tenants/{me}/keys"), json!({}))
                .await;
            let victim = w
                .created("/admin/v1/tenants", json!({"name": "victim"}))
                .await;
            let victim = victim["id"].as_str().expect("an id").to_owned();
            let vkey = w
                .created(&format!("/admin/v1/tenants/{victim}/keys"), json!({}))
                .await;
            (
                key["key"].as_str().expect("a key").to_owned(),
                victim,
                vkey["key_id"].as_str().expect("a key id").to_owned(),
            )
        });
        w.key = key;
        w.victim = victim;
        w.victim_key_id = victim_key_id;
        w
    })
}

pub fn run(data: &[u8]) {
    let w = world();
    let mut input = Input::new(data);
    let (method, template) = ROUTES[usize::from(input.byte()) % ROUTES.len()];
    let path = template
        .replace("{t}", &w.victim)
        .replace("{k}", &w.victim_key_id);
    let caller = if path.starts_with("/admin/") {
        Caller::Admin
    } else {
        Caller::Tenant
    };
    let token = match caller {
        Caller::Admin => ADMIN,
        Caller::Tenant => &w.key,
    };
    let rest = input.rest();
    let (uri, body) = if method == "GET" {
        let Ok(query) = std::str::from_utf8(rest) else {
            return;
        };
        (format!("{path}?{query}"), Vec::new())
    } else {
        (path.clone(), rest.to_vec())
    };
    let Some(reply) = w.rt.block_on(w.call(method, &uri, token, body)) else {
        return;
    };
    check(method, &path, &reply);
}

fn check(method: &str, path: &str, reply: &Reply) {
    let status = reply.status;
    let text = || String::from_utf8_lossy(&reply.body).into_owned();
    if status.is_server_error() {
        assert!(
            status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {status} {}",
            text()
        );
    }
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            reply.content_type,
            "application/problem+json",
            "{method} {path}: {status} {}",
            text()
        );
        let body: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!("{method} {path}: {status}, body not JSON ({e}): {}", text())
        });
        assert_eq!(
            body["status"],
            status.as_u16(),
            "{method} {path}: {}",
            text()
        );
        assert!(
            body["type"].is_string() && body["detail"].is_string(),
            "{}",
            text()
        );
        assert!(
            body["error"]["message"].is_string() && body["error"]["code"].is_string(),
            "{method} {path}: no OpenAI error member: {}",
            text()
        );
    }
}
