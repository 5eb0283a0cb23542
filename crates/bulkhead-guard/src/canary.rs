//! Canary tokens: unguessable strings planted in a tenant's context. If one shows
//! up in a response for another tenant, that response carries the first tenant's
//! data. All tenants' canaries are matched at once with one Aho-Corasick automaton
//! (leftmost-longest, ASCII case-insensitive, since a model may change case),
//! rebuilt lazily after a change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use bulkhead_types::TenantId;

/// Prefix of generated canaries.
pub const CANARY_PREFIX: &str = "bhc_";
/// Canary length bounds, in bytes. The upper bound is part of the streaming
/// hold-back.
pub const CANARY_BYTES_MIN: usize = 12;
pub const CANARY_BYTES_MAX: usize = 64;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `bhc_` and 20 base32 characters: 100 random bits.
pub(crate) fn format_token(random: [u8; 13]) -> String {
    let mut bits: u128 = 0;
    for b in random {
        bits = (bits << 8) | u128::from(b);
    }
    let mut s = String::with_capacity(24);
    s.push_str(CANARY_PREFIX);
    for i in 0..20 {
        s.push(char::from(BASE32[((bits >> (5 * i)) & 31) as usize]));
    }
    s
}

/// Why a canary token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Length,
    Charset,
}

pub(crate) fn check_token(token: &str) -> Result<(), TokenProblem> {
    if !(CANARY_BYTES_MIN..=CANARY_BYTES_MAX).contains(&token.len()) {
        return Err(TokenProblem::Length);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenProblem::Charset);
    }
    Ok(())
}

/// An immutable snapshot that scans use.
#[derive(Debug, Default)]
pub(crate) struct CanarySet {
    pub(crate) ac: Option<AhoCorasick>,
    pub(crate) owners: Vec<TenantId>,
    /// The same tokens with only their letters (lowercased) and digits kept, for
    /// attribution (`attribution`): a token spelled out with separators between
    /// its characters reads as one of these once the text is stripped alike.
    /// Tokens with fewer than `LOOSE_CHARS_MIN` such characters are left out.
    pub(crate) loose: Option<AhoCorasick>,
    pub(crate) loose_owners: Vec<TenantId>,
}

/// Letters and digits a stripped token needs to be matched loosely: fewer could
/// turn up in ordinary text by chance.
pub(crate) const LOOSE_CHARS_MIN: usize = 12;

