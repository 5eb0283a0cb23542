//! Precision and recall per detector on the labeled set in
//! `testdata/guard/eval.jsonl` (written by `cargo run -p bulkhead-guard --example
//! gen_eval`). Prints the table and fails below the floors, which sit just under
//! the measured figures: a regression in any detector fails the build.
//!
//! Scoring is per entity: a finding matches an expected entity of the same
//! detector whose span it overlaps (and, for canaries and cross-tenant hits, whose
//! owner it names). Unmatched findings are false positives of their detector,
//! whichever case they occur in; unmatched expected entities are false negatives.
//! Injection screening is scored per text: positive when the retrieved-context
//! policy acts on it (score ≥ `act_at`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bulkhead_guard::{
    Action, DetectorActions, Guard, GuardLimits, InjectionAction, InjectionPolicy, Policy,
};
use bulkhead_types::{DocumentId, TenantId};
use serde_json::Value;

/// (detector, precision floor, recall floor)
const FLOORS: &[(&str, f64, f64)] = &[
    // Measured 1.000 / 1.000 unless noted; floors leave a case or two of slack.
    ("canary", 0.98, 0.98),
    // Recall 0.857: reworded leaks (every third word replaced) are missed by
    // design — fingerprints see verbatim runs of about 95+ normalized bytes.
    ("cross_tenant", 0.98, 0.85),
    ("private_key", 0.98, 0.98),
    ("api_key", 0.98, 0.98),
    ("jwt", 0.98, 0.98),
    ("card", 0.98, 0.98),
    ("iban", 0.98, 0.98),
    ("ssn", 0.98, 0.98),
    ("email", 0.98, 0.98),
    ("phone", 0.98, 0.98),
    ("ip", 0.98, 0.98),
    // Recall 0.980: random tokens with many vowels fail the camelCase filter.
    ("high_entropy", 0.98, 0.97),
    ("injection", 0.95, 0.95),
];

fn tenant(label: &str) -> TenantId {
    let n: u8 = label
        .trim_start_matches('t')
        .parse()
        .expect("tenant label tN");
    TenantId::from_random([n + 1; 12])
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
    /// Extra findings on an entity already matched (a leak reported in two
    /// pieces): neither a hit nor a false alarm.
    split: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("field {k} in {v}"))
}

#[test]
fn precision_and_recall_per_detector() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/guard/eval.jsonl");
    let data = std::fs::read_to_string(&path).expect("eval set (run the gen_eval example)");
    let lines: Vec<Value> = data
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();

    let guard = Guard::new([0x5a; 32], GuardLimits::default());
    for l in lines.iter().filter(|l| l["kind"] == "doc") {
        let id = DocumentId::parse(str_of(l, "id")).expect("doc id");
        guard
            .index_document(&tenant(str_of(l, "tenant")), &id, str_of(l, "text"))
            .expect("index");
    }
    for l in lines.iter().filter(|l| l["kind"] == "canary") {
        guard
            .add_canary(&tenant(str_of(l, "tenant")), str_of(l, "token"))
            .expect("canary");
    }
    let owner_label: HashMap<TenantId, String> = (0..=9u8)
        .map(|i| (tenant(&format!("t{i}")), format!("t{i}")))
        .collect();

    // Report everything: the actions do not change what is found.
    let policy = Policy {
        actions: DetectorActions::all(Action::Allow),
        ..Policy::default()
    };
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for case in lines.iter().filter(|l| l["kind"] == "case") {
        let text = str_of(case, "text");
        let id = str_of(case, "id");
        let scan_tenant = tenant(str_of(case, "scan_tenant"));
        let out = guard.scan(&scan_tenant, text, &policy);
        let expect: Vec<&Value> = case["expect"].as_array().expect("expect").iter().collect();
        let mut used = vec![false; expect.len()];
        for f in &out.findings {
            let det = f.kind.detector().name();
            let owner = f
                .owner
                .as_ref()
                .and_then(|o| owner_label.get(o))
                .map(String::as_str);
            let hit = expect.iter().enumerate().position(|(i, e)| {
                !used[i]
                    && str_of(e, "detector") == det
                    && (e["start"].as_u64().expect("start") as usize) < f.span.end
                    && f.span.start < e["end"].as_u64().expect("end") as usize
                    && (e.get("owner").is_none() || e["owner"].as_str() == owner)
            });
            let again = || {
                expect.iter().enumerate().any(|(i, e)| {
                    used[i]
                        && str_of(e, "detector") == det
                        && (e["start"].as_u64().expect("start") as usize) < f.span.end
                        && f.span.start < e["end"].as_u64().expect("end") as usize
                        && (e.get("owner").is_none() || e["owner"].as_str() == owner)
                })
            };
            let split = hit.is_none() && again();
            let c = counts.entry(det.to_owned()).or_default();
            match hit {
                Some(i) => {
                    used[i] = true;
                    c.tp += 1;
                }
                None if split => c.split += 1,
                None => {
                    c.fp += 1;
                    misses.push(format!("FP {det:<13} {id}: {}", &text[f.span.clone()]));
                }
            }
        }
        for (i, e) in expect.iter().enumerate() {
            if !used[i] {
                let det = str_of(e, "detector");
                counts.entry(det.to_owned()).or_default().fn_ += 1;
                let (s, t) = (
                    e["start"].as_u64().unwrap_or(0) as usize,
                    e["end"].as_u64().unwrap_or(0) as usize,
                );
                misses.push(format!("FN {det:<13} {id}: {}", &text[s..t]));
            }
        }
    }
    let inj_policy = InjectionPolicy::retrieved_default();
    let inj = counts.entry("injection".to_owned()).or_default();
    for case in lines.iter().filter(|l| l["kind"] == "injection") {
        let positive = case["label"] == "positive";
        let r = bulkhead_guard::screen(str_of(case, "text"), &inj_policy);
        let acted = r.action == InjectionAction::Drop;
        match (positive, acted) {
            (true, true) => inj.tp += 1,
            (false, true) => {
                inj.fp += 1;
                misses.push(format!(
                    "FP injection    {}: {:?}",
                    str_of(case, "id"),
                    r.rules
                ));
            }
            (true, false) => {
                inj.fn_ += 1;
                misses.push(format!(
                    "FN injection    {}: {:?}",
                    str_of(case, "id"),
                    r.rules
                ));
            }
            (false, false) => {}
        }
    }

    println!(
        "\n{:<14} {:>5} {:>5} {:>5} {:>6} {:>10} {:>8}",
        "detector", "TP", "FP", "FN", "split", "precision", "recall"
    );
    for (det, c) in &counts {
        println!(
            "{det:<14} {:>5} {:>5} {:>5} {:>6} {:>10.3} {:>8.3}",
            c.tp,
            c.fp,
            c.fn_,
            c.split,
            c.precision(),
            c.recall()
        );
    }
    for m in misses.iter().take(80) {
        println!("  {m}");
    }
    let mut failed = Vec::new();
    for &(det, p_floor, r_floor) in FLOORS {
        let c = counts.get(det).copied().unwrap_or_default();
        assert!(c.tp > 0, "{det}: no true positives at all");
        if c.precision() < p_floor || c.recall() < r_floor {
            failed.push(format!(
                "{det}: precision {:.3} (floor {p_floor}), recall {:.3} (floor {r_floor})",
                c.precision(),
                c.recall()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "below the floors:\n{}",
        failed.join("\n")
    );
}
