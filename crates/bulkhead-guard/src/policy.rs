//! Policies as data: what each detector does when it fires, the cross-tenant
//! thresholds and the injection-screening thresholds.
//!
//! A policy is plain serde data (TOML or JSON) with `deny_unknown_fields`, so a
//! misspelt key is an error that names it, never a silently ignored setting.
//! Every field has a default, so a file states only what it changes. The
//! compliance packs are named policies built on this type; this module must never
//! grow knowledge of tenants or of where a policy came from.

use serde::{Deserialize, Serialize};

/// What happens when a detector fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The detector does not run and reports nothing.
    Off,
    /// Reported as a finding; the text is left unchanged (monitoring).
    Allow,
    /// Reported, and the matched span is replaced by a typed placeholder
    /// such as `[REDACTED:CARD]`.
    Redact,
    /// Reported, and the whole response is withheld.
    Block,
}

impl Action {
    /// The name packs, logs and the wire use (the same as serde's).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Allow => "allow",
            Self::Redact => "redact",
            Self::Block => "block",
        }
    }
}

/// The detectors a policy configures, one action each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Detector {
    Canary,
    CrossTenant,
    PrivateKey,
    ApiKey,
    Jwt,
    Card,
    Iban,
    Ssn,
    Email,
    Phone,
    Ip,
    HighEntropy,
}

impl Detector {
    /// Every detector, in the order findings of equal span are reported.
    pub const ALL: [Detector; 12] = [
        Detector::Canary,
        Detector::CrossTenant,
        Detector::PrivateKey,
        Detector::ApiKey,
        Detector::Jwt,
        Detector::Card,
        Detector::Iban,
        Detector::Ssn,
        Detector::Email,
        Detector::Phone,
        Detector::Ip,
        Detector::HighEntropy,
    ];

    /// The name used in policies and reports (`cross_tenant`, `card`, …).
    pub fn name(self) -> &'static str {
        match self {
            Detector::Canary => "canary",
            Detector::CrossTenant => "cross_tenant",
            Detector::PrivateKey => "private_key",
            Detector::ApiKey => "api_key",
            Detector::Jwt => "jwt",
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Ssn => "ssn",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Ip => "ip",
            Detector::HighEntropy => "high_entropy",
        }
    }

    /// The placeholder label: a redacted span becomes `[REDACTED:<label>]`.
    pub fn label(self) -> &'static str {
        match self {
            Detector::Canary => "CANARY",
            Detector::CrossTenant => "CROSS_TENANT",
            Detector::PrivateKey => "PRIVATE_KEY",
            Detector::ApiKey => "API_KEY",
            Detector::Jwt => "JWT",
            Detector::Card => "CARD",
            Detector::Iban => "IBAN",
            Detector::Ssn => "SSN",
            Detector::Email => "EMAIL",
            Detector::Phone => "PHONE",
            Detector::Ip => "IP",
            Detector::HighEntropy => "SECRET",
        }
    }
}

/// One action per detector. The defaults: leaks (canaries, other tenants' text)
/// block; secrets and financial or government identifiers are redacted; contact
/// data (email, phone) and IP addresses are reported but left in place, because a
/// tenant's own answers legitimately quote its own customers' contact details —
/// the compliance packs tighten these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorActions {
    pub canary: Action,
    pub cross_tenant: Action,
    pub private_key: Action,
    pub api_key: Action,
    pub jwt: Action,
    pub card: Action,
    pub iban: Action,
    pub ssn: Action,
    pub email: Action,
    pub phone: Action,
    pub ip: Action,
    pub high_entropy: Action,
}

impl Default for DetectorActions {
    fn default() -> Self {
        Self {
            canary: Action::Block,
            cross_tenant: Action::Block,
            private_key: Action::Redact,
            api_key: Action::Redact,
            jwt: Action::Redact,
            card: Action::Redact,
            iban: Action::Redact,
            ssn: Action::Redact,
            email: Action::Allow,
            phone: Action::Allow,
            ip: Action::Allow,
            high_entropy: Action::Redact,
        }
    }
}

impl DetectorActions {
    /// The same action for every detector (handy in tests and packs).
    pub fn all(action: Action) -> Self {
        Self {
            canary: action,
            cross_tenant: action,
            private_key: action,
            api_key: action,
            jwt: action,
            card: action,
            iban: action,
            ssn: action,
            email: action,
            phone: action,
            ip: action,
            high_entropy: action,
        }
    }

