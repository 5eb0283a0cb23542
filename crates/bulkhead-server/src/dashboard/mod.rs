//! The operator dashboard at `/dashboard`: server-rendered HTML (maud, escaped at
//! compile time), inline SVG charts, and a few lines of vanilla JavaScript that
//! refresh the live panels from `/dashboard/api/…`.
//!
//! Access: the admin token is exchanged once (`POST /dashboard/login`) for a
//! server-side session held in memory (random 256-bit id, bounded count, idle and
//! absolute expiry) in a `Secure; HttpOnly; SameSite=Strict` cookie. Every POST
//! also needs the session's CSRF token and a same-origin `Origin` header. Every
//! state change goes through the same code as the admin API and is logged with the
//! session as the actor (`dashboard:ds_…`).
//!
//! Must never show tenant content: the views carry ids, names the operator gave,
//! counts, hashes and finding types only.

mod verify;
mod views;

use bulkhead_app::EventKind;
use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{LogId, TenantId, UnixMillis};
use serde::Deserialize;

use crate::AppState;
use crate::audit::{RequestId, Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};

pub use verify::VerifyResult;

/// Sessions held at once; a new login past this evicts the least recently used.
pub const SESSIONS_MAX: usize = 64;
/// A session unused this long is gone.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
/// A session is gone this long after login, used or not.
pub const SESSION_ABSOLUTE_MS: i64 = 12 * 60 * 60 * 1000;
/// Logs whose last verification the dashboard remembers.
const VERIFIED_LOGS_MAX: usize = 10_000;
/// Tenants listed per page of the tenants view.
const TENANTS_PER_PAGE: u32 = 100;

const COOKIE: &str = "bulkhead_dashboard";

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    /// A short, non-secret name for the session in audit entries.
    tag: String,
    created_ms: i64,
    last_ms: i64,
}

/// The dashboard's in-memory state: sessions and the last verification of each log.
#[derive(Debug, Default)]
pub struct Dashboard {
    /// Keyed by SHA-256 of the session id, so the map never holds a usable cookie.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    verified: Mutex<HashMap<String, VerifyResult>>,
}

impl Dashboard {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session; returns (cookie value, session).
    fn open(&self, now: UnixMillis) -> ApiResult<(String, Session)> {
        let id: [u8; 32] = bulkhead_crypto::random_array().map_err(|_| ApiError::internal())?;
        let csrf: [u8; 32] = bulkhead_crypto::random_array().map_err(|_| ApiError::internal())?;
        let cookie = bulkhead_types::hex_lower(&id);
        let digest = bulkhead_crypto::sha256(cookie.as_bytes());
        let session = Session {
            csrf: bulkhead_types::hex_lower(&csrf),
            tag: format!("ds_{}", bulkhead_types::hex_lower(&digest[..6])),
            created_ms: now.0,
            last_ms: now.0,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| live(s, now.0));
        if sessions.len() >= SESSIONS_MAX {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_ms)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(digest, session.clone());
        Ok((cookie, session))
    }

    /// The live session this cookie names, touched.
    fn find(&self, cookie: &str, now: UnixMillis) -> Option<Session> {
        let digest = bulkhead_crypto::sha256(cookie.as_bytes());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get_mut(&digest) {
            Some(s) if live(s, now.0) => {
                s.last_ms = now.0;
                Some(s.clone())
            }
            Some(_) => {
                sessions.remove(&digest);
                None
            }
            None => None,
        }
    }

    fn close(&self, cookie: &str) {
        let digest = bulkhead_crypto::sha256(cookie.as_bytes());
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest);
    }

    /// Sessions alive now (for tests and metrics).
    pub fn session_count(&self, now: UnixMillis) -> usize {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.values().filter(|s| live(s, now.0)).count()
    }

    fn verification(&self, log: &str) -> Option<VerifyResult> {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(log)
            .cloned()
    }

    fn remember(&self, log: &str, result: VerifyResult) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if !verified.contains_key(log) && verified.len() >= VERIFIED_LOGS_MAX {
            // Forgetting an arbitrary log only loses its consistency anchor; the
            // next verification of it starts a new one.
            if let Some(k) = verified.keys().next().cloned() {
                verified.remove(&k);
            }
        }
        verified.insert(log.to_owned(), result);
    }
}

