//! Seal+open throughput of the candidate record constructions, side by side with raw
//! AES-256-GCM from aws-lc-rs in the same run (the limit we measure our overhead
//! against). Rounds are interleaved so that machine noise hits every candidate alike;
//! the figure reported is the median round.
//!
//! Run: `cargo bench -p bulkhead-crypto --bench seal`

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, AES_256_GCM_SIV, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use bulkhead_crypto::{SecretKey, Xaes256Gcm, random_array};

const AAD: &[u8] = b"bulkhead.v1|tn_0123456789abcdef01234567|document|doc-42|1";
const ROUNDS: usize = 15;
const ROUND_TIME: Duration = Duration::from_millis(120);

type Op = Box<dyn Fn(&mut Vec<u8>)>;
type Candidate = (&'static str, Op);

fn raw_gcm() -> Op {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("32-byte key"));
    let counter = std::cell::Cell::new(0u64);
    Box::new(move |buf: &mut Vec<u8>| {
        let n = counter.get() + 1;
        counter.set(n);
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), buf)
            .expect("seal");
        buf.extend_from_slice(tag.as_ref());
        let len = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), buf)
            .expect("open")
            .len();
        buf.truncate(len);
    })
}

fn gcm_siv() -> Op {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, &[7u8; 32]).expect("32-byte key"));
    Box::new(move |buf: &mut Vec<u8>| {
        let nonce: [u8; 12] = random_array().expect("rng");
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), buf)
            .expect("seal");
        buf.extend_from_slice(tag.as_ref());
        let len = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), buf)
            .expect("open")
            .len();
        buf.truncate(len);
    })
}

fn hkdf_gcm() -> Op {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"bulkhead").extract(&[7u8; 32]);
    let derive = move |salt: &[u8; 32]| {
        let info = [salt.as_slice()];
        let okm = prk.expand(&info, &AES_256_GCM).expect("expand");
        LessSafeKey::new(UnboundKey::from(okm))
    };
    Box::new(move |buf: &mut Vec<u8>| {
        let salt: [u8; 32] = random_array().expect("rng");
        let key = derive(&salt);
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(AAD), buf)
            .expect("seal");
        buf.extend_from_slice(tag.as_ref());
        let key = derive(&salt);
        let len = key
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(AAD), buf)
            .expect("open")
            .len();
        buf.truncate(len);
    })
}

fn xaes_in_place() -> Op {
    let key = Xaes256Gcm::new(&SecretKey::from_slice(&[7u8; 32]).expect("32 bytes")).expect("key");
    Box::new(move |buf: &mut Vec<u8>| {
        // Same buffer handling as the raw row: seal and open in one reused buffer.
        key.seal_in_place(AAD, buf).expect("seal");
        let len = key.open_slice_in_place(AAD, buf).expect("open").len();
        buf.truncate(len);
    })
}

fn xaes() -> Op {
    let key = Xaes256Gcm::new(&SecretKey::from_slice(&[7u8; 32]).expect("32 bytes")).expect("key");
    Box::new(move |buf: &mut Vec<u8>| {
        // The store path: a freshly serialized plaintext buffer is sealed where it
        // lies, the row's bytes are opened where they lie, and the plaintext is wiped
        // on drop. The allocation and fill of the fresh buffer are counted against us.
        let mut owned = Vec::with_capacity(buf.len() + bulkhead_crypto::OVERHEAD_BYTES);
        owned.resize(buf.len(), 0x5a);
        key.seal_in_place(AAD, &mut owned).expect("seal");
        let opened = key.open_in_place(AAD, owned).expect("open");
        black_box(&opened);
    })
}

fn main() {
    let candidates: Vec<Candidate> = vec![
        ("raw AES-256-GCM (aws-lc-rs, counter nonce)", raw_gcm()),
        ("XAES-256-GCM in place (chosen)", xaes_in_place()),
        ("XAES-256-GCM store path: fresh buffer, wiped", xaes()),
        ("AES-256-GCM-SIV (aws-lc-rs)", gcm_siv()),
        ("HKDF-SHA256 per-record key + AES-256-GCM", hkdf_gcm()),
    ];
    println!("seal+open, one core, median of {ROUNDS} interleaved rounds of {ROUND_TIME:?}");
    for size in [1024usize, 64 * 1024, 256 * 1024] {
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
        for _ in 0..ROUNDS {
            for (i, (_, run)) in candidates.iter().enumerate() {
                let mut buf = vec![0x5au8; size];
                let start = Instant::now();
                let mut iterations = 0u64;
                while start.elapsed() < ROUND_TIME {
                    for _ in 0..16 {
                        buf.truncate(size);
                        run(&mut buf);
                    }
                    iterations += 16;
                }
                let secs = start.elapsed().as_secs_f64();
                results[i].push(secs / iterations as f64);
            }
        }
        let medians: Vec<f64> = results
            .iter_mut()
            .map(|r| {
                r.sort_by(f64::total_cmp);
                r[r.len() / 2]
            })
            .collect();
        println!("\n{} bytes per record", size);
        println!(
            "{:<46} {:>12} {:>12} {:>10}",
            "construction", "ns/op", "GiB/s", "× raw"
        );
        for (i, (name, _)) in candidates.iter().enumerate() {
            let ns = medians[i] * 1e9;
            // Each op seals and opens, so it moves the record twice.
            let gib_s = (2 * size) as f64 / medians[i] / (1u64 << 30) as f64;
            println!(
                "{:<46} {:>12.0} {:>12.2} {:>10.2}",
                name,
                ns,
                gib_s,
                medians[i] / medians[0]
            );
        }
    }
}
