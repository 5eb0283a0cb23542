//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4).
//!
//! Generation is split in two so a store can answer from stored interior hashes
//! without reading leaves: [`inclusion_plan`] / [`consistency_plan`] say which
//! perfect subtrees (stored nodes) each proof element is made of, the store fetches
//! those nodes in one go, and [`ProofPlan::resolve`] folds them into the proof. A
//! proof element is either one stored node or, at the right edge of a tree whose
//! size is not a power of two, the fold of a few of them — at most one such element
//! per proof, so a proof costs O(log n) node reads.
//!
//! Verification follows the algorithm of transparency-dev/merkle, which the test
//! vectors in `shared/testdata/merkle-vectors` come from.

use crate::{Hash, largest_power_of_two_below, node_hash};

/// A perfect subtree: the node at `level` (0 = leaves) covering leaves
/// `[index << level, (index + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("index {index} is not below size {size}")]
    IndexBeyondSize { index: u64, size: u64 },
    #[error("size {old} is larger than size {new}")]
    SizesReversed { old: u64, new: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    FromEmptyTree,
    #[error("the proof has {got} hashes where {want} were expected")]
    WrongLength { got: usize, want: usize },
    #[error("the proof is not empty although the sizes are equal")]
    NotEmpty,
    #[error("the leaf hash is {0} bytes, not 32")]
    BadLeafHash(usize),
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("the first root does not match the proof")]
    OldRootMismatch,
    #[error("the second root does not match the proof")]
    NewRootMismatch,
    #[error("a node the proof needs is missing from storage: level {level}, index {index}")]
    MissingNode { level: u8, index: u64 },
}

/// Which nodes make up each element of a proof, bottom-up (nearest the leaf first).
/// Each element lists perfect subtrees left to right; a multi-node element is folded
/// from the right: `H(a, H(b, c))`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProofPlan {
    pub elements: Vec<Vec<NodeId>>,
}

impl ProofPlan {
    /// Every node the proof reads, in order, possibly repeated.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.elements.iter().flatten().copied()
    }

    /// Builds the proof from node hashes looked up by `get`.
    pub fn resolve(
        &self,
        mut get: impl FnMut(NodeId) -> Option<Hash>,
    ) -> Result<Vec<Hash>, ProofError> {
        let mut lookup = |id: NodeId| {
            get(id).ok_or(ProofError::MissingNode {
                level: id.level,
                index: id.index,
            })
        };
        self.elements
            .iter()
            .map(|element| fold_right(element, &mut lookup))
            .collect()
    }
}

fn fold_right(
    nodes: &[NodeId],
    get: &mut impl FnMut(NodeId) -> Result<Hash, ProofError>,
) -> Result<Hash, ProofError> {
    let (last, rest) = nodes
        .split_last()
        .expect("a proof element covers at least one leaf");
    let mut acc = get(*last)?;
    for id in rest.iter().rev() {
        acc = node_hash(&get(*id)?, &acc);
    }
    Ok(acc)
}

/// The perfect subtrees covering `[begin, end)`, left to right, where `begin` is a
/// multiple of a power of two at least `end - begin` (always so inside a proof).
pub fn range_nodes(begin: u64, end: u64) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut at = begin;
    while at < end {
        let level = 63 - (end - at).leading_zeros();
        // `at` is aligned to at least this size by the precondition; keep the check
        // so a misuse shows as a smaller node, never a wrong one.
        let level = level.min(at.trailing_zeros());
        nodes.push(NodeId::new(level as u8, at >> level));
        at += 1 << level;
    }
    nodes
}

/// The perfect subtrees whose roots make up the tree of `size` leaves, left to
/// right; the root is their right fold.
pub fn root_plan(size: u64) -> Vec<NodeId> {
    range_nodes(0, size)
}

/// Folds node hashes of `root_plan(size)` into the root.
pub fn root_from_nodes(
    size: u64,
    get: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(crate::empty_root());
    }
    let plan = ProofPlan {
        elements: vec![root_plan(size)],
    };
    Ok(plan.resolve(get)?[0])
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 PATH).
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let (mut lo, mut hi) = (0u64, size);
    let mut elements = Vec::new();
    while hi - lo > 1 {
        let k = largest_power_of_two_below(hi - lo);
        if index - lo < k {
            elements.push(range_nodes(lo + k, hi));
            hi = lo + k;
        } else {
            elements.push(range_nodes(lo, lo + k));
            lo += k;
        }
    }
    elements.reverse();
    Ok(ProofPlan { elements })
}

/// The consistency proof from the tree of `old` leaves to that of `new` (RFC 9162
/// SUBPROOF). Empty when the sizes are equal.
pub fn consistency_plan(old: u64, new: u64) -> Result<ProofPlan, ProofError> {
    if old > new {
        return Err(ProofError::SizesReversed { old, new });
    }
    if old == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    let (mut lo, mut hi, mut m) = (0u64, new, old);
    let mut complete = true;
    let mut elements = Vec::new();
    loop {
        if m == hi - lo {
            if !complete {
                elements.push(range_nodes(lo, hi));
            }
            break;
        }
        let k = largest_power_of_two_below(hi - lo);
        if m <= k {
            elements.push(range_nodes(lo + k, hi));
            hi = lo + k;
        } else {
            elements.push(range_nodes(lo, lo + k));
            lo += k;
            m -= k;
            complete = false;
        }
    }
    elements.reverse();
    Ok(ProofPlan { elements })
}

