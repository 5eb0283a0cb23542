//! One audit event on its way into a log, and the id of the request that
//! caused it.
//!
//! Appends are awaited: a read's content is released only after its event is
//! durable, and if the event cannot be written the call fails — an unlogged
//! read is worse than a refused one (invariant 4).

use bulkhead_audit::{Attr, Outcome, Subject};
use bulkhead_ledger::event::AuditEvent;
use bulkhead_types::{LogId, TenantId};
use bulkhead_vault::{TenantCtx, VaultError};

use crate::error::{AppError, AppResult};
use crate::kinds::EventKind;
use crate::services::Services;

/// The id of a request, as sent back in `x-request-id` and written into every
/// audit event the request causes. Never taken from the client, so a client
/// cannot make two requests look like one in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random id (`req_` and 24 hex digits).
    pub fn generate() -> Self {
        let bytes: [u8; 12] = bulkhead_crypto::random_array().unwrap_or([0; 12]);
        Self(format!("req_{}", bulkhead_types::hex_lower(&bytes)))
    }

    /// The id of work the server does by itself (`retention-sweep`, …).
    pub fn internal(name: &str) -> Self {
        Self(name.to_owned())
    }
}

/// One event on its way into a log.
#[derive(Debug)]
pub struct Trail<'a> {
    app: &'a Services,
    event: AuditEvent,
}

impl<'a> Trail<'a> {
    /// An event by a tenant's key.
    pub fn tenant(app: &'a Services, ctx: &TenantCtx, kind: EventKind, rid: &RequestId) -> Self {
        Self::new(app, kind, format!("key:{}", ctx.key_id()), rid)
    }

    /// An event by the operator.
    pub fn admin(app: &'a Services, kind: EventKind, rid: &RequestId) -> Self {
        Self::new(app, kind, "admin".into(), rid)
    }

    pub fn new(app: &'a Services, kind: EventKind, actor: String, rid: &RequestId) -> Self {
        let mut event = app.audit.event(kind.as_str(), actor, Outcome::Allowed);
        event.request_id = Some(rid.0.clone());
        Self { app, event }
    }

    pub fn subject(mut self, subject: Subject) -> Self {
        self.event.subjects.push(subject);
        self
    }

    pub fn attr(mut self, name: &str, value: Attr) -> Self {
        self.event.attrs.insert(name.to_owned(), value);
        self
    }

    pub fn about_tenant(mut self, tenant: &TenantId) -> Self {
        self.event.tenant = Some(tenant.to_string());
        self
    }

    pub fn denied(mut self, reason: &str) -> Self {
        self.event.outcome = Outcome::Denied;
        self.event.reason = Some(reason.to_owned());
        self
    }

    /// Appends to `log` and waits until it is durable.
    pub async fn record(self, log: LogId) -> AppResult<()> {
        self.watch_enumeration(&log);
        self.app
            .audit
            .record(&log, &self.event)
            .await
            .map(|_| ())
            .map_err(AppError::from)
    }

    /// A tenant's lookup of an id it does not have counts toward the
    /// `id_enumeration` alert; the alert is raised off the request path.
    fn watch_enumeration(&self, log: &LogId) {
        let LogId::Tenant(tenant) = log else { return };
        if self.event.reason.as_deref() != Some("not_found")
            || !self.event.actor.starts_with("key:")
        {
            return;
        }
        if self.app.alerts.not_found(tenant, self.app.vault.now().0) {
            let app = self.app.clone();
            let tenant = tenant.clone();
            let rid = RequestId(self.event.request_id.clone().unwrap_or_default());
            tokio::spawn(async move {
                crate::alerts::raise_id_enumeration(&app, &rid, &tenant).await;
            });
        }
    }

    /// The event as it will be logged.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// The leaf hash the event will have in its log.
    pub fn leaf_hash(&self) -> bulkhead_ledger::Hash {
        self.event.leaf_hash()
    }

    /// Appends to `log` with `records` in the same transaction (see
    /// `Audit::record_with`), waits until durable, and returns the entry's index.
    pub async fn record_with(
        self,
        log: LogId,
        records: Vec<bulkhead_vault::NewSealed>,
    ) -> AppResult<u64> {
        self.app
            .audit
            .record_with(&log, &self.event, records)
            .await
            .map(|entry| entry.index)
            .map_err(AppError::from)
    }

    /// Appends to the operator log, and to the tenant's own log when the action
    /// concerns one tenant, so the tenant's auditor sees it too.
    pub async fn record_admin(self, tenant: Option<&TenantId>) -> AppResult<()> {
        let Some(tenant) = tenant else {
            return self.record(LogId::Operator).await;
        };
        let event = {
            let mut e = self.event.clone();
            e.tenant = Some(tenant.to_string());
            e
        };
        let app = self.app;
        app.audit.record(&LogId::Operator, &event).await?;
        app.audit
            .record(&LogId::Tenant(tenant.clone()), &event)
            .await
            .map(|_| ())
            .map_err(AppError::from)
    }
}

/// The reason class of a vault failure, for a denied event; `None` if the failure
/// is not a denial (a broken store is not something the caller was refused).
pub fn denial_reason(e: &VaultError) -> Option<&'static str> {
    match e {
        VaultError::NotFound => Some("not_found"),
        VaultError::Conflict => Some("conflict"),
        _ => None,
    }
}
