//! The audit ledger's figures, side by side in one run: this machine's SHA-256
//! speed (the limit every Merkle operation is made of), durable appends through
//! `Audit::record`, checkpoint signing, and inclusion and consistency proofs at
//! 10^3, 10^6 and 10^7 entries.
//!
//! Run: `cargo bench -p bulkhead-audit --bench ledger`. `LEDGER_BENCH_EVENTS`
//! changes the measured appends per run (default 200,000) and
//! `LEDGER_BENCH_MAX_ENTRIES` caps the largest proof scale (default 10^7) for a
//! quick run.
//!
//! Appends go through the real service over a real SQLite file in WAL mode with
//! `synchronous=FULL`: every acknowledged event is durable, so the figures include
//! the fsyncs. The trees for proofs are too large to build through `record`, so
//! they are written straight through the store with the same tiles the sequencer
//! writes (synthetic leaves, no event bodies), then served by a started `Audit`.
//! Next to the headline figures, rows marked "where the time goes" time the parts
//! on their own — the callers' sealing, the store's transaction with and without
//! tile rewrites, a proof's head read, tile read and in-memory lookup — so a slow
//! figure points at its cause.
//!
//! Databases live under the system temporary directory (set `TMPDIR` to measure
//! another disk; a tmpfs makes fsync free) and are deleted at the end.
//!
//! This is a measurement, not a test: it asserts nothing about timing. It does
//! stop if a proof fails to verify or a log ends at the wrong size, because the
//! speed of wrong answers means nothing.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bulkhead_audit::{Audit, AuditOptions, Outcome, Subject};
use bulkhead_crypto::{LocalKek, SecretKey, Xaes256Gcm};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::{AuditEvent, content_hash};
use bulkhead_ledger::note::{NoteSigner, NoteVerifier};
use bulkhead_ledger::proof::{NodeId, inclusion_plan, verify_consistency, verify_inclusion};
use bulkhead_ledger::tiles::{RightEdge, Tile, TileId};
use bulkhead_ledger::{Hash, leaf_hash, node_hash};
use bulkhead_store::{AuditAppend, AuditEntryRow, AuditTileRow, SqliteOptions, SqliteStore, Store};
use bulkhead_types::{LogId, PolicyName, Region, SystemClock, TenantId, UnixMillis};
use bulkhead_vault::{NewTenant, Vault, VaultLimits};

const COMMAND: &str = "cargo bench -p bulkhead-audit --bench ledger";
const SERVER_NAME: &str = "bulkhead.bench";

/// Hash calls per timed round, and rounds (the median round is reported).
const HASH_CALLS: usize = 1_000_000;
const HASH_ROUNDS: usize = 5;

/// Runtime worker threads: one per core of the standard machine.
const WORKERS: usize = 2;
/// `record` calls in flight at once, as a busy server's request tasks would be.
const IN_FLIGHT: usize = 512;
const EVENTS_DEFAULT: usize = 200_000;
/// Appends before the measurement starts (file growth, caches, key unwrapping).
const WARM_UP_EVENTS: usize = 10_000;
const TENANTS: usize = 100;
/// Entries per transaction in the store-only rows: what the sequencer commits at
/// once when `IN_FLIGHT` callers wait on it.
const STORE_BATCH: usize = IN_FLIGHT;
const STORE_ENTRIES: usize = 100_000;

const SIGN_RAW_CALLS: usize = 20_000;
/// Append-then-sign cycles through the service.
const SIGN_ROUNDS: usize = 2_000;

const SCALES: [u64; 3] = [1_000, 1_000_000, 10_000_000];
/// Entries per store transaction while building a tree for the proof figures.
const BUILD_BATCH: u64 = 100_000;
const PROOF_SAMPLES: usize = 2_000;
/// Lets a fresh service's first checkpointer pass finish before a cold sample.
const COLD_SETTLE: Duration = Duration::from_millis(2);

