//! Audit exports ("bundles") and their verification by someone who trusts nothing
//! but the log's public key.
//!
//! A bundle is one JSON document: a log's signed checkpoint, every entry the
//! checkpoint commits to (index, leaf hash, event) and, optionally, consistency
//! proofs from older sizes. [`verify_bundle`] checks all of it and names every
//! problem it finds; [`Verification`] does the same one entry at a time, for callers
//! that stream entries instead of holding them.
//!
//! ```text
//! {"format": "bulkhead-audit-export/v1",
//!  "origin": "<log origin>", "vkey": "<informational>", "checkpoint": "<signed note>",
//!  "consistency": [{"old": 10, "new": 42, "proof": ["<base64>", …]}],
//!  "entries": [{"index": 0, "leaf_hash": "<base64>", "event": {…} | null}, …]}
//! ```
//!
//! The `vkey` a bundle carries is informational only: whoever could edit the bundle
//! could replace it too, so the key always comes from the caller. An entry whose
//! `event` is null belonged to a crypto-shredded tenant: its leaf hash still counts
//! towards the root, so the log verifies, but the event cannot be shown.
//!
//! Must never: trust a claim the key does not vouch for, or do I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::event::leaf_hash_of_json;
use crate::note::{NoteError, NoteVerifier};
use crate::proof::verify_consistency;
use crate::{CompactRange, Hash, b64, empty_root, hash_from_b64};

/// The format name this build reads and writes.
pub const FORMAT: &str = "bulkhead-audit-export/v1";

/// Per-entry failures listed one by one at most; the rest are counted. A bundle
/// with every event edited would otherwise produce a report as large as itself.
pub const ENTRY_FAILURES_MAX: usize = 100;

/// The `format` field: only formats this build understands can be represented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleFormat {
    #[default]
    #[serde(rename = "bulkhead-audit-export/v1")]
    V1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBundle {
    pub format: BundleFormat,
    /// The log the exporter asked for; the checkpoint's signed origin must match.
    pub origin: String,
    /// The key the server says it signs with. Informational only.
    pub vkey: String,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistency: Vec<BundleConsistency>,
    pub entries: Vec<BundleEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    pub index: u64,
    /// Base64 SHA-256 leaf hash. A string, not a `Hash`, so that a damaged one is
    /// reported against its entry instead of making the whole bundle unreadable.
    pub leaf_hash: String,
    /// The event as JSON, or `None` if its body could not be opened (the tenant was
    /// crypto-shredded).
    pub event: Option<Value>,
}

/// A consistency proof from the tree of `old` entries to the tree of `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConsistency {
    pub old: u64,
    pub new: u64,
    /// Base64 hashes.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("this is not a Bulkhead audit export: it has no \"format\" field")]
    NotABundle,
    #[error(
        "this export has format {0:?}, which this build cannot read (it reads {FORMAT}); use a newer bulkhead"
    )]
    UnknownFormat(String),
    #[error("the export is not valid {FORMAT} JSON: {0}")]
    Malformed(String),
}

impl AuditBundle {
    /// Parses a bundle, telling an unknown format apart from a damaged file.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BundleError> {
        // The format is read on its own first: a later format may change any other
        // field, and "unknown field" would then hide the real reason.
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            format: Option<String>,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        match probe.format.as_deref() {
            None => return Err(BundleError::NotABundle),
            Some(FORMAT) => {}
            Some(other) => return Err(BundleError::UnknownFormat(other.to_owned())),
        }
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))
    }

    /// The whole bundle as [`Self::encode_head`], one [`encode_entry`] per entry and
    /// [`ENCODED_TAIL`]: one entry per line, so a large export can be written as it
    /// is fetched and read with line-oriented tools.
    pub fn to_json(&self) -> String {
        let mut out = self.encode_head();
        for (i, entry) in self.entries.iter().enumerate() {
            out.push_str(&encode_entry(entry, i == 0));
        }
        out.push_str(ENCODED_TAIL);
        out
    }

    /// Everything but the entries, ending where the first entry goes. `entries` is
    /// not read.
    pub fn encode_head(&self) -> String {
        format!(
            "{{\"format\":{},\n\"origin\":{},\n\"vkey\":{},\n\"checkpoint\":{},\n\"consistency\":{},\n\"entries\":[",
            json(&self.format),
            json(&self.origin),
            json(&self.vkey),
            json(&self.checkpoint),
            json(&self.consistency),
        )
    }
}

/// One entry of a streamed bundle; `first` is true for the first entry written.
pub fn encode_entry(entry: &BundleEntry, first: bool) -> String {
    let sep = if first { "\n" } else { ",\n" };
    // A struct of integers, strings and JSON values always serializes.
    let line = serde_json::to_string(entry).expect("an entry serializes");
    format!("{sep}{line}")
}

/// What follows the last entry of a streamed bundle.
pub const ENCODED_TAIL: &str = "\n]}\n";

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Only called on strings, the format tag and proof lists, which always serialize.
    serde_json::to_string(value).expect("plain data serializes")
}

