//! The embedded SQLite backend.
//!
//! Write path (see ARCHITECTURE.md, "Storage: write path and recovery"):
//! 1. A caller's write becomes a job on a bounded queue (capacity
//!    `SqliteOptions::queue_len_max`; a full queue makes callers wait, never grows).
//! 2. One writer thread takes the first job, then every job already queued, up to
//!    `group_commit_max`, and runs them in one `BEGIN IMMEDIATE` transaction, each
//!    inside its own savepoint so that one failing job does not undo the others.
//! 3. `COMMIT` appends the transaction to the WAL and, with `synchronous=FULL`,
//!    fsyncs the WAL before returning.
//! 4. Only then does each caller get its result: a write is acknowledged after the
//!    fsync that made it durable. One fsync covers the whole group (group commit).
//!
//! Recovery: SQLite replays committed WAL frames on open; a transaction whose
//! commit frame was not written is discarded, and none of its jobs was
//! acknowledged. Checkpoints move WAL pages into the main file on SQLite's default
//! schedule and on close.
//!
//! Reads run on a small pool of read-only connections in `spawn_blocking`; WAL lets
//! them proceed while the writer commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bulkhead_types::{
    ApiKeyId, KeyVersion, LogId, PolicyName, RecordKind, Region, TenantId, TenantStatus, UnixMillis,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{mpsc, oneshot};

use crate::{
    ApiKeyRow, AuditAppend, AuditEntryRow, AuditHead, AuditTileRow, DataKeyRow, ErasureCounts,
    RecordRow, Store, StoreCounts, StoreError, StoreResult, StoredRecord, TenantRow, TenantUsage,
};

/// How the SQLite store is tuned. Every field is a limit.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read-only connections in the pool.
    pub readers: usize,
    /// Jobs committed together in one transaction at most.
    pub group_commit_max: usize,
    /// Jobs waiting for the writer at most.
    pub queue_len_max: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            group_commit_max: 256,
            queue_len_max: 4096,
        }
    }
}

type Completion = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tenants (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    current_key_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    models TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS data_keys (
    tenant_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
) STRICT;
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    quarantined_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant_id);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    key_version INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    UNIQUE (tenant_id, kind, record_id)
) STRICT;
CREATE INDEX IF NOT EXISTS records_by_tenant_kind ON records (tenant_id, kind, seq);
CREATE INDEX IF NOT EXISTS records_by_key_version ON records (tenant_id, key_version);
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    log_id TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    checkpoint_size INTEGER NOT NULL DEFAULT 0,
    checkpoint BLOB,
    checkpoint_at INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS audit_entries (
    log INTEGER NOT NULL REFERENCES audit_logs (seq),
    idx INTEGER NOT NULL,
    leaf_hash BLOB NOT NULL,
    key_version INTEGER NOT NULL,
    sealed BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (log, idx)
) STRICT;
CREATE INDEX IF NOT EXISTS audit_entries_by_key_version ON audit_entries (log, key_version);
CREATE INDEX IF NOT EXISTS audit_entries_by_leaf ON audit_entries (log, leaf_hash);
CREATE TABLE IF NOT EXISTS audit_tiles (
    log INTEGER NOT NULL REFERENCES audit_logs (seq),
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (log, level, idx)
) STRICT;
CREATE TABLE IF NOT EXISTS erasures (
    tenant_id TEXT PRIMARY KEY,
    erased_at INTEGER NOT NULL,
    receipt BLOB NOT NULL
) STRICT;
";

fn backend(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Conflict;
    }
    StoreError::Backend(e.to_string())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer. synchronous=FULL: every commit fsyncs the
    // WAL, so an acknowledged write survives power loss, not only a killed process.
    // Group commit pays for the fsync once per batch.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, options: SqliteOptions) -> StoreResult<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Backend(format!("create {}: {e}", parent.display())))?;
        }
        // Created 0600 before SQLite opens it: SQLite gives the `-wal` and `-shm`
        // files it creates the database file's mode, so they are private too.
        #[cfg(unix)]
        create_private(path)?;
        let writer_conn = Connection::open(path).map_err(backend)?;
        configure(&writer_conn).map_err(backend)?;
        writer_conn.execute_batch(SCHEMA).map_err(backend)?;
        migrate(&writer_conn).map_err(backend)?;
        #[cfg(unix)]
        restrict_permissions(path);

        let mut readers = Vec::with_capacity(options.readers.max(1));
        for _ in 0..options.readers.max(1) {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(backend)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            readers.push(Mutex::new(conn));
        }

        let (tx, rx) = mpsc::channel::<Job>(options.queue_len_max.max(1));
        let group_commit_max = options.group_commit_max.max(1);
        let writer = std::thread::Builder::new()
            .name("bulkhead-sqlite-writer".into())
            .spawn(move || writer_loop(writer_conn, rx, group_commit_max))
            .map_err(|e| StoreError::Backend(format!("spawn writer thread: {e}")))?;

        Ok(Self {
            path: path.to_owned(),
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the next group-commit transaction and returns its result once
    /// that transaction is durable.
    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| -> Completion {
            let result = in_savepoint(conn, f);
            Box::new(move |committed: bool| {
                let result = if committed {
                    result
                } else {
                    Err(StoreError::Backend(
                        "group commit failed; nothing was written".into(),
                    ))
                };
                // The caller may have gone away (request cancelled); the write stands.
                let _ = reply.send(result);
            })
        });
        let sender = {
            let guard = self.jobs.lock().map_err(|_| StoreError::Closed)?;
            guard.clone().ok_or(StoreError::Closed)?
        };
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// A lookup by primary or unique key: microseconds against hot pages. It runs
    /// on the calling thread when a reader connection is free, which spares the
    /// two thread switches of a blocking-pool hop (measured: thread switches were
    /// the largest cost of a gateway call); otherwise it queues like any read.
    /// Only for single-row lookups: anything that scans goes through `read`.
    async fn read_point<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(conn) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return f(&conn);
            }
        }
        self.read(f).await
    }

    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let conn = readers[index].lock().map_err(|_| StoreError::Closed)?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task: {e}")))?
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| StoreError::Backend(format!("create {}: {e}", path.display())))
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // The database holds only ciphertext, but its shape (tenant ids, sizes, times)
    // is still nobody else's business. A database made by an older version may
    // have world-readable files beside it: they are narrowed too.
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    }
}

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    conn.execute_batch("SAVEPOINT job").map_err(backend)?;
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    conn.execute_batch(end).map_err(backend)?;
    result
}

