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

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
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
    while i < b.len() {
        let c = b[i];
        if c == b'%' || c == b'\\' || c == b'&' {
            let (s, e) = line_bounds(b, i);
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
        while j < b.len() && j - s < RUN_BYTES_MAX {
            if is_b64(b[j]) {
                j += 1;
                e = j;
            } else if (b[j] == b'\n' || b[j] == b'\r' || b[j] == b' ')
                && j + 1 < b.len()
                && is_b64(b[j + 1])
                && run_len_before(b, j) >= BASE64_RUN_MIN
                && run_len_after(b, j + 1) >= 4
            {
                j += 1;
            } else {
                break;
            }
        }
        i = e.max(s + 1);
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

fn run_len_after(b: &[u8], j: usize) -> usize {
    b[j..].iter().take_while(|c| is_b64(**c)).count()
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

fn rot13(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => char::from(b'a' + (c as u8 - b'a' + 13) % 26),
            'A'..='Z' => char::from(b'A' + (c as u8 - b'A' + 13) % 26),
            _ => c,
        })
        .collect()
}

const FORWARD: &[&str] = &[
    "and", "are", "for", "from", "have", "that", "the", "this", "was", "with", "you",
];
const REVERSED: &[&str] = &[
    "dna", "era", "rof", "morf", "evah", "taht", "eht", "siht", "saw", "htiw", "uoy",
];

fn cue_views(text: &str, budget: &mut usize, out: &mut Vec<View>) {
    let mut letters = 0usize;
    let mut vowels = 0usize;
    let (mut fwd, mut rev) = (0usize, 0usize);
    for w in text.split(|c: char| !c.is_ascii_alphabetic()) {
        if w.is_empty() {
            continue;
        }
        letters += w.len();
        vowels += w.bytes().filter(|b| b"aeiouyAEIOUY".contains(b)).count();
        let lw = w.to_ascii_lowercase();
        fwd += usize::from(FORWARD.contains(&lw.as_str()));
        rev += usize::from(REVERSED.contains(&lw.as_str()));
    }
    if letters < CUE_LETTERS_MIN {
        return;
    }
    let lower = text.to_ascii_lowercase();
    // English letters are ~38% vowels (with y); rot13 maps them onto n, r, v,
    // b, h, l, which make up ~22%.
    if (vowels * 100 < letters * 27 || lower.contains("rot13") || lower.contains("rot-13"))
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

/// Where a run that may still continue starts, when `text` is a stream's prefix:
/// an encoding run or escaped line touching its end. Text from there on must not
/// be judged (or released) until the run is complete.
pub(crate) fn open_tail(text: &str) -> usize {
    let b = text.as_bytes();
    let mut start = b.len();
    // The last line, when it holds escapes.
    let line = b.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    if b[line..].iter().any(|&c| matches!(c, b'%' | b'\\' | b'&')) {
        start = line;
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