/// One thing that is wrong, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Failure {
    #[error("the checkpoint cannot be read: {reason}")]
    CheckpointMalformed { reason: String },
    #[error(
        "the checkpoint carries no signature by key {key}: it was signed by another key, or this is the wrong key to check it with{}",
        export_key_hint(.export_key)
    )]
    CheckpointNotSignedByKey {
        key: String,
        export_key: Option<String>,
    },
    #[error(
        "the checkpoint's signature by key {key} does not verify: the checkpoint text or its signature was altered"
    )]
    CheckpointSignatureInvalid { key: String },
    #[error(
        "the checkpoint is for log {checkpoint} but the export says it holds log {bundle}: the export's origin was edited or the checkpoint belongs to another log"
    )]
    OriginMismatch { checkpoint: String, bundle: String },
    #[error("{}", missing_text(*.first, *.last))]
    EntriesMissing { first: u64, last: u64 },
    #[error(
        "entry {index} appears out of order or twice (after entry {previous}): the indices are not contiguous"
    )]
    EntryOutOfOrder { index: u64, previous: u64 },
    #[error("entry {index}: the leaf hash is not a base64 SHA-256 hash")]
    LeafHashMalformed { index: u64 },
    #[error(
        "entry {index}: the event cannot be encoded canonically ({reason}), so it cannot match its leaf hash"
    )]
    EventNotCanonical { index: u64, reason: String },
    #[error(
        "entry {index}: the event does not hash to its leaf hash (the event or the hash was edited)"
    )]
    EventHashMismatch { index: u64 },
    #[error("{more} more entry problems like the ones above are not listed")]
    MoreEntryFailures { more: u64 },
    #[error(
        "the export holds {held} entries but the checkpoint commits to {size} (truncated: entry {next} and later are missing)"
    )]
    Truncated { held: u64, size: u64, next: u64 },
    #[error(
        "the export holds entries up to index {last} but the checkpoint commits to only {size}: entries from {size} on are not covered by the signature"
    )]
    ExtraEntries { last: u64, size: u64 },
    #[error(
        "the root recomputed from the {size} entries differs from the signed root (an entry was edited, inserted or removed)"
    )]
    RootMismatch { size: u64 },
    #[error("your older checkpoint cannot be read: {reason}")]
    OldCheckpointMalformed { reason: String },
    #[error(
        "your older checkpoint carries no signature by key {key}: it was signed by another key, or this is the wrong key to check it with"
    )]
    OldCheckpointNotSignedByKey { key: String },
    #[error(
        "your older checkpoint's signature by key {key} does not verify: its text or its signature was altered"
    )]
    OldCheckpointSignatureInvalid { key: String },
    #[error(
        "your older checkpoint is for log {old}, not {current}: compare checkpoints of the same log"
    )]
    OldCheckpointOrigin { old: String, current: String },
    #[error(
        "rollback: your checkpoint has size {old_size} but the log now has {size} (entries were removed, or the server was restored from an older state)"
    )]
    Rollback { old_size: u64, size: u64 },
    #[error(
        "fork: the log's first {old_size} entries no longer hash to your checkpoint's root (history was rewritten)"
    )]
    Fork { old_size: u64 },
    #[error("the consistency proof from size {old} to size {new} is malformed: {reason}")]
    ConsistencyProofMalformed { old: u64, new: u64, reason: String },
    #[error(
        "the consistency proof from size {old} to size {new} does not verify ({reason}): the log at size {new} is not shown to extend the log at size {old}"
    )]
    ConsistencyProofInvalid { old: u64, new: u64, reason: String },
}

fn export_key_hint(export_key: &Option<String>) -> String {
    match export_key {
        Some(k) => format!(
            " (the export names key {k}; trust it only if it reached you from the operator by another channel)"
        ),
        None => String::new(),
    }
}

fn missing_text(first: u64, last: u64) -> String {
    let which = if first == last {
        format!("entry {first} is missing")
    } else {
        format!("entries {first} to {last} are missing")
    };
    match first.checked_sub(1) {
        Some(before) => format!(
            "{which}: the indices are not contiguous (they jump from {before} to {})",
            last.saturating_add(1)
        ),
        None => format!(
            "{which}: the export starts at entry {}",
            last.saturating_add(1)
        ),
    }
}

impl Failure {
    /// Failures about single entries, of which at most [`ENTRY_FAILURES_MAX`] are listed.
    fn is_per_entry(&self) -> bool {
        matches!(
            self,
            Failure::EntriesMissing { .. }
                | Failure::EntryOutOfOrder { .. }
                | Failure::LeafHashMalformed { .. }
                | Failure::EventNotCanonical { .. }
                | Failure::EventHashMismatch { .. }
        )
    }
}

/// What was found about the older checkpoint the caller kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OldCheckpointCheck {
    pub size: u64,
    #[serde(serialize_with = "ser_b64")]
    pub root: Hash,
    /// True when the current log was shown to extend it: directly from the entries,
    /// by a consistency proof, or because it is the same tree.
    pub consistent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The checkpoint's signed origin, or the bundle's if the checkpoint could not
    /// be verified.
    pub origin: String,
    /// Whether the checkpoint's signature verified under the caller's key.
    pub signed: bool,
    /// The signed size and root; `None` unless `signed`.
    pub size: Option<u64>,
    #[serde(serialize_with = "ser_b64_opt")]
    pub root: Option<Hash>,
    /// Entries examined.
    pub entries_checked: u64,
    /// Entries whose event is null ("unreadable: crypto-shredded"). Not a failure:
    /// their leaf hashes still count towards the root.
    pub entries_unreadable: u64,
    /// Present when an older checkpoint was given and its signature verified.
    pub old_checkpoint: Option<OldCheckpointCheck>,
    /// Consistency proofs from the bundle that verified.
    pub consistency_proofs_checked: u64,
    #[serde(serialize_with = "ser_failures")]
    pub failures: Vec<Failure>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.signed
    }
}

