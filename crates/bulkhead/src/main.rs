//! The `bulkhead` binary: the CLI definition and the glue that starts the server or
//! talks to a running one. No business logic lives here.

#![forbid(unsafe_code)]

#[cfg(test)]
mod api_types;
mod audit;
mod client;
mod compliance;
mod config;
mod demo;
mod incident;
mod probe;
mod receipt;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Bulkhead keeps every tenant's AI context sealed in its own compartment and proves
/// that nothing crossed between them.
///
/// Start a server on the embedded default (SQLite under ./bulkhead-data):
///
///     bulkhead serve
///
/// Then, from another shell, create a tenant and give it an API key:
///
///     bulkhead tenant create --name "Acme Corp"
///     bulkhead key issue tn_…
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (admin API, tenant API, metrics).
    ///
    /// Every setting comes, in order of precedence, from its flag, its BULKHEAD_*
    /// environment variable, the --config TOML file (same names, snake_case), or the
    /// default. On first start without BULKHEAD_MASTER_KEY / BULKHEAD_ADMIN_TOKEN a
    /// development master key and admin token are generated in the data directory
    /// (files 0600); production supplies its own.
    Serve(Box<config::ServeArgs>),
    /// Manage tenants on a running server (operator; uses the admin token).
    Tenant {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Issue and revoke tenant API keys on a running server (operator).
    Key {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The per-tenant evidence report (HTML and JSON) for auditors.
    Compliance {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: compliance::ComplianceCommand,
    },
    /// The isolation policy baseline: show drift, approve the current policy.
    Config {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: compliance::ConfigCommand,
    },
    /// Impact reports and incidents: what was read, returned and blocked for a
    /// tenant in a window, with inclusion proofs checked locally.
    Incident {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: incident::IncidentCommand,
    },
    /// Fetch, export and verify the signed audit logs (one per tenant, one for the
    /// operator).
    ///
    /// Each log is a Merkle tree whose checkpoints the server signs. With nothing
    /// but the server's public key, anyone can check that no entry was edited,
    /// removed or rewritten, and that the log only grew since a checkpoint they kept:
    ///
    ///     bulkhead audit public-key > bulkhead.vkey    # keep it where the server cannot change it
    ///     bulkhead audit export --tenant tn_… --out acme.audit.json
    ///     bulkhead audit verify --file acme.audit.json --vkey-file bulkhead.vkey \
    ///         --save-checkpoint acme.checkpoint
    ///     # later, live, proving the log only grew since then:
    ///     bulkhead audit verify --tenant tn_… --vkey-file bulkhead.vkey \
    ///         --old-checkpoint acme.checkpoint --save-checkpoint acme.checkpoint
    #[command(verbatim_doc_comment)]
    Audit {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Show Bulkhead working in under a minute: a narrated tour that checks itself.
    ///
    /// Starts a throwaway server in this process (a fresh data directory under the
    /// system's temporary directory, generated keys, the built-in echo models),
    /// creates two tenants, "Acme Corp" and "Globex", each with a confidential
    /// document, and lets Globex try to get Acme's data:
    ///
    ///   a. reading Acme's document by its id (404, same bytes as a missing id)
    ///   b. searching for Acme's words (only Globex's own results)
    ///   c. a prompt injection with retrieval (refused, or answered without Acme data)
    ///   d. a shared model that repeats the previous caller's prompt (the output
    ///      guard blocks it: finish_reason content_filter, a guard.leak event in
    ///      the operator log naming Acme)
    ///
    /// Then it verifies the blocked call's entry in Globex's signed audit log
    /// (checkpoint signature, leaf hash, inclusion proof), as an outside auditor
    /// would, stops the server and removes the directory.
    ///
    /// Every claim it prints is a check of what the server answered. Exit status:
    /// 0 when all held, 1 otherwise (each failure says what was expected and what
    /// was seen), so it doubles as a smoke test. The server's own log is quiet
    /// (errors only) unless RUST_LOG says otherwise.
    ///
    /// Examples:
    ///     bulkhead demo
    ///     bulkhead demo --no-color --keep
    #[command(verbatim_doc_comment)]
    Demo(demo::DemoArgs),
    /// Attack a deployment's tenant isolation and score it (run it in CI).
    ///
    /// Creates probe tenants (or uses --tenant ID=KEY ones), seeds each with
    /// documents carrying unique canaries and text, a session and a traced model
    /// call, then plays every attack family through the public HTTP API:
    ///
    ///   admin_plane      tenant keys against /admin/v1/*, the admin token against /v1/*
    ///   id_guessing      other tenants' document, session and trace ids; listings
    ///   search           searches for other tenants' canaries and text
    ///   prompt_injection 50+ attack prompts, in the user's message and planted in
    ///                    retrieved documents, whole and streamed
    ///   cache_probing    the same prompt from every tenant
    ///   token_tampering  bit flips, swapped key ids, truncation, expired and revoked keys
    ///   concurrent_load  mixed-tenant traffic for --duration
    ///
    /// Every answer is checked for any other tenant's canaries or text. The model
    /// is bulkhead-echo-leaky when offered (it repeats the previous caller's
    /// prompt), else the first one offered. The probe tenants are deleted at the
    /// end unless --keep. Progress goes to stderr, the scorecard table to stdout.
    ///
    /// Exit status: 0 no leak, 1 at least one leak, 2 the probe could not run.
    ///
    /// Examples:
    ///     bulkhead probe --target http://127.0.0.1:7700 --admin-token "$TOKEN"
    ///     bulkhead probe --tenants 5 --duration 30s --json probe.json
    ///     bulkhead probe --tenant tn_…=bhk_… --tenant tn_…=bhk_… --prompts my-attacks.txt
    #[command(verbatim_doc_comment)]
    Probe(probe::ProbeArgs),
}

/// How the CLI reaches a running server.
#[derive(Debug, Args)]
struct ConnArgs {
    /// Base URL of the server.
    #[arg(
        long,
        env = "BULKHEAD_SERVER",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    server: String,
    /// Admin token. Defaults to the development token in <data-dir>/admin.token.
    #[arg(
        long,
        env = "BULKHEAD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// Data directory to read the development admin token from.
    #[arg(
        long,
        env = "BULKHEAD_DATA_DIR",
        default_value = "./bulkhead-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Print the server's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant: a new compartment with its own data key.
    ///
    /// Example: bulkhead tenant create --name "Acme Corp" --region eu-west --policy gdpr
    Create {
        /// Human-readable name (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// Residency region tag; the tenant's rows and requests stay in it.
        #[arg(long)]
        region: Option<String>,
        /// Policy pack name.
        #[arg(long)]
        policy: Option<String>,
        /// The models the tenant may call, comma-separated; without it, every model
        /// of its region's upstreams.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
    },
    /// Export everything a tenant has stored (documents, sessions, traces), opened,
    /// for a data subject's access or portability request. Logged in both audit logs.
    ///
    /// Example: bulkhead tenant export tn_… --out acme-export.json
    Export {
        tenant_id: String,
        /// File to write (created 0600: it holds the tenant's content).
        #[arg(long)]
        out: PathBuf,
    },
    /// Move a tenant to another compliance pack (default, gdpr, hipaa, pci-dss, soc2
    /// or an operator's own): an audited change that applies from the next request.
    ///
    /// Example: bulkhead tenant policy tn_… pci-dss
    Policy { tenant_id: String, policy: String },
    /// Set or lift a tenant's model allow-list.
    ///
    /// Examples: bulkhead tenant models tn_… --set llama-3.1-8b,mistral-small
    ///           bulkhead tenant models tn_… --all      # every model of its region
    Models {
        tenant_id: String,
        /// The models it may call, comma-separated (each must exist in its region).
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "all",
            required_unless_present = "all"
        )]
        set: Option<Vec<String>>,
        /// Lift the allow-list.
        #[arg(long)]
        all: bool,
    },
    /// Set a tenant's own quotas, rate limits and budgets: each flag given replaces
    /// that one limit, `--unset` removes some (the pack's or the server's default
    /// then applies), the others stay. Prints the tenant's usage against the
    /// effective limits. Audited in the operator's log.
    ///
    /// Examples: bulkhead tenant quotas tn_… --requests-per-second 20 --tokens-per-day 2000000
    ///           bulkhead tenant quotas tn_… --unset stored_bytes,documents
    Quotas {
        tenant_id: String,
        #[command(flatten)]
        set: client::QuotaFlags,
        /// Limits to remove, comma-separated (names as in `bulkhead tenant usage`).
        #[arg(long, value_delimiter = ',')]
        unset: Vec<String>,
    },
    /// Show what a tenant used against each of its quotas, and where each limit
    /// comes from (tenant, pack or server).
    ///
    /// Example: bulkhead tenant usage tn_…
    Usage { tenant_id: String },
    /// List tenants (all pages).
    List,
    /// Show one tenant.
    Show { tenant_id: String },
    /// Stop every request of the tenant's keys (403) without touching its data.
    Quarantine { tenant_id: String },
    /// Lift a quarantine.
    Release { tenant_id: String },
    /// Rotate the tenant's data key; older records are re-sealed in the background.
    RotateKey { tenant_id: String },
    /// Crypto-shred the tenant: destroy its data keys and delete its rows. Irreversible.
    Delete {
        tenant_id: String,
        /// Confirm that the tenant's data should be destroyed for good.
        #[arg(long)]
        yes: bool,
        /// Where to save the signed erasure receipt [default: erasure-<tenant>.json].
        #[arg(long, value_name = "FILE")]
        receipt: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Issue an API key for a tenant. The key is printed once and never again.
    ///
    /// Example: bulkhead key issue tn_0123456789abcdef01234567 --ttl-seconds 86400
    Issue {
        tenant_id: String,
        /// Lifetime in seconds; without it the key lives until revoked.
        #[arg(long)]
        ttl_seconds: Option<u64>,
    },
    /// Revoke an API key; it stops working on the next request.
    Revoke { tenant_id: String, key_id: String },
    /// Quarantine one API key (403 from the next request) without revoking it;
    /// the tenant's other keys keep working. Undo with `key release`.
    Quarantine { tenant_id: String, key_id: String },
    /// Release a quarantined API key.
    Release { tenant_id: String, key_id: String },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the public key (C2SP vkey) that verifies every checkpoint of the server.
    ///
    /// Fetched from the server (no credentials needed) or, with --local, derived from
    /// the signing key file on the server's machine without contacting a server.
    /// Hand it to auditors by a channel the server does not control.
    ///
    /// Examples:
    ///     bulkhead audit public-key > bulkhead.vkey
    ///     bulkhead audit public-key --local --data-dir /var/lib/bulkhead
    #[command(verbatim_doc_comment)]
    PublicKey {
        /// Read the signing key file instead of asking the server.
        #[arg(long)]
        local: bool,
        /// With --local: the signing key file [default: <data-dir>/audit-signing.key].
        #[arg(long, env = "BULKHEAD_AUDIT_SIGNING_KEY", value_name = "FILE")]
        audit_signing_key: Option<PathBuf>,
    },
    /// Print a log's latest signed checkpoint (a C2SP signed note: origin, size, root).
    ///
    /// Examples:
    ///     BULKHEAD_API_KEY=bhk_… bulkhead audit checkpoint
    ///     bulkhead audit checkpoint --tenant tn_… > acme.checkpoint
    ///     bulkhead audit checkpoint --operator
    #[command(verbatim_doc_comment)]
    Checkpoint {
        #[command(flatten)]
        log: audit::LogArgs,
    },
    /// Export a whole log to one file: its signed checkpoint and every entry.
    ///
    /// The file (JSON, format bulkhead-audit-export/v1, one entry per line) is all
    /// `audit verify --file` needs besides the public key. With --since it also
    /// carries the server's consistency proof from that older checkpoint. The file
    /// is replaced only once every entry has arrived.
    ///
    /// Examples:
    ///     bulkhead audit export --tenant tn_… --out acme-2026-11.audit.json
    ///     bulkhead audit export --operator --out operator.audit.json --since operator.checkpoint
    #[command(verbatim_doc_comment)]
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// An older checkpoint of the same log: include the consistency proof from it.
        #[arg(long, value_name = "OLD_CHECKPOINT_FILE")]
        since: Option<PathBuf>,
        #[command(flatten)]
        log: audit::LogArgs,
    },
    /// Verify a tenant's erasure receipt against the operator log: the receipt's
    /// hash is in a `tenant.erase` entry, the entry is in the log under a
    /// checkpoint signed by the key you give, and with --live the server's log
    /// today still holds it.
    ///
    /// Exit status: 0 verified, 3 a check failed (each is printed).
    ///
    /// Examples:
    ///     bulkhead audit verify-receipt --file erasure-tn_….json --vkey-file bulkhead.vkey
    ///     bulkhead audit verify-receipt --file erasure-tn_….json --vkey-file bulkhead.vkey --live
    #[command(verbatim_doc_comment)]
    VerifyReceipt(receipt::VerifyReceiptArgs),
    /// Verify a log, offline from an export file or live from the server.
    ///
    /// Checks the checkpoint's signature under the key you give (never one the
    /// server gives), that every event hashes to its leaf, that the entries are
    /// exactly those the checkpoint commits to, and, with --old-checkpoint, that the
    /// log only grew since (no rollback, no rewritten history). Events of
    /// crypto-shredded tenants show as unreadable; their entries still verify.
    ///
    /// Exit status: 0 verified, 3 verification failed (each problem is printed),
    /// 2 bad arguments, 1 any other error.
    ///
    /// Examples:
    ///     bulkhead audit verify --file acme.audit.json --vkey-file bulkhead.vkey
    ///     bulkhead audit verify --tenant tn_… --vkey-file bulkhead.vkey \
    ///         --old-checkpoint acme.checkpoint --save-checkpoint acme.checkpoint
    #[command(verbatim_doc_comment)]
    Verify {
        /// Verify this export file (from `audit export`); no server is contacted.
        /// Without it, the log is fetched live from --server.
        #[arg(long, value_name = "FILE", conflicts_with = "log")]
        file: Option<PathBuf>,
        /// The server's public key, as `audit public-key` prints it.
        #[arg(
            long,
            value_name = "VKEY",
            required_unless_present = "vkey_file",
            conflicts_with = "vkey_file"
        )]
        vkey: Option<String>,
        /// A file holding the server's public key.
        #[arg(long, value_name = "FILE")]
        vkey_file: Option<PathBuf>,
        /// A checkpoint of this log you kept: check the log is consistent with it.
        #[arg(long, value_name = "FILE")]
        old_checkpoint: Option<PathBuf>,
        /// When verification passes, write the verified checkpoint here, to pass as
        /// --old-checkpoint next time (may be the same file).
        #[arg(long, value_name = "FILE")]
        save_checkpoint: Option<PathBuf>,
        #[command(flatten)]
        log: audit::LogArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Tenant { conn, command } => client::tenant(conn, command)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Key { conn, command } => {
                client::key(conn, command).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Audit { conn, command } => audit::run(conn, command).await,
            Command::Incident { conn, command } => incident::run(conn, command)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Compliance { conn, command } => compliance::compliance(conn, command).await,
            Command::Config { conn, command } => compliance::config(conn, command)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Demo(args) => demo::run(args).await.map(|()| ExitCode::SUCCESS),
            // The probe prints its own errors; its status is its verdict.
            Command::Probe(args) => probe::run(args).await,
        }
    });
    // Each command chose its exit status; an error here is any other failure (1).
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
