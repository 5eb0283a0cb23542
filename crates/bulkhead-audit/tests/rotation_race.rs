//! Key retirement against in-flight writers (issue 17, item 8): writers seal
//! under the version they read and insert a moment later, while rotation,
//! re-sealing and retirement loop. On SQLite and on PostgreSQL, every row
//! written through every sealed path (a document with its chunks in one batch,
//! single records, attached records, tenant audit entries) opens afterwards, and
//! again from a fresh process. A row sealed under a retired key would not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bulkhead_audit::{Audit, AuditOptions, Outcome};
use bulkhead_crypto::{LocalKek, SecretKey};
use bulkhead_ledger::note::NoteSigner;
use bulkhead_store::{
    ApiKeyRow, AuditAppend, AuditEntryRow, AuditHead, AuditTileRow, DataKeyRow, ErasureCounts,
    PgOptions, PgStore, RecordRow, Store, StoreCounts, StoreResult, StoredRecord, TenantRow,
};
use bulkhead_types::{
    ApiKeyId, DocumentId, KeyVersion, LogId, PolicyName, RecordKind, Region, SystemClock, TenantId,
    TenantStatus, UnixMillis,
};
use bulkhead_vault::{NewChunk, NewDocument, NewSealed, NewTenant, Vault, VaultLimits};
use zeroize::Zeroizing;

/// A store whose first write of each sealed row waits for the next retirement
/// of key versions (or a while) before it reaches the real store: the window
/// between a writer reading the key version and its insert, short in
/// production, is held open until a rotation, its re-seal and the retirement of
/// the version the writer read have happened in it. A retried write (the same
/// row sealed again) goes straight through.
#[derive(Debug, Default)]
struct SlowWrites {
    inner: Option<Arc<dyn Store>>,
    seen: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
    retired: tokio::sync::Notify,
}

impl SlowWrites {
    fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner: Some(inner),
            ..Self::default()
        }
    }

    fn inner(&self) -> &Arc<dyn Store> {
        self.inner.as_ref().expect("built with a store")
    }

    async fn pause_first(&self, ids: impl Iterator<Item = Vec<u8>>) {
        let fresh = {
            let mut seen = self.seen.lock().unwrap();
            let mut fresh = false;
            for id in ids {
                fresh |= seen.insert(id);
            }
            fresh
        };
        if fresh {
            let wait = self.retired.notified();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(400), wait).await;
        }
    }
}

#[async_trait::async_trait]
#[rustfmt::skip]
impl Store for SlowWrites {
    async fn get_or_init_meta(&self, key: &'static str, init: Vec<u8>) -> StoreResult<Vec<u8>> {
        self.inner().get_or_init_meta(key, init).await
    }

    async fn put_meta(&self, key: &'static str, value: Vec<u8>) -> StoreResult<()> {
        self.inner().put_meta(key, value).await
    }

    async fn create_tenant(&self, tenant: TenantRow, first_key: DataKeyRow) -> StoreResult<()> {
        self.inner().create_tenant(tenant, first_key).await
    }

    async fn tenant(&self, id: &TenantId) -> StoreResult<Option<TenantRow>> {
        self.inner().tenant(id).await
    }

