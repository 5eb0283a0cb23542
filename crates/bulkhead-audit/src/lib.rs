//! The audit logs as a running service: one Merkle log per tenant and one for the
//! operator, durable appends, signed checkpoints, proofs from stored tiles.
//!
//! Write path of one event (see ARCHITECTURE.md, "Audit ledger"):
//! 1. `Audit::record` encodes the event canonically, hashes the leaf and seals the
//!    body (tenant key for a tenant log, a server-derived key for the operator log)
//!    on the caller's task, then queues `(log, leaf, sealed body)`.
//! 2. One sequencer task takes everything queued (up to `batch_len_max`), appends
//!    each log's leaves to its in-memory right edge (`bulkhead_ledger::tiles`), and
//!    hands the store one `audit_append` with the entries and the changed tiles —
//!    one transaction, one fsync, compare-and-set on each log's size.
//! 3. Each caller learns its index only after that commit: an acknowledged event is
//!    durable and in the tree.
//!
//! Checkpoints: a log that grew is signed at most once per `checkpoint_interval`
//! (and on demand when a client asks for its checkpoint), so signing cost follows
//! the number of active logs, not the number of entries. Before signing, the new
//! tree is proved consistent with the last signed checkpoint from stored hashes; if
//! it is not (storage edited or rolled back), the service refuses to sign and says
//! so loudly (invariant 5).
//!
//! Replicas on one shared store: each process's sequencer appends with
//! compare-and-set on the log's size and, when another replica moved the log,
//! reloads the right edge from the store and retries, so logs never fork or leave
//! gaps. Background signing is done by one leader (`Store::try_lead`), which finds
//! every replica's growth with `audit_logs_behind`; an on-demand signature from any
//! replica is still safe, because a checkpoint is stored only by compare-and-set on
//! the previous checkpoint's size and only after the consistency proof.
//!
//! Must never: put content or a secret in an event; acknowledge an event before it
//! is durable; sign a checkpoint it has not proved consistent with the previous one.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_crypto::Xaes256Gcm;
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::AuditEvent;
use bulkhead_ledger::note::{NoteSigner, NoteVerifier};
use bulkhead_ledger::proof::{self, NodeId, ProofPlan};
use bulkhead_ledger::tiles::{FULL_TILE_BYTES, RightEdge, TILE_WIDTH, Tile, TileId};
use bulkhead_ledger::{Hash, hex, leaf_hash};
use bulkhead_store::{
    AuditAppend, AuditEntryRow, AuditHead, AuditTileRow, RecordRow, Store, StoreError,
};
use bulkhead_types::{KeyVersion, LogId, UnixMillis};
use bulkhead_vault::{NewSealed, Vault, VaultError};
use lru::LruCache;
use tokio::sync::{mpsc, oneshot};

pub use bulkhead_ledger::event::{Attr, Outcome, Subject};

/// Tuning and identity. Every count is a limit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The server's name: the prefix of every log's origin and the signing key's name.
    pub server_name: String,
    /// How often logs that grew get a new signed checkpoint.
    pub checkpoint_interval: Duration,
    /// Events appended in one store transaction at most.
    pub batch_len_max: usize,
    /// Events waiting for the sequencer at most; a full queue makes callers wait.
    pub queue_len_max: usize,
    /// Memory for cached tiles (proof generation), in bytes.
    pub tile_cache_bytes_max: usize,
    /// Logs whose right edge is kept in memory between appends.
    pub edge_cache_len_max: usize,
    /// Entries returned by one `entries` call at most.
    pub entries_page_max: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            server_name: "bulkhead.local".into(),
            checkpoint_interval: Duration::from_secs(1),
            batch_len_max: 4096,
            queue_len_max: 65_536,
            tile_cache_bytes_max: 64 << 20,
            edge_cache_len_max: 10_000,
            entries_page_max: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The caller asked for something the log cannot answer (index beyond size…).
    #[error("{0}")]
    Invalid(String),
    /// Storage no longer matches what was signed: refuse and alert.
    #[error("audit log {log} is inconsistent with its signed checkpoint: {detail}")]
    Inconsistent { log: String, detail: String },
    /// The store or the sequencer is not available.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> Self {
        AuditError::Unavailable(e.to_string())
    }
}

impl From<VaultError> for AuditError {
    fn from(e: VaultError) -> Self {
        AuditError::Unavailable(e.to_string())
    }
}

pub type AuditResult<T> = Result<T, AuditError>;

/// Where an acknowledged event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef {
    pub index: u64,
    pub leaf_hash: Hash,
}

