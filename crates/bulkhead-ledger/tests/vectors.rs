//! Every file of the shared RFC 6962 proof vectors (transparency-dev/merkle) and the
//! C2SP signed-note known answer: each happy path verifies, every corrupted case is
//! rejected.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bulkhead_ledger::note::NoteVerifier;
use bulkhead_ledger::proof::{verify_consistency, verify_inclusion};
use bulkhead_ledger::{Hash, leaf_hash, root_of};
use serde_json::Value;

/// `shared/testdata`, beside the repository (the project's layout), found by walking
/// up from this crate. Missing data fails the test rather than skipping it.
fn shared_testdata() -> PathBuf {
    if let Ok(dir) = std::env::var("BULKHEAD_SHARED_TESTDATA") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for ancestor in manifest.ancestors() {
        let candidate = ancestor.join("shared/testdata");
        if candidate.join("merkle-vectors").is_dir() {
            return candidate;
        }
    }
    let fallback = PathBuf::from("/work/shared/testdata");
    assert!(
        fallback.join("merkle-vectors").is_dir(),
        "shared/testdata not found above {}; set BULKHEAD_SHARED_TESTDATA",
        manifest.display()
    );
    fallback
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().unwrap_or(""))
        .unwrap_or_default()
}

/// Proof hashes; a proof element that is not 32 bytes makes the proof invalid, which
/// is how a corrupted vector with a truncated hash must end.
fn proof(v: &Value) -> Option<Vec<Hash>> {
    // Some vectors write an absent proof as null.
    v.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| bytes(h).try_into().ok())
        .collect()
}

#[test]
fn every_merkle_vector_is_verified_or_rejected_as_it_should_be() {
    let root = shared_testdata().join("merkle-vectors");
    let mut files = Vec::new();
    json_files(&root, &mut files);
    files.sort();
    let (mut inclusion, mut consistency, mut happy) = (0, 0, 0);
    for file in &files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let want_err = case["wantErr"].as_bool().unwrap();
        let result = if case.get("leafIdx").is_some() {
            inclusion += 1;
            proof(&case["proof"]).map_or(Err(()), |p| {
                verify_inclusion(
                    case["leafIdx"].as_u64().unwrap(),
                    case["treeSize"].as_u64().unwrap(),
                    &bytes(&case["leafHash"]),
                    &p,
                    &bytes(&case["root"]),
                )
                .map_err(|_| ())
            })
        } else {
            consistency += 1;
            proof(&case["proof"]).map_or(Err(()), |p| {
                verify_consistency(
                    case["size1"].as_u64().unwrap(),
                    case["size2"].as_u64().unwrap(),
                    &p,
                    &bytes(&case["root1"]),
                    &bytes(&case["root2"]),
                )
                .map_err(|_| ())
            })
        };
        if !want_err {
            happy += 1;
        }
        assert_eq!(
            result.is_err(),
            want_err,
            "{}: {}",
            file.strip_prefix(&root).unwrap().display(),
            case["desc"]
        );
    }
    // The directory holds both kinds; an empty walk must not pass.
    assert!(
        inclusion > 50 && consistency > 50 && happy > 5,
        "{inclusion} {consistency} {happy}"
    );
}

/// The RFC 6962 reference leaves the vectors' 8-leaf tree is built from.
fn reference_leaves() -> Vec<Hash> {
    let data: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    data.iter().map(|d| leaf_hash(d)).collect()
}

#[test]
fn our_generator_produces_the_vectors_happy_paths() {
    let leaves = reference_leaves();
    let node = |id: bulkhead_ledger::proof::NodeId| {
        let begin = (id.index << id.level) as usize;
        let end = begin + (1usize << id.level);
        (end <= leaves.len()).then(|| root_of(&leaves[begin..end]))
    };
    let root = shared_testdata().join("merkle-vectors");
    let mut files = Vec::new();
    json_files(&root, &mut files);
    let mut compared = 0;
    for file in files.iter().filter(|f| f.ends_with("happy-path.json")) {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let want = proof(&case["proof"]).unwrap();
        let got = if case.get("leafIdx").is_some() {
            let (index, size) = (
                case["leafIdx"].as_u64().unwrap(),
                case["treeSize"].as_u64().unwrap(),
            );
            if size > 8 || bytes(&case["root"]) != root_of(&leaves[..size as usize]) {
                continue;
            }
            bulkhead_ledger::proof::inclusion_plan(index, size)
                .unwrap()
                .resolve(node)
                .unwrap()
        } else {
            let (old, new) = (
                case["size1"].as_u64().unwrap(),
                case["size2"].as_u64().unwrap(),
            );
            if new > 8 || old == 0 || bytes(&case["root2"]) != root_of(&leaves[..new as usize]) {
                continue;
            }
            bulkhead_ledger::proof::consistency_plan(old, new)
                .unwrap()
                .resolve(node)
                .unwrap()
        };
        assert_eq!(got, want, "{}", file.display());
        compared += 1;
    }
    assert!(
        compared >= 4,
        "only {compared} happy paths were over the reference tree"
    );
}

#[test]
fn the_signed_note_known_answer_verifies_and_any_change_breaks_it() {
    let path = shared_testdata().join("signed-note/known-answer.json");
    let case: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let verifier = NoteVerifier::from_vkey(case["vkey"].as_str().unwrap()).unwrap();
    assert_eq!(verifier.name(), case["key_name"].as_str().unwrap());
    assert_eq!(
        format!("{:08x}", verifier.key_id()),
        case["key_id_hex"].as_str().unwrap()
    );
    let note = case["note"].as_str().unwrap();
    assert_eq!(verifier.open(note).unwrap(), case["text"].as_str().unwrap());
    // Flip one bit of every byte in turn, text and signature alike.
    let raw = note.as_bytes();
    for i in 0..raw.len() {
        let mut changed = raw.to_vec();
        changed[i] ^= 0x01;
        if let Ok(changed) = std::str::from_utf8(&changed) {
            assert!(
                verifier.open(changed).is_err(),
                "byte {i} changed and it still verified"
            );
        }
    }
}