fn ser_b64<S: Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&b64(hash))
}

fn ser_b64_opt<S: Serializer>(hash: &Option<Hash>, s: S) -> Result<S::Ok, S::Error> {
    match hash {
        Some(h) => s.serialize_str(&b64(h)),
        None => s.serialize_none(),
    }
}

/// Each failure as `{"code", "message", …its fields}`.
fn ser_failures<S: Serializer>(failures: &[Failure], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{Error as _, SerializeSeq as _};
    let mut seq = s.serialize_seq(Some(failures.len()))?;
    for failure in failures {
        let mut value = serde_json::to_value(failure).map_err(S::Error::custom)?;
        if let Value::Object(map) = &mut value {
            map.insert("message".into(), Value::String(failure.to_string()));
        }
        seq.serialize_element(&value)?;
    }
    seq.end()
}

/// Checks a whole bundle; see [`Verification`] for what is checked.
pub fn verify_bundle(
    bundle: &AuditBundle,
    verifier: &NoteVerifier,
    old_checkpoint_note: Option<&str>,
) -> VerifyReport {
    let mut verification = Verification::begin(bundle, verifier, old_checkpoint_note);
    for entry in &bundle.entries {
        verification.entry(entry);
    }
    verification.finish()
}

/// A parsed consistency proof from the bundle.
#[derive(Debug)]
struct Proof {
    old: u64,
    new: u64,
    hashes: Vec<Hash>,
}

/// The bundle's checkpoint, when it is signed by `key` (`verifier`'s name and id);
/// a failure for its signature, or for an origin other than the bundle's.
fn open_current(
    head: &AuditBundle,
    verifier: &NoteVerifier,
    key: &str,
    failures: &mut Vec<Failure>,
) -> Option<Checkpoint> {
    let checkpoint = match Checkpoint::open(&head.checkpoint, verifier) {
        Ok(cp) => Some(cp),
        Err(crate::checkpoint::CheckpointError::Note(NoteError::NoSignatureByKey(_))) => {
            let export_key = NoteVerifier::from_vkey(&head.vkey)
                .ok()
                .map(|v| format!("{}+{:08x}", v.name(), v.key_id()))
                .filter(|k| *k != key);
            failures.push(Failure::CheckpointNotSignedByKey {
                key: key.to_owned(),
                export_key,
            });
            None
        }
        Err(crate::checkpoint::CheckpointError::Note(NoteError::BadSignature(_))) => {
            failures.push(Failure::CheckpointSignatureInvalid {
                key: key.to_owned(),
            });
            None
        }
        Err(e) => {
            failures.push(Failure::CheckpointMalformed {
                reason: e.to_string(),
            });
            None
        }
    };
    if let Some(cp) = &checkpoint
        && cp.origin != head.origin
    {
        failures.push(Failure::OriginMismatch {
            checkpoint: cp.origin.clone(),
            bundle: head.origin.clone(),
        });
    }
    checkpoint
}

/// The caller's older checkpoint: what the report says of it once its signature
/// verified, and the checkpoint itself when it is of the same log as `current`.
fn open_old(
    note: &str,
    verifier: &NoteVerifier,
    key: &str,
    current: Option<&Checkpoint>,
    failures: &mut Vec<Failure>,
) -> (Option<OldCheckpointCheck>, Option<Checkpoint>) {
    let prev = match Checkpoint::open(note, verifier) {
        Ok(prev) => prev,
        Err(crate::checkpoint::CheckpointError::Note(NoteError::NoSignatureByKey(_))) => {
            failures.push(Failure::OldCheckpointNotSignedByKey {
                key: key.to_owned(),
            });
            return (None, None);
        }
        Err(crate::checkpoint::CheckpointError::Note(NoteError::BadSignature(_))) => {
            failures.push(Failure::OldCheckpointSignatureInvalid {
                key: key.to_owned(),
            });
            return (None, None);
        }
        Err(e) => {
            failures.push(Failure::OldCheckpointMalformed {
                reason: e.to_string(),
            });
            return (None, None);
        }
    };
    let report = Some(OldCheckpointCheck {
        size: prev.size,
        root: prev.root,
        consistent: false,
    });
    match current {
        Some(cp) if cp.origin != prev.origin => {
            failures.push(Failure::OldCheckpointOrigin {
                old: prev.origin.clone(),
                current: cp.origin.clone(),
            });
            (report, None)
        }
        Some(_) => (report, Some(prev)),
        // Nothing to compare it with.
        None => (report, None),
    }
}

/// Rollback and fork checks that need no entries; otherwise marks the older
/// size as a prefix root the entries must reach.
fn compare_old(
    cp: &Checkpoint,
    prev: &Checkpoint,
    check: &mut OldCheckpointCheck,
    roots: &mut BTreeMap<u64, Option<Hash>>,
    failures: &mut Vec<Failure>,
) {
    if prev.size > cp.size {
        failures.push(Failure::Rollback {
            old_size: prev.size,
            size: cp.size,
        });
    } else if prev.size == cp.size {
        if prev.root == cp.root {
            check.consistent = true;
        } else {
            failures.push(Failure::Fork {
                old_size: prev.size,
            });
        }
    } else if prev.size == 0 {
        // Every log extends the empty one.
        check.consistent = true;
    } else {
        roots.insert(prev.size, None);
    }
}