fn main() {
    let events = env_usize("LEDGER_BENCH_EVENTS", EVENTS_DEFAULT);
    let max_entries = env_usize("LEDGER_BENCH_MAX_ENTRIES", SCALES[2] as usize) as u64;
    let mut scales: Vec<u64> = SCALES.into_iter().filter(|s| *s <= max_entries).collect();
    if max_entries < SCALES[2] && scales.last() != Some(&max_entries) && max_entries > 0 {
        scales.push(max_entries);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    let kek_secret = SecretKey::generate().expect("rng");
    let skey = NoteSigner::generate(SERVER_NAME)
        .expect("key name is valid")
        .to_skey()
        .expect("skey");

    println!("{COMMAND}");
    println!(
        "({events} appends per run after {WARM_UP_EVENTS} warm-up, {IN_FLIGHT} in flight on \
         {WORKERS} workers; proof scales {scales:?}; {PROOF_SAMPLES} samples each)"
    );

    // ---- 1. the limit: SHA-256 on one core ----------------------------------------
    let sample = sample_event(0, &content_hashes(1)[0]);
    let body = sample.canonical_bytes();
    let node_rate = median_rate(|| node_hashes_per_sec(HASH_CALLS));
    let leaf_rate = median_rate(|| leaf_hashes_per_sec(&body, HASH_CALLS));
    println!();
    println!("1. SHA-256, one core (median of {HASH_ROUNDS} rounds of {HASH_CALLS} calls)");
    println!(
        "   node_hash (65-byte input)            {:>12}/s   {:>7.1} ns/call",
        grouped(node_rate),
        1e9 / node_rate
    );
    println!(
        "   leaf_hash ({}-byte event)            {:>12}/s   {:>7.1} ns/call",
        body.len(),
        grouped(leaf_rate),
        1e9 / leaf_rate
    );

    // ---- 2. durable appends through Audit::record --------------------------------
    println!();
    println!("2. Audit::record, durable group commit (SQLite WAL, synchronous=FULL)");
    println!(
        "   {:<28} {:>12} {:>10} {:>10} {:>9}",
        "logs", "events/s", "p50 ms", "p99 ms", "wall s"
    );
    let operator = rt.block_on(append_run(&kek_secret, &skey, 0, events));
    print_append_row("(a) operator log only", &operator);
    let tenants = rt.block_on(append_run(&kek_secret, &skey, TENANTS, events));
    print_append_row(&format!("(b) {TENANTS} tenant logs"), &tenants);
    if let Some(rate) = tenants.caller_side_per_sec {
        println!(
            "   {:<28} {:>12}   (encode, hash, read tenant row, seal; no commit)",
            "    callers' side alone",
            grouped(rate)
        );
    }
    rt.block_on(tenants.store.shutdown());
    drop(tenants);
    println!();
    println!(
        "   where the time goes: Store::audit_append alone, {STORE_BATCH} sealed entries per \
         transaction, one transaction at a time (as the sequencer commits)"
    );
    println!(
        "   {:<44} {:>12} {:>10} {:>14}",
        "", "entries/s", "ms/txn", "tile KiB/txn"
    );
    let sealed = Xaes256Gcm::new(&SecretKey::generate().expect("rng"))
        .expect("key")
        .seal(b"aad", &body)
        .expect("seal");
    for (name, logs, tiles) in [
        ("1 log, tiles as the sequencer writes them", 1, true),
        (
            "100 logs, tiles as the sequencer writes them",
            TENANTS,
            true,
        ),
        ("100 logs, tiles left out", TENANTS, false),
    ] {
        let run = rt.block_on(store_append_run(logs, tiles, &sealed));
        println!(
            "   {:<44} {:>12} {:>10.2} {:>14.0}",
            name,
            grouped(run.entries_per_sec),
            ms(run.per_txn),
            run.tile_bytes_per_txn / 1024.0
        );
    }

    // ---- 3. checkpoints ------------------------------------------------------------
    let signer = NoteSigner::from_skey(&skey).expect("skey");
    let verifier = NoteVerifier::from_vkey(&signer.vkey()).expect("vkey");
    let checkpoint = Checkpoint {
        origin: format!("{SERVER_NAME}/operator"),
        size: 1_234_567,
        root: leaf_hash(b"root"),
    };
    let (sign_rate, verify_rate) = raw_note_rates(&signer, &verifier, &checkpoint);
    let service = rt.block_on(sign_run(&operator, &skey));
    println!();
    println!("3. Checkpoints");
    println!(
        "   raw NoteSigner::sign (Ed25519, aws-lc-rs)          {:>10}/s   {:>8.1} µs",
        grouped(sign_rate),
        1e6 / sign_rate
    );
    println!(
        "   raw NoteVerifier::open                             {:>10}/s   {:>8.1} µs",
        grouped(verify_rate),
        1e6 / verify_rate
    );
    println!(
        "   Audit::sign after one record, log of {:>7} entries {:>8}/s   p50 {:.2} ms, p99 {:.2} ms",
        service.log_size,
        grouped(service.signs_per_sec),
        ms(service.sign.p50),
        ms(service.sign.p99)
    );
    println!(
        "   record + sign cycle                                {:>10}/s   (record p50 {:.2} ms)",
        grouped(service.cycles_per_sec),
        ms(service.record.p50)
    );
    drop(operator);

    // ---- 4. proofs -----------------------------------------------------------------
    println!();
    println!(
        "4. Proofs from stored tiles, one log, {PROOF_SAMPLES} random indices / old sizes per scale"
    );
    println!("   cold = fresh service per sample (empty tile cache; SQLite and OS caches warm);");
    println!("   first = new index on a running service; warm = the same call repeated");
    let mut results = Vec::new();
    for &n in &scales {
        let r = rt.block_on(proof_run(&kek_secret, &skey, n));
        results.push(r);
    }
    println!();
    println!(
        "   {:<10} {:>6} {:>17} {:>17} {:>17} {:>10} {:>12}",
        "entries",
        "hashes",
        "incl cold p50/99",
        "incl first p50/99",
        "incl warm p50/99",
        "verify p50",
        "at SHA speed"
    );
    for r in &results {
        println!(
            "   {:<10} {:>6.1} {:>17} {:>17} {:>17} {:>10} {:>12}",
            grouped(r.entries as f64),
            r.inclusion_hashes,
            pair_us(&r.inclusion_cold),
            pair_us(&r.inclusion_first),
            pair_us(&r.inclusion_warm),
            format!("{:.2}", us(r.inclusion_verify.p50)),
            format!("{:.2}", r.inclusion_hashes * 1e6 / node_rate),
        );
    }
    println!(
        "   (µs; hashes = mean proof length = node hashes to verify; 'at SHA speed' = hashes ÷ node_hash rate)"
    );
    println!();
    println!(
        "   {:<10} {:>6} {:>17} {:>17} {:>17} {:>10}",
        "entries",
        "hashes",
        "cons cold p50/99",
        "cons first p50/99",
        "cons warm p50/99",
        "verify p50"
    );
    for r in &results {
        println!(
            "   {:<10} {:>6.1} {:>17} {:>17} {:>17} {:>10}",
            grouped(r.entries as f64),
            r.consistency_hashes,
            pair_us(&r.consistency_cold),
            pair_us(&r.consistency_first),
            pair_us(&r.consistency_warm),
            format!("{:.2}", us(r.consistency_verify.p50)),
        );
    }
    println!();
    println!(
        "   where an inclusion proof's time goes (p50 µs): the service reads the log's head, \
         the tiles it lacks, then looks nodes up"
    );
    println!(
        "   {:<10} {:>16} {:>24} {:>22}",
        "entries", "head read", "one tile read+decode", "plan+resolve in memory"
    );
    for r in &results {
        println!(
            "   {:<10} {:>16.1} {:>24.1} {:>22.2}",
            grouped(r.entries as f64),
            us(r.head_read.p50),
            us(r.tile_read.p50),
            us(r.resolve.p50),
        );
    }
    println!();
    println!(
        "   {:<10} {:>10} {:>12} {:>10} {:>12} {:>12}",
        "entries", "build s", "build /s", "db MiB", "VmHWM MiB", "VmRSS MiB"
    );
    for r in &results {
        println!(
            "   {:<10} {:>10.1} {:>12} {:>10.1} {:>12} {:>12}",
            grouped(r.entries as f64),
            r.build.as_secs_f64(),
            grouped(r.entries as f64 / r.build.as_secs_f64()),
            r.db_bytes as f64 / 1048576.0,
            mib(r.peak_rss_kib),
            mib(r.rss_kib),
        );
    }
    println!(
        "   (build = synthetic leaves through Store::audit_append, {BUILD_BATCH} per transaction, \
         no event bodies; VmHWM = peak resident set during that scale, reset before it)"
    );
}

// ---- helpers ------------------------------------------------------------------------

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
        Err(_) => default,
    }
}

