//! `bulkhead compliance report` (the per-tenant evidence report, HTML and JSON)
//! and `bulkhead config show|approve` (the isolation policy baseline).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bulkhead_api::admin_views::DriftStatus;
use bulkhead_client::{Answer, Method};
use clap::Subcommand;

use crate::ConnArgs;
use crate::client::{AdminClient, segment};

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// The evidence report of one tenant, as an auditor reads it: encryption and
    /// key versions, its audit log re-verified by the server (root recomputed,
    /// signature checked), residency, retention and the last sweep, erasures,
    /// activity, alerts and incidents. Writes an HTML page and the JSON it was
    /// made from, and prints the findings.
    ///
    /// Examples:
    ///     bulkhead compliance report --tenant tn_…
    ///     bulkhead compliance report --tenant tn_… --from 2026-09-01T00:00:00Z \
    ///         --html acme.html --json acme.json --strict
    #[command(verbatim_doc_comment)]
    Report {
        #[arg(long)]
        tenant: String,
        /// Start of the activity period, RFC 3339 [default: 90 days before --to].
        #[arg(long)]
        from: Option<String>,
        /// End of the activity period, RFC 3339 [default: now].
        #[arg(long)]
        to: Option<String>,
        /// Where to write the HTML page [default: evidence-<tenant>.html].
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Where to write the JSON [default: evidence-<tenant>.json].
        #[arg(long, value_name = "FILE")]
        json_out: Option<PathBuf>,
        /// Exit 1 when the report has findings (for scheduled checks).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The server's effective isolation policy (packs, upstreams and regions,
    /// containment, alert thresholds), its hash, the approved baseline's hash and
    /// what differs.
    Show,
    /// Make the effective policy the approved baseline (audited as
    /// `config.approve`); until then a changed policy raises `config_drift`.
    Approve,
}

/// The failure a `--strict` report ends with.
#[derive(Debug)]
pub struct HasFindings(pub usize);

impl std::fmt::Display for HasFindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the report has {} finding(s)", self.0)
    }
}

impl std::error::Error for HasFindings {}

pub async fn compliance(conn: ConnArgs, command: ComplianceCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(conn)?;
    let ComplianceCommand::Report {
        tenant,
        from,
        to,
        html,
        json_out,
        strict,
    } = command;
    let mut path = format!("/tenants/{}/evidence?format=json", segment(&tenant)?);
    for (name, value) in [("from", &from), ("to", &to)] {
        if let Some(v) = value {
            path.push_str(&format!("&{name}={}", v.replace('+', "%2B")));
        }
    }
    let value = client.call(Method::GET, &path, None).await?;
    let report: bulkhead_server::evidence::EvidenceReport =
        serde_json::from_value(value.clone()).context("read the server's evidence report")?;
    let html_path = html.unwrap_or_else(|| PathBuf::from(format!("evidence-{tenant}.html")));
    let json_path = json_out.unwrap_or_else(|| PathBuf::from(format!("evidence-{tenant}.json")));
    let page = bulkhead_server::evidence_html::render(&report);
    bulkhead_crypto::write_secret_file(&html_path, page.as_bytes())
        .with_context(|| format!("write {}", html_path.display()))?;
    let bytes = serde_json::to_vec_pretty(&value).context("encode the report")?;
    bulkhead_crypto::write_secret_file(&json_path, &bytes)
        .with_context(|| format!("write {}", json_path.display()))?;
    client.print_raw(&value, || {
        let mut out = format!(
            "evidence report for {} ({}): pack {}, region {}, data key v{}\n\
             tenant log: {} ({})\noperator log: {} ({})\n",
            report.tenant.name,
            report.tenant.id,
            report.tenant.policy,
            report.tenant.region,
            report.encryption.current_key_version,
            if report.audit.tenant_log.ok {
                "verified"
            } else {
                "FAILED"
            },
            report.audit.tenant_log.detail,
            if report.audit.operator_log.ok {
                "verified"
            } else {
                "FAILED"
            },
            report.audit.operator_log.detail,
        );
        if report.findings.is_empty() {
            out.push_str("findings: none\n");
        } else {
            out.push_str("findings:\n");
            for f in &report.findings {
                out.push_str(&format!("  - {f}\n"));
            }
        }
        out.push_str(&format!(
            "wrote {} and {} (0600)",
            html_path.display(),
            json_path.display()
        ));
        out
    });
    if strict && !report.findings.is_empty() {
        eprintln!("error: {}", HasFindings(report.findings.len()));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn config(conn: ConnArgs, command: ConfigCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(conn)?;
    let status: Answer<DriftStatus> = match command {
        ConfigCommand::Show => client.typed(Method::GET, "/config/policy", None).await?,
        ConfigCommand::Approve => client.typed(Method::POST, "/config/approve", None).await?,
    };
    client.print(&status, drift_line);
    Ok(())
}

fn drift_line(s: &DriftStatus) -> String {
    let hash = &s.hash;
    if s.drift {
        format!(
            "DRIFT: the effective policy {hash} differs from the approved {} in: {}\n\
             approve it with `bulkhead config approve` if the change was intended",
            s.approved_hash,
            s.changed.join(", ")
        )
    } else {
        format!("the effective policy {hash} is the approved baseline")
    }
}