// ---- verification ---------------------------------------------------------------

fn inner_proof_size(index: u64, size: u64) -> usize {
    (64 - (index ^ (size - 1)).leading_zeros()) as usize
}

fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = inner_proof_size(index, size);
    // `inner` is 64 when size - 1 has its top bit set: shifting by the width is
    // an overflow (found by fuzzing), and the border is then empty.
    let border = index.checked_shr(inner as u32).unwrap_or(0).count_ones() as usize;
    (inner, border)
}

fn chain_inner(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_inner_right(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

/// The root an inclusion proof leads to.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let leaf: Hash = leaf_hash
        .try_into()
        .map_err(|_| ProofError::BadLeafHash(leaf_hash.len()))?;
    let (inner, border) = decompose_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let hash = chain_inner(leaf, &proof[..inner], index);
    Ok(chain_border_right(hash, &proof[inner..]))
}

/// Checks that the leaf `leaf_hash` is at `index` in the tree of `size` leaves
/// whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[Hash],
    root: &[u8],
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(index, size, leaf_hash, proof)?;
    if computed.as_slice() == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the
/// tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &[u8],
    new_root: &[u8],
) -> Result<(), ProofError> {
    if new < old {
        return Err(ProofError::SizesReversed { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::NotEmpty);
        }
        // Equal sizes of zero prove nothing either: the empty tree has one root and
        // a claim about two "empty" roots is malformed.
        if old == 0 {
            return Err(ProofError::FromEmptyTree);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    }
    let (mut inner, border) = decompose_inclusion(old - 1, new);
    let shift = old.trailing_zeros() as usize;
    inner -= shift;
    // The proof starts with the root of the largest perfect subtree ending at
    // `old`, unless `old` is a power of two and that subtree is the old tree itself.
    let (seed, rest) = if old == 1 << shift {
        let seed: Hash = match old_root.try_into() {
            Ok(h) => h,
            Err(_) => return Err(ProofError::OldRootMismatch),
        };
        (seed, proof)
    } else {
        (proof[0], &proof[1..])
    };
    if rest.len() != inner + border {
        let start = proof.len() - rest.len();
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: start + inner + border,
        });
    }
    let mask = (old - 1) >> shift;
    let hash1 = chain_border_right(
        chain_inner_right(seed, &rest[..inner], mask),
        &rest[inner..],
    );
    if hash1.as_slice() != old_root {
        return Err(ProofError::OldRootMismatch);
    }
    let hash2 = chain_border_right(chain_inner(seed, &rest[..inner], mask), &rest[inner..]);
    if hash2.as_slice() != new_root {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaf_hash, root_of};
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// Node hash straight from the leaves, as a store would have it.
    fn node(leaves: &[Hash], id: NodeId) -> Option<Hash> {
        let begin = usize::try_from(id.index << id.level).ok()?;
        let end = begin + (1usize << id.level);
        (end <= leaves.len()).then(|| root_of(&leaves[begin..end]))
    }

    /// Found by fuzzing: a size above 2^63 made the inner proof 64 levels and
    /// the border's shift overflow (a panic in debug, a wrong length in release).
    /// Such a proof is refused by length, without a panic.
    #[test]
    fn inclusion_at_sizes_above_two_to_the_63_is_refused_cleanly() {
        for (index, size) in [(1u64, u64::MAX), (u64::MAX - 1, u64::MAX), (0, 1 << 63 | 1)] {
            let r = verify_inclusion(index, size, &[0u8; 32], &[], &[0u8; 32]);
            assert!(
                matches!(r, Err(ProofError::WrongLength { .. })),
                "{index}/{size}: {r:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn generated_inclusion_proofs_verify(size in 1u64..300, seed in any::<u64>()) {
            let all = leaves(size);
            let index = seed % size;
            let root = root_of(&all);
            let proof = inclusion_plan(index, size).unwrap().resolve(|id| node(&all, id)).unwrap();
            prop_assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root).is_ok());
            let wrong = leaf_hash(b"not in the log");
            prop_assert!(verify_inclusion(index, size, &wrong, &proof, &root).is_err());
            prop_assert_eq!(root_from_nodes(size, |id| node(&all, id)).unwrap(), root);
        }

        #[test]
        fn generated_consistency_proofs_verify(new in 1u64..300, seed in any::<u64>()) {
            let all = leaves(new);
            let old = 1 + seed % new;
            let proof = consistency_plan(old, new).unwrap().resolve(|id| node(&all, id)).unwrap();
            let (old_root, new_root) = (root_of(&all[..old as usize]), root_of(&all));
            prop_assert!(verify_consistency(old, new, &proof, &old_root, &new_root).is_ok());
            // A log rewritten before `old` is caught.
            let mut forked = all.clone();
            forked[(seed % old) as usize] = leaf_hash(b"rewritten");
            prop_assert!(verify_consistency(old, new, &proof, &root_of(&forked[..old as usize]), &new_root).is_err());
        }
    }

    #[test]
    fn one_right_edge_element_at_most() {
        for size in 1..200u64 {
            for index in 0..size {
                let plan = inclusion_plan(index, size).unwrap();
                let multi = plan.elements.iter().filter(|e| e.len() > 1).count();
                assert!(multi <= 1, "index {index} size {size}");
                assert!(plan.nodes().count() <= 2 * 64);
            }
        }
    }
}