/// The bundle's consistency proofs that are well formed and within `cp`, each
/// with its two sizes marked as prefix roots to reach; a failure for each other.
fn parse_proofs(
    head: &AuditBundle,
    cp: &Checkpoint,
    roots: &mut BTreeMap<u64, Option<Hash>>,
    failures: &mut Vec<Failure>,
) -> Vec<Proof> {
    let mut proofs = Vec::new();
    for c in &head.consistency {
        let malformed = |reason: String| Failure::ConsistencyProofMalformed {
            old: c.old,
            new: c.new,
            reason,
        };
        let hashes: Result<Vec<Hash>, usize> = c
            .proof
            .iter()
            .enumerate()
            .map(|(i, h)| hash_from_b64(h).ok_or(i))
            .collect();
        let hashes = match hashes {
            Ok(h) => h,
            Err(i) => {
                failures.push(malformed(format!("hash {i} is not a base64 SHA-256 hash")));
                continue;
            }
        };
        if c.old > c.new {
            failures.push(malformed("its old size is larger than its new size".into()));
            continue;
        }
        if c.new > cp.size {
            failures.push(malformed(format!(
                "it reaches beyond the checkpoint's size {}",
                cp.size
            )));
            continue;
        }
        roots.insert(c.old, None);
        roots.insert(c.new, None);
        proofs.push(Proof {
            old: c.old,
            new: c.new,
            hashes,
        });
    }
    proofs
}

/// A verification in progress: [`Verification::begin`] with everything but the
/// entries, [`Verification::entry`] for each entry in order, [`Verification::finish`].
/// Memory is O(log n) plus the consistency proofs, whatever the number of entries.
///
/// Checks, collecting every failure rather than stopping at the first:
/// - the checkpoint's signature under the caller's key, and its origin against the
///   bundle's;
/// - each entry: contiguous indices from 0, a well-formed leaf hash, and an event
///   (unless null) whose canonical encoding hashes to that leaf hash;
/// - that the entries are exactly the ones the checkpoint commits to: their count,
///   and the root recomputed from their leaf hashes with a [`CompactRange`];
/// - the older checkpoint, if given: its signature and origin, then rollback (it is
///   larger than the current log) and fork (the current log's prefix of its size
///   has another root);
/// - each consistency proof in the bundle, against the signed roots and the roots
///   recomputed from the entries.
///
/// Checks whose premise failed are skipped rather than reported as noise: nothing
/// is compared with a checkpoint whose signature does not verify, no root is
/// recomputed over a gap, and the entries' prefix roots are trusted for the fork
/// check only once the full root matched the signed one.
#[derive(Debug)]
pub struct Verification {
    report: VerifyReport,
    /// The current checkpoint, when its signature verified.
    checkpoint: Option<Checkpoint>,
    /// The older checkpoint, when it verified and is of the same log.
    old: Option<Checkpoint>,
    proofs: Vec<Proof>,
    range: CompactRange,
    /// The next index expected; past the largest index seen.
    next: u64,
    /// False once an index was out of place or a leaf hash unreadable: the entries
    /// no longer define a tree.
    contiguous: bool,
    /// Prefix sizes whose roots the later checks need, and the roots once reached.
    roots: BTreeMap<u64, Option<Hash>>,
    entry_failures: u64,
}

impl Verification {
    /// Starts a verification from the bundle's checkpoint, origin, vkey and
    /// consistency proofs; `head.entries` is not read.
    pub fn begin(
        head: &AuditBundle,
        verifier: &NoteVerifier,
        old_checkpoint_note: Option<&str>,
    ) -> Self {
        let key = format!("{}+{:08x}", verifier.name(), verifier.key_id());
        let mut failures = Vec::new();
        let checkpoint = open_current(head, verifier, &key, &mut failures);

        let mut roots = BTreeMap::new();
        let (mut old_report, old) = match old_checkpoint_note {
            Some(note) => open_old(note, verifier, &key, checkpoint.as_ref(), &mut failures),
            None => (None, None),
        };
        if let (Some(cp), Some(prev), Some(check)) = (&checkpoint, &old, &mut old_report) {
            compare_old(cp, prev, check, &mut roots, &mut failures);
        }

        let mut proofs = Vec::new();
        if let Some(cp) = &checkpoint {
            roots.insert(cp.size, None);
            proofs = parse_proofs(head, cp, &mut roots, &mut failures);
        }
        if let Some(slot) = roots.get_mut(&0) {
            *slot = Some(empty_root());
        }

        let report = VerifyReport {
            origin: checkpoint
                .as_ref()
                .map_or_else(|| head.origin.clone(), |cp| cp.origin.clone()),
            signed: checkpoint.is_some(),
            size: checkpoint.as_ref().map(|cp| cp.size),
            root: checkpoint.as_ref().map(|cp| cp.root),
            entries_checked: 0,
            entries_unreadable: 0,
            old_checkpoint: old_report,
            consistency_proofs_checked: 0,
            failures,
        };
        Self {
            report,
            checkpoint,
            old,
            proofs,
            range: CompactRange::new(),
            next: 0,
            contiguous: true,
            roots,
            entry_failures: 0,
        }
    }

