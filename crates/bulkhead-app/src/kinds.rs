//! Closed sets: every audit event kind, trace outcome, alert kind and severity,
//! and incident status the server writes. Each has one explicit name (`as_str`,
//! and the same name given to serde), so what is logged, stored and hashed does
//! not depend on a Rust identifier or on `Debug`.

use serde::{Deserialize, Serialize};

/// The kind of an audit event: every kind the server appends to a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "admin.auth")]
    AdminAuth,
    /// A read through the admin plane (bounded: `reads.rs`).
    #[serde(rename = "admin.read")]
    AdminRead,
    #[serde(rename = "alert")]
    Alert,
    #[serde(rename = "alert.acknowledged")]
    AlertAcknowledged,
    /// A key's reads of its tenant's own audit log (bounded: `reads.rs`).
    #[serde(rename = "audit.read")]
    AuditRead,
    #[serde(rename = "audit.verify")]
    AuditVerify,
    #[serde(rename = "auth")]
    Auth,
    #[serde(rename = "compliance.report")]
    ComplianceReport,
    #[serde(rename = "config.approve")]
    ConfigApprove,
    #[serde(rename = "dashboard.login")]
    DashboardLogin,
    #[serde(rename = "dashboard.logout")]
    DashboardLogout,
    #[serde(rename = "document.create")]
    DocumentCreate,
    #[serde(rename = "document.delete")]
    DocumentDelete,
    #[serde(rename = "document.list")]
    DocumentList,
    #[serde(rename = "document.read")]
    DocumentRead,
    #[serde(rename = "guard.leak")]
    GuardLeak,
    #[serde(rename = "guard.scan")]
    GuardScan,
    #[serde(rename = "guard.screen")]
    GuardScreen,
    #[serde(rename = "incident.close")]
    IncidentClose,
    #[serde(rename = "incident.open")]
    IncidentOpen,
    #[serde(rename = "incident.report")]
    IncidentReport,
    #[serde(rename = "key.issue")]
    KeyIssue,
    #[serde(rename = "key.quarantine")]
    KeyQuarantine,
    #[serde(rename = "key.release")]
    KeyRelease,
    #[serde(rename = "key.revoke")]
    KeyRevoke,
    #[serde(rename = "model.call")]
    ModelCall,
    #[serde(rename = "model.call.start")]
    ModelCallStart,
    #[serde(rename = "retention.expired")]
    RetentionExpired,
    #[serde(rename = "retention.sweep")]
    RetentionSweep,
    #[serde(rename = "search")]
    Search,
    #[serde(rename = "session.create")]
    SessionCreate,
    #[serde(rename = "session.read")]
    SessionRead,
    #[serde(rename = "session.sanitize")]
    SessionSanitize,
    #[serde(rename = "tenant.create")]
    TenantCreate,
    #[serde(rename = "tenant.erase")]
    TenantErase,
    #[serde(rename = "tenant.export")]
    TenantExport,
    #[serde(rename = "tenant.models")]
    TenantModels,
    #[serde(rename = "tenant.policy")]
    TenantPolicy,
    #[serde(rename = "tenant.quotas")]
    TenantQuotas,
    #[serde(rename = "tenant.quarantine")]
    TenantQuarantine,
    #[serde(rename = "tenant.release")]
    TenantRelease,
    #[serde(rename = "tenant.rotate_key")]
    TenantRotateKey,
    #[serde(rename = "trace.read")]
    TraceRead,
}

impl EventKind {
    /// Every variant, in declaration order.
    pub const ALL: &[EventKind] = &[
        EventKind::AdminAuth,
        EventKind::AdminRead,
        EventKind::Alert,
        EventKind::AlertAcknowledged,
        EventKind::AuditRead,
        EventKind::AuditVerify,
        EventKind::Auth,
        EventKind::ComplianceReport,
        EventKind::ConfigApprove,
        EventKind::DashboardLogin,
        EventKind::DashboardLogout,
        EventKind::DocumentCreate,
        EventKind::DocumentDelete,
        EventKind::DocumentList,
        EventKind::DocumentRead,
        EventKind::GuardLeak,
        EventKind::GuardScan,
        EventKind::GuardScreen,
        EventKind::IncidentClose,
        EventKind::IncidentOpen,
        EventKind::IncidentReport,
        EventKind::KeyIssue,
        EventKind::KeyQuarantine,
        EventKind::KeyRelease,
        EventKind::KeyRevoke,
        EventKind::ModelCall,
        EventKind::ModelCallStart,
        EventKind::RetentionExpired,
        EventKind::RetentionSweep,
        EventKind::Search,
        EventKind::SessionCreate,
        EventKind::SessionRead,
        EventKind::SessionSanitize,
        EventKind::TenantCreate,
        EventKind::TenantErase,
        EventKind::TenantExport,
        EventKind::TenantModels,
        EventKind::TenantPolicy,
        EventKind::TenantQuotas,
        EventKind::TenantQuarantine,
        EventKind::TenantRelease,
        EventKind::TenantRotateKey,
        EventKind::TraceRead,
    ];

