//! Output-guard throughput, single thread, every detector on, with 10,000 tenants'
//! fingerprints and canaries loaded; and the fingerprint map's memory per GB of
//! tenant text.
//!
//! Inputs are `testdata/guard/bench_1k.txt` and `bench_64k.txt` (response-like
//! prose with an entity about every 500 bytes, written by the `gen_eval`
//! example), the same files the Presidio comparison reads.
//!
//! Run: `cargo bench -p bulkhead-guard --bench scan`. `BENCH_GUARD_TENANT_KB`
//! sets the stored text per tenant (default 20 KiB, so 200 MB in all).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead_guard::{
    Action, DetectorActions, Guard, GuardLimits, InjectionPolicy, Policy, Verdict,
};
use bulkhead_types::{DocumentId, TenantId};

const TENANTS: usize = 10_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A 4,096-word vocabulary of pronounceable pseudo-words, so tenants' texts share
/// words but (almost) never 32-byte runs.
fn vocabulary() -> Vec<String> {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "pe", "da", "go", "hu", "ber", "tan",
        "mor", "lis",
    ];
    let mut r = Rng(99);
    (0..4096)
        .map(|_| {
            let n = 2 + (r.next() % 3) as usize;
            (0..n).map(|_| SYL[(r.next() % 16) as usize]).collect()
        })
        .collect()
}

