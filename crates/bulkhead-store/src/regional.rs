//! Residency: one [`Store`] per region, behind the one `Store` the rest of the
//! server sees.
//!
//! A tenant's rows — its tenant row, data keys, API keys, records and its audit
//! log — live only in the store of its region; a region without a store of its own
//! uses the home store, which also holds everything server-wide (meta, the operator
//! audit log). This wrapper must never copy a tenant's row into another store, and
//! never keeps anything a second replica would need to know: where a tenant or key
//! lives is learned by asking the stores, and once learned it never changes (a
//! tenant's region is fixed at creation), so each replica caches it on its own.
//!
//! Reads across tenants (the tenant list, the audit log list, the sweeper's work
//! list, counts) merge over every store; their cursors carry the store's position
//! in the high bits ([`STORE_SHIFT`]), so a page that ends in one store resumes
//! there and then walks on to the next. Lists are therefore in creation order
//! within each store, store after store, rather than one order across regions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bulkhead_types::{
    ApiKeyId, KeyVersion, LogId, PolicyName, RecordKind, Region, TenantId, TenantStatus, UnixMillis,
};

use crate::{
    ApiKeyRow, AuditAppend, AuditEntryRow, AuditHead, AuditTileRow, DataKeyRow, ErasureCounts,
    RecordRow, Store, StoreCounts, StoreError, StoreResult, StoredRecord, TenantRow, TenantUsage,
};

/// Bits of a merged cursor that hold a store's own sequence number; the store's
/// position (0 for home) sits above them. 2^48 rows per store is far beyond what
/// one SQLite file or one PostgreSQL table of ours will hold.
pub const STORE_SHIFT: u32 = 48;
const SEQ_MASK: i64 = (1 << STORE_SHIFT) - 1;
/// Most regional stores: the store's position must fit in the cursor's high bits
/// below the sign bit, and every miss asks each store in turn.
pub const REGIONS_MAX: usize = 64;
/// Most tenant and key locations remembered; beyond it the cache starts over (a
/// forgotten location costs one read per store to learn again).
const LOCATIONS_CACHED_MAX: usize = 1 << 20;
/// The home store's position.
const HOME: usize = 0;

/// Why a set of regional stores was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionalError {
    #[error("region `{0}` has two stores")]
    DuplicateRegion(String),
    #[error("at most {REGIONS_MAX} regions may have their own store")]
    TooManyRegions,
}

/// A [`Store`] that routes every tenant's rows to its region's store.
pub struct RegionalStore {
    /// Home first, then the regional stores in configuration order. The order is
    /// part of the cursors handed out, so it must stay the same while a cursor is
    /// in use (a restart with a reordered config only shuffles pages in flight).
    stores: Vec<Arc<dyn Store>>,
    regions: HashMap<Region, usize>,
    tenants: Mutex<HashMap<TenantId, usize>>,
    keys: Mutex<HashMap<ApiKeyId, usize>>,
}

impl std::fmt::Debug for RegionalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionalStore")
            .field("stores", &self.stores)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps only ever hold facts that were true when inserted; a panic while
    // one was held cannot have left a wrong entry behind.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remember<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, usize>>, key: K, store: usize) {
    let mut map = lock(map);
    if map.len() >= LOCATIONS_CACHED_MAX {
        map.clear();
    }
    map.insert(key, store);
}

fn encode_cursor(store: usize, seq: i64) -> StoreResult<i64> {
    if !(0..=SEQ_MASK).contains(&seq) {
        return Err(StoreError::Corrupt(format!(
            "sequence number {seq} does not fit a regional cursor"
        )));
    }
    // `store < REGIONS_MAX + 1 <= 2^15`, checked in `new`, so this stays positive.
    Ok(((store as i64) << STORE_SHIFT) | seq)
}

fn decode_cursor(cursor: i64) -> (usize, i64) {
    if cursor <= 0 {
        return (HOME, 0);
    }
    // Non-negative here, so the shift yields a small non-negative number.
    ((cursor >> STORE_SHIFT) as usize, cursor & SEQ_MASK)
}

