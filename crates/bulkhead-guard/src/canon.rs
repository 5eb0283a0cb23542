//! Canonical form: the one shape every protected text is reduced to before its
//! evidence is computed, and every answer (and every decoded view of one) before
//! it is matched. The same function runs on both sides, so whatever it erases an
//! attacker gains nothing by varying.
//!
//! Per character, in order:
//! 1. compatibility decomposition (NFKD: fullwidth forms, ligatures, mathematical
//!    alphanumerics, circled and superscript letters become their plain letters);
//! 2. combining marks dropped (accents typed as separate marks, `e\u{301}`, and
//!    precomposed `é` both become `e`);
//! 3. lowercased (full lowercase mapping, plus the case-folding-only `ß` → `ss`
//!    and final sigma → sigma);
//! 4. a remaining non-ASCII character is mapped to its UTS #39 confusable
//!    prototype (Cyrillic `а`, Greek `ο` and the like become Latin letters), and
//!    default-ignorable code points (zero-width characters, bidi controls, tag
//!    characters, variation selectors, soft hyphens) vanish;
//! 5. whitespace runs become one space; ASCII punctuation is kept (salient tokens
//!    such as emails and amounts need it) and dropped later where it does not
//!    matter (fingerprints, words).
//!
//! ASCII takes a table-driven fast path; other characters go through
//! `unicode-normalization` and `unicode-security` and are memoized per thread.
//!
//! Each canonical byte remembers the offset of the original character it came
//! from, so evidence found in canonical text is reported on the original span.

use std::cell::RefCell;
use std::collections::HashMap;

/// Canonical text with the original offset of every canonical byte.
#[derive(Debug, Default, Clone)]
pub(crate) struct Canon {
    pub(crate) text: String,
    /// `orig[i]`: offset (in the input) of the character canonical byte `i` came from.
    pub(crate) orig: Vec<u32>,
    /// `ends[i]`: offset just past that character in the input.
    pub(crate) ends: Vec<u32>,
    /// Canonical offsets where a word began with an upper-case letter in the input.
    pub(crate) caps: Vec<u32>,
}

impl Canon {
    /// The input span that canonical bytes `s..e` came from.
    pub(crate) fn span(&self, s: usize, e: usize) -> (usize, usize) {
        if self.orig.is_empty() {
            return (0, 0);
        }
        let s = s.min(self.orig.len() - 1);
        let e = e.clamp(s + 1, self.orig.len());
        (self.orig[s] as usize, self.ends[e - 1] as usize)
    }

    fn push_ascii(&mut self, b: u8, at: usize, end: usize) {
        self.text.push(char::from(b));
        self.orig.push(at as u32);
        self.ends.push(end as u32);
    }

    fn push_char(&mut self, c: char, at: usize, end: usize) {
        let before = self.text.len();
        self.text.push(c);
        for _ in before..self.text.len() {
            self.orig.push(at as u32);
            self.ends.push(end as u32);
        }
    }
}

/// What one ASCII byte becomes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ascii {
    /// Letter (lowercased) or digit.
    Alnum(u8),
    Space,
    Punct(u8),
    /// Control characters other than whitespace: dropped.
    Drop,
}

const fn ascii_class(b: u8) -> Ascii {
    match b {
        b'A'..=b'Z' => Ascii::Alnum(b + 32),
        b'a'..=b'z' | b'0'..=b'9' => Ascii::Alnum(b),
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => Ascii::Space,
        0x21..=0x7e => Ascii::Punct(b),
        _ => Ascii::Drop,
    }
}

const ASCII: [Ascii; 128] = {
    let mut t = [Ascii::Drop; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_class(i as u8);
        i += 1;
    }
    t
};

/// A non-ASCII character's canonical replacement: up to 12 bytes of UTF-8, and
/// whether it is whitespace or starts with an upper-case letter.
#[derive(Clone, Copy)]
struct Mapped {
    bytes: [u8; 12],
    len: u8,
    space: bool,
    upper: bool,
}

