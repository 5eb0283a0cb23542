//! TEST-ONLY weakening of isolation, compiled in only with the cargo feature
//! `weakened-isolation-for-tests` and switched on only by the environment variable
//! `BULKHEAD_WEAKENED_ISOLATION_FOR_TESTS=1`. It exists so `bulkhead probe` can be
//! shown to see leaks: a probe that passes a server with holes proves nothing.
//!
//! When on, it (a) turns every output-guard detector off, so regurgitated foreign
//! context reaches the caller, and (b) makes `GET /v1/documents/{id}` fall back to
//! looking the id up across all tenants and opening it with the owner's key — the
//! forgotten tenant filter the threat model names. A normal build has none of
//! this: the module, the field and the fallbacks are all behind the feature.

use bulkhead_guard::{Action, DetectorActions};
use bulkhead_types::DocumentId;
use bulkhead_vault::{Document, Vault};

use crate::packs::Packs;

/// The environment variable that turns the weakening on (with the feature).
pub const ENV: &str = "BULKHEAD_WEAKENED_ISOLATION_FOR_TESTS";

/// Whether the weakening is on; says so as loudly as it can when it is.
pub fn enabled_from_env() -> bool {
    let on = std::env::var(ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if on {
        tracing::error!(
            "ISOLATION IS DELIBERATELY BROKEN ({ENV}=1): the output guard is off and \
             document reads ignore the tenant. This build is for testing `bulkhead probe` \
             only; never serve real data with it."
        );
    }
    on
}

/// Every pack's guard detectors switched off.
pub fn disable_guard(packs: Packs) -> Packs {
    packs.map_guard(|policy| policy.actions = DetectorActions::all(Action::Off))
}

/// The forgotten filter: the document with this id in any tenant, opened with its
/// owner's key. Bounded to 100 pages of tenants; it is a test fixture.
pub async fn document_anywhere(vault: &Vault, id: &DocumentId) -> Option<Document> {
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let (tenants, next) = vault.list_tenants(cursor.as_deref(), 100).await.ok()?;
        for tenant in tenants {
            if let Ok(docs) = vault.documents_of(&tenant.id).await
                && let Some(doc) = docs.into_iter().find(|d| &d.id == id)
            {
                return Some(doc);
            }
        }
        cursor = Some(next?);
    }
    None
}
