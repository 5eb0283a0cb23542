//! Evidence: the keyed values a protected text is known by, and that an answer is
//! matched against. All are computed from canonical text (`canon`), the same way
//! on both sides, and all are keyed 64-bit values (SipHash under a subkey of the
//! guard's secret), so the index and the store hold nothing a dump could read.
//!
//! Four kinds, from most to least specific:
//! - `Fp`: winnowing fingerprints of the canonical bytes (verbatim runs, whatever
//!   the case, spacing, punctuation or Unicode disguise);
//! - `Strong`: a high-specificity salient token — an email address, a URL with an
//!   identifying path, an identifier mixing letters and digits (`ACCT-48213-QX`),
//!   a number of 7+ digits with 5+ significant ones (account, phone, card,
//!   amount `$1,284,500`), a canary;
//! - `Weak`: a lower-specificity token — a 4–6 digit number that is neither a
//!   year nor round, a date, a short identifier, a URL without an identifying
//!   path; and `Phrase`, two adjacent capitalized words (names: `Dana
//!   Whitfield`, `Halvorsen Maritime`);
//! - `Sketch`: a consistent 1-in-`SKETCH_RATE` sample of the text's content words
//!   (word-set evidence that survives shuffled, dropped and interleaved words).
//!
//! Common values are never evidence: years, round numbers (≤ 2 significant
//! digits), percentages, numbers under 4 digits, stop words. Whether a value is
//! common *between tenants* is decided by the index (how many tenants hold it).

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use crate::canon::Canon;
use crate::winnow::{FingerprintKeys, Winnower};

/// One word in `SKETCH_RATE` (by keyed hash) is a sketch sample.
pub const SKETCH_RATE: u64 = 4;
/// Distinguishes a phrase's first word from a sketch sample in the word filter.
const PHRASE_FILTER_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
/// Shortest word that is a sketch sample.
const SKETCH_WORD_MIN: usize = 4;
/// Longest salient token, in canonical bytes (longer chunks are not tokens).
pub const TOKEN_BYTES_MAX: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Ev {
    Fp,
    /// A canary token's form as a salient token (strong).
    Canary,
    Strong,
    Weak,
    Phrase,
    Sketch,
}

/// One piece of evidence: its keyed value and canonical span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) value: u64,
    pub(crate) kind: Ev,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Which side computes: a protected text (phrases only where capitalized) or an
/// answer (every adjacent word pair, since a leak may change case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Protected,
    Answer,
}

/// Function words of English and the languages a light translation brings in:
/// never sketch samples nor halves of a phrase.
const STOP: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "al", "all", "also", "am", "an", "and",
    "any", "are", "as", "at", "au", "aux", "be", "because", "been", "before", "being", "below",
    "between", "both", "but", "by", "can", "con", "could", "dans", "das", "de", "dear", "del",
    "dem", "den", "der", "des", "did", "die", "do", "does", "doing", "done", "down", "du",
    "during", "e", "each", "ein", "eine", "einen", "einer", "el", "en", "es", "est", "et", "etc",
    "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "i", "if", "im", "in", "into", "is", "ist", "it", "its", "just", "la",
    "las", "le", "les", "lo", "los", "may", "me", "mit", "more", "most", "must", "my", "no", "nor",
    "not", "now", "of", "off", "on", "once", "only", "or", "other", "ou", "our", "ours", "out",
    "over", "own", "par", "para", "per", "please", "por", "pour", "que", "qui", "re", "same", "se",
    "shall", "she", "should", "so", "some", "such", "sur", "than", "thank", "thanks", "that",
    "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through",
    "to", "too", "un", "una", "und", "une", "uno", "until", "up", "us", "very", "von", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with",
    "would", "y", "you", "your", "yours", "zu", "zum", "zur",
];

/// The longest stop word.
const STOP_BYTES_MAX: usize = 7;

