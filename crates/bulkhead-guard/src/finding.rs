//! What a scan reports. A finding carries a kind, a byte span and, for leaks, the
//! tenant the text belongs to — never the matched text, so a finding can be logged,
//! stored in a decision trace or sent to an alert as it is.

use std::fmt;
use std::ops::Range;

use bulkhead_types::TenantId;

use crate::policy::{Action, Detector};

/// The issuer of an API key or token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Provider {
    Aws,
    GitHub,
    Slack,
    Stripe,
    OpenAi,
    Anthropic,
    Google,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::GitHub => "github",
            Provider::Slack => "slack",
            Provider::Stripe => "stripe",
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Google => "google",
        }
    }
}

/// What was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FindingKind {
    /// Another tenant's canary token.
    Canary,
    /// A run of text whose keyed fingerprints belong to another tenant only.
    CrossTenant,
    /// A PEM or PGP private-key block.
    PrivateKey,
    ApiKey {
        provider: Provider,
    },
    Jwt,
    /// A payment card number (Luhn and issuer ranges hold).
    Card,
    /// An IBAN (country length and mod-97 hold).
    Iban,
    /// A US social security number outside the never-issued ranges.
    Ssn,
    Email,
    Phone,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A token that looks random enough to be a credential.
    HighEntropy,
}

impl FindingKind {
    /// The policy detector this kind belongs to.
    pub fn detector(self) -> Detector {
        match self {
            FindingKind::Canary => Detector::Canary,
            FindingKind::CrossTenant => Detector::CrossTenant,
            FindingKind::PrivateKey => Detector::PrivateKey,
            FindingKind::ApiKey { .. } => Detector::ApiKey,
            FindingKind::Jwt => Detector::Jwt,
            FindingKind::Card => Detector::Card,
            FindingKind::Iban => Detector::Iban,
            FindingKind::Ssn => Detector::Ssn,
            FindingKind::Email => Detector::Email,
            FindingKind::Phone => Detector::Phone,
            FindingKind::Ip => Detector::Ip,
            FindingKind::HighEntropy => Detector::HighEntropy,
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindingKind::ApiKey { provider } => write!(f, "api_key:{}", provider.name()),
            other => f.write_str(other.detector().name()),
        }
    }
}

/// One finding. It holds no text: `Debug` and `Display` print the kind, the span
/// and the owner only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    pub kind: FindingKind,
    /// Byte offsets in the scanned text (for a stream, in the whole stream).
    pub span: Range<usize>,
    /// For `Canary` and `CrossTenant`: the tenant the text belongs to.
    pub owner: Option<TenantId>,
    /// What the policy decided for this finding.
    pub action: Action,
    /// For `CrossTenant`: how many distinct foreign fingerprints the span holds.
    pub fingerprints: u32,
}

impl Finding {
    /// The order findings are reported in: by start, then end, then kind.
    pub(crate) fn sort_key(&self) -> (usize, usize, FindingKind, Option<&str>) {
        (
            self.span.start,
            self.span.end,
            self.kind,
            self.owner.as_ref().map(|t| t.as_str()),
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}..{}", self.kind, self.span.start, self.span.end)?;
        if let Some(owner) = &self.owner {
            write!(f, " owned by {owner}")?;
        }
        if self.kind == FindingKind::CrossTenant {
            write!(f, " ({} fingerprints)", self.fingerprints)?;
        }
        write!(f, " -> {:?}", self.action)
    }
}

/// The overall decision for a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// Nothing to change: send the text as it is.
    #[serde(rename = "allow")]
    Allow,
    /// Send `ScanOutcome::redacted` instead of the text.
    #[serde(rename = "redacted")]
    Redacted,
    /// Send nothing of the text.
    #[serde(rename = "blocked")]
    Blocked,
}

impl Verdict {
    /// The name logs, traces and the wire use (the same as serde's).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redacted => "redacted",
            Self::Blocked => "blocked",
        }
    }
}

/// The result of `Guard::scan`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Sorted by start, then end, then kind.
    pub findings: Vec<Finding>,
    pub verdict: Verdict,
    /// The text with every `Redact` span replaced, when the verdict is `Redacted`.
    pub redacted: Option<String>,
}

impl ScanOutcome {
    /// The text to send: `None` when blocked, the redacted text when redacted,
    /// the original otherwise.
    pub fn output<'a>(&'a self, original: &'a str) -> Option<&'a str> {
        match self.verdict {
            Verdict::Blocked => None,
            Verdict::Redacted => self.redacted.as_deref(),
            Verdict::Allow => Some(original),
        }
    }
}

// The redacted text still holds the tenant's own content (and any finding the
// policy allowed), so it is never printed.
impl fmt::Debug for ScanOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanOutcome")
            .field("findings", &self.findings)
            .field("verdict", &self.verdict)
            .field("redacted_bytes", &self.redacted.as_ref().map(String::len))
            .finish()
    }
}

/// What one `StreamScanner::push` (or `finish`) gives back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StreamOutput {
    /// Text that has been fully scanned and may be sent now (redactions applied).
    /// Empty once the stream is blocked.
    pub release: String,
    /// Findings decided since the last call, in the order they were decided.
    pub findings: Vec<Finding>,
    /// True from the moment a `Block` decision is taken; the caller stops
    /// forwarding and ends the response with a content-filter notice.
    pub blocked: bool,
}

impl fmt::Debug for StreamOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamOutput")
            .field("release_bytes", &self.release.len())
            .field("findings", &self.findings)
            .field("blocked", &self.blocked)
            .finish()
    }
}
