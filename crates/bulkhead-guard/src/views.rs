//! Decoded views: what embedded encodings in an answer decode to, so a leak
//! wrapped in base64, hex, percent-encoding, `\u` or JSON escapes, HTML entities,
//! rot13 or reversed text is matched like plain text.
//!
//! A view is made only where a run looks like its encoding, and only kept when it
//! decodes to mostly printable UTF-8. Limits (all named below): runs of at least
//! `BASE64_RUN_MIN` / `HEX_DIGITS_MIN` characters or `ESCAPES_MIN` escapes;
//! nesting depth `DEPTH_MAX` (a view of a view, no deeper); all decoded bytes of
//! one text at most `EXPANSION_MAX` times its length; a run at most
//! `RUN_BYTES_MAX` long (a longer one is viewed in pieces). rot13 and reversal
//! have no alphabet of their own, so they are cue-driven: a rot13 view where the
//! letters of a long run have far too few vowels for prose, a reversed view where
//! reversed function words (`eht`, `dna`) outnumber plain ones.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

pub const BASE64_RUN_MIN: usize = 16;
pub const HEX_DIGITS_MIN: usize = 16;
pub const ESCAPES_MIN: usize = 3;
pub const DEPTH_MAX: u8 = 2;
pub const EXPANSION_MAX: usize = 4;
pub const RUN_BYTES_MAX: usize = 16 * 1024;
/// Letters a rot13 or reversal cue needs to look at.
const CUE_LETTERS_MIN: usize = 24;

/// One decoded view: the span of the input it came from and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) text: String,
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

const B64: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
        i += 1;
    }
    t
};

#[inline]
fn is_b64(b: u8) -> bool {
    B64[b as usize]
}

/// Mostly printable text, or nothing.
fn printable(bytes: Vec<u8>) -> Option<String> {
    let s = String::from_utf8(bytes).ok()?;
    let (mut ok, mut all) = (0usize, 0usize);
    for c in s.chars() {
        all += 1;
        if !c.is_control() || matches!(c, '\n' | '\t' | '\r') {
            ok += 1;
        }
    }
    (all >= 4 && ok * 100 >= all * 90).then_some(s)
}

/// All views of `text` (spans relative to it), up to `budget` decoded bytes.
pub(crate) fn views(text: &str, depth: u8, budget: &mut usize, out: &mut Vec<View>) {
    if depth >= DEPTH_MAX || *budget == 0 {
        return;
    }
    let first = out.len();
    encoded_runs(text, budget, out);
    // Views of views (an encoding inside an encoding): spans stay those of the
    // outer run. Cue views are not nested: rot13 or reversal applied twice is the
    // text itself.
    let end = out.len();
    if depth == 0 {
        cue_views(text, budget, out);
        tag_view(text, budget, out);
    }
    let mut i = first;
    while i < end && *budget > 0 {
        let (s, e) = (out[i].start, out[i].end);
        let inner_text = out[i].text.clone();
        let mut inner = Vec::new();
        views(&inner_text, depth + 1, budget, &mut inner);
        out.extend(inner.into_iter().map(|v| View {
            start: s,
            end: e,
            text: v.text,
        }));
        i += 1;
    }
}

fn take(budget: &mut usize, s: String) -> Option<String> {
    if s.len() > *budget {
        return None;
    }
    *budget -= s.len();
    Some(s)
}