/// A word of at most 7 bytes as a number (little-endian, zero-padded).
const fn pack(w: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < w.len() {
        v |= (w[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// `STOP` packed and sorted: a membership test is a binary search over numbers
/// (the word test runs once per word of every answer).
fn stop_packed() -> &'static [u64] {
    static P: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let mut v: Vec<u64> = STOP.iter().map(|w| pack(w.as_bytes())).collect();
        v.sort_unstable();
        v
    })
}

fn is_stop(w: &str) -> bool {
    w.len() <= STOP_BYTES_MAX && stop_packed().binary_search(&pack(w.as_bytes())).is_ok()
}

/// Keyed hashing of tokens, domain-separated by kind.
pub(crate) fn token_hash(keys: &FingerprintKeys, domain: u8, bytes: &[u8]) -> u64 {
    let (k0, k1) = keys.token;
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write_u8(domain);
    h.write(bytes);
    h.finish()
}

/// All evidence of a canonical text (fingerprints included), sent to `sink` in
/// canonical order per kind. `from` is the canonical offset of `canon.text`'s
/// first byte within the whole stream (spans are reported in that frame).
pub(crate) fn extract(
    keys: &FingerprintKeys,
    canon: &Canon,
    side: Side,
    sink: &mut impl FnMut(Item),
) {
    let mut w = Winnower::new(keys.clone());
    w.feed(canon.text.as_bytes(), 0, |fp| {
        sink(Item {
            value: fp.value,
            kind: Ev::Fp,
            start: fp.start,
            end: fp.end,
        })
    });
    tokens(keys, canon, 0, canon.text.len(), side, sink);
}

/// Salient tokens, phrases and sketch samples of canonical bytes `from..to`
/// (which must start and end at spaces or the text's ends).
pub(crate) fn tokens(
    keys: &FingerprintKeys,
    canon: &Canon,
    from: usize,
    to: usize,
    side: Side,
    sink: &mut impl FnMut(Item),
) {
    let t = &canon.text.as_bytes()[..to];
    chunks(keys, t, from, sink);
    words(keys, canon, from, to, side, sink);
}

fn is_trim(b: u8) -> bool {
    matches!(
        b,
        b'.' | b','
            | b';'
            | b':'
            | b'!'
            | b'?'
            | b')'
            | b'('
            | b']'
            | b'['
            | b'}'
            | b'{'
            | b'<'
            | b'>'
            | b'"'
            | b'\''
            | b'`'
            | b'*'
            | b'_'
            | b'|'
            | b'#'
            | b'~'
            | b'='
            | b'-'
            | b'\\'
    )
}

/// Space-separated chunks: emails, URLs, identifiers, numbers (digit groups
/// separated by single spaces are joined, so `+1 415 555 0100` is one number).
fn chunks(keys: &FingerprintKeys, t: &[u8], from: usize, sink: &mut impl FnMut(Item)) {
    let mut i = from;
    // A pending number: its digits, canonical span, shape.
    let mut num = NumberRun::default();
    while i < t.len() {
        if t[i] == b' ' {
            i += 1;
            continue;
        }
        let cs = i;
        while i < t.len() && t[i] != b' ' {
            i += 1;
        }
        let (mut s, mut e) = (cs, i);
        // Currency signs around an amount (`€1,428,069.87`, `12 400 £`).
        for sign in CURRENCY {
            if t[s..e].starts_with(sign) {
                s += sign.len();
            }
            if t[s..e].ends_with(sign) {
                e -= sign.len();
            }
        }
        while s < e && is_trim(t[s]) && t[s] != b'(' {
            s += 1;
        }
        while e > s && is_trim(t[e - 1]) && t[e - 1] != b')' {
            e -= 1;
        }
        if s == e || e - s > TOKEN_BYTES_MAX {
            num.flush(keys, sink);
            continue;
        }
        let c = &t[s..e];
        let letters = c.iter().filter(|b| b.is_ascii_lowercase()).count();
        let digits = c.iter().filter(|b| b.is_ascii_digit()).count();
        let other = c.iter().any(|&b| b >= 0x80);
        if digits > 0 && letters == 0 && !other && c.iter().all(|&b| is_number_byte(b)) {
            if !num.join(c, s, e) {
                num.flush(keys, sink);
                num.start(c, s, e);
            }
            continue;
        }
        num.flush(keys, sink);
        if c.starts_with(b"bhc_") {
            let a: Vec<u8> = c
                .iter()
                .copied()
                .filter(u8::is_ascii_alphanumeric)
                .collect();
            emit(keys, b'i', &a, Ev::Canary, s, e, sink);
        } else if let Some(at) = c.iter().position(|&b| b == b'@') {
            if is_email(c, at) {
                emit(keys, b'e', c, Ev::Strong, s, e, sink);
            }
        } else if let Some(rest) = strip_scheme(c) {
            url(keys, rest, s, e, sink);
        } else if letters > 0 && digits > 0 && !other {
            identifier(keys, c, letters, digits, s, e, sink);
        }
    }
    num.flush(keys, sink);
}

/// Currency signs outside ASCII (`$` is a number byte already).
const CURRENCY: &[&[u8]] = &[
    "€".as_bytes(),
    "£".as_bytes(),
    "¥".as_bytes(),
    "₹".as_bytes(),
];

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit()
        || matches!(
            b,
            b'.' | b',' | b'-' | b'/' | b'(' | b')' | b'+' | b'$' | b'%'
        )
}