    async fn list_tenants(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<(i64, TenantRow)>> {
        self.inner().list_tenants(after_seq, limit).await
    }

    async fn set_tenant_status(&self, id: &TenantId, status: TenantStatus) -> StoreResult<bool> {
        self.inner().set_tenant_status(id, status).await
    }

    async fn set_api_key_quarantine(&self, tenant: &TenantId, key_id: &ApiKeyId, at: Option<UnixMillis>) -> StoreResult<bool> {
        self.inner().set_api_key_quarantine(tenant, key_id, at).await
    }

    async fn set_tenant_policy(&self, id: &TenantId, policy: &PolicyName) -> StoreResult<bool> {
        self.inner().set_tenant_policy(id, policy).await
    }

    async fn set_tenant_models(&self, id: &TenantId, models: Option<Vec<String>>) -> StoreResult<bool> {
        self.inner().set_tenant_models(id, models).await
    }

    async fn data_keys(&self, id: &TenantId) -> StoreResult<Vec<DataKeyRow>> {
        self.inner().data_keys(id).await
    }

    async fn add_data_key(&self, id: &TenantId, key: DataKeyRow) -> StoreResult<bool> {
        self.inner().add_data_key(id, key).await
    }

    async fn retire_data_keys(&self, id: &TenantId, below: KeyVersion) -> StoreResult<u64> {
        let n = self.inner().retire_data_keys(id, below).await?;
        if n > 0 {
            self.retired.notify_waiters();
        }
        Ok(n)
    }

    async fn erase_tenant(&self, id: &TenantId, erased_at: UnixMillis, receipt: Vec<u8>) -> StoreResult<Option<ErasureCounts>> {
        self.inner().erase_tenant(id, erased_at, receipt).await
    }

    async fn insert_api_key(&self, row: ApiKeyRow) -> StoreResult<()> {
        self.inner().insert_api_key(row).await
    }

    async fn api_key(&self, key_id: &ApiKeyId) -> StoreResult<Option<ApiKeyRow>> {
        self.inner().api_key(key_id).await
    }

    async fn revoke_api_key(&self, tenant: &TenantId, key_id: &ApiKeyId, at: UnixMillis) -> StoreResult<bool> {
        self.inner().revoke_api_key(tenant, key_id, at).await
    }

    async fn insert_record(&self, row: RecordRow) -> StoreResult<i64> {
        self.pause_first(std::iter::once(row.record_id.clone().into_bytes())).await;
        self.inner().insert_record(row).await
    }

    async fn insert_records(&self, rows: Vec<RecordRow>) -> StoreResult<()> {
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.record_id.clone().into_bytes()).collect();
        self.pause_first(ids.into_iter()).await;
        self.inner().insert_records(rows).await
    }

    async fn record(&self, tenant: &TenantId, kind: RecordKind, record_id: &str, now: UnixMillis) -> StoreResult<Option<StoredRecord>> {
        self.inner().record(tenant, kind, record_id, now).await
    }

    async fn expired_records(&self, now: UnixMillis, limit: u32) -> StoreResult<Vec<StoredRecord>> {
        self.inner().expired_records(now, limit).await
    }

    async fn delete_expired(&self, keys: Vec<(TenantId, RecordKind, String)>, now: UnixMillis) -> StoreResult<u64> {
        self.inner().delete_expired(keys, now).await
    }

    async fn record_parts(&self, tenant: &TenantId, part_kind: RecordKind, record_id: &str, limit: u32, now: UnixMillis) -> StoreResult<Vec<StoredRecord>> {
        self.inner().record_parts(tenant, part_kind, record_id, limit, now).await
    }

    async fn list_records(&self, tenant: &TenantId, kind: RecordKind, after_seq: i64, limit: u32, now: UnixMillis) -> StoreResult<Vec<StoredRecord>> {
        self.inner().list_records(tenant, kind, after_seq, limit, now).await
    }

    async fn delete_record(&self, tenant: &TenantId, kind: RecordKind, record_id: &str, now: UnixMillis) -> StoreResult<bool> {
        self.inner().delete_record(tenant, kind, record_id, now).await
    }

    async fn insert_parts(&self, parent_kind: RecordKind, parent_id: &str, rows: Vec<RecordRow>, now: UnixMillis) -> StoreResult<bool> {
        let ids: Vec<Vec<u8>> = rows.iter().map(|r| r.record_id.clone().into_bytes()).collect();
        self.pause_first(ids.into_iter()).await;
        self.inner().insert_parts(parent_kind, parent_id, rows, now).await
    }

    async fn delete_record_with_parts(&self, tenant: &TenantId, kind: RecordKind, record_id: &str, part_kind: RecordKind, now: UnixMillis) -> StoreResult<bool> {
        self.inner().delete_record_with_parts(tenant, kind, record_id, part_kind, now).await
    }