fn encoded_runs(text: &str, budget: &mut usize, out: &mut Vec<View>) {
    let b = text.as_bytes();
    let mut i = 0;
    // Each line is checked for escapes once (a line of many `%` or `&` would
    // otherwise be decoded once per sign).
    let mut line_checked_to = 0;
    while i < b.len() {
        let c = b[i];
        if (c == b'%' || c == b'\\' || c == b'&') && i >= line_checked_to && is_escape_at(b, i) {
            let (s, e) = line_bounds(b, i);
            line_checked_to = e.max(i + 1);
            if let Some(v) = escaped_line(&text[s..e]).and_then(|t| take(budget, t)) {
                out.push(View {
                    start: s,
                    end: e,
                    text: v,
                });
                i = e;
                continue;
            }
            i += 1;
            continue;
        }
        if !is_b64(c) {
            i += 1;
            continue;
        }
        // A run of the base64/hex alphabet, lines joined when a line break
        // separates two long pieces.
        let s = i;
        let mut e = i;
        let mut j = i;
        let mut piece = 0usize;
        while j < b.len() && j - s < RUN_BYTES_MAX {
            if is_b64(b[j]) {
                j += 1;
                e = j;
                piece += 1;
            } else if (b[j] == b'\n' || b[j] == b'\r' || b[j] == b' ')
                && piece >= BASE64_RUN_MIN
                && b[j + 1..]
                    .iter()
                    .take(4)
                    .take_while(|c| is_b64(**c))
                    .count()
                    == 4
            {
                j += 1;
                piece = 0;
            } else {
                break;
            }
        }
        i = e.max(s + 1);
        if e - s < BASE64_RUN_MIN {
            continue;
        }
        let run = &text[s..e];
        let compact: Vec<u8> = run.bytes().filter(|b| is_b64(*b)).collect();
        if compact.len() < BASE64_RUN_MIN {
            continue;
        }
        if let Some(v) = decode_hex(&compact).or_else(|| decode_b64(&compact))
            && let Some(v) = take(budget, v)
        {
            out.push(View {
                start: s,
                end: e,
                text: v,
            });
        }
    }
}

fn run_len_before(b: &[u8], j: usize) -> usize {
    b[..j].iter().rev().take_while(|c| is_b64(**c)).count()
}

fn line_bounds(b: &[u8], at: usize) -> (usize, usize) {
    let s = b[..at]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    let e = b[at..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| at + p);
    let e = e.min(s + RUN_BYTES_MAX);
    (s, e)
}

fn decode_hex(c: &[u8]) -> Option<String> {
    let digits: Vec<u8> = c.to_vec();
    if digits.len() < HEX_DIGITS_MIN
        || !digits.len().is_multiple_of(2)
        || !digits.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let val = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
    printable(
        digits
            .chunks(2)
            .map(|p| val(p[0]) << 4 | val(p[1]))
            .collect(),
    )
}

fn decode_b64(c: &[u8]) -> Option<String> {
    let url = c.iter().any(|b| matches!(b, b'-' | b'_'));
    let mut c: Vec<u8> = c.iter().copied().filter(|b| *b != b'=').collect();
    if c.len() % 4 == 1 {
        c.pop();
    }
    let engine = if url { &URL } else { &STD };
    printable(engine.decode(&c).ok()?)
}

