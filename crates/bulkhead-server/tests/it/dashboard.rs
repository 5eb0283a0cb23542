//! The dashboard over HTTP (in-process): login and sessions, CSRF, security
//! headers, the actions it shares with the admin API, and the rule that no page or
//! panel ever carries tenant content.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bulkhead_gateway::{ECHO_LEAKY_MODEL, Timeouts, UpstreamConfig};
use bulkhead_types::TenantId;
use serde_json::{Value, json};

use crate::common::{ADMIN, Api, Reply, assert_problem};

const HOST: &str = "bulkhead.test:7700";
const ORIGIN: &str = "http://bulkhead.test:7700";

async fn echo_api() -> Api {
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(1),
        idle: Duration::from_secs(1),
        total: Duration::from_secs(3),
    };
    Api::new()
        .await
        .with_upstreams(vec![UpstreamConfig::echo()], timeouts)
}

/// A browser-like request: Host, optional cookie, optional Origin and form body.
async fn send(
    api: &Api,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    form: Option<&str>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("bulkhead_dashboard={c}"));
    }
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    let req = match form {
        Some(f) => req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(f.to_owned())),
        None => req.body(Body::empty()),
    };
    api.raw(req.unwrap()).await
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Logs in; returns (cookie value, CSRF token from the page).
async fn login(api: &Api) -> (String, String) {
    let r = send(
        api,
        "POST",
        "/dashboard/login",
        None,
        Some(ORIGIN),
        Some(&format!("token={ADMIN}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set.contains(attr), "cookie lacks {attr}: {set}");
    }
    let cookie = set
        .strip_prefix("bulkhead_dashboard=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(cookie.len(), 64, "256 random bits, hex");
    let page = send(api, "GET", "/dashboard", Some(&cookie), None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    let body = text(&page);
    let csrf = body
        .split(r#"name="csrf-token" content=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

async fn status_of(api: &Api, id: &str) -> String {
    api.call("GET", &format!("/admin/v1/tenants/{id}"), Some(ADMIN), None)
        .await
        .json()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

const PAGES: &[&str] = &[
    "/dashboard",
    "/dashboard/traffic",
    "/dashboard/guard",
    "/dashboard/alerts",
    "/dashboard/audit",
];
const PANELS: &[&str] = &["tenants", "traffic", "guard", "alerts", "audit"];

#[tokio::test]
async fn no_page_or_panel_shows_tenant_content() {
    let api = echo_api().await;
    let (a, key_a) = api.tenant_with_key("Acme").await;
    let (b, key_b) = api.tenant_with_key("Globex").await;
    let doc_text =
        "Zanzibar-quokka merger memo: the Initech deal closes on March 3rd at 2.4 billion.";
    let r = api
        .call(
            "POST",
            "/v1/documents",
            Some(&key_a),
            Some(json!({"text": doc_text})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A quota shows as used "of" its limit.
    let q = api
        .call(
            "PUT",
            &format!("/admin/v1/tenants/{a}/quotas"),
            Some(ADMIN),
            Some(json!({"documents": 7, "tokens_per_day": 90210})),
        )
        .await;
    assert_eq!(q.status, StatusCode::OK);
    let canary_a = api
        .state
        .guard
        .guard
        .canaries(&TenantId::parse(&a).unwrap())
        .remove(0);
    let canary_b = api
        .state
        .guard
        .guard
        .canaries(&TenantId::parse(&b).unwrap())
        .remove(0);
    let prompt = "Vermilion-okapi question about the Zanzibar-quokka memo";
    // A asks the leaky model with its context; the model then repeats A's prompt
    // (with A's canary and document) to B, and the guard blocks it.
    let r = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key_a),
            Some(json!({"model": ECHO_LEAKY_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "bulkhead": {"retrieve": {"top_k": 3}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key_b),
            Some(json!({"model": ECHO_LEAKY_MODEL,
                "messages": [{"role": "user", "content": "anything new?"}]})),
        )
        .await;
    assert_eq!(r.json()["bulkhead"]["blocked"], true);
    // A redaction by the guard sidecar (a card number in B's own text).
    let r = api
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&key_b),
            Some(json!({"text": "mallory-secretive pays with 4111 1111 1111 1111 today"})),
        )
        .await;
    assert_eq!(r.json()["verdict"], "redacted", "{}", text(&r));

    let (cookie, csrf) = login(&api).await;
    // Verify a log so the audit view shows a result too.
    let r = send(
        &api,
        "POST",
        "/dashboard/audit/verify",
        Some(&cookie),
        Some(ORIGIN),
        Some(&format!("csrf={csrf}&log={a}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));

    let mut seen = String::new();
    for page in PAGES {
        let r = send(&api, "GET", page, Some(&cookie), None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert!(r.content_type.starts_with("text/html"), "{page}");
        seen.push_str(&text(&r));
    }
    for panel in PANELS {
        let r = send(
            &api,
            "GET",
            &format!("/dashboard/api/{panel}"),
            Some(&cookie),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{panel}");
        seen.push_str(&text(&r));
    }
    let alert = api.state.alerts.recent(10);
    let leak = alert
        .iter()
        .find(|a| a.kind == "cross_tenant_leak")
        .unwrap();
    let r = send(
        &api,
        "GET",
        &format!("/dashboard/tenants/{b}/incident"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    seen.push_str(&text(&r));

    // What the views must show: the tenants, the leak, the redaction, the check.
    for expected in [
        a.as_str(),
        b.as_str(),
        "Acme",
        "cross_tenant_leak",
        leak.id.as_str(),
        "blocked leak",
        "redacted",
        "card",
        r#"class="pill ok""#,
        " of 7",
        " of 90210",
    ] {
        assert!(
            seen.contains(expected),
            "the dashboard should show {expected}"
        );
    }
    // What it must never show.
    for secret in [
        canary_a.as_str(),
        canary_b.as_str(),
        "Zanzibar",
        "quokka",
        "Initech",
        "Vermilion",
        "okapi",
        "mallory",
        "secretive",
        "4111 1111",
    ] {
        assert!(
            !seen.contains(secret),
            "the dashboard showed tenant content: {secret}"
        );
    }
}

#[tokio::test]
async fn login_sessions_csrf_and_headers() {
    let api = Api::new().await;
    let (id, _key) = api.tenant_with_key("Acme").await;

    // No session: pages redirect to the login form, panels and POSTs get 401.
    for page in PAGES {
        let r = send(&api, "GET", page, None, None, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(r.headers[header::LOCATION], "/dashboard/login");
    }
    let r = send(&api, "GET", "/dashboard/api/tenants", None, None, None).await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "panel without a session");
    let r = send(
        &api,
        "POST",
        &format!("/dashboard/tenants/{id}/quarantine"),
        Some("00ff"),
        Some(ORIGIN),
        Some("csrf=x"),
    )
    .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "POST with a made-up cookie");

    // The login form is served with the security headers.
    let r = send(&api, "GET", "/dashboard/login", None, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");

    // A wrong token is refused, logged and counted toward the burst alert.
    let r = send(
        &api,
        "POST",
        "/dashboard/login",
        None,
        Some(ORIGIN),
        Some("token=not-the-admin-token"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let denied = api
        .events("/admin/v1/audit", ADMIN, "dashboard.login")
        .await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["outcome"], "denied");
    // A login posted from another site is refused even with the right token.
    let r = send(
        &api,
        "POST",
        "/dashboard/login",
        None,
        Some("http://evil.example"),
        Some(&format!("token={ADMIN}")),
    )
    .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "login from another origin");

    let (cookie, csrf) = login(&api).await;
    let quarantine = format!("/dashboard/tenants/{id}/quarantine");
    // Without the CSRF token, with a wrong one, or from another origin: 403, and
    // nothing changes.
    for (origin, form) in [
        (Some(ORIGIN), "".to_owned()),
        (Some(ORIGIN), "csrf=0123".to_owned()),
        (Some("http://evil.example"), format!("csrf={csrf}")),
        (None, format!("csrf={csrf}")),
    ] {
        let r = send(
            &api,
            "POST",
            &quarantine,
            Some(&cookie),
            origin,
            Some(&form),
        )
        .await;
        assert_problem(&r, StatusCode::FORBIDDEN, &format!("{origin:?} {form}"));
        assert_eq!(status_of(&api, &id).await, "active");
    }

    // With both: the same change as the admin API, logged with the session as actor.
    let r = send(
        &api,
        "POST",
        &quarantine,
        Some(&cookie),
        Some(ORIGIN),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(status_of(&api, &id).await, "quarantined");
    let logged = api
        .events("/admin/v1/audit", ADMIN, "tenant.quarantine")
        .await;
    assert_eq!(logged.len(), 1);
    let actor = logged[0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("dashboard:ds_"), "{actor}");
    assert!(
        !actor.contains(&cookie[..12]),
        "the actor never names the cookie"
    );
    // …in the tenant's own log too, as the admin API does.
    let in_tenant_log = api
        .events(
            &format!("/admin/v1/audit/tenants/{id}"),
            ADMIN,
            "tenant.quarantine",
        )
        .await;
    assert_eq!(in_tenant_log.len(), 1);
    let r = send(
        &api,
        "POST",
        &format!("/dashboard/tenants/{id}/release"),
        Some(&cookie),
        Some(ORIGIN),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(status_of(&api, &id).await, "active");

    // Sessions expire when idle, without sleeping: the clock moves.
    let (idle_cookie, _) = login(&api).await;
    api.clock.advance_secs(31 * 60);
    let r = send(&api, "GET", "/dashboard", Some(&idle_cookie), None, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "an idle session is gone");

    // Logout destroys the session: the same cookie no longer works.
    let (cookie, csrf) = login(&api).await;
    let r = send(
        &api,
        "POST",
        "/dashboard/logout",
        Some(&cookie),
        Some(ORIGIN),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = send(
        &api,
        "GET",
        "/dashboard/api/alerts",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "after logout");
}

#[tokio::test]
async fn alerts_are_acknowledged_once_from_either_plane() {
    let api = Api::new().await;
    let (a, _) = api.tenant_with_key("Acme").await;
    let (_, key_b) = api.tenant_with_key("Globex").await;
    let canary = api
        .state
        .guard
        .guard
        .canaries(&TenantId::parse(&a).unwrap())
        .remove(0);
    let r = api
        .call(
            "POST",
            "/v1/guard/scan",
            Some(&key_b),
            Some(json!({"text": format!("here: {canary}")})),
        )
        .await;
    assert_eq!(r.json()["verdict"], "blocked");
    let alerts = api.call("GET", "/admin/v1/alerts", Some(ADMIN), None).await;
    let first: Value = alerts.json()["alerts"][0].clone();
    let alert_id = first["id"].as_str().unwrap().to_owned();
    assert!(first.get("acknowledged_by").is_none());

    // An unknown alert is a 404; the admin API needs the admin token.
    let r = api
        .call("POST", "/admin/v1/alerts/al_nope/ack", Some(ADMIN), None)
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "unknown alert");
    let r = api
        .call(
            "POST",
            &format!("/admin/v1/alerts/{alert_id}/ack"),
            None,
            None,
        )
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "ack without a token");

    // The dashboard acknowledges it…
    let (cookie, csrf) = login(&api).await;
    let r = send(
        &api,
        "POST",
        &format!("/dashboard/alerts/{alert_id}/ack"),
        Some(&cookie),
        Some(ORIGIN),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    // …and the admin API's second acknowledgement changes nothing.
    let r = api
        .call(
            "POST",
            &format!("/admin/v1/alerts/{alert_id}/ack"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let by = r.json()["acknowledged_by"].as_str().unwrap().to_owned();
    assert!(by.starts_with("dashboard:ds_"), "{by}");
    let logged = api
        .events("/admin/v1/audit", ADMIN, "alert.acknowledged")
        .await;
    assert_eq!(logged.len(), 1, "acknowledged once, logged once");
    assert_eq!(logged[0]["actor"], by.as_str());
    let page = send(&api, "GET", "/dashboard/alerts", Some(&cookie), None, None).await;
    let body = text(&page);
    assert!(body.contains("acknowledged") && body.contains(&by));
    // The incident link covers the hour before the alert.
    assert!(body.contains(&format!(
        "/dashboard/tenants/{}/incident?from=",
        first["tenant"].as_str().unwrap()
    )));
}

#[tokio::test]
async fn verify_now_checks_the_log_and_catches_an_edited_entry() {
    let api = Api::new().await;
    let (id, _) = api.tenant_with_key("Acme").await;
    let (cookie, csrf) = login(&api).await;
    let verify = |log: String| {
        let (api, cookie, csrf) = (&api, cookie.clone(), csrf.clone());
        async move {
            let r = send(
                api,
                "POST",
                "/dashboard/audit/verify",
                Some(&cookie),
                Some(ORIGIN),
                Some(&format!("csrf={csrf}&log={log}")),
            )
            .await;
            assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
            let audit = send(
                api,
                "GET",
                "/dashboard/api/audit",
                Some(&cookie),
                None,
                None,
            )
            .await;
            audit.json()["data"]["logs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["log"] == log.as_str())
                .unwrap()["verified"]
                .clone()
        }
    };
    let first = verify(id.clone()).await;
    assert_eq!(first["failure"], Value::Null, "{first}");
    let size = first["size"].as_u64().unwrap();
    assert!(size >= 2);
    // The log grows; the next check proves it consistent with the first.
    let r = api
        .call(
            "POST",
            &format!("/admin/v1/tenants/{id}/keys"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let second = verify(id.clone()).await;
    assert_eq!(second["failure"], Value::Null, "{second}");
    assert_eq!(second["consistent_with"], size);
    assert!(second["size"].as_u64().unwrap() > size);
    // The operator log verifies too, and each check is itself logged.
    let op = verify("operator".into()).await;
    assert_eq!(op["failure"], Value::Null, "{op}");
    let checks = api.events("/admin/v1/audit", ADMIN, "audit.verify").await;
    assert!(checks.len() >= 2);
    // A log name that is no log is bad input.
    let r = send(
        &api,
        "POST",
        "/dashboard/audit/verify",
        Some(&cookie),
        Some(ORIGIN),
        Some(&format!("csrf={csrf}&log=..%2Fetc")),
    )
    .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "bad log name");

    // An insider edits a stored leaf hash: the recomputed root no longer matches
    // the signed checkpoint, and the dashboard says so.
    let db = rusqlite::Connection::open(api.dir.path().join("db")).unwrap();
    let edited = db
        .execute(
            "UPDATE audit_entries SET leaf_hash = zeroblob(32) \
             WHERE idx = 0 AND log = (SELECT seq FROM audit_logs WHERE log_id = ?1)",
            [id.as_str()],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let third = verify(id.clone()).await;
    let why = third["failure"].as_str().unwrap_or_default();
    assert!(why.contains("differs"), "{third}");
    let page = send(&api, "GET", "/dashboard/audit", Some(&cookie), None, None).await;
    assert!(text(&page).contains(r#"class="pill failed""#));
}
