//! `RegionalStore` over real SQLite files: each tenant's rows land in its region's
//! store and nowhere else, a second wrapper with an empty cache (another replica)
//! finds them, and the reads across tenants page and merge over every store.

use std::collections::HashSet;
use std::sync::Arc;

use bulkhead_store::{
    ApiKeyRow, AuditAppend, AuditEntryRow, DataKeyRow, RecordRow, RegionalStore, Store, StoreError,
    TenantRow,
};
use bulkhead_test_support::store::open_sqlite;
use bulkhead_types::{
    ApiKeyId, KeyVersion, LogId, PolicyName, RecordKind, Region, TenantId, TenantStatus, UnixMillis,
};

/// Home, `eu-west` and `us-east` stores in one temporary folder; `ap-south` has no
/// store of its own.
struct Fixture {
    _dir: tempfile::TempDir,
    home: Arc<dyn Store>,
    eu: Arc<dyn Store>,
    us: Arc<dyn Store>,
    store: RegionalStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| -> Arc<dyn Store> { open_sqlite(&dir.path().join(name)) };
        let (home, eu, us) = (open("home.db"), open("eu.db"), open("us.db"));
        let store = regional(&home, &eu, &us);
        Self {
            _dir: dir,
            home,
            eu,
            us,
            store,
        }
    }

    /// Another replica over the same stores: nothing learned yet.
    fn replica(&self) -> RegionalStore {
        regional(&self.home, &self.eu, &self.us)
    }
}

fn regional(home: &Arc<dyn Store>, eu: &Arc<dyn Store>, us: &Arc<dyn Store>) -> RegionalStore {
    RegionalStore::new(
        Arc::clone(home),
        vec![
            (region("eu-west"), Arc::clone(eu)),
            (region("us-east"), Arc::clone(us)),
        ],
    )
    .unwrap()
}

fn region(name: &str) -> Region {
    Region::parse(name).unwrap()
}

fn tenant(n: u8, region_name: &str) -> TenantRow {
    TenantRow {
        id: TenantId::from_random([n; 12]),
        name: format!("tenant {n}"),
        region: region(region_name),
        policy: PolicyName::default(),
        status: TenantStatus::Active,
        current_key_version: KeyVersion::FIRST,
        created_at: UnixMillis(i64::from(n)),
        models: None,
    }
}

fn first_key() -> DataKeyRow {
    DataKeyRow {
        version: KeyVersion::FIRST,
        wrapped: vec![7; 8],
        created_at: UnixMillis(1),
    }
}

fn record(t: &TenantRow, kind: RecordKind, id: &str, expires_at: Option<i64>) -> RecordRow {
    RecordRow {
        tenant_id: t.id.clone(),
        kind,
        record_id: id.into(),
        key_version: KeyVersion::FIRST,
        sealed: vec![1, 2, 3],
        created_at: UnixMillis(1),
        expires_at: expires_at.map(UnixMillis),
    }
}

fn api_key(t: &TenantRow, n: u8) -> ApiKeyRow {
    ApiKeyRow {
        key_id: ApiKeyId::from_random([n; 8]),
        tenant_id: t.id.clone(),
        secret_hash: vec![n; 32],
        created_at: UnixMillis(1),
        expires_at: None,
        revoked_at: None,
        quarantined_at: None,
    }
}

fn one_entry(log: LogId, old_size: u64) -> AuditAppend {
    AuditAppend {
        log,
        old_size,
        entries: vec![AuditEntryRow {
            index: old_size,
            leaf_hash: vec![old_size as u8; 32],
            key_version: 1,
            sealed: Some(vec![9; 16]),
            created_at: UnixMillis(1),
        }],
        tiles: Vec::new(),
        records: Vec::new(),
    }
}

async fn ids_in(store: &Arc<dyn Store>) -> HashSet<TenantId> {
    store
        .list_tenants(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.id)
        .collect()
}