/// A line holding percent-encoding, backslash escapes or HTML entities, decoded;
/// `None` when it has fewer than `ESCAPES_MIN` of them or decodes to the same.
fn escaped_line(line: &str) -> Option<String> {
    let b = line.as_bytes();
    let pct = b
        .windows(3)
        .filter(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
        .count();
    let esc = b
        .windows(2)
        .filter(|w| {
            w[0] == b'\\' && matches!(w[1], b'u' | b'x' | b'n' | b't' | b'"' | b'/' | b'\\' | b'U')
        })
        .count();
    let ent = line.matches('&').filter(|_| line.contains(';')).count();
    let mut out = line.to_owned();
    if pct >= ESCAPES_MIN {
        out = percent_decode(&out);
    }
    if esc >= ESCAPES_MIN {
        out = unescape(&out);
    }
    if ent >= ESCAPES_MIN {
        out = html_decode(&out);
    }
    (out != line).then_some(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_at(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = s.get(at..at + n)?;
    let t = std::str::from_utf8(digits).ok()?;
    u32::from_str_radix(t, 16).ok()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut bytes_run: Vec<u8> = Vec::new();
    let mut i = 0;
    let flush = |run: &mut Vec<u8>, out: &mut String| {
        if !run.is_empty() {
            out.push_str(&String::from_utf8_lossy(run));
            run.clear();
        }
    };
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'x' => {
                    if let Some(v) = hex_at(b, i + 2, 2) {
                        bytes_run.push(v as u8);
                        i += 4;
                        continue;
                    }
                }
                b'u' => {
                    if let Some(v) = hex_at(b, i + 2, 4) {
                        flush(&mut bytes_run, &mut out);
                        let mut cp = v;
                        let mut used = 6;
                        if (0xD800..0xDC00).contains(&v)
                            && b.get(i + 6) == Some(&b'\\')
                            && b.get(i + 7) == Some(&b'u')
                            && let Some(lo) = hex_at(b, i + 8, 4)
                            && (0xDC00..0xE000).contains(&lo)
                        {
                            cp = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                            used = 12;
                        }
                        out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                        i += used;
                        continue;
                    }
                }
                b'U' => {
                    if let Some(v) = hex_at(b, i + 2, 8) {
                        flush(&mut bytes_run, &mut out);
                        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                        i += 10;
                        continue;
                    }
                }
                c @ (b'n' | b't' | b'r' | b'"' | b'\'' | b'/' | b'\\') => {
                    flush(&mut bytes_run, &mut out);
                    out.push(match c {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        other => char::from(other),
                    });
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        flush(&mut bytes_run, &mut out);
        // Copy one whole character.
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    flush(&mut bytes_run, &mut out);
    out
}

/// Named entities models produce; numeric ones are decoded in full.
const ENTITIES: &[(&str, char)] = &[
    ("AElig", 'Æ'),
    ("Aacute", 'Á'),
    ("Eacute", 'É'),
    ("Ntilde", 'Ñ'),
    ("Ouml", 'Ö'),
    ("Uuml", 'Ü'),
    ("aacute", 'á'),
    ("acirc", 'â'),
    ("aelig", 'æ'),
    ("agrave", 'à'),
    ("amp", '&'),
    ("apos", '\''),
    ("aring", 'å'),
    ("auml", 'ä'),
    ("ccedil", 'ç'),
    ("commat", '@'),
    ("copy", '©'),
    ("dollar", '$'),
    ("eacute", 'é'),
    ("ecirc", 'ê'),
    ("egrave", 'è'),
    ("euml", 'ë'),
    ("euro", '€'),
    ("excl", '!'),
    ("gt", '>'),
    ("hyphen", '-'),
    ("iacute", 'í'),
    ("lowbar", '_'),
    ("lt", '<'),
    ("mdash", '—'),
    ("nbsp", ' '),
    ("ndash", '–'),
    ("ntilde", 'ñ'),
    ("num", '#'),
    ("oacute", 'ó'),
    ("ouml", 'ö'),
    ("percnt", '%'),
    ("period", '.'),
    ("plus", '+'),
    ("pound", '£'),
    ("quot", '"'),
    ("semi", ';'),
    ("sol", '/'),
    ("szlig", 'ß'),
    ("uacute", 'ú'),
    ("uuml", 'ü'),
    ("colon", ':'),
    ("comma", ','),
];

fn html_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let Some(semi) = after.find(';').filter(|&q| q <= 12) else {
            out.push('&');
            rest = after;
            continue;
        };
        let name = &after[..semi];
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let v = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            v.and_then(char::from_u32)
        } else {
            ENTITIES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => char::from(b'a' + (c as u8 - b'a' + 13) % 26),
            'A'..='Z' => char::from(b'A' + (c as u8 - b'A' + 13) % 26),
            _ => c,
        })
        .collect()
}

const fn pack_word(w: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < w.len() {
        v |= (w[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// Function words, and the same reversed, packed as numbers for a cheap test.
const FORWARD_PACKED: [u64; 11] = [
    pack_word(b"and"),
    pack_word(b"are"),
    pack_word(b"for"),
    pack_word(b"from"),
    pack_word(b"have"),
    pack_word(b"that"),
    pack_word(b"the"),
    pack_word(b"this"),
    pack_word(b"was"),
    pack_word(b"with"),
    pack_word(b"you"),
];
const REVERSED_PACKED: [u64; 11] = [
    pack_word(b"dna"),
    pack_word(b"era"),
    pack_word(b"rof"),
    pack_word(b"morf"),
    pack_word(b"evah"),
    pack_word(b"taht"),
    pack_word(b"eht"),
    pack_word(b"siht"),
    pack_word(b"saw"),
    pack_word(b"htiw"),
    pack_word(b"uoy"),
];

/// The encoded runs of `text` and their nested views, without the cue-driven
/// ones (which a stream takes over a longer window: `window_views`).
pub(crate) fn run_views(text: &str, budget: &mut usize, out: &mut Vec<View>) {
    let first = out.len();
    encoded_runs(text, budget, out);
    let end = out.len();
    for i in first..end {
        if *budget == 0 {
            break;
        }
        let (s, e) = (out[i].start, out[i].end);
        let inner_text = out[i].text.clone();
        let mut inner = Vec::new();
        views(&inner_text, 1, budget, &mut inner);
        out.extend(inner.into_iter().map(|v| View {
            start: s,
            end: e,
            text: v.text,
        }));
    }
}

/// The cue-driven views (rot13, reversal) and hidden tag-character text of a
/// window: a stream judges them over the last `CUE_WINDOW_BYTES` read, so a cue
/// cut over several segments is still seen.
pub(crate) fn window_views(text: &str, budget: &mut usize, out: &mut Vec<View>) {
    cue_views(text, budget, out);
    tag_view(text, budget, out);
}

/// Text read before a stream's segment that its cue views also look at.
pub const CUE_WINDOW_BYTES: usize = 512;
/// Tag characters that make a hidden-text view.
const TAG_CHARS_MIN: usize = 4;

/// Unicode tag characters (U+E0020–U+E007E) spell ASCII invisibly ("ASCII
/// smuggling"); the canonical form drops them, this view reads them.
fn tag_view(text: &str, budget: &mut usize, out: &mut Vec<View>) {
    // Every tag character starts with the UTF-8 bytes F3 A0.
    if !text.as_bytes().windows(2).any(|w| w == [0xF3, 0xA0]) {
        return;
    }
    let hidden: String = text
        .chars()
        .filter_map(|c| {
            let v = c as u32;
            (0xE0020..=0xE007E)
                .contains(&v)
                .then(|| char::from((v - 0xE0000) as u8))
        })
        .collect();
    if hidden.len() >= TAG_CHARS_MIN
        && let Some(v) = take(budget, hidden)
    {
        out.push(View {
            start: 0,
            end: text.len(),
            text: v,
        });
    }
}

fn cue_views(text: &str, budget: &mut usize, out: &mut Vec<View>) {
    let mut letters = 0usize;
    let mut vowels = 0usize;
    let (mut fwd, mut rev) = (0usize, 0usize);
    let mut rot_cue = false;
    for w in text
        .as_bytes()
        .split(|c| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        letters += w.iter().filter(|b| b.is_ascii_alphabetic()).count();
        vowels += w
            .iter()
            .filter(|b| {
                matches!(
                    b.to_ascii_lowercase(),
                    b'a' | b'e' | b'i' | b'o' | b'u' | b'y'
                )
            })
            .count();
        if (3..=5).contains(&w.len()) {
            let mut packed = 0u64;
            for (k, c) in w.iter().enumerate() {
                packed |= u64::from(c.to_ascii_lowercase()) << (8 * k);
            }
            fwd += usize::from(FORWARD_PACKED.contains(&packed));
            rev += usize::from(REVERSED_PACKED.contains(&packed));
            rot_cue |= packed == pack_word(b"rot13");
        }
    }
    if letters < CUE_LETTERS_MIN {
        return;
    }
    // English letters are ~38% vowels (with y); rot13 maps them onto n, r, v,
    // b, h, l, which make up ~22%.
    if (vowels * 100 < letters * 30 || rot_cue)
        && let Some(v) = take(budget, rot13(text))
    {
        out.push(View {
            start: 0,
            end: text.len(),
            text: v,
        });
    }
    if rev >= 2
        && rev > fwd
        && let Some(v) = take(budget, text.chars().rev().collect())
    {
        out.push(View {
            start: 0,
            end: text.len(),
            text: v,
        });
    }
}

/// An escape sequence starts at `i`: `%XX`, `\\uXXXX`, `\\xXX`, `&#…;` or `&name;`.
fn is_escape_at(b: &[u8], i: usize) -> bool {
    let at = |k: usize| b.get(i + k).copied().unwrap_or(0);
    match b[i] {
        b'%' => at(1).is_ascii_hexdigit() && at(2).is_ascii_hexdigit(),
        b'\\' => matches!(
            at(1),
            b'u' | b'x' | b'U' | b'n' | b't' | b'"' | b'/' | b'\\'
        ),
        b'&' => {
            at(1) == b'#'
                || (at(1).is_ascii_alphabetic()
                    && b[i + 1..]
                        .iter()
                        .take(10)
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .count()
                        >= 2
                    && b[i + 1..].iter().take(12).any(|&c| c == b';'))
        }
        _ => false,
    }
}

/// Where a run that may still continue starts, when `text` is a stream's prefix:
/// an encoding run or escaped line touching its end. Text from there on must not
/// be judged (or released) until the run is complete.
pub(crate) fn open_tail(text: &str) -> usize {
    let b = text.as_bytes();
    let mut start = b.len();
    // The last line, when it holds escape sequences (and is not too long to be
    // decoded whole), or a sign that may begin one.
    let line = b.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    if b.len() - line <= RUN_BYTES_MAX && (line..b.len()).any(|i| is_escape_at(b, i)) {
        start = line;
    } else if let Some(p) = b[b.len().saturating_sub(12)..]
        .iter()
        .rposition(|&c| matches!(c, b'%' | b'\\' | b'&'))
    {
        start = start.min(b.len().saturating_sub(12) + p);
    }
    // An alphabet run at the very end (and the lines it joins).
    let mut j = b.len();
    loop {
        let run = b[..j].iter().rev().take_while(|c| is_b64(**c)).count();
        if run == 0 {
            break;
        }
        let s = j - run;
        start = start.min(s);
        if s > 0
            && matches!(b[s - 1], b'\n' | b'\r' | b' ')
            && run_len_before(b, s - 1) >= BASE64_RUN_MIN
        {
            j = s - 1;
        } else {
            break;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> Vec<String> {
        let mut budget = text.len() * EXPANSION_MAX;
        let mut out = Vec::new();
        views(text, 0, &mut budget, &mut out);
        out.into_iter().map(|v| v.text).collect()
    }

    #[test]
    fn encodings_are_decoded() {
        let secret = "deal HX-77120 for dana@example.com";
        let b64 = STD.encode(secret);
        assert!(decoded(&format!("here: {b64} ok")).contains(&secret.to_owned()));
        let url = URL.encode(secret).trim_end_matches('=').to_owned();
        assert!(decoded(&url).contains(&secret.to_owned()));
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(decoded(&hex).contains(&secret.to_owned()));
        let pct: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
        assert!(decoded(&pct).contains(&secret.to_owned()));
        let uesc: String = secret
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        assert!(decoded(&uesc).contains(&secret.to_owned()));
        let ent: String = secret.chars().map(|c| format!("&#{};", c as u32)).collect();
        assert!(decoded(&ent).contains(&secret.to_owned()));
        let nested = STD.encode(&hex);
        assert!(decoded(&nested).contains(&secret.to_owned()));
        let lines = STD.encode(secret.repeat(4));
        let wrapped: Vec<&str> = lines
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        assert!(decoded(&wrapped.join("\n")).contains(&secret.repeat(4)));
    }

    #[test]
    fn rot13_and_reversal_are_cued() {
        let prose = "the account for the deal was opened with the bank and the amount is due";
        assert!(decoded(&rot13(prose)).contains(&prose.to_owned()));
        let rev: String = prose.chars().rev().collect();
        assert!(decoded(&rev).contains(&prose.to_owned()));
        assert!(decoded(prose).is_empty(), "plain prose has no view");
    }

    #[test]
    fn open_tails() {
        assert_eq!(open_tail("hello world"), 6);
        assert_eq!(open_tail("hello "), 6);
        assert_eq!(open_tail("x %41%42"), 0);
    }
}