    async fn records_sealed_below(&self, tenant: &TenantId, below: KeyVersion, limit: u32) -> StoreResult<Vec<StoredRecord>> {
        self.inner().records_sealed_below(tenant, below, limit).await
    }

    async fn reseal_record(&self, tenant: &TenantId, seq: i64, expected: KeyVersion, new_version: KeyVersion, sealed: Vec<u8>) -> StoreResult<bool> {
        self.inner().reseal_record(tenant, seq, expected, new_version, sealed).await
    }

    async fn tenants_with_old_keys(&self, limit: u32) -> StoreResult<Vec<TenantId>> {
        self.inner().tenants_with_old_keys(limit).await
    }

    async fn audit_head(&self, log: &LogId) -> StoreResult<AuditHead> {
        self.inner().audit_head(log).await
    }

    async fn audit_tiles(&self, log: &LogId, ids: Vec<(u8, u64)>) -> StoreResult<Vec<AuditTileRow>> {
        self.inner().audit_tiles(log, ids).await
    }

    async fn audit_append(&self, appends: Vec<AuditAppend>) -> StoreResult<Vec<bool>> {
        let leaves: Vec<Vec<u8>> = appends.iter().flat_map(|a| a.entries.iter()).map(|e| e.leaf_hash.clone()).collect();
        self.pause_first(leaves.into_iter()).await;
        self.inner().audit_append(appends).await
    }

    async fn audit_entries(&self, log: &LogId, start: u64, end: u64) -> StoreResult<Vec<AuditEntryRow>> {
        self.inner().audit_entries(log, start, end).await
    }

    async fn audit_leaf_hashes(&self, log: &LogId, start: u64, end: u64) -> StoreResult<Vec<Vec<u8>>> {
        self.inner().audit_leaf_hashes(log, start, end).await
    }

    async fn audit_index_of(&self, log: &LogId, leaf_hash: &[u8]) -> StoreResult<Option<u64>> {
        self.inner().audit_index_of(log, leaf_hash).await
    }

    async fn audit_set_checkpoint(&self, log: &LogId, expected_size: u64, size: u64, note: Vec<u8>, at: UnixMillis) -> StoreResult<bool> {
        self.inner().audit_set_checkpoint(log, expected_size, size, note, at).await
    }

    async fn audit_logs_behind(&self, limit: u32) -> StoreResult<Vec<LogId>> {
        self.inner().audit_logs_behind(limit).await
    }

    async fn audit_logs(&self, after: i64, limit: u32) -> StoreResult<Vec<(i64, LogId, AuditHead)>> {
        self.inner().audit_logs(after, limit).await
    }

    async fn audit_entries_sealed_below(&self, tenant: &TenantId, below: KeyVersion, limit: u32) -> StoreResult<Vec<AuditEntryRow>> {
        self.inner().audit_entries_sealed_below(tenant, below, limit).await
    }

    async fn reseal_audit_entry(&self, tenant: &TenantId, index: u64, expected: KeyVersion, new_version: KeyVersion, sealed: Vec<u8>) -> StoreResult<bool> {
        self.inner().reseal_audit_entry(tenant, index, expected, new_version, sealed).await
    }

    async fn counts(&self) -> StoreResult<StoreCounts> {
        self.inner().counts().await
    }

    async fn document_count(&self, tenant: &TenantId, now: UnixMillis) -> StoreResult<u64> {
        self.inner().document_count(tenant, now).await
    }

    async fn tenant_usage(
        &self,
        tenant: &TenantId,
        now: UnixMillis,
    ) -> StoreResult<bulkhead_store::TenantUsage> {
        self.inner().tenant_usage(tenant, now).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner().ping().await
    }

    fn is_shared(&self) -> bool {
        self.inner().is_shared()
    }

    async fn record_generation(&self, tenant: &TenantId, kind: RecordKind) -> StoreResult<(i64, u64)> {
        self.inner().record_generation(tenant, kind).await
    }

