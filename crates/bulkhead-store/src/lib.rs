//! The storage trait for Bulkhead's rows, its embedded SQLite backend and its
//! PostgreSQL backend for several replicas on one database.
//!
//! Rows hold ciphertext, wrapped keys, keyed hashes, ids and times — never
//! plaintext, and this crate has no way to make any: it knows nothing of keys or of
//! what a record means. Every method that touches tenant data takes the tenant id
//! as a separate argument and puts it in the `WHERE` clause, so a caller cannot read
//! across tenants by choosing a record id.
//!
//! The trait is async and object-safe so that a PostgreSQL backend (many replicas,
//! one database) can implement it without any caller changing, and so that
//! `RegionalStore` can keep each region's tenants in a store of their own.

#![forbid(unsafe_code)]

mod postgres;
mod regional;
mod sqlite;

use async_trait::async_trait;
use bulkhead_types::{
    ApiKeyId, KeyVersion, LogId, PolicyName, RecordKind, Region, TenantId, TenantStatus, UnixMillis,
};

pub use postgres::{PgOptions, PgStore};
pub use regional::{REGIONS_MAX, RegionalError, RegionalStore, STORE_SHIFT};
pub use sqlite::{SqliteOptions, SqliteStore};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A row with this key exists already.
    #[error("a row with this key already exists")]
    Conflict,
    /// The backend failed; the message is for operators' logs, not for clients.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A row read back does not have the shape this build writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store has shut down.
    #[error("the store is shut down")]
    Closed,
    /// A row sealed under a data key version that no longer exists (retired
    /// while the row was being sealed) was refused; seal it again under the
    /// tenant's current version.
    #[error("the data key version the row is sealed under was retired")]
    StaleKey,
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub region: Region,
    pub policy: PolicyName,
    pub status: TenantStatus,
    /// The data key version new records are sealed under.
    pub current_key_version: KeyVersion,
    pub created_at: UnixMillis,
    /// The models the tenant may call; `None`: every model of its region's
    /// upstreams.
    pub models: Option<Vec<String>>,
}

/// A tenant data key, wrapped by the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRow {
    pub version: KeyVersion,
    pub wrapped: Vec<u8>,
    pub created_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    /// A keyed hash of the secret; the secret itself is never stored.
    pub secret_hash: Vec<u8>,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
    /// Set while an operator holds the key in quarantine (containment without
    /// revocation: it can be released).
    pub quarantined_at: Option<UnixMillis>,
}

/// One sealed record as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub tenant_id: TenantId,
    pub kind: RecordKind,
    pub record_id: String,
    pub key_version: KeyVersion,
    pub sealed: Vec<u8>,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
}

/// A record as read back, with its position in insertion order (the page cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: i64,
    pub row: RecordRow,
}

/// What `erase_tenant` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErasureCounts {
    pub records: u64,
    pub api_keys: u64,
    pub data_keys: u64,
}

/// Totals for metrics; counting never reads a record's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreCounts {
    pub tenants: u64,
    pub quarantined_tenants: u64,
    pub documents: u64,
}

/// What one tenant stores that its storage quota counts, live (unexpired) now:
/// documents, their chunks, sessions and session messages. Bytes are the sealed
/// bytes as written (what the disk holds), not the plaintext.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    pub documents: u64,
    pub bytes: u64,
}

/// The record kinds a storage quota counts (`TenantUsage`).
pub const QUOTA_KINDS: [&str; 4] = ["document", "chunk", "session", "session_message"];

/// One audit log entry as stored: the leaf hash in the clear (it reveals nothing:
/// it hashes an event that holds a request id and a time) and the event body sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntryRow {
    pub index: u64,
    pub leaf_hash: Vec<u8>,
    /// The tenant data key version the body is sealed under; 0 for the operator
    /// log, whose bodies are sealed under a key derived from the server secret.
    pub key_version: u32,
    /// `None` once the tenant was crypto-shredded: the leaf stays, the body is gone.
    pub sealed: Option<Vec<u8>>,
    pub created_at: UnixMillis,
}

/// One stored tile of interior hashes (see `bulkhead_ledger::tiles`); the store
/// does not interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTileRow {
    pub level: u8,
    pub index: u64,
    pub data: Vec<u8>,
}

/// Entries and changed tiles for one log, applied only if the log still has
/// `old_size` entries: two writers can never both extend one log from one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAppend {
    pub log: LogId,
    pub old_size: u64,
    pub entries: Vec<AuditEntryRow>,
    pub tiles: Vec<AuditTileRow>,
    /// Sealed records written in the same transaction when the append applies
    /// (a decision trace with the event that logs its hash): one commit, and never
    /// one without the other. Keyed by random ids; an existing one is left as is.
    pub records: Vec<RecordRow>,
}