/// A signed checkpoint and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub note: String,
    pub checkpoint: Checkpoint,
    pub signed_at: Option<UnixMillis>,
}

/// One entry as a reader gets it: the event is `None` when its body can no longer
/// be opened (the tenant was crypto-shredded).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryView {
    pub index: u64,
    pub leaf_hash: Hash,
    pub event: Option<serde_json::Value>,
}

/// A log's state for listings and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    pub log: LogId,
    pub size: u64,
    pub checkpoint_size: u64,
    pub checkpoint_at: Option<UnixMillis>,
}

/// Running totals since start, for metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events durably appended.
    pub events: AtomicU64,
    /// Store transactions that appended them (events / batches = group size).
    pub batches: AtomicU64,
    /// Checkpoints signed and stored.
    pub checkpoints: AtomicU64,
    /// Times the service refused to sign because storage no longer matched.
    pub refusals: AtomicU64,
}

struct Pending {
    log: LogId,
    leaf: Hash,
    key_version: u32,
    sealed: Vec<u8>,
    created_at: UnixMillis,
    /// Sealed records committed with this entry (see `record_with`).
    records: Vec<RecordRow>,
    /// The event body and the records in the clear, kept until the append
    /// commits: a tenant log's append the store refuses because a data key
    /// version was retired meanwhile is sealed again under the current one.
    body: zeroize::Zeroizing<Vec<u8>>,
    plain_records: Vec<NewSealed>,
    reply: oneshot::Sender<AuditResult<u64>>,
}

#[derive(Debug)]
pub struct Audit {
    vault: Arc<Vault>,
    store: Arc<dyn Store>,
    signer: NoteSigner,
    verifier: NoteVerifier,
    options: AuditOptions,
    operator_key: Xaes256Gcm,
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    sequencer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    checkpointer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    tiles: Mutex<LruCache<(LogId, TileId), Arc<Tile>>>,
    /// A lower bound of each recently used log's size (logs only grow), so a proof
    /// for a size already seen needs no store round trip to check it.
    sizes: Mutex<LruCache<LogId, u64>>,
    /// Logs appended to since their last checkpoint.
    dirty: Mutex<HashSet<LogId>>,
    /// One signing at a time per process: two concurrent signers of one log could
    /// otherwise both pass the consistency check against the same predecessor.
    signing: tokio::sync::Mutex<()>,
    stats: AuditStats,
}

const OPERATOR_AAD: &[u8] = b"bulkhead/audit/operator/v1";
const OPERATOR_KEY_PURPOSE: &str = "bulkhead/audit-operator-events/v1";