/// `text` with only its ASCII letters (lowercased) and digits.
pub(crate) fn stripped(text: &str) -> String {
    text.bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

#[derive(Debug, Default)]
struct Registry {
    by_tenant: BTreeMap<TenantId, Vec<String>>,
    /// Lowercased token → owner, to refuse one token for two tenants.
    by_token: HashMap<String, TenantId>,
    snapshot: Arc<CanarySet>,
    dirty: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Canaries {
    inner: RwLock<Registry>,
}

/// Why adding a canary failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddRefusal {
    TakenByOther,
    TooMany,
}

impl Canaries {
    pub(crate) fn add(
        &self,
        tenant: &TenantId,
        token: &str,
        per_tenant_max: usize,
    ) -> Result<bool, AddRefusal> {
        let mut r = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let lower = token.to_ascii_lowercase();
        if let Some(owner) = r.by_token.get(&lower) {
            return if owner == tenant {
                Ok(false)
            } else {
                Err(AddRefusal::TakenByOther)
            };
        }
        let list = r.by_tenant.entry(tenant.clone()).or_default();
        if list.len() >= per_tenant_max {
            return Err(AddRefusal::TooMany);
        }
        list.push(token.to_owned());
        r.by_token.insert(lower, tenant.clone());
        r.dirty = true;
        Ok(true)
    }

    /// Replaces the tenant's canaries with `tokens` in one step (a snapshot has
    /// the old set or the new one). Refused, with nothing changed, if a token
    /// belongs to another tenant or there are too many.
    pub(crate) fn replace_tenant(
        &self,
        tenant: &TenantId,
        tokens: &[String],
        per_tenant_max: usize,
    ) -> Result<(), AddRefusal> {
        let mut r = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<String> = Vec::with_capacity(tokens.len());
        let mut lowers = std::collections::HashSet::new();
        for token in tokens {
            let lower = token.to_ascii_lowercase();
            if r.by_token.get(&lower).is_some_and(|owner| owner != tenant) {
                return Err(AddRefusal::TakenByOther);
            }
            if lowers.insert(lower) {
                list.push(token.clone());
            }
        }
        if list.len() > per_tenant_max {
            return Err(AddRefusal::TooMany);
        }
        let old = r.by_tenant.remove(tenant).unwrap_or_default();
        if old == list {
            r.by_tenant.insert(tenant.clone(), old);
            return Ok(());
        }
        for t in &old {
            r.by_token.remove(&t.to_ascii_lowercase());
        }
        for (t, lower) in list.iter().map(|t| (t, t.to_ascii_lowercase())) {
            r.by_token.insert(lower, tenant.clone());
            debug_assert!(check_token(t).is_ok());
        }
        if !list.is_empty() {
            r.by_tenant.insert(tenant.clone(), list);
        }
        r.dirty = true;
        Ok(())
    }

    pub(crate) fn remove_tenant(&self, tenant: &TenantId) -> usize {
        let mut r = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let removed = r.by_tenant.remove(tenant).unwrap_or_default();
        for t in &removed {
            r.by_token.remove(&t.to_ascii_lowercase());
        }
        if !removed.is_empty() {
            r.dirty = true;
        }
        removed.len()
    }

    pub(crate) fn of(&self, tenant: &TenantId) -> Vec<String> {
        let r = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        r.by_tenant.get(tenant).cloned().unwrap_or_default()
    }

    pub(crate) fn count(&self) -> usize {
        let r = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        r.by_token.len()
    }

    /// The current automaton, rebuilt first if canaries changed since the last.
    pub(crate) fn snapshot(&self) -> Arc<CanarySet> {
        {
            let r = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if !r.dirty {
                return Arc::clone(&r.snapshot);
            }
        }
        let mut r = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if r.dirty {
            let mut patterns = Vec::with_capacity(r.by_token.len());
            let mut owners = Vec::with_capacity(r.by_token.len());
            for (tenant, tokens) in &r.by_tenant {
                for t in tokens {
                    patterns.push(t.clone());
                    owners.push(tenant.clone());
                }
            }
            let (mut loose, mut loose_owners) = (Vec::new(), Vec::new());
            for (t, owner) in patterns.iter().zip(&owners) {
                let s = stripped(t);
                if s.len() >= LOOSE_CHARS_MIN {
                    loose.push(s);
                    loose_owners.push(owner.clone());
                }
            }
            r.snapshot = Arc::new(CanarySet {
                ac: automaton(&patterns),
                owners,
                loose: automaton(&loose),
                loose_owners,
            });
            r.dirty = false;
        }
        Arc::clone(&r.snapshot)
    }
}

/// One leftmost-longest, ASCII case-insensitive automaton over `patterns`, or
/// none for no patterns.
fn automaton(patterns: &[String]) -> Option<AhoCorasick> {
    (!patterns.is_empty()).then(|| {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            // Tokens are validated to 12–64 printable ASCII bytes, far inside the
            // automaton's limits.
            .expect("canary automaton builds")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_format() {
        let t = format_token([0xa5; 13]);
        assert_eq!(t.len(), 24);
        assert!(t.starts_with(CANARY_PREFIX));
        assert!(t[4..].bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(t, format_token([0xa4; 13]));
        assert!(check_token(&t).is_ok());
        assert_eq!(check_token("short"), Err(TokenProblem::Length));
        assert_eq!(check_token("has a space in it"), Err(TokenProblem::Charset));
    }

    #[test]
    fn one_token_one_owner() {
        let c = Canaries::default();
        let a = TenantId::from_random([1; 12]);
        let b = TenantId::from_random([2; 12]);
        assert_eq!(c.add(&a, "bhc_aaaaaaaaaaaaaaaaaaaa", 4), Ok(true));
        assert_eq!(c.add(&a, "BHC_AAAAAAAAAAAAAAAAAAAA", 4), Ok(false));
        assert_eq!(
            c.add(&b, "bhc_aaaaaaaaaaaaaaaaaaaa", 4),
            Err(AddRefusal::TakenByOther)
        );
        let snap = c.snapshot();
        assert_eq!(snap.owners, vec![a.clone()]);
        assert_eq!(c.remove_tenant(&a), 1);
        assert!(c.snapshot().ac.is_none());
    }
}
