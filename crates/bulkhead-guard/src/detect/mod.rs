//! PII and secret detectors: one multi-pattern automaton finds candidates in a
//! single pass, and a validator per family (in the submodules) keeps or refuses
//! each one.
//!
//! Every candidate pattern has a bounded match length (`CANDIDATE_BYTES_MAX`,
//! checked by a test from each pattern's syntax tree), which is what lets the
//! streaming scanner decide a position once it has seen that many bytes past it.
//! JWTs and private-key blocks, which can be longer, match only their head here
//! and are extended by `secrets`.
//!
//! Patterns are ASCII-only and matched on bytes; they never match inside a
//! multi-byte UTF-8 sequence, so spans always fall on character boundaries.

pub(crate) mod card;
pub(crate) mod email;
pub(crate) mod entropy;
pub(crate) mod iban;
pub(crate) mod ip;
pub(crate) mod phone;
pub(crate) mod secrets;
pub(crate) mod ssn;

use std::sync::OnceLock;

use regex_automata::meta::Regex;
use regex_automata::util::syntax;

use crate::finding::{FindingKind, Provider};
use crate::policy::{Action, Detector, Policy};

use secrets::Extension;

/// Upper bound on any candidate pattern's match length, in bytes.
pub(crate) const CANDIDATE_BYTES_MAX: usize = 256;

/// The ASCII digits of a candidate, in order, in a fixed buffer of `N`; `None` if
/// there are more than `N` (no validator accepts that many).
pub(crate) fn digits_of<const N: usize>(text: &[u8]) -> Option<([u8; N], usize)> {
    let mut digits = [0u8; N];
    let mut n = 0;
    for &b in text.iter().filter(|b| b.is_ascii_digit()) {
        *digits.get_mut(n)? = b;
        n += 1;
    }
    Some((digits, n))
}

/// A candidate family: one pattern, one validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Pem,
    /// Public material that looks random (certificates, public keys, Stripe
    /// publishable keys): never reported, but it keeps the generic high-entropy
    /// detector off it.
    Public,
    Jwt,
    AwsKeyId,
    AwsSecret,
    GitHub,
    GitHubPat,
    SlackToken,
    SlackWebhook,
    Stripe,
    Anthropic,
    OpenAi,
    Google,
    Email,
    Iban,
    Ipv4,
    Ipv4Mapped,
    Ipv6,
    Ssn,
    /// Nine bare digits right after "SSN" or "social security number".
    SsnKeyword,
    Card,
    Phone,
}

/// The patterns in priority order: when two start at the same byte, the earlier
/// one wins (leftmost-first).
const PATTERNS: &[(Family, &str)] = &[
    (
        Family::Pem,
        r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
    ),
    (
        Family::Public,
        r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}(?:PUBLIC KEY|CERTIFICATE|CERTIFICATE REQUEST|X509 CRL|PGP PUBLIC KEY BLOCK|PGP SIGNATURE)-----|\bpk_(?:live|test)_[A-Za-z0-9]{20,240}\b",
    ),
    (Family::Jwt, r"\beyJ[A-Za-z0-9_-]{4,240}\.eyJ"),
    (Family::AwsKeyId, r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b"),
    (
        Family::AwsSecret,
        r#"(?i:aws)[A-Za-z0-9_. -]{0,20}(?i:secret)[A-Za-z0-9_. -]{0,20}[:=] ?["']?[A-Za-z0-9/+]{40}"#,
    ),
    (Family::GitHub, r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    (
        Family::GitHubPat,
        r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
    ),
    (Family::SlackToken, r"\bxox[abposr]-[A-Za-z0-9-]{10,200}"),
    (
        Family::SlackWebhook,
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{20,32}",
    ),
    (
        Family::Stripe,
        r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,240}\b",
    ),
    (
        Family::Anthropic,
        r"\bsk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{80,120}",
    ),
    (
        Family::OpenAi,
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,220}",
    ),
    (Family::Google, r"\bAIza[0-9A-Za-z_-]{35}"),
    (
        Family::Email,
        r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{3,190}",
    ),
    (
        Family::Iban,
        r"\b[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30}\b",
    ),
    (Family::Ipv4, r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b"),
    (
        Family::Ipv4Mapped,
        r"::(?i:ffff):[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b",
    ),
    (
        Family::Ipv6,
        r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b|::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){1,6}\b",
    ),
    (Family::Ssn, r"\b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}\b"),
    (
        Family::SsnKeyword,
        r"(?i:\bssn|\bsocial security(?: number| no\.?)?)(?: is| was|:|#| number| no\.?)? {0,3}[0-9]{9}\b",
    ),
    (Family::Card, r"\b[0-9](?:[ -]?[0-9]){11,18}\b"),
    (
        Family::Phone,
        r"(?:\+|\()?\b[0-9](?:[ .-]?\(?[0-9]|\)[ .-]?[0-9]){7,16}\b",
    ),
];