impl Audit {
    /// Starts the service: the sequencer, and the checkpointer that also signs
    /// logs a previous run left behind their checkpoint.
    pub fn start(
        vault: Arc<Vault>,
        signer: NoteSigner,
        options: AuditOptions,
    ) -> AuditResult<Arc<Self>> {
        let verifier = NoteVerifier::from_vkey(&signer.vkey())
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
        let operator_key = Xaes256Gcm::new(&vault.derive_server_key(OPERATOR_KEY_PURPOSE))
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let tiles_len = NonZeroUsize::new((options.tile_cache_bytes_max / FULL_TILE_BYTES).max(16))
            .expect("at least 16");
        let (tx, rx) = mpsc::channel(options.queue_len_max.max(1));
        let audit = Arc::new(Self {
            store: Arc::clone(vault.store()),
            vault,
            signer,
            verifier,
            operator_key,
            queue: Mutex::new(Some(tx)),
            sequencer: Mutex::new(None),
            checkpointer: Mutex::new(None),
            tiles: Mutex::new(LruCache::new(tiles_len)),
            sizes: Mutex::new(LruCache::new(
                NonZeroUsize::new(options.edge_cache_len_max.max(1)).expect("at least 1"),
            )),
            dirty: Mutex::new(HashSet::new()),
            signing: tokio::sync::Mutex::new(()),
            stats: AuditStats::default(),
            options,
        });
        let sequencer = tokio::spawn(sequence(Arc::clone(&audit), rx));
        *audit.sequencer.lock().expect("fresh mutex") = Some(sequencer);
        let weak = Arc::downgrade(&audit);
        let interval = audit.options.checkpoint_interval;
        let checkpointer = tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(audit) = weak.upgrade() else { return };
                if audit.store.is_shared() {
                    // Several replicas share the store: only the leader signs in the
                    // background, and it learns of other replicas' appends from the
                    // store, not from its own sequencer.
                    if audit.leads().await {
                        audit.sign_logs_left_behind().await;
                        audit.sign_dirty().await;
                    } else {
                        audit
                            .dirty
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clear();
                    }
                    drop(audit);
                    tokio::time::sleep(interval).await;
                    continue;
                }
                if first {
                    audit.sign_logs_left_behind().await;
                    first = false;
                }
                audit.sign_dirty().await;
                drop(audit);
                tokio::time::sleep(interval).await;
            }
        });
        *audit.checkpointer.lock().expect("fresh mutex") = Some(checkpointer);
        Ok(audit)
    }

    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }

    /// The C2SP verifier key for every checkpoint this server signs.
    pub fn vkey(&self) -> String {
        self.signer.vkey()
    }

    pub fn server_name(&self) -> &str {
        &self.options.server_name
    }

    pub fn options(&self) -> &AuditOptions {
        &self.options
    }

    /// The origin line of a log's checkpoints.
    pub fn origin(&self, log: &LogId) -> String {
        match log {
            LogId::Operator => format!("{}/operator", self.options.server_name),
            LogId::Tenant(t) => format!("{}/tenants/{}", self.options.server_name, t),
        }
    }

    /// A new event of `kind` at the vault's current time.
    pub fn event(&self, kind: &str, actor: impl Into<String>, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(kind, self.vault.now().rfc3339(), actor.into(), outcome)
    }

    /// Appends an event and returns once it is durable.
    pub async fn record(&self, log: &LogId, event: &AuditEvent) -> AuditResult<EntryRef> {
        self.record_with(log, event, Vec::new()).await
    }

    /// Like `record`, and writes `records` (of the log's tenant, sealed here) in
    /// the same transaction as the entry: a decision trace and the event that logs
    /// its hash become durable together, with one commit.
    pub async fn record_with(
        &self,
        log: &LogId,
        event: &AuditEvent,
        plain_records: Vec<NewSealed>,
    ) -> AuditResult<EntryRef> {
        let created_at = self.vault.now();
        let records = match log {
            LogId::Tenant(tenant) if !plain_records.is_empty() => {
                self.vault
                    .seal_for_log(tenant, &plain_records, created_at)
                    .await?
            }
            LogId::Tenant(_) => Vec::new(),
            LogId::Operator if plain_records.is_empty() => Vec::new(),
            LogId::Operator => {
                return Err(AuditError::Invalid(
                    "records ride only with their tenant's log".into(),
                ));
            }
        };
        let body = zeroize::Zeroizing::new(event.canonical_bytes());
        let leaf = leaf_hash(&body);
        let leaf_hex = hex(&leaf);
        let (key_version, sealed) = match log {
            LogId::Operator => {
                let aad = [OPERATOR_AAD, leaf_hex.as_bytes()].concat();
                let sealed = self
                    .operator_key
                    .seal(&aad, &body)
                    .map_err(|e| AuditError::Unavailable(e.to_string()))?;
                (0, sealed)
            }
            LogId::Tenant(tenant) => {
                let (version, sealed) = self
                    .vault
                    .seal_audit_event(tenant, &leaf_hex, &body)
                    .await?;
                (version.get(), sealed)
            }
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            log: log.clone(),
            leaf,
            key_version,
            sealed,
            created_at,
            records,
            body,
            plain_records,
            reply,
        };
        let sender = {
            let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .clone()
                .ok_or_else(|| AuditError::Unavailable("the audit log is shut down".into()))?
        };
        sender
            .send(pending)
            .await
            .map_err(|_| AuditError::Unavailable("the audit sequencer stopped".into()))?;
        let index = answer
            .await
            .map_err(|_| AuditError::Unavailable("the audit sequencer stopped".into()))??;
        Ok(EntryRef {
            index,
            leaf_hash: leaf,
        })
    }

    /// The index of the entry whose leaf hash is `leaf`, if the log has one.
    pub async fn index_of(&self, log: &LogId, leaf: &Hash) -> AuditResult<Option<u64>> {
        Ok(self.store.audit_index_of(log, leaf).await?)
    }

    pub async fn head(&self, log: &LogId) -> AuditResult<AuditHead> {
        Ok(self.store.audit_head(log).await?)
    }

    /// The latest signed checkpoint, signing one first if the log grew since.
    pub async fn checkpoint(&self, log: &LogId) -> AuditResult<SignedCheckpoint> {
        let head = self.store.audit_head(log).await?;
        if head.size > head.checkpoint_size || head.checkpoint.is_none() {
            return self.sign(log).await;
        }
        self.parse_stored(log, &head)
    }

    fn parse_stored(&self, log: &LogId, head: &AuditHead) -> AuditResult<SignedCheckpoint> {
        let note = head
            .checkpoint
            .as_deref()
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| AuditError::Inconsistent {
                log: log.to_string(),
                detail: "the stored checkpoint is not a note".into(),
            })?;
        let checkpoint =
            Checkpoint::open(note, &self.verifier).map_err(|e| AuditError::Inconsistent {
                log: log.to_string(),
                detail: format!(
                    "the stored checkpoint does not verify under this server's key: {e}"
                ),
            })?;
        Ok(SignedCheckpoint {
            note: note.to_owned(),
            checkpoint,
            signed_at: head.checkpoint_at,
        })
    }

    /// Signs a checkpoint of the log at its current size, after proving the tree
    /// consistent with the last checkpoint signed for it.
    pub async fn sign(&self, log: &LogId) -> AuditResult<SignedCheckpoint> {
        let _one_signer = self.signing.lock().await;
        let head = self.store.audit_head(log).await?;
        if head.checkpoint.is_some() && head.size == head.checkpoint_size {
            return self.parse_stored(log, &head);
        }
        let inconsistent = |detail: String| {
            self.stats.refusals.fetch_add(1, Ordering::Relaxed);
            tracing::error!(log = %log, %detail,
                "REFUSING TO SIGN an audit checkpoint: the stored log no longer matches what this \
                 server signed. Storage was edited or rolled back; treat it as an incident and \
                 compare with checkpoints clients hold (bulkhead audit verify)");
            AuditError::Inconsistent {
                log: log.to_string(),
                detail,
            }
        };
        let root = self.root_at(log, head.size).await?;
        if head.checkpoint.is_some() {
            let previous = self.parse_stored(log, &head)?;
            let prev = &previous.checkpoint;
            if prev.size > head.size {
                return Err(inconsistent(format!(
                    "the log has {} entries but a checkpoint of {} was signed: it was truncated",
                    head.size, prev.size
                )));
            }
            if prev.origin != self.origin(log) {
                return Err(inconsistent(format!(
                    "the last checkpoint is for origin {:?}",
                    prev.origin
                )));
            }
            if prev.size > 0 {
                let proof = self
                    .consistency_proof_unchecked(log, prev.size, head.size)
                    .await?;
                if let Err(e) =
                    proof::verify_consistency(prev.size, head.size, &proof, &prev.root, &root)
                {
                    return Err(inconsistent(format!(
                        "size {} is not consistent with the signed size {}: {e}",
                        head.size, prev.size
                    )));
                }
            }
        }
        let checkpoint = Checkpoint {
            origin: self.origin(log),
            size: head.size,
            root,
        };
        let note = checkpoint
            .sign(&self.signer)
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let now = self.vault.now();
        let stored = if head.size == 0 {
            // Nothing was ever appended: the log has no row; don't make one just to
            // sign the empty tree.
            false
        } else {
            self.store
                .audit_set_checkpoint(
                    log,
                    head.checkpoint_size,
                    head.size,
                    note.clone().into_bytes(),
                    now,
                )
                .await?
        };
        if head.size > 0 && !stored {
            // Another signer got there first; theirs passed the same checks.
            let head = self.store.audit_head(log).await?;
            return self.parse_stored(log, &head);
        }
        if stored {
            self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(log = %log, size = head.size, "audit checkpoint signed");
        }
        Ok(SignedCheckpoint {
            note,
            checkpoint,
            signed_at: stored.then_some(now),
        })
    }

    async fn sign_dirty(&self) {
        let logs: Vec<LogId> = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            dirty.drain().collect()
        };
        for log in logs {
            if let Err(e) = self.sign(&log).await {
                tracing::warn!(log = %log, error = %e, "audit checkpoint not signed");
            }
        }
    }

    async fn sign_logs_left_behind(&self) {
        match self.store.audit_logs_behind(10_000).await {
            Ok(logs) => {
                let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
                dirty.extend(logs);
            }
            Err(e) => tracing::warn!(error = %e, "could not list audit logs awaiting a checkpoint"),
        }
    }

    /// Entries `start..end` (end exclusive, capped at `entries_page_max`) with their
    /// events opened.
    pub async fn entries(&self, log: &LogId, start: u64, end: u64) -> AuditResult<Vec<EntryView>> {
        if end < start {
            return Err(AuditError::Invalid("end must not be below start".into()));
        }
        let end = end.min(start.saturating_add(self.options.entries_page_max));
        let rows = self.store.audit_entries(log, start, end).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let leaf_hash: Hash =
                row.leaf_hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| AuditError::Inconsistent {
                        log: log.to_string(),
                        detail: format!("entry {} has a leaf hash of the wrong length", row.index),
                    })?;
            let event = self.open_event(log, &row).await;
            out.push(EntryView {
                index: row.index,
                leaf_hash,
                event,
            });
        }
        Ok(out)
    }

    async fn open_event(&self, log: &LogId, row: &AuditEntryRow) -> Option<serde_json::Value> {
        let sealed = row.sealed.as_ref()?;
        let leaf_hex = hex(&row.leaf_hash);
        let plain = match log {
            LogId::Operator => {
                let aad = [OPERATOR_AAD, leaf_hex.as_bytes()].concat();
                self.operator_key.open(&aad, sealed).ok()
            }
            LogId::Tenant(tenant) => {
                let version = KeyVersion::new(row.key_version)?;
                self.vault
                    .open_audit_event(tenant, &leaf_hex, version, sealed)
                    .await
                    .ok()
            }
        };
        let Some(plain) = plain else {
            tracing::error!(log = %log, index = row.index,
                "an audit event body failed to open: it was moved, altered, or its key is gone");
            return None;
        };
        serde_json::from_slice(plain.as_slice()).ok()
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries, and the
    /// entry's leaf hash.
    pub async fn inclusion_proof(
        &self,
        log: &LogId,
        index: u64,
        size: u64,
    ) -> AuditResult<(Hash, Vec<Hash>)> {
        self.check_size(log, size).await?;
        let plan =
            proof::inclusion_plan(index, size).map_err(|e| AuditError::Invalid(e.to_string()))?;
        let leaf_node = NodeId::new(0, index);
        let nodes = self.nodes(log, plan.nodes().chain([leaf_node])).await?;
        let proof = self.resolve(log, &plan, &nodes)?;
        let leaf = *nodes
            .get(&leaf_node)
            .ok_or_else(|| missing(log, leaf_node))?;
        Ok((leaf, proof))
    }

    /// The consistency proof between two sizes of the log.
    pub async fn consistency_proof(
        &self,
        log: &LogId,
        old: u64,
        new: u64,
    ) -> AuditResult<Vec<Hash>> {
        self.check_size(log, new).await?;
        self.consistency_proof_unchecked(log, old, new).await
    }

    async fn consistency_proof_unchecked(
        &self,
        log: &LogId,
        old: u64,
        new: u64,
    ) -> AuditResult<Vec<Hash>> {
        let plan =
            proof::consistency_plan(old, new).map_err(|e| AuditError::Invalid(e.to_string()))?;
        let nodes = self.nodes(log, plan.nodes()).await?;
        self.resolve(log, &plan, &nodes)
    }

    /// The root of the tree of the first `size` entries, from stored hashes.
    pub async fn root_at(&self, log: &LogId, size: u64) -> AuditResult<Hash> {
        if size == 0 {
            return Ok(bulkhead_ledger::empty_root());
        }
        let plan = ProofPlan {
            elements: vec![proof::root_plan(size)],
        };
        let nodes = self.nodes(log, plan.nodes()).await?;
        Ok(self.resolve(log, &plan, &nodes)?[0])
    }

    async fn check_size(&self, log: &LogId, size: u64) -> AuditResult<()> {
        let known = self
            .sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(log)
            .copied();
        if known.is_some_and(|known| size <= known) {
            return Ok(());
        }
        let head = self.store.audit_head(log).await?;
        self.note_size(log, head.size);
        if size > head.size {
            return Err(AuditError::Invalid(format!(
                "size {size} is beyond the log's {} entries",
                head.size
            )));
        }
        Ok(())
    }

    fn resolve(
        &self,
        log: &LogId,
        plan: &ProofPlan,
        nodes: &HashMap<NodeId, Hash>,
    ) -> AuditResult<Vec<Hash>> {
        plan.resolve(|id| nodes.get(&id).copied())
            .map_err(|e| AuditError::Inconsistent {
                log: log.to_string(),
                detail: e.to_string(),
            })
    }

    /// Looks nodes up in cached tiles, fetching the tiles that are missing or too
    /// narrow in one store read.
    async fn nodes(
        &self,
        log: &LogId,
        wanted: impl Iterator<Item = NodeId>,
    ) -> AuditResult<HashMap<NodeId, Hash>> {
        let mut found = HashMap::new();
        let mut fetch: Vec<TileId> = Vec::new();
        let mut waiting: Vec<NodeId> = Vec::new();
        {
            let mut cache = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
            for id in wanted {
                let (tile_id, _, _) = TileId::locate(id);
                match cache.get(&(log.clone(), tile_id)).and_then(|t| t.node(id)) {
                    Some(hash) => {
                        found.insert(id, hash);
                    }
                    None => {
                        if !fetch.contains(&tile_id) {
                            fetch.push(tile_id);
                        }
                        waiting.push(id);
                    }
                }
            }
        }
        if fetch.is_empty() {
            return Ok(found);
        }
        let rows = self
            .store
            .audit_tiles(log, fetch.iter().map(|t| (t.level, t.index)).collect())
            .await?;
        let mut fetched = HashMap::new();
        for row in rows {
            let id = TileId {
                level: row.level,
                index: row.index,
            };
            let tile = Tile::decode(id, &row.data).map_err(|e| AuditError::Inconsistent {
                log: log.to_string(),
                detail: e.to_string(),
            })?;
            fetched.insert(id, Arc::new(tile));
        }
        for id in waiting {
            let (tile_id, _, _) = TileId::locate(id);
            let mut hash = fetched.get(&tile_id).and_then(|t| t.node(id));
            if hash.is_none() && tile_id.level == 0 {
                // Partial bottom tiles are not stored: rebuild from the entries.
                let tile =
                    Arc::new(bottom_tile_from_entries(&self.store, log, tile_id, u64::MAX).await?);
                hash = tile.node(id);
                fetched.insert(tile_id, tile);
            }
            if let Some(hash) = hash {
                found.insert(id, hash);
            }
        }
        let mut cache = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        for (id, tile) in fetched {
            cache.put((log.clone(), id), tile);
        }
        Ok(found)
    }

    /// Every log with its size and checkpoint, a page at a time.
    pub async fn logs(&self, after: i64, limit: u32) -> AuditResult<Vec<(i64, LogSummary)>> {
        let rows = self.store.audit_logs(after, limit).await?;
        Ok(rows
            .into_iter()
            .map(|(seq, log, head)| {
                (
                    seq,
                    LogSummary {
                        log,
                        size: head.size,
                        checkpoint_size: head.checkpoint_size,
                        checkpoint_at: head.checkpoint_at,
                    },
                )
            })
            .collect())
    }

    /// Stops taking events, commits what is queued and signs final checkpoints.
    pub async fn shutdown(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let sequencer = self
            .sequencer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = sequencer {
            let _ = task.await;
        }
        if let Some(task) = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        if self.leads().await {
            self.sign_dirty().await;
        }
    }

    /// Whether this process signs checkpoints in the background now (always, on a
    /// store no other process writes).
    async fn leads(&self) -> bool {
        match self.store.try_lead().await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, "could not learn whether this replica signs checkpoints");
                false
            }
        }
    }

    fn mark_dirty(&self, logs: impl Iterator<Item = LogId>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        dirty.extend(logs);
    }

    fn note_size(&self, log: &LogId, size: u64) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        let known = sizes.get(log).copied().unwrap_or(0);
        sizes.put(log.clone(), known.max(size));
    }

    fn cache_tiles(&self, log: &LogId, tiles: &[Tile]) {
        let mut cache = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        for tile in tiles {
            cache.put((log.clone(), tile.id), Arc::new(tile.clone()));
        }
    }
}

