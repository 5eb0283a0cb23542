//! End to end: `bulkhead probe` against a real `bulkhead serve` with the echo
//! models. A normal server must score zero leaks with every family run and be left
//! without probe tenants; a deliberately weakened one (test-only feature, output
//! guard off and a forgotten tenant filter on document reads) must be caught,
//! in the families that can see each hole.

#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Output};

use bulkhead_test_support::cli::run;
use bulkhead_test_support::{ADMIN_TOKEN, Server, describe, expect_json};
use reqwest::StatusCode;
use serde_json::Value;

use crate::BULKHEAD;

fn probe(server: &Server, json_out: &Path) -> Output {
    run(Command::new(BULKHEAD)
        .args(["probe", "--target", &server.base_url, "--tenants", "3"])
        .args(["--duration", "5s", "--json"])
        .arg(json_out)
        .env("BULKHEAD_ADMIN_TOKEN", ADMIN_TOKEN))
}

fn scorecard(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("the scorecard file")).expect("JSON")
}

fn family<'a>(card: &'a Value, name: &str) -> &'a Value {
    card["families"]
        .as_array()
        .expect("families")
        .iter()
        .find(|f| f["family"] == name)
        .unwrap_or_else(|| panic!("family {name} missing from {card}"))
}

const FAMILIES: [&str; 7] = [
    "admin_plane",
    "id_guessing",
    "search",
    "prompt_injection",
    "cache_probing",
    "token_tampering",
    "concurrent_load",
];

#[tokio::test]
async fn a_normal_server_scores_zero_leaks_and_is_left_clean() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(BULKHEAD, dir.path(), &[("BULKHEAD_ECHO_MODELS", "true")]).await;
    let out = dir.path().join("probe.json");
    let output = probe(&server, &out);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let card = scorecard(&out);
    assert_eq!(card["format"], "bulkhead-probe-scorecard", "{card}");
    assert_eq!(card["clean"], true, "{card:#}");
    assert_eq!(card["leaks_total"], 0);
    assert_eq!(card["model"], "bulkhead-echo-leaky", "{card}");
    assert_eq!(card["tenants"], 3);
    for name in FAMILIES {
        let f = family(&card, name);
        assert!(
            f["attempts"].as_u64().unwrap() > 0,
            "{name} did not run: {f}"
        );
        assert_eq!(f["leaks"], 0, "{name}: {f}");
    }
    // The leaky model really handed tenants each other's prompts: the guard had
    // to withhold answers, which the probe counts as refused.
    assert!(
        family(&card, "concurrent_load")["refused"]
            .as_u64()
            .unwrap()
            > 0,
        "{card:#}"
    );
    assert_eq!(card["cleanup"]["tenants_deleted"], 3, "{card}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("CLEAN: 0 leaks"), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("probe: id_guessing done"),
        "{}",
        describe(&output)
    );

    let client = reqwest::Client::new();
    let tenants = expect_json(
        client
            .get(format!("{}/admin/v1/tenants?limit=100", server.base_url))
            .bearer_auth(ADMIN_TOKEN),
        StatusCode::OK,
        "list tenants",
    )
    .await;
    let left: Vec<&Value> = tenants["tenants"]
        .as_array()
        .expect("a tenant list")
        .iter()
        .filter(|t| {
            t["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("bulkhead-probe-"))
        })
        .collect();
    assert!(left.is_empty(), "probe tenants left behind: {left:?}");
}

#[tokio::test]
async fn a_weakened_server_is_caught_leaking() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        BULKHEAD,
        dir.path(),
        &[
            ("BULKHEAD_ECHO_MODELS", "true"),
            ("BULKHEAD_WEAKENED_ISOLATION_FOR_TESTS", "1"),
        ],
    )
    .await;
    let out = dir.path().join("probe.json");
    let output = probe(&server, &out);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let card = scorecard(&out);
    assert_eq!(card["clean"], false);
    // The forgotten filter: other tenants' documents open by id.
    assert!(
        family(&card, "id_guessing")["leaks"].as_u64().unwrap() > 0,
        "{card:#}"
    );
    // The guard off: the regurgitating model hands tenants each other's context.
    for name in ["concurrent_load", "cache_probing"] {
        assert!(
            family(&card, name)["leaks"].as_u64().unwrap() > 0,
            "{name}: {card:#}"
        );
    }
    // The holes are only those two: credentials and planes still hold.
    for name in ["admin_plane", "token_tampering"] {
        assert_eq!(family(&card, name)["leaks"], 0, "{name}: {card:#}");
    }
    let leaks = card["leaks"].as_array().unwrap();
    assert!(leaks.iter().any(|l| l["evidence"] == "foreign_canary"));
    // A leak names a marker by a short hash, never the leaked text itself.
    let json = std::fs::read_to_string(&out).unwrap();
    assert!(!json.contains("PROBE-CANARY-"), "{json}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("LEAKED"),
        "{}",
        describe(&output)
    );
    assert!(
        server
            .log_tail()
            .contains("ISOLATION IS DELIBERATELY BROKEN")
    );
}