fn live(s: &Session, now_ms: i64) -> bool {
    now_ms - s.last_ms < SESSION_IDLE_MS && now_ms - s.created_ms < SESSION_ABSOLUTE_MS
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// A request with a live dashboard session. Pages that lack one redirect to the
/// login form; API and POST requests get a 401 problem.
#[derive(Debug, Clone)]
pub struct DashSession {
    csrf: String,
    /// The actor recorded in audit entries: `dashboard:ds_…`.
    pub actor: String,
}

fn session_of(parts: &Parts, state: &AppState) -> Option<DashSession> {
    let cookie = cookie_value(&parts.headers)?;
    let s = state.dashboard.find(cookie, state.vault.now())?;
    Some(DashSession {
        csrf: s.csrf,
        actor: format!("dashboard:{}", s.tag),
    })
}

impl FromRequestParts<AppState> for DashSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        session_of(parts, state).ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unauthorized,
                "log in to the dashboard at /dashboard/login",
            )
        })
    }
}

/// A page request with a live session; without one, a redirect to the login form.
#[derive(Debug, Clone)]
pub struct PageSession(pub DashSession);

impl FromRequestParts<AppState> for PageSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        session_of(parts, state)
            .map(PageSession)
            .ok_or_else(|| Redirect::to("/dashboard/login").into_response())
    }
}

/// A POST is accepted only from the dashboard's own pages: the browser's `Origin`
/// must be this server (it cannot be forged by another site's page), and the
/// session's CSRF token must come with it (form field or `x-csrf-token` header).
fn check_origin(headers: &HeaderMap) -> ApiResult<()> {
    let forbidden = |why: &str| ApiError::new(ProblemKind::Forbidden, why.to_owned());
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| forbidden("a dashboard POST must carry an Origin header"))?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| forbidden("the request has no Host header"))?;
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o == host);
    if same {
        Ok(())
    } else {
        Err(forbidden(
            "the request did not come from the dashboard's origin",
        ))
    }
}

fn check_csrf(session: &DashSession, headers: &HeaderMap, form: Option<&str>) -> ApiResult<()> {
    check_origin(headers)?;
    let presented = form
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    if bulkhead_crypto::constant_time_eq(presented.as_bytes(), session.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemKind::Forbidden,
            "the CSRF token is missing or wrong; reload the dashboard page",
        ))
    }
}

/// The fields every dashboard form carries.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    log: Option<String>,
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> ApiResult<T> {
    f.map(|Form(t)| t)
        .map_err(|_| ApiError::new(ProblemKind::InvalidRequest, "the form could not be read"))
}

/// The dashboard's routes, with its security headers.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(tenants_page))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/traffic", get(traffic_page))
        .route("/dashboard/guard", get(guard_page))
        .route("/dashboard/alerts", get(alerts_page))
        .route("/dashboard/audit", get(audit_page))
        .route("/dashboard/tenants/{id}/quarantine", post(quarantine))
        .route("/dashboard/tenants/{id}/release", post(release))
        .route("/dashboard/tenants/{id}/incident", get(incident_page))
        .route("/dashboard/alerts/{id}/ack", post(ack))
        .route("/dashboard/audit/verify", post(verify_log))
        .route("/dashboard/api/{panel}", get(api_panel))
        .route("/dashboard/static/app.js", get(app_js))
        .route("/dashboard/static/app.css", get(app_css))
        .layer(middleware::from_fn_with_state(state.clone(), headers))
}

/// Content-Security-Policy: scripts and styles only from the dashboard's own files
/// (no inline script at all), no framing, forms post only here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn headers(State(_): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends
    // `Origin: null` with form posts, and the Origin check needs the real one.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn back_to(path: &str) -> Response {
    Redirect::to(path).into_response()
}

// ---- login and logout ---------------------------------------------------------

