//! `bulkhead audit …`: the public key, a log's signed checkpoint, an export of a
//! whole log to one file, and verification — offline from such a file with nothing
//! but the public key, or live against a running server.
//!
//! The checks themselves are `bulkhead_ledger::bundle`'s; this module fetches,
//! writes files and prints. Live verification streams entries page by page into
//! the same checks, so memory stays flat however long the log is.
//!
//! Must never: verify with a key the checked server supplies, or save a checkpoint
//! that did not verify.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bulkhead_client::{Client, ClientConfig, Method};
use bulkhead_ledger::b64;
use bulkhead_ledger::bundle::{
    self, AuditBundle, BundleConsistency, BundleEntry, BundleFormat, Verification, VerifyReport,
};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::note::{NoteSigner, NoteVerifier};
use clap::Args;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::client::{admin_token, segment};
use crate::{AuditCommand, ConnArgs};

/// Exit status when a log did not verify: 1 is every other error and 2 is clap's
/// usage error, so a script can tell "tampered" from "wrong arguments".
pub const EXIT_NOT_VERIFIED: u8 = 3;

/// Entries asked for per request: the server's page limit.
const PAGE_LEN: u64 = 1000;
/// Largest server answer read, in bytes; a page of 1000 events is far smaller.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Entries between progress lines on stderr; smaller logs print none.
const PROGRESS_EVERY_ENTRIES: u64 = 10_000;
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// Largest key or checkpoint file read, in bytes.
const SMALL_FILE_BYTES_MAX: u64 = 64 << 10;

const API_KEY_ENV: &str = "BULKHEAD_API_KEY";

/// Which log: exactly one of these (the API key may come from BULKHEAD_API_KEY).
#[derive(Debug, Args)]
#[group(id = "log", multiple = false)]
#[command(next_help_heading = "Which log (exactly one)")]
pub struct LogArgs {
    /// A tenant API key: that key's own tenant log (/v1/audit/…). Taken from
    /// BULKHEAD_API_KEY when no log is chosen; prefer that, since a key on the
    /// command line shows in the process list.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// With the admin token: the log of tenant ID (/admin/v1/audit/tenants/ID/…).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<String>,
    /// With the admin token: the operator log, which records admin actions
    /// (/admin/v1/audit/…).
    #[arg(long)]
    pub operator: bool,
}

/// A chosen log.
#[derive(Debug, PartialEq, Eq)]
enum Log {
    /// The tenant log of an API key.
    OwnTenant(Zeroizing<String>),
    /// Any tenant's log, through the admin plane.
    Tenant(String),
    Operator,
}

impl LogArgs {
    /// The chosen log; clap has already refused two choices at once.
    fn select(self, env_api_key: Option<String>) -> anyhow::Result<Log> {
        if let Some(key) = self.api_key {
            return Ok(Log::OwnTenant(Zeroizing::new(key)));
        }
        if let Some(id) = self.tenant {
            segment(&id)?;
            return Ok(Log::Tenant(id));
        }
        if self.operator {
            return Ok(Log::Operator);
        }
        match env_api_key.filter(|k| !k.trim().is_empty()) {
            Some(key) => Ok(Log::OwnTenant(Zeroizing::new(key.trim().to_owned()))),
            None => bail!(
                "which log? choose exactly one: --api-key KEY (or {API_KEY_ENV}) for your own \
                 tenant's log, or, with the admin token, --tenant ID for a tenant's log or \
                 --operator for the operator log"
            ),
        }
    }
}

fn env_api_key() -> Option<String> {
    std::env::var(API_KEY_ENV).ok()
}

/// The verification did not pass; the report is already printed.
#[derive(Debug)]
pub struct NotVerified {
    pub(crate) problems: usize,
}

impl fmt::Display for NotVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the audit log did not verify: {} problem{} (listed above)",
            self.problems,
            if self.problems == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for NotVerified {}

/// Plain HTTP to one server: the shared bounded client.
struct Http {
    client: Client,
    base: String,
}