impl Family {
    /// Whether this family's pattern can match starting at byte `b` (a cheap
    /// filter before retrying a family at a refused candidate's start).
    pub(crate) fn may_start(self, b: u8) -> bool {
        match self {
            Family::Pem | Family::Public => b == b'-' || b == b'p',
            Family::Jwt => b == b'e',
            Family::AwsKeyId | Family::Google => b == b'A',
            Family::AwsSecret => b == b'a' || b == b'A',
            Family::GitHub | Family::GitHubPat => b == b'g',
            Family::SlackToken => b == b'x',
            Family::SlackWebhook => b == b'h',
            Family::Stripe => b == b's' || b == b'r',
            Family::Anthropic | Family::OpenAi => b == b's',
            Family::Email => {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
            }
            Family::Iban => b.is_ascii_alphabetic(),
            Family::Ipv4 | Family::Ssn | Family::Card => b.is_ascii_digit(),
            Family::Ipv4Mapped => b == b':',
            Family::Ipv6 => b.is_ascii_hexdigit() || b == b':',
            Family::SsnKeyword => b == b's' || b == b'S',
            Family::Phone => b.is_ascii_digit() || b == b'+' || b == b'(',
        }
    }

    pub(crate) fn detector(self) -> Detector {
        match self {
            Family::Pem => Detector::PrivateKey,
            // Runs whenever the generic detector it shields from does.
            Family::Public => Detector::HighEntropy,
            Family::Jwt => Detector::Jwt,
            Family::AwsKeyId
            | Family::AwsSecret
            | Family::GitHub
            | Family::GitHubPat
            | Family::SlackToken
            | Family::SlackWebhook
            | Family::Stripe
            | Family::Anthropic
            | Family::OpenAi
            | Family::Google => Detector::ApiKey,
            Family::Email => Detector::Email,
            Family::Iban => Detector::Iban,
            Family::Ipv4 | Family::Ipv4Mapped | Family::Ipv6 => Detector::Ip,
            Family::Ssn | Family::SsnKeyword => Detector::Ssn,
            Family::Card => Detector::Card,
            Family::Phone => Detector::Phone,
        }
    }
}

/// The compiled candidate automaton, built once per process.
#[derive(Debug)]
pub(crate) struct Detectors {
    pub(crate) regex: Regex,
    families: Vec<Family>,
}

fn syntax_config() -> syntax::Config {
    // ASCII classes and word boundaries on bytes: faster than Unicode tables, and
    // every pattern here is ASCII.
    syntax::Config::new().unicode(false).utf8(false)
}

impl Detectors {
    pub(crate) fn get() -> &'static Detectors {
        static DETECTORS: OnceLock<Detectors> = OnceLock::new();
        DETECTORS.get_or_init(|| {
            let patterns: Vec<&str> = PATTERNS.iter().map(|(_, p)| *p).collect();
            let regex = Regex::builder()
                .syntax(syntax_config())
                .configure(Regex::config().hybrid_cache_capacity(8 << 20))
                .build_many(&patterns)
                // The patterns are constants covered by tests.
                .expect("detector patterns compile");
            Detectors {
                regex,
                families: PATTERNS.iter().map(|(f, _)| *f).collect(),
            }
        })
    }

    pub(crate) fn family(&self, pattern: usize) -> Family {
        self.families[pattern]
    }

    pub(crate) fn patterns(&self) -> usize {
        self.families.len()
    }
}

/// The longest match of each pattern, from its syntax tree.
#[cfg(test)]
pub(crate) fn pattern_max_lens() -> Vec<(Family, Option<usize>)> {
    PATTERNS
        .iter()
        .map(|(f, p)| {
            let hir = syntax::parse_with(p, &syntax_config()).expect("parse");
            (*f, hir.properties().maximum_len())
        })
        .collect()
}

