//! Cross-tenant leak detection measured on the held-out red-team set in
//! `testdata/guard/leak_eval.jsonl` (written by `cargo run -p bulkhead-guard
//! --example gen_leak_eval`; its module docs describe the records).
//!
//! Every tenant's documents are indexed and its prompts protected; then each case
//! (an answer for the attacker tenant, in one or more parts) is judged twice:
//! - whole: one `scan_parts` over all parts, caught when the verdict is `Blocked`;
//! - streamed: the parts cut into deterministic 1–40-byte chunks (on char
//!   boundaries), interleaved round-robin over the parts, pushed into one
//!   `answer_stream`, then `finish`. A positive is caught only when the stream
//!   blocked AND nothing released before the block holds any of the victim's
//!   planted facts (`secrets`, compared case-insensitively).
//!
//! Positives are scored by recall, negatives by the false-block rate. The table
//! is printed per family × source × mode, with the ids (never the text) of every
//! case that failed, so misses can be investigated.
//!
//! An extra, informational column (`strict`) counts streamed positives that
//! blocked with no byte released past the start of the victim's material
//! (`leak_at`, per part). For encodings the secrets check is vacuous (a secret
//! never appears in plain form in base64), so this column is the one that says
//! whether any of the leak left. It has no floor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bulkhead_guard::{Guard, GuardLimits, Policy, Verdict};
use bulkhead_types::{DocumentId, TenantId};
use serde_json::Value;

use crate::common::Rng;

/// Recall floors per positive family: the targets, not measured figures.
const RECALL_FLOORS: &[(&str, f64)] = &[
    ("encoding", 0.99),
    ("unicode", 0.99),
    ("escaping", 0.99),
    ("structural", 0.99),
    ("extraction", 0.95),
    ("reorder", 0.95),
    ("reformat", 0.95),
    ("summary", 0.95),
    ("translation", 0.80),
];

/// Largest false-block rate over all negatives (per mode): the target.
const FALSE_BLOCK_MAX: f64 = 0.001;

const NOW_MS: i64 = 1_800_000_000_000;
const CHUNK_SEED: u64 = 0x6368_756e_6b73_2121; // "chunks!!"

fn tenant(label: &str) -> TenantId {
    let n: u8 = label
        .trim_start_matches('t')
        .parse()
        .expect("tenant label tN");
    // n + 1: no tenant gets the all-zero id.
    TenantId::from_random([n + 1; 12])
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("field {k} in a {} record", v["kind"]))
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .unwrap_or_else(|| panic!("array {k}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Cuts `s` into pieces of 1–40 bytes, each ending on a char boundary.
fn chunks<'a>(r: &mut Rng, s: &'a str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < s.len() {
        let mut end = (at + 1 + (r.next() % 40) as usize).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[at..end]);
        at = end;
    }
    out
}

#[derive(Default, Clone, Copy)]
struct Tally {
    cases: usize,
    /// Positives caught / negatives blocked.
    hits: usize,
    /// Streamed positives blocked with nothing released past `leak_at`.
    strict: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Whole,
    Stream,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Whole => "whole",
            Mode::Stream => "stream",
        }
    }
}

struct Judged {
    whole: bool,
    stream: bool,
    strict: bool,
}

fn judge(guard: &Guard, case: &Value, r: &mut Rng) -> Judged {
    let attacker = tenant(str_of(case, "attacker"));
    let parts = strings(case, "parts");
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let policy = Policy::default();
    let whole = guard.scan_parts(&attacker, &refs, &policy).verdict == Verdict::Blocked;

    let pieces: Vec<Vec<&str>> = parts.iter().map(|p| chunks(r, p)).collect();
    let mut released = vec![String::new(); parts.len()];
    let mut s = guard.answer_stream(&attacker, &policy);
    let rounds = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..rounds {
        for (i, p) in pieces.iter().enumerate() {
            if let Some(c) = p.get(k) {
                released[i].push_str(&s.push(i, c).release);
            }
        }
    }
    for (i, out) in s.finish() {
        released[i].push_str(&out.release);
    }
    let blocked = s.blocked();
    let secrets: Vec<String> = strings(case, "secrets")
        .iter()
        .map(|x| x.to_lowercase())
        .collect();
    let mut views: Vec<String> = released.iter().map(|x| x.to_lowercase()).collect();
    views.push(views.concat());
    let spilled = secrets.iter().any(|x| views.iter().any(|v| v.contains(x)));
    let leak_at: Vec<usize> = case["leak_at"]
        .as_array()
        .expect("leak_at")
        .iter()
        .map(|x| x.as_u64().expect("offset") as usize)
        .collect();
    let early = released
        .iter()
        .zip(&leak_at)
        .any(|(rel, &at)| rel.len() > at);
    Judged {
        whole,
        stream: blocked && !spilled,
        strict: blocked && !early,
    }
}

