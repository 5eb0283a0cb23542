//! The fuzz targets' bodies, one module per target. `fuzz_targets/<name>.rs` only
//! hands libFuzzer's input to `<name>::run`; keeping the logic here lets every
//! target share the input helpers below.
//!
//! Every `run` must never panic on any input except when a property of the code
//! under test is broken: a panic is a finding.

pub mod chat_request;
pub mod checkpoint;
pub mod chunker;
pub mod guard_stream;
pub mod http_bodies;
pub mod sse_reader;

#[cfg(test)]
mod seeds;

/// Reads the fuzz input front to back; past the end every read gives zeros, so a
/// short input is still a valid (if dull) case.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_be_bytes(b)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn hash(&mut self) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[..]
            .iter_mut()
            .zip(self.bytes(32))
            .for_each(|(d, s)| *d = *s);
        h
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Cut points of a text of `len` bytes at the given fractions of `u16::MAX`,
/// sorted, deduplicated, with 0 and `len`, moved down to `is_boundary`.
pub fn cut_points(len: usize, cuts: &[u16], is_boundary: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut i = len * usize::from(c) / usize::from(u16::MAX);
            while !is_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    at.push(0);
    at.push(len);
    at.sort_unstable();
    at.dedup();
    at
}
