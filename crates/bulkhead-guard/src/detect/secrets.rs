//! Credentials with a recognizable shape: provider API keys and tokens, JWTs and
//! private-key blocks. The candidate patterns are specific; these checks remove
//! documented example values and shapes that only look alike.
//!
//! JWTs and private-key blocks can be longer than the candidate bound, so the
//! pattern matches only their head and `extend_jwt` / `extend_pem` find the end;
//! each has its own cap (`JWT_BYTES_MAX`, `PEM_BYTES_MAX`) so the streaming
//! scanner's hold-back stays bounded.

use base64::Engine as _;

use crate::finding::Provider;

/// Longest JWT taken as one finding; a longer one is cut there.
pub(crate) const JWT_BYTES_MAX: usize = 8 * 1024;
/// Longest private-key block taken as one finding (an RSA-8192 PEM is ~6.3 KiB).
pub(crate) const PEM_BYTES_MAX: usize = 8 * 1024;

/// Result of extending a head match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extension {
    /// The token ends here (exclusive, relative to the haystack).
    End(usize),
    /// Not a token after all.
    Reject,
    /// The haystack ends before the token does; more text is needed.
    NeedMore,
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn decode_b64url(s: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .or_else(|| base64::engine::general_purpose::URL_SAFE.decode(s).ok())
}

/// Extends a `eyJ….eyJ` head to the end of the signature segment and checks that
/// the header is a JSON object with an `alg` and the payload a JSON object.
pub(crate) fn extend_jwt(hay: &[u8], start: usize, head_end: usize, is_final: bool) -> Extension {
    let limit = (start + JWT_BYTES_MAX).min(hay.len());
    // Payload: continues from the head's `eyJ` to the next '.'.
    let mut i = head_end;
    while i < limit && is_b64url(hay[i]) {
        i += 1;
    }
    if i == hay.len() && !is_final && i < start + JWT_BYTES_MAX {
        return Extension::NeedMore;
    }
    if i >= limit || hay[i] != b'.' {
        return Extension::Reject;
    }
    let payload_end = i;
    i += 1;
    let sig_start = i;
    while i < limit && is_b64url(hay[i]) {
        i += 1;
    }
    if i == hay.len() && !is_final && i < start + JWT_BYTES_MAX {
        return Extension::NeedMore;
    }
    if i - sig_start < 16 {
        return Extension::Reject;
    }
    let header_end = hay[start..payload_end]
        .iter()
        .position(|&b| b == b'.')
        .map(|p| start + p);
    let Some(header_end) = header_end else {
        return Extension::Reject;
    };
    let header = decode_b64url(&hay[start..header_end]);
    let header_ok = header
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|v| v.get("alg").is_some_and(|a| a.is_string()));
    let payload_ok = decode_b64url(&hay[header_end + 1..payload_end])
        .is_some_and(|p| p.first() == Some(&b'{') && p.last() == Some(&b'}'));
    if header_ok && payload_ok {
        Extension::End(i)
    } else {
        Extension::Reject
    }
}

/// Extends a `-----BEGIN …-----` header over the armored body and its footer. A
/// body that stops without a footer still ends the block there (a truncated key
/// is still a leaked key). `private`: the footer must name a private key.
pub(crate) fn extend_pem(
    hay: &[u8],
    start: usize,
    head_end: usize,
    is_final: bool,
    private: bool,
) -> Extension {
    let limit = (start + PEM_BYTES_MAX).min(hay.len());
    let body = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'+' | b'/' | b'=' | b'\r' | b'\n' | b' ' | b'\t' | b':' | b',' | b'.' | b'-'
            )
    };
    let mut i = head_end;
    while i < limit && body(hay[i]) && !hay[i..].starts_with(b"-----") {
        i += 1;
    }
    if !is_final && i + 64 > hay.len() {
        // The body or the footer (up to ~50 bytes) may still be arriving.
        return Extension::NeedMore;
    }
    if hay[i..].starts_with(b"-----END ") {
        let rest = &hay[i + 9..(i + 64).min(hay.len())];
        if let Some(p) = rest.windows(5).position(|w| w == b"-----") {
            let footer = &rest[..p];
            if !private
                || footer.ends_with(b"PRIVATE KEY")
                || footer.ends_with(b"PRIVATE KEY BLOCK")
            {
                return Extension::End(i + 9 + p + 5);
            }
        }
    }
    // No footer: end at the body's last non-blank byte.
    while i > head_end && hay[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    Extension::End(i)
}

fn has_classes(s: &[u8]) -> (bool, bool, bool) {
    (
        s.iter().any(u8::is_ascii_lowercase),
        s.iter().any(u8::is_ascii_uppercase),
        s.iter().any(u8::is_ascii_digit),
    )
}

/// AWS access key id (`AKIA…`). The documentation's example keys end in
/// `EXAMPLE` and are refused, as secret scanners do.
pub(crate) fn check_aws_key_id(s: &[u8]) -> bool {
    !s.windows(7).any(|w| w == b"EXAMPLE")
}

