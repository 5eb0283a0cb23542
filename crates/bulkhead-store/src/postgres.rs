//! The PostgreSQL backend: many stateless replicas, one database.
//!
//! Same rows and the same semantics as the SQLite store (the conformance suite in
//! `tests/it/conformance.rs` runs one set of checks against both), with three things
//! SQLite has no need for:
//!
//! - **Row-level security as a second wall.** Every method that serves one tenant
//!   runs in a transaction that switches to the `bulkhead_tenant` role (no
//!   `BYPASSRLS`) and sets `bulkhead.tenant` locally; the policies of
//!   `migrations/postgres/0002_row_level_security.sql` then hide every other
//!   tenant's rows even from a query that forgot its `WHERE tenant_id`. Methods
//!   that are cross-tenant by nature (tenant creation and listing, API-key lookup
//!   for authentication, the sweeper's and signer's work lists, counts) run as the
//!   login role: the admin plane.
//! - **Appends from several replicas.** An audit append locks its log's row
//!   (`SELECT … FOR UPDATE`) before comparing sizes, so two replicas extending one
//!   log serialise and the loser is told the log moved (and retries from the new
//!   edge), never forks it or leaves a gap.
//! - **One checkpoint signer.** `try_lead` holds a session advisory lock on a
//!   dedicated connection; only the replica holding it signs checkpoints. When
//!   that replica dies its connection closes and the lock passes to another.
//!
//! Migrations are SQL files compiled into the binary and applied on open under an
//! advisory lock, recorded in `schema_migrations`, so replicas starting together
//! apply each one exactly once.
//!
//! Durability: a write is acknowledged after PostgreSQL's `COMMIT` returns, which
//! (with the server's default `synchronous_commit = on`) is after its WAL flush.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bulkhead_types::{
    ApiKeyId, KeyVersion, LogId, PolicyName, RecordKind, Region, TenantId, TenantStatus, UnixMillis,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::{
    ApiKeyRow, AuditAppend, AuditEntryRow, AuditHead, AuditTileRow, DataKeyRow, ErasureCounts,
    RecordRow, Store, StoreCounts, StoreError, StoreResult, StoredRecord, TenantRow, TenantUsage,
};

/// How the PostgreSQL store is tuned. Every field is a limit.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Pooled connections per replica at most.
    pub pool_size_max: usize,
    /// How long a caller waits for a pooled connection before failing.
    pub pool_wait_ms_max: u64,
    /// How long one statement may run before the server cancels it.
    pub statement_timeout_ms: u64,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size_max: 16,
            pool_wait_ms_max: 10_000,
            statement_timeout_ms: 30_000,
        }
    }
}

/// The migrations, in order. A shipped file is never edited: a change is a new file.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_schema.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_row_level_security.sql"),
    ),
];

/// Advisory lock keys (any 64-bit numbers, fixed forever): one for migrations, one
/// for the checkpoint signer's leadership.
const MIGRATION_LOCK: i64 = 0x6275_6c6b_6865_6164; // "bulkhead"
const LEADER_LOCK: i64 = 0x6275_6c6b_6c65_6164; // "bulklead"

/// The role tenant-plane transactions run as; made by migration 2.
const TENANT_ROLE: &str = "bulkhead_tenant";

pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The connection that holds the leader lock, while this replica leads.
    leader: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PgStore")
            .field("hosts", &self.config.get_hosts().len())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict;
    }
    // The Display of a server error is only "db error"; the detail is in the source.
    match e.as_db_error() {
        Some(db) => {
            StoreError::Backend(format!("postgres: {}: {}", db.code().code(), db.message()))
        }
        None => StoreError::Backend(format!("postgres: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        other => StoreError::Backend(format!("postgres pool: {other}")),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn to_i64(n: u64) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::Backend(format!("{n} is out of range")))
}

fn to_u64(n: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| corrupt(what))
}

fn version_from(value: i64) -> StoreResult<KeyVersion> {
    u32::try_from(value)
        .ok()
        .and_then(KeyVersion::new)
        .ok_or_else(|| corrupt("key version"))
}

fn models_column(models: &Option<Vec<String>>) -> Option<String> {
    models
        .as_ref()
        .map(|m| serde_json::to_string(m).expect("a list of strings serializes"))
}

/// Which wall a transaction runs behind.
#[derive(Clone, Copy)]
enum Plane<'a> {
    /// The login role: cross-tenant maintenance and the admin plane.
    Admin,
    /// `bulkhead_tenant` with `bulkhead.tenant` set: this tenant's rows only.
    Tenant(&'a TenantId),
}

impl<'a> Plane<'a> {
    fn of_log(log: &'a LogId) -> Self {
        match log {
            LogId::Operator => Plane::Admin,
            LogId::Tenant(t) => Plane::Tenant(t),
        }
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn query(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.query(&stmt, params).await.map_err(pg)
}

async fn execute(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> StoreResult<u64> {
    let stmt = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.execute(&stmt, params).await.map_err(pg)
}

/// Switches the transaction to `plane` (for its remainder, or until switched
/// again). `set_config(…, true)` is `SET LOCAL`: it ends with the transaction, so a
/// pooled connection never carries a tenant into its next use.
async fn enter(tx: &Transaction<'_>, plane: Plane<'_>) -> StoreResult<()> {
    let (role, tenant) = match plane {
        Plane::Admin => ("none", ""),
        Plane::Tenant(t) => (TENANT_ROLE, t.as_str()),
    };
    query(
        tx,
        "SELECT set_config('role', $1, true), set_config('bulkhead.tenant', $2, true)",
        &[&role, &tenant],
    )
    .await?;
    Ok(())
}

const TENANT_COLUMNS: &str =
    "id, name, region, policy, status, current_key_version, created_at, models";

fn tenant_from_row(row: &Row) -> StoreResult<TenantRow> {
    let s = |i: usize| row.try_get::<_, String>(i).map_err(pg);
    Ok(TenantRow {
        id: TenantId::parse(&s(0)?).map_err(|_| corrupt("tenant id"))?,
        name: s(1)?,
        region: Region::parse(&s(2)?).map_err(|_| corrupt("region"))?,
        policy: PolicyName::parse(&s(3)?).map_err(|_| corrupt("policy"))?,
        status: TenantStatus::parse(&s(4)?).ok_or_else(|| corrupt("status"))?,
        current_key_version: version_from(row.try_get(5).map_err(pg)?)?,
        created_at: UnixMillis(row.try_get(6).map_err(pg)?),
        models: match row.try_get::<_, Option<String>>(7).map_err(pg)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|_| corrupt("models"))?),
            None => None,
        },
    })
}

const RECORD_COLUMNS: &str =
    "seq, tenant_id, kind, record_id, key_version, sealed, created_at, expires_at";

fn record_from_row(row: &Row) -> StoreResult<StoredRecord> {
    let kind: String = row.try_get(2).map_err(pg)?;
    let tenant: String = row.try_get(1).map_err(pg)?;
    Ok(StoredRecord {
        seq: row.try_get(0).map_err(pg)?,
        row: RecordRow {
            tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
            kind: RecordKind::from_stored(&kind).ok_or_else(|| corrupt("record kind"))?,
            record_id: row.try_get(3).map_err(pg)?,
            key_version: version_from(row.try_get(4).map_err(pg)?)?,
            sealed: row.try_get(5).map_err(pg)?,
            created_at: UnixMillis(row.try_get(6).map_err(pg)?),
            expires_at: row
                .try_get::<_, Option<i64>>(7)
                .map_err(pg)?
                .map(UnixMillis),
        },
    })
}

fn records_from(rows: Vec<Row>) -> StoreResult<Vec<StoredRecord>> {
    rows.iter().map(record_from_row).collect()
}

fn api_key_from_row(row: &Row) -> StoreResult<ApiKeyRow> {
    let key_id: String = row.try_get(0).map_err(pg)?;
    let tenant: String = row.try_get(1).map_err(pg)?;
    let time = |i: usize| -> StoreResult<Option<UnixMillis>> {
        Ok(row
            .try_get::<_, Option<i64>>(i)
            .map_err(pg)?
            .map(UnixMillis))
    };
    Ok(ApiKeyRow {
        key_id: ApiKeyId::parse(&key_id).map_err(|_| corrupt("key id"))?,
        tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
        secret_hash: row.try_get(2).map_err(pg)?,
        created_at: UnixMillis(row.try_get(3).map_err(pg)?),
        expires_at: time(4)?,
        revoked_at: time(5)?,
        quarantined_at: time(6)?,
    })
}

fn audit_head_from_row(row: &Row) -> StoreResult<AuditHead> {
    Ok(AuditHead {
        size: to_u64(row.try_get(0).map_err(pg)?, "audit size")?,
        checkpoint_size: to_u64(row.try_get(1).map_err(pg)?, "checkpoint size")?,
        checkpoint: row.try_get(2).map_err(pg)?,
        checkpoint_at: row
            .try_get::<_, Option<i64>>(3)
            .map_err(pg)?
            .map(UnixMillis),
    })
}

const AUDIT_ENTRY_COLUMNS: &str = "idx, leaf_hash, key_version, sealed, created_at";

fn audit_entry_from_row(row: &Row) -> StoreResult<AuditEntryRow> {
    let key_version: i64 = row.try_get(2).map_err(pg)?;
    Ok(AuditEntryRow {
        index: to_u64(row.try_get(0).map_err(pg)?, "audit index")?,
        leaf_hash: row.try_get(1).map_err(pg)?,
        key_version: u32::try_from(key_version).map_err(|_| corrupt("audit key version"))?,
        sealed: row.try_get(3).map_err(pg)?,
        created_at: UnixMillis(row.try_get(4).map_err(pg)?),
    })
}

/// Locks the tenant's data key `version` against retirement until the
/// transaction ends (`FOR SHARE`); false if it no longer exists while the
/// tenant has others (a tenant with no data key at all is erased: whatever
/// lands now is crypto-shredded already, as before). Every write of
/// a sealed row takes this lock first, and `retire_data_keys` locks the keys it
/// may delete `FOR UPDATE` before it looks for rows under them: so a writer
/// either commits before retirement looks (which then sees its row and keeps
/// the key) or waits for retirement and then finds the key gone (under READ
/// COMMITTED a row deleted meanwhile is skipped by the lock), and is refused.
async fn lock_data_key(tx: &Transaction<'_>, tenant: &TenantId, version: u32) -> StoreResult<bool> {
    let rows = query(
        tx,
        "SELECT 1 FROM data_keys WHERE tenant_id = $1 AND version = $2 FOR SHARE",
        &[&tenant.as_str(), &i64::from(version)],
    )
    .await?;
    if !rows.is_empty() {
        return Ok(true);
    }
    let any = query(
        tx,
        "SELECT 1 FROM data_keys WHERE tenant_id = $1 LIMIT 1",
        &[&tenant.as_str()],
    )
    .await?;
    Ok(any.is_empty())
}

async fn insert_record_row(
    tx: &Transaction<'_>,
    row: &RecordRow,
    or_ignore: bool,
) -> StoreResult<Option<i64>> {
    if !lock_data_key(tx, &row.tenant_id, row.key_version.get()).await? {
        return Err(StoreError::StaleKey);
    }
    let sql = if or_ignore {
        "INSERT INTO records (tenant_id, kind, record_id, key_version, sealed, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING seq"
    } else {
        "INSERT INTO records (tenant_id, kind, record_id, key_version, sealed, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq"
    };
    let rows = query(
        tx,
        sql,
        &[
            &row.tenant_id.as_str(),
            &row.kind.as_str(),
            &row.record_id,
            &i64::from(row.key_version.get()),
            &row.sealed,
            &row.created_at.0,
            &row.expires_at.map(|t| t.0),
        ],
    )
    .await?;
    rows.first().map(|r| r.try_get(0).map_err(pg)).transpose()
}

/// One log's part of an audit append. The log's row is locked first, so appends
/// to one log from any number of replicas are applied one after another, each
/// against the size the one before it left.
async fn apply_audit_append(tx: &Transaction<'_>, append: AuditAppend) -> StoreResult<bool> {
    let log = append.log.as_str();
    execute(
        tx,
        "INSERT INTO audit_logs (log_id, size) VALUES ($1, 0) ON CONFLICT (log_id) DO NOTHING",
        &[&log],
    )
    .await?;
    let rows = query(
        tx,
        "SELECT size FROM audit_logs WHERE log_id = $1 FOR UPDATE",
        &[&log],
    )
    .await?;
    let size: i64 = rows
        .first()
        .ok_or_else(|| StoreError::Backend("audit log row vanished".into()))?
        .try_get(0)
        .map_err(pg)?;
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
            if !lock_data_key(tx, tenant, v).await? {
                return Ok(false);
            }
        }
    }
    let new_size = append.old_size + append.entries.len() as u64;
    for (offset, entry) in append.entries.iter().enumerate() {
        if entry.index != append.old_size + offset as u64 {
            return Err(StoreError::Backend(
                "audit entries must be contiguous from the old size".into(),
            ));
        }
        execute(
            tx,
            "INSERT INTO audit_entries (log_id, idx, leaf_hash, key_version, sealed, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &log,
                &to_i64(entry.index)?,
                &entry.leaf_hash,
                &i64::from(entry.key_version),
                &entry.sealed,
                &entry.created_at.0,
            ],
        )
        .await?;
    }
    for tile in &append.tiles {
        // A tile only ever grows; refusing to shrink one guards against a bug
        // rewriting history with a stale right edge.
        execute(
            tx,
            "INSERT INTO audit_tiles (log_id, level, idx, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (log_id, level, idx) DO UPDATE SET data = excluded.data
             WHERE length(excluded.data) >= length(audit_tiles.data)",
            &[
                &log,
                &i16::from(tile.level),
                &to_i64(tile.index)?,
                &tile.data,
            ],
        )
        .await?;
    }
    execute(
        tx,
        "UPDATE audit_logs SET size = $2 WHERE log_id = $1",
        &[&log, &to_i64(new_size)?],
    )
    .await?;
    // Attached records ride with their event; ids are random, a duplicate stays.
    for row in &append.records {
        insert_record_row(tx, row, true).await?;
    }
    Ok(true)
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`), applies pending
    /// migrations, and returns the store. The login role owns the tables and is
    /// the admin plane; it needs `CREATEROLE` the first time (to make
    /// `bulkhead_tenant`) unless an operator made that role beforehand.
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Backend(format!("postgres url: {e}")))?;
        config.options(format!(
            "-c statement_timeout={} -c lock_timeout={}",
            options.statement_timeout_ms, options.statement_timeout_ms
        ));
        config.application_name("bulkhead");
        config.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection back from a transaction that was dropped mid-way has
                // already been rolled back by tokio-postgres; `Fast` skips a
                // round trip per checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size_max.max(1))
            .wait_timeout(Some(Duration::from_millis(options.pool_wait_ms_max)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let store = Self {
            pool,
            config,
            leader: tokio::sync::Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        // A session lock, held across the migration transactions, so a replica
        // that starts while another migrates waits and then finds nothing to do.
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let result = async {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version BIGINT PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(pg)?;
            for (version, sql) in MIGRATIONS {
                let tx = conn.transaction().await.map_err(pg)?;
                let done = tx
                    .query_opt(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        &[version],
                    )
                    .await
                    .map_err(pg)?
                    .is_some();
                if !done {
                    tracing::info!(version, "applying PostgreSQL migration");
                    tx.batch_execute(sql).await.map_err(pg)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        &[version],
                    )
                    .await
                    .map_err(pg)?;
                }
                tx.commit().await.map_err(pg)?;
            }
            Ok(())
        }
        .await;
        let unlocked = conn
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg);
        result.and(unlocked.map(|_| ()))
    }

    async fn conn(&self) -> StoreResult<deadpool_postgres::Object> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(pool_err)
    }
}

/// Runs `$body` in a transaction on plane `$plane`, with `$tx` bound to it, and
/// commits if the body returned `Ok`. A macro rather than a closure: the body
/// borrows the transaction across awaits, which async closures cannot yet express
/// for a trait-object future without boxing every call.
macro_rules! in_tx {
    ($self:expr, $plane:expr, |$tx:ident| $body:block) => {{
        let mut conn = $self.conn().await?;
        let $tx = conn.transaction().await.map_err(pg)?;
        enter(&$tx, $plane).await?;
        let result: StoreResult<_> = async { $body }.await;
        match result {
            Ok(value) => {
                $tx.commit().await.map_err(pg)?;
                Ok(value)
            }
            // Dropping the transaction rolls it back.
            Err(e) => Err(e),
        }
    }};
}

#[async_trait]
impl Store for PgStore {
    async fn get_or_init_meta(&self, key: &'static str, init: Vec<u8>) -> StoreResult<Vec<u8>> {
        in_tx!(self, Plane::Admin, |tx| {
            execute(
                &tx,
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &init],
            )
            .await?;
            let rows = query(&tx, "SELECT value FROM meta WHERE key = $1", &[&key]).await?;
            rows.first()
                .ok_or_else(|| corrupt("meta row"))?
                .try_get(0)
                .map_err(pg)
        })
    }

    async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> StoreResult<()> {
        in_tx!(self, Plane::Admin, |tx| {
            execute(
                &tx,
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .await?;
            Ok(())
        })
    }

    async fn document_count(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<u64> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let rows = query(
                &tx,
                "SELECT COUNT(*) FROM records WHERE tenant_id = $1 AND kind = 'document'
                 AND (expires_at IS NULL OR expires_at > $2)",
                &[&tenant.as_str(), &now.0],
            )
            .await?;
            let row = rows.first().ok_or_else(|| corrupt("count"))?;
            to_u64(row.try_get(0).map_err(pg)?, "count")
        })
    }

    async fn tenant_usage(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<TenantUsage> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            // octet_length of a TOASTed bytea reads its header, not its value.
            let rows = query(
                &tx,
                "SELECT COUNT(*) FILTER (WHERE kind = 'document'),
                        COALESCE(SUM(octet_length(sealed)), 0)::BIGINT
                 FROM records WHERE tenant_id = $1
                 AND kind IN ('document', 'chunk', 'session', 'session_message')
                 AND (expires_at IS NULL OR expires_at > $2)",
                &[&tenant.as_str(), &now.0],
            )
            .await?;
            let row = rows.first().ok_or_else(|| corrupt("usage"))?;
            Ok(TenantUsage {
                documents: to_u64(row.try_get(0).map_err(pg)?, "usage documents")?,
                bytes: to_u64(row.try_get(1).map_err(pg)?, "usage bytes")?,
            })
        })
    }

    async fn create_tenant(&self, tenant: TenantRow, first_key: DataKeyRow) -> StoreResult<()> {
        in_tx!(self, Plane::Admin, |tx| {
            let erased = query(
                &tx,
                "SELECT 1 FROM erasures WHERE tenant_id = $1",
                &[&tenant.id.as_str()],
            )
            .await?;
            if !erased.is_empty() {
                return Err(StoreError::Conflict);
            }
            execute(
                &tx,
                "INSERT INTO tenants (id, name, region, policy, status, current_key_version, created_at, models)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &tenant.id.as_str(),
                    &tenant.name,
                    &tenant.region.as_str(),
                    &tenant.policy.as_str(),
                    &tenant.status.as_str(),
                    &i64::from(tenant.current_key_version.get()),
                    &tenant.created_at.0,
                    &models_column(&tenant.models),
                ],
            )
            .await?;
            execute(
                &tx,
                "INSERT INTO data_keys (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &tenant.id.as_str(),
                    &i64::from(first_key.version.get()),
                    &first_key.wrapped,
                    &first_key.created_at.0,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRow>> {
        in_tx!(self, Plane::Tenant(id), |tx| {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
            let rows = query(&tx, &sql, &[&id.as_str()]).await?;
            rows.first().map(tenant_from_row).transpose()
        })
    }

    async fn list_tenants(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<(i64, TenantRow)>> {
        in_tx!(self, Plane::Admin, |tx| {
            let sql = format!(
                "SELECT {TENANT_COLUMNS}, seq FROM tenants WHERE seq > $1 ORDER BY seq LIMIT $2"
            );
            let rows = query(&tx, &sql, &[&after_seq, &i64::from(limit)]).await?;
            rows.iter()
                .map(|row| Ok((row.try_get(8).map_err(pg)?, tenant_from_row(row)?)))
                .collect()
        })
    }

    async fn set_tenant_status(&self, id: &TenantId, status: TenantStatus) -> StoreResult<bool> {
        in_tx!(self, Plane::Admin, |tx| {
            let n = execute(
                &tx,
                "UPDATE tenants SET status = $2 WHERE id = $1",
                &[&id.as_str(), &status.as_str()],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn set_api_key_quarantine(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: Option<UnixMillis>,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let n = execute(
                &tx,
                "UPDATE api_keys SET quarantined_at = $3 WHERE key_id = $1 AND tenant_id = $2",
                &[&key_id.as_str(), &tenant.as_str(), &at.map(|t| t.0)],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn set_tenant_policy(&self, id: &TenantId, policy: &PolicyName) -> StoreResult<bool> {
        in_tx!(self, Plane::Admin, |tx| {
            let n = execute(
                &tx,
                "UPDATE tenants SET policy = $2 WHERE id = $1",
                &[&id.as_str(), &policy.as_str()],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn set_tenant_models(
        &self,
        id: &TenantId,
        models: Option<Vec<String>>,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Admin, |tx| {
            let n = execute(
                &tx,
                "UPDATE tenants SET models = $2 WHERE id = $1",
                &[&id.as_str(), &models_column(&models)],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn data_keys(&self, id: &TenantId) -> StoreResult<Vec<DataKeyRow>> {
        in_tx!(self, Plane::Tenant(id), |tx| {
            let rows = query(
                &tx,
                "SELECT version, wrapped, created_at FROM data_keys WHERE tenant_id = $1 ORDER BY version",
                &[&id.as_str()],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(DataKeyRow {
                        version: version_from(row.try_get(0).map_err(pg)?)?,
                        wrapped: row.try_get(1).map_err(pg)?,
                        created_at: UnixMillis(row.try_get(2).map_err(pg)?),
                    })
                })
                .collect()
        })
    }

    async fn add_data_key(&self, id: &TenantId, key: DataKeyRow) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(id), |tx| {
            let version = i64::from(key.version.get());
            let n = execute(
                &tx,
                "UPDATE tenants SET current_key_version = $2 WHERE id = $1",
                &[&id.as_str(), &version],
            )
            .await?;
            if n == 0 {
                return Ok(false);
            }
            execute(
                &tx,
                "INSERT INTO data_keys (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)",
                &[&id.as_str(), &version, &key.wrapped, &key.created_at.0],
            )
            .await?;
            Ok(true)
        })
    }

    async fn retire_data_keys(&self, id: &TenantId, below: KeyVersion) -> StoreResult<u64> {
        in_tx!(self, Plane::Tenant(id), |tx| {
            // First wait for every writer holding one of these keys (`FOR
            // SHARE`, see `lock_data_key`) and hold off new ones; the DELETE's
            // snapshot, taken after, sees the rows they committed.
            query(
                &tx,
                "SELECT version FROM data_keys WHERE tenant_id = $1 AND version < $2
                 ORDER BY version FOR UPDATE",
                &[&id.as_str(), &i64::from(below.get())],
            )
            .await?;
            execute(
                &tx,
                "DELETE FROM data_keys WHERE tenant_id = $1 AND version < $2
                 AND NOT EXISTS (SELECT 1 FROM records r
                                 WHERE r.tenant_id = $1 AND r.key_version = data_keys.version)
                 AND NOT EXISTS (SELECT 1 FROM audit_entries e
                                 WHERE e.log_id = $1 AND e.key_version = data_keys.version
                                   AND e.sealed IS NOT NULL)",
                &[&id.as_str(), &i64::from(below.get())],
            )
            .await
        })
    }

    async fn erase_tenant(
        &self,
        id: &TenantId,
        erased_at: UnixMillis,
        receipt: Vec<u8>,
    ) -> StoreResult<Option<ErasureCounts>> {
        in_tx!(self, Plane::Admin, |tx| {
            let tenant = id.as_str();
            // Destroy the wrapped keys first: that alone makes every ciphertext of
            // the tenant unrecoverable, in this database and in its backups.
            let data_keys = execute(
                &tx,
                "DELETE FROM data_keys WHERE tenant_id = $1",
                &[&tenant],
            )
            .await?;
            let records =
                execute(&tx, "DELETE FROM records WHERE tenant_id = $1", &[&tenant]).await?;
            // Leaves and tiles stay (the log still verifies); bodies go.
            execute(
                &tx,
                "UPDATE audit_entries SET sealed = NULL WHERE log_id = $1",
                &[&tenant],
            )
            .await?;
            let api_keys =
                execute(&tx, "DELETE FROM api_keys WHERE tenant_id = $1", &[&tenant]).await?;
            let tenants = execute(&tx, "DELETE FROM tenants WHERE id = $1", &[&tenant]).await?;
            if tenants == 0 {
                // Nothing existed; rolling back is the same as committing nothing.
                return Ok(None);
            }
            execute(
                &tx,
                "INSERT INTO erasures (tenant_id, erased_at, receipt) VALUES ($1, $2, $3)",
                &[&tenant, &erased_at.0, &receipt],
            )
            .await?;
            Ok(Some(ErasureCounts {
                records,
                api_keys,
                data_keys,
            }))
        })
    }

    async fn insert_api_key(&self, row: ApiKeyRow) -> StoreResult<()> {
        in_tx!(self, Plane::Admin, |tx| {
            execute(
                &tx,
                "INSERT INTO api_keys (key_id, tenant_id, secret_hash, created_at, expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &row.key_id.as_str(),
                    &row.tenant_id.as_str(),
                    &row.secret_hash,
                    &row.created_at.0,
                    &row.expires_at.map(|t| t.0),
                    &row.revoked_at.map(|t| t.0),
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn api_key(&self, key_id: &ApiKeyId) -> StoreResult<Option<ApiKeyRow>> {
        // Authentication: the tenant is what this lookup finds out, so it cannot
        // run behind a tenant's wall.
        in_tx!(self, Plane::Admin, |tx| {
            let rows = query(
                &tx,
                "SELECT key_id, tenant_id, secret_hash, created_at, expires_at, revoked_at,
                        quarantined_at
                 FROM api_keys WHERE key_id = $1",
                &[&key_id.as_str()],
            )
            .await?;
            rows.first().map(api_key_from_row).transpose()
        })
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: UnixMillis,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let n = execute(
                &tx,
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3)
                 WHERE key_id = $1 AND tenant_id = $2",
                &[&key_id.as_str(), &tenant.as_str(), &at.0],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn insert_record(&self, row: RecordRow) -> StoreResult<i64> {
        in_tx!(self, Plane::Tenant(&row.tenant_id), |tx| {
            insert_record_row(&tx, &row, false)
                .await?
                .ok_or_else(|| corrupt("insert returned no seq"))
        })
    }

    async fn insert_records(&self, rows: Vec<RecordRow>) -> StoreResult<()> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let first_tenant = first.tenant_id.clone();
        in_tx!(self, Plane::Tenant(&first_tenant), |tx| {
            let mut current = first_tenant.clone();
            for row in &rows {
                if row.tenant_id != current {
                    enter(&tx, Plane::Tenant(&row.tenant_id)).await?;
                    current = row.tenant_id.clone();
                }
                insert_record_row(&tx, row, false).await?;
            }
            Ok(())
        })
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
        in_tx!(self, Plane::Tenant(&tenant), |tx| {
            // FOR SHARE holds the parent row until this commits: a concurrent
            // delete of it waits, then (read committed) deletes the parts it
            // finds in a later statement, these ones included.
            let live = query(
                &tx,
                "SELECT 1 FROM records WHERE tenant_id = $1 AND kind = $2 AND record_id = $3
                   AND (expires_at IS NULL OR expires_at > $4) FOR SHARE",
                &[&tenant.as_str(), &parent_kind.as_str(), &parent_id, &now.0],
            )
            .await?;
            if live.is_empty() {
                return Ok(false);
            }
            for row in &rows {
                if row.tenant_id != tenant {
                    return Err(StoreError::Backend(
                        "parts of one record span two tenants".into(),
                    ));
                }
                insert_record_row(&tx, row, false).await?;
            }
            Ok(true)
        })
    }

    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<Option<StoredRecord>> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant_id = $1 AND kind = $2 AND record_id = $3
                   AND (expires_at IS NULL OR expires_at > $4)"
            );
            let rows = query(
                &tx,
                &sql,
                &[&tenant.as_str(), &kind.as_str(), &record_id, &now.0],
            )
            .await?;
            rows.first().map(record_from_row).transpose()
        })
    }

    async fn expired_records(&self, now: UnixMillis, limit: u32) -> StoreResult<Vec<StoredRecord>> {
        in_tx!(self, Plane::Admin, |tx| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE expires_at IS NOT NULL AND expires_at <= $1
                 ORDER BY expires_at, seq LIMIT $2"
            );
            records_from(query(&tx, &sql, &[&now.0, &i64::from(limit)]).await?)
        })
    }

    async fn delete_expired(
        &self,
        keys: Vec<(TenantId, RecordKind, String)>,
        now: UnixMillis,
    ) -> StoreResult<u64> {
        in_tx!(self, Plane::Admin, |tx| {
            let mut n = 0;
            for (tenant, kind, id) in &keys {
                n += execute(
                    &tx,
                    "DELETE FROM records WHERE tenant_id = $1 AND kind = $2 AND record_id = $3
                       AND expires_at IS NOT NULL AND expires_at <= $4",
                    &[&tenant.as_str(), &kind.as_str(), id, &now.0],
                )
                .await?;
            }
            Ok(n)
        })
    }

    async fn record_parts(
        &self,
        tenant: &TenantId,
        part_kind: RecordKind,
        record_id: &str,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant_id = $1 AND kind = $2 AND record_id >= $3 AND record_id < $4
                   AND (expires_at IS NULL OR expires_at > $5)
                 ORDER BY record_id LIMIT $6"
            );
            let (low, high) = (format!("{record_id}#"), format!("{record_id}$"));
            records_from(
                query(
                    &tx,
                    &sql,
                    &[
                        &tenant.as_str(),
                        &part_kind.as_str(),
                        &low,
                        &high,
                        &now.0,
                        &i64::from(limit),
                    ],
                )
                .await?,
            )
        })
    }

    async fn list_records(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        after_seq: i64,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records
                 WHERE tenant_id = $1 AND kind = $2 AND seq > $3
                   AND (expires_at IS NULL OR expires_at > $4)
                 ORDER BY seq LIMIT $5"
            );
            records_from(
                query(
                    &tx,
                    &sql,
                    &[
                        &tenant.as_str(),
                        &kind.as_str(),
                        &after_seq,
                        &now.0,
                        &i64::from(limit),
                    ],
                )
                .await?,
            )
        })
    }

    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            // An expired record is already invisible: deleting it anyway saves the
            // sweeper work, but the caller is told there was nothing.
            let rows = query(
                &tx,
                "DELETE FROM records WHERE tenant_id = $1 AND kind = $2 AND record_id = $3
                 RETURNING expires_at IS NULL OR expires_at > $4",
                &[&tenant.as_str(), &kind.as_str(), &record_id, &now.0],
            )
            .await?;
            Ok(match rows.first() {
                Some(row) => row.try_get::<_, bool>(0).map_err(pg)?,
                None => false,
            })
        })
    }

    async fn delete_record_with_parts(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        part_kind: RecordKind,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let rows = query(
                &tx,
                "DELETE FROM records WHERE tenant_id = $1 AND kind = $2 AND record_id = $3
                 RETURNING expires_at IS NULL OR expires_at > $4",
                &[&tenant.as_str(), &kind.as_str(), &record_id, &now.0],
            )
            .await?;
            // Parts are `id#…`: the range [id#, id$) holds exactly them.
            let (low, high) = (format!("{record_id}#"), format!("{record_id}$"));
            execute(
                &tx,
                "DELETE FROM records WHERE tenant_id = $1 AND kind = $2
                   AND record_id >= $3 AND record_id < $4",
                &[&tenant.as_str(), &part_kind.as_str(), &low, &high],
            )
            .await?;
            Ok(match rows.first() {
                Some(row) => row.try_get::<_, bool>(0).map_err(pg)?,
                None => false,
            })
        })
    }

    async fn records_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<StoredRecord>> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = $1 AND key_version < $2
                 ORDER BY seq LIMIT $3"
            );
            records_from(
                query(
                    &tx,
                    &sql,
                    &[&tenant.as_str(), &i64::from(below.get()), &i64::from(limit)],
                )
                .await?,
            )
        })
    }

    async fn reseal_record(
        &self,
        tenant: &TenantId,
        seq: i64,
        expected: KeyVersion,
        new_version: KeyVersion,
        sealed: Vec<u8>,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            if !lock_data_key(&tx, tenant, new_version.get()).await? {
                return Ok(false);
            }
            let n = execute(
                &tx,
                "UPDATE records SET sealed = $4, key_version = $5
                 WHERE seq = $1 AND tenant_id = $2 AND key_version = $3",
                &[
                    &seq,
                    &tenant.as_str(),
                    &i64::from(expected.get()),
                    &sealed,
                    &i64::from(new_version.get()),
                ],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn tenants_with_old_keys(&self, limit: u32) -> StoreResult<Vec<TenantId>> {
        in_tx!(self, Plane::Admin, |tx| {
            let rows = query(
                &tx,
                "SELECT DISTINCT t.id FROM tenants t JOIN data_keys d ON d.tenant_id = t.id
                 WHERE d.version < t.current_key_version LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get(0).map_err(pg)?;
                    TenantId::parse(&id).map_err(|_| corrupt("tenant id"))
                })
                .collect()
        })
    }

    async fn audit_head(&self, log: &LogId) -> StoreResult<AuditHead> {
        in_tx!(self, Plane::of_log(log), |tx| {
            let rows = query(
                &tx,
                "SELECT size, checkpoint_size, checkpoint, checkpoint_at FROM audit_logs
                 WHERE log_id = $1",
                &[&log.as_str()],
            )
            .await?;
            Ok(rows
                .first()
                .map(audit_head_from_row)
                .transpose()?
                .unwrap_or_default())
        })
    }

    async fn audit_tiles(
        &self,
        log: &LogId,
        ids: Vec<(u8, u64)>,
    ) -> StoreResult<Vec<AuditTileRow>> {
        in_tx!(self, Plane::of_log(log), |tx| {
            let mut out = Vec::with_capacity(ids.len());
            for (level, index) in ids {
                let rows = query(
                    &tx,
                    "SELECT data FROM audit_tiles WHERE log_id = $1 AND level = $2 AND idx = $3",
                    &[&log.as_str(), &i16::from(level), &to_i64(index)?],
                )
                .await?;
                if let Some(row) = rows.first() {
                    out.push(AuditTileRow {
                        level,
                        index,
                        data: row.try_get(0).map_err(pg)?,
                    });
                }
            }
            Ok(out)
        })
    }

    async fn audit_append(&self, appends: Vec<AuditAppend>) -> StoreResult<Vec<bool>> {
        // Lock logs in one global order (by id) so that two replicas appending to
        // the same two logs cannot deadlock; answers go back in the caller's order.
        let mut order: Vec<usize> = (0..appends.len()).collect();
        order.sort_by(|&a, &b| appends[a].log.as_str().cmp(appends[b].log.as_str()));
        let mut slots: Vec<Option<AuditAppend>> = appends.into_iter().map(Some).collect();
        in_tx!(self, Plane::Admin, |tx| {
            let mut applied = vec![false; slots.len()];
            for i in order {
                let append = slots[i].take().expect("each index is visited once");
                // Each log's rows are written behind that log's wall.
                let log = append.log.clone();
                enter(&tx, Plane::of_log(&log)).await?;
                applied[i] = apply_audit_append(&tx, append).await?;
            }
            Ok(applied)
        })
    }

    async fn audit_entries(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<AuditEntryRow>> {
        in_tx!(self, Plane::of_log(log), |tx| {
            let sql = format!(
                "SELECT {AUDIT_ENTRY_COLUMNS} FROM audit_entries
                 WHERE log_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx"
            );
            let rows = query(&tx, &sql, &[&log.as_str(), &to_i64(start)?, &to_i64(end)?]).await?;
            rows.iter().map(audit_entry_from_row).collect()
        })
    }

    async fn audit_leaf_hashes(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<Vec<u8>>> {
        in_tx!(self, Plane::of_log(log), |tx| {
            let rows = query(
                &tx,
                "SELECT leaf_hash FROM audit_entries
                 WHERE log_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                &[&log.as_str(), &to_i64(start)?, &to_i64(end)?],
            )
            .await?;
            rows.iter().map(|r| r.try_get(0).map_err(pg)).collect()
        })
    }

    async fn audit_index_of(&self, log: &LogId, leaf_hash: &[u8]) -> StoreResult<Option<u64>> {
        in_tx!(self, Plane::of_log(log), |tx| {
            let rows = query(
                &tx,
                "SELECT idx FROM audit_entries WHERE log_id = $1 AND leaf_hash = $2
                 ORDER BY idx LIMIT 1",
                &[&log.as_str(), &leaf_hash],
            )
            .await?;
            rows.first()
                .map(|r| to_u64(r.try_get(0).map_err(pg)?, "audit index"))
                .transpose()
        })
    }

    async fn audit_set_checkpoint(
        &self,
        log: &LogId,
        expected_size: u64,
        size: u64,
        note: Vec<u8>,
        at: UnixMillis,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::of_log(log), |tx| {
            let n = execute(
                &tx,
                "UPDATE audit_logs SET checkpoint_size = $3, checkpoint = $4, checkpoint_at = $5
                 WHERE log_id = $1 AND checkpoint_size = $2 AND $3 >= checkpoint_size
                   AND $3 <= size",
                &[
                    &log.as_str(),
                    &to_i64(expected_size)?,
                    &to_i64(size)?,
                    &note,
                    &at.0,
                ],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn audit_logs_behind(&self, limit: u32) -> StoreResult<Vec<LogId>> {
        in_tx!(self, Plane::Admin, |tx| {
            let rows = query(
                &tx,
                "SELECT log_id FROM audit_logs WHERE size > checkpoint_size ORDER BY seq LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get(0).map_err(pg)?;
                    LogId::parse(&id).map_err(|_| corrupt("audit log id"))
                })
                .collect()
        })
    }

    async fn audit_logs(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, LogId, AuditHead)>> {
        in_tx!(self, Plane::Admin, |tx| {
            let rows = query(
                &tx,
                "SELECT size, checkpoint_size, checkpoint, checkpoint_at, seq, log_id FROM audit_logs
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let head = audit_head_from_row(row)?;
                    let id: String = row.try_get(5).map_err(pg)?;
                    let log = LogId::parse(&id).map_err(|_| corrupt("audit log id"))?;
                    Ok((row.try_get(4).map_err(pg)?, log, head))
                })
                .collect()
        })
    }

    async fn audit_entries_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntryRow>> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let sql = format!(
                "SELECT {AUDIT_ENTRY_COLUMNS} FROM audit_entries
                 WHERE log_id = $1 AND key_version < $2 AND sealed IS NOT NULL
                 ORDER BY idx LIMIT $3"
            );
            let rows = query(
                &tx,
                &sql,
                &[&tenant.as_str(), &i64::from(below.get()), &i64::from(limit)],
            )
            .await?;
            rows.iter().map(audit_entry_from_row).collect()
        })
    }

    async fn reseal_audit_entry(
        &self,
        tenant: &TenantId,
        index: u64,
        expected: KeyVersion,
        new_version: KeyVersion,
        sealed: Vec<u8>,
    ) -> StoreResult<bool> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            if !lock_data_key(&tx, tenant, new_version.get()).await? {
                return Ok(false);
            }
            let n = execute(
                &tx,
                "UPDATE audit_entries SET sealed = $4, key_version = $5
                 WHERE log_id = $1 AND idx = $2 AND key_version = $3 AND sealed IS NOT NULL",
                &[
                    &tenant.as_str(),
                    &to_i64(index)?,
                    &i64::from(expected.get()),
                    &sealed,
                    &i64::from(new_version.get()),
                ],
            )
            .await?;
            Ok(n == 1)
        })
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        in_tx!(self, Plane::Admin, |tx| {
            let rows = query(
                &tx,
                "SELECT (SELECT COUNT(*) FROM tenants),
                        (SELECT COUNT(*) FROM tenants WHERE status = 'quarantined'),
                        (SELECT COUNT(*) FROM records WHERE kind = 'document')",
                &[],
            )
            .await?;
            let row = rows.first().ok_or_else(|| corrupt("counts"))?;
            let n = |i: usize| -> StoreResult<u64> {
                Ok(u64::try_from(row.try_get::<_, i64>(i).map_err(pg)?).unwrap_or(0))
            };
            Ok(StoreCounts {
                tenants: n(0)?,
                quarantined_tenants: n(1)?,
                documents: n(2)?,
            })
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1").await.map_err(pg)?;
        Ok(())
    }

    async fn record_generation(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
    ) -> StoreResult<(i64, u64)> {
        in_tx!(self, Plane::Tenant(tenant), |tx| {
            let rows = query(
                &tx,
                "SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM records
                 WHERE tenant_id = $1 AND kind = $2",
                &[&tenant.as_str(), &kind.as_str()],
            )
            .await?;
            let row = rows.first().ok_or_else(|| corrupt("generation"))?;
            Ok((
                row.try_get(0).map_err(pg)?,
                to_u64(row.try_get(1).map_err(pg)?, "count")?,
            ))
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn try_lead(&self) -> StoreResult<bool> {
        let mut leader = self.leader.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if let Some(client) = leader.as_ref() {
            // Still leading only while the connection that holds the lock lives.
            if !client.is_closed() && client.simple_query("SELECT 1").await.is_ok() {
                return Ok(true);
            }
            *leader = None;
        }
        let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the checkpoint leader's connection ended");
            }
        });
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        if got {
            tracing::info!("this replica now signs audit checkpoints");
            *leader = Some(client);
        }
        Ok(got)
    }

    async fn shutdown(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        // Dropping the leader's connection releases the lock for another replica.
        self.leader.lock().await.take();
        self.pool.close();
    }
}