    async fn placement(&self, tenant: &TenantId) -> StoreResult<String> {
        self.inner().placement(tenant).await
    }

    async fn try_lead(&self) -> StoreResult<bool> {
        self.inner().try_lead().await
    }

    async fn shutdown(&self) -> () {
        self.inner().shutdown().await
    }
}

const WRITERS: usize = 6;
const WRITES_PER_WRITER: usize = 12;

async fn open(store: Arc<dyn Store>, skey: &str) -> (Arc<Vault>, Arc<Audit>) {
    let kek = Arc::new(LocalKek::new(&SecretKey::from_slice(&[5; 32]).unwrap(), "test").unwrap());
    let vault = Arc::new(
        Vault::open(store, kek, Arc::new(SystemClock), VaultLimits::default())
            .await
            .unwrap(),
    );
    let options = AuditOptions {
        server_name: "bulkhead.test".into(),
        checkpoint_interval: std::time::Duration::from_secs(3600),
        ..AuditOptions::default()
    };
    let audit = Audit::start(vault.clone(), NoteSigner::from_skey(skey).unwrap(), options).unwrap();
    (vault, audit)
}

/// What the writers wrote, per path.
#[derive(Debug, Default, PartialEq, Eq)]
struct Written {
    documents: usize,
    chunks: usize,
    canaries: usize,
    evidence: usize,
    traces: usize,
    entries: u64,
}