fn missing(log: &LogId, id: NodeId) -> AuditError {
    AuditError::Inconsistent {
        log: log.to_string(),
        detail: format!("storage lacks node {}/{}", id.level, id.index),
    }
}

/// The sequencer: the only writer of logs in this process.
async fn sequence(audit: Arc<Audit>, mut queue: mpsc::Receiver<Pending>) {
    let edges_len = NonZeroUsize::new(audit.options.edge_cache_len_max.max(1)).expect("at least 1");
    let mut edges: LruCache<LogId, RightEdge> = LruCache::new(edges_len);
    let batch_max = audit.options.batch_len_max.max(1);
    let mut batch: Vec<Pending> = Vec::with_capacity(batch_max);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < batch_max {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Group by log, keeping each log's order of arrival.
        let mut groups: Vec<(LogId, Vec<Pending>)> = Vec::new();
        let mut slot: HashMap<LogId, usize> = HashMap::new();
        for pending in batch.drain(..) {
            match slot.get(&pending.log) {
                Some(&i) => groups[i].1.push(pending),
                None => {
                    slot.insert(pending.log.clone(), groups.len());
                    groups.push((pending.log.clone(), vec![pending]));
                }
            }
        }
        // A log whose size moved under us (another replica appended) is reloaded
        // and retried; the compare-and-set in the store means it can never fork.
        // With several replicas on one store, a busy log can be moved by others
        // again while its edge reloads; a short, jittered pause between attempts
        // lets one writer through at a time instead of all of them retrying in
        // step.
        for attempt in 0..APPEND_ATTEMPTS_MAX {
            if groups.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            groups = commit_groups(&audit, &mut edges, groups).await;
            groups = reseal_stale(&audit, groups).await;
        }
        for (log, pendings) in groups {
            tracing::error!(log = %log, events = pendings.len(), "audit append kept losing the race for the log; giving up");
            for p in pendings {
                let _ = p.reply.send(Err(AuditError::Unavailable(
                    "the log kept changing under this writer".into(),
                )));
            }
        }
    }
}

