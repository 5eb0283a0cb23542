//! Signed notes, checkpoints, audit bundles and Merkle proofs (`bulkhead_ledger`)
//! on arbitrary input: never a panic, never a forged note, checkpoint or proof
//! accepted.
//!
//! The first byte picks the mode:
//! - 0: the rest is a note, a checkpoint body, a vkey and an skey at once;
//! - 1: an inclusion proof against a real tree of up to `LEAVES_MAX` leaves;
//! - 2: a consistency proof between two sizes of that tree;
//! - 3: the rest is an audit bundle (JSON), verified under the fixed key.
//!
//! "Never accepted when wrong" is checked without trusting the code under test:
//! Ed25519 signatures are deterministic, so a note that opens must carry exactly
//! the signature line the fixed signer makes for its text; a proof that verifies
//! must lead from the real leaf to the real root, and then it is the one proof the
//! tree has (anything else would be a SHA-256 collision).

use std::sync::OnceLock;

use bulkhead_ledger::bundle::{AuditBundle, verify_bundle};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::note::{NoteSigner, NoteVerifier};
use bulkhead_ledger::proof::{
    NodeId, consistency_plan, inclusion_plan, root_from_inclusion, verify_consistency,
    verify_inclusion,
};
use bulkhead_ledger::{Hash, hash_from_b64, leaf_hash, root_of};

use crate::Input;

/// The signing key of the C2SP / Go `sumdb/note` documentation example; its vkey
/// and a note it signed are in `shared/testdata/signed-note/known-answer.json`.
pub const SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
pub const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

/// Leaves of the reference tree.
pub const LEAVES_MAX: u64 = 70;

pub struct World {
    pub signer: NoteSigner,
    pub verifier: NoteVerifier,
    pub leaves: Vec<Hash>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let signer = NoteSigner::from_skey(SKEY).expect("the example skey parses");
        let verifier = NoteVerifier::from_vkey(VKEY).expect("the example vkey parses");
        assert_eq!(signer.vkey(), VKEY, "the example keys are one pair");
        let leaves = (0..LEAVES_MAX)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        World {
            signer,
            verifier,
            leaves,
        }
    })
}

/// A node's hash straight from the leaves.
fn node(leaves: &[Hash], id: NodeId) -> Option<Hash> {
    let begin = usize::try_from(id.index.checked_shl(u32::from(id.level))?).ok()?;
    let end = begin.checked_add(1usize.checked_shl(u32::from(id.level))?)?;
    (end <= leaves.len()).then(|| root_of(&leaves[begin..end]))
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 4 {
        0 => notes(input.rest()),
        1 => inclusion(&mut input),
        2 => consistency(&mut input),
        _ => bundle(input.rest()),
    }
}

fn notes(bytes: &[u8]) {
    let w = world();
    let text = String::from_utf8_lossy(bytes);
    if let Ok(opened) = w.verifier.open(&text) {
        assert!(text.starts_with(opened), "the text is not the note's start");
        let genuine = w.signer.sign(opened).expect("an opened text is signable");
        let signature_line = genuine[opened.len() + 1..].trim_end_matches('\n');
        assert!(
            text[opened.len() + 1..]
                .lines()
                .any(|l| l == signature_line),
            "a note opened without the key's own signature"
        );
    }
    if let Ok(cp) = Checkpoint::parse_body(&text) {
        assert_eq!(Checkpoint::parse_body(&cp.body()).as_ref(), Ok(&cp));
        assert!(text.starts_with(&format!("{}\n{}\n", cp.origin, cp.size)));
    }
    if let Ok(cp) = Checkpoint::open(&text, &w.verifier) {
        assert_eq!(
            Checkpoint::parse_body(w.verifier.open(&text).unwrap()),
            Ok(cp)
        );
    }
    // Keys: whatever parses works.
    let first_line = text.lines().next().unwrap_or("");
    if let Ok(v) = NoteVerifier::from_vkey(first_line) {
        assert!(!v.name().is_empty());
    }
    if let Ok(s) = NoteSigner::from_skey(first_line) {
        let v = NoteVerifier::from_vkey(&s.vkey()).expect("a signer's vkey parses");
        let note = s.sign("fuzz\n").expect("plain text signs");
        assert_eq!(v.open(&note), Ok("fuzz\n"));
    }
}

/// A proof of `len` hashes, each either taken from the input or a real node.
fn proof_hashes(input: &mut Input<'_>, genuine: &[Hash], leaves: &[Hash]) -> Vec<Hash> {
    let mode = input.byte();
    let len = match mode % 4 {
        0 => genuine.len(),
        1 => genuine.len().saturating_sub(1),
        2 => genuine.len() + 1,
        _ => usize::from(input.byte() % 80),
    };
    (0..len)
        .map(|i| match input.byte() % 4 {
            // The genuine element, where there is one.
            0 | 1 => genuine.get(i).copied().unwrap_or_else(|| input.hash()),
            // A real node of the tree, but maybe the wrong one.
            2 => {
                let level = input.byte() % 8;
                let index = u64::from(input.byte());
                node(leaves, NodeId::new(level, index)).unwrap_or_else(|| input.hash())
            }
            _ => input.hash(),
        })
        .collect()
}