async fn write_while_rotating(vault: Arc<Vault>, audit: Arc<Audit>) -> (TenantId, Written, usize) {
    let tenant = vault
        .create_tenant(NewTenant {
            name: "racing".into(),
            region: Region::default(),
            policy: PolicyName::default(),
            models: None,
        })
        .await
        .unwrap()
        .id;
    let key = vault.issue_api_key(&tenant, None).await.unwrap();
    let ctx = vault.authenticate(&key.token).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (vault, tenant, done) = (vault.clone(), tenant.clone(), done.clone());
        tokio::spawn(async move {
            let mut rotations = 0;
            while !done.load(Ordering::Relaxed) {
                vault.rotate_key(&tenant).await.unwrap();
                rotations += 1;
                while vault.reseal(&tenant, 1000).await.unwrap() > 0 {}
                // Rotations are rare in production; back to back, faster than
                // a write, they would refuse every retry too.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            rotations
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (vault, audit, tenant, ctx) =
            (vault.clone(), audit.clone(), tenant.clone(), ctx.clone());
        writers.push(tokio::spawn(async move {
            let mut written = Written::default();
            for i in 0..WRITES_PER_WRITER {
                let id = format!("w{w}-{i}");
                match i % 4 {
                    0 => {
                        let chunks = (0..2)
                            .map(|c| NewChunk {
                                index: c,
                                text: Zeroizing::new(format!("chunk {c} of {id}")),
                                embedding: None,
                            })
                            .collect();
                        let new = NewDocument {
                            id: Some(DocumentId::parse(&id).unwrap()),
                            text: format!("text of {id}"),
                            metadata: None,
                            ttl_secs: None,
                        };
                        vault.put_document_chunked(&ctx, new, chunks).await.unwrap();
                        written.documents += 1;
                        written.chunks += 2;
                    }
                    1 => {
                        vault
                            .put_canary(&tenant, &format!("bhc_race_{id}_token"))
                            .await
                            .unwrap();
                        written.canaries += 1;
                    }
                    2 => {
                        let expires = UnixMillis(i64::MAX / 2);
                        vault
                            .put_guard_evidence(&tenant, &id, id.as_bytes(), expires)
                            .await
                            .unwrap();
                        written.evidence += 1;
                    }
                    _ => {
                        let event = audit.event("trace.commit", "key:race", Outcome::Allowed);
                        let trace = NewSealed {
                            kind: RecordKind::TRACE,
                            record_id: id.clone(),
                            body: Zeroizing::new(id.as_bytes().to_vec()),
                            expires_at: None,
                        };
                        audit
                            .record_with(&LogId::Tenant(tenant.clone()), &event, vec![trace])
                            .await
                            .unwrap();
                        written.traces += 1;
                    }
                }
                // Plain audit entries too, sealed under the tenant's key.
                let event = audit.event("document.read", "key:race", Outcome::Allowed);
                audit
                    .record(&LogId::Tenant(tenant.clone()), &event)
                    .await
                    .unwrap();
                written.entries += 1;
            }
            written
        }));
    }
    let mut total = Written::default();
    for w in writers {
        let w = w.await.unwrap();
        total.documents += w.documents;
        total.chunks += w.chunks;
        total.canaries += w.canaries;
        total.evidence += w.evidence;
        total.traces += w.traces;
        total.entries += w.entries;
    }
    done.store(true, Ordering::Relaxed);
    let rotations = rotator.await.unwrap();
    while vault.reseal(&tenant, 1000).await.unwrap() > 0 {}
    (tenant, total, rotations)
}

/// Every row of the tenant opens, and the rotation finished: one key left.
async fn every_row_opens(vault: &Vault, audit: &Audit, tenant: &TenantId, written: &Written) {
    let docs = vault.documents_of(tenant).await.unwrap();
    assert_eq!(docs.len(), written.documents);
    let chunks = vault
        .export_records(tenant, RecordKind::CHUNK)
        .await
        .unwrap();
    assert_eq!(chunks.len(), written.chunks);
    assert_eq!(
        vault.canaries(tenant).await.unwrap().len(),
        written.canaries
    );
    assert_eq!(
        vault.guard_evidence(tenant).await.unwrap().len(),
        written.evidence
    );
    let traces = vault
        .export_records(tenant, RecordKind::TRACE)
        .await
        .unwrap();
    assert_eq!(traces.len(), written.traces);
    let log = LogId::Tenant(tenant.clone());
    let total = written.entries + written.traces as u64;
    let mut at = 0;
    while at < total {
        let page = audit.entries(&log, at, total).await.unwrap();
        assert!(!page.is_empty());
        for entry in &page {
            assert!(
                entry.event.is_some(),
                "audit entry {} does not open",
                entry.index
            );
        }
        at += page.len() as u64;
    }
    assert_eq!(vault.store().data_keys(tenant).await.unwrap().len(), 1);
    assert!(vault.tenants_needing_reseal(10).await.unwrap().is_empty());
}

async fn check(first: Arc<dyn Store>, reopen: impl AsyncFnOnce() -> Arc<dyn Store>) {
    let skey = NoteSigner::generate("bulkhead.test")
        .unwrap()
        .to_skey()
        .unwrap();
    let slow: Arc<dyn Store> = Arc::new(SlowWrites::new(first.clone()));
    let (vault, audit) = open(slow, &skey).await;
    let (tenant, written, rotations) = write_while_rotating(vault.clone(), audit.clone()).await;
    assert!(
        rotations >= 2,
        "the writers raced {rotations} rotation(s) only"
    );
    every_row_opens(&vault, &audit, &tenant, &written).await;
    audit.shutdown().await;
    first.shutdown().await;
    // A restart: a fresh process opens everything too.
    let store = reopen().await;
    let (vault, audit) = open(store.clone(), &skey).await;
    every_row_opens(&vault, &audit, &tenant, &written).await;
    audit.shutdown().await;
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_rotation_on_sqlite_leave_every_row_readable() {
    let temp = bulkhead_test_support::store::TempSqlite::new();
    let path = temp.path.clone();
    check(temp.store.clone(), async || -> Arc<dyn Store> {
        let store: Arc<dyn Store> = bulkhead_test_support::store::open_sqlite(&path);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_rotation_on_postgres_leave_every_row_readable() {
    let url = bulkhead_test_support::pg::fresh_database().await;
    let connect = async |url: &str| -> Arc<dyn Store> {
        let store: Arc<dyn Store> =
            Arc::new(PgStore::connect(url, PgOptions::default()).await.unwrap());
        store
    };
    let first = connect(&url).await;
    check(first, async || connect(&url).await).await;
}
