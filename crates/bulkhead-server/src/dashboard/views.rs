//! The dashboard's pages and panels as maud templates, and the data each loads.
//!
//! maud escapes every interpolated value at compile time unless it is wrapped in
//! `PreEscaped`, which nothing here does with data: an id or a name can never
//! become markup. Charts are inline SVG built from numbers only.

use maud::{DOCTYPE, Markup, html};
use serde_json::{Value, json};

use bulkhead_types::{TenantId, TenantStatus, UnixMillis};

use super::{DashSession, VerifyResult};
use crate::AppState;
use crate::alerts::Alert;
use crate::error::ApiResult;
use crate::traffic::{GuardView, TrafficView};

/// Bins of the 15-minute charts: 90 of 10 seconds.
const BIN_SECS: i64 = 10;
/// Tenants shown with their own traffic row.
const TRAFFIC_TENANTS_MAX: usize = 12;
/// Alerts listed.
const ALERTS_MAX: usize = 200;
/// Audit logs listed.
const LOGS_MAX: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Tenants,
    Traffic,
    Guard,
    Alerts,
    Audit,
}

fn when(t: UnixMillis) -> String {
    // "2026-11-28T03:17:12.123Z" → "2026-11-28 03:17:12Z": readable, still UTC.
    let s = t.rfc3339();
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}Z"),
        _ => s,
    }
}

fn short_time(rfc: &str) -> String {
    match (rfc.get(..10), rfc.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}Z"),
        _ => rfc.to_owned(),
    }
}

fn ms(v: Option<u32>) -> String {
    v.map_or("—".into(), |v| format!("≤{v} ms"))
}

/// The whole page: head, nav bar, the view.
pub fn page(s: &DashSession, nav: Nav, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! { a href=(href) class=(if n == nav { "nav-item active" } else { "nav-item" }) { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(s.csrf);
                title { "Bulkhead dashboard" }
                link rel="stylesheet" href="/dashboard/static/app.css";
                script src="/dashboard/static/app.js" defer {}
            }
            body {
                header.topbar {
                    div.brand { span.logo { "▮▮" } " Bulkhead" }
                    nav {
                        (item(Nav::Tenants, "/dashboard", "Tenants"))
                        (item(Nav::Traffic, "/dashboard/traffic", "Traffic"))
                        (item(Nav::Guard, "/dashboard/guard", "Guard"))
                        (item(Nav::Alerts, "/dashboard/alerts", "Alerts"))
                        (item(Nav::Audit, "/dashboard/audit", "Audit"))
                    }
                    form.logout method="post" action="/dashboard/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        span.who { (s.actor) }
                        button.btn.ghost type="submit" id="logout" { "Log out" }
                    }
                }
                main { (body) }
                footer { "Counts, ids, hashes and types only — tenant content never appears here." }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Bulkhead dashboard — log in" }
                link rel="stylesheet" href="/dashboard/static/app.css";
            }
            body.login-body {
                form.login-card method="post" action="/dashboard/login" {
                    div.brand.big { span.logo { "▮▮" } " Bulkhead" }
                    p.muted { "Operator dashboard. Log in with the admin token." }
                    @if let Some(e) = error { p.error id="login-error" { (e) } }
                    label for="token" { "Admin token" }
                    input type="password" id="token" name="token" autocomplete="off" required autofocus;
                    button.btn.primary type="submit" id="login" { "Log in" }
                }
            }
        }
    }
}

/// A panel the page's script refreshes from `/dashboard/api/{name}`.
pub fn live(name: &str, inner: Markup) -> Markup {
    html! { div.live data-panel=(name) data-refresh-secs="5" { (inner) } }
}

fn status_pill(status: TenantStatus) -> Markup {
    html! { span class={ "pill " (status.as_str()) } { (status.as_str()) } }
}

fn csrf_field(s: &DashSession) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

// ---- tenants --------------------------------------------------------------------

