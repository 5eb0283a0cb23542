//! Snapshots of what users and auditors read, taken from the real binary against
//! a real server: `bulkhead audit verify` (human and `--json`) for a good export,
//! an edited one and one under a forged checkpoint signature; the `bulkhead probe`
//! scorecard; the evidence report and the impact report JSON. An unintended change
//! in wording or shape fails here.
//!
//! Everything that varies from run to run (ids, hashes, times, paths, ports,
//! keys, counts that depend on timing) is replaced by a stable placeholder before
//! the snapshot is compared, so what is left is the shape and the stable values.
//!
//! A missing snapshot fails (it is never written silently) unless
//! `INSTA_UPDATE=always` is set on purpose to record new ones; run with
//! `INSTA_UPDATE=no` in CI.

#![cfg(unix)]

use std::path::Path;
use std::process::Output;

use bulkhead_test_support::cli::{self, run};
use bulkhead_test_support::{ADMIN_TOKEN, Server, describe, tenant_with_key};
use regex_automata::meta::Regex;
use reqwest::Client;
use serde_json::{Map, Value, json};

use crate::BULKHEAD;

/// Runs the binary with `args` against `server`, from `dir`.
fn cli(server: &Server, dir: &Path, args: &[&str]) -> Output {
    run(server.cli_in(dir).args(args).env("NO_COLOR", "1"))
}

/// Runs `bulkhead audit …` offline: nothing listens at the server address.
fn offline(dir: &Path, args: &[&str]) -> Output {
    run(cli::offline(BULKHEAD)
        .arg("audit")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1"))
}

/// Replaces what varies between runs with placeholders. `known` are exact
/// strings of this run (tenant ids, keys, paths, the server's address), each
/// with its placeholder; they go first, longest first, so a path containing an
/// id becomes one placeholder.
struct Redactor {
    known: Vec<(String, String)>,
    patterns: Vec<(Regex, &'static str)>,
}

impl Redactor {
    fn new(known: &[(&str, &str)]) -> Redactor {
        let mut known: Vec<(String, String)> = known
            .iter()
            .filter(|(value, _)| !value.is_empty())
            .map(|(v, p)| ((*v).to_owned(), (*p).to_owned()))
            .collect();
        known.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        let pattern = |re: &str| Regex::new(re).expect("a valid redaction pattern");
        let patterns = vec![
            (
                pattern(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?"),
                "[TIME]",
            ),
            (
                pattern(
                    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                ),
                "[UUID]",
            ),
            (pattern(r"/tmp/[^\s\x22']+"), "[PATH]"),
            // The server's signing key is new in every data directory: its name
            // ends in a key id, and API keys start with a random prefix.
            (
                pattern(r"bulkhead\.local\+[0-9a-f]{8}"),
                "bulkhead.local+[KEY_ID]",
            ),
            (pattern(r"bhk_[0-9a-f]{8,}"), "bhk_[KEY_PREFIX]"),
            (pattern(r"127\.0\.0\.1:\d+"), "127.0.0.1:[PORT]"),
            (pattern(r"\b[0-9a-f]{16,}\b"), "[HEX]"),
            (pattern(r"[A-Za-z0-9+/][A-Za-z0-9+/_-]{31,}={0,2}"), "[B64]"),
        ];
        Redactor { known, patterns }
    }

    fn text(&self, input: &str) -> String {
        let mut out = input.to_owned();
        for (value, placeholder) in &self.known {
            out = out.replace(value.as_str(), placeholder);
        }
        for (re, placeholder) in &self.patterns {
            let mut next = String::with_capacity(out.len());
            let mut last = 0;
            for m in re.find_iter(&out) {
                let found = &out[m.range()];
                // Base64 needs a digit or a capital, or long snake_case words
                // (failure codes) would be taken for it.
                if *placeholder == "[B64]"
                    && !found
                        .bytes()
                        .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
                {
                    continue;
                }
                next.push_str(&out[last..m.start()]);
                next.push_str(placeholder);
                last = m.end();
            }
            next.push_str(&out[last..]);
            out = next;
        }
        out
    }

    /// Every string redacted; numbers under a key in `varying` become
    /// `"[NUMBER]"`, kept otherwise (counts are part of what is checked).
    fn json(&self, value: &Value, varying: &[&str]) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.json(v, varying)).collect())
            }
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let redacted = match v {
                        Value::Number(_) if varying.contains(&k.as_str()) => json!("[NUMBER]"),
                        _ => self.json(v, varying),
                    };
                    out.insert(self.text(k), redacted);
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }
}

