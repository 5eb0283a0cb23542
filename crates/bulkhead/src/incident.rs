//! `bulkhead incident …`: impact reports and incidents over the admin API, with
//! every item's inclusion proof checked here against the report's signed
//! checkpoints, as an outside investigator would.

use std::path::PathBuf;

use anyhow::Context;
use bulkhead_api::incident::{ImpactItem, ImpactReport, Incident, IncidentList, IncidentShown};
use bulkhead_client::{Answer, Method};
use bulkhead_ledger::note::NoteVerifier;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::ConnArgs;
use crate::client::{AdminClient, segment};

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// What was read, returned and blocked for one tenant in a time window: every
    /// context read, model call, refusal and leak from its audit log and the
    /// operator log, each with an inclusion proof that this command checks
    /// against the signed checkpoint the server made for the report.
    ///
    /// Examples:
    ///     bulkhead incident report --tenant tn_… --from 2026-11-28T09:00:00Z
    ///     bulkhead incident report --tenant tn_… --from 2026-11-28T09:00:00Z \
    ///         --to 2026-11-28T10:00:00Z --out impact.json --vkey-file audit.vkey
    #[command(verbatim_doc_comment)]
    Report {
        #[arg(long)]
        tenant: String,
        /// Start of the window, RFC 3339 (e.g. 2026-11-28T09:00:00Z).
        #[arg(long)]
        from: String,
        /// End of the window, RFC 3339 [default: now].
        #[arg(long)]
        to: Option<String>,
        /// Also write the whole report (JSON, with proofs) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The server's verifier key to check checkpoints with (from a trusted
        /// source). Without it the key is fetched from the server itself, which
        /// proves consistency but not the server's identity.
        #[arg(long, value_name = "FILE")]
        vkey_file: Option<PathBuf>,
    },
    /// Open an incident for a tenant and window (logged in the operator log and
    /// the tenant's own). Critical alerts open one by themselves.
    Open {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        title: Option<String>,
        /// The alert that started it.
        #[arg(long)]
        alert: Option<String>,
    },
    /// List incidents, newest first.
    List,
    /// One incident with its impact report.
    Show { id: String },
    /// Close an incident (logged).
    Close { id: String },
}

pub async fn run(conn: ConnArgs, command: IncidentCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(conn)?;
    match command {
        IncidentCommand::Report {
            tenant,
            from,
            to,
            out,
            vkey_file,
        } => report(&client, &tenant, &from, to, out, vkey_file).await?,
        IncidentCommand::Open {
            tenant,
            from,
            to,
            title,
            alert,
        } => {
            let body = json!({"tenant": tenant, "from": from, "to": to, "title": title, "alert_id": alert});
            let body = strip_nulls(body);
            let incident: Answer<Incident> =
                client.typed(Method::POST, "/incidents", Some(body)).await?;
            client.print(&incident, |i| {
                format!(
                    "opened {}; see its impact report with `bulkhead incident show {}`",
                    incident_line(i),
                    i.id
                )
            });
        }
        IncidentCommand::List => {
            let list: Answer<IncidentList> = client.typed(Method::GET, "/incidents", None).await?;
            client.print(&list, |l| {
                let lines: Vec<String> = l.incidents.iter().map(incident_line).collect();
                if lines.is_empty() {
                    "no incidents".to_owned()
                } else {
                    lines.join("\n")
                }
            });
        }
        IncidentCommand::Show { id } => {
            let shown: Answer<IncidentShown> = client
                .typed(Method::GET, &format!("/incidents/{}", segment(&id)?), None)
                .await?;
            let vkey = client.public_key().await?;
            let verified = verify_report(&shown.value.report, vkey.trim())?;
            client.print(&shown, |s| {
                format!(
                    "{}\n{}",
                    incident_line(&s.incident),
                    human(&s.report, verified)
                )
            });
        }
        IncidentCommand::Close { id } => {
            let closed: Answer<Incident> = client
                .typed(
                    Method::POST,
                    &format!("/incidents/{}/close", segment(&id)?),
                    None,
                )
                .await?;
            client.print(&closed, |i| format!("closed {}", incident_line(i)));
        }
    }
    Ok(())
}