impl RegionalStore {
    /// `home` serves server-wide rows and the tenants of every region not listed
    /// in `regions`.
    pub fn new(
        home: Arc<dyn Store>,
        regions: Vec<(Region, Arc<dyn Store>)>,
    ) -> Result<Self, RegionalError> {
        if regions.len() > REGIONS_MAX {
            return Err(RegionalError::TooManyRegions);
        }
        let mut stores = vec![home];
        let mut by_region = HashMap::new();
        for (region, store) in regions {
            if by_region.contains_key(&region) {
                return Err(RegionalError::DuplicateRegion(region.to_string()));
            }
            by_region.insert(region, stores.len());
            stores.push(store);
        }
        Ok(Self {
            stores,
            regions: by_region,
            tenants: Mutex::default(),
            keys: Mutex::default(),
        })
    }

    /// The regions that have a store of their own.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.keys()
    }

    fn store_for_region(&self, region: &Region) -> usize {
        self.regions.get(region).copied().unwrap_or(HOME)
    }

    /// The store that holds `tenant`'s rows. Unknown tenants (never created, or
    /// erased with no log left) resolve to home, where reads find nothing and
    /// writes that need the tenant report it missing, as with one store.
    async fn locate(&self, tenant: &TenantId) -> StoreResult<usize> {
        if let Some(&i) = lock(&self.tenants).get(tenant) {
            return Ok(i);
        }
        for (i, store) in self.stores.iter().enumerate() {
            if store.tenant(tenant).await?.is_some() {
                remember(&self.tenants, tenant.clone(), i);
                return Ok(i);
            }
        }
        // An erased tenant has no row, but its log's leaf hashes stay where they
        // were written, and later entries must go to the same log.
        let log = LogId::Tenant(tenant.clone());
        for (i, store) in self.stores.iter().enumerate() {
            if store.audit_head(&log).await?.size > 0 {
                remember(&self.tenants, tenant.clone(), i);
                return Ok(i);
            }
        }
        Ok(HOME)
    }

    async fn store_of(&self, tenant: &TenantId) -> StoreResult<&Arc<dyn Store>> {
        let i = self.locate(tenant).await?;
        Ok(&self.stores[i])
    }

    async fn locate_log(&self, log: &LogId) -> StoreResult<usize> {
        match log {
            LogId::Operator => Ok(HOME),
            LogId::Tenant(t) => self.locate(t).await,
        }
    }

    async fn locate_key(&self, key_id: &ApiKeyId) -> StoreResult<Option<usize>> {
        if let Some(&i) = lock(&self.keys).get(key_id) {
            return Ok(Some(i));
        }
        for (i, store) in self.stores.iter().enumerate() {
            if let Some(row) = store.api_key(key_id).await? {
                remember(&self.keys, key_id.clone(), i);
                remember(&self.tenants, row.tenant_id, i);
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// One page across stores: `fetch(store, after, limit)` pages inside one store
    /// by its own sequence numbers; the cursors returned carry the store position.
    async fn paged<T, F, Fut>(&self, after: i64, limit: u32, fetch: F) -> StoreResult<Vec<(i64, T)>>
    where
        F: Fn(Arc<dyn Store>, i64, u32) -> Fut,
        Fut: Future<Output = StoreResult<Vec<(i64, T)>>>,
    {
        let (mut index, mut seq) = decode_cursor(after);
        let limit = limit as usize;
        let mut out = Vec::new();
        while index < self.stores.len() && out.len() < limit {
            // Fits: it is at most `limit`, which came from a u32.
            let want = (limit - out.len()) as u32;
            let rows = fetch(Arc::clone(&self.stores[index]), seq, want).await?;
            let full = rows.len() >= want as usize;
            for (s, row) in rows {
                out.push((encode_cursor(index, s)?, row));
            }
            if full {
                break;
            }
            index += 1;
            seq = 0;
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for RegionalStore {
    async fn get_or_init_meta(&self, key: &'static str, init: Vec<u8>) -> StoreResult<Vec<u8>> {
        self.stores[HOME].get_or_init_meta(key, init).await
    }

    async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> StoreResult<()> {
        self.stores[HOME].put_meta(key, value).await
    }

    async fn create_tenant(&self, tenant: TenantRow, first_key: DataKeyRow) -> StoreResult<()> {
        let index = self.store_for_region(&tenant.region);
        // Ids are 96 random bits, so this only guards the invariant the routing
        // rests on: one id, one store. (An id erased in another store leaves its
        // tombstone there, which this cannot see; the same randomness covers it.)
        for (i, store) in self.stores.iter().enumerate() {
            if i != index && store.tenant(&tenant.id).await?.is_some() {
                return Err(StoreError::Conflict);
            }
        }
        let id = tenant.id.clone();
        self.stores[index].create_tenant(tenant, first_key).await?;
        remember(&self.tenants, id, index);
        Ok(())
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRow>> {
        self.store_of(id).await?.tenant(id).await
    }

    async fn list_tenants(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<(i64, TenantRow)>> {
        let rows = self
            .paged(after_seq, limit, |store, after, n| async move {
                store.list_tenants(after, n).await
            })
            .await?;
        for (cursor, row) in &rows {
            remember(&self.tenants, row.id.clone(), decode_cursor(*cursor).0);
        }
        Ok(rows)
    }

    async fn set_tenant_status(&self, id: &TenantId, status: TenantStatus) -> StoreResult<bool> {
        self.store_of(id).await?.set_tenant_status(id, status).await
    }

    async fn set_api_key_quarantine(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: Option<UnixMillis>,
    ) -> StoreResult<bool> {
        self.store_of(tenant)
            .await?
            .set_api_key_quarantine(tenant, key_id, at)
            .await
    }

    async fn set_tenant_policy(&self, id: &TenantId, policy: &PolicyName) -> StoreResult<bool> {
        self.store_of(id).await?.set_tenant_policy(id, policy).await
    }

    async fn set_tenant_models(
        &self,
        id: &TenantId,
        models: Option<Vec<String>>,
    ) -> StoreResult<bool> {
        self.store_of(id).await?.set_tenant_models(id, models).await
    }

    async fn record_generation(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
    ) -> StoreResult<(i64, u64)> {
        self.store_of(tenant)
            .await?
            .record_generation(tenant, kind)
            .await
    }

    fn is_shared(&self) -> bool {
        self.stores.iter().any(|s| s.is_shared())
    }

    async fn placement(&self, tenant: &TenantId) -> StoreResult<String> {
        let i = self.locate(tenant).await?;
        if i == HOME {
            return Ok("the home store (its region has no store of its own)".into());
        }
        let region = self
            .regions
            .iter()
            .find(|(_, at)| **at == i)
            .map(|(r, _)| r.to_string())
            .unwrap_or_default();
        Ok(format!(
            "the store of region {region}, apart from every other region's"
        ))
    }

    /// Leadership is the home store's: one lock for the whole deployment.
    async fn try_lead(&self) -> StoreResult<bool> {
        self.stores[HOME].try_lead().await
    }

    async fn document_count(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<u64> {
        self.store_of(tenant)
            .await?
            .document_count(tenant, now)
            .await
    }

    async fn tenant_usage(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<TenantUsage> {
        self.store_of(tenant).await?.tenant_usage(tenant, now).await
    }

    async fn data_keys(&self, id: &TenantId) -> StoreResult<Vec<DataKeyRow>> {
        self.store_of(id).await?.data_keys(id).await
    }

    async fn add_data_key(&self, id: &TenantId, key: DataKeyRow) -> StoreResult<bool> {
        self.store_of(id).await?.add_data_key(id, key).await
    }

    async fn retire_data_keys(&self, id: &TenantId, below: KeyVersion) -> StoreResult<u64> {
        self.store_of(id).await?.retire_data_keys(id, below).await
    }

    async fn erase_tenant(
        &self,
        id: &TenantId,
        erased_at: UnixMillis,
        receipt: Vec<u8>,
    ) -> StoreResult<Option<ErasureCounts>> {
        // The location stays cached: the log's leaf hashes remain in that store.
        self.store_of(id)
            .await?
            .erase_tenant(id, erased_at, receipt)
            .await
    }

    async fn insert_api_key(&self, row: ApiKeyRow) -> StoreResult<()> {
        let index = self.locate(&row.tenant_id).await?;
        let key_id = row.key_id.clone();
        self.stores[index].insert_api_key(row).await?;
        remember(&self.keys, key_id, index);
        Ok(())
    }

    async fn api_key(&self, key_id: &ApiKeyId) -> StoreResult<Option<ApiKeyRow>> {
        match self.locate_key(key_id).await? {
            Some(i) => self.stores[i].api_key(key_id).await,
            None => Ok(None),
        }
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        key_id: &ApiKeyId,
        at: UnixMillis,
    ) -> StoreResult<bool> {
        self.store_of(tenant)
            .await?
            .revoke_api_key(tenant, key_id, at)
            .await
    }

    async fn insert_record(&self, row: RecordRow) -> StoreResult<i64> {
        self.store_of(&row.tenant_id)
            .await?
            .insert_record(row)
            .await
    }

    async fn insert_records(&self, rows: Vec<RecordRow>) -> StoreResult<()> {
        let mut index = None;
        for row in &rows {
            let i = self.locate(&row.tenant_id).await?;
            if index.is_some_and(|first| first != i) {
                // All or nothing needs one transaction, which one store gives and
                // two cannot. Callers batch one tenant's records, so this is a bug.
                return Err(StoreError::Backend(
                    "one batch of records spans two regional stores".into(),
                ));
            }
            index = Some(i);
        }
        self.stores[index.unwrap_or(HOME)]
            .insert_records(rows)
            .await
    }

    async fn record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<Option<StoredRecord>> {
        self.store_of(tenant)
            .await?
            .record(tenant, kind, record_id, now)
            .await
    }

    async fn expired_records(&self, now: UnixMillis, limit: u32) -> StoreResult<Vec<StoredRecord>> {
        // The `limit` oldest of all stores are among the `limit` oldest of each.
        let mut all = Vec::new();
        for (i, store) in self.stores.iter().enumerate() {
            for stored in store.expired_records(now, limit).await? {
                remember(&self.tenants, stored.row.tenant_id.clone(), i);
                all.push(stored);
            }
        }
        // Stable: ties keep store order. Every row here has an expiry (`now` passed it).
        all.sort_by_key(|r| r.row.expires_at);
        all.truncate(limit as usize);
        Ok(all)
    }

    async fn delete_expired(
        &self,
        keys: Vec<(TenantId, RecordKind, String)>,
        now: UnixMillis,
    ) -> StoreResult<u64> {
        // One transaction per store: each deletion is conditional on the record
        // having expired, so a partial sweep is as correct as a whole one.
        let mut per_store: Vec<Vec<(TenantId, RecordKind, String)>> =
            vec![Vec::new(); self.stores.len()];
        for key in keys {
            let i = self.locate(&key.0).await?;
            per_store[i].push(key);
        }
        let mut deleted = 0;
        for (store, keys) in self.stores.iter().zip(per_store) {
            if !keys.is_empty() {
                deleted += store.delete_expired(keys, now).await?;
            }
        }
        Ok(deleted)
    }

    async fn record_parts(
        &self,
        tenant: &TenantId,
        part_kind: RecordKind,
        record_id: &str,
        limit: u32,
        now: UnixMillis,
    ) -> StoreResult<Vec<StoredRecord>> {
        self.store_of(tenant)
            .await?
            .record_parts(tenant, part_kind, record_id, limit, now)
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
        // One tenant, one store: its own sequence numbers are the cursor.
        self.store_of(tenant)
            .await?
            .list_records(tenant, kind, after_seq, limit, now)
            .await
    }

    async fn delete_record(
        &self,
        tenant: &TenantId,
        kind: RecordKind,
        record_id: &str,
        now: UnixMillis,
    ) -> StoreResult<bool> {
        self.store_of(tenant)
            .await?
            .delete_record(tenant, kind, record_id, now)
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
        if rows.iter().any(|r| r.tenant_id != tenant) {
            return Err(StoreError::Backend(
                "parts of one record span two tenants".into(),
            ));
        }
        self.store_of(&tenant)
            .await?
            .insert_parts(parent_kind, parent_id, rows, now)
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
        self.store_of(tenant)
            .await?
            .delete_record_with_parts(tenant, kind, record_id, part_kind, now)
            .await
    }

    async fn records_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<StoredRecord>> {
        self.store_of(tenant)
            .await?
            .records_sealed_below(tenant, below, limit)
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
        self.store_of(tenant)
            .await?
            .reseal_record(tenant, seq, expected, new_version, sealed)
            .await
    }

    async fn tenants_with_old_keys(&self, limit: u32) -> StoreResult<Vec<TenantId>> {
        let mut out = Vec::new();
        for (i, store) in self.stores.iter().enumerate() {
            let want = limit.saturating_sub(out.len() as u32);
            if want == 0 {
                break;
            }
            for id in store.tenants_with_old_keys(want).await? {
                remember(&self.tenants, id.clone(), i);
                out.push(id);
            }
        }
        Ok(out)
    }

    async fn audit_head(&self, log: &LogId) -> StoreResult<AuditHead> {
        let i = self.locate_log(log).await?;
        self.stores[i].audit_head(log).await
    }

    async fn audit_tiles(
        &self,
        log: &LogId,
        ids: Vec<(u8, u64)>,
    ) -> StoreResult<Vec<AuditTileRow>> {
        let i = self.locate_log(log).await?;
        self.stores[i].audit_tiles(log, ids).await
    }

    async fn audit_append(&self, appends: Vec<AuditAppend>) -> StoreResult<Vec<bool>> {
        // Each append is its own transaction in one store already, so splitting a
        // batch by store keeps every promise; results go back in the caller's order.
        // One thing differs from one store: if a store fails, the appends of the
        // others may be durable although the whole call reports the error. Callers
        // then report the events as not logged (never the reverse), and the next
        // append finds the log grew and reloads its edge.
        let count = appends.len();
        let mut per_store: Vec<(Vec<usize>, Vec<AuditAppend>)> =
            vec![(Vec::new(), Vec::new()); self.stores.len()];
        for (position, append) in appends.into_iter().enumerate() {
            let i = self.locate_log(&append.log).await?;
            debug_assert!(
                append
                    .records
                    .iter()
                    .all(|r| append.log.tenant() == Some(&r.tenant_id)),
                "records ride only on their own tenant's log"
            );
            per_store[i].0.push(position);
            per_store[i].1.push(append);
        }
        let mut applied = vec![false; count];
        let mut groups: Vec<(Arc<dyn Store>, Vec<usize>, Vec<AuditAppend>)> = self
            .stores
            .iter()
            .zip(per_store)
            .filter(|(_, (_, appends))| !appends.is_empty())
            .map(|(store, (positions, appends))| (Arc::clone(store), positions, appends))
            .collect();
        let mut answers = Vec::with_capacity(groups.len());
        if groups.len() == 1 {
            // The common case (one region's tenants in a batch): no task to spawn.
            let (store, positions, appends) = groups.remove(0);
            answers.push((positions, store.audit_append(appends).await));
        } else {
            // Several stores commit (and fsync) at the same time rather than one
            // after another: a batch waits for the slowest store, not for the sum.
            let mut tasks = tokio::task::JoinSet::new();
            for (store, positions, appends) in groups {
                tasks.spawn(async move { (positions, store.audit_append(appends).await) });
            }
            while let Some(joined) = tasks.join_next().await {
                answers.push(joined.map_err(|e| {
                    StoreError::Backend(format!("a regional audit append failed: {e}"))
                })?);
            }
        }
        for (positions, results) in answers {
            let results = results?;
            if results.len() != positions.len() {
                return Err(StoreError::Corrupt(
                    "a store answered an audit batch with the wrong number of results".into(),
                ));
            }
            for (position, ok) in positions.into_iter().zip(results) {
                applied[position] = ok;
            }
        }
        Ok(applied)
    }

    async fn audit_entries(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<AuditEntryRow>> {
        let i = self.locate_log(log).await?;
        self.stores[i].audit_entries(log, start, end).await
    }

    async fn audit_leaf_hashes(
        &self,
        log: &LogId,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let i = self.locate_log(log).await?;
        self.stores[i].audit_leaf_hashes(log, start, end).await
    }

    async fn audit_index_of(&self, log: &LogId, leaf_hash: &[u8]) -> StoreResult<Option<u64>> {
        let i = self.locate_log(log).await?;
        self.stores[i].audit_index_of(log, leaf_hash).await
    }

    async fn audit_set_checkpoint(
        &self,
        log: &LogId,
        expected_size: u64,
        size: u64,
        note: Vec<u8>,
        at: UnixMillis,
    ) -> StoreResult<bool> {
        let i = self.locate_log(log).await?;
        self.stores[i]
            .audit_set_checkpoint(log, expected_size, size, note, at)
            .await
    }

    async fn audit_logs_behind(&self, limit: u32) -> StoreResult<Vec<LogId>> {
        let mut out = Vec::new();
        for (i, store) in self.stores.iter().enumerate() {
            let want = limit.saturating_sub(out.len() as u32);
            if want == 0 {
                break;
            }
            for log in store.audit_logs_behind(want).await? {
                if let LogId::Tenant(t) = &log {
                    remember(&self.tenants, t.clone(), i);
                }
                out.push(log);
            }
        }
        Ok(out)
    }

    async fn audit_logs(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, LogId, AuditHead)>> {
        let rows = self
            .paged(after, limit, |store, after, n| async move {
                Ok(store
                    .audit_logs(after, n)
                    .await?
                    .into_iter()
                    .map(|(seq, log, head)| (seq, (log, head)))
                    .collect())
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(cursor, (log, head))| {
                if let LogId::Tenant(t) = &log {
                    remember(&self.tenants, t.clone(), decode_cursor(cursor).0);
                }
                (cursor, log, head)
            })
            .collect())
    }

    async fn audit_entries_sealed_below(
        &self,
        tenant: &TenantId,
        below: KeyVersion,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntryRow>> {
        self.store_of(tenant)
            .await?
            .audit_entries_sealed_below(tenant, below, limit)
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
        self.store_of(tenant)
            .await?
            .reseal_audit_entry(tenant, index, expected, new_version, sealed)
            .await
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        let mut total = StoreCounts::default();
        for store in &self.stores {
            let c = store.counts().await?;
            total.tenants += c.tenants;
            total.quarantined_tenants += c.quarantined_tenants;
            total.documents += c.documents;
        }
        Ok(total)
    }

    async fn ping(&self) -> StoreResult<()> {
        // Ready only if every region can be served.
        for store in &self.stores {
            store.ping().await?;
        }
        Ok(())
    }

    async fn shutdown(&self) {
        for store in &self.stores {
            store.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_by_store_then_seq() {
        for (store, seq) in [(0, 0), (0, 7), (1, 0), (3, SEQ_MASK), (REGIONS_MAX, 1)] {
            let c = encode_cursor(store, seq).unwrap();
            assert!(c >= 0);
            assert_eq!(decode_cursor(c), (store, seq));
        }
        assert!(encode_cursor(0, 5).unwrap() < encode_cursor(1, 0).unwrap());
        assert!(encode_cursor(1, SEQ_MASK + 1).is_err());
        assert!(encode_cursor(1, -1).is_err());
        assert_eq!(decode_cursor(-5), (HOME, 0));
    }
}
