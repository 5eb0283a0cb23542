//! Attribution: which other tenants' data a text the requester itself supplied
//! carries. A model's answer for tenant B that repeats tenant A's canary is a
//! leak of A's context only if the canary did not come in through B's own input
//! (its prompt, tool results, retrieved documents): A can read its own canary
//! and plant it there to frame B. The caller still blocks the answer; what this
//! decides is whose alarm it is.
//!
//! The input is read at least as hard as the answer is, so a canary the model
//! could have turned into a match was in the input in a form found here:
//! written out (any case), inside any decoded view the answer's scan makes
//! (base64, hex, escapes, rot13, reversal), and spelled out with separators
//! between its characters, forwards or backwards, plain or rot13 (only its
//! letters and digits kept). Fingerprint evidence is attributed by a scan of the
//! input for the requester (`Guard::scan_parts`): the owners it finds there.
//! Everything here is ownership-blind for canaries: what the requester holds in
//! the index does not hide a canary it supplied.

use std::collections::BTreeSet;

use bulkhead_types::TenantId;

use crate::canary::{CanarySet, stripped};
use crate::views::{self, EXPANSION_MAX, rot13};

/// The tenants other than `tenant` whose canaries `texts` carry, in any of the
/// forms of the module docs.
pub(crate) fn canary_owners(
    set: &CanarySet,
    tenant: &TenantId,
    texts: &[&str],
) -> BTreeSet<TenantId> {
    let mut found = BTreeSet::new();
    if set.ac.is_none() {
        return found;
    }
    let mut hit = |owner: &TenantId| {
        if owner != tenant {
            found.insert(owner.clone());
        }
    };
    for text in texts {
        let mut budget = text.len().saturating_mul(EXPANSION_MAX);
        let mut decoded = Vec::new();
        views::views(text, 0, &mut budget, &mut decoded);
        let forms = std::iter::once(*text).chain(decoded.iter().map(|v| v.text.as_str()));
        for form in forms {
            exact(set, form, &mut hit);
            loose(set, form, &mut hit);
        }
    }
    found
}

fn exact(set: &CanarySet, text: &str, hit: &mut impl FnMut(&TenantId)) {
    if let Some(ac) = &set.ac {
        for m in ac.find_iter(text) {
            hit(&set.owners[m.pattern().as_usize()]);
        }
    }
}

/// The text's letters and digits, forwards and backwards, plain and rot13.
fn loose(set: &CanarySet, text: &str, hit: &mut impl FnMut(&TenantId)) {
    let Some(ac) = &set.loose else {
        return;
    };
    let forward = stripped(text);
    let backward: String = forward.chars().rev().collect();
    for form in [rot13(&forward), rot13(&backward), forward, backward] {
        for m in ac.find_iter(&form) {
            hit(&set.loose_owners[m.pattern().as_usize()]);
        }
    }
}
