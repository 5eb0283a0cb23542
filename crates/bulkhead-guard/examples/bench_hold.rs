//! What the streaming hold-back costs a client: for a prose answer streamed in
//! token-sized pieces, how many bytes had arrived when the first byte was
//! released (added latency to first byte = that / the model's byte rate), the most
//! held at once, and the scanner's CPU per piece and for the final piece (added
//! latency to last byte). Uses only the API every guard version has, so
//! `bench/guard/compare.sh` runs the same file against the previous guard.
//!
//! Run: `cargo run --release -p bulkhead-guard --example bench_hold`.

use std::time::Instant;

use bulkhead_guard::{Guard, GuardLimits, Policy};
use bulkhead_types::{DocumentId, TenantId};

fn prose(seed: u64, bytes: usize) -> String {
    const W: &[&str] = &[
        "the",
        "quarterly",
        "report",
        "shows",
        "that",
        "revenue",
        "grew",
        "across",
        "regions",
        "while",
        "costs",
        "remained",
        "stable",
        "and",
        "our",
        "team",
        "expects",
        "further",
        "growth",
        "next",
        "year",
        "customers",
        "renewed",
        "contracts",
        "at",
        "higher",
        "rates",
    ];
    let mut x = seed;
    let mut s = String::new();
    while s.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(W[(x % W.len() as u64) as usize]);
        s.push_str(if x.is_multiple_of(11) { ". " } else { " " });
    }
    s
}

fn main() {
    let guard = Guard::new([4u8; 32], GuardLimits::default());
    let tenants: Vec<TenantId> = (1..=20u8).map(|i| TenantId::from_random([i; 12])).collect();
    for (i, t) in tenants.iter().enumerate() {
        guard
            .index_document(
                t,
                &DocumentId::parse("d").expect("id"),
                &prose(1000 + i as u64, 20_000),
            )
            .expect("index");
        guard.seed_canary(t).expect("canary");
    }
    let me = &tenants[0];
    let policy = Policy::default();
    const PIECE: usize = 4; // about one token
    const RATE_BYTES_PER_S: f64 = 400.0; // ~100 tokens/s
    let (mut first_sum, mut held_max, mut push_ns, mut pushes, mut final_ns) =
        (0usize, 0usize, 0u128, 0u64, 0u128);
    let runs = 200;
    for r in 0..runs {
        let answer = prose(5_000 + r, 4096);
        let mut s = guard.stream(me, &policy);
        let mut first = None;
        let mut received = 0;
        for piece in answer.as_bytes().chunks(PIECE) {
            let piece = std::str::from_utf8(piece).expect("ascii");
            received += piece.len();
            let t = Instant::now();
            let out = s.push(piece);
            push_ns += t.elapsed().as_nanos();
            pushes += 1;
            if first.is_none() && !out.release.is_empty() {
                first = Some(received);
            }
            held_max = held_max.max(s.held_bytes());
        }
        let t = Instant::now();
        let out = s.finish();
        final_ns += t.elapsed().as_nanos();
        assert!(!out.blocked);
        first_sum += first.unwrap_or(received);
    }
    let first = first_sum as f64 / runs as f64;
    println!(
        "stream of a 4 KiB prose answer in {PIECE}-byte pieces, {runs} runs, 20 tenants indexed"
    );
    println!(
        "  bytes received before the first byte was released: {first:.0} (at {RATE_BYTES_PER_S} B/s: +{:.0} ms to first byte)",
        first / RATE_BYTES_PER_S * 1000.0
    );
    println!("  most bytes held at once: {held_max}");
    println!(
        "  scanner CPU per piece: {:.1} us; final piece (added to last byte): {:.1} us",
        push_ns as f64 / pushes as f64 / 1000.0,
        final_ns as f64 / runs as f64 / 1000.0
    );
}