/// Fails when the snapshot file does not exist yet, unless new snapshots are
/// being recorded on purpose: insta's default outside CI would write a
/// `.snap.new` and a reviewer might accept it without noticing.
fn require_snapshot(name: &str) {
    let recording = std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always" || v == "new");
    // insta's file name is the module path (`it::snapshots`) and the name.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/snapshots")
        .join(format!("it__snapshots__{name}.snap"));
    assert!(
        recording || path.exists(),
        "snapshot {} is missing: record it with INSTA_UPDATE=always and commit it",
        path.display()
    );
}

fn check_text(name: &str, value: &str) {
    require_snapshot(name);
    insta::assert_snapshot!(name, value);
}

fn check_json(name: &str, value: &Value) {
    let pretty = serde_json::to_string_pretty(value).expect("JSON encodes");
    check_text(name, &pretty);
}

/// The CLI's result as it is read: exit status, then stdout and stderr.
fn shown(redactor: &Redactor, output: &Output) -> String {
    redactor.text(&format!(
        "exit status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reports() {
    let data = tempfile::tempdir().expect("a data dir");
    let work = tempfile::tempdir().expect("a work dir");
    let server = Server::start(BULKHEAD, data.path()).await;
    let http = Client::new();
    let (tenant, key) = tenant_with_key(&http, &server.base_url, "acme").await;
    for i in 0..4 {
        let created = http
            .post(format!("{}/v1/documents", server.base_url))
            .bearer_auth(&key)
            .json(&json!({"id": format!("doc-{i}"), "text": format!("doc text {i}")}))
            .send()
            .await
            .expect("create a document");
        assert_eq!(created.status(), 201);
    }
    let vkey = cli(&server, data.path(), &["audit", "public-key"]);
    assert_eq!(vkey.status.code(), Some(0), "{}", describe(&vkey));
    let vkey = String::from_utf8_lossy(&vkey.stdout).trim().to_owned();
    std::fs::write(work.path().join("server.vkey"), &vkey).expect("write the key");
    let export = cli(
        &server,
        work.path(),
        &["audit", "export", "--api-key", &key, "--out", "acme.json"],
    );
    assert_eq!(export.status.code(), Some(0), "{}", describe(&export));

    let work_dir = work.path().to_str().expect("a UTF-8 temp path");
    let redactor = Redactor::new(&[
        (&tenant, "[TENANT]"),
        (&key, "[API_KEY]"),
        (&vkey, "[VKEY]"),
        (work_dir, "[WORK]"),
        (&server.base_url, "[SERVER]"),
    ]);
    let verify = |file: &str, extra: &[&str]| {
        let mut args = vec!["verify", "--file", file, "--vkey-file", "server.vkey"];
        args.extend_from_slice(extra);
        offline(work.path(), &args)
    };

    // A good export, with its checkpoint kept for the forged-signature case.
    let good = verify("acme.json", &["--save-checkpoint", "acme.cp"]);
    assert_eq!(good.status.code(), Some(0), "{}", describe(&good));
    check_text("audit_verify_good", &shown(&redactor, &good));
    let good_json = verify("acme.json", &["--json"]);
    assert_eq!(good_json.status.code(), Some(0), "{}", describe(&good_json));
    check_text("audit_verify_good_json", &shown(&redactor, &good_json));

    // An edited entry: one event's subject changed.
    let exported = std::fs::read_to_string(work.path().join("acme.json")).expect("the export");
    let edited = exported.replacen("doc-2", "doc-X", 1);
    assert_ne!(edited, exported);
    std::fs::write(work.path().join("edited.json"), edited).expect("write the edit");
    let bad = verify("edited.json", &[]);
    assert_eq!(bad.status.code(), Some(3), "{}", describe(&bad));
    check_text("audit_verify_edited_entry", &shown(&redactor, &bad));
    let bad = verify("edited.json", &["--json"]);
    assert_eq!(bad.status.code(), Some(3), "{}", describe(&bad));
    check_text("audit_verify_edited_entry_json", &shown(&redactor, &bad));

    // A forged checkpoint signature: one byte of the signature changed.
    let cp = std::fs::read_to_string(work.path().join("acme.cp")).expect("the checkpoint");
    let sig_at = cp.rfind(' ').expect("a signature line") + 30;
    let mut forged = cp.into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    std::fs::write(work.path().join("forged.cp"), forged).expect("write the forgery");
    let bad = verify("acme.json", &["--old-checkpoint", "forged.cp"]);
    assert_eq!(bad.status.code(), Some(3), "{}", describe(&bad));
    check_text("audit_verify_forged_signature", &shown(&redactor, &bad));
    let bad = verify("acme.json", &["--old-checkpoint", "forged.cp", "--json"]);
    assert_eq!(bad.status.code(), Some(3), "{}", describe(&bad));
    check_text(
        "audit_verify_forged_signature_json",
        &shown(&redactor, &bad),
    );
}

#[tokio::test]
async fn probe_scorecard() {
    let dir = tempfile::tempdir().expect("a dir");
    let server =
        Server::start_with(BULKHEAD, dir.path(), &[("BULKHEAD_ECHO_MODELS", "true")]).await;
    let output = run(std::process::Command::new(BULKHEAD)
        .args(["probe", "--target", &server.base_url, "--tenants", "3"])
        .args(["--duration", "5s"])
        .env("BULKHEAD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("NO_COLOR", "1"));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let redactor = Redactor::new(&[(&server.base_url, "[SERVER]")]);
    // How many attempts fit in the run's duration, how many the guard refused,
    // and how many timed out on a loaded machine (errors) depend on its speed:
    // those columns become N, and "ok (with errors)" reads "ok". The family
    // names, the leak column and the verdict's wording stay.
    let table_row =
        Regex::new(r"^([a-z_]+ +)(\d+) +(\d+) +(\d+) +(\d+)  (.*)$").expect("a pattern");
    let total =
        Regex::new(r"^(CLEAN|LEAKED): (\d+) leaks in \d+ attempts, (\d+) errors, [\d.]+ s$")
            .expect("a pattern");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = redactor.text(line);
        let mut caps = table_row.create_captures();
        table_row.captures(&line, &mut caps);
        if caps.is_match() && !line.starts_with("family ") {
            let group = |i| {
                caps.get_group(i)
                    .map(|s| &line[s.range()])
                    .unwrap_or_default()
            };
            lines.push(format!(
                "{:<18} {:>9} {:>8}{:>7}{:>8}  {}",
                group(1).trim_end(),
                "N",
                "N",
                group(4),
                "N",
                group(6).replace("ok (with errors)", "ok")
            ));
            continue;
        }
        let mut caps = total.create_captures();
        total.captures(&line, &mut caps);
        if caps.is_match() {
            let group = |i| {
                caps.get_group(i)
                    .map(|s| &line[s.range()])
                    .unwrap_or_default()
            };
            lines.push(format!(
                "{}: {} leaks in N attempts, N errors, N s",
                group(1),
                group(2)
            ));
            continue;
        }
        lines.push(line);
    }
    check_text("probe_scorecard", &lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_and_impact_reports() {
    let data = tempfile::tempdir().expect("a data dir");
    let work = tempfile::tempdir().expect("a work dir");
    let server = Server::start(BULKHEAD, data.path()).await;
    let http = Client::new();
    let (tenant, key) = tenant_with_key(&http, &server.base_url, "Acme").await;
    let created = http
        .post(format!("{}/v1/documents", server.base_url))
        .bearer_auth(&key)
        .json(&json!({"id": "memo", "text": "quarterly plan TOPAZ"}))
        .send()
        .await
        .expect("create a document");
    assert_eq!(created.status(), 201);
    let read = http
        .get(format!("{}/v1/documents/memo", server.base_url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("read the document");
    assert_eq!(read.status(), 200);

    let vkey = cli(&server, data.path(), &["audit", "public-key"]);
    assert_eq!(vkey.status.code(), Some(0), "{}", describe(&vkey));
    let vkey = String::from_utf8_lossy(&vkey.stdout).trim().to_owned();

    let work_dir = work.path().to_str().expect("a UTF-8 temp path");
    let data_dir = data.path().to_str().expect("a UTF-8 temp path");
    let redactor = Redactor::new(&[
        (&tenant, "[TENANT]"),
        (&key, "[API_KEY]"),
        (&vkey, "[VKEY]"),
        (work_dir, "[WORK]"),
        (data_dir, "[DATA]"),
        (&server.base_url, "[SERVER]"),
    ]);
    // Numbers that measure time rather than count what the report is about.
    // Log sizes and entry indexes stay: this test's history is the same every
    // run, and the checkpoints' text carries the sizes anyway.
    let varying = ["elapsed_ms", "duration_ms", "uptime_secs"];

    let impact = cli(
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
    );
    assert_eq!(impact.status.code(), Some(0), "{}", describe(&impact));
    check_text("impact_report_stdout", &shown(&redactor, &impact));
    let impact: Value = serde_json::from_slice(
        &std::fs::read(work.path().join("impact.json")).expect("the impact report"),
    )
    .expect("the impact report is JSON");
    check_json("impact_report_json", &redactor.json(&impact, &varying));

    let evidence = cli(
        &server,
        work.path(),
        &["compliance", "report", "--tenant", &tenant, "--strict"],
    );
    assert_eq!(evidence.status.code(), Some(0), "{}", describe(&evidence));
    check_text("evidence_report_stdout", &shown(&redactor, &evidence));
    let evidence: Value = serde_json::from_slice(
        &std::fs::read(work.path().join(format!("evidence-{tenant}.json")))
            .expect("the evidence report"),
    )
    .expect("the evidence report is JSON");
    check_json("evidence_report_json", &redactor.json(&evidence, &varying));
}