impl Http {
    fn new(server: &str) -> anyhow::Result<Self> {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(REQUEST_TIMEOUT_SECS),
            body_bytes_max: RESPONSE_BYTES_MAX,
            ..crate::client::cli_client_config(server)
        };
        let client = Client::new(config).context("build the HTTP client")?;
        let base = client.base().to_owned();
        Ok(Self { client, base })
    }

    /// GETs `path` and returns the body of a successful answer.
    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        unauthorized_hint: &str,
    ) -> anyhow::Result<String> {
        Ok(self
            .client
            .text::<()>(Method::GET, path, token, None, unauthorized_hint)
            .await?)
    }

    /// The server's verifier key. No credentials: it is public.
    async fn public_key(&self) -> anyhow::Result<String> {
        Ok(self.client.public_key().await?)
    }
}

/// One log's audit endpoints.
struct LogClient {
    http: Http,
    /// `/v1/audit`, `/admin/v1/audit` or `/admin/v1/audit/tenants/<id>`.
    prefix: String,
    token: Zeroizing<String>,
    unauthorized_hint: &'static str,
}

impl LogClient {
    fn new(conn: &ConnArgs, log: Log) -> anyhow::Result<Self> {
        let http = Http::new(&conn.server)?;
        const ADMIN_HINT: &str = "check BULKHEAD_ADMIN_TOKEN / --admin-token";
        let (prefix, token, unauthorized_hint) = match log {
            Log::OwnTenant(key) => (
                "/v1/audit".to_owned(),
                key,
                "check the API key (--api-key / BULKHEAD_API_KEY): it may be revoked or expired",
            ),
            Log::Tenant(id) => (
                format!("/admin/v1/audit/tenants/{id}"),
                admin_token(conn)?,
                ADMIN_HINT,
            ),
            Log::Operator => ("/admin/v1/audit".to_owned(), admin_token(conn)?, ADMIN_HINT),
        };
        Ok(Self {
            http,
            prefix,
            token,
            unauthorized_hint,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        self.http
            .get(
                &format!("{}{path}", self.prefix),
                Some(self.token.as_str()),
                self.unauthorized_hint,
            )
            .await
    }

    /// Where this log lives, for messages.
    fn describe(&self) -> String {
        format!("{}{}", self.http.base, self.prefix)
    }

    async fn checkpoint(&self) -> anyhow::Result<String> {
        self.get("/checkpoint")
            .await
            .context("fetch the log's checkpoint")
    }

    async fn entries(&self, start: u64, end: u64) -> anyhow::Result<Vec<BundleEntry>> {
        let page = self
            .http
            .client
            .entries(
                &self.prefix,
                &self.token,
                self.unauthorized_hint,
                start,
                end,
            )
            .await
            .with_context(|| format!("fetch entries {start} to {end}"))?;
        Ok(page
            .entries
            .into_iter()
            .map(|e| BundleEntry {
                index: e.index,
                leaf_hash: e.leaf_hash,
                event: e.event,
            })
            .collect())
    }

    /// The server's consistency proof, recorded for the sizes asked: a proof the
    /// server made for other sizes then fails verification instead of passing
    /// unnoticed.
    async fn consistency(&self, old: u64, new: u64) -> anyhow::Result<BundleConsistency> {
        let wire = self
            .http
            .client
            .consistency(&self.prefix, &self.token, self.unauthorized_hint, old, new)
            .await
            .with_context(|| format!("fetch the consistency proof from size {old} to {new}"))?;
        Ok(BundleConsistency {
            old,
            new,
            proof: wire.proof,
        })
    }

    /// The proof from `old` to `current` when one is needed and can exist: an
    /// empty, equal or larger old tree is compared directly by the verifier.
    async fn consistency_from(
        &self,
        old: &Checkpoint,
        current: &Checkpoint,
    ) -> anyhow::Result<Option<BundleConsistency>> {
        if old.origin != current.origin || old.size == 0 || old.size >= current.size {
            return Ok(None);
        }
        self.consistency(old.size, current.size).await.map(Some)
    }

    /// Fetches entries `0..size` in pages, handing each page to `each`. Returns how
    /// many were fetched: fewer than `size` if the server ran out.
    async fn fetch_entries(
        &self,
        size: u64,
        mut each: impl FnMut(&[BundleEntry]) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut start = 0u64;
        let mut next_progress = PROGRESS_EVERY_ENTRIES;
        while start < size {
            let end = start.saturating_add(PAGE_LEN).min(size);
            let mut page = self.entries(start, end).await?;
            if page.is_empty() {
                break;
            }
            // Counting what arrived (never trusting its indices) guarantees progress;
            // the verifier checks the indices.
            page.truncate(usize::try_from(end - start).unwrap_or(usize::MAX));
            each(&page)?;
            start += page.len() as u64;
            if size >= PROGRESS_EVERY_ENTRIES && (start >= next_progress || start == size) {
                eprintln!("fetched {start}/{size} entries");
                next_progress = start - start % PROGRESS_EVERY_ENTRIES + PROGRESS_EVERY_ENTRIES;
            }
        }
        Ok(start)
    }
}

/// What a checkpoint note claims, without checking its signature: export needs the
/// size to know what to fetch, and it has no key to check with.
fn claimed_checkpoint(note: &str) -> anyhow::Result<Checkpoint> {
    let split = note
        .rfind("\n\n")
        .context("it is not a signed note (no blank line before the signatures)")?;
    Ok(Checkpoint::parse_body(&note[..split + 1])?)
}

fn read_small(path: &Path, what: &str) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("read {what} from {}", path.display()))?
        .len();
    if len > SMALL_FILE_BYTES_MAX {
        bail!("{} is {len} bytes, too large to be {what}", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("read {what} from {}", path.display()))
}

/// Where a file is written before it is renamed into place.
fn partial_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    PathBuf::from(tmp)
}

