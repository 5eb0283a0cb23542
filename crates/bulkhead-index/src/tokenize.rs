//! Text to BM25 terms: lowercase, Unicode-aware word splitting, an optional light
//! English plural stemmer, and a 64-bit hash per term.
//!
//! Words are maximal runs of alphanumeric characters (`char::is_alphanumeric`,
//! Unicode-aware); an apostrophe between two letters is dropped rather than
//! splitting ("don't" → "dont", "O'Neill" → "oneill"). Han, Hiragana and Katakana
//! characters are one term each, since those scripts do not separate words with
//! spaces (unigrams: crude but symmetric between documents and queries). We do not
//! use UAX #29 word boundaries (`unicode-segmentation`): for index terms they give
//! the same words on ordinary text, and this splitter is a single pass with an
//! ASCII fast path and no allocation, which matters on the cold-open path.
//!
//! Stemming: [`Stemming::EnglishPlural`] is Harman's S-stemmer (1991): three
//! suffix rules on ASCII words ("queries" → "query", "indexes" → "indexe",
//! "tenants" → "tenant"). It conflates singular and plural, the most common
//! mismatch between a query and a passage, without Porter's over-stemming, and it
//! leaves non-ASCII words alone so it cannot damage other languages' words beyond
//! a trailing "s" of ASCII ones. The measured effect on the labeled set is in the
//! crate docs.
//!
//! Terms are never kept as strings: each is hashed (FNV-1a 64 and a splitmix64
//! finalizer, fully specified here so that hashes are stable across releases and
//! platforms) and the index stores the hash. A collision merges two terms; at
//! 64 bits that needs about 4·10^9 distinct terms in one tenant to become likely.
//! Terms longer than [`TERM_BYTES_MAX`] bytes are truncated before hashing. The
//! only buffer holding term bytes is on the stack and is zeroized before
//! returning.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Bytes of a term that count; longer runs (base64 blobs, hashes) are cut.
pub const TERM_BYTES_MAX: usize = 64;

/// How words are reduced before hashing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stemming {
    None,
    /// Harman's S-stemmer on ASCII words of four or more letters.
    #[default]
    EnglishPlural,
}

/// FNV-1a 64 with a splitmix64 finalizer: stable, specified, and well mixed in
/// every bit (FNV-1a alone mixes the high bits poorly).
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn is_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30ff      // Hiragana, Katakana
        | 0x3400..=0x4dbf    // CJK Extension A
        | 0x4e00..=0x9fff    // CJK Unified Ideographs
        | 0xf900..=0xfaff    // CJK Compatibility Ideographs
        | 0x20000..=0x3134f) // CJK Extensions B–G
}

/// A term being assembled, on the stack.
struct TermBuf {
    bytes: [u8; TERM_BYTES_MAX],
    len: usize,
    ascii: bool,
}

impl TermBuf {
    fn push_char(&mut self, c: char) {
        if c.is_ascii() {
            self.push_byte(c.to_ascii_lowercase() as u8);
        } else {
            self.ascii = false;
            for lower in c.to_lowercase() {
                let mut utf8 = [0u8; 4];
                for &b in lower.encode_utf8(&mut utf8).as_bytes() {
                    self.push_byte(b);
                }
            }
        }
    }

    fn push_byte(&mut self, b: u8) {
        if self.len < TERM_BYTES_MAX {
            self.bytes[self.len] = b;
            self.len += 1;
        }
    }

    fn emit(&mut self, stemming: Stemming, f: &mut impl FnMut(u64)) {
        if self.len == 0 {
            return;
        }
        let mut len = self.len;
        if stemming == Stemming::EnglishPlural && self.ascii && len >= 4 {
            len = s_stem(&mut self.bytes, len);
        }
        f(hash_bytes(0, &self.bytes[..len]));
        self.len = 0;
        self.ascii = true;
    }
}

