//! `bulkhead probe`: runs the isolation test kit (`bulkhead-probe`) against a
//! deployment, shows progress on stderr, prints the scorecard table on stdout,
//! writes the JSON scorecard on request, and exits 0 clean, 1 on any leak, 2 when
//! the probe itself could not run.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bulkhead_probe::{ExistingTenant, ProbeConfig, Progress};
use clap::Args;

/// Exit status when a leak was found.
pub const EXIT_LEAK: u8 = 1;
/// Exit status when the probe could not run (target unreachable, bad token…).
pub const EXIT_PROBE_ERROR: u8 = 2;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Base URL of the deployment to attack.
    #[arg(
        long,
        env = "BULKHEAD_SERVER",
        default_value = "http://127.0.0.1:7700",
        value_name = "URL"
    )]
    target: String,
    /// The deployment's admin token (creates and deletes the probe tenants,
    /// issues and revokes their keys).
    #[arg(long, env = "BULKHEAD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Probe tenants to create (2 to 50).
    #[arg(long, default_value_t = 3)]
    tenants: usize,
    /// How long the concurrent mixed-tenant load runs: 5s, 500ms, 2m or seconds.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent workers of the load family (1 to 64).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Use this existing tenant instead of creating them (repeat, at least two):
    /// TENANT_ID=API_KEY. Its seeded documents, sessions and extra keys are
    /// removed afterwards; the tenant itself is left alone.
    #[arg(long = "tenant", value_name = "TENANT_ID=API_KEY", value_parser = parse_existing)]
    existing: Vec<ExistingTenantArg>,
    /// Attack prompts to use instead of the built-in corpus (one per line, # comments).
    #[arg(long, value_name = "FILE")]
    prompts: Option<PathBuf>,
    /// Write the JSON scorecard here (format bulkhead-probe-scorecard, version 1).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the probe tenants and their data (for looking at them afterwards).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone)]
pub struct ExistingTenantArg(ExistingTenant);

fn parse_existing(s: &str) -> Result<ExistingTenantArg, String> {
    let (id, key) = s
        .split_once('=')
        .ok_or_else(|| "expected TENANT_ID=API_KEY".to_owned())?;
    if id.is_empty() || key.is_empty() {
        return Err("expected TENANT_ID=API_KEY".into());
    }
    Ok(ExistingTenantArg(ExistingTenant {
        id: id.to_owned(),
        key: key.to_owned(),
    }))
}

/// `5s`, `500ms`, `2m` or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("{s:?}: the unit must be ms, s or m")),
    }
}

fn show_progress(p: &Progress) {
    let line = match p {
        Progress::Note(note) => format!("probe: {note}"),
        Progress::Seeded {
            tenants,
            documents,
            model,
        } => format!(
            "probe: seeded {tenants} tenants with {documents} documents; model {}",
            model
                .as_deref()
                .unwrap_or("(none offered: gateway families cannot run)")
        ),
        Progress::FamilyStarted(f) => format!("probe: {} …", f.name()),
        Progress::FamilyDone(s) => format!(
            "probe: {} done: {} attempts, {} refused, {} leaks, {} errors ({} ms)",
            s.family.name(),
            s.attempts,
            s.refused,
            s.leaks,
            s.errors,
            s.elapsed_ms
        ),
        Progress::CleanedUp(c) if c.kept => {
            "probe: --keep: the probe tenants are left in place".into()
        }
        Progress::CleanedUp(c) => format!(
            "probe: cleaned up: {} tenants deleted, {} items deleted, {} failures",
            c.tenants_deleted, c.items_deleted, c.failures
        ),
    };
    eprintln!("{line}");
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let prompts = match &args.prompts {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read the attack prompts {}", path.display()))?;
            match bulkhead_probe::parse_prompts(&text) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return Ok(ExitCode::from(EXIT_PROBE_ERROR));
                }
            }
        }
        None => None,
    };
    let mut config = ProbeConfig::new(&args.target, &args.admin_token);
    config.tenants = args.tenants;
    config.duration = args.duration;
    config.concurrency = args.concurrency;
    config.existing = args.existing.into_iter().map(|e| e.0).collect();
    config.prompts = prompts;
    config.keep = args.keep;
    config.progress = Some(Arc::new(show_progress));

    let card = match bulkhead_probe::run(config).await {
        Ok(card) => card,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_PROBE_ERROR));
        }
    };
    print!("{}", card.render());
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&card).context("encode the scorecard")?;
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("error: write the scorecard to {}: {e}", path.display());
            return Ok(ExitCode::from(EXIT_PROBE_ERROR));
        }
    }
    if card.clean {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_LEAK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tenant_pairs_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_existing("tn_1=bhk_2.x").is_ok());
        assert!(parse_existing("tn_1").is_err());
    }
}
