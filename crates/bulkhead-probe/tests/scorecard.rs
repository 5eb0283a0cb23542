//! The probe's machine-readable contract: the scorecard JSON's shape (documented,
//! stable within a version) and the attack corpus.

use std::collections::BTreeSet;

use bulkhead_probe::scorecard::{FamilyOutcome, LEAKS_LISTED_MAX};
use bulkhead_probe::{Evidence, Family, FamilyScore, Leak, Scorecard, parse_prompts};
use serde_json::{Value, json};

fn outcome(family: Family, attempts: u64, leaks: Vec<Leak>) -> FamilyOutcome {
    FamilyOutcome {
        score: FamilyScore {
            family,
            attempts,
            leaks: leaks.len() as u64,
            errors: 0,
            refused: 1,
            elapsed_ms: 7,
        },
        leaks,
        error_samples: Vec::new(),
    }
}

fn leak(family: Family) -> Leak {
    Leak {
        family,
        attacker: "tn_a".into(),
        victim: Some("tn_b".into()),
        evidence: Evidence::ForeignCanary,
        request: "GET /v1/documents/doc_1 -> 200".into(),
        marker_sha256: Some("0123456789ab".into()),
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

#[test]
fn the_scorecard_json_has_the_documented_shape() {
    let mut card = Scorecard::new("http://127.0.0.1:7700");
    card.add(outcome(Family::AdminPlane, 10, Vec::new()));
    card.add(outcome(
        Family::IdGuessing,
        20,
        vec![leak(Family::IdGuessing)],
    ));
    let v = serde_json::to_value(&card).unwrap();

    let expected: BTreeSet<String> = [
        "format",
        "version",
        "target",
        "model",
        "model_regurgitates",
        "tenants",
        "tenants_created",
        "documents_seeded",
        "attack_prompts",
        "elapsed_ms",
        "clean",
        "attempts_total",
        "leaks_total",
        "errors_total",
        "families",
        "leaks",
        "leaks_truncated",
        "error_samples",
        "cleanup",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(&v), expected);
    assert_eq!(v["format"], "bulkhead-probe-scorecard");
    assert_eq!(v["version"], 1);
    assert_eq!(v["clean"], false);
    assert_eq!(v["attempts_total"], 30);
    assert_eq!(v["leaks_total"], 1);
    assert_eq!(
        v["families"][1],
        json!({"family": "id_guessing", "attempts": 20, "leaks": 1, "errors": 0,
               "refused": 1, "elapsed_ms": 7})
    );
    assert_eq!(
        v["leaks"][0],
        json!({"family": "id_guessing", "attacker": "tn_a", "victim": "tn_b",
               "evidence": "foreign_canary", "request": "GET /v1/documents/doc_1 -> 200",
               "marker_sha256": "0123456789ab"})
    );
    assert_eq!(
        keys(&v["cleanup"]),
        ["kept", "tenants_deleted", "items_deleted", "failures"]
            .map(String::from)
            .into()
    );
    // It reads back as the same value: machines can parse what they are given.
    let back: Scorecard = serde_json::from_value(v).unwrap();
    assert_eq!(back, card);

    let table = card.render();
    assert!(table.contains("id_guessing"), "{table}");
    assert!(table.contains("LEAKED: 1 leaks in 30 attempts"), "{table}");
}

#[test]
fn leaks_are_listed_up_to_a_bound_and_counted_in_full() {
    let mut card = Scorecard::new("http://x");
    let many: Vec<Leak> = (0..LEAKS_LISTED_MAX + 5)
        .map(|_| leak(Family::Search))
        .collect();
    card.add(outcome(Family::Search, 1000, many));
    assert_eq!(card.leaks.len(), LEAKS_LISTED_MAX);
    assert_eq!(card.leaks_total, LEAKS_LISTED_MAX as u64 + 5);
    assert!(card.leaks_truncated);
}

#[test]
fn every_family_and_evidence_has_a_stable_name() {
    for family in Family::ALL {
        let json = serde_json::to_value(family).unwrap();
        assert_eq!(json, family.name());
    }
    let names: BTreeSet<&str> = Family::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(names.len(), Family::ALL.len());
}

#[test]
fn the_corpus_holds_at_least_fifty_distinct_attack_prompts() {
    let prompts = bulkhead_probe::builtin_prompts();
    let distinct: BTreeSet<&String> = prompts.iter().collect();
    assert!(distinct.len() >= 50, "{} distinct prompts", distinct.len());
    assert_eq!(distinct.len(), prompts.len(), "the corpus repeats a prompt");
    assert!(prompts.iter().all(|p| !p.starts_with('#')));
}

#[test]
fn a_corpus_file_is_parsed_and_bad_ones_are_refused() {
    let prompts = parse_prompts("# comment\n\n  first  \nsecond\n").unwrap();
    assert_eq!(prompts, ["first", "second"]);
    assert!(parse_prompts("# only comments\n\n").is_err());
    assert!(parse_prompts(&"x".repeat(5000)).is_err());
}