fn map_char(c: char) -> Mapped {
    let mut out = Mapped {
        bytes: [0; 12],
        len: 0,
        space: c.is_whitespace(),
        upper: c.is_uppercase(),
    };
    if out.space {
        return out;
    }
    let push = |ch: char, out: &mut Mapped| {
        let mut buf = [0u8; 4];
        let s = ch.encode_utf8(&mut buf);
        if out.len as usize + s.len() <= out.bytes.len() {
            out.bytes[out.len as usize..out.len as usize + s.len()].copy_from_slice(s.as_bytes());
            out.len += s.len() as u8;
        }
    };
    unicode_normalization::char::decompose_compatible(c, |d| {
        if unicode_normalization::char::is_combining_mark(d) {
            return;
        }
        if d.is_ascii() {
            if let Ascii::Alnum(b) | Ascii::Punct(b) = ASCII[d as usize] {
                push(char::from(b), &mut out);
            }
            return;
        }
        if d.is_uppercase() {
            out.upper = true;
            // An upper-case look-alike may have a Latin prototype that its
            // lower-case form lacks (Cyrillic `Т` is `T`, but `т` is no `t`):
            // take the prototype of the letter as written first.
            if let Some(latin) = ascii_prototype(d) {
                for b in latin {
                    push(char::from(b), &mut out);
                }
                return;
            }
        }
        for low in fold(d) {
            if low.is_ascii() {
                push(low, &mut out);
                continue;
            }
            let mut buf = [0u8; 4];
            // The skeleton drops default-ignorable code points and maps look-alikes
            // to their prototype; its own decomposition may bring marks back.
            for p in unicode_security::skeleton(low.encode_utf8(&mut buf)) {
                if unicode_normalization::char::is_combining_mark(p) {
                    continue;
                }
                for q in p.to_lowercase() {
                    if q.is_ascii() {
                        if let Ascii::Alnum(b) | Ascii::Punct(b) = ASCII[q as usize] {
                            push(char::from(b), &mut out);
                        }
                    } else {
                        push(q, &mut out);
                    }
                }
            }
        }
    });
    out
}

/// The UTS #39 prototype of a character when it is all ASCII letters or digits,
/// lowercased: how an upper-case look-alike reads.
fn ascii_prototype(c: char) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4];
    let mut out = Vec::new();
    for p in unicode_security::skeleton(c.encode_utf8(&mut buf)) {
        if unicode_normalization::char::is_combining_mark(p) {
            continue;
        }
        for q in p.to_lowercase() {
            match q.is_ascii().then(|| ASCII[q as usize]) {
                Some(Ascii::Alnum(b)) => out.push(b),
                _ => return None,
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Full case folding where it differs from lowercasing for letters models emit.
fn fold(c: char) -> impl Iterator<Item = char> {
    let special: Option<&'static [char]> = match c {
        'ß' | 'ẞ' => Some(&['s', 's']),
        'ς' => Some(&['σ']),
        'ſ' => Some(&['s']),
        _ => None,
    };
    let lower = if special.is_some() {
        None
    } else {
        Some(c.to_lowercase())
    };
    special
        .into_iter()
        .flat_map(|s| s.iter().copied())
        .chain(lower.into_iter().flatten())
}

thread_local! {
    /// Non-ASCII characters seen on this thread and what they became. Bounded:
    /// cleared when it grows past `MEMO_MAX` entries.
    static MEMO: RefCell<HashMap<char, Mapped>> = RefCell::new(HashMap::new());
}
const MEMO_MAX: usize = 1 << 16;

fn mapped(c: char) -> Mapped {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(v) = m.get(&c) {
            return *v;
        }
        if m.len() >= MEMO_MAX {
            m.clear();
        }
        let v = map_char(c);
        m.insert(c, v);
        v
    })
}

