//! The committed corpus: how its seeds were made, and a replay of it as a plain
//! test (`cargo test` in `fuzz/`, no libFuzzer needed).
//!
//! `BULKHEAD_FUZZ_WRITE_SEEDS=1 cargo test seeds` rewrites `corpus/<target>/seed-*`;
//! files libFuzzer added (named by their SHA-1) are left alone.

use std::path::{Path, PathBuf};

use bulkhead_ledger::bundle::{AuditBundle, BundleEntry, BundleFormat};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::{Attr, AuditEvent, Outcome, Subject, leaf_hash_of_json};
use bulkhead_ledger::proof::consistency_plan;
use bulkhead_ledger::{b64, hash_from_b64, root_of};
use serde_json::{Value, json};

use crate::{checkpoint, guard_stream, http_bodies};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn with_prefix(prefix: &[u8], body: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(body.as_ref());
    v
}

fn route(method: &str, path: &str) -> u8 {
    let i = http_bodies::ROUTES
        .iter()
        .position(|&(m, p)| m == method && p == path)
        .unwrap_or_else(|| panic!("no route {method} {path}"));
    u8::try_from(i).expect("fewer than 256 routes")
}

fn http_seeds() -> Vec<Vec<u8>> {
    let long = guard_stream::prose(7, 600);
    let bodies: Vec<(&str, &str, String)> = vec![
        ("POST", "/admin/v1/tenants", json!({"name": "acme", "region": "eu"}).to_string()),
        ("POST", "/admin/v1/tenants/{t}/keys", json!({"ttl_seconds": 3600}).to_string()),
        ("POST", "/admin/v1/tenants/{t}/keys/{k}/quarantine", json!({"reason": "fuzz"}).to_string()),
        ("POST", "/admin/v1/tenants/{t}/quarantine", json!({"reason": "fuzz"}).to_string()),
        ("POST", "/admin/v1/tenants/{t}/rotate-key", "{}".into()),
        ("PUT", "/admin/v1/tenants/{t}/models", json!({"models": ["bulkhead-echo"]}).to_string()),
        ("PUT", "/admin/v1/tenants/{t}/policy", json!({"policy": "pci-dss"}).to_string()),
        ("POST", "/admin/v1/config/approve", "{}".into()),
        (
            "POST",
            "/admin/v1/incidents",
            json!({"tenant": "tn_aaaaaaaaaaaaaaaaaaaa", "from": "2026-11-27T12:00:00Z", "window": 1}).to_string(),
        ),
        ("POST", "/v1/documents", json!({"id": "contract-7", "text": long}).to_string()),
        ("POST", "/v1/documents", json!({"text": "short-lived", "ttl_seconds": 60}).to_string()),
        ("POST", "/v1/search", json!({"query": "invoice freight", "top_k": 3}).to_string()),
        (
            "POST",
            "/v1/guard/scan",
            json!({"text": "mallory pays with 4111 1111 1111 1111 today", "direction": "output"}).to_string(),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({"model": "bulkhead-echo", "messages": [{"role": "user", "content": "hello"}]}).to_string(),
        ),
        (
            "POST",
            "/v1/chat/completions",
            json!({
                "model": "bulkhead-echo",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "invoice 4111 1111 1111 1111"}]}
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "n": 2,
                "temperature": 0.2,
                "user": "dropped",
                "bulkhead": {"retrieve": {"top_k": 2}, "session_id": "s1"}
            })
            .to_string(),
        ),
        (
            "POST",
            "/v1/embeddings",
            json!({"model": "bulkhead-echo", "input": ["a", [1, 2, 3]], "encoding_format": "base64"}).to_string(),
        ),
        ("POST", "/v1/sessions", json!({"ttl_seconds": 600}).to_string()),
        ("GET", "/v1/documents", "limit=2&cursor=x".into()),
        ("GET", "/v1/audit/entries", "start=0&end=10".into()),
        ("GET", "/v1/audit/proof/inclusion", "index=0&size=1".into()),
        ("GET", "/v1/audit/proof/consistency", "old=1&new=2".into()),
        ("GET", "/admin/v1/audit/entries", "start=0&end=3".into()),
        ("GET", "/admin/v1/tenants", "limit=1".into()),
    ];
    bodies
        .into_iter()
        .map(|(m, p, b)| with_prefix(&[route(m, p)], b))
        .collect()
}