    fn entry_failure(&mut self, failure: Failure) {
        debug_assert!(failure.is_per_entry());
        self.entry_failures += 1;
        if self.entry_failures <= ENTRY_FAILURES_MAX as u64 {
            self.report.failures.push(failure);
        }
    }

    /// Checks the next entry.
    pub fn entry(&mut self, entry: &BundleEntry) {
        self.report.entries_checked += 1;
        let index = entry.index;
        if index > self.next {
            self.entry_failure(Failure::EntriesMissing {
                first: self.next,
                last: index - 1,
            });
            self.contiguous = false;
        } else if index < self.next {
            self.entry_failure(Failure::EntryOutOfOrder {
                index,
                previous: self.next - 1,
            });
            self.contiguous = false;
        }
        // A repeated or earlier index must not make the next entry look like a gap.
        self.next = self.next.max(index.saturating_add(1));

        let leaf = hash_from_b64(&entry.leaf_hash);
        if leaf.is_none() {
            self.entry_failure(Failure::LeafHashMalformed { index });
            self.contiguous = false;
        }
        match &entry.event {
            None => self.report.entries_unreadable += 1,
            Some(event) => match leaf_hash_of_json(event) {
                Err(e) => self.entry_failure(Failure::EventNotCanonical {
                    index,
                    reason: e.to_string(),
                }),
                Ok(computed) => {
                    if leaf.is_some_and(|l| l != computed) {
                        self.entry_failure(Failure::EventHashMismatch { index });
                    }
                }
            },
        }

        if let (true, Some(leaf)) = (self.contiguous, leaf) {
            self.range.push(leaf);
            if let Some(slot) = self.roots.get_mut(&self.range.size()) {
                *slot = Some(self.range.root());
            }
        }
    }

    /// The prefix root at `size`, recomputed from the entries.
    fn computed_root(&self, size: u64) -> Option<Hash> {
        self.roots.get(&size).copied().flatten()
    }

    /// Runs the checks that need every entry and returns the report.
    pub fn finish(mut self) -> VerifyReport {
        let listed = ENTRY_FAILURES_MAX as u64;
        if self.entry_failures > listed {
            self.report.failures.push(Failure::MoreEntryFailures {
                more: self.entry_failures - listed,
            });
        }
        let Some(cp) = self.checkpoint.take() else {
            return self.report;
        };
        if self.next < cp.size {
            self.report.failures.push(Failure::Truncated {
                held: self.report.entries_checked,
                size: cp.size,
                next: self.next,
            });
        } else if self.next > cp.size {
            self.report.failures.push(Failure::ExtraEntries {
                last: self.next - 1,
                size: cp.size,
            });
        }
        // The entries are the log only if they cover the checkpoint without a gap
        // and their root is the signed one; their prefix roots are trusted only then.
        let mut entries_match = false;
        if self.contiguous
            && let Some(root) = self.computed_root(cp.size)
        {
            entries_match = root == cp.root;
            if !entries_match {
                self.report
                    .failures
                    .push(Failure::RootMismatch { size: cp.size });
            }
        }
        let trusted_root = |size: u64| -> Option<Hash> {
            if size == cp.size {
                return Some(cp.root);
            }
            if let Some(prev) = &self.old
                && prev.size == size
            {
                return Some(prev.root);
            }
            entries_match.then(|| self.computed_root(size)).flatten()
        };

        let mut proven_old = false;
        let mut checked = 0;
        let mut proof_failures = Vec::new();
        for p in &self.proofs {
            let (Some(old_root), Some(new_root)) = (trusted_root(p.old), trusted_root(p.new))
            else {
                // A root is missing only when the entries are already reported broken.
                continue;
            };
            match verify_consistency(p.old, p.new, &p.hashes, &old_root, &new_root) {
                Ok(()) => {
                    checked += 1;
                    if let Some(prev) = &self.old
                        && prev.size == p.old
                        && p.new == cp.size
                    {
                        proven_old = true;
                    }
                }
                Err(e) => proof_failures.push(Failure::ConsistencyProofInvalid {
                    old: p.old,
                    new: p.new,
                    reason: e.to_string(),
                }),
            }
        }

        let old_prefix_root = self
            .old
            .as_ref()
            .and_then(|prev| self.computed_root(prev.size));
        if let (Some(prev), Some(check)) = (&self.old, &mut self.report.old_checkpoint)
            && prev.size > 0
            && prev.size < cp.size
        {
            if entries_match {
                match old_prefix_root {
                    Some(root) if root == prev.root => check.consistent = true,
                    _ => self.report.failures.push(Failure::Fork {
                        old_size: prev.size,
                    }),
                }
            } else if proven_old {
                check.consistent = true;
            }
        }
        self.report.failures.extend(proof_failures);
        self.report.consistency_proofs_checked = checked;
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Attr, AuditEvent, Outcome, Subject};
    use crate::note::NoteSigner;
    use crate::proof::{NodeId, consistency_plan};
    use crate::{leaf_hash, root_of};

    const ORIGIN: &str = "bulkhead.test/tenants/tn_1";