/// Appends the canonical form of `text` (whose first byte is at input offset
/// `base`) to `out`. `prev_space` says whether the canonical text so far ends in
/// a space (or is empty), so that whitespace collapses across calls.
pub(crate) fn canonicalize_into(text: &str, base: usize, out: &mut Canon) {
    let bytes = text.as_bytes();
    let mut last_space = out.text.is_empty() || out.text.ends_with(' ');
    let mut last_alnum = out
        .text
        .as_bytes()
        .last()
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b >= 0x80);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            // Fast path: a run of printable ASCII that maps to itself but for
            // case (letters, digits, punctuation, single spaces) is copied whole.
            let run = bytes[i..]
                .iter()
                .enumerate()
                .take_while(|&(k, &c)| {
                    (0x21..0x7f).contains(&c)
                        || (c == b' '
                            && !(k == 0 && last_space)
                            && bytes
                                .get(i + k + 1)
                                .is_some_and(|n| (0x21..0x7f).contains(n)))
                })
                .count();
            if run >= 2 {
                let start = out.text.len();
                for (k, &c) in bytes[i..i + run].iter().enumerate() {
                    let alnum = c.is_ascii_alphanumeric();
                    if alnum && c.is_ascii_uppercase() {
                        let prev_alnum = if k == 0 {
                            last_alnum
                        } else {
                            bytes[i + k - 1].is_ascii_alphanumeric()
                        };
                        if !prev_alnum {
                            out.caps.push((start + k) as u32);
                        }
                    }
                }
                out.text.push_str(&text[i..i + run]);
                out.text[start..].make_ascii_lowercase();
                out.orig
                    .extend((base + i..base + i + run).map(|o| o as u32));
                out.ends
                    .extend((base + i + 1..=base + i + run).map(|o| o as u32));
                let lb = bytes[i + run - 1];
                last_alnum = lb.is_ascii_alphanumeric();
                last_space = lb == b' ';
                i += run;
                continue;
            }
            match ASCII[b as usize] {
                Ascii::Alnum(l) => {
                    if !last_alnum && b.is_ascii_uppercase() {
                        out.caps.push(out.text.len() as u32);
                    }
                    out.push_ascii(l, base + i, base + i + 1);
                    last_alnum = true;
                    last_space = false;
                }
                Ascii::Space => {
                    if !last_space {
                        out.push_ascii(b' ', base + i, base + i + 1);
                        last_space = true;
                    }
                    last_alnum = false;
                }
                Ascii::Punct(p) => {
                    out.push_ascii(p, base + i, base + i + 1);
                    last_space = false;
                    last_alnum = false;
                }
                Ascii::Drop => {}
            }
            i += 1;
            continue;
        }
        // Slicing at `i` is sound: `i` only ever stops on character starts.
        let c = text[i..].chars().next().unwrap_or('\u{fffd}');
        let n = c.len_utf8();
        let m = mapped(c);
        if m.space {
            if !last_space {
                out.push_ascii(b' ', base + i, base + i + n);
                last_space = true;
            }
            last_alnum = false;
        } else if m.len > 0 {
            // The mapping is valid UTF-8 built from whole characters.
            let s = std::str::from_utf8(&m.bytes[..m.len as usize]).unwrap_or("");
            for ch in s.chars() {
                let alnum = ch.is_alphanumeric();
                if alnum && !last_alnum && m.upper {
                    out.caps.push(out.text.len() as u32);
                }
                out.push_char(ch, base + i, base + i + n);
                last_alnum = alnum;
                last_space = false;
            }
        }
        i += n;
    }
}

/// The canonical form of a whole text.
pub(crate) fn canonicalize(text: &str) -> Canon {
    let mut c = Canon::default();
    canonicalize_into(text, 0, &mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        canonicalize(s).text
    }

    #[test]
    fn upper_case_look_alikes_read_as_their_latin_letters() {
        // Cyrillic `С` and `Т` inside an identifier: their lower-case forms `с`
        // and `т` are not both Latin look-alikes, the capitals are.
        assert_eq!(canon("ACСT-62171-QТ"), canon("ACCT-62171-QT"));
        assert_eq!(canon("НОТЕL"), canon("HOTEL"));
        // A capital with no ASCII prototype keeps its own lower-case form.
        assert_eq!(canon("Ω"), "ω");
    }

    #[test]
    fn obfuscations_collapse_to_one_form() {
        let plain = canon("Deal HX-77120 for Dana");
        for variant in [
            "ＤＥＡＬ ＨＸ-７７１２０ ｆｏｒ Ｄａｎａ", // fullwidth
            "D\u{200b}e\u{200d}a\u{feff}l HX-77120 for Dana", // zero-width
            "Deal\u{202e} HX-77120 for Dana\u{202c}",   // bidi controls
            "Dеаl HX-77120 fоr Dаnа",                   // Cyrillic look-alikes
            "DEAL   hx-77120\n\tFOR dana",              // case and whitespace
            "𝐃𝐞𝐚𝐥 HX-77120 for Dana",                   // mathematical bold
            "Deal HX-77120 for Dan\u{e0061}a",          // a tag character
        ] {
            assert_eq!(canon(variant), plain, "{variant:?}");
        }
        assert_eq!(canon("café"), canon("cafe\u{301}"));
        assert_eq!(canon("Straße"), "strasse");
        assert_eq!(canon("ﬁnance"), "finance");
    }

    #[test]
    fn offsets_point_into_the_input() {
        let input = "Ａb  c\u{200b}d";
        let c = canonicalize(input);
        assert_eq!(c.text, "ab cd");
        assert_eq!(c.orig.len(), c.text.len());
        assert_eq!(c.span(0, 1), (0, 3));
        assert_eq!(c.span(3, 5), (6, 11));
        assert_eq!(c.caps, vec![0]);
    }
}
