//! Alerts: boundary violations raised where they are detected, kept (bounded) for
//! `GET /admin/v1/alerts`, written to the operator log, logged, and sent to a
//! webhook signed with HMAC-SHA256.
//!
//! Raised today: `cross_tenant_leak` (an answer carried another tenant's canary or
//! fingerprints; it was blocked) and `auth_failure_burst` (refused credentials past
//! a threshold in a one-minute window). An alert carries ids, kinds and counts,
//! never content. Must never: block a request on the webhook (its queue is bounded
//! and a full queue drops with a warning and a metric).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{LogId, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

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
/// Webhook deliveries waiting at most.
const QUEUE_MAX: usize = 1000;

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

#[derive(Debug)]
pub struct Alerts {
    recent: Mutex<VecDeque<Alert>>,
    webhook: Option<mpsc::Sender<Vec<u8>>>,
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
            let (tx, rx) = mpsc::channel(QUEUE_MAX);
            let secret = settings.webhook_secret.map(zeroize::Zeroizing::new);
            tokio::spawn(deliver(url, secret, rx));
            tx
        });
        Self {
            recent: Mutex::new(VecDeque::new()),
            webhook,
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

    /// Raises an alert: kept, logged, in the operator log, sent to the webhook.
    pub async fn raise(&self, app: &Services, rid: &RequestId, alert: Alert) {
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
        if let Some(tx) = &self.webhook {
            let body = serde_json::to_vec(&alert).unwrap_or_default();
            if tx.try_send(body).is_err() {
                app.telemetry.alert_dropped();
                tracing::warn!(alert = %alert.id, "the alert webhook queue is full; this alert was not delivered (it is in the log and at /admin/v1/alerts)");
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_MAX {
            recent.pop_front();
        }
        recent.push_back(alert);
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
    }
}

/// Sends queued alerts to the webhook, each with up to four attempts (1, 2, 4 s
/// apart); a delivery that still fails is logged and dropped.
async fn deliver(
    url: String,
    secret: Option<zeroize::Zeroizing<String>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
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
    while let Some(body) = rx.recv().await {
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
