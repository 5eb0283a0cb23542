//! PLACEHOLDER — the integrator replaces this file at merge with the real impact
//! assessment (issue: incident response). The dashboard's incident page
//! (`/dashboard/tenants/{id}/incident?from=&to=`) depends only on the signature
//! below and on `ImpactReport: Serialize`: it renders the report generically from
//! `serde_json::to_value(&report)`, so any shape the real report takes shows up.

use bulkhead_types::{TenantId, UnixMillis};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// The impact of an incident on one tenant in a time window. Placeholder: the
/// real report (what was read, by whom, from the traces and the log) replaces it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImpactReport {}

/// The impact report for `tenant` between `from` and `to`. Placeholder: returns
/// an empty report.
pub async fn impact_report(
    state: &AppState,
    tenant: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<ImpactReport, ApiError> {
    let _ = (state, tenant, from, to);
    Ok(ImpactReport {})
}