#[derive(Default)]
struct NumberRun {
    digits: Vec<u8>,
    start: usize,
    end: usize,
    groups: Vec<usize>,
    seps: Vec<u8>,
    percent: bool,
    decimals: bool,
    active: bool,
}

impl NumberRun {
    fn start(&mut self, c: &[u8], s: usize, e: usize) {
        self.digits.clear();
        self.groups.clear();
        self.seps.clear();
        self.percent = false;
        self.active = true;
        self.start = s;
        self.add(c, e);
    }

    fn add(&mut self, c: &[u8], e: usize) {
        self.end = e;
        let mut g = 0;
        for &b in c {
            if b.is_ascii_digit() {
                self.digits.push(b);
                g += 1;
            } else {
                if g > 0 {
                    self.groups.push(g);
                    self.seps.push(b);
                }
                g = 0;
                self.percent |= b == b'%';
            }
        }
        if g > 0 {
            self.groups.push(g);
        }
        // A final separator followed by exactly two digits: a decimal part.
        self.decimals = self.groups.last() == Some(&2)
            && self.seps.last().is_some_and(|s| matches!(s, b'.' | b','))
            && self.groups.len() >= 2;
    }

    /// Joins a chunk of short digit groups (`(415)`, `555-0100`: a phone or
    /// account written in groups) to the run.
    fn join(&mut self, c: &[u8], _s: usize, e: usize) -> bool {
        if !self.active || self.percent || c.iter().any(|b| matches!(b, b'%' | b'$')) {
            return false;
        }
        let digits = c.iter().filter(|b| b.is_ascii_digit()).count();
        let short_groups = c.split(|b| !b.is_ascii_digit()).all(|g| g.len() <= 4);
        if digits < 2 || !short_groups || self.digits.len() + digits > 15 {
            return false;
        }
        if self.groups.last().is_some_and(|g| *g > 4) {
            return false;
        }
        self.seps.push(b' ');
        self.add(c, e);
        true
    }

    fn flush(&mut self, keys: &FingerprintKeys, sink: &mut impl FnMut(Item)) {
        if !self.active {
            return;
        }
        self.active = false;
        if self.percent {
            return;
        }
        let d = &self.digits;
        let date = self.groups.len() == 3
            && self.seps.iter().all(|s| matches!(s, b'/' | b'-' | b'.'))
            && ((self.groups[0] == 4 && self.groups[1] <= 2 && self.groups[2] <= 2)
                || (self.groups[0] <= 2 && self.groups[1] <= 2 && self.groups[2] == 4));
        let kind = |d: &[u8]| -> Option<Ev> {
            if d.len() < 4 {
                return None;
            }
            if d.len() == 4 && (d.starts_with(b"19") || d.starts_with(b"20")) {
                return None; // a year
            }
            let significant = d.len() - d.iter().rev().take_while(|b| **b == b'0').count();
            if significant <= 2 {
                return None; // a round number
            }
            Some(if date {
                Ev::Weak
            } else if d.len() >= 7 && significant >= 5 {
                Ev::Strong
            } else {
                Ev::Weak
            })
        };
        let (s, e) = (self.start, self.end);
        if let Some(k) = kind(d) {
            emit(keys, b'n', d, k, s, e, sink);
        }
        if self.decimals && d.len() > 2 {
            let whole = &d[..d.len() - 2];
            if let Some(k) = kind(whole) {
                emit(keys, b'n', whole, k, s, e, sink);
            }
        }
        if d.len() >= 11 {
            let tail = &d[d.len() - 10..];
            if let Some(k) = kind(tail) {
                emit(keys, b'n', tail, k, s, e, sink);
            }
        }
    }
}

fn emit(
    keys: &FingerprintKeys,
    domain: u8,
    bytes: &[u8],
    kind: Ev,
    start: usize,
    end: usize,
    sink: &mut impl FnMut(Item),
) {
    sink(Item {
        value: token_hash(keys, domain, bytes),
        kind,
        start,
        end,
    });
}

