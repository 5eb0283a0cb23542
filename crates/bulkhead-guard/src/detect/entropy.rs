//! Generic secrets: tokens of base64/base62 characters that look random.
//!
//! A token qualifies when it is long enough, mixes lower case, upper case and
//! digits, is not hexadecimal (UUIDs, commit ids and content hashes are hex and
//! everywhere), has Shannon entropy near that of random text of its length, changes
//! character class often, and has few vowels (camelCase identifiers fail the last
//! two). Tokens are runs of `[A-Za-z0-9+/=_-]` cut at `RUN_BYTES_MAX`, so a long
//! base64 blob is judged in pieces and streaming stays bounded.

use base64::Engine as _;

use crate::policy::HighEntropyPolicy;

/// Longest run judged as one token; longer runs are cut into pieces this long.
pub(crate) const RUN_BYTES_MAX: usize = 256;

/// Bytes that make up tokens.
pub(crate) const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-');
        b += 1;
    }
    t
}

pub(crate) static TOKEN: [bool; 256] = token_table();

/// `c * log2(c)` for every count a token can have (tokens are at most
/// `RUN_BYTES_MAX` bytes), so entropy costs no logarithm per symbol.
fn c_log2_c() -> &'static [f64; RUN_BYTES_MAX + 1] {
    static TABLE: std::sync::OnceLock<[f64; RUN_BYTES_MAX + 1]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0.0; RUN_BYTES_MAX + 1];
        for (c, v) in t.iter_mut().enumerate().skip(1) {
            *v = c as f64 * (c as f64).log2();
        }
        t
    })
}

/// Shannon entropy in bits per byte of an ASCII token of at most
/// `RUN_BYTES_MAX` bytes: log2(n) − Σ c·log2(c) / n.
pub(crate) fn shannon(s: &[u8]) -> f64 {
    debug_assert!(s.len() <= RUN_BYTES_MAX && s.is_ascii());
    let mut counts = [0u16; 128];
    for &b in s {
        counts[usize::from(b & 0x7f)] += 1;
    }
    let n = s.len() as f64;
    let table = c_log2_c();
    let sum: f64 = counts.iter().map(|&c| table[usize::from(c)]).sum();
    n.log2() - sum / n
}

/// The entropy a token of `len` bytes must reach: the policy's figure, lowered for
/// short tokens, which cannot show many distinct symbols (random base62 text of
/// 20 characters measures about 4.0 bits per character, of 64 about 5.2).
pub(crate) fn required_bits(len: usize, policy: &HighEntropyPolicy) -> f64 {
    policy.min_bits_per_char.min((len as f64).log2() - 0.7)
}

fn class(b: u8) -> u8 {
    if b.is_ascii_lowercase() {
        0
    } else if b.is_ascii_uppercase() {
        1
    } else if b.is_ascii_digit() {
        2
    } else {
        3
    }
}

/// Validates a token run; returns the trimmed span (relative to `run`).
pub(crate) fn check(run: &[u8], policy: &HighEntropyPolicy) -> Option<(usize, usize)> {
    let mut s = 0;
    let mut e = run.len();
    while s < e && !run[s].is_ascii_alphanumeric() {
        s += 1;
    }
    while e > s && !run[e - 1].is_ascii_alphanumeric() {
        e -= 1;
    }
    let tok = &run[s..e];
    if tok.len() < policy.min_len {
        return None;
    }
    let (mut lower, mut upper, mut digit, mut vowels) = (0usize, 0usize, 0usize, 0usize);
    let mut hex = true;
    let mut switches = 0usize;
    for (i, &b) in tok.iter().enumerate() {
        match class(b) {
            0 => lower += 1,
            1 => upper += 1,
            2 => digit += 1,
            _ => {}
        }
        if !(b.is_ascii_hexdigit() || b == b'-') {
            hex = false;
        }
        if matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u') {
            vowels += 1;
        }
        if i > 0 && class(tok[i - 1]) != class(b) {
            switches += 1;
        }
    }
    if lower == 0 || upper == 0 || digit == 0 || hex {
        return None;
    }
    if tok.windows(7).any(|w| w == b"EXAMPLE") {
        return None;
    }
    let letters = (lower + upper) as f64;
    if vowels as f64 >= 0.4 * letters {
        return None;
    }
    if (switches as f64) < 0.3 * (tok.len() - 1) as f64 {
        return None;
    }
    if shannon(tok) < required_bits(tok.len(), policy) {
        return None;
    }
    if encoded_json(tok) {
        return None;
    }
    Some((s, e))
}

/// Base64 of a JSON object or array (JWT headers and payloads, encoded
/// configuration): structured data, not a random secret. A random token almost
/// never decodes to printable text starting with `{` or `[`.
fn encoded_json(tok: &[u8]) -> bool {
    // '{' and '[' encode to a first sextet of 'e' and 'W'.
    if !matches!(tok.first(), Some(b'e' | b'W')) {
        return false;
    }
    // Decode a whole number of quads from the start; enough to judge.
    let n = (tok.len() / 4 * 4).min(64);
    let head = &tok[..n];
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(head)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head));
    decoded.is_ok_and(|d| {
        matches!(d.first(), Some(b'{' | b'['))
            && d.iter().all(|&b| b.is_ascii_graphic() || b == b' ')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(s: &str) -> bool {
        check(s.as_bytes(), &HighEntropyPolicy::default()).is_some()
    }

    #[test]
    fn entropy_values() {
        assert!(shannon(b"aaaa") < 1e-9);
        assert!((shannon(b"abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn tokens() {
        for good in [
            "Xk9fP2mQ7vLr4TzW8bN1cYd3",
            "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCY1zq8WmN0Ht",
            "=Tq4Zr8Lm2Xc7Vb1Nk5Jh9Gd",
        ] {
            assert!(hit(good), "{good}");
        }
        for bad in [
            "550e8400-e29b-41d4-a716-446655440000",     // UUID
            "da39a3ee5e6b4b0d3255bfef95601890afd80709", // SHA-1
            "ThisIsMyVariableName2024",                 // camelCase
            "getUserAccountBalance2023",
            "Password1234567890Abc",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", // AWS docs example
            "abcdefghijklmnopqrstuvwxyz",
            "Short9Xy",
            "eyJzdWIiOiI0OTMyNDU1MjYwIiwibmFtZSI6ImhhbmEi", // base64 of JSON
            "e25vdCBqc29uLCBqdXN0IGJyYWNlcw",               // base64 of "{not json…"
        ] {
            assert!(!hit(bad), "{bad}");
        }
    }
}
