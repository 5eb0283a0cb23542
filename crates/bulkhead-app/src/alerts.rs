//! Alerts: boundary violations raised where they are detected, kept (bounded) for
//! `GET /admin/v1/alerts`, written to the operator log, logged, and sent to a
//! webhook signed with HMAC-SHA256.
//!
//! Raised today: `cross_tenant_leak` (an answer carried another tenant's canary or
//! fingerprints that did not come in through the requester's own input; it was
//! blocked), `foreign_data_supplied` (it did: blocked, but no proof of a leak),
//! `auth_failure_burst` (refused credentials past a threshold in a one-minute
//! window) and the others of `AlertKind`. An alert carries ids, kinds and counts,
//! never content.
//!
//! Flooding: the same alert (kind, tenant, what it names) raised again within
//! `DEDUPE_WINDOW_MS` of the first and not yet acknowledged is counted on the kept
//! alert (`repeats`), not raised again; and webhook deliveries wait in one bounded
//! queue per tenant, sent round-robin, so a tenant that makes alerts fire delays
//! and drops only its own. Must never: block a request on the webhook (a full
//! queue drops with a warning and a metric).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{LogId, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::{AppError, AppResult};
use crate::kinds::{AlertKind, EventKind, Severity};
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// Alerts kept for the admin endpoint and the dashboard.
const RECENT_MAX: usize = 1000;
/// Not-found lookups per tenant per minute that raise `id_enumeration`.
pub const NOT_FOUND_BURST_DEFAULT: u32 = 30;
/// Tenants whose not-found window is tracked at once.
const NOT_FOUND_TENANTS_MAX: usize = 10_000;
/// Webhook deliveries waiting at most, over all tenants.
const QUEUE_MAX: usize = 1000;
/// Webhook deliveries waiting at most for one tenant (or for the server's own
/// alerts, which concern no tenant).
const TENANT_QUEUE_MAX: usize = 100;
/// An identical alert within this long of the first one is a repeat of it.
pub const DEDUPE_WINDOW_MS: i64 = 10 * 60_000;
/// Alert identities remembered for deduplication at once.
const DEDUPE_KEYS_MAX: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    pub id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    /// The tenant concerned, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    pub created_at: String,
    /// What happened and what to do next, for a person; ids and counts only.
    pub summary: String,
    /// Related ids (owner tenants, request id).
    #[serde(default)]
    pub related: Vec<String>,
    /// Who acknowledged the alert (`admin`, `dashboard:ds_…`), once someone has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    /// How many times the same alert was raised again since (`DEDUPE_WINDOW_MS`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeats: u32,
    /// When the last repeat was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
    /// What makes two alerts of one kind and tenant the same one (for a leak,
    /// the owners it names); never sent.
    #[serde(skip)]
    pub dedupe_key: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where alerts go besides the log.
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    pub webhook_url: Option<String>,
    /// Signs each delivery: header `x-bulkhead-signature: sha256=<hex HMAC of the body>`.
    pub webhook_secret: Option<String>,
    /// Refused credentials per minute that raise `auth_failure_burst`.
    pub auth_failure_burst: u32,
    /// What a confirmed leak (a blocked answer carrying another tenant's data)
    /// quarantines at once, besides the alert.
    pub contain_on_leak: Containment,
    /// Per-tenant traffic baselines and when they alert.
    pub anomaly: crate::anomaly::AnomalySettings,
    /// Lookups of ids the tenant does not have, per tenant per minute, that raise
    /// `id_enumeration` (0: the default, 30).
    pub not_found_burst: u32,
}

/// Automatic containment on a confirmed leak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Containment {
    /// Alert only; an operator decides.
    #[default]
    Off,
    /// Quarantine the key that received the leaked text (its tenant's other keys
    /// keep working): stops a client that is extracting, or a model call path
    /// that regurgitates, without taking the tenant down.
    Key,
    /// Quarantine the whole receiving tenant.
    Tenant,
}

impl Containment {
    /// The name the policy baseline records (hashed: never change it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Key => "key",
            Self::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    started_ms: i64,
    count: u32,
    raised: bool,
}