pub struct TenantRow {
    pub tenant: bulkhead_vault::Tenant,
    pub documents: u64,
    pub last_activity: Option<UnixMillis>,
    /// What it used against its quotas.
    pub usage: bulkhead_api::quotas::UsageResponse,
}

pub struct TenantsData {
    pub rows: Vec<TenantRow>,
    pub next_cursor: Option<String>,
    pub totals: bulkhead_vault::StoreCounts,
}

impl TenantsData {
    pub async fn load(state: &AppState, cursor: Option<&str>, limit: u32) -> ApiResult<Self> {
        let (tenants, next_cursor) = state.vault.list_tenants(cursor, limit).await?;
        let now = state.vault.now();
        let store = state.vault.store();
        let mut rows = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let documents = store.document_count(&tenant.id, now).await.map_err(|e| {
                tracing::error!(error = %e, "could not count a tenant's documents");
                crate::error::ApiError::internal()
            })?;
            // The last request seen since start, else the tenant log's last
            // checkpoint (signed shortly after every append).
            let seen = state.traffic.last_seen(tenant.id.as_str());
            let logged = state
                .audit
                .head(&bulkhead_types::LogId::Tenant(tenant.id.clone()))
                .await
                .ok()
                .and_then(|h| h.checkpoint_at);
            let last_activity = seen.max(logged);
            let usage = state.quotas.usage(&tenant.id).await?;
            rows.push(TenantRow {
                tenant,
                documents,
                last_activity,
                usage,
            });
        }
        let totals = state.vault.counts().await?;
        Ok(Self {
            rows,
            next_cursor,
            totals,
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "tenants": self.rows.iter().map(|r| json!({
                "id": r.tenant.id.as_str(),
                "name": r.tenant.name,
                "region": r.tenant.region.to_string(),
                "policy": r.tenant.policy.to_string(),
                "status": r.tenant.status.as_str(),
                "documents": r.documents,
                "last_activity": r.last_activity.map(UnixMillis::rfc3339),
                "usage": r.usage,
            })).collect::<Vec<_>>(),
            "next_cursor": self.next_cursor,
            "totals": {"tenants": self.totals.tenants, "quarantined": self.totals.quarantined_tenants,
                       "documents": self.totals.documents},
        })
    }
}