    /// The name written to logs, records and the wire; never changes with a
    /// variant's Rust name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AdminAuth => "admin.auth",
            Self::AdminRead => "admin.read",
            Self::Alert => "alert",
            Self::AlertAcknowledged => "alert.acknowledged",
            Self::AuditRead => "audit.read",
            Self::AuditVerify => "audit.verify",
            Self::Auth => "auth",
            Self::ComplianceReport => "compliance.report",
            Self::ConfigApprove => "config.approve",
            Self::DashboardLogin => "dashboard.login",
            Self::DashboardLogout => "dashboard.logout",
            Self::DocumentCreate => "document.create",
            Self::DocumentDelete => "document.delete",
            Self::DocumentList => "document.list",
            Self::DocumentRead => "document.read",
            Self::GuardLeak => "guard.leak",
            Self::GuardScan => "guard.scan",
            Self::GuardScreen => "guard.screen",
            Self::IncidentClose => "incident.close",
            Self::IncidentOpen => "incident.open",
            Self::IncidentReport => "incident.report",
            Self::KeyIssue => "key.issue",
            Self::KeyQuarantine => "key.quarantine",
            Self::KeyRelease => "key.release",
            Self::KeyRevoke => "key.revoke",
            Self::ModelCall => "model.call",
            Self::ModelCallStart => "model.call.start",
            Self::RetentionExpired => "retention.expired",
            Self::RetentionSweep => "retention.sweep",
            Self::Search => "search",
            Self::SessionCreate => "session.create",
            Self::SessionRead => "session.read",
            Self::SessionSanitize => "session.sanitize",
            Self::TenantCreate => "tenant.create",
            Self::TenantErase => "tenant.erase",
            Self::TenantExport => "tenant.export",
            Self::TenantModels => "tenant.models",
            Self::TenantPolicy => "tenant.policy",
            Self::TenantQuotas => "tenant.quotas",
            Self::TenantQuarantine => "tenant.quarantine",
            Self::TenantRelease => "tenant.release",
            Self::TenantRotateKey => "tenant.rotate_key",
            Self::TraceRead => "trace.read",
        }
    }

    /// The variant named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a model call ended, as its trace records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TraceOutcome {
    /// The call has not finished (never stored).
    #[serde(rename = "pending")]
    Pending,
    /// The answer was released unchanged.
    #[serde(rename = "ok")]
    Ok,
    /// The answer was released with findings replaced.
    #[serde(rename = "redacted")]
    Redacted,
    /// The answer was withheld.
    #[serde(rename = "blocked")]
    Blocked,
    /// The user's input was refused before any model saw it.
    #[serde(rename = "refused_input")]
    RefusedInput,
    /// The upstream did not answer in time.
    #[serde(rename = "upstream_timeout")]
    UpstreamTimeout,
    /// The upstream answered with an error status.
    #[serde(rename = "upstream_status")]
    UpstreamStatus,
    /// The upstream's answer could not be read.
    #[serde(rename = "upstream_malformed")]
    UpstreamMalformed,
    /// The upstream's stream ended early.
    #[serde(rename = "upstream_cut")]
    UpstreamCut,
    /// The upstream could not be reached.
    #[serde(rename = "upstream_unreachable")]
    UpstreamUnreachable,
    /// The upstream's answer was over the size limit.
    #[serde(rename = "upstream_too_large")]
    UpstreamTooLarge,
    /// The client went away during a stream.
    #[serde(rename = "client_disconnected")]
    ClientDisconnected,
}

impl TraceOutcome {
    /// Every variant, in declaration order.
    pub const ALL: &[TraceOutcome] = &[
        TraceOutcome::Pending,
        TraceOutcome::Ok,
        TraceOutcome::Redacted,
        TraceOutcome::Blocked,
        TraceOutcome::RefusedInput,
        TraceOutcome::UpstreamTimeout,
        TraceOutcome::UpstreamStatus,
        TraceOutcome::UpstreamMalformed,
        TraceOutcome::UpstreamCut,
        TraceOutcome::UpstreamUnreachable,
        TraceOutcome::UpstreamTooLarge,
        TraceOutcome::ClientDisconnected,
    ];