/// `bulkhead incident report`: every proof checked here before anything is
/// written or printed.
async fn report(
    client: &AdminClient,
    tenant: &str,
    from: &str,
    to: Option<String>,
    out: Option<PathBuf>,
    vkey_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let to = to.unwrap_or_else(now_rfc3339);
    let path = format!(
        "/tenants/{}/impact?from={}&to={}",
        segment(tenant)?,
        encode(from),
        encode(&to)
    );
    let report: Answer<ImpactReport> = client.typed(Method::GET, &path, None).await?;
    let vkey = match vkey_file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("read the verifier key from {}", path.display()))?,
        None => client.public_key().await?,
    };
    let verified = verify_report(&report.value, vkey.trim())?;
    if let Some(out) = out {
        let bytes = serde_json::to_vec_pretty(&report.raw).context("encode the report")?;
        bulkhead_crypto::write_secret_file(&out, &bytes)
            .with_context(|| format!("write {}", out.display()))?;
        eprintln!("wrote the report to {} (0600)", out.display());
    }
    client.print(&report, |r| human(r, verified));
    Ok(())
}

fn strip_nulls(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    body
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    bulkhead_types::UnixMillis(now).rfc3339()
}

/// RFC 3339 times carry `+` and `:`; a query string needs `+` escaped.
fn encode(raw: &str) -> String {
    raw.replace('+', "%2B")
}

fn incident_line(i: &Incident) -> String {
    format!(
        "{}  {:<6}  tenant={}  {} .. {}  {}",
        i.id, i.status, i.tenant, i.from, i.to, i.title,
    )
}

/// Checks both checkpoints' signatures and every item's inclusion proof; returns
/// how many proofs held. Any failure is an error that names the item.
pub(crate) fn verify_report(report: &ImpactReport, vkey: &str) -> anyhow::Result<usize> {
    let verifier = NoteVerifier::from_vkey(vkey).context("parse the verifier key")?;
    Ok(bulkhead_client::verify::impact_report(report, &verifier)?)
}

fn human(r: &ImpactReport, verified: usize) -> String {
    let s = &r.summary;
    let mut out = format!(
        "impact report for {} from {} to {}\n\
         reads: {}   model answers returned: {}   blocked: {}   denied: {}   other: {}\n\
         leaks blocked: {} to this tenant, {} of this tenant's data to others\n\
         documents: {}   sessions: {}   traces: {}\n",
        r.tenant,
        r.from,
        r.to,
        s.reads,
        s.model_calls_returned,
        s.blocked,
        s.denied,
        s.other,
        s.leaks_blocked_to_tenant,
        s.leaks_blocked_of_tenant,
        s.documents.len(),
        s.sessions.len(),
        s.traces.len(),
    );
    let actors: Vec<String> = s.actors.iter().map(|(a, n)| format!("{a} ({n})")).collect();
    out.push_str(&format!("actors: {}\n", actors.join(", ")));
    for (title, items) in [
        ("read", &r.read),
        ("returned", &r.returned),
        ("blocked or refused", &r.blocked),
    ] {
        if items.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for i in items.iter().take(50) {
            out.push_str(&item_line(i));
        }
        if items.len() > 50 {
            out.push_str(&format!(
                "  … {} more (--json or --out for all)\n",
                items.len() - 50
            ));
        }
    }
    for (section, log) in [
        ("tenant_log", &r.tenant_log),
        ("operator_log", &r.operator_log),
    ] {
        if log.truncated {
            out.push_str(&format!(
                "\nwarning: the {section} window was larger than one report reads; narrow --from/--to\n"
            ));
        }
    }
    out.push_str(&format!(
        "\n{verified} inclusion proof(s) verified against the signed checkpoints"
    ));
    out
}

fn item_line(i: &ImpactItem) -> String {
    format!(
        "  {} {}#{}  {:<16} {:<10} {} {}\n",
        i.time,
        i.log,
        i.index,
        i.kind,
        i.outcome,
        i.actor,
        i.subjects.join(" "),
    )
}