/// A candidate's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Classified {
    /// A finding over `start..end` (relative to the haystack).
    Found(FindingKind, usize, usize),
    /// Known public material over `start..end`: not reported, but it suppresses
    /// overlapping high-entropy tokens.
    Public(usize, usize),
    Reject,
    /// The haystack ends before the candidate could be judged.
    NeedMore,
}

fn byte_at(hay: &[u8], i: Option<usize>) -> u8 {
    i.and_then(|i| hay.get(i).copied()).unwrap_or(0)
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Judges the candidate `hay[s..e]` of `family`. The caller guarantees a few
/// bytes of context on each side unless the text ends there.
pub(crate) fn classify(
    family: Family,
    hay: &[u8],
    s: usize,
    e: usize,
    is_final: bool,
) -> Classified {
    use Classified::{Found, Reject};
    let text = &hay[s..e];
    let after = byte_at(hay, Some(e));
    let found = |kind| Found(kind, s, e);
    let key = |provider| FindingKind::ApiKey { provider };
    match family {
        Family::Public if text.starts_with(b"-----") => {
            match secrets::extend_pem(hay, s, e, is_final, false) {
                Extension::End(end) => Classified::Public(s, end),
                Extension::Reject => Reject,
                Extension::NeedMore => Classified::NeedMore,
            }
        }
        Family::Public => Classified::Public(s, e),
        Family::Pem => match secrets::extend_pem(hay, s, e, is_final, true) {
            Extension::End(end) => Found(FindingKind::PrivateKey, s, end),
            Extension::Reject => Reject,
            Extension::NeedMore => Classified::NeedMore,
        },
        Family::Jwt => match secrets::extend_jwt(hay, s, e, is_final) {
            Extension::End(end) => Found(FindingKind::Jwt, s, end),
            Extension::Reject => Reject,
            Extension::NeedMore => Classified::NeedMore,
        },
        Family::AwsKeyId if secrets::check_aws_key_id(text) => found(key(Provider::Aws)),
        Family::AwsSecret => match secrets::aws_secret_value(text, after) {
            Some((a, b)) => Found(key(Provider::Aws), s + a, s + b),
            None => Reject,
        },
        Family::GitHub if secrets::check_random_tail(text, 4) => found(key(Provider::GitHub)),
        Family::GitHubPat if secrets::check_random_tail(text, 11) => found(key(Provider::GitHub)),
        Family::SlackToken
            if !is_key_char(after)
                && text.iter().any(u8::is_ascii_digit)
                && secrets::check_random_tail(text, 5) =>
        {
            found(key(Provider::Slack))
        }
        Family::SlackWebhook => found(key(Provider::Slack)),
        Family::Stripe if secrets::check_random_tail(text, 8) => found(key(Provider::Stripe)),
        Family::Anthropic if !is_key_char(after) => found(key(Provider::Anthropic)),
        Family::OpenAi if !is_key_char(after) && secrets::check_openai(text) => {
            found(key(secrets::provider_of(text)))
        }
        Family::Google if !is_key_char(after) => found(key(Provider::Google)),
        Family::Email => match email::check(text) {
            Some((a, b)) => Found(FindingKind::Email, s + a, s + b),
            None => Reject,
        },
        Family::Iban => match iban::check(text) {
            Some(len) => Found(FindingKind::Iban, s, s + len),
            None => Reject,
        },
        Family::Ipv4 => {
            let before = [
                byte_at(hay, s.checked_sub(2)),
                byte_at(hay, s.checked_sub(1)),
            ];
            let after2 = [after, byte_at(hay, Some(e + 1))];
            if ip::check_v4(text, before, after2) {
                found(FindingKind::Ip)
            } else {
                Reject
            }
        }
        Family::Ipv6 if ip::check_v6(text, [after, byte_at(hay, Some(e + 1))]) => {
            found(FindingKind::Ip)
        }
        Family::Ipv4Mapped => {
            let v4 = &text[7..];
            if ip::check_v4(v4, [b':', b':'], [after, byte_at(hay, Some(e + 1))]) {
                found(FindingKind::Ip)
            } else {
                Reject
            }
        }
        Family::Ssn if ssn::check(text) => found(FindingKind::Ssn),
        Family::SsnKeyword if ssn::check(&text[text.len() - 9..]) => {
            Found(FindingKind::Ssn, e - 9, e)
        }
        Family::Card if card::check(text) => found(FindingKind::Card),
        Family::Phone if phone::check(text) => found(FindingKind::Phone),
        _ => Reject,
    }
}

/// Whether a family runs under `policy`.
pub(crate) fn enabled(family: Family, policy: &Policy) -> bool {
    policy.actions.get(family.detector()) != Action::Off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_is_bounded() {
        for (family, max) in pattern_max_lens() {
            let max = max.unwrap_or(usize::MAX);
            assert!(
                max <= CANDIDATE_BYTES_MAX,
                "{family:?} can match {max} bytes, more than {CANDIDATE_BYTES_MAX}"
            );
        }
    }

    fn kinds(text: &str) -> Vec<(FindingKind, String)> {
        let d = Detectors::get();
        let hay = text.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(m) = d
            .regex
            .search(&regex_automata::Input::new(hay).span(at..hay.len()))
        {
            match classify(
                d.family(m.pattern().as_usize()),
                hay,
                m.start(),
                m.end(),
                true,
            ) {
                Classified::Found(k, s, e) => {
                    out.push((k, text[s..e].to_owned()));
                    at = e.max(m.end());
                }
                _ => at = m.end(),
            }
        }
        out
    }

    #[test]
    fn start_filter_admits_every_match() {
        // Every pattern, matched anchored at each start byte of a sample, must
        // be admitted by `may_start`.
        let d = Detectors::get();
        let sample = "-----BEGIN PRIVATE KEY----- pk_test_4eC39HqLyjWDarjtT1zdp7dc eyJhbGciOiJIUzI1NiJ9.eyJ \
                      AKIAZ2X7Q4MB3KPLR6WD aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCY1zq8WmN0Ht \
                      xoxb-1234567890-abcdefghij https://hooks.slack.com/services/T0123456/B0123456/abcdefghijklmnopqrstuvwx \
                      sk-ant-api03-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
                      a@b.co DE89370400440532013000 ::ffff:1.2.3.4 fe80::1:2 SSN 123456789 (415) 555-0100";
        let hay = sample.as_bytes();
        for start in 0..hay.len() {
            for pid in 0..d.patterns() {
                let input = regex_automata::Input::new(hay)
                    .span(start..hay.len())
                    .anchored(regex_automata::Anchored::Pattern(
                        regex_automata::PatternID::new_unchecked(pid),
                    ));
                if d.regex.search(&input).is_some() {
                    assert!(
                        d.family(pid).may_start(hay[start]),
                        "{:?} matches at {start} ({:?})",
                        d.family(pid),
                        char::from(hay[start])
                    );
                }
            }
        }
    }

    #[test]
    fn families_in_context() {
        let t = "mail jo.x@example.org, call +1 (415) 555-0100 or 020 7946 0958; card 4111 1111 1111 1111; \
                 ssn 536-22-1234; iban DE89 3704 0044 0532 0130 00; host 10.1.2.3 or 2001:db8::8a2e:370:7334.";
        let got = kinds(t);
        let want = [
            (FindingKind::Email, "jo.x@example.org"),
            (FindingKind::Phone, "+1 (415) 555-0100"),
            (FindingKind::Phone, "020 7946 0958"),
            (FindingKind::Card, "4111 1111 1111 1111"),
            (FindingKind::Ssn, "536-22-1234"),
            (FindingKind::Iban, "DE89 3704 0044 0532 0130 00"),
            (FindingKind::Ip, "10.1.2.3"),
            (FindingKind::Ip, "2001:db8::8a2e:370:7334"),
        ];
        let want: Vec<(FindingKind, String)> =
            want.iter().map(|(k, s)| (*k, (*s).to_owned())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn provider_keys() {
        let t = "AKIAZ2X7Q4MB3KPLR6WD 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 \
                 sk_live_4eC39HqLyjWDarjtT1zdp7dc xoxb-2630498212-1039452834-vM3fQ8Lr2ZkT9wXa \
                 AIzaSyD3Rk9vQ7xT2mL8pW4nB6cJ1hF5gE0aZ_y";
        let got: Vec<FindingKind> = kinds(t).into_iter().map(|(k, _)| k).collect();
        let p = |provider| FindingKind::ApiKey { provider };
        assert_eq!(
            got,
            vec![
                p(Provider::Aws),
                p(Provider::GitHub),
                p(Provider::Stripe),
                p(Provider::Slack),
                p(Provider::Google)
            ]
        );
    }
}
