//! Keyed winnowing fingerprints (Schleimer, Wilkerson, Aiken, SIGMOD 2003).
//!
//! Text is normalized (ASCII letters lowercased, ASCII punctuation and whitespace
//! dropped, other bytes kept), every k-gram of the normalized bytes gets a rolling
//! hash, and in every window of `W` consecutive k-grams the minimum hash is
//! selected (the rightmost on ties, recorded once while it stays the minimum).
//! Any run shared by two texts whose normalized form is at least
//! `GUARANTEE_BYTES` = W + K − 1 bytes long yields at least one common
//! fingerprint, and a run of n·W + K − 1 bytes at least n.
//!
//! Keying: the rolling hash is a cyclic-polynomial ("buzhash") hash over a table of
//! 256 random 64-bit words derived from the server's fingerprint key, and each
//! *selected* hash is passed through SipHash-2-4 under a 128-bit key from the same
//! secret before it is stored or looked up. The index therefore holds
//! pseudo-random values that reveal nothing about content to anyone without the
//! key (no dictionary attack on stored fingerprints), while the keyed function
//! runs on ~3% of positions only: the per-byte work is a rotate and two xors
//! (a multiply-based Rabin-Karp hash puts a multiply on the per-byte critical
//! path). The rolling hash only chooses which k-grams are kept and
//! feeds the PRF; a rare collision makes one spurious equal fingerprint, and a
//! leak needs several. The winnower is a state machine over bytes, so a stream
//! fed in chunks selects exactly what the whole text selects.

use std::hash::Hasher;
use std::sync::Arc;

use siphasher::sip::SipHasher24;

/// k-gram length, in normalized bytes.
pub const K: usize = 32;
/// Window length, in k-grams.
pub const W: usize = 64;
/// Shortest shared run (normalized bytes) guaranteed to share a fingerprint.
pub const GUARANTEE_BYTES: usize = W + K - 1;
/// A run of more dropped bytes than this (whitespace, punctuation) starts a new
/// segment: no k-gram spans it. This bounds how many original bytes a k-gram can
/// cover, and so the streaming hold-back.
pub const SEPARATOR_RUN_MAX: usize = 32;

const RING: usize = 128;
const _: () = assert!(RING >= W + K && RING.is_power_of_two());
const _: () = assert!(K <= 64);

const fn norm_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_uppercase() {
            c.to_ascii_lowercase()
        } else if c.is_ascii_alphanumeric() || c >= 0x80 {
            c
        } else {
            0
        };
        b += 1;
    }
    t
}

static NORM: [u8; 256] = norm_table();

/// The keys of the fingerprint function, derived from the 32-byte fingerprint key.
#[derive(Clone)]
pub(crate) struct FingerprintKeys {
    sip: (u64, u64),
    /// Per-byte random words, and the same rotated by K (to remove the byte
    /// leaving the k-gram).
    table: Arc<[[u64; 256]; 2]>,
    /// Key of the per-document digest that checks a delete passes the same text.
    pub(crate) digest: (u64, u64),
    /// Key of salient tokens, phrases and sketch samples (`evidence`).
    pub(crate) token: (u64, u64),
    /// Which words begin a protected phrase or are a protected sketch sample: a
    /// prefilter shared by every clone of these keys (one guard), so an answer
    /// looks up only the words that may be evidence.
    pub(crate) words: Arc<WordFilter>,
}

/// A bit per keyed word hash (2^24 bits, 2 MiB): set for every word that starts a
/// protected phrase or is a protected sketch sample, tested before an answer's
/// word is hashed with SipHash and looked up. Bits are never cleared (a stale bit
/// costs one lookup, never a wrong verdict), so it only ever says "maybe".
pub(crate) struct WordFilter {
    bits: Vec<std::sync::atomic::AtomicU64>,
}

const WORD_FILTER_BITS: u32 = 24;