    pub fn get(&self, detector: Detector) -> Action {
        match detector {
            Detector::Canary => self.canary,
            Detector::CrossTenant => self.cross_tenant,
            Detector::PrivateKey => self.private_key,
            Detector::ApiKey => self.api_key,
            Detector::Jwt => self.jwt,
            Detector::Card => self.card,
            Detector::Iban => self.iban,
            Detector::Ssn => self.ssn,
            Detector::Email => self.email,
            Detector::Phone => self.phone,
            Detector::Ip => self.ip,
            Detector::HighEntropy => self.high_entropy,
        }
    }
}

/// When fingerprints of another tenant's text make a leak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossTenantPolicy {
    /// Distinct fingerprints of one other tenant, close together in the response,
    /// that make a leak. With the index's window of 64 and k-grams of 32, two
    /// fingerprints are guaranteed for any shared run of 159 normalized bytes.
    pub min_fingerprints: u32,
    /// A fingerprint held by this many tenants or more is shared text
    /// (boilerplate, public quotes) and never counts as a leak.
    pub shared_min_owners: u32,
}

impl Default for CrossTenantPolicy {
    fn default() -> Self {
        Self {
            min_fingerprints: 2,
            shared_min_owners: 3,
        }
    }
}

/// The generic high-entropy secret detector's thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HighEntropyPolicy {
    /// Shortest token considered, in bytes.
    pub min_len: usize,
    /// Shannon entropy a token needs, in bits per character, before the length
    /// correction (short tokens cannot reach log2 of the alphabet).
    pub min_bits_per_char: f64,
}

impl Default for HighEntropyPolicy {
    fn default() -> Self {
        Self {
            min_len: 20,
            min_bits_per_char: 4.0,
        }
    }
}

/// What screening does with a text whose injection score reaches `act_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionAction {
    /// Nothing: the text is used.
    Allow,
    /// The text is used and the report is logged and alerted on.
    Flag,
    /// The text (a retrieved chunk) is left out of the prompt.
    Drop,
    /// The request is refused.
    Block,
}

impl InjectionAction {
    /// The name packs, logs and the wire use (the same as serde's).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Flag => "flag",
            Self::Drop => "drop",
            Self::Block => "block",
        }
    }
}

/// Thresholds for one kind of text (retrieved context or user input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionPolicy {
    /// Score (0–100) from which the text is flagged.
    pub flag_at: u32,
    /// Score from which `action` applies.
    pub act_at: u32,
    /// What happens at `act_at`: `drop`, `block` or `flag`.
    pub action: InjectionAction,
}

impl InjectionPolicy {
    /// Retrieved chunks: a chunk that reads like an instruction is dropped from
    /// the prompt; the answer goes on without it.
    pub fn retrieved_default() -> Self {
        Self {
            flag_at: 20,
            act_at: 40,
            action: InjectionAction::Drop,
        }
    }

    /// User input: users legitimately write "ignore my previous message", so the
    /// bar for refusing is higher than for a retrieved chunk.
    pub fn input_default() -> Self {
        Self {
            flag_at: 30,
            act_at: 70,
            action: InjectionAction::Block,
        }
    }
}

/// Injection thresholds per kind of text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectionPolicies {
    pub retrieved: InjectionPolicy,
    pub input: InjectionPolicy,
}

impl Default for InjectionPolicies {
    fn default() -> Self {
        Self {
            retrieved: InjectionPolicy::retrieved_default(),
            input: InjectionPolicy::input_default(),
        }
    }
}

/// A complete guard policy.
///
/// ```toml
/// [actions]
/// email = "redact"
/// ip = "off"
///
/// [cross_tenant]
/// min_fingerprints = 3
///
/// [injection.retrieved]
/// flag_at = 20
/// act_at = 50
/// action = "drop"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub actions: DetectorActions,
    pub cross_tenant: CrossTenantPolicy,
    pub high_entropy: HighEntropyPolicy,
    pub injection: InjectionPolicies,
}

/// Why a policy was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is not valid TOML/JSON for this schema (an unknown field, a
    /// wrong type or an unknown action); the parser's message names the field.
    #[error("policy {format}: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    /// A value is out of range.
    #[error("policy field `{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// Upper bound on `shared_min_owners`: past this every leak shared by a few
/// tenants would count, and the per-hit owner list must stay small.
pub const SHARED_MIN_OWNERS_MAX: u32 = 64;