fn writer_loop(conn: Connection, mut jobs: mpsc::Receiver<Job>, group_commit_max: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(group_commit_max);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < group_commit_max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            tracing::error!(error = %e, "sqlite writer could not begin a transaction");
            for job in batch.drain(..) {
                // Run nothing; tell each caller it failed.
                drop(job);
            }
            continue;
        }
        let completions: Vec<Completion> = batch.drain(..).map(|job| job(&conn)).collect();
        let committed = match conn.execute_batch("COMMIT") {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, jobs = completions.len(), "sqlite group commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                false
            }
        };
        for complete in completions {
            complete(committed);
        }
    }
    // The queue closed: every job has been answered. Fold the WAL into the main file
    // so a cleanly stopped store is one file.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL will be replayed on next open");
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn tenant_from_row(row: &Row<'_>) -> StoreResult<TenantRow> {
    let get_s = |i: usize| row.get::<_, String>(i).map_err(backend);
    Ok(TenantRow {
        id: TenantId::parse(&get_s(0)?).map_err(|_| corrupt("tenant id"))?,
        name: get_s(1)?,
        region: Region::parse(&get_s(2)?).map_err(|_| corrupt("region"))?,
        policy: PolicyName::parse(&get_s(3)?).map_err(|_| corrupt("policy"))?,
        status: TenantStatus::parse(&get_s(4)?).ok_or_else(|| corrupt("status"))?,
        current_key_version: version_from(row.get(5).map_err(backend)?)?,
        created_at: UnixMillis(row.get(6).map_err(backend)?),
        models: match row.get::<_, Option<String>>(7).map_err(backend)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|_| corrupt("models"))?),
            None => None,
        },
    })
}

fn models_column(models: &Option<Vec<String>>) -> Option<String> {
    models
        .as_ref()
        .map(|m| serde_json::to_string(m).expect("a list of strings serializes"))
}

fn version_from(value: i64) -> StoreResult<KeyVersion> {
    u32::try_from(value)
        .ok()
        .and_then(KeyVersion::new)
        .ok_or_else(|| corrupt("key version"))
}

const TENANT_COLUMNS: &str =
    "id, name, region, policy, status, current_key_version, created_at, models";

/// Brings a database made by an older build up to this schema. Each step is
/// idempotent: it checks before it alters.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // The model allow-list came with the gateway; NULL means "every model of the
    // tenant's region".
    let has_models: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('tenants') WHERE name = 'models'")?
        .exists([])?;
    if !has_models {
        conn.execute_batch("ALTER TABLE tenants ADD COLUMN models TEXT")?;
    }
    // Key quarantine came with containment; NULL means "not quarantined".
    let has_key_quarantine: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('api_keys') WHERE name = 'quarantined_at'")?
        .exists([])?;
    if !has_key_quarantine {
        conn.execute_batch("ALTER TABLE api_keys ADD COLUMN quarantined_at INTEGER")?;
    }
    Ok(())
}
const RECORD_COLUMNS: &str =
    "seq, tenant_id, kind, record_id, key_version, sealed, created_at, expires_at";

fn record_from_row(row: &Row<'_>) -> StoreResult<StoredRecord> {
    let kind: String = row.get(2).map_err(backend)?;
    let tenant: String = row.get(1).map_err(backend)?;
    Ok(StoredRecord {
        seq: row.get(0).map_err(backend)?,
        row: RecordRow {
            tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
            kind: RecordKind::from_stored(&kind).ok_or_else(|| corrupt("record kind"))?,
            record_id: row.get(3).map_err(backend)?,
            key_version: version_from(row.get(4).map_err(backend)?)?,
            sealed: row.get(5).map_err(backend)?,
            created_at: UnixMillis(row.get(6).map_err(backend)?),
            expires_at: row
                .get::<_, Option<i64>>(7)
                .map_err(backend)?
                .map(UnixMillis),
        },
    })
}

fn api_key_from_row(row: &Row<'_>) -> StoreResult<ApiKeyRow> {
    let key_id: String = row.get(0).map_err(backend)?;
    let tenant: String = row.get(1).map_err(backend)?;
    Ok(ApiKeyRow {
        key_id: ApiKeyId::parse(&key_id).map_err(|_| corrupt("key id"))?,
        tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
        secret_hash: row.get(2).map_err(backend)?,
        created_at: UnixMillis(row.get(3).map_err(backend)?),
        expires_at: row
            .get::<_, Option<i64>>(4)
            .map_err(backend)?
            .map(UnixMillis),
        revoked_at: row
            .get::<_, Option<i64>>(5)
            .map_err(backend)?
            .map(UnixMillis),
        quarantined_at: row
            .get::<_, Option<i64>>(6)
            .map_err(backend)?
            .map(UnixMillis),
    })
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = stmt.query(params).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        out.push(map(row)?);
    }
    Ok(out)
}

fn insert_record_row(conn: &Connection, row: &RecordRow) -> StoreResult<()> {
    if !key_version_writable(conn, &row.tenant_id, row.key_version.get())? {
        return Err(StoreError::StaleKey);
    }
    insert_record_sql(conn, row, "INSERT")
}