fn guard_seeds() -> Vec<Vec<u8>> {
    let w = guard_stream::world();
    let cuts = [3u8, 0x20, 0, 0x80, 0, 0xe0, 0];
    let leak = &w.doc_b[300..900];
    let own = &w.doc_me[100..500];
    let texts = [
        format!("Here is the summary. {leak} That is all."),
        format!("Your own notes: {own}"),
        format!("The token {} and yours {}", guard_stream::CANARY_B, guard_stream::CANARY_ME.to_uppercase()),
        format!("Repeat: {}", guard_stream::LEAKED_PROMPT),
        "Card 4111 1111 1111 1111, ssn 536-22-1234, mail jo.doe@example.com., ip 10.20.30.40".into(),
        "key AKIAZ2X7Q4MB3KPLR6WD and sk_live_4eC39HqLyjWDarjtT1zdp7dc; Grüße aus München — 東京 ✓".into(),
        "-----BEGIN PRIVATE KEY-----\nMIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAq7BFUpkGp3+LQmlQ\n-----END PRIVATE KEY-----".into(),
    ];
    let mut out = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let mut v = vec![i as u8 % 3];
        v.extend_from_slice(&cuts[..]);
        v.extend_from_slice(t.as_bytes());
        out.push(v);
    }
    out
}

fn event(i: u64) -> Value {
    let mut e = AuditEvent::new(
        if i.is_multiple_of(3) {
            "document.read"
        } else {
            "search.query"
        },
        format!("2026-11-27T12:00:{:02}.000Z", i % 60),
        format!("key:bhk_fuzz{i}"),
        if i % 5 == 4 {
            Outcome::Denied
        } else {
            Outcome::Allowed
        },
    );
    e.subjects
        .push(Subject::new("document", format!("doc-{i}")).with_content(b"text"));
    e.attrs.insert("count".into(), Attr::Int(i as i64));
    serde_json::to_value(&e).expect("an event serializes")
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let w = checkpoint::world();
    let known: Value = serde_json::from_str(include_str!(
        "../../../shared/testdata/signed-note/known-answer.json"
    ))
    .unwrap_or(Value::Null);
    let origin = "bulkhead.fuzz/tenants/tn_1";
    let entries: Vec<BundleEntry> = (0..5)
        .map(|i| {
            let e = event(i);
            BundleEntry {
                index: i,
                leaf_hash: b64(&leaf_hash_of_json(&e).expect("canonical")),
                event: Some(e),
            }
        })
        .collect();
    let leaves: Vec<_> = entries
        .iter()
        .map(|e| hash_from_b64(&e.leaf_hash).expect("b64"))
        .collect();
    let cp = |n: usize| Checkpoint {
        origin: origin.into(),
        size: n as u64,
        root: root_of(&leaves[..n]),
    };
    let note5 = cp(5).sign(&w.signer).expect("signs");
    let note3 = cp(3).sign(&w.signer).expect("signs");
    let proof = consistency_plan(3, 5)
        .expect("a plan")
        .resolve(|id| {
            let begin = (id.index << id.level) as usize;
            let end = begin + (1usize << id.level);
            (end <= leaves.len()).then(|| root_of(&leaves[begin..end]))
        })
        .expect("nodes");
    let bundle = AuditBundle {
        format: BundleFormat::V1,
        origin: origin.into(),
        vkey: checkpoint::VKEY.into(),
        checkpoint: note5.clone(),
        consistency: vec![bulkhead_ledger::bundle::BundleConsistency {
            old: 3,
            new: 5,
            proof: proof.iter().map(|h| b64(h)).collect(),
        }],
        entries,
    };
    let mut out = vec![
        with_prefix(&[0], known["note"].as_str().unwrap_or("")),
        with_prefix(&[0], &note5),
        with_prefix(&[0], format!("{}\n", checkpoint::SKEY)),
        with_prefix(&[0], format!("{}\n", checkpoint::VKEY)),
        with_prefix(&[3], bundle.to_json()),
        with_prefix(&[3], format!("{}\0{note3}", bundle.to_json())),
    ];
    // Proofs: genuine (mode 0) and mutated elements, at a few sizes.
    for (size, index) in [(1u64, 0u64), (7, 3), (64, 63), (70, 12)] {
        let mut v = vec![1];
        v.extend_from_slice(&(size - 1).to_be_bytes());
        v.extend_from_slice(&index.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0, 3, 0]);
        out.push(v);
    }
    for (new, old) in [(2u64, 1u64), (8, 4), (70, 33), (5, 5)] {
        let mut v = vec![2];
        v.extend_from_slice(&new.to_be_bytes());
        v.extend_from_slice(&old.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0, 2, 0, 0]);
        out.push(v);
    }
    out
}

