//! Deterministic synthetic corpus for the retrieval benchmarks: Zipf-distributed
//! pseudo-words (unique syllable strings), chunks of about 120 words (~800
//! characters, the chunker's default target), and queries of 2–4 words taken from
//! one chunk so every query has at least one true match. Shared by the `search`
//! bench and the tantivy probe under `bench/retrieval/` so both see the same text.

#![allow(dead_code)]

/// splitmix64: small, fast, and fully specified, so corpora are identical
/// everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const ONSETS: [&str; 16] = [
    "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "st",
];
const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];

/// The word of rank `r`: its digits in base 96 spelled as syllables, so every
/// rank has its own word.
pub fn word(mut r: usize) -> String {
    let mut out = String::new();
    loop {
        let s = r % 96;
        out.push_str(ONSETS[s % 16]);
        out.push_str(VOWELS[s / 16]);
        r /= 96;
        if r == 0 {
            break;
        }
    }
    if out.len() < 4 {
        out.push('n');
    }
    out
}

/// A Zipf(1.0) vocabulary of `size` words with its cumulative distribution.
#[derive(Debug)]
pub struct Vocabulary {
    pub words: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    pub fn new(size: usize) -> Self {
        let words = (0..size).map(word).collect();
        let mut cdf = Vec::with_capacity(size);
        let mut total = 0.0;
        for r in 0..size {
            total += 1.0 / (r as f64 + 1.0);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { words, cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let i = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.words.len() - 1);
        &self.words[i]
    }
}

/// One chunk of about `words` words in sentences of 8–20 words.
pub fn chunk_text(vocab: &Vocabulary, rng: &mut Rng, words: usize) -> String {
    let mut out = String::with_capacity(words * 7);
    let mut in_sentence = 0;
    let mut sentence_len = 8 + rng.below(13);
    for _ in 0..words {
        if in_sentence > 0 {
            out.push(' ');
        }
        out.push_str(vocab.sample(rng));
        in_sentence += 1;
        if in_sentence == sentence_len {
            out.push_str(". ");
            in_sentence = 0;
            sentence_len = 8 + rng.below(13);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// `n` chunks of about 120 words from a 50,000-word vocabulary.
pub fn chunks(seed: u64, n: usize, words: usize) -> (Vocabulary, Vec<String>) {
    let vocab = Vocabulary::new(50_000);
    let mut rng = Rng::new(seed);
    let texts = (0..n)
        .map(|_| chunk_text(&vocab, &mut rng, words))
        .collect();
    (vocab, texts)
}

/// Queries of 2–4 words, each taken from one random chunk.
pub fn queries(seed: u64, texts: &[String], n: usize) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x5151);
    (0..n)
        .map(|_| {
            let text = &texts[rng.below(texts.len())];
            let words: Vec<&str> = text
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect();
            let k = 2 + rng.below(3);
            (0..k)
                .map(|_| words[rng.below(words.len())])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}
