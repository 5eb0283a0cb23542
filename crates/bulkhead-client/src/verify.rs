//! Every client-side check of what a Bulkhead server proves: a checkpoint's
//! signature under a key the caller holds, an entry's inclusion, a log's
//! consistency with an older checkpoint, an impact report (each item against
//! its log's signed checkpoint) and an erasure receipt (offline; live with
//! [`receipt_still_held`]). The Merkle math is `bulkhead-ledger`'s.

use bulkhead_api::incident::ImpactReport;
use bulkhead_api::receipt::{ErasureReceipt, STATEMENT_FIELDS};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::{canonical_json, leaf_hash_of_json};
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_ledger::{Hash, b64, hash_from_b64, hex, sha256};

use crate::{Client, ClientError, Method};

/// Why a proof did not hold. Each message names what failed, for an operator.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("the {log} log's checkpoint signature does not verify")]
    Signature { log: String },
    #[error("the {log} log's checkpoint does not parse")]
    CheckpointParse { log: String },
    #[error("{log} entry {index}: no leaf hash")]
    LeafHash { log: String, index: u64 },
    #[error("{log} entry {index}: bad proof")]
    ProofEncoding { log: String, index: u64 },
    #[error(
        "{log} entry {index}: its inclusion proof does not verify against the signed checkpoint of size {size}"
    )]
    Inclusion { log: String, index: u64, size: u64 },
    #[error(
        "the log of size {new} is not an extension of the checkpoint of size {old}: history was rewritten"
    )]
    Consistency { old: u64, new: u64 },
    #[error("the log of size {new} is smaller than the checkpoint of size {old}: a rollback")]
    Rollback { old: u64, new: u64 },
}

/// Opens a signed checkpoint note under `verifier`. `log` names it in errors.
pub fn checkpoint(
    note: &str,
    verifier: &NoteVerifier,
    log: &str,
) -> Result<Checkpoint, VerifyError> {
    let body = verifier.open(note).map_err(|_| VerifyError::Signature {
        log: log.to_owned(),
    })?;
    Checkpoint::parse_body(body).map_err(|_| VerifyError::CheckpointParse {
        log: log.to_owned(),
    })
}

/// Base64 hashes as the wire carries them; `None` if any is not one.
pub fn hashes(proof: &[String]) -> Option<Vec<Hash>> {
    proof.iter().map(|h| hash_from_b64(h)).collect()
}

/// Entry `index` with base64 `leaf_hash` is in the tree `checkpoint` signs.
pub fn inclusion(
    log: &str,
    index: u64,
    leaf_hash: &str,
    proof: &[String],
    checkpoint: &Checkpoint,
) -> Result<(), VerifyError> {
    let leaf = hash_from_b64(leaf_hash).ok_or_else(|| VerifyError::LeafHash {
        log: log.to_owned(),
        index,
    })?;
    let proof = hashes(proof).ok_or_else(|| VerifyError::ProofEncoding {
        log: log.to_owned(),
        index,
    })?;
    bulkhead_ledger::proof::verify_inclusion(
        index,
        checkpoint.size,
        &leaf,
        &proof,
        &checkpoint.root,
    )
    .map_err(|_| VerifyError::Inclusion {
        log: log.to_owned(),
        index,
        size: checkpoint.size,
    })
}

/// The tree `new` signs extends the one `old` signs (same origin assumed).
pub fn consistency(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[String],
) -> Result<(), VerifyError> {
    let sizes = (old.size, new.size);
    if new.size < old.size {
        return Err(VerifyError::Rollback {
            old: sizes.0,
            new: sizes.1,
        });
    }
    let rewritten = VerifyError::Consistency {
        old: sizes.0,
        new: sizes.1,
    };
    let proof = hashes(proof).ok_or_else(|| rewritten.clone())?;
    bulkhead_ledger::proof::verify_consistency(old.size, new.size, &proof, &old.root, &new.root)
        .map_err(|_| rewritten)
}