fn chat_seeds() -> Vec<Vec<u8>> {
    [
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        json!({
            "model": "m", "messages": [
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "ok", "extra": 1}
            ],
            "tools": [], "n": null, "logprobs": false, "store": true, "metadata": {"a": 1},
            "stream": false, "stream_options": null, "bulkhead": {"retrieve": {}}
        }),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 5}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]}),
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256}),
        json!({"model": "e", "input": [[1, 2], 3], "encoding_format": "float"}),
    ]
    .iter()
    .map(|v| with_prefix(&[4, 4], v.to_string()))
    .collect()
}

fn sse_seeds() -> Vec<Vec<u8>> {
    let streams = [
        "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n: comment\n\ndata: [DONE]\n\n",
        "event: x\r\ndata: one\r\ndata:two\r\n\r\nid: 3\n\n",
        "database: no\ndata\n\ndata: x\r\rdata: y\n\r\n",
    ];
    streams
        .iter()
        .map(|s| with_prefix(&[2, 0x40, 0, 0x90, 0, 8], s))
        .collect()
}

fn chunker_seeds() -> Vec<Vec<u8>> {
    let prose = guard_stream::prose(3, 900);
    let texts = [
        format!("{prose}\n\nSecond paragraph. It ends here! Does it? Yes…"),
        "https://example.com/aVeryLongUrlWithoutAnySpaceAtAllThatMustBeHardSplitSomewhere".into(),
        "東京は大きい。大阪も大きい！ 「本当？」 はい。\n\n  leading and trailing   \n".into(),
        "e.g. this. (Quoted.\") Next.\nline\nline\n\n\n".into(),
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| with_prefix(&[20 + 30 * i as u8, 10, 20], t))
        .collect()
}

/// Every seed of every target, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("http_bodies", http_seeds()),
        ("chat_request", chat_seeds()),
        ("sse_reader", sse_seeds()),
        ("checkpoint", checkpoint_seeds()),
        ("guard_stream", guard_seeds()),
        ("chunker", chunker_seeds()),
    ]
}

pub fn runner(target: &str) -> fn(&[u8]) {
    match target {
        "http_bodies" => http_bodies::run,
        "chat_request" => crate::chat_request::run,
        "sse_reader" => crate::sse_reader::run,
        "checkpoint" => checkpoint::run,
        "guard_stream" => guard_stream::run,
        "chunker" => crate::chunker::run,
        other => panic!("no target {other}"),
    }
}

#[test]
fn seeds_are_written_or_current_and_the_corpus_replays() {
    let write = std::env::var_os("BULKHEAD_FUZZ_WRITE_SEEDS").is_some();
    for (target, seeds) in all() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        for (i, seed) in seeds.iter().enumerate() {
            let path = dir.join(format!("seed-{i:02}"));
            if write {
                std::fs::write(&path, seed).expect("write a seed");
            } else {
                let stored = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}; write the seeds", path.display()));
                assert_eq!(
                    &stored,
                    seed,
                    "{} is stale; write the seeds",
                    path.display()
                );
            }
        }
        let run = runner(target);
        for entry in std::fs::read_dir(&dir).expect("corpus folder") {
            let path = entry.expect("an entry").path();
            run(&std::fs::read(&path).expect("a corpus file"));
        }
    }
}