/// Webhook deliveries waiting, one queue per tenant (`None`: alerts that concern
/// no tenant), taken round-robin.
#[derive(Debug, Default)]
struct WebhookQueue {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    queues: HashMap<Option<TenantId>, VecDeque<Vec<u8>>>,
    /// Tenants with deliveries waiting, in the order they are served next.
    turn: VecDeque<Option<TenantId>>,
    total: usize,
    closed: bool,
}

impl WebhookQueue {
    /// Queues a delivery; false (dropped) when its tenant's queue or the whole
    /// queue is full.
    fn push(&self, tenant: Option<&TenantId>, body: Vec<u8>) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.total >= QUEUE_MAX {
            return false;
        }
        let key = tenant.cloned();
        let queue = s.queues.entry(key.clone()).or_default();
        if queue.len() >= TENANT_QUEUE_MAX {
            return false;
        }
        queue.push_back(body);
        if queue.len() == 1 {
            s.turn.push_back(key);
        }
        s.total += 1;
        drop(s);
        self.ready.notify_one();
        true
    }

    /// The next delivery: one of the tenant whose turn it is, which then goes
    /// to the back of the line.
    fn pop(&self) -> Option<Vec<u8>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = s.turn.pop_front()?;
        let queue = s.queues.get_mut(&key)?;
        let body = queue.pop_front();
        if queue.is_empty() {
            s.queues.remove(&key);
        } else {
            s.turn.push_back(key);
        }
        s.total -= usize::from(body.is_some());
        body
    }

    /// Waits for the next delivery; `None` once the alerts are gone.
    async fn next(&self) -> Option<Vec<u8>> {
        loop {
            if let Some(body) = self.pop() {
                return Some(body);
            }
            if self.state.lock().unwrap_or_else(|p| p.into_inner()).closed {
                return None;
            }
            self.ready.notified().await;
        }
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_one();
    }
}

/// Whether `raise` kept a new alert or counted a repeat of a kept one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    New,
    Repeat,
}

#[derive(Debug)]
pub struct Alerts {
    recent: Mutex<VecDeque<Alert>>,
    webhook: Option<Arc<WebhookQueue>>,
    /// Alert identity → the id of the kept alert and when it was raised.
    dedupe: Mutex<HashMap<String, (String, i64)>>,
    auth_failures: Mutex<Window>,
    burst_threshold: u32,
    pub contain_on_leak: Containment,
    /// Per-tenant requests-per-minute baselines (`traffic_anomaly`).
    pub baselines: crate::anomaly::TrafficBaselines,
    /// Per-tenant windows of not-found lookups (`id_enumeration`).
    not_found: Mutex<std::collections::HashMap<TenantId, Window>>,
    not_found_threshold: u32,
}

impl Alerts {
    /// Alerts with no webhook and the default thresholds (tests).
    pub fn new() -> Self {
        Self::with_settings(AlertSettings {
            auth_failure_burst: 20,
            ..AlertSettings::default()
        })
    }

    /// Starts the webhook sender when a URL is configured (needs a tokio runtime).
    pub fn with_settings(settings: AlertSettings) -> Self {
        let webhook = settings.webhook_url.map(|url| {
            let queue = Arc::new(WebhookQueue::default());
            let secret = settings.webhook_secret.map(zeroize::Zeroizing::new);
            tokio::spawn(deliver(url, secret, Arc::clone(&queue)));
            queue
        });
        Self {
            recent: Mutex::new(VecDeque::new()),
            webhook,
            dedupe: Mutex::new(HashMap::new()),
            auth_failures: Mutex::new(Window::default()),
            burst_threshold: settings.auth_failure_burst.max(1),
            contain_on_leak: settings.contain_on_leak,
            baselines: crate::anomaly::TrafficBaselines::new(settings.anomaly),
            not_found: Mutex::new(std::collections::HashMap::new()),
            not_found_threshold: match settings.not_found_burst {
                0 => NOT_FOUND_BURST_DEFAULT,
                n => n,
            },
        }
    }

    /// Not-found lookups per tenant per minute that raise `id_enumeration`.
    pub fn not_found_threshold(&self) -> u32 {
        self.not_found_threshold
    }