#[tokio::test]
async fn each_tenant_lives_in_its_regions_store_and_a_fresh_replica_finds_it() {
    let f = Fixture::new();
    let (eu, us, ap) = (
        tenant(1, "eu-west"),
        tenant(2, "us-east"),
        tenant(3, "ap-south"),
    );
    for t in [&eu, &us, &ap] {
        f.store.create_tenant(t.clone(), first_key()).await.unwrap();
        f.store
            .insert_api_key(api_key(t, t.created_at.0 as u8))
            .await
            .unwrap();
        f.store
            .insert_record(record(t, RecordKind::DOCUMENT, "doc-1", None))
            .await
            .unwrap();
        f.store
            .audit_append(vec![one_entry(LogId::Tenant(t.id.clone()), 0)])
            .await
            .unwrap();
    }
    f.store
        .audit_append(vec![one_entry(LogId::Operator, 0)])
        .await
        .unwrap();

    // On disk: each store holds its own region's tenant only; ap-south has no
    // store of its own, so its tenant is at home, with the operator log.
    assert_eq!(ids_in(&f.eu).await, HashSet::from([eu.id.clone()]));
    assert_eq!(ids_in(&f.us).await, HashSet::from([us.id.clone()]));
    assert_eq!(ids_in(&f.home).await, HashSet::from([ap.id.clone()]));
    for (store, own, others) in [
        (&f.eu, &eu, [&us, &ap]),
        (&f.us, &us, [&eu, &ap]),
        (&f.home, &ap, [&eu, &us]),
    ] {
        let now = UnixMillis(2);
        assert!(
            store
                .record(&own.id, RecordKind::DOCUMENT, "doc-1", now)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store
                .audit_head(&LogId::Tenant(own.id.clone()))
                .await
                .unwrap()
                .size,
            1
        );
        for other in others {
            assert!(
                store
                    .record(&other.id, RecordKind::DOCUMENT, "doc-1", now)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(store.data_keys(&other.id).await.unwrap().is_empty());
            assert_eq!(
                store
                    .audit_head(&LogId::Tenant(other.id.clone()))
                    .await
                    .unwrap()
                    .size,
                0
            );
        }
    }
    assert_eq!(f.home.audit_head(&LogId::Operator).await.unwrap().size, 1);
    assert_eq!(f.eu.audit_head(&LogId::Operator).await.unwrap().size, 0);
    assert!(
        f.home
            .api_key(&ApiKeyId::from_random([1; 8]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.eu.api_key(&ApiKeyId::from_random([1; 8]))
            .await
            .unwrap()
            .is_some()
    );

    // Another replica learns every location by asking.
    let replica = f.replica();
    let key = replica
        .api_key(&ApiKeyId::from_random([2; 8]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.tenant_id, us.id);
    assert_eq!(replica.tenant(&eu.id).await.unwrap().unwrap(), eu);
    assert!(
        replica
            .set_tenant_status(&eu.id, TenantStatus::Quarantined)
            .await
            .unwrap()
    );
    assert_eq!(
        f.eu.tenant(&eu.id).await.unwrap().unwrap().status,
        TenantStatus::Quarantined,
        "the write went to the tenant's own store"
    );
    assert!(
        replica
            .tenant(&TenantId::from_random([99; 12]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        replica
            .api_key(&ApiKeyId::from_random([99; 8]))
            .await
            .unwrap()
            .is_none()
    );
    let counts = replica.counts().await.unwrap();
    assert_eq!(
        (counts.tenants, counts.quarantined_tenants, counts.documents),
        (3, 1, 3)
    );
    replica.ping().await.unwrap();

    // One id, one store: the same id cannot be created in another region.
    let mut twin = eu.clone();
    twin.region = region("us-east");
    assert!(matches!(
        replica.create_tenant(twin, first_key()).await,
        Err(StoreError::Conflict)
    ));
    assert!(ids_in(&f.us).await.len() == 1);
}

#[tokio::test]
async fn tenant_and_log_lists_page_across_stores_with_opaque_cursors() {
    let f = Fixture::new();
    let mut created = Vec::new();
    // Interleaved regions, so creation order differs from store order.
    for n in 1..=9u8 {
        let r = ["eu-west", "ap-south", "us-east"][usize::from(n % 3)];
        let t = tenant(n, r);
        f.store.create_tenant(t.clone(), first_key()).await.unwrap();
        f.store
            .audit_append(vec![one_entry(LogId::Tenant(t.id.clone()), 0)])
            .await
            .unwrap();
        created.push(t.id);
    }
    f.store
        .audit_append(vec![one_entry(LogId::Operator, 0)])
        .await
        .unwrap();

    for page_len in [1, 2, 4, 9, 20] {
        // A fresh replica each time: the cursors alone carry the position.
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let page = f.replica().list_tenants(cursor, page_len).await.unwrap();
            assert!(page.len() <= page_len as usize);
            for (c, t) in &page {
                assert!(*c > cursor, "cursors only move forward");
                cursor = *c;
                seen.push(t.id.clone());
            }
            if page.len() < page_len as usize {
                break;
            }
        }
        assert_eq!(seen.len(), 9, "page length {page_len}: every tenant once");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>(),
            created.iter().collect::<HashSet<_>>()
        );

        let mut logs = Vec::new();
        let mut cursor = 0;
        loop {
            let page = f.replica().audit_logs(cursor, page_len).await.unwrap();
            for (c, log, head) in &page {
                assert!(*c > cursor);
                assert_eq!(head.size, 1);
                cursor = *c;
                logs.push(log.clone());
            }
            if page.len() < page_len as usize {
                break;
            }
        }
        assert_eq!(logs.len(), 10, "nine tenant logs and the operator log");
        assert!(logs.contains(&LogId::Operator));
    }
    // Logs behind their checkpoint, and tenants with old keys, merge too.
    assert_eq!(f.replica().audit_logs_behind(100).await.unwrap().len(), 10);
    assert_eq!(f.replica().audit_logs_behind(4).await.unwrap().len(), 4);
    assert!(
        f.replica()
            .tenants_with_old_keys(100)
            .await
            .unwrap()
            .is_empty()
    );
    // A cursor beyond every store is an empty page, not an error.
    assert!(f.store.list_tenants(i64::MAX, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn expired_records_merge_oldest_first_and_are_deleted_in_their_own_stores() {
    let f = Fixture::new();
    let (eu, us, ap) = (
        tenant(1, "eu-west"),
        tenant(2, "us-east"),
        tenant(3, "ap-south"),
    );
    for t in [&eu, &us, &ap] {
        f.store.create_tenant(t.clone(), first_key()).await.unwrap();
    }
    // Expiries interleave across stores: eu 10, 40; us 20, 50; ap 30; one kept.
    for (t, id, at) in [
        (&eu, "e1", 10),
        (&eu, "e2", 40),
        (&us, "u1", 20),
        (&us, "u2", 50),
        (&ap, "a1", 30),
        (&ap, "keep", 1000),
    ] {
        f.store
            .insert_records(vec![record(t, RecordKind::SESSION, id, Some(at))])
            .await
            .unwrap();
    }
    let now = UnixMillis(100);
    let replica = f.replica();
    let oldest: Vec<String> = replica
        .expired_records(now, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.row.record_id)
        .collect();
    assert_eq!(oldest, ["e1", "u1", "a1"]);
    let all = replica.expired_records(now, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    let keys = all
        .into_iter()
        .map(|r| (r.row.tenant_id, r.row.kind, r.row.record_id))
        .collect();
    assert_eq!(replica.delete_expired(keys, now).await.unwrap(), 5);
    assert!(f.eu.expired_records(now, 10).await.unwrap().is_empty());
    assert!(f.us.expired_records(now, 10).await.unwrap().is_empty());
    assert!(f.home.expired_records(now, 10).await.unwrap().is_empty());
    assert!(
        f.home
            .record(&ap.id, RecordKind::SESSION, "keep", now)
            .await
            .unwrap()
            .is_some()
    );

    // One batch is one transaction, which two stores cannot give.
    let err = f
        .store
        .insert_records(vec![
            record(&eu, RecordKind::DOCUMENT, "x", None),
            record(&us, RecordKind::DOCUMENT, "x", None),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(
        f.eu.record(&eu.id, RecordKind::DOCUMENT, "x", now)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn erasure_happens_in_the_tenants_store_and_its_log_stays_findable() {
    let f = Fixture::new();
    let (eu, us) = (tenant(1, "eu-west"), tenant(2, "us-east"));
    for t in [&eu, &us] {
        f.store.create_tenant(t.clone(), first_key()).await.unwrap();
        f.store
            .insert_record(record(t, RecordKind::DOCUMENT, "d", None))
            .await
            .unwrap();
        f.store
            .insert_api_key(api_key(t, t.created_at.0 as u8))
            .await
            .unwrap();
    }
    let eu_log = LogId::Tenant(eu.id.clone());
    // A batch across stores keeps the caller's order in its answers.
    let applied = f
        .store
        .audit_append(vec![
            one_entry(eu_log.clone(), 0),
            one_entry(LogId::Tenant(us.id.clone()), 0),
            one_entry(eu_log.clone(), 0),
            one_entry(LogId::Operator, 0),
        ])
        .await
        .unwrap();
    assert_eq!(applied, [true, true, false, true]);

    let counts = f
        .replica()
        .erase_tenant(&eu.id, UnixMillis(5), b"receipt".to_vec())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (counts.records, counts.api_keys, counts.data_keys),
        (1, 1, 1)
    );
    assert!(f.eu.tenant(&eu.id).await.unwrap().is_none());
    assert_eq!(f.us.tenant(&us.id).await.unwrap().unwrap(), us);
    assert!(
        f.us.record(&us.id, RecordKind::DOCUMENT, "d", UnixMillis(5))
            .await
            .unwrap()
            .is_some()
    );

    // A replica that never saw the tenant still finds its log where it was written
    // (leaf hashes survive erasure), and appends go there, not home.
    let replica = f.replica();
    assert_eq!(replica.audit_head(&eu_log).await.unwrap().size, 1);
    assert_eq!(
        replica
            .audit_append(vec![one_entry(eu_log.clone(), 1)])
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(f.eu.audit_head(&eu_log).await.unwrap().size, 2);
    assert_eq!(f.home.audit_head(&eu_log).await.unwrap().size, 0);
    // The tombstone lives in the region's store and stops the id's reuse there.
    assert!(matches!(
        replica.create_tenant(eu.clone(), first_key()).await,
        Err(StoreError::Conflict)
    ));
}

#[test]
fn a_region_with_two_stores_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| -> Arc<dyn Store> { open_sqlite(&dir.path().join(name)) };
    let err = RegionalStore::new(
        open("home.db"),
        vec![(region("eu"), open("a.db")), (region("eu"), open("b.db"))],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "region `eu` has two stores");
}