impl WordFilter {
    fn new() -> Self {
        Self {
            bits: (0..(1usize << WORD_FILTER_BITS) / 64)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    fn slot(h: u64) -> (usize, u64) {
        let i = (h >> (64 - WORD_FILTER_BITS)) as usize;
        (i / 64, 1u64 << (i % 64))
    }

    pub(crate) fn set(&self, h: u64) {
        let (w, m) = Self::slot(h);
        self.bits[w].fetch_or(m, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn test(&self, h: u64) -> bool {
        let (w, m) = Self::slot(h);
        self.bits[w].load(std::sync::atomic::Ordering::Relaxed) & m != 0
    }
}

impl std::fmt::Debug for FingerprintKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKeys(..)")
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl FingerprintKeys {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let sip = (le64(&key[0..8]), le64(&key[8..16]));
        let aux = (le64(&key[16..24]), le64(&key[24..32]));
        let derive = |label: &[u8], i: u64| {
            let mut h = SipHasher24::new_with_keys(aux.0, aux.1);
            h.write(label);
            h.write_u64(i);
            h.finish()
        };
        let mut table = [[0u64; 256]; 2];
        for c in 0..256u64 {
            let t = derive(b"bulkhead/guard/buzhash", c);
            table[0][c as usize] = t;
            table[1][c as usize] = t.rotate_left(K as u32);
        }
        let digest = (
            derive(b"bulkhead/guard/doc-digest", 0),
            derive(b"bulkhead/guard/doc-digest", 1),
        );
        let token = (
            derive(b"bulkhead/guard/token", 0),
            derive(b"bulkhead/guard/token", 1),
        );
        Self {
            sip,
            table: Arc::new(table),
            digest,
            token,
            words: Arc::new(WordFilter::new()),
        }
    }

    /// A fast keyed hash of a word (the secret per-byte table, then a mix): picks
    /// sketch samples and addresses the word filter. Never stored.
    #[inline]
    pub(crate) fn word_hash(&self, w: &[u8]) -> u64 {
        let t = &self.table[0];
        let mut h = self.sip.1 ^ (w.len() as u64);
        for &b in w {
            h = h.rotate_left(7) ^ t[b as usize];
        }
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 32)
    }

    #[inline]
    fn keyed(&self, rolling: u64) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.sip.0, self.sip.1);
        h.write_u64(rolling);
        h.finish()
    }
}

/// One selected fingerprint: the keyed value and the original byte span of its
/// k-gram (start inclusive, end exclusive; may cut a multi-byte character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) value: u64,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The streaming winnower.
#[derive(Clone)]
pub(crate) struct Winnower {
    keys: FingerprintKeys,
    kbuf: [u8; K],
    hashes: [u64; W],
    orig: [usize; RING],
    nidx: usize,
    seg_start: usize,
    rolling: u64,
    min_k: usize,
    sep_run: usize,
}

impl std::fmt::Debug for Winnower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Winnower")
            .field("nidx", &self.nidx)
            .finish_non_exhaustive()
    }
}

impl Winnower {
    pub(crate) fn new(keys: FingerprintKeys) -> Self {
        Self {
            keys,
            kbuf: [0; K],
            hashes: [0; W],
            orig: [0; RING],
            nidx: 0,
            seg_start: 0,
            rolling: 0,
            min_k: 0,
            sep_run: 0,
        }
    }

    #[inline]
    fn record(&self, j: usize, sink: &mut impl FnMut(Fingerprint)) {
        let first = self.seg_start + j;
        sink(Fingerprint {
            value: self.keys.keyed(self.hashes[j % W]),
            start: self.orig[first % RING],
            end: self.orig[(first + K - 1) % RING] + 1,
        });
    }

    fn rightmost_min(&self, from: usize, to: usize) -> usize {
        let mut best = to;
        let mut v = self.hashes[to % W];
        let mut j = to;
        while j > from {
            j -= 1;
            let h = self.hashes[j % W];
            if h < v {
                v = h;
                best = j;
            }
        }
        best
    }

    /// Feeds `bytes`, whose first byte is at original offset `offset`.
    pub(crate) fn feed(&mut self, bytes: &[u8], offset: usize, mut sink: impl FnMut(Fingerprint)) {
        // The hot state lives in locals so it stays in registers; it is written
        // back before every (rare) recording and at the end.
        let table = Arc::clone(&self.keys.table);
        let [t_in, t_out] = &*table;
        let mut nidx = self.nidx;
        let mut seg_start = self.seg_start;
        let mut rolling = self.rolling;
        let mut min_k = self.min_k;
        let mut sep_run = self.sep_run;
        for (i, &b) in bytes.iter().enumerate() {
            let nb = NORM[b as usize];
            if nb == 0 {
                sep_run += 1;
                if sep_run == SEPARATOR_RUN_MAX + 1 {
                    seg_start = nidx;
                    rolling = 0;
                }
                continue;
            }
            sep_run = 0;
            self.orig[nidx % RING] = offset + i;
            nidx += 1;
            let seg_len = nidx - seg_start;
            let slot = (seg_len - 1) % K;
            let out = self.kbuf[slot];
            self.kbuf[slot] = nb;
            // Buzhash: h = rotl(h, 1) ^ T[in] ^ rotl(T[out], K) once K bytes
            // are in (the leaving byte's word has rotated K times by then).
            let leave = if seg_len > K { t_out[out as usize] } else { 0 };
            rolling = rolling.rotate_left(1) ^ t_in[nb as usize] ^ leave;
            if seg_len < K {
                continue;
            }
            let r = seg_len - K;
            self.hashes[r % W] = rolling;
            let selected = if r + 1 < W {
                continue;
            } else if r + 1 == W {
                self.seg_start = seg_start;
                self.rightmost_min(0, r)
            } else if min_k + W <= r {
                self.seg_start = seg_start;
                self.rightmost_min(r + 1 - W, r)
            } else if rolling <= self.hashes[min_k % W] {
                r
            } else {
                continue;
            };
            min_k = selected;
            self.seg_start = seg_start;
            self.record(selected, &mut sink);
        }
        self.nidx = nidx;
        self.seg_start = seg_start;
        self.rolling = rolling;
        self.min_k = min_k;
        self.sep_run = sep_run;
    }
}

