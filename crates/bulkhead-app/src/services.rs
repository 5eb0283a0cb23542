//! The application's services, as one cheap-to-clone handle: what every
//! application call can reach. The HTTP edge holds one of these plus its own
//! state (metrics, limits, the dashboard's sessions) and hands it to the calls.

use std::sync::Arc;

use bulkhead_audit::Audit;
use bulkhead_vault::Vault;

use crate::alerts::Alerts;
use crate::gateway::GatewayState;
use crate::guard::GuardState;
use crate::incident::Incidents;
use crate::packs::Packs;
use crate::retention::SweepHistory;
use crate::retrieval::Retrieval;
use crate::telemetry::{NoTelemetry, Telemetry};
use crate::traffic::Traffic;

/// Everything an application call can reach. Each field is shared (`Arc`), so
/// a clone is a handful of reference-count increments.
#[derive(Clone, Debug)]
pub struct Services {
    pub vault: Arc<Vault>,
    pub audit: Arc<Audit>,
    /// The compliance packs tenants choose from.
    pub packs: Arc<Packs>,
    pub alerts: Arc<Alerts>,
    /// Chunking, embedding and the hot indexes.
    pub retrieval: Arc<Retrieval>,
    /// The output guard and its per-tenant evidence.
    pub guard: Arc<GuardState>,
    /// The model gateway: upstreams, limits and switches of every chat call.
    pub gateway: Arc<GatewayState>,
    /// Open and closed investigations.
    pub incidents: Arc<Incidents>,
    /// The retention sweeper's last run.
    pub sweeps: Arc<SweepHistory>,
    /// Per-tenant traffic and guard outcomes over the last 15 minutes.
    pub traffic: Arc<Traffic>,
    /// Quotas, rate limits and budgets of every tenant (also the vault's
    /// storage admission).
    pub quotas: Arc<crate::quota::Governor>,
    /// Where counters go (the HTTP edge's metrics).
    pub telemetry: Arc<dyn Telemetry>,
    /// The windows that bound the logging of reads (`reads.rs`).
    pub reads: Arc<crate::reads::ReadLog>,
    /// Test-only: isolation deliberately broken (`weakened.rs`).
    #[cfg(feature = "weakened-isolation-for-tests")]
    pub weakened: bool,
}

impl Services {
    /// Services over a vault, its audit logs, retrieval and the guard, with the
    /// built-in packs, alerts without a webhook and no telemetry; the `with_*`
    /// methods replace parts.
    pub fn new(
        vault: Arc<Vault>,
        audit: Arc<Audit>,
        retrieval: Arc<Retrieval>,
        guard: Arc<GuardState>,
    ) -> Self {
        let packs = Arc::new(Packs::builtin());
        let app = Self {
            quotas: crate::quota::Governor::install(&vault, Arc::clone(&packs)),
            gateway: Arc::new(GatewayState::without_upstreams(&vault)),
            vault,
            audit,
            packs,
            alerts: Arc::new(Alerts::new()),
            retrieval,
            guard,
            incidents: Arc::default(),
            sweeps: Arc::default(),
            traffic: Arc::new(Traffic::new()),
            telemetry: Arc::new(NoTelemetry),
            reads: Arc::default(),
            #[cfg(feature = "weakened-isolation-for-tests")]
            weakened: crate::weakened::enabled_from_env(),
        };
        // Test-only: the weakening applies to the built-in packs too.
        app.with_packs(Packs::builtin())
    }

    /// Drops what this process holds in memory of an erased tenant, besides the
    /// output guard (`GuardState::forget`, a sweep run off the runtime): cached
    /// data keys, the hot index, traffic series, alert windows and baseline,
    /// quota meters.
    /// Called by the erasure itself and, on a shared store, by the other
    /// replicas' next guard sync (`guard::sync_pass`).
    pub fn forget_tenant(&self, tenant: &bulkhead_types::TenantId) {
        self.vault.forget_cached_keys(tenant);
        self.retrieval.forget(tenant);
        self.traffic.forget(tenant.as_str());
        self.alerts.forget_tenant(tenant);
        self.quotas.forget(tenant);
        self.reads.forget_tenant(tenant);
    }

    pub fn with_alerts(self, alerts: Alerts) -> Self {
        Self {
            alerts: Arc::new(alerts),
            ..self
        }
    }

    /// These compliance packs (built-in plus the operator's).
    pub fn with_packs(self, packs: Packs) -> Self {
        #[cfg(feature = "weakened-isolation-for-tests")]
        let packs = if self.weakened {
            crate::weakened::disable_guard(packs)
        } else {
            packs
        };
        let packs = Arc::new(packs);
        self.quotas.set_packs(Arc::clone(&packs));
        Self { packs, ..self }
    }

    /// This model gateway (upstreams, limits).
    pub fn with_gateway(self, gateway: GatewayState) -> Self {
        Self {
            gateway: Arc::new(gateway),
            ..self
        }
    }

    pub fn with_telemetry(self, telemetry: Arc<dyn Telemetry>) -> Self {
        Self { telemetry, ..self }
    }
}
