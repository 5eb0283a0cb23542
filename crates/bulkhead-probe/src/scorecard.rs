//! The scorecard: what each attack family tried and found, as a table for people
//! and as stable JSON for machines.
//!
//! The JSON (`format: "bulkhead-probe-scorecard"`, `version: 1`) only ever gains
//! fields within a version; a renamed or removed field bumps `version`. A leak
//! names the family, the attacking and the victim tenant and the kind of
//! evidence — never the leaked text: at most the first 12 hex digits of the
//! SHA-256 of the marker that was seen.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The JSON's format name and version.
pub const FORMAT: &str = "bulkhead-probe-scorecard";
pub const VERSION: u32 = 1;
/// Leaks listed one by one in the JSON (all are counted).
pub const LEAKS_LISTED_MAX: usize = 200;
/// Leaks shown one by one in the human table.
pub const LEAKS_SHOWN_MAX: usize = 20;
/// Error messages kept as samples (all are counted).
pub const ERROR_SAMPLES_MAX: usize = 20;

/// The attack families, in the order `run` plays them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Tenant keys against `/admin/v1/*`, the admin token against `/v1/*`.
    AdminPlane,
    /// Other tenants' real document, session and trace ids, guessed ids, listing.
    IdGuessing,
    /// Searches for other tenants' canaries and text.
    Search,
    /// The attack corpus in the user's own message and planted in its documents.
    PromptInjection,
    /// The same prompt from every tenant, whole and streamed.
    CacheProbing,
    /// Bit flips, another tenant's key id with one's own secret, truncation,
    /// expired and revoked keys.
    TokenTampering,
    /// Concurrent mixed-tenant traffic, every answer checked.
    ConcurrentLoad,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::AdminPlane,
        Family::IdGuessing,
        Family::Search,
        Family::PromptInjection,
        Family::CacheProbing,
        Family::TokenTampering,
        Family::ConcurrentLoad,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::AdminPlane => "admin_plane",
            Family::IdGuessing => "id_guessing",
            Family::Search => "search",
            Family::PromptInjection => "prompt_injection",
            Family::CacheProbing => "cache_probing",
            Family::TokenTampering => "token_tampering",
            Family::ConcurrentLoad => "concurrent_load",
        }
    }
}

/// Why an answer counts as a leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Another tenant's canary string was in the answer.
    ForeignCanary,
    /// Another tenant's unique document text was in the answer.
    ForeignText,
    /// Another tenant's id came back (in a listing or search results).
    ForeignId,
    /// A foreign id was answered other than byte-for-byte like a missing one.
    NotIndistinguishable,
    /// A tampered, expired or revoked credential was accepted.
    CredentialAccepted,
    /// A tenant key reached the admin plane, or the admin token the tenant plane.
    PlaneCrossed,
    /// Two tenants received the same answer id: a shared response cache.
    SharedCacheEntry,
}

/// One leak. `victim` is absent when the evidence names no tenant (a credential
/// that should have been refused, whose tenant is unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    pub family: Family,
    pub attacker: String,
    pub victim: Option<String>,
    pub evidence: Evidence,
    /// What was sent and what came back, without content: e.g.
    /// `GET /v1/documents/doc_… -> 200`.
    pub request: String,
    /// The first 12 hex digits of SHA-256 of the marker seen, when one was.
    pub marker_sha256: Option<String>,
}

/// What one family did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyScore {
    pub family: Family,
    /// Requests sent as attacks (each answer checked).
    pub attempts: u64,
    /// Attempts whose answer leaked.
    pub leaks: u64,
    /// Attempts that failed for reasons other than a leak (transport errors,
    /// 5xx): a family with errors proved less than its attempts suggest.
    pub errors: u64,
    /// Attempts the server refused as expected (401, 403, 404, 400…).
    pub refused: u64,
    pub elapsed_ms: u64,
}

/// What cleaning up did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    /// `--keep`: nothing was deleted.
    pub kept: bool,
    pub tenants_deleted: u64,
    /// Documents and sessions deleted from given (not created) tenants, keys revoked.
    pub items_deleted: u64,
    pub failures: u64,
}