fn inclusion(input: &mut Input<'_>) {
    let w = world();
    let size = 1 + input.u64() % LEAVES_MAX;
    let index = input.u64() % (size + 2); // sometimes beyond the tree
    let leaves = &w.leaves[..size as usize];
    let genuine = inclusion_plan(index, size)
        .ok()
        .map(|p| {
            p.resolve(|id| node(leaves, id))
                .expect("every node is there")
        })
        .unwrap_or_default();
    let root = root_of(leaves);
    let leaf: Vec<u8> = match input.byte() % 4 {
        0 | 1 => leaves.get(index as usize).copied().unwrap_or(root).to_vec(),
        2 => leaves[(input.u64() % size) as usize].to_vec(),
        _ => input.bytes(33).to_vec(),
    };
    let proof = proof_hashes(input, &genuine, leaves);
    if verify_inclusion(index, size, &leaf, &proof, &root).is_ok() {
        assert!(index < size);
        assert_eq!(
            leaf.as_slice(),
            leaves[index as usize].as_slice(),
            "a wrong leaf proved"
        );
        assert_eq!(proof, genuine, "another proof for the same leaf");
    }
    // Arbitrary sizes: never a panic. (The same proof may lead to the same root
    // from another index and size with the same path shape; a checkpoint binds
    // the size to its root, so that proves nothing false.)
    let (big_index, big_size) = (input.u64(), input.u64());
    if root_from_inclusion(big_index, big_size, &leaf, &proof).is_ok() {
        assert!(big_index < big_size);
    }
    let _ = inclusion_plan(big_index, big_size).map(|p| p.nodes().count());
}

fn consistency(input: &mut Input<'_>) {
    let w = world();
    let new = input.u64() % (LEAVES_MAX + 1);
    let old = input.u64() % (new + 2);
    let leaves = &w.leaves[..new as usize];
    let genuine = consistency_plan(old, new)
        .ok()
        .map(|p| {
            p.resolve(|id| node(leaves, id))
                .expect("every node is there")
        })
        .unwrap_or_default();
    let real_old = root_of(&leaves[..(old.min(new)) as usize]);
    let real_new = root_of(leaves);
    let old_root: Vec<u8> = match input.byte() % 4 {
        0 | 1 => real_old.to_vec(),
        // The root of a rewritten history.
        2 => {
            let mut forked = leaves[..(old.min(new)) as usize].to_vec();
            if let Some(n) = forked.len().checked_sub(1) {
                let at = (input.u64() % (n as u64 + 1)) as usize;
                forked[at] = leaf_hash(b"rewritten");
            }
            root_of(&forked).to_vec()
        }
        _ => input.bytes(33).to_vec(),
    };
    let new_root: Vec<u8> = match input.byte() % 4 {
        0..=2 => real_new.to_vec(),
        _ => input.bytes(33).to_vec(),
    };
    let proof = proof_hashes(input, &genuine, leaves);
    // Only against the real new root does a verified proof pin the old root: with
    // made-up roots (equal sizes, equal roots) there is nothing false to accept.
    if verify_consistency(old, new, &proof, &old_root, &new_root).is_ok()
        && new_root.as_slice() == real_new.as_slice()
    {
        assert!(0 < old && old <= new);
        assert_eq!(
            old_root.as_slice(),
            real_old.as_slice(),
            "a wrong old root proved"
        );
        assert_eq!(
            new_root.as_slice(),
            real_new.as_slice(),
            "a wrong new root proved"
        );
        if old < new {
            assert_eq!(proof, genuine, "another proof for the same trees");
        }
    }
    let (big_old, big_new) = (input.u64(), input.u64());
    let _ = verify_consistency(big_old, big_new, &proof, &old_root, &new_root);
    let _ = consistency_plan(big_old, big_new).map(|p| p.nodes().count());
}

fn bundle(bytes: &[u8]) {
    let w = world();
    let Ok(bundle) = AuditBundle::from_slice(bytes) else {
        return;
    };
    // The rest of an input may hold an older checkpoint note after a NUL.
    let old_note = bytes
        .iter()
        .position(|&b| b == 0)
        .map(|at| String::from_utf8_lossy(&bytes[at + 1..]).into_owned());
    let report = verify_bundle(&bundle, &w.verifier, old_note.as_deref());
    let _ = serde_json::to_string(&report).expect("a report serializes");
    if report.is_ok() {
        // The checkpoint is genuinely signed, so its tree is what we signed:
        // when the entries are the whole log, they hash to its root.
        let cp = Checkpoint::open(&bundle.checkpoint, &w.verifier).expect("signed");
        assert_eq!(report.size, Some(cp.size));
        assert_eq!(report.root, Some(cp.root));
        let whole = bundle.entries.len() as u64 == cp.size
            && bundle
                .entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == i as u64);
        if whole {
            let leaves: Option<Vec<Hash>> = bundle
                .entries
                .iter()
                .map(|e| hash_from_b64(&e.leaf_hash))
                .collect();
            let leaves = leaves.expect("an accepted bundle's leaf hashes parse");
            assert_eq!(
                root_of(&leaves),
                cp.root,
                "accepted entries of another tree"
            );
        }
    }
}