/// Harman's S-stemmer; returns the new length. `bytes[..len]` is lowercase ASCII.
fn s_stem(bytes: &mut [u8], len: usize) -> usize {
    let w = &bytes[..len];
    if w.ends_with(b"ies") && !w.ends_with(b"eies") && !w.ends_with(b"aies") {
        bytes[len - 3] = b'y';
        return len - 2;
    }
    if w.ends_with(b"es") && !w.ends_with(b"aes") && !w.ends_with(b"ees") && !w.ends_with(b"oes") {
        return len - 1;
    }
    if w.ends_with(b"s") && !w.ends_with(b"us") && !w.ends_with(b"ss") {
        return len - 1;
    }
    len
}

/// Calls `f` with the hash of every term of `text`, in order.
pub fn for_each_term(text: &str, stemming: Stemming, mut f: impl FnMut(u64)) {
    let mut buf = TermBuf {
        bytes: [0; TERM_BYTES_MAX],
        len: 0,
        ascii: true,
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() {
            buf.push_byte(c.to_ascii_lowercase() as u8);
        } else if c.is_ascii() {
            // An apostrophe inside a word is dropped, not a separator.
            let inner_apostrophe =
                c == '\'' && buf.len > 0 && chars.peek().is_some_and(|n| n.is_alphanumeric());
            if !inner_apostrophe {
                buf.emit(stemming, &mut f);
            }
        } else if is_ideograph(c) {
            buf.emit(stemming, &mut f);
            buf.push_char(c);
            buf.emit(stemming, &mut f);
        } else if c.is_alphanumeric() {
            buf.push_char(c);
        } else {
            let inner_apostrophe =
                c == '’' && buf.len > 0 && chars.peek().is_some_and(|n| n.is_alphanumeric());
            if !inner_apostrophe {
                buf.emit(stemming, &mut f);
            }
        }
    }
    buf.emit(stemming, &mut f);
    buf.bytes.zeroize();
}

/// The term hashes of `text`, in order (tests and the query path).
pub fn terms(text: &str, stemming: Stemming) -> Vec<u64> {
    let mut out = Vec::new();
    for_each_term(text, stemming, |h| out.push(h));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> u64 {
        hash_bytes(0, s.as_bytes())
    }

    fn check(text: &str, stemming: Stemming, expect: &[&str]) {
        let want: Vec<u64> = expect.iter().map(|w| h(w)).collect();
        assert_eq!(terms(text, stemming), want, "{text:?}");
    }

    #[test]
    fn words_are_lowercased_and_split_on_non_alphanumerics() {
        check(
            "Hello, World! x-ray 3.14",
            Stemming::None,
            &["hello", "world", "x", "ray", "3", "14"],
        );
        check(
            "Ünïcode ÉCOLE straße",
            Stemming::None,
            &["ünïcode", "école", "straße"],
        );
        check("", Stemming::None, &[]);
        check(" \t—… ", Stemming::None, &[]);
    }

    #[test]
    fn inner_apostrophes_join() {
        check(
            "don't O’Neill 'quoted'",
            Stemming::None,
            &["dont", "oneill", "quoted"],
        );
    }

    #[test]
    fn ideographs_are_single_terms() {
        check(
            "東京タワーへ",
            Stemming::None,
            &["東", "京", "タ", "ワ", "ー", "へ"],
        );
        check("abc東def", Stemming::None, &["abc", "東", "def"]);
    }

    #[test]
    fn plural_stemming_is_light_and_ascii_only() {
        check(
            "queries indexes tenants glass status bus was cafés",
            Stemming::EnglishPlural,
            &[
                "query", "indexe", "tenant", "glass", "status", "bus", "was", "cafés",
            ],
        );
        check(
            "Tenant tenants",
            Stemming::EnglishPlural,
            &["tenant", "tenant"],
        );
    }

    #[test]
    fn long_terms_are_truncated() {
        let long = "a".repeat(200);
        assert_eq!(
            terms(&long, Stemming::None),
            vec![h(&"a".repeat(TERM_BYTES_MAX))]
        );
    }

    #[test]
    fn hashes_are_stable() {
        // Pinned (and checked against an independent implementation): terms and
        // hashed embeddings must not change across releases.
        assert_eq!(hash_bytes(0, b"tenant"), 0xdc12_0423_2a05_f768);
        assert_eq!(hash_bytes(0, b""), mix64(0xcbf2_9ce4_8422_2325));
        assert_ne!(hash_bytes(0, b"ab"), hash_bytes(0, b"ba"));
    }
}