#[test]
fn cross_tenant_leak_recall_and_false_blocks() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/guard/leak_eval.jsonl");
    let data =
        std::fs::read_to_string(&path).expect("leak eval set (run the gen_leak_eval example)");
    let lines: Vec<Value> = data
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();

    let guard = Guard::new([7u8; 32], GuardLimits::default());
    for l in &lines {
        let t = || tenant(str_of(l, "tenant"));
        match str_of(l, "kind") {
            "doc" => {
                let id = DocumentId::parse(str_of(l, "id")).expect("doc id");
                guard
                    .index_document(&t(), &id, str_of(l, "text"))
                    .expect("index");
            }
            "prompt" => {
                let _ = guard.protect(&t(), str_of(l, "text"), NOW_MS);
            }
            _ => {}
        }
    }

    // (family, source, mode) -> tally; positive families and negatives apart.
    let mut table: BTreeMap<(String, String, Mode), Tally> = BTreeMap::new();
    let mut positive_family: BTreeMap<String, bool> = BTreeMap::new();
    // (family, mode) -> failed case ids; transform -> (cases, whole, stream).
    let mut failed: BTreeMap<(String, Mode), Vec<String>> = BTreeMap::new();
    let mut per_transform: BTreeMap<(String, String), (usize, usize, usize)> = BTreeMap::new();
    let mut r = Rng(CHUNK_SEED);
    for case in lines.iter().filter(|l| l["kind"] == "case") {
        let family = str_of(case, "family").to_owned();
        let source = str_of(case, "source").to_owned();
        let positive = str_of(case, "expect") == "block";
        positive_family.insert(family.clone(), positive);
        let j = judge(&guard, case, &mut r);
        let t = per_transform
            .entry((family.clone(), str_of(case, "transform").to_owned()))
            .or_default();
        t.0 += 1;
        t.1 += usize::from(j.whole == positive);
        t.2 += usize::from(j.stream == positive);
        for (mode, hit) in [(Mode::Whole, j.whole), (Mode::Stream, j.stream)] {
            let e = table
                .entry((family.clone(), source.clone(), mode))
                .or_default();
            e.cases += 1;
            e.hits += usize::from(hit);
            e.strict += usize::from(mode == Mode::Stream && j.strict);
            if hit != positive {
                failed
                    .entry((family.clone(), mode))
                    .or_default()
                    .push(str_of(case, "id").to_owned());
            }
        }
    }

    let rate = |t: &Tally| t.hits as f64 / t.cases.max(1) as f64;
    println!(
        "\n{:<12} {:<7} {:<7} {:>6} {:>8} {:>12} {:>8}",
        "family", "source", "mode", "cases", "recall", "false-block", "strict"
    );
    for ((family, source, mode), t) in &table {
        let (recall, fb, strict) = if positive_family[family] {
            let strict = if *mode == Mode::Stream {
                format!("{:.3}", t.strict as f64 / t.cases.max(1) as f64)
            } else {
                String::new()
            };
            (format!("{:.3}", rate(t)), String::new(), strict)
        } else {
            (String::new(), format!("{:.4}", rate(t)), String::new())
        };
        println!(
            "{family:<12} {source:<7} {:<7} {:>6} {recall:>8} {fb:>12} {strict:>8}",
            mode.name(),
            t.cases
        );
    }
    println!("\nper transform, below 1.000 (cases, whole, stream correct):");
    for ((family, name), (n, w, s)) in &per_transform {
        if w < n || s < n {
            println!("  {family:<12} {name:<22} {n:>4} {w:>4} {s:>4}");
        }
    }
    for ((family, mode), ids) in &failed {
        println!("\nfailed {family} {} ({}):", mode.name(), ids.len());
        for chunk in ids.chunks(6) {
            println!("  {}", chunk.join(" "));
        }
    }

    // Floors, per family and mode over both sources.
    let mut below = Vec::new();
    let sum = |pred: &dyn Fn(&str, Mode) -> bool| {
        let mut t = Tally::default();
        for ((family, _, mode), x) in &table {
            if pred(family, *mode) {
                t.cases += x.cases;
                t.hits += x.hits;
            }
        }
        t
    };
    for &(family, floor) in RECALL_FLOORS {
        for mode in [Mode::Whole, Mode::Stream] {
            let t = sum(&|f, m| f == family && m == mode);
            assert!(t.cases >= 40, "{family}: only {} positive cases", t.cases);
            if rate(&t) < floor {
                below.push(format!(
                    "{family} {}: recall {:.3} < {floor}",
                    mode.name(),
                    rate(&t)
                ));
            }
        }
    }
    for mode in [Mode::Whole, Mode::Stream] {
        let t = sum(&|f, m| !positive_family[f] && m == mode);
        assert!(t.cases >= 300, "only {} negative cases", t.cases);
        println!(
            "\nnegatives {}: {} of {} blocked ({:.4})",
            mode.name(),
            t.hits,
            t.cases,
            rate(&t)
        );
        if rate(&t) > FALSE_BLOCK_MAX {
            below.push(format!(
                "negatives {}: false-block rate {:.4} > {FALSE_BLOCK_MAX}",
                mode.name(),
                rate(&t)
            ));
        }
    }
    assert!(below.is_empty(), "below the targets:\n{}", below.join("\n"));
}