/// `aws_secret_access_key = <40 chars>`: the finding is the value only.
pub(crate) fn aws_secret_value(s: &[u8], after: u8) -> Option<(usize, usize)> {
    if after.is_ascii_alphanumeric() || after == b'/' || after == b'+' {
        return None;
    }
    let v = &s[s.len() - 40..];
    if v.windows(7).any(|w| w == b"EXAMPLE") {
        return None;
    }
    let (lo, up, dg) = has_classes(v);
    (lo && up && dg).then_some((s.len() - 40, s.len()))
}

/// OpenAI keys: the legacy `sk-` + 48 alphanumerics, or any key carrying the
/// `T3BlbkFJ` marker (base64 of "OpenAI") that project, service-account and
/// admin keys embed.
pub(crate) fn check_openai(s: &[u8]) -> bool {
    if s.windows(8).any(|w| w == b"T3BlbkFJ") {
        return true;
    }
    let body = &s[3..];
    body.len() == 48 && body.iter().all(u8::is_ascii_alphanumeric) && {
        let (lo, up, dg) = has_classes(body);
        lo && up && dg
    }
}

/// A random-looking tail: the GitHub, Stripe and Slack shapes are specific, but
/// `sk_test_xxxxxxxx…` placeholders in docs are not secrets.
pub(crate) fn check_random_tail(s: &[u8], tail_from: usize) -> bool {
    let tail = &s[tail_from.min(s.len())..];
    let distinct = {
        let mut seen = [false; 256];
        tail.iter()
            .filter(|&&b| !std::mem::replace(&mut seen[b as usize], true))
            .count()
    };
    distinct >= 8
}

/// Which provider a matched key belongs to, by its prefix.
pub(crate) fn provider_of(s: &[u8]) -> Provider {
    if s.starts_with(b"gh") || s.starts_with(b"github_pat_") {
        Provider::GitHub
    } else if s.starts_with(b"xox") || s.starts_with(b"https://hooks.slack.com") {
        Provider::Slack
    } else if s.starts_with(b"sk-ant-") {
        Provider::Anthropic
    } else if s.starts_with(b"sk-") {
        Provider::OpenAi
    } else if s.starts_with(b"sk_") || s.starts_with(b"rk_") {
        Provider::Stripe
    } else if s.starts_with(b"AIza") {
        Provider::Google
    } else {
        Provider::Aws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt() -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{}",
            e(r#"{"alg":"HS256","typ":"JWT"}"#),
            e(r#"{"sub":"1234567890","name":"Jo","iat":1516239022}"#),
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        )
    }

    #[test]
    fn jwt_extension() {
        let t = jwt();
        let text = format!("token {t} end");
        let hay = text.as_bytes();
        let head_end = 6 + t.find(".eyJ").expect("payload") + 4;
        assert_eq!(
            extend_jwt(hay, 6, head_end, true),
            Extension::End(6 + t.len())
        );
        // Cut in the signature: more text is needed unless the stream ended.
        let cut = &hay[..6 + t.len() - 5];
        assert_eq!(extend_jwt(cut, 6, head_end, false), Extension::NeedMore);
        assert_eq!(
            extend_jwt(cut, 6, head_end, true),
            Extension::End(cut.len())
        );
        // A header that is not JSON.
        let fake = b"eyJhbGciOiJIUzI1NiJ9x.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw";
        assert_eq!(extend_jwt(fake, 0, 25, true), Extension::Reject);
    }

    #[test]
    fn pem_extension() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\nZ1BjP5CE/Wm/Rr500P\n-----END RSA PRIVATE KEY-----";
        let text = format!("{pem}\nthanks");
        let hay = text.as_bytes();
        assert_eq!(
            extend_pem(hay, 0, 31, true, true),
            Extension::End(pem.len())
        );
        assert_eq!(
            extend_pem(&hay[..60], 0, 31, false, true),
            Extension::NeedMore
        );
        assert_eq!(
            extend_pem(&hay[..60], 0, 31, true, true),
            Extension::End(60)
        );
    }

    #[test]
    fn keys() {
        assert!(!check_aws_key_id(b"AKIAIOSFODNN7EXAMPLE"));
        assert!(check_aws_key_id(b"AKIAZ2X7Q4MB3KPLR6WD"));
        assert!(check_openai(
            b"sk-abcdefghijT3BlbkFJabcdefghijklmnopqrstuvwxyz0123"
        ));
        assert!(check_openai(
            b"sk-Ab3dEf6hIj9kLm2oPq5sTu8wXy1zAb4dEf7hIj0kLm3oPq6s"
        ));
        assert!(!check_openai(b"sk-this-is-not-a-key-at-all-really"));
        assert!(!check_random_tail(b"sk_test_xxxxxxxxxxxxxxxxxxxxxxxx", 8));
        assert!(check_random_tail(b"sk_test_4eC39HqLyjWDarjtT1zdp7dc", 8));
        assert_eq!(provider_of(b"sk-ant-api03-xyz"), Provider::Anthropic);
        assert_eq!(provider_of(b"sk-proj-xyz"), Provider::OpenAi);
        assert_eq!(provider_of(b"rk_live_xyz"), Provider::Stripe);
    }
}
