//! "Verify now": an independent check of one audit log, as an auditor would make
//! it, from what is stored.
//!
//! 1. Take the latest signed checkpoint and open it with the server's public key
//!    (Ed25519 signature, origin of this log).
//! 2. Recompute the tree root from the stored leaf hashes (not from the stored
//!    interior tiles the server answers proofs from) and compare it with the
//!    checkpoint's root.
//! 3. Prove the checkpoint consistent with the one this dashboard last verified
//!    for the log (a rewrite or rollback of history in between fails here).
//!
//! Bounded: logs above `VERIFY_LEAVES_MAX` entries are refused here (the offline
//! `bulkhead audit verify` handles any size), leaf hashes are read in pages, and
//! the hashing runs on the blocking pool.

use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_ledger::{Hash, b64};
use bulkhead_types::LogId;

use crate::AppState;

/// The most entries one click recomputes (about a second of hashing).
pub const VERIFY_LEAVES_MAX: u64 = 2_000_000;

/// The outcome of one verification, kept per log for the next one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyResult {
    /// When it ran (RFC 3339).
    pub at: String,
    /// The checkpoint size it verified (0 if it failed before reading one).
    pub size: u64,
    /// The verified root, base64 (anchor for the next consistency check).
    pub root: Option<String>,
    /// `None` when everything held; otherwise why it failed, for a person.
    pub failure: Option<String>,
    /// Whether a consistency proof against the previous verification was checked.
    pub consistent_with: Option<u64>,
    #[serde(skip)]
    root_hash: Option<Hash>,
}

impl VerifyResult {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Verifies `log`; `previous` is the last result the dashboard kept for it.
pub async fn verify(
    state: &AppState,
    log: &LogId,
    previous: Option<&VerifyResult>,
) -> VerifyResult {
    let at = state.vault.now().rfc3339();
    match run(state, log, previous).await {
        Ok((cp, consistent_with)) => VerifyResult {
            at,
            size: cp.size,
            root: Some(b64(&cp.root)),
            failure: None,
            consistent_with,
            root_hash: Some(cp.root),
        },
        Err((size, why)) => VerifyResult {
            at,
            size,
            root: None,
            failure: Some(why),
            consistent_with: None,
            // A failed run is no anchor: keep the last good one's.
            root_hash: None,
        }
        .keep_anchor(previous),
    }
}

impl VerifyResult {
    /// A failed result still carries the last verified size and root, so the
    /// check after a failure is against what was last known good.
    fn keep_anchor(mut self, previous: Option<&VerifyResult>) -> Self {
        if let Some(p) = previous.filter(|p| p.root_hash.is_some()) {
            self.root_hash = p.root_hash;
            self.consistent_with = Some(p.size);
        }
        self
    }

    fn anchor(&self) -> Option<(u64, Hash)> {
        match (self.root_hash, self.failure.is_none()) {
            (Some(root), true) => Some((self.size, root)),
            (Some(root), false) => self.consistent_with.map(|size| (size, root)),
            _ => None,
        }
    }
}

async fn run(
    state: &AppState,
    log: &LogId,
    previous: Option<&VerifyResult>,
) -> Result<(Checkpoint, Option<u64>), (u64, String)> {
    let signed = state
        .audit
        .checkpoint(log)
        .await
        .map_err(|e| (0, format!("no checkpoint could be read: {e}")))?;
    let verifier = NoteVerifier::from_vkey(&state.audit.vkey())
        .map_err(|e| (0, format!("the server's public key is unusable: {e}")))?;
    let cp = Checkpoint::open(&signed.note, &verifier)
        .map_err(|e| (0, format!("the checkpoint signature does not verify: {e}")))?;
    let size = cp.size;
    if cp.origin != state.audit.origin(log) {
        return Err((size, "the checkpoint names another log".into()));
    }
    if size > VERIFY_LEAVES_MAX {
        return Err((
            size,
            format!(
                "the log has {size} entries, more than the dashboard recomputes ({VERIFY_LEAVES_MAX}); \
                 run `bulkhead audit verify` on an export"
            ),
        ));
    }
    let root = crate::evidence::recompute_root(state, log, size)
        .await
        .map_err(|e| (size, e))?;
    if root != cp.root {
        return Err((
            size,
            "the root recomputed from the stored entries differs from the signed checkpoint's"
                .into(),
        ));
    }
    let Some((old, old_root)) = previous.and_then(VerifyResult::anchor) else {
        return Ok((cp, None));
    };
    if old > size {
        return Err((
            size,
            format!("the log shrank from {old} entries (verified earlier) to {size}: a rollback"),
        ));
    }
    if old == 0 {
        return Ok((cp, None));
    }
    let proof = state
        .audit
        .consistency_proof(log, old, size)
        .await
        .map_err(|e| (size, format!("no consistency proof from {old}: {e}")))?;
    bulkhead_ledger::proof::verify_consistency(old, size, &proof, &old_root, &cp.root).map_err(
        |e| {
            (
                size,
                format!("not consistent with the checkpoint of size {old} verified earlier: {e}"),
            )
        },
    )?;
    Ok((cp, Some(old)))
}