    fn event(i: u64, flavour: &str) -> Value {
        let mut e = AuditEvent::new(
            if i.is_multiple_of(3) {
                "document.read"
            } else {
                "search.query"
            },
            format!("2026-11-27T12:00:{:02}.000Z", i % 60),
            format!("key:bhk_{flavour}{i}"),
            if i % 5 == 4 {
                Outcome::Denied
            } else {
                Outcome::Allowed
            },
        );
        e.subjects
            .push(Subject::new("document", format!("doc-{i}")).with_content(b"text"));
        e.attrs.insert("count".into(), Attr::Int(i as i64));
        serde_json::to_value(&e).unwrap()
    }

    /// A log of `n` events as the server would serve it.
    fn entries(n: u64, flavour: &str) -> Vec<BundleEntry> {
        (0..n)
            .map(|i| {
                let event = event(i, flavour);
                BundleEntry {
                    index: i,
                    leaf_hash: b64(&leaf_hash_of_json(&event).unwrap()),
                    event: Some(event),
                }
            })
            .collect()
    }

    fn leaves(entries: &[BundleEntry]) -> Vec<Hash> {
        entries
            .iter()
            .map(|e| hash_from_b64(&e.leaf_hash).unwrap())
            .collect()
    }

    fn sign(signer: &NoteSigner, origin: &str, entries: &[BundleEntry]) -> String {
        let leaves = leaves(entries);
        Checkpoint {
            origin: origin.into(),
            size: leaves.len() as u64,
            root: root_of(&leaves),
        }
        .sign(signer)
        .unwrap()
    }

    fn consistency(entries: &[BundleEntry], old: u64) -> BundleConsistency {
        let all = leaves(entries);
        let node = |id: NodeId| {
            let begin = usize::try_from(id.index << id.level).ok()?;
            let end = begin + (1usize << id.level);
            (end <= all.len()).then(|| root_of(&all[begin..end]))
        };
        let new = entries.len() as u64;
        let proof = consistency_plan(old, new).unwrap().resolve(node).unwrap();
        BundleConsistency {
            old,
            new,
            proof: proof.iter().map(|h| b64(h)).collect(),
        }
    }

    struct Fixture {
        signer: NoteSigner,
        verifier: NoteVerifier,
        entries: Vec<BundleEntry>,
        bundle: AuditBundle,
    }

    fn fixture(n: u64) -> Fixture {
        let signer = NoteSigner::generate("bulkhead.test").unwrap();
        let verifier = NoteVerifier::from_vkey(&signer.vkey()).unwrap();
        let entries = entries(n, "a");
        let bundle = AuditBundle {
            format: BundleFormat::V1,
            origin: ORIGIN.into(),
            vkey: signer.vkey(),
            checkpoint: sign(&signer, ORIGIN, &entries),
            consistency: Vec::new(),
            entries: entries.clone(),
        };
        Fixture {
            signer,
            verifier,
            entries,
            bundle,
        }
    }

    /// Tampers with a good 20-entry bundle and checks the failures named, exactly.
    fn check(
        tamper: impl FnOnce(&mut Fixture) -> Option<String>,
        expect: &[Failure],
    ) -> VerifyReport {
        let mut f = fixture(20);
        let old = tamper(&mut f);
        // Whatever is verified survives the trip through its file encoding.
        let bundle = AuditBundle::from_slice(f.bundle.to_json().as_bytes()).unwrap();
        assert_eq!(bundle, f.bundle);
        let report = verify_bundle(&bundle, &f.verifier, old.as_deref());
        assert_eq!(report.failures, expect);
        assert_eq!(report.is_ok(), expect.is_empty());
        report
    }

    #[test]
    fn a_good_bundle_passes_at_every_shape() {
        for n in [0, 1, 2, 3, 7, 8, 64, 1001] {
            let f = fixture(n);
            let report = verify_bundle(&f.bundle, &f.verifier, None);
            assert!(report.is_ok(), "size {n}: {:?}", report.failures);
            assert_eq!(report.size, Some(n));
            assert_eq!(report.entries_checked, n);
            assert_eq!(report.origin, ORIGIN);
            assert_eq!(report.root, Some(root_of(&leaves(&f.entries))));
        }
    }

    #[test]
    fn null_events_are_unreadable_not_failures() {
        let report = check(
            |f| {
                for i in [0, 7, 19] {
                    f.bundle.entries[i].event = None;
                }
                None
            },
            &[],
        );
        assert_eq!(report.entries_unreadable, 3);
        assert_eq!(report.entries_checked, 20);
    }

    #[test]
    fn an_edited_event_field_is_caught() {
        check(
            |f| {
                f.bundle.entries[4].event.as_mut().unwrap()["actor"] = "key:bhk_someone".into();
                None
            },
            &[Failure::EventHashMismatch { index: 4 }],
        );
    }

    #[test]
    fn an_edited_leaf_hash_is_caught() {
        check(
            |f| {
                f.bundle.entries[3].leaf_hash = b64(&leaf_hash(b"other"));
                None
            },
            &[
                Failure::EventHashMismatch { index: 3 },
                Failure::RootMismatch { size: 20 },
            ],
        );
        // Edited event and a leaf hash recomputed to match: only the root tells.
        check(
            |f| {
                let e = &mut f.bundle.entries[11];
                e.event.as_mut().unwrap()["outcome"] = "denied".into();
                e.leaf_hash = b64(&leaf_hash_of_json(e.event.as_ref().unwrap()).unwrap());
                None
            },
            &[Failure::RootMismatch { size: 20 }],
        );
        check(
            |f| {
                f.bundle.entries[2].leaf_hash = "not a hash".into();
                None
            },
            &[Failure::LeafHashMalformed { index: 2 }],
        );
    }

