//! End to end: three `bulkhead serve` processes on one PostgreSQL database (a fresh
//! database on the throwaway server of `scripts/pg-test-server`). Concurrent
//! document writes and model calls for several tenants go through all three; then
//! every tenant's log and the operator log verify end to end (no fork, no gap), and
//! a document written through one replica is found by a search on another that
//! already had the tenant's index in memory.

#![cfg(unix)]

use std::process::Output;

use bulkhead_test_support::cli::run;
use bulkhead_test_support::{Server, describe, expect_json, pg, tenant_with_key};
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::BULKHEAD;

const TENANTS: usize = 3;
// Enough for each log to pass 256 entries, so stored upper tiles are reloaded too.
const DOCS_PER_TENANT_PER_REPLICA: usize = 50;

fn audit_cli(server: &Server, args: &[&str]) -> Output {
    run(server.cli().arg("audit").args(args))
}

fn assert_verified(output: &Output, what: &str) {
    let text = format!("{what}: {}", describe(output));
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("OK"),
        "{text}"
    );
}

async fn search_hits(client: &Client, server: &Server, key: &str, query: &str) -> Vec<String> {
    let body = expect_json(
        client
            .post(format!("{}/v1/search", server.base_url))
            .bearer_auth(key)
            .json(&json!({"query": query, "top_k": 5})),
        StatusCode::OK,
        "search",
    )
    .await;
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_database_keep_every_log_whole() {
    let url = pg::fresh_database().await;
    // One data folder: the replicas share the master key and the checkpoint
    // signing key, as a deployment shares them through its secret manager.
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("BULKHEAD_STORE", url.as_str()),
        ("BULKHEAD_ECHO_MODELS", "true"),
    ];
    let first = Server::start_with(BULKHEAD, data.path(), &env).await;
    let replicas = [
        first,
        Server::start_with(BULKHEAD, data.path(), &env).await,
        Server::start_with(BULKHEAD, data.path(), &env).await,
    ];
    let client = Client::new();

    let mut tenants = Vec::new();
    for (i, replica) in replicas.iter().enumerate().take(TENANTS) {
        tenants.push(tenant_with_key(&client, &replica.base_url, &format!("t{i}")).await);
    }

    // Concurrent load: every tenant through every replica at once.
    let mut tasks = Vec::new();
    for (t, (_, key)) in tenants.iter().enumerate() {
        for (r, replica) in replicas.iter().enumerate() {
            let (client, key, base) = (client.clone(), key.clone(), replica.base_url.clone());
            tasks.push(tokio::spawn(async move {
                for d in 0..DOCS_PER_TENANT_PER_REPLICA {
                    let response = client
                        .post(format!("{base}/v1/documents"))
                        .bearer_auth(&key)
                        .json(&json!({"id": format!("r{r}-d{d}"), "text": format!("tenant {t} replica {r} document {d}")}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    assert_eq!(status, StatusCode::CREATED, "{}", response.text().await.unwrap_or_default());
                    let response = client
                        .post(format!("{base}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&json!({"model": "bulkhead-echo", "messages": [{"role": "user", "content": format!("hello {d}")}]}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    assert_eq!(status, StatusCode::OK, "{}", response.text().await.unwrap_or_default());
                }
            }));
        }
    }
    for task in tasks {
        if let Err(e) = task.await {
            let logs: Vec<String> = replicas.iter().map(Server::log_tail).collect();
            panic!("{e}\n{}", logs.join("\n"));
        }
    }

    // Every document is there, seen from any replica (paged by cursor).
    for (_, key) in &tenants {
        for replica in &replicas {
            let mut seen = 0;
            let mut cursor: Option<String> = None;
            loop {
                let mut url = format!("{}/v1/documents?limit=100", replica.base_url);
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let page =
                    expect_json(client.get(url).bearer_auth(key), StatusCode::OK, "list").await;
                seen += page["documents"].as_array().unwrap().len();
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            assert_eq!(seen, replicas.len() * DOCS_PER_TENANT_PER_REPLICA);
        }
    }

    // Every log verifies end to end, asked of a replica other than most writers.
    let vkey = audit_cli(&replicas[1], &["public-key"]);
    assert_eq!(vkey.status.code(), Some(0));
    let vkey = String::from_utf8(vkey.stdout).unwrap().trim().to_owned();
    for (i, (id, _)) in tenants.iter().enumerate() {
        let replica = &replicas[(i + 1) % replicas.len()];
        assert_verified(
            &audit_cli(replica, &["verify", "--tenant", id, "--vkey", &vkey]),
            id,
        );
    }
    assert_verified(
        &audit_cli(&replicas[2], &["verify", "--operator", "--vkey", &vkey]),
        "operator",
    );

    // A search on replica 2 makes the tenant's index hot there; a document then
    // written through replica 0 is found by the next search on replica 2.
    let (_, key) = &tenants[0];
    assert!(
        search_hits(&client, &replicas[2], key, "zebracorn")
            .await
            .is_empty()
    );
    expect_json(
        client
            .post(format!("{}/v1/documents", replicas[0].base_url))
            .bearer_auth(key)
            .json(&json!({"id": "late", "text": "a zebracorn crossed the replicas"})),
        StatusCode::CREATED,
        "write on replica 0",
    )
    .await;
    assert_eq!(
        search_hits(&client, &replicas[2], key, "zebracorn").await,
        ["late"]
    );
    // And a delete through replica 1 is gone from replica 2's next search.
    let deleted = client
        .delete(format!("{}/v1/documents/late", replicas[1].base_url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(
        search_hits(&client, &replicas[2], key, "zebracorn")
            .await
            .is_empty()
    );

    // The output guard of every replica learns what another replica stored: a
    // tenant created and a document written through replica 0 are caught when
    // they show up in a text for another tenant scanned by replica 2 — within the
    // guard's sync interval (polled, bounded; no timing is asserted).
    let (_, other_key) = &tenants[1];
    let (fresh, fresh_key) = tenant_with_key(&client, &replicas[0].base_url, "late-tenant").await;
    let secret = "the walrus ledger reconciles every fortnight across the northern depots; seals are \
         counted by the harbour master, whose tally goes to the quartermaster in sealed \
         envelopes numbered from one hundred upward, and any gap in the numbers is reported \
         to the board before the next tide table is printed";
    expect_json(
        client
            .post(format!("{}/v1/documents", replicas[0].base_url))
            .bearer_auth(&fresh_key)
            .json(&json!({"id": "walrus", "text": secret})),
        StatusCode::CREATED,
        "write the new tenant's document on replica 0",
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let verdict = expect_json(
            client
                .post(format!("{}/v1/guard/scan", replicas[2].base_url))
                .bearer_auth(other_key)
                .json(&json!({"text": format!("leaked: {secret}")})),
            StatusCode::OK,
            "scan on replica 2",
        )
        .await;
        if verdict["verdict"] == "blocked" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica 2's guard never learned tenant {fresh}'s document: {verdict}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