    /// The name written to logs, records and the wire; never changes with a
    /// variant's Rust name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ok => "ok",
            Self::Redacted => "redacted",
            Self::Blocked => "blocked",
            Self::RefusedInput => "refused_input",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamStatus => "upstream_status",
            Self::UpstreamMalformed => "upstream_malformed",
            Self::UpstreamCut => "upstream_cut",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTooLarge => "upstream_too_large",
            Self::ClientDisconnected => "client_disconnected",
        }
    }

    /// The variant named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for TraceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertKind {
    /// An answer carried another tenant's canary or fingerprints; it was blocked.
    #[serde(rename = "cross_tenant_leak")]
    CrossTenantLeak,
    /// An answer repeated another tenant's data that the requester's own input
    /// carried; it was blocked, nothing was contained (framing, or data that
    /// reached the requester outside Bulkhead).
    #[serde(rename = "foreign_data_supplied")]
    ForeignDataSupplied,
    /// Refused credentials past the threshold in one minute.
    #[serde(rename = "auth_failure_burst")]
    AuthFailureBurst,
    /// A tenant looked up many ids it does not have in one minute.
    #[serde(rename = "id_enumeration")]
    IdEnumeration,
    /// A tenant's requests this minute passed its baseline.
    #[serde(rename = "traffic_anomaly")]
    TrafficAnomaly,
    /// The effective isolation policy differs from the approved baseline.
    #[serde(rename = "config_drift")]
    ConfigDrift,
    /// A replica could not reload a tenant's guard state from the shared store
    /// several passes in a row; it scans with an older set meanwhile.
    #[serde(rename = "guard_sync_failing")]
    GuardSyncFailing,
}

impl AlertKind {
    /// Every variant, in declaration order.
    pub const ALL: &[AlertKind] = &[
        AlertKind::CrossTenantLeak,
        AlertKind::ForeignDataSupplied,
        AlertKind::AuthFailureBurst,
        AlertKind::IdEnumeration,
        AlertKind::TrafficAnomaly,
        AlertKind::ConfigDrift,
        AlertKind::GuardSyncFailing,
    ];

    /// The name written to logs, records and the wire; never changes with a
    /// variant's Rust name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CrossTenantLeak => "cross_tenant_leak",
            Self::ForeignDataSupplied => "foreign_data_supplied",
            Self::AuthFailureBurst => "auth_failure_burst",
            Self::IdEnumeration => "id_enumeration",
            Self::TrafficAnomaly => "traffic_anomaly",
            Self::ConfigDrift => "config_drift",
            Self::GuardSyncFailing => "guard_sync_failing",
        }
    }

    /// The variant named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Someone should look now.
    #[serde(rename = "critical")]
    Critical,
    /// Someone should look soon.
    #[serde(rename = "warning")]
    Warning,
}

impl Severity {
    /// Every variant, in declaration order.
    pub const ALL: &[Severity] = &[Severity::Critical, Severity::Warning];

    /// The name written to logs, records and the wire; never changes with a
    /// variant's Rust name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
        }
    }

    /// The variant named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an investigation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IncidentStatus {
    /// Being investigated.
    #[serde(rename = "open")]
    Open,
    /// Closed with a resolution.
    #[serde(rename = "closed")]
    Closed,
}

impl IncidentStatus {
    /// Every variant, in declaration order.
    pub const ALL: &[IncidentStatus] = &[IncidentStatus::Open, IncidentStatus::Closed];

    /// The name written to logs, records and the wire; never changes with a
    /// variant's Rust name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    /// The variant named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<&str> for TraceOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<&str> for AlertKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<&str> for Severity {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<&str> for IncidentStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` and serde give the same name, and every name parses back.
    fn check<T: Copy + PartialEq + std::fmt::Debug + Serialize + for<'de> Deserialize<'de>>(
        all: &[T],
        name: impl Fn(T) -> &'static str,
    ) {
        let mut seen = std::collections::HashSet::new();
        for &k in all {
            assert!(seen.insert(name(k)), "{k:?} has a duplicate name");
            let parsed: T = serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(name(k)))
            .unwrap();
            assert_eq!(parsed, k, "{:?}", name(k));
        }
    }

    #[test]
    fn names_are_explicit_and_round_trip() {
        check(EventKind::ALL, EventKind::as_str);
        check(TraceOutcome::ALL, TraceOutcome::as_str);
        check(AlertKind::ALL, AlertKind::as_str);
        check(Severity::ALL, Severity::as_str);
        check(IncidentStatus::ALL, IncidentStatus::as_str);
        assert_eq!(EventKind::TenantRotateKey.as_str(), "tenant.rotate_key");
        assert_eq!(EventKind::parse("model.call"), Some(EventKind::ModelCall));
        assert_eq!(TraceOutcome::RefusedInput.as_str(), "refused_input");
    }
}