async fn login_page() -> Response {
    html(views::login(None))
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(state): State<AppState>,
    Rid(rid): Rid,
    headers: HeaderMap,
    f: Result<Form<LoginForm>, FormRejection>,
) -> ApiResult<Response> {
    // Login CSRF: another site must not log a browser in to this dashboard.
    check_origin(&headers)?;
    let f = form(f)?;
    let token = zeroize::Zeroizing::new(f.token);
    if !state.admin_token_matches(token.trim()) {
        state.metrics.auth_failure("dashboard");
        crate::extract::auth_burst(&state, &rid).await;
        Trail::new(&state, EventKind::DashboardLogin, "anonymous".into(), &rid)
            .denied("invalid_admin_token")
            .record(LogId::Operator)
            .await?;
        let mut page = html(views::login(Some("That is not the admin token.")));
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    }
    let (cookie, session) = state.dashboard.open(state.vault.now())?;
    Trail::new(
        &state,
        EventKind::DashboardLogin,
        format!("dashboard:{}", session.tag),
        &rid,
    )
    .record(LogId::Operator)
    .await?;
    tracing::info!(session = %session.tag, "dashboard login");
    let mut response = back_to("/dashboard");
    let value = format!(
        "{COOKIE}={cookie}; Path=/dashboard; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_ABSOLUTE_MS / 1000
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&value).map_err(|_| ApiError::internal())?,
    );
    Ok(response)
}

async fn logout(
    session: DashSession,
    State(state): State<AppState>,
    Rid(rid): Rid,
    headers: HeaderMap,
    f: Result<Form<ActionForm>, FormRejection>,
) -> ApiResult<Response> {
    let f = form(f)?;
    check_csrf(&session, &headers, f.csrf.as_deref())?;
    if let Some(cookie) = cookie_value(&headers) {
        state.dashboard.close(cookie);
    }
    Trail::new(
        &state,
        EventKind::DashboardLogout,
        session.actor.clone(),
        &rid,
    )
    .record(LogId::Operator)
    .await?;
    let mut response = back_to("/dashboard/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/dashboard; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .map_err(|_| ApiError::internal())?,
    );
    Ok(response)
}

// ---- pages ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    cursor: Option<String>,
}

async fn tenants_page(
    PageSession(s): PageSession,
    State(state): State<AppState>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let cursor = q.ok().and_then(|Query(q)| q.cursor);
    let data = views::TenantsData::load(&state, cursor.as_deref(), TENANTS_PER_PAGE).await?;
    Ok(html(views::page(
        &s,
        views::Nav::Tenants,
        views::tenants_panel(&s, &data),
    )))
}

async fn traffic_page(PageSession(s): PageSession, State(state): State<AppState>) -> Response {
    let data = views::TrafficData::load(&state);
    html(views::page(
        &s,
        views::Nav::Traffic,
        views::live("traffic", views::traffic_panel(&data)),
    ))
}

async fn guard_page(PageSession(s): PageSession, State(state): State<AppState>) -> Response {
    let data = views::GuardData::load(&state);
    html(views::page(
        &s,
        views::Nav::Guard,
        views::live("guard", views::guard_panel(&data)),
    ))
}

async fn alerts_page(PageSession(s): PageSession, State(state): State<AppState>) -> Response {
    let data = views::AlertsData::load(&state);
    html(views::page(
        &s,
        views::Nav::Alerts,
        views::alerts_panel(&s, &data),
    ))
}

async fn audit_page(
    PageSession(s): PageSession,
    State(state): State<AppState>,
) -> ApiResult<Response> {
    let data = views::AuditData::load(&state).await?;
    Ok(html(views::page(
        &s,
        views::Nav::Audit,
        views::audit_panel(&s, &data),
    )))
}

#[derive(Debug, Deserialize)]
pub struct IncidentQuery {
    #[serde(default)]
    from: Option<i64>,
    #[serde(default)]
    to: Option<i64>,
}

/// The longest window an incident report covers.
const INCIDENT_WINDOW_MS_MAX: i64 = 31 * 24 * 60 * 60 * 1000;

async fn incident_page(
    PageSession(s): PageSession,
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(ProblemKind::InvalidRequest, e.body_text()))?;
    let tenant = TenantId::parse(&id).map_err(|_| ApiError::not_found())?;
    let now = state.vault.now().0;
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - 60 * 60 * 1000);
    if from > to || to - from > INCIDENT_WINDOW_MS_MAX {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "from must not be after to, and the window is at most 31 days",
        ));
    }
    let report =
        crate::incident::impact_report(&state, &tenant, UnixMillis(from), UnixMillis(to)).await?;
    Ok(html(views::page(
        &s,
        views::Nav::Alerts,
        views::incident_panel(&tenant, UnixMillis(from), UnixMillis(to), &report),
    )))
}

