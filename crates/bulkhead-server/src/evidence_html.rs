//! The evidence report as one self-contained HTML page an auditor can read,
//! print or archive: no script, no external resource, every value escaped by
//! maud. The JSON form holds the same facts.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::evidence::{EvidenceReport, LogVerification};

const STYLE: &str = r#"
:root { --ok:#0a7d3b; --bad:#b3261e; --warn:#9a6700; --ink:#1c2024; --mute:#5c6670; --line:#d8dde3; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0; background: #fff; }
header { background: #12263a; color: #fff; padding: 28px 40px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 0; color: #c5d3e0; }
main { max-width: 1020px; margin: 0 auto; padding: 24px 40px 60px; }
section { margin: 28px 0; }
h2 { font-size: 18px; border-bottom: 2px solid var(--line); padding-bottom: 6px; margin-bottom: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { width: 32%; color: var(--mute); font-weight: 500; }
table.list th { width: auto; background: var(--bg); color: var(--ink); }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; word-break: break-all; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 13px; font-weight: 600; color: #fff; }
.ok { background: var(--ok); } .bad { background: var(--bad); } .warn { background: var(--warn); }
.summary { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: var(--bg); }
.card b { display: block; font-size: 20px; }
.card span { color: var(--mute); font-size: 13px; }
ul.findings li { margin: 4px 0; }
pre { background: var(--bg); border: 1px solid var(--line); padding: 10px; font-size: 12px; overflow-x: auto; }
footer { color: var(--mute); font-size: 13px; margin-top: 40px; }
@media print { header { background: #fff; color: #000; border-bottom: 2px solid #000; } header p { color: #333; } }
"#;

fn badge(ok: bool, yes: &str, no: &str) -> Markup {
    html! { @if ok { span.badge.ok { (yes) } } @else { span.badge.bad { (no) } } }
}

fn opt(v: Option<u64>, unit: &str) -> String {
    match v {
        Some(secs) if unit == "secs" => human_secs(secs),
        Some(n) => n.to_string(),
        None => "not limited".into(),
    }
}

fn human_secs(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{s} seconds"),
    }
}

fn log_rows(name: &str, v: &LogVerification) -> Markup {
    html! {
        tr {
            td { (name) }
            td { (badge(v.ok, "verified", "FAILED")) }
            td { (v.size) }
            td { (badge(v.signature_ok, "valid", "invalid")) }
            td { (v.detail) }
        }
    }
}

/// Renders the report: the page frame, header and footer; each section is a
/// function of its own.
pub fn render(r: &EvidenceReport) -> String {
    let t = &r.tenant;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Evidence report — " (t.name) " (" (t.id) ")" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "Isolation evidence report: " (t.name) }
                    p {
                        "Tenant " code { (t.id) } " · generated " (r.generated_at) " by " (r.server)
                        " · activity " (r.activity.from) " to " (r.activity.to)
                    }
                }
                main {
                    (summary(r))
                    (tenant_section(r))
                    (encryption_section(r))
                    (audit_section(r))
                    (residency_section(r))
                    (retention_section(r))
                    (erasure_section(r))
                    (activity_section(r))
                    (alerts_section(r))
                    (baseline_section(r))
                    footer {
                        "Every figure above was read or recomputed by the server when the report was made. "
                        "The same facts are in the JSON form (format=json); the checkpoints verify offline with "
                        code { "bulkhead audit verify" } " and the verifier key above."
                    }
                }
            }
        }
    };
    page.into_string()
}

/// The summary: four headline figures and the findings.
fn summary(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Summary" }
            div.summary {
                div.card { b { (badge(r.audit.tenant_log.ok, "verified", "FAILED")) } span { "tenant audit log" } }
                div.card { b { (badge(r.residency.allowed, "compliant", "VIOLATION")) } span { "residency (" (r.residency.region) ")" } }
                div.card { b { "v" (r.encryption.current_key_version) } span { "current data key" } }
                div.card { b { (r.incidents.iter().filter(|i| i.status == "open").count()) } span { "open incidents" } }
            }
            @if r.findings.is_empty() {
                p { (badge(true, "in order", "")) " Nothing needs attention." }
            } @else {
                p { span.badge.warn { "attention" } " " (r.findings.len()) " finding(s):" }
                ul.findings { @for f in &r.findings { li { (f) } } }
            }
        }
    }
}

/// The tenant: who it is, its status, its pack and models.
fn tenant_section(r: &EvidenceReport) -> Markup {
    let t = &r.tenant;
    html! {
        section {
            h2 { "Tenant" }
            table {
                tr { th { "Name" } td { (t.name) } }
                tr { th { "Id" } td.mono { (t.id) } }
                tr { th { "Status" } td { (badge(t.status == "active", "active", "quarantined")) } }
                tr { th { "Created" } td { (t.created_at) } }
                tr { th { "Compliance pack" } td { b { (t.policy) } " — " (t.policy_description) } }
                tr { th { "Models" } td {
                    @match &t.models { Some(m) => (m.join(", ")), None => "every model of its region" }
                } }
            }
        }
    }
}

/// Encryption: the cipher, the binding, the key versions.
fn encryption_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Encryption" }
            table {
                tr { th { "Cipher" } td { (r.encryption.aead) } }
                tr { th { "Binding" } td { (r.encryption.binding) } }
                tr { th { "Master key" } td { (r.encryption.master_key_source) } }
                tr { th { "Current data key" } td { "version " (r.encryption.current_key_version) } }
                tr { th { "Key versions held" } td {
                    @for k in &r.encryption.key_versions { "v" (k.version) " (created " (k.created_at) ") " }
                } }
                tr { th { "Records awaiting re-seal" } td { (r.encryption.records_pending_reseal) } }
            }
        }
    }
}