/// All distinct fingerprints of a text, sorted.
#[cfg(test)]
pub(crate) fn fingerprint_set(keys: &FingerprintKeys, text: &str) -> Vec<u64> {
    let mut w = Winnower::new(keys.clone());
    let mut out = Vec::with_capacity(text.len() / (W / 2) + 1);
    w.feed(text.as_bytes(), 0, |fp| out.push(fp.value));
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> FingerprintKeys {
        FingerprintKeys::new(&[7u8; 32])
    }

    fn prose(seed: u64, words: usize) -> String {
        const V: [&str; 16] = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
        ];
        let mut x = seed | 1;
        let mut s = String::new();
        for _ in 0..words {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(V[(x % 16) as usize]);
            s.push(' ');
        }
        s
    }

    #[test]
    fn shared_runs_of_the_guaranteed_length_share_a_fingerprint() {
        for seed in 1..40u64 {
            let a = prose(seed, 200);
            let b = prose(seed + 1000, 200);
            // Take a run from `a` whose normalized length is exactly the guarantee.
            let mut start = (seed as usize * 37) % 400;
            while !a.is_char_boundary(start) {
                start += 1;
            }
            let mut end = start;
            let mut n = 0;
            while n < GUARANTEE_BYTES {
                if NORM[a.as_bytes()[end] as usize] != 0 {
                    n += 1;
                }
                end += 1;
            }
            let shared = &a[start..end];
            let c = format!("{}{}{}", &b[..100], shared, &b[100..300]);
            let fa = fingerprint_set(&keys(), &a);
            let fc = fingerprint_set(&keys(), &c);
            assert!(
                fc.iter().any(|f| fa.binary_search(f).is_ok()),
                "seed {seed}: a shared run of {GUARANTEE_BYTES} normalized bytes had no common fingerprint"
            );
        }
    }

    #[test]
    fn normalization_ignores_case_spacing_and_punctuation() {
        let a = prose(3, 100);
        let b = a.to_uppercase().replace(' ', ",\n  ");
        assert_eq!(fingerprint_set(&keys(), &a), fingerprint_set(&keys(), &b));
    }

    #[test]
    fn keys_change_every_value() {
        let a = prose(5, 100);
        let f1 = fingerprint_set(&keys(), &a);
        let f2 = fingerprint_set(&FingerprintKeys::new(&[8u8; 32]), &a);
        assert!(!f1.is_empty());
        assert!(f1.iter().all(|f| f2.binary_search(f).is_err()));
    }

    #[test]
    fn chunked_feeding_selects_the_same() {
        let a = prose(9, 300);
        let mut whole = Vec::new();
        Winnower::new(keys()).feed(a.as_bytes(), 0, |f| whole.push(f));
        let mut w = Winnower::new(keys());
        let mut parts = Vec::new();
        let mut off = 0;
        for chunk in a.as_bytes().chunks(7) {
            w.feed(chunk, off, |f| parts.push(f));
            off += chunk.len();
        }
        assert_eq!(whole, parts);
    }

    #[test]
    fn density_is_about_two_over_w_plus_one() {
        let a = prose(11, 20_000);
        let mut n = 0usize;
        let mut norm = 0usize;
        for &b in a.as_bytes() {
            if NORM[b as usize] != 0 {
                norm += 1;
            }
        }
        Winnower::new(keys()).feed(a.as_bytes(), 0, |_| n += 1);
        let density = n as f64 / norm as f64;
        let expect = 2.0 / (W as f64 + 1.0);
        assert!(
            (density / expect - 1.0).abs() < 0.15,
            "density {density} vs {expect}"
        );
    }
}