/// The whole result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scorecard {
    pub format: String,
    pub version: u32,
    pub target: String,
    /// The model the gateway families used.
    pub model: Option<String>,
    /// True when that model is `bulkhead-echo-leaky` (it hands each caller the
    /// previous caller's prompt: the hardest case for the output guard).
    pub model_regurgitates: bool,
    pub tenants: u64,
    /// False when the run used tenants it was given.
    pub tenants_created: bool,
    pub documents_seeded: u64,
    pub attack_prompts: u64,
    pub elapsed_ms: u64,
    /// True when no family leaked.
    pub clean: bool,
    pub attempts_total: u64,
    pub leaks_total: u64,
    pub errors_total: u64,
    /// One entry per family that ran, in `Family::ALL` order.
    pub families: Vec<FamilyScore>,
    /// At most `LEAKS_LISTED_MAX`; `leaks_total` counts them all.
    pub leaks: Vec<Leak>,
    pub leaks_truncated: bool,
    pub error_samples: Vec<String>,
    pub cleanup: Cleanup,
}

impl Scorecard {
    pub fn new(target: &str) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            target: target.into(),
            model: None,
            model_regurgitates: false,
            tenants: 0,
            tenants_created: false,
            documents_seeded: 0,
            attack_prompts: 0,
            elapsed_ms: 0,
            clean: true,
            attempts_total: 0,
            leaks_total: 0,
            errors_total: 0,
            families: Vec::new(),
            leaks: Vec::new(),
            leaks_truncated: false,
            error_samples: Vec::new(),
            cleanup: Cleanup::default(),
        }
    }

    /// Adds one family's result and its leaks (bounded) to the totals.
    pub fn add(&mut self, outcome: FamilyOutcome) {
        let FamilyOutcome {
            score,
            leaks,
            error_samples,
        } = outcome;
        self.attempts_total += score.attempts;
        self.leaks_total += score.leaks;
        self.errors_total += score.errors;
        self.clean = self.leaks_total == 0;
        for leak in leaks {
            if self.leaks.len() < LEAKS_LISTED_MAX {
                self.leaks.push(leak);
            } else {
                self.leaks_truncated = true;
            }
        }
        for e in error_samples {
            if self.error_samples.len() < ERROR_SAMPLES_MAX {
                self.error_samples.push(e);
            }
        }
        self.families.push(score);
    }

    /// The human table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "bulkhead probe against {} — {} tenants, model {}{}",
            self.target,
            self.tenants,
            self.model.as_deref().unwrap_or("(none)"),
            if self.model_regurgitates {
                " (regurgitates the previous caller's prompt)"
            } else {
                ""
            }
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<18} {:>9} {:>8} {:>6} {:>7}  result",
            "family", "attempts", "refused", "leaks", "errors"
        );
        for f in &self.families {
            let name = f.family.name();
            let result = if f.leaks > 0 {
                "LEAK"
            } else if f.attempts == 0 {
                "NOT RUN"
            } else if f.errors > 0 {
                "ok (with errors)"
            } else {
                "ok"
            };
            let _ = writeln!(
                out,
                "{:<18} {:>9} {:>8} {:>6} {:>7}  {result}",
                name, f.attempts, f.refused, f.leaks, f.errors
            );
        }
        let _ = writeln!(out);
        for leak in self.leaks.iter().take(LEAKS_SHOWN_MAX) {
            let _ = writeln!(
                out,
                "LEAK {:<16} {:?} attacker {} victim {} — {}{}",
                leak.family.name(),
                leak.evidence,
                leak.attacker,
                leak.victim.as_deref().unwrap_or("-"),
                leak.request,
                leak.marker_sha256
                    .as_deref()
                    .map(|h| format!(" (marker sha256 {h}…)"))
                    .unwrap_or_default()
            );
        }
        if self.leaks_total > LEAKS_SHOWN_MAX as u64 {
            let _ = writeln!(
                out,
                "… {} more leaks (the JSON scorecard lists up to {LEAKS_LISTED_MAX})",
                self.leaks_total - LEAKS_SHOWN_MAX as u64
            );
        }
        for e in &self.error_samples {
            let _ = writeln!(out, "error: {e}");
        }
        let verdict = if self.clean { "CLEAN" } else { "LEAKED" };
        let _ = writeln!(
            out,
            "{verdict}: {} leaks in {} attempts, {} errors, {:.1} s",
            self.leaks_total,
            self.attempts_total,
            self.errors_total,
            self.elapsed_ms as f64 / 1000.0
        );
        out
    }
}

/// A family's score with its leaks and error samples, before they join the card.
#[derive(Debug, Clone)]
pub struct FamilyOutcome {
    pub score: FamilyScore,
    pub leaks: Vec<Leak>,
    pub error_samples: Vec<String>,
}

/// The short, non-reversible name of a marker in a report.
pub fn marker_digest(marker: &str) -> String {
    let digest = bulkhead_crypto::sha256(marker.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}