/// A log's size and its latest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditHead {
    pub size: u64,
    pub checkpoint_size: u64,
    /// The signed note, if a checkpoint was ever signed.
    pub checkpoint: Option<Vec<u8>>,
    pub checkpoint_at: Option<UnixMillis>,
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Returns the value stored under `key`, storing `init` first if there is none.
    /// Concurrent callers all get the one value that won.
    async fn get_or_init_meta(&self, key: &'static str, init: Vec<u8>) -> StoreResult<Vec<u8>>;
    /// Stores `value` under `key`, replacing what was there (server-wide settings
    /// an operator changes, such as the approved policy baseline).
    async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> StoreResult<()>;

    /// Creates a tenant with its first data key. `Conflict` if the id was ever used.
    async fn create_tenant(&self, tenant: TenantRow, first_key: DataKeyRow) -> StoreResult<()>;
    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRow>>;
    /// Tenants in creation order, after the cursor `after_seq`, at most `limit`.
    async fn list_tenants(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<(i64, TenantRow)>>;
    /// Returns false if the tenant does not exist.
    async fn set_tenant_status(&self, id: &TenantId, status: TenantStatus) -> StoreResult<bool>;
    /// Quarantines (`Some(time)`) or releases (`None`) one key of the tenant; false
    /// if the tenant has no such key.
    async fn set_api_key_quarantine(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: Option<UnixMillis>,
    ) -> StoreResult<bool>;
    /// Sets the tenant's compliance pack; false if the tenant does not exist.
    async fn set_tenant_policy(&self, id: &TenantId, policy: &PolicyName) -> StoreResult<bool>;
    /// Sets (or, with `None`, clears) the tenant's model allow-list; false if the
    /// tenant does not exist.
    async fn set_tenant_models(
        &self,
        id: &TenantId,
        models: Option<Vec<String>>,
    ) -> StoreResult<bool>;

    async fn data_keys(&self, id: &TenantId) -> StoreResult<Vec<DataKeyRow>>;
    /// Adds a data key version and makes it current, atomically. Returns false if
    /// the tenant does not exist; `Conflict` if the version exists.
    async fn add_data_key(&self, id: &TenantId, key: DataKeyRow) -> StoreResult<bool>;
    /// Deletes data key versions below `below` that no record uses any more;
    /// returns how many were destroyed.
    async fn retire_data_keys(&self, id: &TenantId, below: KeyVersion) -> StoreResult<u64>;

    /// Removes every row of the tenant (records, API keys, wrapped data keys, the
    /// tenant itself, the sealed bodies of its audit entries — their leaf hashes and
    /// tiles stay, so the log still verifies) in one transaction and keeps `receipt` as the tombstone that
    /// stops the id from being reused. `None` if the tenant does not exist.
    async fn erase_tenant(
        &self,
        id: &TenantId,
        erased_at: UnixMillis,
        receipt: Vec<u8>,
    ) -> StoreResult<Option<ErasureCounts>>;

    async fn insert_api_key(&self, row: ApiKeyRow) -> StoreResult<()>;
    async fn api_key(&self, key_id: &ApiKeyId) -> StoreResult<Option<ApiKeyRow>>;
    /// Marks a key revoked. False if no such key belongs to this tenant.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: UnixMillis,
    ) -> StoreResult<bool>;

    /// Inserts a record; `Conflict` if (tenant, kind, id) exists.
    async fn insert_record(&self, row: RecordRow) -> StoreResult<i64>;
    /// Inserts records all or nothing (one transaction): `Conflict` if any exists.
    async fn insert_records(&self, rows: Vec<RecordRow>) -> StoreResult<()>;
    /// `insert_records` for parts of one record of the same tenant (a session's
    /// messages): inserted only if the record (`parent_kind`, `parent_id`) exists
    /// unexpired at `now`, checked in the same transaction; false (nothing
    /// inserted) if it does not. A concurrent `delete_record_with_parts` of the
    /// parent therefore either runs first (this returns false) or deletes these
    /// parts with it: parts never outlive a deleted parent.
    async fn insert_parts(
        &self,
        parent_kind: RecordKind,
        parent_id: &str,
        rows: Vec<RecordRow>,
        now: UnixMillis,
    ) -> StoreResult<bool>;
    /// One record, if it exists and has not expired at `now`.
    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<Option<StoredRecord>>;
    /// Records of any tenant whose time ran out at or before `now`, oldest expiry
    /// first, at most `limit`: the retention sweeper's work list. The one read
    /// across tenants besides the tenant list; it serves the server itself, never a
    /// request, and yields ciphertext with each row's own tenant id.
    async fn expired_records(&self, now: UnixMillis, limit: u32) -> StoreResult<Vec<StoredRecord>>;
    /// Deletes these records in one transaction, each only if it has expired at
    /// `now` (a record whose TTL was never set, or is still running, stays);
    /// returns how many were deleted.
    async fn delete_expired(
        &self,
        keys: Vec<(TenantId, RecordKind, String)>,
        now: UnixMillis,
    ) -> StoreResult<u64>;
    /// The unexpired parts of a record (`record_id#…`, of `part_kind`), in id order.
    async fn record_parts(
        &self,
        tenant: &TenantId,
        part_kind: RecordKind,
        record_id: &str,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>>;
    /// Unexpired records of one kind in insertion order after `after_seq`.
    async fn list_records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        after_seq: i64,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>>;
    /// Deletes one record; false if there was none (expired ones count as none).
    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<bool>;

    /// Deletes one record and, in the same transaction, its parts: records of
    /// `part_kind` whose id is `record_id` followed by `#` (e.g. a document's
    /// chunks, `doc-1#0`, `doc-1#1`…). False if the record did not exist or had
    /// expired.
    async fn delete_record_with_parts(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        part_kind: RecordKind,
        now: UnixMillis,
    ) -> StoreResult<bool>;

    /// Records of the tenant sealed under a version below `below`, for re-sealing.
    async fn records_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<StoredRecord>>;
    /// Replaces a record's ciphertext if it is still sealed under `expected`.
    async fn reseal_record(
        &self,
        tenant: &TenantId,
        seq: i64,
        expected: KeyVersion,
        new_version: KeyVersion,
        sealed: Vec<u8>,
    ) -> StoreResult<bool>;

    /// Tenants that still have records or keys under a version older than their
    /// current one: re-sealing was interrupted and should resume.
    async fn tenants_with_old_keys(&self, limit: u32) -> StoreResult<Vec<TenantId>>;

    // ---- audit logs -------------------------------------------------------------

    /// The log's size and latest checkpoint; a log never appended to has size 0.
    async fn audit_head(&self, log: &LogId) -> StoreResult<AuditHead>;
    /// The stored tiles among `ids` (tile level, tile index); missing ones are left out.
    async fn audit_tiles(&self, log: &LogId, ids: Vec<(u8, u64)>)
    -> StoreResult<Vec<AuditTileRow>>;
    /// Applies each append in one transaction; per append, true if applied and false
    /// if the log's size was no longer `old_size` (nothing of it is written then).
    async fn audit_append(&self, appends: Vec<AuditAppend>) -> StoreResult<Vec<bool>>;
    /// Entries `start..end` (end exclusive) that exist, in index order.
    async fn audit_entries(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<AuditEntryRow>>;
    /// The leaf hashes of entries `start..end` that exist, in index order (the
    /// bottom row of a partial tile is rebuilt from these instead of being stored).
    async fn audit_leaf_hashes(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<Vec<u8>>>;
    /// Stores a signed checkpoint if the stored one is still of `expected_size`
    /// (0 for none) and the new size is not smaller. False otherwise.
    /// The index of the entry with this leaf hash in the log, if any.
    async fn audit_index_of(&self, log: &LogId, leaf_hash: &[u8]) -> StoreResult<Option<u64>>;
    async fn audit_set_checkpoint(
        &self,
        log: &LogId,
        expected_size: u64,
        size: u64,
        note: Vec<u8>,
        at: UnixMillis,
    ) -> StoreResult<bool>;
    /// Logs with entries beyond their latest checkpoint.
    async fn audit_logs_behind(&self, limit: u32) -> StoreResult<Vec<LogId>>;
    /// Every log with its head, in creation order after `after` (a cursor).
    async fn audit_logs(&self, after: i64, limit: u32)
    -> StoreResult<Vec<(i64, LogId, AuditHead)>>;
    /// Entries of a tenant's log sealed under a key version below `below`.
    async fn audit_entries_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntryRow>>;
    /// Replaces an entry's sealed body if it is still under `expected`.
    async fn reseal_audit_entry(
        &self,
        tenant: &TenantId,
        index: u64,
        expected: KeyVersion,
        new_version: KeyVersion,
        sealed: Vec<u8>,
    ) -> StoreResult<bool>;

    async fn counts(&self) -> StoreResult<StoreCounts>;
    /// The number of live (unexpired at `now`) documents of one tenant, for the
    /// dashboard's tenants view.
    async fn document_count(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<u64>;
    /// What the tenant stores of the kinds a storage quota counts, live at
    /// `now`: one aggregate read, run when a quota's ledger is (re)seeded.
    async fn tenant_usage(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<TenantUsage>;
    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Whether other server processes may write this store at the same time (a
    /// shared database), so that what one process holds in memory can go stale.
    fn is_shared(&self) -> bool {
        false
    }
    /// A value that changes whenever a record of `kind` is written or deleted for
    /// the tenant: the largest seq and the count of its rows of that kind (seqs
    /// only grow, so an insert raises the first and a delete lowers the second).
    /// Replicas compare it to know when what they hold in memory is stale.
    async fn record_generation(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
    ) -> StoreResult<(i64, u64)>;
    /// Where the tenant's rows live, in words for the evidence report (the store
    /// of its region, or the home store).
    async fn placement(&self, _tenant: &TenantId) -> StoreResult<String> {
        Ok(if self.is_shared() {
            "the deployment's one PostgreSQL database".into()
        } else {
            "the server's one SQLite store".into()
        })
    }
    /// Whether this process is the one that signs checkpoints in the background;
    /// at most one process holds leadership at a time. A store only one process
    /// opens always leads.
    async fn try_lead(&self) -> StoreResult<bool> {
        Ok(true)
    }
    /// Finishes queued writes and closes; later calls return `Closed`.
    async fn shutdown(&self);
}