// ---- actions ---------------------------------------------------------------------

async fn quarantine(
    session: DashSession,
    State(state): State<AppState>,
    Rid(rid): Rid,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ActionForm>, FormRejection>,
) -> ApiResult<Response> {
    set_quarantine(session, state, rid, headers, id, f, true).await
}

async fn release(
    session: DashSession,
    State(state): State<AppState>,
    Rid(rid): Rid,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ActionForm>, FormRejection>,
) -> ApiResult<Response> {
    set_quarantine(session, state, rid, headers, id, f, false).await
}

async fn set_quarantine(
    session: DashSession,
    state: AppState,
    rid: RequestId,
    headers: HeaderMap,
    id: String,
    f: Result<Form<ActionForm>, FormRejection>,
    quarantined: bool,
) -> ApiResult<Response> {
    let f = form(f)?;
    check_csrf(&session, &headers, f.csrf.as_deref())?;
    // The same function (and so the same audit entries) as the admin API.
    let tenant =
        bulkhead_app::tenants::set_quarantine(&state, &session.actor, &rid, &id, quarantined)
            .await?;
    tracing::warn!(tenant = %tenant.id, actor = %session.actor, quarantined, "tenant quarantine changed from the dashboard");
    Ok(back_to("/dashboard"))
}

async fn ack(
    session: DashSession,
    State(state): State<AppState>,
    Rid(rid): Rid,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ActionForm>, FormRejection>,
) -> ApiResult<Response> {
    let f = form(f)?;
    check_csrf(&session, &headers, f.csrf.as_deref())?;
    crate::alerts::acknowledge(&state, &rid, &id, &session.actor).await?;
    Ok(back_to("/dashboard/alerts"))
}

async fn verify_log(
    session: DashSession,
    State(state): State<AppState>,
    Rid(rid): Rid,
    headers: HeaderMap,
    f: Result<Form<ActionForm>, FormRejection>,
) -> ApiResult<Response> {
    let f = form(f)?;
    check_csrf(&session, &headers, f.csrf.as_deref())?;
    let log = f
        .log
        .as_deref()
        .and_then(|l| LogId::parse(l).ok())
        .ok_or_else(|| ApiError::new(ProblemKind::InvalidRequest, "name a log to verify"))?;
    let previous = state.dashboard.verification(log.as_str());
    let result = verify::verify(&state, &log, previous.as_ref()).await;
    let mut trail = Trail::new(&state, EventKind::AuditVerify, session.actor.clone(), &rid)
        .subject(Subject::new("log", log.as_str()))
        .attr("size", Attr::Int(result.size as i64));
    if let Some(reason) = &result.failure {
        trail = trail.denied("verification_failed");
        tracing::error!(log = %log, reason = %reason, "dashboard verification of an audit log FAILED");
    }
    trail.record(LogId::Operator).await?;
    state.dashboard.remember(log.as_str(), result);
    Ok(back_to("/dashboard/audit"))
}

// ---- live panels and static files --------------------------------------------------

/// `GET /dashboard/api/{panel}`: the panel's data and its rendered HTML (the page's
/// script swaps the HTML in; the data is there for scripts and tests).
async fn api_panel(
    session: DashSession,
    State(state): State<AppState>,
    Path(panel): Path<String>,
) -> ApiResult<Response> {
    let (data, markup) = match panel.as_str() {
        "tenants" => {
            let d = views::TenantsData::load(&state, None, TENANTS_PER_PAGE).await?;
            (d.json(), views::tenants_panel(&session, &d))
        }
        "traffic" => {
            let d = views::TrafficData::load(&state);
            (d.json(), views::traffic_panel(&d))
        }
        "guard" => {
            let d = views::GuardData::load(&state);
            (d.json(), views::guard_panel(&d))
        }
        "alerts" => {
            let d = views::AlertsData::load(&state);
            (d.json(), views::alerts_panel(&session, &d))
        }
        "audit" => {
            let d = views::AuditData::load(&state).await?;
            (d.json(), views::audit_panel(&session, &d))
        }
        _ => return Err(ApiError::not_found()),
    };
    Ok(
        axum::Json(serde_json::json!({ "data": data, "html": markup.into_string() }))
            .into_response(),
    )
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("app.js"),
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("app.css"),
    )
        .into_response()
}