/// Both checkpoints' signatures and every item's inclusion proof against its
/// log's checkpoint; returns how many proofs held. The first failure names the item.
pub fn impact_report(report: &ImpactReport, verifier: &NoteVerifier) -> Result<usize, VerifyError> {
    let mut checked = 0;
    for (section, log) in [
        (&report.tenant_log, "tenant"),
        (&report.operator_log, "operator"),
    ] {
        let cp = checkpoint(&section.checkpoint, verifier, log)?;
        for list in [
            &report.read,
            &report.returned,
            &report.blocked,
            &report.other,
        ] {
            for item in list.iter().filter(|i| i.log == log) {
                inclusion(log, item.index, &item.leaf_hash, &item.proof, &cp)?;
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// Each check of an erasure receipt that failed, in words (empty when it
/// verifies), and the receipt's checkpoint when its signature verified.
pub fn receipt_offline(
    receipt: &ErasureReceipt,
    verifier: &NoteVerifier,
) -> (Vec<String>, Option<Checkpoint>) {
    let mut problems = Vec::new();
    let mut statement = serde_json::Map::new();
    for field in STATEMENT_FIELDS {
        match receipt.statement.get(*field) {
            Some(v) => {
                statement.insert((*field).to_owned(), v.clone());
            }
            None => problems.push(format!("the receipt has no `{field}`")),
        }
    }
    let Ok(bytes) = canonical_json(&serde_json::Value::Object(statement)) else {
        problems.push("the receipt's fields cannot be encoded canonically".into());
        return (problems, None);
    };
    let digest = hex(&sha256(&bytes));
    if receipt.receipt_sha256.as_deref() != Some(digest.as_str()) {
        problems
            .push("the receipt's fields do not hash to its receipt_sha256 (it was edited)".into());
    }
    let Some(log) = &receipt.operator_log else {
        problems.push("the receipt's log position or proof is missing".into());
        return (problems, None);
    };
    let event = &log.event;
    if event["kind"] != "tenant.erase" {
        problems.push("the logged event is not a tenant erasure".into());
    }
    if Some(&event["tenant"]) != receipt.statement.get("tenant_id") {
        problems.push("the logged erasure names another tenant".into());
    }
    if event["attrs"]["receipt_sha256"].as_str() != Some(digest.as_str()) {
        problems.push("the logged erasure carries another receipt hash".into());
    }
    let leaf = leaf_hash_of_json(event).ok();
    if leaf.map(|l| b64(&l)).as_deref() != Some(log.leaf_hash.as_str()) {
        problems.push("the event does not hash to its leaf hash".into());
    }
    let Ok(cp) = checkpoint(&log.checkpoint, verifier, "operator") else {
        problems.push("the checkpoint's signature does not verify under the key given".into());
        return (problems, None);
    };
    match (leaf, hashes(&log.proof)) {
        (Some(leaf), Some(proof)) => {
            if bulkhead_ledger::proof::verify_inclusion(log.index, cp.size, &leaf, &proof, &cp.root)
                .is_err()
            {
                problems.push(format!(
                    "the inclusion proof of entry {} does not verify against the signed checkpoint of size {}",
                    log.index, cp.size
                ));
            }
        }
        _ => problems.push("the receipt's log position or proof is missing".into()),
    }
    (problems, Some(cp))
}

/// Why the live check of a receipt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server's current checkpoint does not verify under the key given")]
    Checkpoint,
    #[error("the consistency proof is malformed")]
    Malformed,
    #[error(
        "the log of size {new} is not an extension of the receipt's checkpoint of size {old}: history was rewritten"
    )]
    Rewritten { old: u64, new: u64 },
}

/// The server's operator log today still extends `old` (the receipt's
/// checkpoint): its current checkpoint verifies under `verifier` and the
/// consistency proof from `old` holds. Returns the current size.
pub async fn receipt_still_held(
    client: &Client,
    admin_token: &str,
    verifier: &NoteVerifier,
    old: &Checkpoint,
) -> Result<u64, LiveError> {
    const HINT: &str = "check BULKHEAD_ADMIN_TOKEN / --admin-token";
    let note = client
        .text::<()>(
            Method::GET,
            "/admin/v1/audit/checkpoint",
            Some(admin_token),
            None,
            HINT,
        )
        .await?;
    let new = checkpoint(&note, verifier, "operator").map_err(|_| LiveError::Checkpoint)?;
    let proof = client
        .consistency("/admin/v1/audit", admin_token, HINT, old.size, new.size)
        .await?;
    let rewritten = LiveError::Rewritten {
        old: old.size,
        new: new.size,
    };
    let hashes = hashes(&proof.proof).ok_or(LiveError::Malformed)?;
    bulkhead_ledger::proof::verify_consistency(old.size, new.size, &hashes, &old.root, &new.root)
        .map_err(|_| rewritten)?;
    Ok(new.size)
}

#[cfg(test)]
mod tests;