/// Whether a row sealed under the tenant's data key `version` may be written:
/// the version exists, or the tenant has no data key at all (erased: whatever
/// lands now is crypto-shredded already, as before). Every write of a sealed row
/// checks it in the same job: jobs run one at a time, so a retirement
/// (`retire_data_keys`) is either before the write, which is then refused, or
/// after it, and then sees the row and keeps the key.
fn key_version_writable(conn: &Connection, tenant: &TenantId, version: u32) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM data_keys WHERE tenant_id = ?1 AND version = ?2)
             OR NOT EXISTS (SELECT 1 FROM data_keys WHERE tenant_id = ?1)",
    )
    .and_then(|mut s| s.query_row(params![tenant.as_str(), version], |r| r.get(0)))
    .map_err(backend)
}

fn insert_record_sql(conn: &Connection, row: &RecordRow, verb: &str) -> StoreResult<()> {
    conn.prepare_cached(&format!(
        "{verb} INTO records (tenant_id, kind, record_id, key_version, sealed, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            row.tenant_id.as_str(),
            row.kind.as_str(),
            row.record_id,
            row.key_version.get(),
            row.sealed,
            row.created_at.0,
            row.expires_at.map(|t| t.0),
        ])
    })
    .map_err(backend)?;
    Ok(())
}

fn to_i64(n: u64) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::Backend(format!("{n} is out of SQLite's range")))
}

fn audit_head_from_row(row: &Row<'_>) -> rusqlite::Result<AuditHead> {
    let size: i64 = row.get(0)?;
    let checkpoint_size: i64 = row.get(1)?;
    Ok(AuditHead {
        size: size.max(0) as u64,
        checkpoint_size: checkpoint_size.max(0) as u64,
        checkpoint: row.get(2)?,
        checkpoint_at: row.get::<_, Option<i64>>(3)?.map(UnixMillis),
    })
}

fn audit_entry_from_row(row: &Row<'_>) -> StoreResult<AuditEntryRow> {
    let index: i64 = row.get(0).map_err(backend)?;
    let key_version: i64 = row.get(2).map_err(backend)?;
    Ok(AuditEntryRow {
        index: u64::try_from(index).map_err(|_| corrupt("audit index"))?,
        leaf_hash: row.get(1).map_err(backend)?,
        key_version: u32::try_from(key_version).map_err(|_| corrupt("audit key version"))?,
        sealed: row.get(3).map_err(backend)?,
        created_at: UnixMillis(row.get(4).map_err(backend)?),
    })
}

