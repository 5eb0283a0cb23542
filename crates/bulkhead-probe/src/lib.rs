//! The isolation test kit: adversarial cross-tenant attacks against a live Bulkhead,
//! through nothing but its public HTTP API (the admin plane to set up and clean up,
//! the tenant plane to attack), so it runs against any deployment.
//!
//! `run` creates probe tenants (or uses given ones), seeds each with documents that
//! carry unique canaries and unique text, a session and a decision trace, plays
//! every attack family (`Family::ALL`), checks every answer it receives for any
//! other tenant's canaries or text, deletes what it created, and returns a
//! `Scorecard`. Each family is also callable alone (`families::…` on a
//! `Fleet::seed`ed fleet) from a user's own integration tests.
//!
//! It must never: print or store another tenant's leaked text (a leak names the
//! marker by a short hash), or try an admin action that could destroy a real
//! tenant if the deployment wrongly allowed it.

#![forbid(unsafe_code)]

pub mod families;
pub mod fleet;
pub mod http;
pub mod scorecard;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use families::LoadConfig;
pub use fleet::{Fleet, ProbeTenant};
pub use scorecard::{Evidence, Family, FamilyScore, Leak, Scorecard};

/// The attack corpus compiled in: one prompt per line, `#` comments.
pub const ATTACK_PROMPTS: &str = include_str!("../testdata/attack-prompts.txt");

/// Limits on what a run may ask for.
pub const TENANTS_MIN: usize = 2;
pub const TENANTS_MAX: usize = 50;
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
pub const CONCURRENCY_MAX: usize = 64;
pub const PROMPTS_MAX: usize = 10_000;
pub const PROMPT_BYTES_MAX: usize = 4096;

/// A tenant the run is given instead of creating one: its id and an API key.
#[derive(Debug, Clone)]
pub struct ExistingTenant {
    pub id: String,
    pub key: String,
}

/// What the run is doing, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    Note(String),
    Seeded {
        tenants: usize,
        documents: u64,
        model: Option<String>,
    },
    FamilyStarted(Family),
    FamilyDone(FamilyScore),
    CleanedUp(scorecard::Cleanup),
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// One run's settings.
#[derive(Clone)]
pub struct ProbeConfig {
    /// Base URL of the deployment, e.g. `http://127.0.0.1:7700`.
    pub target: String,
    pub admin_token: String,
    /// Tenants to create (ignored when `existing` is given).
    pub tenants: usize,
    /// How long the concurrent-load family runs.
    pub duration: Duration,
    pub concurrency: usize,
    /// Tenants to use instead of creating new ones (at least two).
    pub existing: Vec<ExistingTenant>,
    /// Attack prompts; `None` uses the compiled-in corpus.
    pub prompts: Option<Vec<String>>,
    /// Leave the created tenants (and seeded data) in place.
    pub keep: bool,
    /// The families to play (default: all, in `Family::ALL` order).
    pub families: Vec<Family>,
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin token and tenant keys are secrets: never formatted.
        f.debug_struct("ProbeConfig")
            .field("target", &self.target)
            .field("tenants", &self.tenants)
            .field("duration", &self.duration)
            .field("concurrency", &self.concurrency)
            .field("existing", &self.existing.len())
            .field("keep", &self.keep)
            .field("families", &self.families)
            .finish_non_exhaustive()
    }
}

impl ProbeConfig {
    /// Defaults: 3 tenants, 5 s of load with 8 workers, the built-in corpus, all
    /// families, cleanup on.
    pub fn new(target: &str, admin_token: &str) -> Self {
        Self {
            target: target.to_owned(),
            admin_token: admin_token.to_owned(),
            tenants: 3,
            duration: Duration::from_secs(5),
            concurrency: 8,
            existing: Vec::new(),
            prompts: None,
            keep: false,
            families: Family::ALL.to_vec(),
            progress: None,
        }
    }