pub fn tenants_panel(s: &DashSession, d: &TenantsData) -> Markup {
    html! {
        h1 { "Tenants" }
        div.cards {
            div.card { div.label { "Tenants" } div.value { (d.totals.tenants) } }
            div.card { div.label { "Quarantined" }
                div class={ "value " @if d.totals.quarantined_tenants > 0 { "bad" } } { (d.totals.quarantined_tenants) } }
            div.card { div.label { "Documents" } div.value { (d.totals.documents) } }
        }
        table.grid id="tenants" {
            thead { tr {
                th { "Tenant" } th { "Name" } th { "Region" } th { "Policy" } th { "Status" }
                th.num { "Documents" } th.num { "Stored" } th.num { "Tokens today" }
                th.num title="Requests refused by a quota since the server started" { "Refused" }
                th { "Last activity" } th { "" }
            } }
            tbody {
                @if d.rows.is_empty() { tr { td colspan="11" .muted { "No tenants yet." } } }
                @for r in &d.rows {
                    @let id = r.tenant.id.as_str();
                    tr data-tenant=(id) {
                        td.mono { (id) }
                        td { (r.tenant.name) }
                        td { (r.tenant.region.to_string()) }
                        td { span.tag { (r.tenant.policy.to_string()) } }
                        td.status { (status_pill(r.tenant.status)) }
                        (meter_cell(&bulkhead_api::quotas::Meter { used: r.documents, limit: r.usage.documents.limit }, |n| n.to_string()))
                        (meter_cell(&r.usage.stored_bytes, human_bytes))
                        (meter_cell(&r.usage.tokens_today, |n| n.to_string()))
                        @let refused: u64 = r.usage.refused.values().sum();
                        td.num class={ @if refused > 0 { "warn" } } title=(refusal_title(&r.usage)) { (refused) }
                        td.muted { (r.last_activity.map_or("—".to_owned(), when)) }
                        td.actions {
                            @if r.tenant.status == TenantStatus::Active {
                                form method="post" action={ "/dashboard/tenants/" (id) "/quarantine" } {
                                    (csrf_field(s))
                                    button.btn.danger type="submit" data-action="quarantine" { "Quarantine" }
                                }
                            } @else {
                                form method="post" action={ "/dashboard/tenants/" (id) "/release" } {
                                    (csrf_field(s))
                                    button.btn.primary type="submit" data-action="release" { "Release" }
                                }
                            }
                            a.btn.ghost href={ "/dashboard/tenants/" (id) "/incident" } { "Impact" }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &d.next_cursor {
            p { a href={ "/dashboard?cursor=" (next) } { "Next page →" } }
        }
    }
}

/// A used/limit cell: the used amount, "of <limit>" under a limit, marked when
/// 90% or more is used.
fn meter_cell(m: &bulkhead_api::quotas::Meter, show: fn(u64) -> String) -> Markup {
    let near = m
        .limit
        .is_some_and(|l| m.used.saturating_mul(10) >= l.saturating_mul(9));
    html! {
        td.num class={ @if near { "warn" } } {
            (show(m.used))
            @if let Some(limit) = m.limit { span.muted { " of " (show(limit)) } }
        }
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn refusal_title(u: &bulkhead_api::quotas::UsageResponse) -> String {
    if u.refused.is_empty() {
        return "no refusals".into();
    }
    u.refused
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- traffic --------------------------------------------------------------------

pub struct TrafficData {
    pub all: TrafficView,
    pub tenants: Vec<TrafficView>,
}

impl TrafficData {
    pub fn load(state: &AppState) -> Self {
        let now = state.vault.now();
        let t = &state.traffic;
        Self {
            all: t.view(None, now, BIN_SECS),
            tenants: t
                .tenants(now, TRAFFIC_TENANTS_MAX)
                .into_iter()
                .map(|(name, _)| t.view(Some(&name), now, BIN_SECS))
                .collect(),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "all": self.all, "tenants": self.tenants })
    }
}

/// Chart geometry.
const W: f64 = 720.0;
const H: f64 = 140.0;

/// A bar chart of `values` with an optional overlay (drawn over the bars, red).
fn bars(values: &[u64], overlay: Option<&[u64]>, class: &str) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(1) as f64;
    let bw = W / n;
    html! {
        svg.chart class=(class) viewBox={ "0 0 " (W) " " (H + 16.0) } role="img" {
            line x1="0" y1=(H) x2=(W) y2=(H) stroke="#cfd6e4" stroke-width="1" {}
            @for (i, v) in values.iter().enumerate() {
                @let h = (*v as f64 / max) * (H - 8.0);
                @if *v > 0 {
                    rect x=(format!("{:.1}", i as f64 * bw + 0.5)) y=(format!("{:.1}", H - h))
                        width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{:.1}", h)) fill="#4c7bd9" {}
                }
            }
            @if let Some(o) = overlay {
                @for (i, v) in o.iter().enumerate() {
                    @let h = (*v as f64 / max) * (H - 8.0);
                    @if *v > 0 {
                        rect x=(format!("{:.1}", i as f64 * bw + 0.5)) y=(format!("{:.1}", H - h))
                            width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{:.1}", h)) fill="#d64545" {}
                    }
                }
            }
            text x="4" y="12" font-size="11" fill="#5b6577" { "max " (max as u64) }
            text x="4" y=(H + 13.0) font-size="10" fill="#8a93a5" { "−15 min" }
            text x=(W - 4.0) y=(H + 13.0) font-size="10" fill="#8a93a5" text-anchor="end" { "now" }
        }
    }
}

/// Lines of latency percentiles (ms, log-free linear scale up to the max seen).
fn latency_lines(view: &TrafficView) -> Markup {
    let p50: Vec<Option<u32>> = view.bins.iter().map(|b| b.p50_ms).collect();
    let p99: Vec<Option<u32>> = view.bins.iter().map(|b| b.p99_ms).collect();
    let max = p99.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let n = view.bins.len().max(1) as f64;
    let points = |series: &[Option<u32>]| -> String {
        series
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.map(|v| {
                    format!(
                        "{:.1},{:.1}",
                        (i as f64 + 0.5) * W / n,
                        H - (f64::from(v) / max) * (H - 8.0)
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.chart.latency viewBox={ "0 0 " (W) " " (H + 16.0) } role="img" {
            line x1="0" y1=(H) x2=(W) y2=(H) stroke="#cfd6e4" stroke-width="1" {}
            polyline points=(points(&p99)) fill="none" stroke="#d6894c" stroke-width="2" {}
            polyline points=(points(&p50)) fill="none" stroke="#3b9a6b" stroke-width="2" {}
            // Dots too: a single busy bin is a point, which a line alone would hide.
            @for (series, colour) in [(&p99, "#d6894c"), (&p50, "#3b9a6b")] {
                @for (i, v) in series.iter().enumerate() {
                    @if let Some(v) = v {
                        circle cx=(format!("{:.1}", (i as f64 + 0.5) * W / n))
                            cy=(format!("{:.1}", H - (f64::from(*v) / max) * (H - 8.0))) r="2.5" fill=(colour) {}
                    }
                }
            }
            text x="4" y="12" font-size="11" fill="#5b6577" { "max ≤" (max as u64) " ms" }
            text x="4" y=(H + 13.0) font-size="10" fill="#8a93a5" { "−15 min" }
            text x=(W - 4.0) y=(H + 13.0) font-size="10" fill="#8a93a5" text-anchor="end" { "now" }
        }
    }
}

fn spark(values: &[u64], colour: &str) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(1) as f64;
    let (w, h) = (180.0, 28.0);
    html! {
        svg.spark viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" {
            @for (i, v) in values.iter().enumerate() {
                @if *v > 0 {
                    @let bh = (*v as f64 / max) * (h - 2.0);
                    rect x=(format!("{:.2}", i as f64 * w / n)) y=(format!("{:.2}", h - bh))
                        width=(format!("{:.2}", (w / n).max(0.5))) height=(format!("{:.2}", bh)) fill=(colour) {}
                }
            }
        }
    }
}

pub fn traffic_panel(d: &TrafficData) -> Markup {
    let a = &d.all;
    let requests: Vec<u64> = a.bins.iter().map(|b| b.requests).collect();
    let errors: Vec<u64> = a.bins.iter().map(|b| b.errors_5xx).collect();
    html! {
        h1 { "Traffic " span.muted.small { "last 15 minutes, 10-second bins, tenant plane" } }
        div.cards {
            div.card { div.label { "Requests/s (avg)" } div.value { (format!("{:.2}", a.requests_per_sec)) } }
            div.card { div.label { "Requests" } div.value { (a.requests) } }
            div.card { div.label { "p50" } div.value { (ms(a.p50_ms)) } }
            div.card { div.label { "p99" } div.value { (ms(a.p99_ms)) } }
            div.card { div.label { "4xx" } div class={ "value " @if a.errors_4xx > 0 { "warn" } } { (a.errors_4xx) } }
            div.card { div.label { "5xx" } div class={ "value " @if a.errors_5xx > 0 { "bad" } } { (a.errors_5xx) } }
        }
        div.charts {
            section.chart-box { h2 { "Requests " span.legend.blue { "all" } span.legend.red { "5xx" } } (bars(&requests, Some(&errors), "requests")) }
            section.chart-box { h2 { "Latency " span.legend.green { "p50" } span.legend.orange { "p99" } } (latency_lines(a)) }
        }
        h2 { "By tenant" }
        table.grid id="traffic-tenants" {
            thead { tr { th { "Tenant" } th { "Requests" } th.num { "req/s" } th.num { "4xx" } th.num { "5xx" } th.num { "p50" } th.num { "p99" } } }
            tbody {
                @if d.tenants.is_empty() { tr { td colspan="7" .muted { "No requests in the last 15 minutes." } } }
                @for t in &d.tenants {
                    tr {
                        td.mono { (t.tenant) }
                        td { (spark(&t.bins.iter().map(|b| b.requests).collect::<Vec<_>>(), "#4c7bd9")) " " (t.requests) }
                        td.num { (format!("{:.2}", t.requests_per_sec)) }
                        td.num { (t.errors_4xx) }
                        td.num class=(if t.errors_5xx > 0 { "num bad" } else { "num" }) { (t.errors_5xx) }
                        td.num { (ms(t.p50_ms)) }
                        td.num { (ms(t.p99_ms)) }
                    }
                }
            }
        }
    }
}

// ---- guard ------------------------------------------------------------------------

pub struct GuardData {
    pub series: Vec<GuardView>,
}

impl GuardData {
    pub fn load(state: &AppState) -> Self {
        Self {
            series: state.traffic.guard_view(state.vault.now(), BIN_SECS),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "series": self.series })
    }
}

pub fn guard_panel(d: &GuardData) -> Markup {
    let total = |outcome: &str| -> u64 {
        d.series
            .iter()
            .filter(|s| s.outcome == outcome)
            .map(|s| s.total)
            .sum()
    };
    let bins_n = d.series.first().map_or(90, |s| s.bins.len());
    let sum_bins = |outcome: &str| -> Vec<u64> {
        let mut v = vec![0u64; bins_n];
        for s in d.series.iter().filter(|s| s.outcome == outcome) {
            for (i, n) in s.bins.iter().enumerate() {
                v[i] += n;
            }
        }
        v
    };
    let leaks = sum_bins("blocked_leak");
    let mut all = sum_bins("redacted");
    for (i, n) in sum_bins("blocked").iter().enumerate() {
        all[i] += n + leaks[i];
    }
    for (i, n) in leaks.iter().enumerate() {
        all[i] = all[i].max(*n);
    }
    html! {
        h1 { "Guard " span.muted.small { "last 15 minutes: what the output guard blocked or redacted, by type" } }
        div.cards {
            div.card { div.label { "Blocked leaks" } div class={ "value " @if total("blocked_leak") > 0 { "bad" } } { (total("blocked_leak")) } }
            div.card { div.label { "Blocked (policy)" } div.value { (total("blocked")) } }
            div.card { div.label { "Redactions" } div.value { (total("redacted")) } }
        }
        section.chart-box { h2 { "Findings " span.legend.blue { "all" } span.legend.red { "cross-tenant leaks" } } (bars(&all, Some(&leaks), "guard")) }
        table.grid id="guard-types" {
            thead { tr { th { "Outcome" } th { "Type" } th { "Over time" } th.num { "Count" } } }
            tbody {
                @if d.series.is_empty() { tr { td colspan="4" .muted { "Nothing blocked or redacted in the last 15 minutes." } } }
                @for s in &d.series {
                    tr {
                        td { span class={ "pill " (s.outcome) } { (s.outcome.replace('_', " ")) } }
                        td.mono { (s.kind) }
                        td { (spark(&s.bins, if s.outcome == "redacted" { "#4c7bd9" } else { "#d64545" })) }
                        td.num { (s.total) }
                    }
                }
            }
        }
    }
}

// ---- alerts -----------------------------------------------------------------------

pub struct AlertsData {
    pub alerts: Vec<Alert>,
    pub incidents: Vec<crate::incident::Incident>,
    pub now: UnixMillis,
}

impl AlertsData {
    pub fn load(state: &AppState) -> Self {
        Self {
            alerts: state.alerts.recent(ALERTS_MAX),
            incidents: state.incidents.recent(ALERTS_MAX),
            now: state.vault.now(),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "alerts": self.alerts, "incidents": self.incidents })
    }
}

/// The impact page of an incident's own window.
fn incident_window_href(tenant: &str, from: &str, to: &str, now: UnixMillis) -> String {
    let ms = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(now.0)
    };
    format!(
        "/dashboard/tenants/{tenant}/incident?from={}&to={}",
        ms(from),
        ms(to)
    )
}

/// The incident window of an alert: an hour before it to now.
fn incident_href(tenant: &str, created_at: &str, now: UnixMillis) -> String {
    let created =
        time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(now.0);
    format!(
        "/dashboard/tenants/{tenant}/incident?from={}&to={}",
        created - 60 * 60 * 1000,
        now.0
    )
}

pub fn alerts_panel(s: &DashSession, d: &AlertsData) -> Markup {
    let open = d
        .alerts
        .iter()
        .filter(|a| a.acknowledged_by.is_none())
        .count();
    html! {
        h1 { "Alerts and incidents" }
        div.cards {
            div.card { div.label { "Open" } div class={ "value " @if open > 0 { "bad" } } { (open) } }
            div.card { div.label { "Acknowledged" } div.value { (d.alerts.len() - open) } }
            div.card { div.label { "Open incidents" }
                @let open_incidents = d.incidents.iter().filter(|i| i.status == "open").count();
                div class={ "value " @if open_incidents > 0 { "bad" } } { (open_incidents) } }
        }
        h2 { "Incidents" }
        table.grid id="incidents" {
            thead { tr { th { "Opened" } th { "Id" } th { "Status" } th { "Tenant" } th { "Related" } th { "Title" } th { "Report" } } }
            tbody {
                @if d.incidents.is_empty() { tr { td colspan="7" .muted { "No incidents." } } }
                @for i in &d.incidents {
                    tr data-incident=(i.id) {
                        td.muted { (short_time(&i.opened_at)) }
                        td.mono { (i.id) }
                        td { span class={ "pill " @if i.status == "open" { "critical" } @else { "acked" } } { (i.status) } }
                        td.mono { (i.tenant.as_str()) }
                        td.mono { (i.related_tenants.join(", ")) }
                        td { (i.title) }
                        td { a.btn.ghost.small href=(incident_window_href(i.tenant.as_str(), &i.from, &i.to, d.now)) { "Impact report" } }
                    }
                }
            }
        }
        h2 { "Alerts" }
        table.grid id="alerts" {
            thead { tr { th { "When" } th { "Severity" } th { "Kind" } th { "Tenant" } th { "Summary" } th { "Status" } th { "Incident" } } }
            tbody {
                @if d.alerts.is_empty() { tr { td colspan="7" .muted { "No alerts." } } }
                @for a in &d.alerts {
                    tr data-alert=(a.id) data-kind=(a.kind) {
                        td.muted { (short_time(&a.created_at)) }
                        td { span class={ "pill " (a.severity) } { (a.severity) } }
                        td.mono { (a.kind) }
                        td.mono { (a.tenant.as_ref().map_or("—", TenantId::as_str)) }
                        td.summary { (a.summary)
                            @if !a.related.is_empty() { div.related.mono { "related: " (a.related.join(", ")) } } }
                        td {
                            @if let Some(by) = &a.acknowledged_by {
                                span.pill.acked { "acknowledged" }
                                div.muted.small { (by) " · " (a.acknowledged_at.as_deref().map(short_time).unwrap_or_default()) }
                            } @else {
                                form method="post" action={ "/dashboard/alerts/" (a.id) "/ack" } {
                                    (csrf_field(s))
                                    button.btn.primary type="submit" data-action="ack" { "Acknowledge" }
                                }
                            }
                        }
                        td {
                            @let tenants: Vec<&str> = a.tenant.iter().map(TenantId::as_str)
                                .chain(a.related.iter().map(String::as_str).filter(|r| TenantId::parse(r).is_ok()))
                                .collect();
                            @for t in tenants {
                                a.btn.ghost.small href=(incident_href(t, &a.created_at, d.now)) { "Report: " (t) }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- audit ------------------------------------------------------------------------

pub struct LogRow {
    pub log: String,
    pub origin: String,
    pub size: u64,
    pub checkpoint_size: u64,
    pub checkpoint_at: Option<UnixMillis>,
    pub verified: Option<VerifyResult>,
}

pub struct AuditData {
    pub logs: Vec<LogRow>,
    pub vkey: String,
}

impl AuditData {
    pub async fn load(state: &AppState) -> ApiResult<Self> {
        let rows = state
            .audit
            .logs(0, LOGS_MAX)
            .await
            .map_err(crate::audit::audit_error)?;
        Ok(Self {
            logs: rows
                .into_iter()
                .map(|(_, s)| LogRow {
                    log: s.log.to_string(),
                    origin: state.audit.origin(&s.log),
                    size: s.size,
                    checkpoint_size: s.checkpoint_size,
                    checkpoint_at: s.checkpoint_at,
                    verified: state.dashboard.verification(s.log.as_str()),
                })
                .collect(),
            vkey: state.audit.vkey(),
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "vkey": self.vkey,
            "logs": self.logs.iter().map(|l| json!({
                "log": l.log, "origin": l.origin, "size": l.size,
                "checkpoint_size": l.checkpoint_size,
                "checkpoint_at": l.checkpoint_at.map(UnixMillis::rfc3339),
                "verified": l.verified,
            })).collect::<Vec<_>>(),
        })
    }
}

pub fn audit_panel(s: &DashSession, d: &AuditData) -> Markup {
    html! {
        h1 { "Audit logs" }
        p.muted { "Server key: " code { (d.vkey) } }
        table.grid id="logs" {
            thead { tr { th { "Log" } th.num { "Entries" } th.num { "Checkpoint" } th { "Signed" } th { "Last verification" } th { "" } } }
            tbody {
                @if d.logs.is_empty() { tr { td colspan="6" .muted { "No logs yet." } } }
                @for l in &d.logs {
                    tr data-log=(l.log) {
                        td { div.mono { (l.log) } div.muted.small.mono { (l.origin) } }
                        td.num { (l.size) }
                        td.num { (l.checkpoint_size) }
                        td.muted { (l.checkpoint_at.map_or("—".to_owned(), when)) }
                        td.verify-result {
                            @match &l.verified {
                                None => span.muted { "not verified yet" },
                                Some(v) if v.ok() => {
                                    span.pill.ok { "ok" }
                                    span.small.muted { " " (v.size) " entries · " (short_time(&v.at))
                                        @if let Some(old) = v.consistent_with { " · consistent with " (old) } }
                                },
                                Some(v) => {
                                    span.pill.failed { "failed" }
                                    div.small.bad { (v.failure.as_deref().unwrap_or("")) }
                                },
                            }
                        }
                        td {
                            form method="post" action="/dashboard/audit/verify" {
                                (csrf_field(s))
                                input type="hidden" name="log" value=(l.log);
                                button.btn.primary type="submit" data-action="verify" { "Verify now" }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- incident ---------------------------------------------------------------------

/// Items listed per section of an incident page; the CLI and the JSON have all.
const INCIDENT_ITEMS_MAX: usize = 200;

fn impact_items(title: &str, items: &[crate::incident::ImpactItem]) -> Markup {
    html! {
        h2 { (title) " " span.muted.small { "(" (items.len()) ")" } }
        table.grid {
            thead { tr { th { "When" } th { "Entry" } th { "Event" } th { "Outcome" } th { "Actor" } th { "About" } } }
            tbody {
                @if items.is_empty() { tr { td colspan="6" .muted { "None in the window." } } }
                @for i in items.iter().take(INCIDENT_ITEMS_MAX) {
                    tr {
                        td.muted { (short_time(&i.time)) }
                        td.mono { (i.log) "#" (i.index) }
                        td.mono { (i.kind) }
                        td { span class={ "pill " @if i.outcome == "denied" { "critical" } @else { "acked" } } { (i.outcome) }
                             @if let Some(r) = &i.reason { " " span.muted.small { (r) } } }
                        td.mono { (i.actor) }
                        td.mono.small { (i.subjects.join(" ")) }
                    }
                }
                @if items.len() > INCIDENT_ITEMS_MAX {
                    tr { td colspan="6" .muted { (items.len() - INCIDENT_ITEMS_MAX) " more: `bulkhead incident report` lists all, with proofs" } }
                }
            }
        }
    }
}

pub fn incident_panel(
    tenant: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
    report: &crate::incident::ImpactReport,
) -> Markup {
    let s = &report.summary;
    html! {
        h1 { "Impact report " span.mono.small { (tenant.as_str()) } }
        p.muted { "Window: " (when(from)) " → " (when(to))
            " · every entry below is in a signed log (its inclusion proof is in the JSON: "
            code { "bulkhead incident report --tenant " (tenant.as_str()) } ")" }
        section.report id="incident-report" {
        div.cards {
            div.card { div.label { "Context reads" } div.value { (s.reads) } }
            div.card { div.label { "Answers returned" } div.value { (s.model_calls_returned) } }
            div.card { div.label { "Blocked" } div class={ "value " @if s.blocked > 0 { "bad" } } { (s.blocked) } }
            div.card { div.label { "Refused" } div class={ "value " @if s.denied > 0 { "warn" } } { (s.denied) } }
            div.card { div.label { "Leaks to this tenant" } div class={ "value " @if s.leaks_blocked_to_tenant > 0 { "bad" } } { (s.leaks_blocked_to_tenant) } }
            div.card { div.label { "Leaks of its data" } div class={ "value " @if s.leaks_blocked_of_tenant > 0 { "bad" } } { (s.leaks_blocked_of_tenant) } }
        }
        p { "Actors: "
            @for (actor, n) in &s.actors { span.mono { (actor) } " (" (n) ") " }
            @if s.actors.is_empty() { span.muted { "none" } } }
        p { "Documents touched: " span.mono { (s.documents.join(", ")) }
            " · traces: " (s.traces.len()) " · sessions: " (s.sessions.len()) }
        (impact_items("Blocked and refused", &report.blocked))
        (impact_items("Read", &report.read))
        (impact_items("Answers returned", &report.returned))
        (impact_items("Other", &report.other))
        p.muted.small { "Tenant log checkpoint size " (report.tenant_log.size)
            @if report.tenant_log.truncated { " (window truncated: narrow it)" }
            " · operator log checkpoint size " (report.operator_log.size) }
        }
        p { a href="/dashboard/alerts" { "← Alerts and incidents" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_app::EventKind;

    #[test]
    fn an_impact_report_renders_escaped_with_its_sections() {
        let item = crate::incident::ImpactItem {
            log: "tenant".into(),
            index: 7,
            time: "2026-11-28T10:00:00Z".into(),
            kind: EventKind::DocumentRead.as_str().into(),
            actor: "key:bhk_1".into(),
            outcome: "allowed".into(),
            reason: None,
            subjects: vec!["document:<script>alert(1)</script>".into()],
            attrs: Default::default(),
            leaf_hash: String::new(),
            proof: Vec::new(),
        };
        let section = crate::incident::LogSection {
            checkpoint: String::new(),
            size: 9,
            scanned: 9,
            truncated: false,
        };
        let report = crate::incident::ImpactReport {
            tenant: "tn_0123456789abcdef01234567".into(),
            from: String::new(),
            to: String::new(),
            generated_at: String::new(),
            vkey: String::new(),
            tenant_log: section.clone(),
            operator_log: section,
            summary: crate::incident::ImpactSummary {
                reads: 1,
                ..Default::default()
            },
            read: vec![item],
            returned: Vec::new(),
            blocked: Vec::new(),
            other: Vec::new(),
        };
        let tenant = TenantId::parse("tn_0123456789abcdef01234567").unwrap();
        let out = incident_panel(&tenant, UnixMillis(0), UnixMillis(1), &report).into_string();
        assert!(
            out.contains("tenant#7") && out.contains(EventKind::DocumentRead.as_str()),
            "{out}"
        );
        assert!(out.contains("None in the window."));
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;script&gt;"));
    }
}
