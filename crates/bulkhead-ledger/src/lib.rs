//! Append-only Merkle logs as RFC 6962 / RFC 9162 define them, and everything needed
//! to prove things about them to someone who trusts nothing but a public key.
//!
//! - [`leaf_hash`] / [`node_hash`]: SHA-256 with the 0x00 / 0x01 domain prefixes.
//! - [`proof`]: which stored nodes an inclusion or consistency proof needs (so a
//!   store can fetch them in one go), and the verifiers.
//! - [`tiles`]: how interior hashes are stored, in tiles of eight levels, and the
//!   right edge that appends in O(log n) without ever recomputing the tree.
//! - [`note`] and [`checkpoint`]: C2SP signed notes (Ed25519) and tlog checkpoints.
//! - [`event`]: the audit event and its canonical encoding, the bytes a leaf hashes.
//!
//! Must never: know what a document, a tenant key or an HTTP request is. It is the
//! part an auditor's verifier shares with the server, and it stays small for that.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod checkpoint;
pub mod event;
pub mod note;
pub mod proof;
pub mod tiles;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    sha256_parts(&[])
}

/// The hash of a leaf: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256_parts(&[&[0x00], data])
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256_parts(&[&buf])
}

fn sha256_parts(parts: &[&[u8]]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Plain SHA-256, for content hashes in events and key ids in notes.
pub fn sha256(data: &[u8]) -> Hash {
    sha256_parts(&[data])
}

/// Base64 (standard alphabet, padded), the encoding checkpoints and proofs use.
pub fn b64(hash: &[u8]) -> String {
    STANDARD.encode(hash)
}

/// Parses a base64 hash; `None` unless it decodes to exactly 32 bytes.
pub fn hash_from_b64(text: &str) -> Option<Hash> {
    let bytes = STANDARD.decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Lowercase hex, for content hashes (`sha256:<hex>`) and record ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The root of a list of leaf hashes, computed from scratch (RFC 9162 §2.1.1).
/// For verifiers that hold every entry and for tests; the server never does this.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// Computes roots of every prefix incrementally, in O(n) hashing and O(log n)
/// memory: the compact range of RFC 9162 §2.1.
#[derive(Debug, Clone, Default)]
pub struct CompactRange {
    size: u64,
    /// Roots of the perfect subtrees covering [0, size), largest (leftmost) first.
    stack: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.stack.pop().expect("a set bit has a subtree");
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.stack.push(hash);
        self.size += 1;
    }

    /// The root of the tree of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The largest power of two strictly below `n` (n ≥ 2).
pub(crate) fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_range_matches_the_recursive_definition() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        for (i, leaf) in leaves.iter().enumerate() {
            range.push(*leaf);
            assert_eq!(range.root(), root_of(&leaves[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn powers_of_two() {
        assert_eq!(largest_power_of_two_below(2), 1);
        assert_eq!(largest_power_of_two_below(3), 2);
        assert_eq!(largest_power_of_two_below(8), 4);
        assert_eq!(largest_power_of_two_below(9), 8);
    }
}
