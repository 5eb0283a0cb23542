//! Leaks judged over many guard keys: the fingerprint key is random per
//! deployment, so a defence that holds under one key (the eval's) proves little.
//! First, a leak cut into many small parts (tool calls of a few dozen characters,
//! cut mid-word, each wrapped in JSON); then a disguised identifier.
//!
//! Each part alone holds too little for a fingerprint, so whether the union of
//! the parts' evidence is enough depends on where the keyed winnowing selects:
//! with the parts alone, about 1 key in 130 let a whole 460-byte document through
//! at 60 characters a call (149 misses in 20,000 random keys), and most keys did
//! at 8–40 characters a call. The answer's `joined_view` is the run again and is
//! caught under every key. The keys are a fixed sequence, so
//! a failure is reproducible; the count of misses without the joined view is
//! printed, not asserted (it says how much the joined view carries).

use bulkhead_guard::{Guard, GuardLimits, Policy, Verdict, joined_view};
use bulkhead_types::{DocumentId, TenantId};

use crate::common::Rng;

const DOC: &str = "Northwind board memo, strictly internal: the Halcyon acquisition \
    closes on the ninth of October for 317 million euros, paid in two tranches; the \
    target's founders stay on for eighteen months under a retention plan worth 12 \
    million; the Lisbon office is folded into Porto and forty roles are cut; the \
    announcement waits until the antitrust filing in Brussels is accepted, and no \
    customer hears of it before the press release drafted by Marguerite Okafor.";

const NOW_MS: i64 = 1_800_000_000_000;
const KEYS: u64 = 600;

/// A key of 32 bytes from the fixed sequence.
fn key(r: &mut Rng) -> [u8; 32] {
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&r.next().to_le_bytes());
    }
    key
}

/// Cuts `text` into pieces of `min..=max` chars.
fn pieces<'a>(r: &mut Rng, text: &'a str, min: usize, max: usize) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let n = min + r.below(max - min + 1);
        let end = rest.char_indices().nth(n).map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(end);
        out.push(piece);
        rest = tail;
    }
    out
}

/// The texts a gateway scans for an answer of tool calls, as the OpenAI shapes
/// carry them: per call its id, its name, and its arguments (a JSON object as
/// text, or a custom tool's raw input).
fn tool_call_parts(notes: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut all, mut content) = (Vec::new(), Vec::new());
    for (i, note) in notes.iter().enumerate() {
        let arguments = if i % 3 == 2 {
            (*note).to_owned()
        } else {
            serde_json::json!({ "text": note }).to_string()
        };
        all.push(format!("call_{i}"));
        all.push("save_note".to_owned());
        all.push(arguments.clone());
        content.push(arguments);
    }
    (all, content)
}

#[test]
fn a_leak_cut_into_small_tool_calls_is_caught_under_every_key() {
    let (a, b) = (
        TenantId::from_random([1; 12]),
        TenantId::from_random([2; 12]),
    );
    let answer = format!("user: {DOC}\nuser: Good morning, any news for me today?\n");
    let mut r = Rng(0x7370_6c69_7421_2121);
    let (mut missed_parts_only, mut missed) = ([0usize; 2], Vec::new());
    for k in 0..KEYS {
        let guard = Guard::new(key(&mut r), GuardLimits::default());
        let doc = DocumentId::parse("doc_memo").unwrap();
        guard.index_document(&a, &doc, DOC).unwrap();
        let _ = guard.protect(&a, DOC, NOW_MS);
        guard.seed_canary(&a).unwrap();
        guard.seed_canary(&b).unwrap();
        // 60 characters a call (the mock's leaky-tools), or 8 to 40 at random.
        let notes = if k % 2 == 0 {
            pieces(&mut r, &answer, 60, 60)
        } else {
            pieces(&mut r, &answer, 8, 40)
        };
        let (mut parts, content) = tool_call_parts(&notes);
        let policy = Policy::default();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        if guard.scan_parts(&b, &refs, &policy).verdict != Verdict::Blocked {
            missed_parts_only[(k % 2) as usize] += 1;
        }
        let content: Vec<&str> = content.iter().map(String::as_str).collect();
        parts.push(joined_view(&content));
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        if guard.scan_parts(&b, &refs, &policy).verdict != Verdict::Blocked {
            missed.push(k);
        }
    }
    println!(
        "{KEYS} keys: parts alone missed {} of {} at 60 chars a call and {} of {} at 8-40, \
         with the joined view {}",
        missed_parts_only[0],
        KEYS / 2,
        missed_parts_only[1],
        KEYS / 2,
        missed.len()
    );
    assert!(
        missed.is_empty(),
        "keys (by position) that let the leak through: {missed:?}"
    );
}

#[test]
fn the_joined_view_reads_json_strings_in_order_and_text_as_it_is() {
    let parts = [
        r#"{"text":"the Halc"}"#,
        "yon acqui",
        r#"{"text":"sition closes"}"#,
    ];
    assert_eq!(joined_view(&parts), "the Halcyon acquisition closes");
    // A JSON string or number part is text as it is (a model may write a bare
    // quoted string as arguments).
    assert_eq!(joined_view(&[r#""quoted""#, "42"]), r#""quoted"42"#);
    let nested = [r#"{"a":{"b":["one ", "two"]},"c":"three"}"#];
    assert_eq!(joined_view(&nested), "one twothree");
}

/// A protected prompt's identifier rewritten with upper-case Cyrillic look-alikes
/// and zero-width characters (`AC⁠СT⁠-6​217⁠1‌-Q⁠Т`) is still the identifier, a
/// strong token, under every key: before the canonical form took a capital's
/// Latin prototype, `Т` became `т` and the token was lost, and whether the rest of
/// the prompt's evidence sufficed depended on the key.
#[test]
fn an_identifier_in_look_alike_capitals_is_caught_under_every_key() {
    let prompt = "Can you summarize the housekeeping roster issues on account \
                  ACCT-62171-QT for Valentina Mensah at Orrin Optics Inc?";
    let disguised = "Per the notes, see account AC\u{2060}СT\u{2060}-6\u{200b}217\u{2060}1\u{200c}-Q\u{2060}Т today.";
    let (victim, attacker) = (
        TenantId::from_random([7; 12]),
        TenantId::from_random([3; 12]),
    );
    let mut r = Rng(0x676c_7970_6873_2121);
    for k in 0..200 {
        let guard = Guard::new(key(&mut r), GuardLimits::default());
        let _ = guard.protect(&victim, prompt, NOW_MS);
        let out = guard.scan(&attacker, disguised, &Policy::default());
        assert_eq!(out.verdict, Verdict::Blocked, "key {k}: {:?}", out.findings);
    }
}