    fn validate(&self) -> Result<(), ProbeError> {
        let tenants = if self.existing.is_empty() {
            self.tenants
        } else {
            self.existing.len()
        };
        if !(TENANTS_MIN..=TENANTS_MAX).contains(&tenants) {
            return Err(ProbeError::Config(format!(
                "the probe needs {TENANTS_MIN} to {TENANTS_MAX} tenants, got {tenants}"
            )));
        }
        if self.duration > DURATION_MAX {
            return Err(ProbeError::Config(format!(
                "the duration may be at most {} s",
                DURATION_MAX.as_secs()
            )));
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.concurrency) {
            return Err(ProbeError::Config(format!(
                "concurrency must be 1 to {CONCURRENCY_MAX}"
            )));
        }
        if self.admin_token.is_empty() {
            return Err(ProbeError::Config("an admin token is required".into()));
        }
        Ok(())
    }
}

/// Why a run could not produce a scorecard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("invalid probe settings: {0}")]
    Config(String),
    #[error("the target is unreachable: {0}")]
    Unreachable(String),
    #[error("setting up the probe tenants failed: {0}")]
    Setup(String),
    #[error("invalid attack corpus: {0}")]
    Corpus(String),
}

/// The prompts of a corpus file: one per line, blank lines and `#` comments
/// skipped, each at most `PROMPT_BYTES_MAX` bytes, at most `PROMPTS_MAX`.
pub fn parse_prompts(text: &str) -> Result<Vec<String>, ProbeError> {
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if prompts.is_empty() {
        return Err(ProbeError::Corpus("no prompts in it".into()));
    }
    if prompts.len() > PROMPTS_MAX {
        return Err(ProbeError::Corpus(format!(
            "{} prompts; at most {PROMPTS_MAX}",
            prompts.len()
        )));
    }
    if let Some(p) = prompts.iter().position(|p| p.len() > PROMPT_BYTES_MAX) {
        return Err(ProbeError::Corpus(format!(
            "prompt {} is longer than {PROMPT_BYTES_MAX} bytes",
            p + 1
        )));
    }
    Ok(prompts)
}

/// The compiled-in corpus.
pub fn builtin_prompts() -> Vec<String> {
    // The corpus is checked by this crate's tests; it always parses.
    parse_prompts(ATTACK_PROMPTS).unwrap_or_default()
}

/// Seeds, attacks, cleans up. Leaks are in the scorecard (`clean == false`), not
/// an error; an error means the run could not be made.
pub async fn run(config: ProbeConfig) -> Result<Scorecard, ProbeError> {
    config.validate()?;
    let started = Instant::now();
    let prompts = match &config.prompts {
        Some(p) if p.is_empty() => return Err(ProbeError::Corpus("no prompts given".into())),
        Some(p) => p.clone(),
        None => builtin_prompts(),
    };
    let report = |p: Progress| {
        if let Some(f) = &config.progress {
            f(&p);
        }
    };
    let mut card = Scorecard::new(config.target.trim_end_matches('/'));
    card.attack_prompts = prompts.len() as u64;
    let fleet = Fleet::seed(&config, prompts).await?;
    card.tenants = fleet.tenants().len() as u64;
    card.tenants_created = fleet.tenants().iter().all(|t| t.created);
    card.documents_seeded = fleet.documents_seeded();
    card.model = fleet.model().map(str::to_owned);
    card.model_regurgitates = fleet.model() == Some(fleet::LEAKY_MODEL);
    report(Progress::Seeded {
        tenants: fleet.tenants().len(),
        documents: fleet.documents_seeded(),
        model: card.model.clone(),
    });
    let load = LoadConfig {
        duration: config.duration,
        concurrency: config.concurrency,
    };
    for family in Family::ALL {
        if !config.families.contains(&family) {
            continue;
        }
        report(Progress::FamilyStarted(family));
        let outcome = families::run_family(&fleet, family, load).await;
        report(Progress::FamilyDone(outcome.score.clone()));
        card.add(outcome);
    }
    card.cleanup = if config.keep {
        scorecard::Cleanup {
            kept: true,
            ..Default::default()
        }
    } else {
        fleet.cleanup().await
    };
    report(Progress::CleanedUp(card.cleanup.clone()));
    card.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(card)
}