/// One log's part of an audit append: compare-and-set on the size, then entries,
/// tiles and the new size. Returns false, writing nothing, if the size moved.
fn apply_audit_append(conn: &Connection, append: AuditAppend) -> StoreResult<bool> {
    let log = append.log.as_str();
    conn.prepare_cached("INSERT OR IGNORE INTO audit_logs (log_id, size) VALUES (?1, 0)")
        .and_then(|mut s| s.execute([log]))
        .map_err(backend)?;
    let (seq, size): (i64, i64) = conn
        .prepare_cached("SELECT seq, size FROM audit_logs WHERE log_id = ?1")
        .and_then(|mut s| s.query_row([log], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(backend)?;
    if size != to_i64(append.old_size)? {
        return Ok(false);
    }
    // A tenant log's bodies and the attached records are sealed under the
    // tenant's data keys: refused (as if the log had moved, so the sequencer
    // seals again and retries) if a version was retired meanwhile.
    if let Some(tenant) = append.log.tenant() {
        let mut versions: Vec<u32> = append.entries.iter().map(|e| e.key_version).collect();
        versions.extend(append.records.iter().map(|r| r.key_version.get()));
        versions.sort_unstable();
        versions.dedup();
        for v in versions {
            if !key_version_writable(conn, tenant, v)? {
                return Ok(false);
            }
        }
    }
    let new_size = append.old_size + append.entries.len() as u64;
    {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO audit_entries (log, idx, leaf_hash, key_version, sealed, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(backend)?;
        for (offset, entry) in append.entries.iter().enumerate() {
            if entry.index != append.old_size + offset as u64 {
                return Err(StoreError::Backend(
                    "audit entries must be contiguous from the old size".into(),
                ));
            }
            insert
                .execute(params![
                    seq,
                    to_i64(entry.index)?,
                    entry.leaf_hash,
                    entry.key_version,
                    entry.sealed,
                    entry.created_at.0
                ])
                .map_err(backend)?;
        }
    }
    {
        // A tile only ever grows; refusing to shrink one guards against a bug
        // rewriting history with a stale right edge.
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO audit_tiles (log, level, idx, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (log, level, idx) DO UPDATE SET data = excluded.data
                 WHERE length(excluded.data) >= length(audit_tiles.data)",
            )
            .map_err(backend)?;
        for tile in &append.tiles {
            upsert
                .execute(params![seq, tile.level, to_i64(tile.index)?, tile.data])
                .map_err(backend)?;
        }
    }
    let new_size = to_i64(new_size)?;
    conn.prepare_cached("UPDATE audit_logs SET size = ?2 WHERE seq = ?1")
        .and_then(|mut s| s.execute(params![seq, new_size]))
        .map_err(backend)?;
    // Attached records must not fail the batch (other logs' events ride in it):
    // their ids are random, and a duplicate is left as it was.
    for row in &append.records {
        insert_record_sql(conn, row, "INSERT OR IGNORE")?;
    }
    Ok(true)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_or_init_meta(&self, key: &'static str, init: Vec<u8>) -> StoreResult<Vec<u8>> {
        self.write(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, init],
            )
            .map_err(backend)?;
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .map_err(backend)
        })
        .await
    }

    async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_tenant(&self, tenant: TenantRow, first_key: DataKeyRow) -> StoreResult<()> {
        self.write(move |conn| {
            let erased: bool = conn
                .query_row("SELECT 1 FROM erasures WHERE tenant_id = ?1", [tenant.id.as_str()], |_| {
                    Ok(true)
                })
                .optional()
                .map_err(backend)?
                .unwrap_or(false);
            if erased {
                return Err(StoreError::Conflict);
            }
            conn.prepare_cached(
                "INSERT INTO tenants (id, name, region, policy, status, current_key_version, created_at, models)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant.id.as_str(),
                    tenant.name,
                    tenant.region.as_str(),
                    tenant.policy.as_str(),
                    tenant.status.as_str(),
                    tenant.current_key_version.get(),
                    tenant.created_at.0,
                    models_column(&tenant.models),
                ])
            })
            .map_err(backend)?;
            conn.execute(
                "INSERT INTO data_keys (tenant_id, version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant.id.as_str(), first_key.version.get(), first_key.wrapped, first_key.created_at.0],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRow>> {
        let id = id.clone();
        self.read_point(move |conn| {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1");
            Ok(collect(conn, &sql, [id.as_str()], tenant_from_row)?
                .into_iter()
                .next())
        })
        .await
    }

    async fn list_tenants(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<(i64, TenantRow)>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {TENANT_COLUMNS}, seq FROM tenants WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            );
            collect(conn, &sql, params![after_seq, limit], |row| {
                Ok((row.get(8).map_err(backend)?, tenant_from_row(row)?))
            })
        })
        .await
    }

    async fn set_tenant_status(&self, id: &TenantId, status: TenantStatus) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE tenants SET status = ?2 WHERE id = ?1",
                    params![id.as_str(), status.as_str()],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_tenant_policy(&self, id: &TenantId, policy: &PolicyName) -> StoreResult<bool> {
        let (id, policy) = (id.clone(), policy.clone());
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE tenants SET policy = ?2 WHERE id = ?1",
                    params![id.as_str(), policy.as_str()],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_tenant_models(
        &self,
        id: &TenantId,
        models: Option<Vec<String>>,
    ) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE tenants SET models = ?2 WHERE id = ?1",
                    params![id.as_str(), models_column(&models)],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn data_keys(&self, id: &TenantId) -> StoreResult<Vec<DataKeyRow>> {
        let id = id.clone();
        self.read(move |conn| {
            collect(
                conn,
                "SELECT version, wrapped, created_at FROM data_keys WHERE tenant_id = ?1 ORDER BY version",
                [id.as_str()],
                |row| {
                    Ok(DataKeyRow {
                        version: version_from(row.get(0).map_err(backend)?)?,
                        wrapped: row.get(1).map_err(backend)?,
                        created_at: UnixMillis(row.get(2).map_err(backend)?),
                    })
                },
            )
        })
        .await
    }

    async fn add_data_key(&self, id: &TenantId, key: DataKeyRow) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE tenants SET current_key_version = ?2 WHERE id = ?1",
                    params![id.as_str(), key.version.get()],
                )
                .map_err(backend)?;
            if n == 0 {
                return Ok(false);
            }
            conn.execute(
                "INSERT INTO data_keys (tenant_id, version, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id.as_str(), key.version.get(), key.wrapped, key.created_at.0],
            )
            .map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn retire_data_keys(&self, id: &TenantId, below: KeyVersion) -> StoreResult<u64> {
        let id = id.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM data_keys WHERE tenant_id = ?1 AND version < ?2
                     AND NOT EXISTS (SELECT 1 FROM records r
                                     WHERE r.tenant_id = ?1 AND r.key_version = data_keys.version)
                     AND NOT EXISTS (SELECT 1 FROM audit_entries e
                                     WHERE e.log = (SELECT seq FROM audit_logs WHERE log_id = ?1)
                                       AND e.key_version = data_keys.version
                                       AND e.sealed IS NOT NULL)",
                    params![id.as_str(), below.get()],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn erase_tenant(
        &self,
        id: &TenantId,
        erased_at: UnixMillis,
        receipt: Vec<u8>,
    ) -> StoreResult<Option<ErasureCounts>> {
        let id = id.clone();
        self.write(move |conn| {
            let tenant = id.as_str();
            // Destroy the wrapped keys first: that alone makes every ciphertext of
            // the tenant unrecoverable, in this file and in every backup of it.
            let data_keys = conn.execute("DELETE FROM data_keys WHERE tenant_id = ?1", [tenant]);
            let data_keys = data_keys.map_err(backend)? as u64;
            let records = conn.execute("DELETE FROM records WHERE tenant_id = ?1", [tenant]);
            let records = records.map_err(backend)? as u64;
            // The audit log keeps its leaves and tiles (and so still verifies); the
            // event bodies, unreadable from now on, go.
            conn.execute(
                "UPDATE audit_entries SET sealed = NULL
                 WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1)",
                [tenant],
            )
            .map_err(backend)?;
            let api_keys = conn.execute("DELETE FROM api_keys WHERE tenant_id = ?1", [tenant]);
            let api_keys = api_keys.map_err(backend)? as u64;
            let tenants = conn
                .execute("DELETE FROM tenants WHERE id = ?1", [tenant])
                .map_err(backend)?;
            if tenants == 0 {
                return Ok(None);
            }
            conn.execute(
                "INSERT INTO erasures (tenant_id, erased_at, receipt) VALUES (?1, ?2, ?3)",
                params![tenant, erased_at.0, receipt],
            )
            .map_err(backend)?;
            Ok(Some(ErasureCounts {
                records,
                api_keys,
                data_keys,
            }))
        })
        .await
    }

    async fn insert_api_key(&self, row: ApiKeyRow) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (key_id, tenant_id, secret_hash, created_at, expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.key_id.as_str(),
                    row.tenant_id.as_str(),
                    row.secret_hash,
                    row.created_at.0,
                    row.expires_at.map(|t| t.0),
                    row.revoked_at.map(|t| t.0),
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, key_id: &ApiKeyId) -> StoreResult<Option<ApiKeyRow>> {
        let key_id = key_id.clone();
        self.read_point(move |conn| {
            Ok(collect(
                conn,
                "SELECT key_id, tenant_id, secret_hash, created_at, expires_at, revoked_at,
                        quarantined_at
                 FROM api_keys WHERE key_id = ?1",
                [key_id.as_str()],
                api_key_from_row,
            )?
            .into_iter()
            .next())
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: UnixMillis,
    ) -> StoreResult<bool> {
        let (tenant, key_id) = (tenant.clone(), key_id.clone());
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3)
                     WHERE key_id = ?1 AND tenant_id = ?2",
                    params![key_id.as_str(), tenant.as_str(), at.0],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_api_key_quarantine(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: Option<UnixMillis>,
    ) -> StoreResult<bool> {
        let (tenant, key_id) = (tenant.clone(), key_id.clone());
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE api_keys SET quarantined_at = ?3 WHERE key_id = ?1 AND tenant_id = ?2",
                    params![key_id.as_str(), tenant.as_str(), at.map(|t| t.0)],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn insert_record(&self, row: RecordRow) -> StoreResult<i64> {
        self.write(move |conn| {
            insert_record_row(conn, &row)?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn insert_records(&self, rows: Vec<RecordRow>) -> StoreResult<()> {
        // One job runs in one savepoint: a conflict on any row undoes them all.
        self.write(move |conn| rows.iter().try_for_each(|row| insert_record_row(conn, row)))
            .await
    }

    async fn insert_parts(
        &self,
        parent_kind: RecordKind,
        parent_id: &str,
        rows: Vec<RecordRow>,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        let Some(tenant) = rows.first().map(|r| r.tenant_id.clone()) else {
            return Ok(true);
        };
        let parent_id = parent_id.to_owned();
        // One writer at a time: the check and the insert see the same database.
        self.write(move |conn| {
            let live = conn
                .query_row(
                    "SELECT 1 FROM records WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3
                       AND (expires_at IS NULL OR expires_at > ?4)",
                    params![tenant.as_str(), parent_kind.as_str(), parent_id, now.0],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend)?
                .is_some();
            if !live {
                return Ok(false);
            }
            rows.iter().try_for_each(|row| {
                debug_assert_eq!(row.tenant_id, tenant);
                insert_record_row(conn, row)
            })?;
            Ok(true)
        })
        .await
    }

    async fn delete_record_with_parts(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        part_kind: RecordKind,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        let (tenant, record_id) = (tenant.clone(), record_id.to_owned());
        self.write(move |conn| {
            let live = conn
                .query_row(
                    "SELECT expires_at IS NULL OR expires_at > ?4 FROM records
                     WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3",
                    params![tenant.as_str(), kind.as_str(), record_id, now.0],
                    |r| r.get::<_, bool>(0),
                )
                .optional()
                .map_err(backend)?;
            let n = conn
                .execute(
                    "DELETE FROM records WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3",
                    params![tenant.as_str(), kind.as_str(), record_id],
                )
                .map_err(backend)?;
            // Parts are `id#…`: the range [id#, id$) holds exactly them, because
            // '#' and '$' cannot occur in an id and '$' follows '#'.
            conn.execute(
                "DELETE FROM records WHERE tenant_id = ?1 AND kind = ?2
                   AND record_id >= ?3 AND record_id < ?4",
                params![
                    tenant.as_str(),
                    part_kind.as_str(),
                    format!("{record_id}#"),
                    format!("{record_id}$")
                ],
            )
            .map_err(backend)?;
            Ok(n == 1 && live == Some(true))
        })
        .await
    }

    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<Option<StoredRecord>> {
        let (tenant, record_id) = (tenant.clone(), record_id.to_owned());
        self.read_point(move |conn| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3
                   AND (expires_at IS NULL OR expires_at > ?4)"
            );
            let found = collect(
                conn,
                &sql,
                params![tenant.as_str(), kind.as_str(), record_id, now.0],
                record_from_row,
            )?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn list_records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        after_seq: i64,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant_id = ?1 AND kind = ?2 AND seq > ?3
                   AND (expires_at IS NULL OR expires_at > ?4)
                 ORDER BY seq LIMIT ?5"
            );
            collect(
                conn,
                &sql,
                params![tenant.as_str(), kind.as_str(), after_seq, now.0, limit],
                record_from_row,
            )
        })
        .await
    }

    async fn expired_records(&self, now: UnixMillis, limit: u32) -> StoreResult<Vec<StoredRecord>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE expires_at IS NOT NULL AND expires_at <= ?1
                 ORDER BY expires_at LIMIT ?2"
            );
            collect(conn, &sql, params![now.0, limit], record_from_row)
        })
        .await
    }

    async fn delete_expired(
        &self,
        keys: Vec<(TenantId, RecordKind, String)>,
        now: UnixMillis,
    ) -> StoreResult<u64> {
        self.write(move |conn| {
            let mut delete = conn
                .prepare_cached(
                    "DELETE FROM records WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3
                       AND expires_at IS NOT NULL AND expires_at <= ?4",
                )
                .map_err(backend)?;
            let mut n = 0u64;
            for (tenant, kind, id) in &keys {
                n += delete
                    .execute(params![tenant.as_str(), kind.as_str(), id, now.0])
                    .map_err(backend)? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn record_parts(
        &self,
        tenant: &TenantId,
        part_kind: RecordKind,
        record_id: &str,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>> {
        let (tenant, record_id) = (tenant.clone(), record_id.to_owned());
        self.read(move |conn| {
            // The same [id#, id$) range as `delete_record_with_parts`.
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant_id = ?1 AND kind = ?2 AND record_id >= ?3 AND record_id < ?4
                   AND (expires_at IS NULL OR expires_at > ?5)
                 ORDER BY record_id LIMIT ?6"
            );
            collect(
                conn,
                &sql,
                params![
                    tenant.as_str(),
                    part_kind.as_str(),
                    format!("{record_id}#"),
                    format!("{record_id}$"),
                    now.0,
                    limit
                ],
                record_from_row,
            )
        })
        .await
    }

    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        let (tenant, record_id) = (tenant.clone(), record_id.to_owned());
        self.write(move |conn| {
            let live = conn
                .query_row(
                    "SELECT expires_at IS NULL OR expires_at > ?4 FROM records
                     WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3",
                    params![tenant.as_str(), kind.as_str(), record_id, now.0],
                    |r| r.get::<_, bool>(0),
                )
                .optional()
                .map_err(backend)?;
            // An expired record is already invisible; deleting it anyway keeps the
            // sweeper's work down, but the caller is told there was nothing.
            let n = conn
                .execute(
                    "DELETE FROM records WHERE tenant_id = ?1 AND kind = ?2 AND record_id = ?3",
                    params![tenant.as_str(), kind.as_str(), record_id],
                )
                .map_err(backend)?;
            Ok(n == 1 && live == Some(true))
        })
        .await
    }

    async fn records_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<StoredRecord>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = ?1 AND key_version < ?2
                 ORDER BY seq LIMIT ?3"
            );
            collect(
                conn,
                &sql,
                params![tenant.as_str(), below.get(), limit],
                record_from_row,
            )
        })
        .await
    }

    async fn reseal_record(
        &self,
        tenant: &TenantId,
        seq: i64,
        expected: KeyVersion,
        new_version: KeyVersion,
        sealed: Vec<u8>,
    ) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE records SET sealed = ?4, key_version = ?5
                     WHERE seq = ?1 AND tenant_id = ?2 AND key_version = ?3
                       AND EXISTS (SELECT 1 FROM data_keys
                                   WHERE tenant_id = ?2 AND version = ?5)",
                    params![
                        seq,
                        tenant.as_str(),
                        expected.get(),
                        sealed,
                        new_version.get()
                    ],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn tenants_with_old_keys(&self, limit: u32) -> StoreResult<Vec<TenantId>> {
        self.read(move |conn| {
            collect(
                conn,
                "SELECT DISTINCT t.id FROM tenants t JOIN data_keys d ON d.tenant_id = t.id
                 WHERE d.version < t.current_key_version LIMIT ?1",
                [limit],
                |row| {
                    let id: String = row.get(0).map_err(backend)?;
                    TenantId::parse(&id).map_err(|_| corrupt("tenant id"))
                },
            )
        })
        .await
    }

    async fn audit_head(&self, log: &LogId) -> StoreResult<AuditHead> {
        let log = log.as_str().to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT size, checkpoint_size, checkpoint, checkpoint_at FROM audit_logs
                     WHERE log_id = ?1",
                )
                .and_then(|mut s| s.query_row([&log], audit_head_from_row).optional())
                .map_err(backend)?
                .unwrap_or_default())
        })
        .await
    }

    async fn audit_tiles(
        &self,
        log: &LogId,
        ids: Vec<(u8, u64)>,
    ) -> StoreResult<Vec<AuditTileRow>> {
        let log = log.as_str().to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT data FROM audit_tiles
                     WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1)
                       AND level = ?2 AND idx = ?3",
                )
                .map_err(backend)?;
            let mut out = Vec::with_capacity(ids.len());
            for (level, index) in ids {
                let data: Option<Vec<u8>> = stmt
                    .query_row(params![log, level, to_i64(index)?], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                if let Some(data) = data {
                    out.push(AuditTileRow { level, index, data });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn audit_append(&self, appends: Vec<AuditAppend>) -> StoreResult<Vec<bool>> {
        self.write(move |conn| {
            let mut applied = Vec::with_capacity(appends.len());
            for append in appends {
                applied.push(apply_audit_append(conn, append)?);
            }
            Ok(applied)
        })
        .await
    }

    async fn audit_entries(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<AuditEntryRow>> {
        let log = log.as_str().to_owned();
        self.read(move |conn| {
            collect(
                conn,
                "SELECT idx, leaf_hash, key_version, sealed, created_at FROM audit_entries
                 WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1)
                   AND idx >= ?2 AND idx < ?3 ORDER BY idx",
                params![log, to_i64(start)?, to_i64(end)?],
                audit_entry_from_row,
            )
        })
        .await
    }

    async fn audit_leaf_hashes(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let log = log.as_str().to_owned();
        self.read(move |conn| {
            collect(
                conn,
                "SELECT leaf_hash FROM audit_entries
                 WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1)
                   AND idx >= ?2 AND idx < ?3 ORDER BY idx",
                params![log, to_i64(start)?, to_i64(end)?],
                |row| row.get(0).map_err(backend),
            )
        })
        .await
    }

    async fn audit_index_of(&self, log: &LogId, leaf_hash: &[u8]) -> StoreResult<Option<u64>> {
        let (log, leaf) = (log.as_str().to_owned(), leaf_hash.to_vec());
        self.read_point(move |conn| {
            let index: Option<i64> = conn
                .prepare_cached(
                    "SELECT idx FROM audit_entries
                     WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1) AND leaf_hash = ?2
                     ORDER BY idx LIMIT 1",
                )
                .and_then(|mut s| s.query_row(params![log, leaf], |r| r.get(0)).optional())
                .map_err(backend)?;
            Ok(index.map(|i| i as u64))
        })
        .await
    }

    async fn audit_set_checkpoint(
        &self,
        log: &LogId,
        expected_size: u64,
        size: u64,
        note: Vec<u8>,
        at: UnixMillis,
    ) -> StoreResult<bool> {
        let log = log.as_str().to_owned();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE audit_logs SET checkpoint_size = ?3, checkpoint = ?4, checkpoint_at = ?5
                     WHERE log_id = ?1 AND checkpoint_size = ?2 AND ?3 >= checkpoint_size
                       AND ?3 <= size",
                    params![log, to_i64(expected_size)?, to_i64(size)?, note, at.0],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn audit_logs_behind(&self, limit: u32) -> StoreResult<Vec<LogId>> {
        self.read(move |conn| {
            collect(
                conn,
                "SELECT log_id FROM audit_logs WHERE size > checkpoint_size ORDER BY seq LIMIT ?1",
                [limit],
                |row| {
                    let id: String = row.get(0).map_err(backend)?;
                    LogId::parse(&id).map_err(|_| corrupt("audit log id"))
                },
            )
        })
        .await
    }

    async fn audit_logs(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, LogId, AuditHead)>> {
        self.read(move |conn| {
            collect(
                conn,
                "SELECT size, checkpoint_size, checkpoint, checkpoint_at, seq, log_id FROM audit_logs
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                params![after, limit],
                |row| {
                    let head = audit_head_from_row(row).map_err(backend)?;
                    let id: String = row.get(5).map_err(backend)?;
                    let log = LogId::parse(&id).map_err(|_| corrupt("audit log id"))?;
                    Ok((row.get(4).map_err(backend)?, log, head))
                },
            )
        })
        .await
    }

    async fn audit_entries_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntryRow>> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            collect(
                conn,
                "SELECT idx, leaf_hash, key_version, sealed, created_at FROM audit_entries
                 WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1)
                   AND key_version < ?2 AND sealed IS NOT NULL
                 ORDER BY idx LIMIT ?3",
                params![tenant.as_str(), below.get(), limit],
                audit_entry_from_row,
            )
        })
        .await
    }

    async fn reseal_audit_entry(
        &self,
        tenant: &TenantId,
        index: u64,
        expected: KeyVersion,
        new_version: KeyVersion,
        sealed: Vec<u8>,
    ) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE audit_entries SET sealed = ?4, key_version = ?5
                     WHERE log = (SELECT seq FROM audit_logs WHERE log_id = ?1)
                       AND idx = ?2 AND key_version = ?3 AND sealed IS NOT NULL
                       AND EXISTS (SELECT 1 FROM data_keys
                                   WHERE tenant_id = ?1 AND version = ?5)",
                    params![
                        tenant.as_str(),
                        to_i64(index)?,
                        expected.get(),
                        sealed,
                        new_version.get()
                    ],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_generation(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
    ) -> StoreResult<(i64, u64)> {
        let tenant = tenant.clone();
        self.read(move |conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM records
                 WHERE tenant_id = ?1 AND kind = ?2",
                params![tenant.as_str(), kind.as_str()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64)),
            )
            .map_err(backend)
        })
        .await
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        self.read(|conn| {
            let count = |sql: &str| -> StoreResult<u64> {
                let n: i64 = conn.query_row(sql, [], |r| r.get(0)).map_err(backend)?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            Ok(StoreCounts {
                tenants: count("SELECT COUNT(*) FROM tenants")?,
                quarantined_tenants: count(
                    "SELECT COUNT(*) FROM tenants WHERE status = 'quarantined'",
                )?,
                documents: count("SELECT COUNT(*) FROM records WHERE kind = 'document'")?,
            })
        })
        .await
    }

    async fn document_count(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<u64> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM records WHERE tenant_id = ?1 AND kind = 'document' \
                     AND (expires_at IS NULL OR expires_at > ?2)",
                    rusqlite::params![tenant, now.0],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn tenant_usage(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<TenantUsage> {
        let tenant = tenant.as_str().to_owned();
        self.read(move |conn| {
            // length() of a blob reads its size from the record header, not the
            // blob's pages.
            let (documents, bytes): (i64, i64) = conn
                .query_row(
                    "SELECT COALESCE(SUM(kind = 'document'), 0), COALESCE(SUM(length(sealed)), 0)
                     FROM records WHERE tenant_id = ?1
                     AND kind IN ('document', 'chunk', 'session', 'session_message')
                     AND (expires_at IS NULL OR expires_at > ?2)",
                    rusqlite::params![tenant, now.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(backend)?;
            Ok(TenantUsage {
                documents: u64::try_from(documents).unwrap_or(0),
                bytes: u64::try_from(bytes).unwrap_or(0),
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    async fn shutdown(&self) {
        // Dropping the last sender lets the writer drain the queue and stop.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantRow {
        TenantRow {
            id: TenantId::from_random([n; 12]),
            name: format!("tenant {n}"),
            region: Region::default(),
            policy: PolicyName::default(),
            status: TenantStatus::Active,
            current_key_version: KeyVersion::FIRST,
            created_at: UnixMillis(1),
            models: None,
        }
    }

    fn key(v: u32) -> DataKeyRow {
        DataKeyRow {
            version: KeyVersion::new(v).unwrap(),
            wrapped: vec![v as u8; 8],
            created_at: UnixMillis(1),
        }
    }

    fn record(t: &TenantRow, id: &str, expires_at: Option<i64>) -> RecordRow {
        RecordRow {
            tenant_id: t.id.clone(),
            kind: RecordKind::DOCUMENT,
            record_id: id.into(),
            key_version: KeyVersion::FIRST,
            sealed: vec![1, 2, 3],
            created_at: UnixMillis(5),
            expires_at: expires_at.map(UnixMillis),
        }
    }

    /// The database and the `-wal` and `-shm` files SQLite makes beside it are
    /// private to the server's user, whatever the umask, also for a database an
    /// older version left world-readable.
    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_its_wal_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mode = |suffix: &str| {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777
        };
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.create_tenant(tenant(1), key(1)).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "db{suffix}");
        }
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            if let Ok(m) = std::fs::metadata(&file) {
                let mut p = m.permissions();
                p.set_mode(0o644);
                std::fs::set_permissions(&file, p).unwrap();
            }
        }
        let _reopened = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        assert_eq!(mode(""), 0o600);
    }

    #[tokio::test]
    async fn model_allow_lists_and_record_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // A database from before the allow-list column: the open migrates it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace(",\n    models TEXT\n", "\n"))
                .unwrap();
            conn.execute(
                "INSERT INTO tenants (id, name, region, policy, status, current_key_version, created_at)
                 VALUES ('tn_000000000000000000000000', 'old', 'default', 'default', 'active', 1, 1)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let old = TenantId::parse("tn_000000000000000000000000").unwrap();
        assert_eq!(store.tenant(&old).await.unwrap().unwrap().models, None);
        let a = tenant(9);
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        let models = Some(vec!["m1".to_owned(), "m2".to_owned()]);
        assert!(
            store
                .set_tenant_models(&a.id, models.clone())
                .await
                .unwrap()
        );
        assert_eq!(store.tenant(&a.id).await.unwrap().unwrap().models, models);
        assert!(store.set_tenant_models(&a.id, None).await.unwrap());
        assert_eq!(store.tenant(&a.id).await.unwrap().unwrap().models, None);
        assert!(!store.set_tenant_models(&tenant(10).id, None).await.unwrap());

        let part = |id: &str, expires: Option<i64>| RecordRow {
            kind: RecordKind::SESSION_MESSAGE,
            ..record(&a, id, expires)
        };
        for row in [
            part("s1#2", None),
            part("s1#1", None),
            part("s10#1", None),
            part("s1#3", Some(1)),
        ] {
            store.insert_record(row).await.unwrap();
        }
        let ids: Vec<String> = store
            .record_parts(&a.id, RecordKind::SESSION_MESSAGE, "s1", 10, UnixMillis(2))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.row.record_id)
            .collect();
        assert_eq!(
            ids,
            ["s1#1", "s1#2"],
            "in id order, this record's only, unexpired"
        );
        let other = store
            .record_parts(
                &tenant(10).id,
                RecordKind::SESSION_MESSAGE,
                "s1",
                10,
                UnixMillis(2),
            )
            .await
            .unwrap();
        assert!(other.is_empty(), "another tenant's parts are never listed");
    }

    #[tokio::test]
    async fn the_sweeper_lists_and_deletes_only_what_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).unwrap();
        let a = tenant(11);
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        for row in [
            record(&a, "forever", None),
            record(&a, "soon", Some(100)),
            record(&a, "later", Some(200)),
        ] {
            store.insert_record(row).await.unwrap();
        }
        let ids = |rows: Vec<StoredRecord>| -> Vec<String> {
            rows.into_iter().map(|r| r.row.record_id).collect()
        };
        assert!(
            store
                .expired_records(UnixMillis(99), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ids(store.expired_records(UnixMillis(250), 10).await.unwrap()),
            ["soon", "later"]
        );
        assert_eq!(
            ids(store.expired_records(UnixMillis(250), 1).await.unwrap()),
            ["soon"],
            "bounded"
        );
        let key_of = |id: &str| (a.id.clone(), RecordKind::DOCUMENT, id.to_owned());
        // Asked to delete everything at t=150, it deletes only what had expired then.
        let n = store
            .delete_expired(
                vec![key_of("forever"), key_of("soon"), key_of("later")],
                UnixMillis(150),
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        let left = ids(store
            .list_records(&a.id, RecordKind::DOCUMENT, 0, 10, UnixMillis(0))
            .await
            .unwrap());
        assert_eq!(left, ["forever", "later"]);
    }

    #[tokio::test]
    async fn records_are_scoped_by_tenant_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).unwrap();
        let (a, b) = (tenant(1), tenant(2));
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        store.create_tenant(b.clone(), key(1)).await.unwrap();
        assert!(matches!(
            store.create_tenant(a.clone(), key(1)).await,
            Err(StoreError::Conflict)
        ));

        store.insert_record(record(&a, "doc", None)).await.unwrap();
        store.insert_record(record(&b, "doc", None)).await.unwrap();
        store
            .insert_record(record(&a, "old", Some(10)))
            .await
            .unwrap();
        assert!(matches!(
            store.insert_record(record(&a, "doc", None)).await,
            Err(StoreError::Conflict)
        ));

        let now = UnixMillis(20);
        let got = store
            .record(&a.id, RecordKind::DOCUMENT, "doc", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.row.tenant_id, a.id);
        assert!(
            store
                .record(&a.id, RecordKind::DOCUMENT, "old", now)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .record(&a.id, RecordKind::DOCUMENT, "old", UnixMillis(9))
                .await
                .unwrap()
                .is_some()
        );
        let listed = store
            .list_records(&a.id, RecordKind::DOCUMENT, 0, 10, now)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);

        assert!(
            !store
                .delete_record(&a.id, RecordKind::DOCUMENT, "old", now)
                .await
                .unwrap()
        );
        assert!(
            store
                .delete_record(&a.id, RecordKind::DOCUMENT, "doc", now)
                .await
                .unwrap()
        );
        assert!(
            store
                .record(&b.id, RecordKind::DOCUMENT, "doc", now)
                .await
                .unwrap()
                .is_some()
        );

        let counts = store
            .erase_tenant(&b.id, now, b"receipt".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            counts,
            ErasureCounts {
                records: 1,
                api_keys: 0,
                data_keys: 1
            }
        );
        assert!(store.tenant(&b.id).await.unwrap().is_none());
        // An erased id is never reused.
        assert!(matches!(
            store.create_tenant(b.clone(), key(1)).await,
            Err(StoreError::Conflict)
        ));
        store.shutdown().await;
        assert!(matches!(store.ping().await, Ok(())));
        assert!(matches!(
            store.insert_record(record(&a, "late", None)).await,
            Err(StoreError::Closed)
        ));
    }

    #[tokio::test]
    async fn concurrent_writes_are_group_committed_and_all_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let t = tenant(3);
        store.create_tenant(t.clone(), key(1)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let (store, t) = (Arc::clone(&store), t.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .insert_record(record(&t, &format!("d{i}"), None))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        store.shutdown().await;
        let reopened = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let all = reopened
            .list_records(&t.id, RecordKind::DOCUMENT, 0, 1000, UnixMillis(0))
            .await
            .unwrap();
        assert_eq!(all.len(), 200);
    }
}
