//! End to end, the operator's incident-response and compliance commands against a
//! real server: `incident report` (proofs checked by the CLI), `compliance
//! report` (HTML and JSON written), `config show`, and a crypto-shred whose
//! signed receipt `audit verify-receipt` accepts — offline and live — and rejects
//! once edited.

#![cfg(unix)]

use std::path::Path;
use std::process::Output;

use bulkhead_test_support::cli::run;
use bulkhead_test_support::{Server, describe};
use reqwest::Client;
use serde_json::{Value, json};

use crate::BULKHEAD;

fn cli(server: &Server, dir: &Path, args: &[&str]) -> Output {
    run(server.cli_in(dir).args(args))
}

fn ok(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{}", describe(output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn incident_compliance_and_erasure_receipts_from_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(BULKHEAD, data.path()).await;
    let http = Client::new();
    let (tenant, key) =
        bulkhead_test_support::tenant_with_key(&http, &server.base_url, "Acme").await;
    let created = http
        .post(format!("{}/v1/documents", server.base_url))
        .bearer_auth(&key)
        .json(&json!({"id": "memo", "text": "quarterly plan TOPAZ"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let read = http
        .get(format!("{}/v1/documents/memo", server.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // The impact report: what Acme's key read, each proof checked by the CLI.
    let out = ok(&cli(
        &server,
        work.path(),
        &[
            "incident",
            "report",
            "--tenant",
            &tenant,
            "--from",
            "2020-01-01T00:00:00Z",
            "--out",
            "impact.json",
        ],
    ));
    assert!(out.contains("reads: 1"), "{out}");
    assert!(out.contains("document.read"), "{out}");
    assert!(out.contains("inclusion proof(s) verified"), "{out}");
    let impact: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("impact.json")).unwrap()).unwrap();
    assert_eq!(impact["summary"]["documents"], json!(["memo"]));

    // The evidence report, both forms.
    let out = ok(&cli(
        &server,
        work.path(),
        &["compliance", "report", "--tenant", &tenant, "--strict"],
    ));
    assert!(out.contains("tenant log: verified"), "{out}");
    assert!(out.contains("findings: none"), "{out}");
    let html =
        std::fs::read_to_string(work.path().join(format!("evidence-{tenant}.html"))).unwrap();
    assert!(html.contains("Isolation evidence report: Acme"));
    assert!(!html.contains("TOPAZ"));
    let json: Value = serde_json::from_slice(
        &std::fs::read(work.path().join(format!("evidence-{tenant}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(json["audit"]["tenant_log"]["ok"], true);

    let out = ok(&cli(&server, work.path(), &["config", "show"]));
    assert!(out.contains("is the approved baseline"), "{out}");

    // Crypto-shred with a receipt, then verify it as an outsider would.
    let out = ok(&cli(
        &server,
        work.path(),
        &[
            "tenant",
            "delete",
            &tenant,
            "--yes",
            "--receipt",
            "receipt.json",
        ],
    ));
    assert!(out.contains("verify-receipt"), "{out}");
    let vkey = ok(&cli(&server, work.path(), &["audit", "public-key"]));
    std::fs::write(work.path().join("server.vkey"), vkey.trim()).unwrap();
    let verify = |file: &str, live: bool| {
        let mut args = vec![
            "audit",
            "verify-receipt",
            "--file",
            file,
            "--vkey-file",
            "server.vkey",
        ];
        if live {
            args.push("--live");
        }
        cli(&server, work.path(), &args)
    };
    let out = ok(&verify("receipt.json", false));
    assert!(out.contains("receipt verified"), "{out}");
    // More activity later: the live check proves the log still holds it.
    bulkhead_test_support::tenant_with_key(&http, &server.base_url, "Globex").await;
    let out = ok(&verify("receipt.json", true));
    assert!(out.contains("still holds it"), "{out}");

    // An edited receipt fails (exit 3) and says why.
    let mut receipt: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("receipt.json")).unwrap()).unwrap();
    receipt["records_deleted"] = json!(0);
    std::fs::write(
        work.path().join("edited.json"),
        serde_json::to_vec(&receipt).unwrap(),
    )
    .unwrap();
    let edited = verify("edited.json", false);
    assert_eq!(edited.status.code(), Some(3), "{}", describe(&edited));
    assert!(
        describe(&edited).contains("it was edited"),
        "{}",
        describe(&edited)
    );
    // A receipt checked under another key fails too.
    std::fs::write(
        work.path().join("other.vkey"),
        "other.example+01020304+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
    )
    .unwrap();
    let other = cli(
        &server,
        work.path(),
        &[
            "audit",
            "verify-receipt",
            "--file",
            "receipt.json",
            "--vkey-file",
            "other.vkey",
        ],
    );
    assert_ne!(other.status.code(), Some(0), "{}", describe(&other));
}