/// splitmix64: reproducible indices without a dependency for it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    p50: Duration,
    p99: Duration,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    Summary {
        p50: at(50),
        p99: at(99),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pair_us(s: &Summary) -> String {
    format!("{:.1} / {:.1}", us(s.p50), us(s.p99))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// A whole number with thousands separators.
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A field of /proc/self/status in KiB (`VmHWM`, `VmRSS`).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current resident set (Linux ≥ 4.0), so the next reading is
/// the peak of what ran since. Where that is refused there is no per-scale peak and
/// the table says n/a.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn db_bytes(path: &Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

// ---- 1. SHA-256 -----------------------------------------------------------------------

fn median_rate(mut round: impl FnMut() -> f64) -> f64 {
    let mut rates: Vec<f64> = (0..HASH_ROUNDS).map(|_| round()).collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn node_hashes_per_sec(calls: usize) -> f64 {
    // Chained, so each call depends on the last and none can be skipped.
    let mut left: Hash = [1; 32];
    let right: Hash = [2; 32];
    let start = Instant::now();
    for _ in 0..calls {
        left = node_hash(&left, black_box(&right));
    }
    black_box(left);
    calls as f64 / start.elapsed().as_secs_f64()
}

fn leaf_hashes_per_sec(body: &[u8], calls: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        black_box(leaf_hash(black_box(body)));
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

// ---- events -------------------------------------------------------------------------

const KINDS: [&str; 4] = [
    "document.read",
    "document.create",
    "document.read",
    "document.delete",
];

/// Content hashes computed once, so an event costs what the server's call site
/// pays (it has hashed the document already), not a hash of the document.
fn content_hashes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| content_hash(format!("document text {i}").as_bytes()))
        .collect()
}

fn actor(i: usize) -> String {
    format!("key:bhk_{:016x}", 0x5eed_0000 + (i % 97) as u64)
}

/// An event shaped like the server's at a fixed time.
fn sample_event(i: usize, hash: &str) -> AuditEvent {
    let event = AuditEvent::new(
        KINDS[i % KINDS.len()],
        UnixMillis(1_790_000_000_000 + i as i64).rfc3339(),
        actor(i),
        Outcome::Allowed,
    );
    with_details(event, i, hash)
}

/// What the server's call sites add to an event: one subject with a content hash
/// and the request id.
fn with_details(mut event: AuditEvent, i: usize, hash: &str) -> AuditEvent {
    event.subjects.push(Subject {
        kind: "document".into(),
        id: format!("doc-{i:010}"),
        hash: Some(hash.to_owned()),
    });
    event.request_id = Some(format!("req_{:024x}", (i as u128) * 0x9e37_79b9_7f4a_7c15));
    event
}

// ---- 2. appends ---------------------------------------------------------------------

async fn open_vault(store: &Arc<SqliteStore>, kek_secret: &SecretKey) -> Arc<Vault> {
    let kek = Arc::new(LocalKek::new(kek_secret, "bench").expect("kek"));
    Arc::new(
        Vault::open(
            store.clone(),
            kek,
            Arc::new(SystemClock),
            VaultLimits::default(),
        )
        .await
        .expect("vault"),
    )
}

fn start_audit(vault: &Arc<Vault>, skey: &str, checkpoint_interval: Duration) -> Arc<Audit> {
    let options = AuditOptions {
        server_name: SERVER_NAME.into(),
        checkpoint_interval,
        ..AuditOptions::default()
    };
    Audit::start(
        vault.clone(),
        NoteSigner::from_skey(skey).expect("skey"),
        options,
    )
    .expect("audit")
}

/// An append run's figures and what it leaves behind: its database (deleted with
/// `_dir`) and the store and vault over it, the audit service already shut down.
struct AppendRun {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    vault: Arc<Vault>,
    events_per_sec: f64,
    latency: Summary,
    wall: Duration,
    /// Tenant runs: what the callers alone can prepare per second.
    caller_side_per_sec: Option<f64>,
}

fn print_append_row(name: &str, run: &AppendRun) {
    println!(
        "   {:<28} {:>12} {:>10.2} {:>10.2} {:>9.1}",
        name,
        grouped(run.events_per_sec),
        ms(run.latency.p50),
        ms(run.latency.p99),
        run.wall.as_secs_f64()
    );
}

/// Appends `events` (after a warm-up) to the operator log (`tenants == 0`) or
/// round-robin over `tenants` tenant logs, `IN_FLIGHT` at a time.
async fn append_run(
    kek_secret: &SecretKey,
    skey: &str,
    tenants: usize,
    events: usize,
) -> AppendRun {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-ledger-bench-")
        .tempdir()
        .expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("bulkhead.db"), SqliteOptions::default())
            .expect("store"),
    );
    let vault = open_vault(&store, kek_secret).await;
    let mut logs = Vec::new();
    for t in 0..tenants {
        let tenant = vault
            .create_tenant(NewTenant {
                name: format!("bench tenant {t}"),
                region: Region::default(),
                policy: PolicyName::default(),
                models: None,
            })
            .await
            .expect("tenant");
        logs.push(LogId::Tenant(tenant.id));
    }
    if logs.is_empty() {
        logs.push(LogId::Operator);
    }
    // The production default: logs that grew are signed once a second meanwhile.
    let audit = start_audit(&vault, skey, AuditOptions::default().checkpoint_interval);
    let logs = Arc::new(logs);
    let hashes = Arc::new(content_hashes(1024));

    drive(&audit, &logs, &hashes, 0, WARM_UP_EVENTS).await;
    let (wall, latencies) = drive(&audit, &logs, &hashes, WARM_UP_EVENTS, events).await;

    // Paired check: every acknowledged event is in a log, and nothing else is.
    let mut total = 0;
    for log in logs.iter() {
        total += audit.head(log).await.expect("head").size;
    }
    assert_eq!(total as usize, WARM_UP_EVENTS + events, "appended events");
    audit.shutdown().await;
    let caller_side_per_sec = if tenants > 0 {
        Some(caller_side(&vault, &logs, &hashes, events).await)
    } else {
        None
    };
    AppendRun {
        _dir: dir,
        store,
        vault,
        events_per_sec: events as f64 / wall.as_secs_f64(),
        latency: summarize(latencies),
        wall,
        caller_side_per_sec,
    }
}