/// Seals again, under the tenant's current data key version, the retried events
/// (and their records) of tenant logs that are under an older version: the
/// store refuses an append sealed under a version retired meanwhile. An event
/// whose tenant can no longer seal (erased) is answered with the error.
async fn reseal_stale(
    audit: &Audit,
    groups: Vec<(LogId, Vec<Pending>)>,
) -> Vec<(LogId, Vec<Pending>)> {
    let mut out = Vec::with_capacity(groups.len());
    for (log, pendings) in groups {
        let LogId::Tenant(tenant) = &log else {
            out.push((log, pendings));
            continue;
        };
        let mut kept = Vec::with_capacity(pendings.len());
        for mut p in pendings {
            let resealed = match audit
                .vault
                .seal_audit_event(tenant, &hex(&p.leaf), &p.body)
                .await
            {
                Ok((version, sealed))
                    if version.get() != p.key_version
                        || p.records.iter().any(|r| r.key_version != version) =>
                {
                    p.key_version = version.get();
                    p.sealed = sealed;
                    if p.plain_records.is_empty() {
                        Ok(())
                    } else {
                        audit
                            .vault
                            .seal_for_log(tenant, &p.plain_records, p.created_at)
                            .await
                            .map(|rows| p.records = rows)
                    }
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match resealed {
                Ok(()) => kept.push(p),
                Err(e) => {
                    let _ = p.reply.send(Err(e.into()));
                }
            }
        }
        if !kept.is_empty() {
            out.push((log, kept));
        }
    }
    out
}

/// Attempts at one batch's appends before its callers are told the log is
/// unavailable. Only a log that other processes keep moving needs more than one.
const APPEND_ATTEMPTS_MAX: u32 = 40;

/// Up to `attempt` ms (at most 20), jittered so that racing replicas spread out.
fn retry_pause(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let cap_micros = u64::from(attempt.min(20)) * 1000;
    Duration::from_micros(hasher.finish() % cap_micros.max(1))
}

async fn load_edge(store: &Arc<dyn Store>, log: &LogId) -> AuditResult<RightEdge> {
    let head = store.audit_head(log).await?;
    let ids = TileId::right_edge(head.size);
    let rows = store
        .audit_tiles(log, ids.iter().map(|t| (t.level, t.index)).collect())
        .await?;
    let mut tiles = Vec::with_capacity(ids.len());
    for row in rows {
        let id = TileId {
            level: row.level,
            index: row.index,
        };
        let width = id.width_at(head.size);
        if id.level == 0 && width < TILE_WIDTH {
            continue; // rebuilt from the entries below; a stored one may be stale
        }
        // On a store other replicas write, a tile may have grown since the head
        // was read; its first `width` hashes are the ones of this size (hashes of
        // complete subtrees never change), and the rows above are rebuilt from them.
        let mut tile = Tile::decode(id, &row.data).map_err(|e| inconsistent(log, e))?;
        if tile.width() > width {
            let bottom: Vec<Hash> = (0..width).filter_map(|pos| tile.get(0, pos)).collect();
            tile = Tile::from_bottom_row(id, &bottom).map_err(|e| inconsistent(log, e))?;
        }
        tiles.push(tile);
    }
    if let Some(bottom) = ids.first().filter(|id| id.width_at(head.size) < TILE_WIDTH) {
        tiles.push(bottom_tile_from_entries(store, log, *bottom, head.size).await?);
    }
    RightEdge::from_tiles(head.size, tiles).map_err(|e| AuditError::Inconsistent {
        log: log.to_string(),
        detail: format!("cannot continue the log from storage: {e}"),
    })
}

fn inconsistent(log: &LogId, e: impl std::fmt::Display) -> AuditError {
    AuditError::Inconsistent {
        log: log.to_string(),
        detail: e.to_string(),
    }
}

/// A bottom tile rebuilt from the leaf hashes of the entries it covers (as many as
/// exist): how partial bottom tiles are read, since they are not stored.
async fn bottom_tile_from_entries(
    store: &Arc<dyn Store>,
    log: &LogId,
    id: TileId,
    size: u64,
) -> AuditResult<Tile> {
    let start = id.index * TILE_WIDTH as u64;
    // Never past `size`: another replica may have appended since it was read.
    let end = (start + TILE_WIDTH as u64).min(size);
    let rows = store.audit_leaf_hashes(log, start, end).await?;
    let mut leaves = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let hash: Hash = row.as_slice().try_into().map_err(|_| {
            inconsistent(
                log,
                format!("entry {} has a malformed leaf hash", start + i as u64),
            )
        })?;
        leaves.push(hash);
    }
    Tile::from_bottom_row(id, &leaves).map_err(|e| inconsistent(log, e))
}

/// Appends each group to its log in one store transaction. Returns the groups
/// whose log moved under us, for a retry; everything else has been answered.
async fn commit_groups(
    audit: &Audit,
    edges: &mut LruCache<LogId, RightEdge>,
    groups: Vec<(LogId, Vec<Pending>)>,
) -> Vec<(LogId, Vec<Pending>)> {
    let mut appends = Vec::with_capacity(groups.len());
    let mut ready: Vec<(LogId, Vec<Pending>, Vec<u64>, RightEdge)> = Vec::new();
    for (log, pendings) in groups {
        let mut edge = match edges.pop(&log) {
            Some(edge) => edge,
            None => match load_edge(&audit.store, &log).await {
                Ok(edge) => edge,
                Err(e) => {
                    tracing::error!(log = %log, error = %e, "audit log cannot be appended to");
                    let message = e.to_string();
                    for p in pendings {
                        let _ = p.reply.send(Err(AuditError::Unavailable(message.clone())));
                    }
                    continue;
                }
            },
        };
        let old_size = edge.size();
        let mut entries = Vec::with_capacity(pendings.len());
        let mut indices = Vec::with_capacity(pendings.len());
        let mut records = Vec::new();
        for p in &pendings {
            records.extend(p.records.iter().cloned());
            let index = edge.append(p.leaf);
            indices.push(index);
            entries.push(AuditEntryRow {
                index,
                leaf_hash: p.leaf.to_vec(),
                key_version: p.key_version,
                sealed: Some(p.sealed.clone()),
                created_at: p.created_at,
            });
        }
        // A partial bottom tile is not written: it is rebuilt from the entries'
        // leaf hashes when needed, so a commit does not rewrite up to 16 KiB per
        // log. Full tiles, and upper tiles (which change once per 256 appends), are.
        let tiles: Vec<AuditTileRow> = edge
            .take_changed()
            .iter()
            .filter(|t| t.id.level > 0 || t.is_full())
            .map(|t| AuditTileRow {
                level: t.id.level,
                index: t.id.index,
                data: t.encode(),
            })
            .collect();
        appends.push(AuditAppend {
            log: log.clone(),
            old_size,
            entries,
            tiles,
            records,
        });
        ready.push((log, pendings, indices, edge));
    }
    if appends.is_empty() {
        return Vec::new();
    }
    let mut retry = Vec::new();
    match audit.store.audit_append(appends).await {
        Ok(applied) => {
            audit.stats.batches.fetch_add(1, Ordering::Relaxed);
            let mut grown = Vec::new();
            for ((log, pendings, indices, edge), ok) in ready.into_iter().zip(applied) {
                if ok {
                    audit.cache_tiles(&log, edge.tiles());
                    audit.note_size(&log, edge.size());
                    edges.put(log.clone(), edge);
                    audit
                        .stats
                        .events
                        .fetch_add(pendings.len() as u64, Ordering::Relaxed);
                    for (p, index) in pendings.into_iter().zip(indices) {
                        let _ = p.reply.send(Ok(index));
                    }
                    grown.push(log);
                } else {
                    // The edge we extended is stale; the next attempt reloads it.
                    retry.push((log, pendings));
                }
            }
            audit.mark_dirty(grown.into_iter());
        }
        Err(e) => {
            tracing::error!(error = %e, "audit append failed; nothing of this batch was written");
            let message = e.to_string();
            for (_, pendings, _, _) in ready {
                for p in pendings {
                    let _ = p.reply.send(Err(AuditError::Unavailable(message.clone())));
                }
            }
        }
    }
    retry
}