impl Policy {
    /// Parses and validates a TOML policy.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            format: "toml",
            message: e.message().to_owned(),
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parses and validates a JSON policy.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = serde_json::from_str(text).map_err(|e| PolicyError::Parse {
            format: "json",
            message: e.to_string(),
        })?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every range; the error names the first bad field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid =
            |field: &'static str, problem: String| Err(PolicyError::Invalid { field, problem });
        let ct = &self.cross_tenant;
        if ct.min_fingerprints == 0 || ct.min_fingerprints > 64 {
            return invalid(
                "cross_tenant.min_fingerprints",
                format!("must be between 1 and 64, not {}", ct.min_fingerprints),
            );
        }
        if ct.shared_min_owners < 2 || ct.shared_min_owners > SHARED_MIN_OWNERS_MAX {
            return invalid(
                "cross_tenant.shared_min_owners",
                format!(
                    "must be between 2 and {SHARED_MIN_OWNERS_MAX}, not {}",
                    ct.shared_min_owners
                ),
            );
        }
        let he = &self.high_entropy;
        if !(16..=256).contains(&he.min_len) {
            return invalid(
                "high_entropy.min_len",
                format!("must be between 16 and 256, not {}", he.min_len),
            );
        }
        if !(he.min_bits_per_char.is_finite() && (1.0..=6.0).contains(&he.min_bits_per_char)) {
            return invalid(
                "high_entropy.min_bits_per_char",
                format!("must be between 1.0 and 6.0, not {}", he.min_bits_per_char),
            );
        }
        for (field_flag, field_act, p) in [
            (
                "injection.retrieved.flag_at",
                "injection.retrieved.act_at",
                &self.injection.retrieved,
            ),
            (
                "injection.input.flag_at",
                "injection.input.act_at",
                &self.injection.input,
            ),
        ] {
            if p.flag_at == 0 || p.flag_at > 100 {
                return invalid(
                    field_flag,
                    format!("must be between 1 and 100, not {}", p.flag_at),
                );
            }
            if p.act_at < p.flag_at || p.act_at > 100 {
                return invalid(
                    field_act,
                    format!(
                        "must be between flag_at ({}) and 100, not {}",
                        p.flag_at, p.act_at
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let p = Policy::default();
        p.validate().expect("default policy is valid");
        let toml_text = toml::to_string(&p).expect("serialize toml");
        assert_eq!(Policy::from_toml(&toml_text).expect("parse toml"), p);
        let json = serde_json::to_string(&p).expect("serialize json");
        assert_eq!(Policy::from_json(&json).expect("parse json"), p);
    }

    #[test]
    fn partial_documents_keep_defaults() {
        let p = Policy::from_toml("[actions]\nemail = \"redact\"\n").expect("parse");
        assert_eq!(p.actions.email, Action::Redact);
        assert_eq!(p.actions.canary, Action::Block);
        assert_eq!(p.cross_tenant, CrossTenantPolicy::default());
    }

    fn check_error(text: &str, json: bool, expect: &str) {
        let err = if json {
            Policy::from_json(text)
        } else {
            Policy::from_toml(text)
        }
        .expect_err("must be refused");
        let msg = err.to_string();
        assert!(msg.contains(expect), "{msg:?} does not mention {expect:?}");
    }

    #[test]
    fn errors_name_the_field() {
        check_error("[actions]\nemial = \"redact\"\n", false, "emial");
        check_error("[actions]\nemail = \"hide\"\n", false, "hide");
        check_error(
            "[cross_tenant]\nmin_fingerprints = 0\n",
            false,
            "cross_tenant.min_fingerprints",
        );
        check_error(
            "[cross_tenant]\nshared_min_owners = 1\n",
            false,
            "cross_tenant.shared_min_owners",
        );
        check_error(
            "[injection.input]\nflag_at = 50\nact_at = 10\naction = \"block\"\n",
            false,
            "injection.input.act_at",
        );
        check_error(
            r#"{"high_entropy": {"min_len": 4}}"#,
            true,
            "high_entropy.min_len",
        );
        check_error(
            r#"{"actions": {"card": "redact"}, "extra": 1}"#,
            true,
            "extra",
        );
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;
    use crate::Verdict;

    /// `as_str` is the serde name: what logs and traces write equals what packs
    /// and stored records parse.
    #[test]
    fn as_str_is_the_serde_name() {
        for a in [Action::Off, Action::Allow, Action::Redact, Action::Block] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for a in [
            InjectionAction::Allow,
            InjectionAction::Flag,
            InjectionAction::Drop,
            InjectionAction::Block,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for v in [Verdict::Allow, Verdict::Redacted, Verdict::Blocked] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }
}
