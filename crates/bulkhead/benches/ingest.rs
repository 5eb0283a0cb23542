//! Ingest throughput of the real server, end to end over HTTP.
//!
//! Run with `cargo bench -p bulkhead --bench ingest` (set `BENCH_DOCS` to change
//! the number of measured documents, default 20 000). Under `cargo bench` the
//! binary is the optimised build.
//!
//! The release `bulkhead` binary is started on a temporary data directory, 100
//! tenants with one key each are created, and 32 concurrent clients sharing one
//! connection pool post 1 KiB documents, taking tenants round-robin. A 2 s
//! warm-up is not counted. Every 201 is a durable commit (SQLite in WAL mode with
//! `synchronous=FULL`, commits batched by group commit), so the numbers include
//! the fsyncs. The same workload is then run against a server started with
//! `BULKHEAD_SQLITE_GROUP_COMMIT_MAX=1` (one fsync per document) to show what
//! group commit buys. Data directories are created under the system temporary
//! directory; set `TMPDIR` to measure another disk (a tmpfs makes fsync free).
//!
//! This is a measurement, not a test: it asserts nothing about timing. It does
//! stop on any answer other than 201, because throughput of failures means
//! nothing. The client runs on the same machine as the server and competes with
//! it for CPU.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::json;

// The same real-process harness the end-to-end tests use.
use bulkhead_test_support::Server;

const COMMAND: &str = "cargo bench -p bulkhead --bench ingest";
/// At least 32 characters, as the server requires of an admin token.
const TENANTS: usize = 100;
const CONCURRENCY: usize = 32;
const DOC_BYTES: usize = 1024;
const DOCS_DEFAULT: usize = 20_000;
const WARM_UP: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let docs = match std::env::var("BENCH_DOCS") {
        Ok(value) => value
            .parse::<usize>()
            .ok()
            .filter(|&docs| docs > 0)
            .unwrap_or_else(|| panic!("BENCH_DOCS must be a positive integer, got {value:?}")),
        Err(_) => DOCS_DEFAULT,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");

    println!("{COMMAND}");
    println!();
    println!(
        "ingest: {docs} documents of {DOC_BYTES} B, {TENANTS} tenants (1 key each), \
         {CONCURRENCY} concurrent clients, {} s warm-up not counted",
        WARM_UP.as_secs()
    );
    println!("machine: nproc = {}", nproc());
    println!(
        "data: under {} (set TMPDIR to measure another disk)",
        std::env::temp_dir().display()
    );
    println!(
        "durability: every 201 is a durable commit \
         (SQLite WAL, synchronous=FULL, group commit)"
    );
    println!();

    let grouped = runtime.block_on(run("group commit (default)", &[], docs));
    let single = runtime.block_on(run(
        "no group commit (GROUP_COMMIT_MAX=1)",
        &[("BULKHEAD_SQLITE_GROUP_COMMIT_MAX", "1")],
        docs,
    ));

    println!(
        "| {:<36} | {:>6} | {:>7} | {:>7} | {:>7} | {:>7} |",
        "server", "docs", "wall s", "docs/s", "p50 ms", "p99 ms"
    );
    println!(
        "|{:-<38}|{:->8}|{:->9}|{:->9}|{:->9}|{:->9}|",
        "", "", "", "", "", ""
    );
    for result in [&grouped, &single] {
        println!(
            "| {:<36} | {:>6} | {:>7.2} | {:>7.0} | {:>7.2} | {:>7.2} |",
            result.label,
            result.latencies.len(),
            result.wall.as_secs_f64(),
            result.docs_per_sec(),
            result.percentile_ms(0.50),
            result.percentile_ms(0.99),
        );
    }
    println!();
    println!(
        "group commit vs one fsync per document: {:.1}x the throughput",
        grouped.docs_per_sec() / single.docs_per_sec()
    );
}

/// One measured configuration.
#[derive(Debug)]
struct RunResult {
    label: &'static str,
    wall: Duration,
    /// Sorted ascending.
    latencies: Vec<Duration>,
}

impl RunResult {
    fn docs_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    /// Nearest-rank percentile.
    fn percentile_ms(&self, quantile: f64) -> f64 {
        let rank = (quantile * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[index].as_secs_f64() * 1e3
    }
}

/// Starts a fresh server with `extra_env`, sets up the tenants, warms up, then
/// measures `docs` documents. The server and its data are gone afterwards.
async fn run(label: &'static str, extra_env: &[(&str, &str)], docs: usize) -> RunResult {
    eprintln!("{label}: starting server");
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let server =
        Server::start_with(env!("CARGO_BIN_EXE_bulkhead"), data_dir.path(), extra_env).await;
    let client = Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build the HTTP client");

    let mut keys = Vec::with_capacity(TENANTS);
    for index in 0..TENANTS {
        keys.push(
            bulkhead_test_support::tenant_with_key(
                &client,
                &server.base_url,
                &format!("bench-{index}"),
            )
            .await
            .1,
        );
    }
    let keys = Arc::new(keys);

    eprintln!("{label}: warming up for {WARM_UP:?}");
    let warm_up_end = Instant::now() + WARM_UP;
    ingest(
        &client,
        &server.base_url,
        &keys,
        "warm",
        Stop::At(warm_up_end),
    )
    .await;

    eprintln!("{label}: measuring {docs} documents");
    let started = Instant::now();
    let mut latencies = ingest(&client, &server.base_url, &keys, "doc", Stop::After(docs)).await;
    let wall = started.elapsed();
    latencies.sort_unstable();
    drop(server);
    RunResult {
        label,
        wall,
        latencies,
    }
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Start no request after this instant.
    At(Instant),
    /// Send exactly this many documents in all.
    After(usize),
}

/// Posts documents from `CONCURRENCY` tasks until `stop`, and returns the
/// latency of every request. Document `i` goes to tenant `i % TENANTS`.
async fn ingest(
    client: &Client,
    base_url: &str,
    keys: &Arc<Vec<String>>,
    prefix: &'static str,
    stop: Stop,
) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base_url}/v1/documents"));
            let (keys, next) = (Arc::clone(keys), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let done = match stop {
                        Stop::At(deadline) => Instant::now() >= deadline,
                        Stop::After(count) => index >= count,
                    };
                    if done {
                        return latencies;
                    }
                    let id = format!("{prefix}-{index}");
                    let body = json!({ "id": id, "text": document_text(&id) });
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&keys[index % TENANTS])
                        .json(&body)
                        .send()
                        .await
                        .unwrap_or_else(|error| panic!("POST {id}: {error}"));
                    let status = response.status();
                    // Read the whole answer, so the connection goes back to the pool.
                    let answer = response
                        .bytes()
                        .await
                        .unwrap_or_else(|error| panic!("POST {id}: {error}"));
                    latencies.push(sent.elapsed());
                    assert_eq!(
                        status,
                        StatusCode::CREATED,
                        "POST {id}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("ingest task panicked"));
    }
    latencies
}

/// Exactly `DOC_BYTES` bytes of ASCII text that names its document.
fn document_text(id: &str) -> String {
    const FILLER: &str = "Every tenant's documents are sealed under that tenant's own key. ";
    let mut text = format!("Document {id}. ");
    while text.len() < DOC_BYTES {
        text.push_str(FILLER);
    }
    text.truncate(DOC_BYTES);
    text
}

/// What `nproc` prints, or the standard library's view when it is missing.
fn nproc() -> String {
    Command::new("nproc")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.to_string())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