    #[test]
    fn a_flipped_signature_byte_is_caught() {
        let mut f = fixture(5);
        let note = f.bundle.checkpoint.clone();
        let at = note.rfind(' ').unwrap() + 1;
        let mut sig = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            note[at..].trim_end(),
        )
        .unwrap();
        sig[10] ^= 0x80;
        f.bundle.checkpoint = format!("{}{}\n", &note[..at], b64(&sig));
        let report = verify_bundle(&f.bundle, &f.verifier, None);
        let key = format!("bulkhead.test+{:08x}", f.verifier.key_id());
        assert_eq!(
            report.failures,
            [Failure::CheckpointSignatureInvalid { key }]
        );
        assert!(!report.signed && report.size.is_none() && !report.is_ok());
        assert!(report.failures[0].to_string().contains("does not verify"));
    }

    #[test]
    fn truncated_entries_are_caught() {
        let report = check(
            |f| {
                f.bundle.entries.truncate(17);
                None
            },
            &[Failure::Truncated {
                held: 17,
                size: 20,
                next: 17,
            }],
        );
        assert_eq!(
            report.failures[0].to_string(),
            "the export holds 17 entries but the checkpoint commits to 20 (truncated: entry 17 and later are missing)"
        );
    }

    #[test]
    fn a_removed_or_repeated_middle_entry_is_caught() {
        let report = check(
            |f| {
                f.bundle.entries.remove(5);
                None
            },
            &[Failure::EntriesMissing { first: 5, last: 5 }],
        );
        assert_eq!(
            report.failures[0].to_string(),
            "entry 5 is missing: the indices are not contiguous (they jump from 4 to 6)"
        );
        check(
            |f| {
                f.bundle.entries.drain(0..3);
                None
            },
            &[Failure::EntriesMissing { first: 0, last: 2 }],
        );
        check(
            |f| {
                let copy = f.bundle.entries[8].clone();
                f.bundle.entries.insert(9, copy);
                None
            },
            &[Failure::EntryOutOfOrder {
                index: 8,
                previous: 8,
            }],
        );
        // Removed and renumbered: the count and the root tell.
        check(
            |f| {
                f.bundle.entries.remove(5);
                for (i, e) in f.bundle.entries.iter_mut().enumerate() {
                    e.index = i as u64;
                }
                None
            },
            &[Failure::Truncated {
                held: 19,
                size: 20,
                next: 19,
            }],
        );
    }

    #[test]
    fn entries_beyond_the_checkpoint_are_caught() {
        check(
            |f| {
                let extra = entries(21, "a").pop().unwrap();
                f.bundle.entries.push(extra);
                None
            },
            &[Failure::ExtraEntries { last: 20, size: 20 }],
        );
    }

    #[test]
    fn an_older_checkpoint_of_the_same_history_is_consistent() {
        for old in [0, 1, 7, 19, 20] {
            let report = check(
                |f| {
                    let prev = sign(&f.signer, ORIGIN, &f.entries[..old]);
                    if old > 0 && old < 20 {
                        f.bundle
                            .consistency
                            .push(consistency(&f.entries, old as u64));
                    }
                    Some(prev)
                },
                &[],
            );
            let check = report.old_checkpoint.unwrap();
            assert_eq!(check.size, old as u64);
            assert!(check.consistent, "old {old}");
            assert_eq!(
                report.consistency_proofs_checked,
                u64::from(old > 0 && old < 20)
            );
        }
        // Without entries to recompute from, the proof alone shows consistency.
        let mut f = fixture(20);
        let prev = sign(&f.signer, ORIGIN, &f.entries[..6]);
        f.bundle.consistency.push(consistency(&f.entries, 6));
        f.bundle.entries.clear();
        let report = verify_bundle(&f.bundle, &f.verifier, Some(&prev));
        assert!(report.old_checkpoint.unwrap().consistent);
        assert_eq!(report.consistency_proofs_checked, 1);
    }

    #[test]
    fn a_rollback_is_caught() {
        let report = check(
            |f| {
                let longer = entries(25, "a");
                Some(sign(&f.signer, ORIGIN, &longer))
            },
            &[Failure::Rollback {
                old_size: 25,
                size: 20,
            }],
        );
        assert!(
            report.failures[0]
                .to_string()
                .starts_with("rollback: your checkpoint has size 25 but the log now has 20")
        );
    }

    #[test]
    fn a_fork_is_caught() {
        // The older checkpoint comes from another history of the same log.
        let report = check(
            |f| {
                let other = entries(12, "b");
                Some(sign(&f.signer, ORIGIN, &other))
            },
            &[Failure::Fork { old_size: 12 }],
        );
        assert!(
            report.failures[0]
                .to_string()
                .contains("history was rewritten")
        );
        assert!(!report.old_checkpoint.unwrap().consistent);
        // Same size, other root.
        check(
            |f| Some(sign(&f.signer, ORIGIN, &entries(20, "b"))),
            &[Failure::Fork { old_size: 20 }],
        );
        // The server's proof from the user's checkpoint does not verify either.
        check(
            |f| {
                f.bundle.consistency.push(consistency(&f.entries, 12));
                Some(sign(&f.signer, ORIGIN, &entries(12, "b")))
            },
            &[
                Failure::Fork { old_size: 12 },
                Failure::ConsistencyProofInvalid {
                    old: 12,
                    new: 20,
                    reason: "the first root does not match the proof".into(),
                },
            ],
        );
    }

    #[test]
    fn a_bad_consistency_proof_is_caught() {
        check(
            |f| {
                let mut c = consistency(&f.entries, 6);
                c.proof[0] = b64(&leaf_hash(b"forged"));
                f.bundle.consistency.push(c);
                None
            },
            &[Failure::ConsistencyProofInvalid {
                old: 6,
                new: 20,
                reason: "the first root does not match the proof".into(),
            }],
        );
        check(
            |f| {
                f.bundle.consistency.push(BundleConsistency {
                    old: 3,
                    new: 20,
                    proof: vec!["zz".into()],
                });
                None
            },
            &[Failure::ConsistencyProofMalformed {
                old: 3,
                new: 20,
                reason: "hash 0 is not a base64 SHA-256 hash".into(),
            }],
        );
    }

    #[test]
    fn the_wrong_key_is_named() {
        let mut f = fixture(4);
        let other = NoteSigner::generate("bulkhead.test").unwrap();
        let wrong = NoteVerifier::from_vkey(&other.vkey()).unwrap();
        let prev = sign(&f.signer, ORIGIN, &f.entries[..2]);
        let report = verify_bundle(&f.bundle, &wrong, Some(&prev));
        let key = format!("bulkhead.test+{:08x}", other.key_id());
        let export_key = format!("bulkhead.test+{:08x}", f.signer.key_id());
        assert_eq!(
            report.failures,
            [
                Failure::CheckpointNotSignedByKey {
                    key: key.clone(),
                    export_key: Some(export_key.clone()),
                },
                Failure::OldCheckpointNotSignedByKey { key: key.clone() },
            ]
        );
        let message = report.failures[0].to_string();
        assert!(
            message.contains(&key) && message.contains(&export_key),
            "{message}"
        );
        assert!(report.old_checkpoint.is_none());
        // An older checkpoint signed by someone else is named as such.
        f.bundle.entries.clear();
        let forged = sign(&other, ORIGIN, &f.entries[..2]);
        let report = verify_bundle(&f.bundle, &f.verifier, Some(&forged));
        assert!(matches!(
            report.failures[..],
            [
                Failure::OldCheckpointNotSignedByKey { .. },
                Failure::Truncated { .. }
            ]
        ));
    }

    #[test]
    fn origins_must_agree() {
        check(
            |f| {
                f.bundle.origin = "bulkhead.test/tenants/tn_2".into();
                None
            },
            &[Failure::OriginMismatch {
                checkpoint: ORIGIN.into(),
                bundle: "bulkhead.test/tenants/tn_2".into(),
            }],
        );
        check(
            |f| Some(sign(&f.signer, "bulkhead.test/operator", &f.entries[..3])),
            &[Failure::OldCheckpointOrigin {
                old: "bulkhead.test/operator".into(),
                current: ORIGIN.into(),
            }],
        );
    }

    #[test]
    fn per_entry_failures_are_capped() {
        let mut f = fixture(300);
        for e in &mut f.bundle.entries {
            e.event.as_mut().unwrap()["kind"] = "edited".into();
        }
        let report = verify_bundle(&f.bundle, &f.verifier, None);
        assert_eq!(report.failures.len(), ENTRY_FAILURES_MAX + 1);
        assert_eq!(
            report.failures.last(),
            Some(&Failure::MoreEntryFailures { more: 200 })
        );
    }

    #[test]
    fn unknown_formats_and_fields_are_refused() {
        let f = fixture(2);
        let json = f.bundle.to_json();
        let v2 = json.replace(FORMAT, "bulkhead-audit-export/v2");
        assert_eq!(
            AuditBundle::from_slice(v2.as_bytes()),
            Err(BundleError::UnknownFormat(
                "bulkhead-audit-export/v2".into()
            ))
        );
        assert_eq!(
            AuditBundle::from_slice(br#"{"entries": []}"#),
            Err(BundleError::NotABundle)
        );
        let extra = json.replacen("\"origin\"", "\"extra\":1,\"origin\"", 1);
        assert!(matches!(
            AuditBundle::from_slice(extra.as_bytes()),
            Err(BundleError::Malformed(_))
        ));
        assert!(matches!(
            AuditBundle::from_slice(b"not json"),
            Err(BundleError::Malformed(_))
        ));
    }

    #[test]
    fn the_report_serializes_with_codes_and_messages() {
        let mut f = fixture(3);
        f.bundle.entries.truncate(1);
        let report = verify_bundle(&f.bundle, &f.verifier, None);
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["size"], 3);
        assert_eq!(value["root"], b64(&root_of(&leaves(&f.entries))));
        assert_eq!(value["failures"][0]["code"], "truncated");
        assert_eq!(value["failures"][0]["held"], 1);
        assert!(
            value["failures"][0]["message"]
                .as_str()
                .unwrap()
                .contains("truncated")
        );
    }
}
