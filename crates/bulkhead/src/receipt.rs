//! `bulkhead audit verify-receipt`: checks a tenant's erasure receipt against the
//! operator log, offline, with nothing but the server's public key — and, with
//! `--live`, that the server's log today still holds it (a consistency proof from
//! the receipt's checkpoint to the current one: no rewritten history).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bulkhead_api::receipt::ErasureReceipt;
use bulkhead_client::Client;
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::note::NoteVerifier;
use clap::Args;
use serde_json::json;

use crate::ConnArgs;
use crate::audit::{EXIT_NOT_VERIFIED, NotVerified};
use crate::client::admin_token;

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

pub async fn verify(conn: &ConnArgs, args: VerifyReceiptArgs) -> anyhow::Result<ExitCode> {
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
    let receipt: ErasureReceipt =
        serde_json::from_str(&text).context("the receipt is not an erasure receipt")?;
    let (mut problems, checkpoint) = bulkhead_client::verify::receipt_offline(&receipt, &verifier);
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
            receipt.text("tenant_id").unwrap_or("?"),
            receipt.text("erased_at").unwrap_or("?"),
            receipt
                .operator_log
                .as_ref()
                .map_or_else(|| "null".to_owned(), |l| l.index.to_string()),
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
        Ok(ExitCode::SUCCESS)
    } else {
        let failed = NotVerified {
            problems: problems.len(),
        };
        eprintln!("error: {failed}");
        Ok(ExitCode::from(EXIT_NOT_VERIFIED))
    }
}

/// The current operator checkpoint and a consistency proof from `old` to it.
async fn live_consistency(
    conn: &ConnArgs,
    verifier: &NoteVerifier,
    old: &Checkpoint,
) -> anyhow::Result<u64> {
    let token = admin_token(conn)?;
    let client = Client::new(crate::client::cli_client_config(&conn.server))
        .context("build the HTTP client")?;
    Ok(bulkhead_client::verify::receipt_still_held(&client, &token, verifier, old).await?)
}