fn is_email(c: &[u8], at: usize) -> bool {
    let (local, domain) = (&c[..at], &c[at + 1..]);
    !local.is_empty()
        && local
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-'))
        && domain
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        && domain
            .rsplit(|&b| b == b'.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.iter().all(u8::is_ascii_lowercase))
        && domain.contains(&b'.')
}

fn strip_scheme(c: &[u8]) -> Option<&[u8]> {
    for p in [&b"https://"[..], b"http://", b"ftp://"] {
        if let Some(rest) = c.strip_prefix(p) {
            return Some(rest.strip_prefix(b"www.").unwrap_or(rest));
        }
    }
    c.strip_prefix(b"www.")
}

fn url(keys: &FingerprintKeys, rest: &[u8], s: usize, e: usize, sink: &mut impl FnMut(Item)) {
    let mut rest = rest;
    while let Some(r) = rest.strip_suffix(b"/") {
        rest = r;
    }
    if rest.is_empty() {
        return;
    }
    let path = rest.iter().position(|&b| b == b'/').map(|p| &rest[p..]);
    let identifying = path.is_some_and(|p| {
        p.contains(&b'?')
            || p.split(|b| !b.is_ascii_alphanumeric()).any(|seg| {
                let d = seg.iter().filter(|b| b.is_ascii_digit()).count();
                (seg.len() >= 6 && d >= 2 && d < seg.len()) || d >= 6
            })
    });
    emit(
        keys,
        b'u',
        rest,
        if identifying { Ev::Strong } else { Ev::Weak },
        s,
        e,
        sink,
    );
}

fn identifier(
    keys: &FingerprintKeys,
    c: &[u8],
    letters: usize,
    digits: usize,
    s: usize,
    e: usize,
    sink: &mut impl FnMut(Item),
) {
    let a: Vec<u8> = c
        .iter()
        .copied()
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    let kind = if (a.len() >= 7 && digits >= 3 && letters >= 2) || (a.len() >= 12 && digits >= 1) {
        Some(Ev::Strong)
    } else if a.len() >= 5 && digits >= 2 {
        Some(Ev::Weak)
    } else {
        None
    };
    if let Some(kind) = kind {
        emit(keys, b'i', &a, kind, s, e, sink);
    }
    // The long digit groups inside (`HX-77120` quoted as `HX 77120`).
    for group in c.split(|b| !b.is_ascii_digit()) {
        if group.len() >= 5 {
            let significant = group.len() - group.iter().rev().take_while(|b| **b == b'0').count();
            if significant > 2 {
                emit(keys, b'n', group, Ev::Weak, s, e, sink);
            }
        }
    }
}

/// Word-level evidence: sketch samples and phrases.
fn words(
    keys: &FingerprintKeys,
    canon: &Canon,
    from: usize,
    to: usize,
    side: Side,
    sink: &mut impl FnMut(Item),
) {
    let text = &canon.text[..to];
    let bytes = text.as_bytes();
    let mut caps = canon.caps.partition_point(|&c| (c as usize) < from);
    // The previous word eligible for a phrase: (start, end, capitalized, hash).
    let mut prev: Option<(usize, usize, bool, u64)> = None;
    let mut i = from;
    let mut phrase = Vec::with_capacity(64);
    while i < bytes.len() {
        // Next word: a run of alphanumeric characters.
        let Some(ws) = next_word_start(text, i) else {
            break;
        };
        let we = word_end(text, ws);
        // A separator other than one space between two words breaks a phrase
        // (sentence ends, commas, list bullets).
        let joined = prev.is_some_and(|(_, pe, _, _)| ws == pe + 1 && bytes[pe] == b' ');
        i = we;
        while caps < canon.caps.len() && (canon.caps[caps] as usize) < ws {
            caps += 1;
        }
        let cap = canon.caps.get(caps).is_some_and(|&c| c as usize == ws);
        let w = &text[ws..we];
        let alpha = w.bytes().any(|b| !b.is_ascii_digit());
        if !alpha || is_stop(w) || w.len() < 2 {
            prev = None;
            continue;
        }
        let fh = keys.word_hash(w.as_bytes());
        let filter = &keys.words;
        if w.len() >= SKETCH_WORD_MIN && fh.is_multiple_of(SKETCH_RATE) {
            let wanted = match side {
                Side::Protected => {
                    filter.set(fh);
                    true
                }
                Side::Answer => filter.test(fh),
            };
            if wanted {
                sink(Item {
                    value: token_hash(keys, b'w', w.as_bytes()),
                    kind: Ev::Sketch,
                    start: ws,
                    end: we,
                });
            }
        }
        if let Some((ps, pe, pcap, pfh)) = prev
            && joined
            && (side == Side::Answer || (pcap && cap))
        {
            let first = pfh ^ PHRASE_FILTER_SALT;
            let wanted = match side {
                Side::Protected => {
                    filter.set(first);
                    true
                }
                Side::Answer => filter.test(first),
            };
            if wanted {
                phrase.clear();
                phrase.extend_from_slice(&bytes[ps..pe]);
                phrase.push(b' ');
                phrase.extend_from_slice(w.as_bytes());
                emit(keys, b'p', &phrase, Ev::Phrase, ps, we, sink);
            }
        }
        prev = Some((ws, we, cap, fh));
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || (!c.is_ascii() && c.is_alphanumeric())
}

fn next_word_start(text: &str, from: usize) -> Option<usize> {
    text[from..]
        .char_indices()
        .find(|(_, c)| is_word_char(*c))
        .map(|(k, _)| from + k)
}

fn word_end(text: &str, from: usize) -> usize {
    text[from..]
        .char_indices()
        .find(|(_, c)| !is_word_char(*c))
        .map_or(text.len(), |(k, _)| from + k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::canonicalize;

    fn keys() -> FingerprintKeys {
        // One set of keys (and so one word filter) for the whole test binary, as
        // one guard has.
        static K: std::sync::OnceLock<FingerprintKeys> = std::sync::OnceLock::new();
        K.get_or_init(|| FingerprintKeys::new(&[9u8; 32])).clone()
    }

    fn of(text: &str, side: Side) -> Vec<(Ev, u64)> {
        let c = canonicalize(text);
        let mut out = Vec::new();
        tokens(&keys(), &c, 0, c.text.len(), side, &mut |i| {
            if i.kind != Ev::Sketch {
                out.push((i.kind, i.value));
            }
        });
        out.sort_unstable();
        out
    }

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP.windows(2).all(|w| w[0] < w[1]));
        assert!(STOP.iter().all(|w| w.len() <= STOP_BYTES_MAX));
    }

    #[test]
    fn salient_tokens_survive_reformatting() {
        let k = keys();
        let n = |d: &str| token_hash(&k, b'n', d.as_bytes());
        let phone = of("call +1 (415) 555-0100 today", Side::Protected);
        assert!(phone.contains(&(Ev::Strong, n("4155550100"))), "{phone:?}");
        assert!(of("415.555.0100", Side::Answer).contains(&(Ev::Strong, n("4155550100"))));
        let amount = of("owes $48,250.00", Side::Protected);
        assert!(amount.contains(&(Ev::Weak, n("4825000"))));
        assert!(amount.contains(&(Ev::Weak, n("48250"))));
        assert!(of("48250 dollars", Side::Answer).contains(&(Ev::Weak, n("48250"))));
        let id = of("account ACCT-48213-QX.", Side::Protected);
        assert_eq!(of("(acct48213qx)", Side::Answer)[0], id[0]);
        assert_eq!(
            of(
                "mail Dana.Whitfield@Halvorsen-Maritime.com,",
                Side::Protected
            ),
            of("dana.whitfield@halvorsen-maritime.com", Side::Answer)
        );
    }

    #[test]
    fn common_values_are_not_evidence() {
        for text in [
            "in 2026 we grew 35% to 10,000 users, up 1.5 points",
            "the year 1999 and 250000 people",
            "COVID 19 and Windows 11",
        ] {
            assert!(
                of(text, Side::Protected)
                    .iter()
                    .all(|(k, _)| *k == Ev::Phrase),
                "{text}: {:?}",
                of(text, Side::Protected)
            );
        }
    }

    #[test]
    fn phrases_are_capitalized_pairs_when_protected_and_any_pair_when_answering() {
        let p = of("Ask Dana Whitfield about it.", Side::Protected);
        assert_eq!(p.len(), 2, "{p:?}"); // "ask dana", "dana whitfield"
        let a = of("ask dana whitfield about it", Side::Answer);
        assert!(p.iter().all(|x| a.contains(x)));
    }
}