/// The caller's half of `Audit::record` for a tenant log, without the queue and
/// the commit: encode, leaf hash, and `Vault::seal_audit_event`, which reads the
/// tenant row (for its current key version) and seals; `count` events from
/// `IN_FLIGHT` tasks.
async fn caller_side(
    vault: &Arc<Vault>,
    logs: &Arc<Vec<LogId>>,
    hashes: &Arc<Vec<String>>,
    count: usize,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let (vault, logs, hashes, next) =
            (vault.clone(), logs.clone(), hashes.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let tenant = logs[i % logs.len()].tenant().expect("a tenant log");
                let event = sample_event(i, &hashes[i % hashes.len()]);
                let body = event.canonical_bytes();
                let leaf_hex = bulkhead_ledger::hex(&leaf_hash(&body));
                black_box(
                    vault
                        .seal_audit_event(tenant, &leaf_hex, &body)
                        .await
                        .expect("seal"),
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// Records events `first..first + count` from `IN_FLIGHT` tasks; returns the wall
/// time and each `record` call's latency.
async fn drive(
    audit: &Arc<Audit>,
    logs: &Arc<Vec<LogId>>,
    hashes: &Arc<Vec<String>>,
    first: usize,
    count: usize,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let (audit, logs, hashes, next) =
            (audit.clone(), logs.clone(), hashes.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count / IN_FLIGHT + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return latencies;
                }
                let log = &logs[i % logs.len()];
                let event = audit.event(KINDS[i % KINDS.len()], actor(i), Outcome::Allowed);
                let event = with_details(event, i, &hashes[i % hashes.len()]);
                let t = Instant::now();
                audit.record(log, &event).await.expect("record");
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    (start.elapsed(), latencies)
}

struct StoreRun {
    entries_per_sec: f64,
    per_txn: Duration,
    tile_bytes_per_txn: f64,
}

/// `STORE_ENTRIES` entries with real-sized sealed bodies, round-robin over `logs`
/// logs, through `Store::audit_append` in transactions of `STORE_BATCH`, grouped
/// and tiled as the sequencer does it: the store's share of an append, without
/// sealing, queueing or the callers' tasks. Leaving the tiles out shows what
/// rewriting each touched log's right-edge tiles costs per transaction.
async fn store_append_run(logs: usize, with_tiles: bool, sealed: &[u8]) -> StoreRun {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-ledger-bench-")
        .tempdir()
        .expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("bulkhead.db"), SqliteOptions::default())
        .expect("store");
    let ids: Vec<LogId> = if logs == 1 {
        vec![LogId::Operator]
    } else {
        (0..logs)
            .map(|l| {
                let mut random = [0u8; 12];
                random[..8].copy_from_slice(&(l as u64).to_be_bytes());
                LogId::Tenant(TenantId::from_random(random))
            })
            .collect()
    };
    let mut edges = vec![RightEdge::empty(); logs];
    let created_at = UnixMillis(1_790_000_000_000);
    let mut tile_bytes = 0usize;
    let mut txns = 0usize;
    let start = Instant::now();
    let mut next = 0usize;
    while next < STORE_ENTRIES {
        let len = STORE_BATCH.min(STORE_ENTRIES - next);
        let old_sizes: Vec<u64> = edges.iter().map(RightEdge::size).collect();
        let mut groups: Vec<Vec<AuditEntryRow>> = vec![Vec::new(); logs];
        for k in next..next + len {
            let l = k % logs;
            let leaf = synthetic_leaf(k as u64);
            let index = edges[l].append(leaf);
            groups[l].push(AuditEntryRow {
                index,
                leaf_hash: leaf.to_vec(),
                key_version: 1,
                sealed: Some(sealed.to_vec()),
                created_at,
            });
        }
        let mut appends = Vec::new();
        for (l, entries) in groups.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let changed = edges[l].take_changed();
            let tiles: Vec<AuditTileRow> = if with_tiles {
                changed
                    .iter()
                    .map(|t| AuditTileRow {
                        level: t.id.level,
                        index: t.id.index,
                        data: t.encode(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            tile_bytes += tiles.iter().map(|t| t.data.len()).sum::<usize>();
            appends.push(AuditAppend {
                log: ids[l].clone(),
                old_size: old_sizes[l],
                entries,
                tiles,
                records: Vec::new(),
            });
        }
        let count = appends.len();
        let applied = store.audit_append(appends).await.expect("audit append");
        assert_eq!(applied, vec![true; count], "only this writer appends");
        txns += 1;
        next += len;
    }
    let elapsed = start.elapsed();
    store.shutdown().await;
    StoreRun {
        entries_per_sec: STORE_ENTRIES as f64 / elapsed.as_secs_f64(),
        per_txn: elapsed / txns as u32,
        tile_bytes_per_txn: tile_bytes as f64 / txns as f64,
    }
}

// ---- 3. checkpoints -------------------------------------------------------------------

fn raw_note_rates(signer: &NoteSigner, verifier: &NoteVerifier, cp: &Checkpoint) -> (f64, f64) {
    let body = cp.body();
    let start = Instant::now();
    let mut note = String::new();
    for _ in 0..SIGN_RAW_CALLS {
        note = signer.sign(black_box(&body)).expect("sign");
    }
    let sign_rate = SIGN_RAW_CALLS as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..SIGN_RAW_CALLS {
        black_box(verifier.open(black_box(&note)).expect("open"));
    }
    let verify_rate = SIGN_RAW_CALLS as f64 / start.elapsed().as_secs_f64();
    (sign_rate, verify_rate)
}

struct SignRun {
    log_size: u64,
    sign: Summary,
    record: Summary,
    signs_per_sec: f64,
    cycles_per_sec: f64,
}

/// Appends one event and signs, `SIGN_ROUNDS` times, on the operator log the
/// append run left behind, with the background signer out of the way.
async fn sign_run(run: &AppendRun, skey: &str) -> SignRun {
    let audit = start_audit(&run.vault, skey, Duration::from_secs(3600));
    let log = LogId::Operator;
    let verifier = NoteVerifier::from_vkey(&audit.vkey()).expect("vkey");
    let hashes = content_hashes(16);
    let mut signs = Vec::with_capacity(SIGN_ROUNDS);
    let mut records = Vec::with_capacity(SIGN_ROUNDS);
    let mut previous = audit.sign(&log).await.expect("sign").checkpoint;
    let start = Instant::now();
    for r in 0..SIGN_ROUNDS {
        let event = sample_event(r, &hashes[r % hashes.len()]);
        let t = Instant::now();
        audit.record(&log, &event).await.expect("record");
        records.push(t.elapsed());
        let t = Instant::now();
        let signed = audit.sign(&log).await.expect("sign");
        signs.push(t.elapsed());
        let cp = Checkpoint::open(&signed.note, &verifier).expect("a signed note verifies");
        assert_eq!(cp.size, previous.size + 1, "each cycle signs a new size");
        previous = cp;
    }
    let elapsed = start.elapsed();
    let sign_total: Duration = signs.iter().sum();
    audit.shutdown().await;
    run.store.shutdown().await;
    SignRun {
        log_size: previous.size,
        signs_per_sec: SIGN_ROUNDS as f64 / sign_total.as_secs_f64(),
        cycles_per_sec: SIGN_ROUNDS as f64 / elapsed.as_secs_f64(),
        sign: summarize(signs),
        record: summarize(records),
    }
}

// ---- 4. proofs ----------------------------------------------------------------------

struct ProofRun {
    entries: u64,
    build: Duration,
    db_bytes: u64,
    peak_rss_kib: Option<u64>,
    rss_kib: Option<u64>,
    inclusion_hashes: f64,
    inclusion_cold: Summary,
    inclusion_first: Summary,
    inclusion_warm: Summary,
    inclusion_verify: Summary,
    consistency_hashes: f64,
    consistency_cold: Summary,
    consistency_first: Summary,
    consistency_warm: Summary,
    consistency_verify: Summary,
    head_read: Summary,
    tile_read: Summary,
    resolve: Summary,
}

/// The synthetic leaf at `index`.
fn synthetic_leaf(index: u64) -> Hash {
    leaf_hash(&index.to_be_bytes())
}

/// Writes a log of `n` synthetic leaves straight through the store, as the
/// sequencer would in transactions of `BUILD_BATCH`; returns its root.
async fn build_log(store: &SqliteStore, log: &LogId, n: u64) -> Hash {
    let mut edge = RightEdge::empty();
    let created_at = UnixMillis(1_790_000_000_000);
    while edge.size() < n {
        let old_size = edge.size();
        let len = BUILD_BATCH.min(n - old_size);
        let mut entries = Vec::with_capacity(len as usize);
        for index in old_size..old_size + len {
            let leaf = synthetic_leaf(index);
            let at = edge.append(leaf);
            debug_assert_eq!(at, index);
            entries.push(AuditEntryRow {
                index,
                leaf_hash: leaf.to_vec(),
                key_version: 0,
                sealed: None,
                created_at,
            });
        }
        let tiles = edge
            .take_changed()
            .iter()
            .map(|t| AuditTileRow {
                level: t.id.level,
                index: t.id.index,
                data: t.encode(),
            })
            .collect();
        let applied = store
            .audit_append(vec![AuditAppend {
                log: log.clone(),
                old_size,
                entries,
                tiles,
                records: Vec::new(),
            }])
            .await
            .expect("audit append");
        assert_eq!(
            applied,
            vec![true],
            "the log grew only through this builder"
        );
    }
    edge.root()
}

async fn proof_run(kek_secret: &SecretKey, skey: &str, n: u64) -> ProofRun {
    let peak_resets = reset_peak_rss();
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-ledger-bench-")
        .tempdir()
        .expect("tempdir");
    let path = dir.path().join("bulkhead.db");
    let log = LogId::Operator;

    let started = Instant::now();
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("store"));
    let root = build_log(&store, &log, n).await;
    store.shutdown().await;
    let build = started.elapsed();
    let db_bytes = db_bytes(&path);

    // A new process's view of the file: fresh connections, empty caches.
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("store"));
    let vault = open_vault(&store, kek_secret).await;
    let audit = start_audit(&vault, skey, Duration::from_secs(3600));
    // Paired with the build: what the service reads back is the tree written.
    let signed = audit.sign(&log).await.expect("sign").checkpoint;
    assert_eq!((signed.size, signed.root), (n, root), "root read back");

    let mut rng = Rng(0x1ed6e7 ^ n);
    let indices: Vec<u64> = (0..PROOF_SAMPLES).map(|_| rng.below(n)).collect();
    let olds: Vec<u64> = (0..PROOF_SAMPLES)
        .map(|_| 1 + rng.below(n.saturating_sub(1).max(1)))
        .collect();

    // Cold: a fresh service per sample, so no tile is cached.
    let mut inclusion_cold = Vec::with_capacity(PROOF_SAMPLES);
    let mut consistency_cold = Vec::with_capacity(PROOF_SAMPLES);
    for (&index, &old) in indices.iter().zip(&olds) {
        for consistency in [false, true] {
            let fresh = start_audit(&vault, skey, Duration::from_secs(3600));
            tokio::time::sleep(COLD_SETTLE).await;
            let t = Instant::now();
            if consistency {
                black_box(fresh.consistency_proof(&log, old, n).await.expect("proof"));
                consistency_cold.push(t.elapsed());
            } else {
                black_box(fresh.inclusion_proof(&log, index, n).await.expect("proof"));
                inclusion_cold.push(t.elapsed());
            }
            fresh.shutdown().await;
        }
    }

    // First and warm on one running service.
    let mut inclusion_first = Vec::with_capacity(PROOF_SAMPLES);
    let mut inclusion_warm = Vec::with_capacity(PROOF_SAMPLES);
    let mut inclusion_verify = Vec::with_capacity(PROOF_SAMPLES);
    let mut inclusion_hashes = 0usize;
    for &index in &indices {
        let t = Instant::now();
        let first = audit.inclusion_proof(&log, index, n).await.expect("proof");
        inclusion_first.push(t.elapsed());
        let t = Instant::now();
        let (leaf, proof) = audit.inclusion_proof(&log, index, n).await.expect("proof");
        inclusion_warm.push(t.elapsed());
        assert_eq!(
            first,
            (leaf, proof.clone()),
            "a proof does not depend on the cache"
        );
        assert_eq!(leaf, synthetic_leaf(index), "leaf read back");
        let t = Instant::now();
        let verified = verify_inclusion(index, n, black_box(&leaf), black_box(&proof), &root);
        inclusion_verify.push(t.elapsed());
        verified.expect("inclusion proof verifies");
        inclusion_hashes += proof.len();
    }

    let mut consistency_first = Vec::with_capacity(PROOF_SAMPLES);
    let mut consistency_warm = Vec::with_capacity(PROOF_SAMPLES);
    let mut consistency_verify = Vec::with_capacity(PROOF_SAMPLES);
    let mut consistency_hashes = 0usize;
    for &old in &olds {
        let t = Instant::now();
        let first = audit.consistency_proof(&log, old, n).await.expect("proof");
        consistency_first.push(t.elapsed());
        let t = Instant::now();
        let proof = audit.consistency_proof(&log, old, n).await.expect("proof");
        consistency_warm.push(t.elapsed());
        assert_eq!(first, proof, "a proof does not depend on the cache");
        let old_root = audit.root_at(&log, old).await.expect("old root");
        let t = Instant::now();
        let verified = verify_consistency(old, n, black_box(&proof), &old_root, &root);
        consistency_verify.push(t.elapsed());
        verified.expect("consistency proof verifies");
        consistency_hashes += proof.len();
    }

    // Where a proof's time goes: the parts `Audit::inclusion_proof` is made of,
    // timed one by one.
    let mut head_read = Vec::with_capacity(PROOF_SAMPLES);
    let mut tile_read = Vec::with_capacity(PROOF_SAMPLES);
    let mut resolve = Vec::with_capacity(PROOF_SAMPLES);
    for &index in &indices {
        let t = Instant::now();
        black_box(store.audit_head(&log).await.expect("head"));
        head_read.push(t.elapsed());

        let plan = inclusion_plan(index, n).expect("plan");
        let leaf_node = NodeId::new(0, index);
        let mut ids: Vec<TileId> = plan
            .nodes()
            .chain([leaf_node])
            .map(|id| TileId::locate(id).0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let (leaf_tile, _, _) = TileId::locate(leaf_node);
        let t = Instant::now();
        let rows = store
            .audit_tiles(&log, vec![(leaf_tile.level, leaf_tile.index)])
            .await
            .expect("tile");
        let tile = Tile::decode(leaf_tile, &rows[0].data).expect("tile decodes");
        tile_read.push(t.elapsed());
        black_box(tile);

        let rows = store
            .audit_tiles(&log, ids.iter().map(|t| (t.level, t.index)).collect())
            .await
            .expect("tiles");
        let tiles: HashMap<TileId, Tile> = rows
            .iter()
            .map(|r| {
                let id = TileId {
                    level: r.level,
                    index: r.index,
                };
                (id, Tile::decode(id, &r.data).expect("tile decodes"))
            })
            .collect();
        let lookup = |id: NodeId| tiles.get(&TileId::locate(id).0)?.node(id);
        let t = Instant::now();
        let plan = inclusion_plan(black_box(index), n).expect("plan");
        let proof = plan.resolve(lookup).expect("every node is stored");
        let leaf = lookup(leaf_node).expect("the leaf is stored");
        resolve.push(t.elapsed());
        verify_inclusion(index, n, &leaf, &proof, &root).expect("inclusion proof verifies");
    }

    audit.shutdown().await;
    store.shutdown().await;
    let peak_rss_kib = if peak_resets {
        proc_status_kib("VmHWM")
    } else {
        None
    };
    let rss_kib = proc_status_kib("VmRSS");
    drop(dir);
    ProofRun {
        entries: n,
        build,
        db_bytes,
        peak_rss_kib,
        rss_kib,
        inclusion_hashes: inclusion_hashes as f64 / PROOF_SAMPLES as f64,
        inclusion_cold: summarize(inclusion_cold),
        inclusion_first: summarize(inclusion_first),
        inclusion_warm: summarize(inclusion_warm),
        inclusion_verify: summarize(inclusion_verify),
        consistency_hashes: consistency_hashes as f64 / PROOF_SAMPLES as f64,
        consistency_cold: summarize(consistency_cold),
        consistency_first: summarize(consistency_first),
        consistency_warm: summarize(consistency_warm),
        consistency_verify: summarize(consistency_verify),
        head_read: summarize(head_read),
        tile_read: summarize(tile_read),
        resolve: summarize(resolve),
    }
}