/// The audit logs as re-verified for this report, and the signed checkpoint.
fn audit_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Audit logs" }
            p { "Each log was re-verified when this report was made: a fresh checkpoint was signed, its Ed25519 signature checked with the server's key, and the Merkle root recomputed from every stored entry." }
            table.list {
                tr { th { "Log" } th { "Result" } th { "Entries" } th { "Signature" } th { "Detail" } }
                (log_rows("tenant", &r.audit.tenant_log))
                (log_rows("operator", &r.audit.operator_log))
            }
            table {
                tr { th { "First entry" } td { (r.audit.first_entry_at.as_deref().unwrap_or("none yet")) } }
                tr { th { "Retention floor" } td { (r.audit.retention_days_min) " days (entries are never deleted by the server) " (badge(r.audit.retention_met, "met", "not met")) } }
                tr { th { "Verifier key" } td.mono { (r.vkey) } }
            }
            details { summary { "Signed checkpoint of the tenant log" } pre { (r.audit.tenant_log.checkpoint) } }
        }
    }
}

/// Residency: where the rows are, what the pack requires, which upstreams are reachable.
fn residency_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Residency" }
            table {
                tr { th { "Region" } td { (r.residency.region) " " (badge(r.residency.allowed, "allowed by the pack", "NOT allowed by the pack")) } }
                tr { th { "Rows stored in" } td { (r.residency.store) } }
                tr { th { "Required by the pack" } td {
                    @if r.residency.required_regions.is_empty() { "any region" } @else { (r.residency.required_regions.join(", ")) }
                } }
            }
            table.list {
                tr { th { "Upstream reachable" } th { "Region" } th { "Models" } }
                @for u in &r.residency.upstreams {
                    tr { td { (u.name) } td { (u.region.as_deref().unwrap_or("in-process (built-in)")) } td { (u.models.join(", ")) } }
                }
                @if r.residency.upstreams.is_empty() { tr { td colspan="3" { "No upstream serves this region; model calls are refused." } } }
            }
        }
    }
}

/// Retention: the pack's time limits and the last sweep.
fn retention_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Retention" }
            table {
                tr { th { "Pack" } td { (r.retention.pack) } }
                tr { th { "Documents (default / longest)" } td { (opt(r.retention.document_ttl_secs_default, "secs")) " / " (opt(r.retention.document_ttl_secs_max, "secs")) } }
                tr { th { "Sessions" } td { (opt(r.retention.session_ttl_secs, "secs")) } }
                tr { th { "Decision traces" } td { (opt(r.retention.trace_ttl_secs, "secs")) } }
                tr { th { "Last sweep" } td {
                    @match &r.retention.last_sweep {
                        Some(s) => { (s.at) ": " (s.deleted) " expired row(s) deleted across " (s.tenants) " tenant(s)" },
                        None => "no sweep has run in this server process yet",
                    }
                } }
            }
        }
    }
}

/// Erasures in the period.
fn erasure_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Erasures in the period" }
            table {
                tr { th { "Documents deleted" } td { (r.erasures.documents_deleted) } }
                tr { th { "Sessions sanitized" } td { (r.erasures.sessions_sanitized) } }
                tr { th { "Records expired and swept" } td { (r.erasures.records_expired) } }
                tr { th { "Data exports" } td { (r.erasures.exports) } }
                tr { th { "Last erasure" } td { (r.erasures.last_at.as_deref().unwrap_or("none")) } }
            }
        }
    }
}

/// Activity in the period: events by kind and refusals.
fn activity_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Activity in the period" }
            table.list {
                tr { th { "Event" } th { "Count" } }
                @for (kind, n) in &r.activity.events { tr { td.mono { (kind) } td { (n) } } }
                tr { td { b { "refused" } } td { b { (r.activity.denied) } } }
            }
        }
    }
}

/// Alerts and incidents concerning the tenant.
fn alerts_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Alerts and incidents" }
            @if r.alerts.is_empty() && r.incidents.is_empty() {
                p { "None concerning this tenant." }
            }
            @if !r.alerts.is_empty() {
                table.list {
                    tr { th { "Alert" } th { "Severity" } th { "When" } th { "Summary" } }
                    @for a in &r.alerts { tr { td.mono { (a.kind) } td { (a.severity) } td { (a.created_at) } td { (a.summary) } } }
                }
            }
            @if !r.incidents.is_empty() {
                table.list {
                    tr { th { "Incident" } th { "Status" } th { "Window" } th { "Title" } }
                    @for i in &r.incidents { tr { td.mono { (i.id) } td { (i.status) } td { (i.from) " – " (i.to) } td { (i.title) } } }
                }
            }
        }
    }
}

/// The server's policy baseline and whether it drifted.
fn baseline_section(r: &EvidenceReport) -> Markup {
    html! {
        section {
            h2 { "Server policy baseline" }
            table {
                tr { th { "Effective policy" } td.mono { (r.policy_baseline.hash) } }
                tr { th { "Approved baseline" } td.mono { (r.policy_baseline.approved_hash) } }
                tr { th { "Drift" } td { (badge(!r.policy_baseline.drift, "none", "DRIFTED")) } }
            }
        }
    }
}