fn tenant_text(vocab: &[String], seed: u64, bytes: usize) -> String {
    let mut r = Rng(seed);
    let mut s = String::with_capacity(bytes + 32);
    while s.len() < bytes {
        let x = r.next();
        s.push_str(&vocab[(x % 4096) as usize]);
        s.push_str(if x.is_multiple_of(13) { ". " } else { " " });
    }
    s
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Nanoseconds this thread has spent on a CPU (Linux, 10 ms resolution), so a figure
/// stays "per core" when other processes share the machine.
fn thread_cpu_ns() -> Option<u64> {
    // utime and stime, fields 14 and 15, in clock ticks (100 Hz on Linux).
    let s = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

/// MB/s of `f` over `bytes` per call, by thread CPU time (wall time when it is
/// unavailable): five rounds of at least 1 s, median reported.
fn throughput(bytes: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut rates = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let cpu0 = thread_cpu_ns();
        let mut n = 0usize;
        while start.elapsed() < Duration::from_millis(1000) {
            f();
            n += 1;
        }
        let secs = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => start.elapsed().as_secs_f64(),
        };
        rates.push((bytes * n) as f64 / secs / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    let kb: usize = std::env::var("BENCH_GUARD_TENANT_KB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/guard");
    let input_1k =
        std::fs::read_to_string(data.join("bench_1k.txt")).expect("bench_1k.txt (run gen_eval)");
    let input_64k =
        std::fs::read_to_string(data.join("bench_64k.txt")).expect("bench_64k.txt (run gen_eval)");

    println!(
        "cargo bench -p bulkhead-guard --bench scan   ({TENANTS} tenants x {kb} KiB stored text, one canary each)"
    );
    let guard = Guard::new([9u8; 32], GuardLimits::default());
    let vocab = vocabulary();
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| {
            let mut b = [0u8; 12];
            b[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            TenantId::from_random(b)
        })
        .collect();
    let rss_before = rss_bytes();
    let mut text_bytes = 0usize;
    let mut index_time = Duration::ZERO;
    let doc = DocumentId::parse("doc-1").expect("doc id");
    for (i, t) in tenants.iter().enumerate() {
        let text = tenant_text(&vocab, i as u64 + 1000, kb * 1024);
        text_bytes += text.len();
        let start = Instant::now();
        guard.index_document(t, &doc, &text).expect("index");
        index_time += start.elapsed();
        guard.seed_canary(t).expect("canary");
    }
    let stats = guard.stats();
    let rss_after = rss_bytes();
    let gb = text_bytes as f64 / 1e9;
    println!(
        "indexed {:.0} MB of tenant text in {:.2} s ({:.0} MB/s single thread): {} distinct fingerprints ({:.1} per KB)",
        text_bytes as f64 / 1e6,
        index_time.as_secs_f64(),
        text_bytes as f64 / 1e6 / index_time.as_secs_f64(),
        stats.index.fingerprints,
        stats.index.fingerprints as f64 / (text_bytes as f64 / 1000.0),
    );
    println!(
        "fingerprint map: {:.0} MB by count ({:.0} MB per GB of text); process RSS grew {:.0} MB ({:.0} MB per GB, includes canaries and allocator slack)",
        stats.index.map_bytes as f64 / 1e6,
        stats.index.map_bytes as f64 / 1e6 / gb,
        rss_after.saturating_sub(rss_before) as f64 / 1e6,
        rss_after.saturating_sub(rss_before) as f64 / 1e6 / gb,
    );

    let me = &tenants[0];
    let default = Policy::default();
    let redact_all = Policy {
        actions: DetectorActions::all(Action::Redact),
        ..Policy::default()
    };
    // The scanning tenant's own stored text: every fingerprint hits the map.
    let own = tenant_text(&vocab, 1000, 64 * 1024);
    // Another tenant's text: a leak in every window.
    let leak = tenant_text(&vocab, 1001, 64 * 1024);
    assert_eq!(guard.scan(me, &leak, &default).verdict, Verdict::Blocked);
    assert!(guard.scan(me, &own, &default).findings.is_empty());
    let found_64k = guard.scan(me, &input_64k, &default).findings.len();

    println!();
    println!(
        "{:<52} {:>8} {:>10}",
        "scan (one thread, all detectors on)", "size", "MB/s/core"
    );
    let rows: Vec<(&str, &str, &Policy)> = vec![
        ("response prose + PII, default policy", &input_1k, &default),
        ("response prose + PII, default policy", &input_64k, &default),
        (
            "response prose + PII, every detector redacts",
            &input_1k,
            &redact_all,
        ),
        (
            "response prose + PII, every detector redacts",
            &input_64k,
            &redact_all,
        ),
        (
            "the tenant's own stored text (all map hits)",
            &own,
            &default,
        ),
        (
            "another tenant's stored text (leak, blocked)",
            &leak,
            &default,
        ),
    ];
    for (name, input, policy) in rows {
        let rate = throughput(input.len(), || {
            std::hint::black_box(guard.scan(me, input, policy));
        });
        println!("{name:<52} {:>7}B {:>10.0}", input.len(), rate);
    }
    for chunk in [16usize, 256] {
        let rate = throughput(input_64k.len(), || {
            let mut s = guard.stream(me, &default);
            for c in input_64k.as_bytes().chunks(chunk) {
                // The input is ASCII, so byte chunks are valid UTF-8.
                std::hint::black_box(s.push(std::str::from_utf8(c).expect("ascii")));
            }
            std::hint::black_box(s.finish());
        });
        println!(
            "{:<52} {:>7}B {:>10.0}",
            format!("stream, {chunk}-byte chunks, default policy"),
            input_64k.len(),
            rate
        );
    }
    if let Ok(which) = std::env::var("BENCH_GUARD_PERF") {
        // For profilers: scan the 64 KB input for a few seconds and stop.
        // BENCH_GUARD_PERF=all|canary|cross_tenant|card|high_entropy
        let mut policy = if which == "all" {
            default.clone()
        } else {
            Policy {
                actions: DetectorActions::all(Action::Off),
                ..Policy::default()
            }
        };
        match which.as_str() {
            "canary" => policy.actions.canary = Action::Allow,
            "cross_tenant" => policy.actions.cross_tenant = Action::Allow,
            "card" => policy.actions.card = Action::Allow,
            "high_entropy" => policy.actions.high_entropy = Action::Allow,
            _ => {}
        }
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(5) {
            std::hint::black_box(guard.scan(me, &input_64k, &policy));
            n += 1;
        }
        println!("perf: {n} scans of {} bytes", input_64k.len());
        return;
    }
    if std::env::var("BENCH_GUARD_SCALING").is_ok() {
        let repeated = input_1k.repeat(66);
        let rate = throughput(repeated.len(), || {
            std::hint::black_box(guard.scan(me, &repeated, &default));
        });
        println!(
            "{:<52} {:>7}B {:>10.0}",
            "bench_1k.txt repeated, default policy",
            repeated.len(),
            rate
        );
        for n in [1024usize, 4096, 16384, 65000] {
            let mut cut = n.min(input_64k.len());
            while !input_64k.is_char_boundary(cut) {
                cut -= 1;
            }
            let t = &input_64k[..cut];
            let rate = throughput(t.len(), || {
                std::hint::black_box(guard.scan(me, t, &default));
            });
            println!(
                "{:<52} {:>7}B {:>10.0}",
                "prefix of bench_64k.txt, default policy",
                t.len(),
                rate
            );
        }
    }
    // One detector family at a time, to see where the time goes.
    let only = |on: &[&str]| {
        let mut p = Policy {
            actions: DetectorActions::all(Action::Off),
            ..Policy::default()
        };
        for d in on {
            let a = match *d {
                "canary" => &mut p.actions.canary,
                "cross_tenant" => &mut p.actions.cross_tenant,
                "high_entropy" => &mut p.actions.high_entropy,
                _ => &mut p.actions.card,
            };
            *a = Action::Allow;
        }
        p
    };
    for (name, policy) in [
        (
            "  only canaries (Aho-Corasick, 10,000 tokens)",
            only(&["canary"]),
        ),
        (
            "  only cross-tenant (winnowing + map lookups)",
            only(&["cross_tenant"]),
        ),
        (
            "  only the candidate automaton (card family on)",
            only(&["card"]),
        ),
        ("  only high-entropy runs", only(&["high_entropy"])),
    ] {
        for input in [&input_1k, &input_64k] {
            let rate = throughput(input.len(), || {
                std::hint::black_box(guard.scan(me, input, &policy));
            });
            println!("{name:<52} {:>7}B {:>10.0}", input.len(), rate);
        }
    }
    let inj = InjectionPolicy::retrieved_default();
    for input in [&input_1k, &input_64k] {
        let rate = throughput(input.len(), || {
            std::hint::black_box(bulkhead_guard::screen(input, &inj));
        });
        println!(
            "{:<52} {:>7}B {:>10.0}",
            "injection screen (retrieved policy)",
            input.len(),
            rate
        );
    }
    println!("\n(findings in bench_64k.txt under the default policy: {found_64k})");
}