/// Replaces `path` whole with `bytes`: a temporary file beside it, synced, then
/// renamed, so a crash never leaves half a checkpoint.
fn write_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = partial_path(path);
    let result = (|| {
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub async fn run(conn: ConnArgs, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::PublicKey {
            local,
            audit_signing_key,
        } => public_key(&conn, local, audit_signing_key).await?,
        AuditCommand::Checkpoint { log } => {
            let client = LogClient::new(&conn, log.select(env_api_key())?)?;
            let note = client.checkpoint().await?;
            if conn.json {
                print_json(&json!({ "checkpoint": note }));
            } else {
                print!("{note}");
            }
        }
        AuditCommand::Export { log, out, since } => {
            let client = LogClient::new(&conn, log.select(env_api_key())?)?;
            let summary = export(&client, &out, since.as_deref()).await?;
            print_export(conn.json, &out, &summary);
        }
        AuditCommand::VerifyReceipt(args) => return crate::receipt::verify(&conn, args).await,
        AuditCommand::Verify {
            log,
            file,
            vkey,
            vkey_file,
            old_checkpoint,
            save_checkpoint,
        } => {
            let verifier = verifier_from(vkey, vkey_file)?;
            let old = old_checkpoint
                .as_deref()
                .map(|p| read_small(p, "your older checkpoint"))
                .transpose()?;
            let (report, note) = match file {
                Some(path) => verify_file(&path, &verifier, old.as_deref())?,
                None => {
                    let client = LogClient::new(&conn, log.select(env_api_key())?)?;
                    verify_live(&client, &verifier, old.as_deref()).await?
                }
            };
            return print_verified(conn.json, &report, &note, save_checkpoint.as_deref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulkhead audit public-key`: from the server, or derived from the signing key
/// file with `local`.
async fn public_key(
    conn: &ConnArgs,
    local: bool,
    audit_signing_key: Option<PathBuf>,
) -> anyhow::Result<()> {
    let vkey = if local {
        let path = audit_signing_key.unwrap_or_else(|| conn.data_dir.join("audit-signing.key"));
        let skey = Zeroizing::new(read_small(&path, "the audit signing key")?);
        NoteSigner::from_skey(&skey)
            .with_context(|| format!("{} is not a C2SP signing key", path.display()))?
            .vkey()
    } else {
        Http::new(&conn.server)?
            .public_key()
            .await
            .context("fetch the audit public key")?
    };
    if conn.json {
        print_json(&json!({ "vkey": vkey }));
    } else {
        println!("{vkey}");
    }
    Ok(())
}

fn print_export(json: bool, out: &Path, summary: &ExportSummary) {
    if json {
        print_json(&json!({
            "file": out,
            "origin": summary.checkpoint.origin,
            "size": summary.checkpoint.size,
            "root": b64(&summary.checkpoint.root),
            "consistency_from": summary.consistency_from,
        }));
        return;
    }
    let cp = &summary.checkpoint;
    println!(
        "exported log {} ({} entries, root {}) to {}",
        cp.origin,
        cp.size,
        b64(&cp.root),
        out.display()
    );
    if let Some(old) = summary.consistency_from {
        println!("with the consistency proof from your checkpoint of size {old}");
    }
    println!(
        "verify it with: bulkhead audit verify --file {} --vkey-file <the server's public key, from a trusted source>",
        out.display()
    );
}

/// The key `audit verify` checks with: `--vkey`, else `--vkey-file`; never the
/// checked server's.
fn verifier_from(vkey: Option<String>, vkey_file: Option<PathBuf>) -> anyhow::Result<NoteVerifier> {
    let vkey = match (vkey, vkey_file) {
        (Some(k), _) => k,
        (None, Some(path)) => read_small(&path, "the public key")?,
        (None, None) => bail!(
            "give the public key to verify with: --vkey VKEY or --vkey-file FILE (from `bulkhead audit public-key`, kept where the server cannot change it)"
        ),
    };
    NoteVerifier::from_vkey(&vkey)
        .context("the public key cannot be used (expected name+hexid+base64, as `bulkhead audit public-key` prints it)")
}

/// Verifies an export file offline; the report and the checkpoint note it holds.
fn verify_file(
    path: &Path,
    verifier: &NoteVerifier,
    old: Option<&str>,
) -> anyhow::Result<(VerifyReport, String)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("read the export {}", path.display()))?;
    let bundle = AuditBundle::from_slice(&bytes)
        .with_context(|| format!("read the export {}", path.display()))?;
    let report = bundle::verify_bundle(&bundle, verifier, old);
    Ok((report, bundle.checkpoint))
}

/// Saves the checkpoint `note` to `save` if the log verified, prints the report,
/// and gives the exit status.
fn print_verified(
    json: bool,
    report: &VerifyReport,
    note: &str,
    save: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let saved = match (save, report.is_ok()) {
        (Some(path), true) => {
            write_file_atomically(path, note.as_bytes()).context("save the verified checkpoint")?;
            Some(path)
        }
        _ => None,
    };
    if json {
        let mut value = serde_json::to_value(report).context("encode the report")?;
        value["ok"] = json!(report.is_ok());
        value["saved_checkpoint"] = json!(saved);
        print_json(&value);
    } else {
        println!("{}", human_report(report, saved));
    }
    if !report.is_ok() {
        let failed = NotVerified {
            problems: report.failures.len().max(1),
        };
        eprintln!("error: {failed}");
        return Ok(ExitCode::from(EXIT_NOT_VERIFIED));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug)]
struct ExportSummary {
    checkpoint: Checkpoint,
    /// The older size the consistency proof starts from, if one was included.
    consistency_from: Option<u64>,
}

/// Writes the log's checkpoint, the proof from `since` and every entry to `out`,
/// streaming: memory stays one page however long the log.
async fn export(
    client: &LogClient,
    out: &Path,
    since: Option<&Path>,
) -> anyhow::Result<ExportSummary> {
    let since_note = since
        .map(|p| read_small(p, "the older checkpoint"))
        .transpose()?;
    let vkey = client
        .http
        .public_key()
        .await
        .context("fetch the audit public key")?;
    let note = client.checkpoint().await?;
    let checkpoint = claimed_checkpoint(&note).context("the server's checkpoint cannot be read")?;
    let mut consistency = Vec::new();
    if let (Some(text), Some(path)) = (&since_note, since) {
        let old = claimed_checkpoint(text)
            .with_context(|| format!("the checkpoint in {} cannot be read", path.display()))?;
        if old.origin != checkpoint.origin {
            bail!(
                "the checkpoint in {} is for log {}, but this log is {}",
                path.display(),
                old.origin,
                checkpoint.origin
            );
        }
        if old.size > checkpoint.size {
            eprintln!(
                "warning: your checkpoint has size {} but the log now has {}: a rollback, which `bulkhead audit verify --old-checkpoint` reports",
                old.size, checkpoint.size
            );
        }
        consistency.extend(client.consistency_from(&old, &checkpoint).await?);
    }
    let head = AuditBundle {
        format: BundleFormat::V1,
        origin: checkpoint.origin.clone(),
        vkey,
        checkpoint: note,
        consistency,
        entries: Vec::new(),
    };
    let consistency_from = head.consistency.first().map(|c| c.old);
    let size = checkpoint.size;
    let mut fetched = 0;
    // The fetch is async and the writer synchronous: write into the temporary file
    // from the page callback, and only rename once everything arrived.
    let tmp = partial_path(out);
    let result: anyhow::Result<()> = async {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        writer.write_all(head.encode_head().as_bytes())?;
        let mut first = true;
        fetched = client
            .fetch_entries(size, |page| {
                for entry in page {
                    writer.write_all(bundle::encode_entry(entry, first).as_bytes())?;
                    first = false;
                }
                Ok(())
            })
            .await?;
        if fetched < size {
            bail!(
                "the server returned no entries from index {fetched} on, although its checkpoint commits to {size}; the export would be incomplete and was not written"
            );
        }
        writer.write_all(bundle::ENCODED_TAIL.as_bytes())?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("export to {}", out.display())));
    }
    Ok(ExportSummary {
        checkpoint,
        consistency_from,
    })
}

/// Fetches what an export holds and verifies it as it arrives. Returns the report
/// and the checkpoint note.
async fn verify_live(
    client: &LogClient,
    verifier: &NoteVerifier,
    old: Option<&str>,
) -> anyhow::Result<(VerifyReport, String)> {
    let note = client.checkpoint().await?;
    // The server's key only names the key in a "wrong key" failure; it is never
    // verified with, so not being able to fetch it changes nothing.
    let vkey = client.http.public_key().await.unwrap_or_default();
    let claimed = claimed_checkpoint(&note).ok();
    let mut consistency = Vec::new();
    if let (Some(current), Some(old)) = (&claimed, old.and_then(|o| claimed_checkpoint(o).ok())) {
        consistency.extend(client.consistency_from(&old, current).await?);
    }
    let head = AuditBundle {
        format: BundleFormat::V1,
        origin: claimed
            .as_ref()
            .map_or_else(|| client.describe(), |cp| cp.origin.clone()),
        vkey,
        checkpoint: note,
        consistency,
        entries: Vec::new(),
    };
    let mut verification = Verification::begin(&head, verifier, old);
    // Entries are checked even under a checkpoint that does not verify: whether each
    // event hashes to its leaf is still worth knowing.
    if let Some(cp) = &claimed {
        client
            .fetch_entries(cp.size, |page| {
                page.iter().for_each(|e| verification.entry(e));
                Ok(())
            })
            .await?;
    }
    Ok((verification.finish(), head.checkpoint))
}

fn human_report(report: &VerifyReport, saved: Option<&Path>) -> String {
    let mut lines = Vec::new();
    if report.is_ok() {
        let mut line = format!(
            "OK: log {}, {} entries, root {}",
            report.origin,
            report.size.unwrap_or(0),
            report.root.as_ref().map(|r| b64(r)).unwrap_or_default()
        );
        match &report.old_checkpoint {
            Some(old) if old.consistent => {
                line.push_str(&format!(
                    ", consistent with your checkpoint of size {}",
                    old.size
                ));
            }
            Some(old) => line.push_str(&format!(
                ", not compared with your checkpoint of size {}",
                old.size
            )),
            None => {}
        }
        lines.push(line);
        if report.entries_unreadable > 0 {
            lines.push(format!(
                "{} of the entries are unreadable (crypto-shredded tenant): their leaf hashes verify, their events are gone",
                report.entries_unreadable
            ));
        }
        if let Some(path) = saved {
            lines.push(format!(
                "saved the verified checkpoint to {}; pass it as --old-checkpoint next time",
                path.display()
            ));
        }
    } else {
        let count = report.failures.len();
        let mut line = format!(
            "FAILED: log {}: {count} problem{}",
            report.origin,
            if count == 1 { "" } else { "s" }
        );
        if let Some(size) = report.size {
            line.push_str(&format!(" (signed checkpoint of size {size})"));
        }
        lines.push(line);
        for failure in &report.failures {
            lines.push(format!("FAIL: {failure}"));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use bulkhead_ledger::bundle::Failure;
    use bulkhead_ledger::event::{AuditEvent, Outcome, leaf_hash_of_json};
    use bulkhead_ledger::proof::{NodeId, consistency_plan};
    use bulkhead_ledger::{Hash, root_of};

    fn log_args(api_key: Option<&str>, tenant: Option<&str>, operator: bool) -> LogArgs {
        LogArgs {
            api_key: api_key.map(Into::into),
            tenant: tenant.map(Into::into),
            operator,
        }
    }

    #[test]
    fn a_log_is_chosen_from_flags_then_the_environment() {
        let key = |k: &str| Log::OwnTenant(Zeroizing::new(k.into()));
        let cases = [
            (log_args(Some("bhk_1"), None, false), None, Ok(key("bhk_1"))),
            (
                log_args(None, Some("tn_1"), false),
                Some("bhk_env"),
                Ok(Log::Tenant("tn_1".into())),
            ),
            (
                log_args(None, None, true),
                Some("bhk_env"),
                Ok(Log::Operator),
            ),
            (
                log_args(None, None, false),
                Some(" bhk_env\n"),
                Ok(key("bhk_env")),
            ),
            (log_args(None, None, false), Some(""), Err("which log?")),
            (log_args(None, None, false), None, Err("which log?")),
            (
                log_args(None, Some("../x"), false),
                None,
                Err("is not an id"),
            ),
        ];
        for (args, env, expect) in cases {
            let got = args.select(env.map(Into::into)).map_err(|e| e.to_string());
            match (got, expect) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn two_logs_at_once_are_refused_by_the_cli() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            crate::Cli::try_parse_from(args)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(
            parse(&[
                "bulkhead",
                "audit",
                "checkpoint",
                "--tenant",
                "tn_1",
                "--operator"
            ])
            .is_err()
        );
        assert!(parse(&["bulkhead", "audit", "export", "--operator", "--out", "f"]).is_ok());
        assert!(parse(&["bulkhead", "audit", "verify", "--file", "f", "--vkey", "k"]).is_ok());
        assert!(parse(&["bulkhead", "audit", "verify", "--file", "f"]).is_err());
        assert!(
            parse(&[
                "bulkhead", "audit", "verify", "--file", "f", "--vkey", "k", "--tenant", "tn_1"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "bulkhead",
                "audit",
                "verify",
                "--vkey",
                "k",
                "--vkey-file",
                "f"
            ])
            .is_err()
        );
    }

    #[test]
    fn claimed_checkpoints_parse_without_a_key() {
        let signer = NoteSigner::generate("srv").unwrap();
        let cp = Checkpoint {
            origin: "srv/operator".into(),
            size: 3,
            root: bulkhead_ledger::leaf_hash(b"x"),
        };
        assert_eq!(claimed_checkpoint(&cp.sign(&signer).unwrap()).unwrap(), cp);
        assert!(claimed_checkpoint("srv/operator\n3\n").is_err());
    }

    fn report(failures: Vec<Failure>, unreadable: u64, old: Option<(u64, bool)>) -> VerifyReport {
        VerifyReport {
            origin: "srv/tenants/tn_1".into(),
            signed: true,
            size: Some(20),
            root: Some([0u8; 32]),
            entries_checked: 20,
            entries_unreadable: unreadable,
            old_checkpoint: old.map(|(size, consistent)| bundle::OldCheckpointCheck {
                size,
                root: [1u8; 32],
                consistent,
            }),
            consistency_proofs_checked: 0,
            failures,
        }
    }

    #[test]
    fn reports_read_as_one_line_per_finding() {
        let root = b64(&[0u8; 32]);
        let cases: Vec<(VerifyReport, Option<&Path>, String)> = vec![
            (
                report(vec![], 0, None),
                None,
                format!("OK: log srv/tenants/tn_1, 20 entries, root {root}"),
            ),
            (
                report(vec![], 2, Some((12, true))),
                Some(Path::new("cp.txt")),
                format!(
                    "OK: log srv/tenants/tn_1, 20 entries, root {root}, consistent with your checkpoint of size 12\n\
                     2 of the entries are unreadable (crypto-shredded tenant): their leaf hashes verify, their events are gone\n\
                     saved the verified checkpoint to cp.txt; pass it as --old-checkpoint next time"
                ),
            ),
            (
                report(
                    vec![
                        Failure::EventHashMismatch { index: 4 },
                        Failure::Rollback { old_size: 25, size: 20 },
                    ],
                    0,
                    Some((25, false)),
                ),
                None,
                "FAILED: log srv/tenants/tn_1: 2 problems (signed checkpoint of size 20)\n\
                 FAIL: entry 4: the event does not hash to its leaf hash (the event or the hash was edited)\n\
                 FAIL: rollback: your checkpoint has size 25 but the log now has 20 (entries were removed, or the server was restored from an older state)"
                    .to_owned(),
            ),
        ];
        for (report, saved, want) in cases {
            assert_eq!(human_report(&report, saved), want);
        }
    }

    // ---- against a stand-in server ----------------------------------------------

    /// A log served the way the contract says, with a small page limit so paging
    /// is exercised.
    struct FakeLog {
        signer: NoteSigner,
        origin: String,
        events: Vec<Value>,
        leaves: Vec<Hash>,
        page_max: u64,
        api_key: String,
    }

    fn fake_log(n: u64, flavour: &str) -> FakeLog {
        let signer = NoteSigner::generate("bulkhead.test").unwrap();
        let events: Vec<Value> = (0..n)
            .map(|i| {
                let e = AuditEvent::new(
                    "document.read",
                    "2026-11-27T12:00:00.000Z".into(),
                    format!("key:bhk_{flavour}{i}"),
                    Outcome::Allowed,
                );
                serde_json::to_value(e).unwrap()
            })
            .collect();
        let leaves = events
            .iter()
            .map(|e| leaf_hash_of_json(e).unwrap())
            .collect();
        FakeLog {
            signer,
            origin: "bulkhead.test/tenants/tn_1".into(),
            events,
            leaves,
            page_max: 7,
            api_key: "bhk_test".into(),
        }
    }

    impl FakeLog {
        fn checkpoint(&self, size: usize) -> String {
            Checkpoint {
                origin: self.origin.clone(),
                size: size as u64,
                root: root_of(&self.leaves[..size]),
            }
            .sign(&self.signer)
            .unwrap()
        }
    }

    fn problem(status: StatusCode, title: &str) -> Response {
        (
            status,
            [("content-type", "application/problem+json")],
            json!({"title": title, "detail": "stand-in server"}).to_string(),
        )
            .into_response()
    }

    fn authorized(log: &FakeLog, headers: &HeaderMap) -> bool {
        headers.get("authorization").and_then(|h| h.to_str().ok())
            == Some(&format!("Bearer {}", log.api_key))
    }

    async fn serve(log: FakeLog) -> String {
        let log = Arc::new(log);
        let app = Router::new()
            .route(
                "/v1/audit/public-key",
                get(|State(log): State<Arc<FakeLog>>| async move { log.signer.vkey() }),
            )
            .route(
                "/v1/audit/checkpoint",
                get(|State(log): State<Arc<FakeLog>>, headers: HeaderMap| async move {
                    if !authorized(&log, &headers) {
                        return problem(StatusCode::UNAUTHORIZED, "unauthorized");
                    }
                    log.checkpoint(log.leaves.len()).into_response()
                }),
            )
            .route(
                "/v1/audit/entries",
                get(
                    |State(log): State<Arc<FakeLog>>,
                     headers: HeaderMap,
                     Query(q): Query<HashMap<String, u64>>| async move {
                        if !authorized(&log, &headers) {
                            return problem(StatusCode::UNAUTHORIZED, "unauthorized");
                        }
                        let start = q["start"];
                        let end = q["end"]
                            .min(start + log.page_max)
                            .min(log.leaves.len() as u64);
                        let entries: Vec<Value> = (start..end)
                            .map(|i| {
                                let i = i as usize;
                                json!({
                                    "index": i,
                                    "leaf_hash": b64(&log.leaves[i]),
                                    // A shredded tenant's body.
                                    "event": if i == 3 { Value::Null } else { log.events[i].clone() },
                                    "extra_field_from_a_later_server": true,
                                })
                            })
                            .collect();
                        axum::Json(json!({ "entries": entries })).into_response()
                    },
                ),
            )
            .route(
                "/v1/audit/proof/consistency",
                get(
                    |State(log): State<Arc<FakeLog>>,
                     headers: HeaderMap,
                     Query(q): Query<HashMap<String, u64>>| async move {
                        if !authorized(&log, &headers) {
                            return problem(StatusCode::UNAUTHORIZED, "unauthorized");
                        }
                        let (old, new) = (q["old"], q["new"]);
                        let node = |id: NodeId| {
                            let begin = usize::try_from(id.index << id.level).ok()?;
                            let end = begin + (1usize << id.level);
                            (end <= log.leaves.len()).then(|| root_of(&log.leaves[begin..end]))
                        };
                        let Ok(plan) = consistency_plan(old, new) else {
                            return problem(StatusCode::BAD_REQUEST, "bad sizes");
                        };
                        let proof: Vec<String> =
                            plan.resolve(node).unwrap().iter().map(|h| b64(h)).collect();
                        axum::Json(json!({"old": old, "new": new, "proof": proof})).into_response()
                    },
                ),
            )
            .with_state(log);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn conn(server: &str) -> ConnArgs {
        ConnArgs {
            server: server.into(),
            admin_token: Some("unused".into()),
            data_dir: PathBuf::from("/nonexistent"),
            json: false,
        }
    }

    #[tokio::test]
    async fn export_then_verify_offline_and_live() {
        let log = fake_log(23, "a");
        let vkey = log.signer.vkey();
        let verifier = NoteVerifier::from_vkey(&vkey).unwrap();
        let api_key = log.api_key.clone();
        let old_note = log.checkpoint(10);
        let forked_note = {
            let other = fake_log(10, "b");
            // Same key and origin, another history.
            Checkpoint {
                origin: log.origin.clone(),
                size: 10,
                root: root_of(&other.leaves),
            }
            .sign(&log.signer)
            .unwrap()
        };
        let server = serve(log).await;
        let client = || {
            LogClient::new(
                &conn(&server),
                Log::OwnTenant(Zeroizing::new(api_key.clone())),
            )
            .unwrap()
        };

        let dir = tempfile::tempdir().unwrap();
        let since = dir.path().join("old.checkpoint");
        std::fs::write(&since, &old_note).unwrap();
        let out = dir.path().join("export.json");
        let summary = export(&client(), &out, Some(&since)).await.unwrap();
        assert_eq!(summary.checkpoint.size, 23);
        assert_eq!(summary.consistency_from, Some(10));
        assert!(!dir.path().join("export.json.partial").exists());

        let bundle = AuditBundle::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(bundle.entries.len(), 23);
        assert_eq!(bundle.vkey, vkey);
        let offline = bundle::verify_bundle(&bundle, &verifier, Some(&old_note));
        assert!(offline.is_ok(), "{:?}", offline.failures);
        assert_eq!(offline.entries_unreadable, 1);
        assert_eq!(offline.consistency_proofs_checked, 1);
        assert!(offline.old_checkpoint.as_ref().unwrap().consistent);

        let (live, note) = verify_live(&client(), &verifier, Some(&old_note))
            .await
            .unwrap();
        assert_eq!(live, offline);
        assert_eq!(note, bundle.checkpoint);

        let (forked, _) = verify_live(&client(), &verifier, Some(&forked_note))
            .await
            .unwrap();
        assert_eq!(forked.failures[0], Failure::Fork { old_size: 10 });

        let wrong = NoteVerifier::from_vkey(&NoteSigner::generate("bulkhead.test").unwrap().vkey())
            .unwrap();
        let (refused, _) = verify_live(&client(), &wrong, None).await.unwrap();
        assert!(matches!(
            refused.failures[..],
            [Failure::CheckpointNotSignedByKey {
                export_key: Some(_),
                ..
            }]
        ));

        let intruder = LogClient::new(
            &conn(&server),
            Log::OwnTenant(Zeroizing::new("bhk_other".into())),
        )
        .unwrap();
        let err = format!("{:#}", export(&intruder, &out, None).await.unwrap_err());
        assert!(
            err.contains("HTTP 401") && err.contains("--api-key"),
            "{err}"
        );
        // The earlier export is untouched by the failed one.
        assert_eq!(
            AuditBundle::from_slice(&std::fs::read(&out).unwrap()).unwrap(),
            bundle
        );
    }
}
