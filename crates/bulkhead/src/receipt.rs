//! `bulkhead audit verify-receipt`: checks a tenant's erasure receipt against the
//! operator log, offline, with nothing but the server's public key — and, with
//! `--live`, that the server's log today still holds it (a consistency proof from
//! the receipt's checkpoint to the current one: no rewritten history).

use std::path::PathBuf;

use anyhow::{Context, bail};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::{canonical_json, leaf_hash_of_json};
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_ledger::proof::{verify_consistency, verify_inclusion};
use bulkhead_ledger::{Hash, b64, hash_from_b64, hex, sha256};
use clap::Args;
use serde_json::{Value, json};

use crate::ConnArgs;
use crate::audit::NotVerified;
use crate::client::admin_token;

/// The fields of the receipt statement, in the server's order of writing; the
/// hash covers exactly these.
const STATEMENT_FIELDS: &[&str] = &[
    "tenant_id",
    "erased_at",
    "data_keys_destroyed",
    "records_deleted",
    "api_keys_deleted",
    "method",
    "server",
];

#[derive(Debug, Args)]
pub struct VerifyReceiptArgs {
    /// The receipt `bulkhead tenant delete` saved (or the server's JSON answer).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The server's public key, as `audit public-key` prints it.
    #[arg(long, conflicts_with = "vkey_file")]
    pub vkey: Option<String>,
    /// A file holding the server's public key.
    #[arg(long, value_name = "FILE")]
    pub vkey_file: Option<PathBuf>,
    /// Also ask the server (admin token) for its current operator checkpoint and
    /// check that the log still holds the receipt's entry.
    #[arg(long)]
    pub live: bool,
}

fn hashes(v: &Value) -> Option<Vec<Hash>> {
    v.as_array()?
        .iter()
        .map(|h| h.as_str().and_then(hash_from_b64))
        .collect()
}

/// Each check that failed, in words; empty when the receipt verifies.
pub(crate) fn check_offline(
    receipt: &Value,
    verifier: &NoteVerifier,
) -> (Vec<String>, Option<Checkpoint>) {
    let mut problems = Vec::new();
    let mut statement = serde_json::Map::new();
    for field in STATEMENT_FIELDS {
        match receipt.get(*field) {
            Some(v) => {
                statement.insert((*field).to_owned(), v.clone());
            }
            None => problems.push(format!("the receipt has no `{field}`")),
        }
    }
    let Ok(bytes) = canonical_json(&Value::Object(statement)) else {
        problems.push("the receipt's fields cannot be encoded canonically".into());
        return (problems, None);
    };
    let digest = hex(&sha256(&bytes));
    if receipt["receipt_sha256"].as_str() != Some(digest.as_str()) {
        problems
            .push("the receipt's fields do not hash to its receipt_sha256 (it was edited)".into());
    }
    let log = &receipt["operator_log"];
    let event = &log["event"];
    if event["kind"] != "tenant.erase" {
        problems.push("the logged event is not a tenant erasure".into());
    }
    if event["tenant"] != receipt["tenant_id"] {
        problems.push("the logged erasure names another tenant".into());
    }
    if event["attrs"]["receipt_sha256"].as_str() != Some(digest.as_str()) {
        problems.push("the logged erasure carries another receipt hash".into());
    }
    let leaf = leaf_hash_of_json(event).ok();
    if leaf.map(|l| b64(&l)) != log["leaf_hash"].as_str().map(str::to_owned) {
        problems.push("the event does not hash to its leaf hash".into());
    }
    let checkpoint = log["checkpoint"]
        .as_str()
        .and_then(|note| verifier.open(note).ok())
        .and_then(|body| Checkpoint::parse_body(body).ok());
    let Some(checkpoint) = checkpoint else {
        problems.push("the checkpoint's signature does not verify under the key given".into());
        return (problems, None);
    };
    match (log["index"].as_u64(), leaf, hashes(&log["proof"])) {
        (Some(index), Some(leaf), Some(proof)) => {
            if verify_inclusion(index, checkpoint.size, &leaf, &proof, &checkpoint.root).is_err() {
                problems.push(format!(
                    "the inclusion proof of entry {index} does not verify against the signed checkpoint of size {}",
                    checkpoint.size
                ));
            }
        }
        _ => problems.push("the receipt's log position or proof is missing".into()),
    }
    (problems, Some(checkpoint))
}

pub async fn verify(conn: &ConnArgs, args: VerifyReceiptArgs) -> anyhow::Result<()> {
    let vkey = match (&args.vkey, &args.vkey_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("read the public key from {}", path.display()))?,
        (None, None) => bail!(
            "give the public key to verify with: --vkey VKEY or --vkey-file FILE (from `bulkhead audit public-key`, kept where the server cannot change it)"
        ),
    };
    let verifier = NoteVerifier::from_vkey(vkey.trim())
        .context("the public key cannot be used (expected name+hexid+base64)")?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("read the receipt {}", args.file.display()))?;
    let receipt: Value = serde_json::from_str(&text).context("the receipt is not JSON")?;
    let (mut problems, checkpoint) = check_offline(&receipt, &verifier);
    let mut live_line = None;
    if let (true, Some(old)) = (args.live, &checkpoint) {
        match live_consistency(conn, &verifier, old).await {
            Ok(size) => {
                live_line = Some(format!(
                    "the server's operator log (size {size}) still holds it"
                ))
            }
            Err(e) => problems.push(format!("live: {e:#}")),
        }
    }
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"ok": problems.is_empty(), "problems": problems})
            )?
        );
    } else if problems.is_empty() {
        println!(
            "receipt verified: tenant {} erased at {}, entry {} of the operator log, signed checkpoint of size {}",
            receipt["tenant_id"].as_str().unwrap_or("?"),
            receipt["erased_at"].as_str().unwrap_or("?"),
            receipt["operator_log"]["index"],
            checkpoint.as_ref().map_or(0, |c| c.size),
        );
        if let Some(line) = live_line {
            println!("{line}");
        }
    } else {
        for p in &problems {
            println!("FAILED: {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(NotVerified {
            problems: problems.len(),
        }
        .into())
    }
}

/// The current operator checkpoint and a consistency proof from `old` to it.
async fn live_consistency(
    conn: &ConnArgs,
    verifier: &NoteVerifier,
    old: &Checkpoint,
) -> anyhow::Result<u64> {
    let token = admin_token(conn)?;
    let base = conn.server.trim_end_matches('/');
    let http = reqwest::Client::new();
    let note = http
        .get(format!("{base}/admin/v1/audit/checkpoint"))
        .bearer_auth(token.as_str())
        .send()
        .await
        .context("reach the server")?
        .error_for_status()
        .context("fetch the operator checkpoint")?
        .text()
        .await?;
    let body = verifier.open(&note).map_err(|_| {
        anyhow::anyhow!("the server's current checkpoint does not verify under the key given")
    })?;
    let new = Checkpoint::parse_body(body)?;
    let proof: Value = http
        .get(format!(
            "{base}/admin/v1/audit/proof/consistency?old={}&new={}",
            old.size, new.size
        ))
        .bearer_auth(token.as_str())
        .send()
        .await?
        .error_for_status()
        .context("fetch the consistency proof")?
        .json()
        .await?;
    let proof = hashes(&proof["proof"]).context("the consistency proof is malformed")?;
    verify_consistency(old.size, new.size, &proof, &old.root, &new.root).map_err(|_| {
        anyhow::anyhow!(
            "the log of size {} is not an extension of the receipt's checkpoint of size {}: history was rewritten",
            new.size,
            old.size
        )
    })?;
    Ok(new.size)
}