    /// Counts a lookup by `tenant` of an id it does not have (a foreign id looks
    /// exactly like that); true when this one crosses the threshold of the
    /// tenant's current one-minute window (raised once per window).
    pub fn not_found(&self, tenant: &TenantId, now_ms: i64) -> bool {
        let mut windows = self.not_found.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(tenant) && windows.len() >= NOT_FOUND_TENANTS_MAX {
            windows.retain(|_, w| now_ms - w.started_ms < 60_000);
            if windows.len() >= NOT_FOUND_TENANTS_MAX {
                return false;
            }
        }
        let w = windows.entry(tenant.clone()).or_default();
        if now_ms - w.started_ms >= 60_000 {
            *w = Window {
                started_ms: now_ms,
                count: 0,
                raised: false,
            };
        }
        w.count += 1;
        if w.count >= self.not_found_threshold && !w.raised {
            w.raised = true;
            return true;
        }
        false
    }

    /// Forgets an erased tenant's windows and baseline (kept alerts stay: they
    /// are the operator's record).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.not_found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
        self.baselines.forget(tenant);
    }

    /// Refused credentials per minute that raise `auth_failure_burst`.
    pub fn burst_threshold(&self) -> u32 {
        self.burst_threshold
    }

    /// The most recent alerts, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Alert> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }

    /// Marks a kept alert acknowledged by `actor` (the first acknowledgement
    /// stands; a second one changes nothing). `None` if no kept alert has this id.
    fn mark_acknowledged(&self, id: &str, actor: &str, now: String) -> Option<(Alert, bool)> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let alert = recent.iter_mut().find(|a| a.id == id)?;
        if alert.acknowledged_by.is_some() {
            return Some((alert.clone(), false));
        }
        alert.acknowledged_by = Some(actor.to_owned());
        alert.acknowledged_at = Some(now);
        Some((alert.clone(), true))
    }

    /// Counts `alert` on the kept alert it repeats (same kind, tenant and
    /// `dedupe_key`, raised less than `DEDUPE_WINDOW_MS` ago, not acknowledged);
    /// false when it is new, and then it is remembered as the one to count on.
    fn repeat(&self, alert: &Alert, now_ms: i64) -> bool {
        let identity = format!(
            "{}|{}|{}",
            alert.kind.as_str(),
            alert.tenant.as_ref().map_or("", |t| t.as_str()),
            alert.dedupe_key
        );
        let mut dedupe = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, first_ms)) = dedupe.get(&identity)
            && now_ms - *first_ms < DEDUPE_WINDOW_MS
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(kept) = recent
                .iter_mut()
                .find(|a| a.id == *id && a.acknowledged_by.is_none())
            {
                kept.repeats = kept.repeats.saturating_add(1);
                kept.last_seen_at = Some(alert.created_at.clone());
                return true;
            }
        }
        if dedupe.len() >= DEDUPE_KEYS_MAX {
            dedupe.retain(|_, (_, first)| now_ms - *first < DEDUPE_WINDOW_MS);
        }
        dedupe.insert(identity, (alert.id.clone(), now_ms));
        false
    }

    /// Raises an alert: kept, logged, in the operator log, sent to the webhook;
    /// or, if it repeats a kept one (`repeat`), counted on that one only.
    pub async fn raise(&self, app: &Services, rid: &RequestId, alert: Alert) -> Raised {
        if self.repeat(&alert, app.vault.now().0) {
            tracing::debug!(kind = %alert.kind, tenant = ?alert.tenant,
                "an alert repeated within the dedupe window; counted on the kept one");
            return Raised::Repeat;
        }
        tracing::warn!(alert = %alert.id, kind = %alert.kind, severity = %alert.severity,
            tenant = ?alert.tenant, "ALERT: {}", alert.summary);
        let mut trail = Trail::new(app, EventKind::Alert, "system:alerts".into(), rid)
            .subject(Subject::new("alert", &*alert.id))
            .attr("alert_kind", Attr::Text(alert.kind.as_str().into()))
            .attr("severity", Attr::Text(alert.severity.as_str().into()));
        if let Some(t) = &alert.tenant {
            trail = trail.about_tenant(t);
        }
        if let Err(e) = trail.record(LogId::Operator).await {
            tracing::error!(alert = %alert.id, error = %e, "an alert could not be written to the operator log");
        }
        if let Some(queue) = &self.webhook {
            let body = serde_json::to_vec(&alert).unwrap_or_default();
            if !queue.push(alert.tenant.as_ref(), body) {
                app.telemetry.alert_dropped();
                tracing::warn!(alert = %alert.id, tenant = ?alert.tenant, "the alert webhook queue (this tenant's, or the whole one) is full; this alert was not delivered (it is in the log and at /admin/v1/alerts)");
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_MAX {
            recent.pop_front();
        }
        recent.push_back(alert);
        Raised::New
    }

    /// Counts a refused credential; returns true when this one crosses the burst
    /// threshold of the current one-minute window (raised once per window).
    pub fn auth_failure(&self, now_ms: i64) -> bool {
        let mut w = self.auth_failures.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms - w.started_ms >= 60_000 {
            *w = Window {
                started_ms: now_ms,
                ..Window::default()
            };
        }
        w.count += 1;
        if w.count >= self.burst_threshold && !w.raised {
            w.raised = true;
            return true;
        }
        false
    }
}

impl Default for Alerts {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Alerts {
    fn drop(&mut self) {
        if let Some(queue) = &self.webhook {
            queue.close();
        }
    }
}

/// Raises `traffic_anomaly` for a tenant whose requests this minute passed its
/// baseline.
pub async fn raise_traffic_anomaly(
    app: &Services,
    rid: &RequestId,
    anomaly: crate::anomaly::Anomaly,
) {
    let alert = new_alert(
        AlertKind::TrafficAnomaly,
        Severity::Warning,
        Some(&anomaly.tenant),
        format!(
            "{} requests this minute against a baseline of {:.0} ± {:.0} per minute; \
             if this tenant did not expect it, its key may be in other hands: run an impact report \
             (`bulkhead incident report --tenant {}`) and consider quarantining the key",
            anomaly.requests, anomaly.mean, anomaly.stddev, anomaly.tenant
        ),
        app.vault.now().rfc3339(),
    );
    app.alerts.raise(app, rid, alert).await;
}

/// Raises `id_enumeration`: a tenant asked for many ids it does not have in one
/// minute — guessing or replaying other tenants' document, session or trace ids.
pub async fn raise_id_enumeration(app: &Services, rid: &RequestId, tenant: &TenantId) {
    let alert = new_alert(
        AlertKind::IdEnumeration,
        Severity::Warning,
        Some(tenant),
        format!(
            "this tenant looked up {} or more ids it does not have within a minute (each answered 404, \
             exactly like a missing id); this is how cross-tenant id guessing looks. The tenant's log names \
             the key and ids: run `bulkhead incident report --tenant {tenant}` and consider quarantining the key",
            app.alerts.not_found_threshold()
        ),
        app.vault.now().rfc3339(),
    );
    app.alerts.raise(app, rid, alert).await;
}

/// Acknowledges an alert for `actor` and logs `alert.acknowledged` in the operator
/// log. Shared by `POST /admin/v1/alerts/{id}/ack` and the dashboard, so both
/// leave the same entry. Idempotent: acknowledging twice logs once.
pub async fn acknowledge(
    app: &Services,
    rid: &RequestId,
    id: &str,
    actor: &str,
) -> AppResult<Alert> {
    let Some((alert, changed)) = app
        .alerts
        .mark_acknowledged(id, actor, app.vault.now().rfc3339())
    else {
        return Err(AppError::NotFound);
    };
    if changed {
        let mut trail = Trail::new(app, EventKind::AlertAcknowledged, actor.to_owned(), rid)
            .subject(Subject::new("alert", &*alert.id))
            .attr("alert_kind", Attr::Text(alert.kind.as_str().into()));
        if let Some(t) = &alert.tenant {
            trail = trail.about_tenant(t);
        }
        trail.record(LogId::Operator).await?;
        tracing::info!(alert = %alert.id, actor, "alert acknowledged");
    }
    Ok(alert)
}

pub fn new_alert(
    kind: AlertKind,
    severity: Severity,
    tenant: Option<&TenantId>,
    summary: String,
    now: String,
) -> Alert {
    let bytes: [u8; 12] = bulkhead_crypto::random_array().unwrap_or([0; 12]);
    Alert {
        id: format!("al_{}", bulkhead_types::hex_lower(&bytes)),
        kind,
        severity,
        tenant: tenant.cloned(),
        created_at: now,
        summary,
        related: Vec::new(),
        acknowledged_by: None,
        acknowledged_at: None,
        repeats: 0,
        last_seen_at: None,
        dedupe_key: String::new(),
    }
}

/// Sends queued alerts to the webhook, each with up to four attempts (1, 2, 4 s
/// apart); a delivery that still fails is logged and dropped.
async fn deliver(
    url: String,
    secret: Option<zeroize::Zeroizing<String>>,
    queue: Arc<WebhookQueue>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the alert webhook client could not be built; alerts go to the log only");
            return;
        }
    };
    while let Some(body) = queue.next().await {
        let signature = secret.as_ref().map(|s| {
            let mac = bulkhead_crypto::hmac_sha256(s.as_bytes(), &body);
            format!("sha256={}", bulkhead_types::hex_lower(&mac))
        });
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=4 {
            let mut req = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(sig) = &signature {
                req = req.header("x-bulkhead-signature", sig);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => break,
                outcome => {
                    let why = match outcome {
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) => e.to_string(),
                    };
                    if attempt == 4 {
                        tracing::warn!(error = %why, "alert webhook delivery failed 4 times; dropped (the alert is in the log)");
                    } else {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(i: u8) -> TenantId {
        TenantId::from_random([i; 12])
    }

    #[test]
    fn one_tenants_flood_of_deliveries_drops_only_its_own_and_waits_its_turn() {
        let q = WebhookQueue::default();
        let (noisy, quiet) = (tenant(1), tenant(2));
        let accepted = (0..TENANT_QUEUE_MAX + 50)
            .filter(|i| q.push(Some(&noisy), vec![1, *i as u8]))
            .count();
        assert_eq!(
            accepted, TENANT_QUEUE_MAX,
            "the noisy tenant's queue is bounded"
        );
        assert!(
            q.push(Some(&quiet), vec![2]),
            "the quiet tenant still queues"
        );
        assert!(q.push(None, vec![3]), "so do the server's own alerts");
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|b| b[0]).collect();
        assert_eq!(order.len(), TENANT_QUEUE_MAX + 2);
        assert_eq!(
            &order[..4],
            &[1, 2, 3, 1],
            "served round-robin, not in arrival order"
        );
        assert!(q.pop().is_none());
    }

    #[test]
    fn the_whole_queue_is_bounded_too() {
        let q = WebhookQueue::default();
        let mut accepted = 0;
        for i in 0..=(QUEUE_MAX / TENANT_QUEUE_MAX) as u8 {
            for _ in 0..TENANT_QUEUE_MAX {
                accepted += usize::from(q.push(Some(&tenant(i)), vec![i]));
            }
        }
        assert_eq!(accepted, QUEUE_MAX);
    }

    #[test]
    fn an_identical_alert_within_the_window_is_a_repeat_until_acknowledged() {
        let alerts = Alerts::new();
        let raise = |summary: &str, key: &str, now: i64| {
            let mut a = new_alert(
                AlertKind::CrossTenantLeak,
                Severity::Critical,
                Some(&tenant(1)),
                summary.into(),
                format!("t{now}"),
            );
            a.dedupe_key = key.into();
            let repeat = alerts.repeat(&a, now);
            if !repeat {
                alerts.recent.lock().unwrap().push_back(a);
            }
            repeat
        };
        assert!(!raise("first", "owner-a", 0));
        assert!(
            raise("again", "owner-a", 1000),
            "same kind, tenant and owners"
        );
        assert!(
            !raise("other owner", "owner-b", 2000),
            "another owner is another alert"
        );
        let kept = alerts.recent(10);
        let first = kept.iter().find(|a| a.summary == "first").unwrap();
        assert_eq!(
            (first.repeats, first.last_seen_at.as_deref()),
            (1, Some("t1000"))
        );
        assert!(
            !raise("later", "owner-a", DEDUPE_WINDOW_MS + 1),
            "after the window: new"
        );
        let id = alerts.recent(1)[0].id.clone();
        alerts.mark_acknowledged(&id, "admin", "now".into());
        assert!(
            !raise("after ack", "owner-a", DEDUPE_WINDOW_MS + 2),
            "an acknowledged alert is not counted on: it is raised anew"
        );
    }
}
