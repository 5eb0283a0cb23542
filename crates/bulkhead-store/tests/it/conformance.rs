//! One set of storage checks run against both backends: SQLite (a temporary file)
//! and PostgreSQL (a fresh database on the throwaway test server that
//! `scripts/pg-test-server` starts; `BULKHEAD_TEST_PG_URL` names it when
//! `scripts/test` runs, and otherwise `bulkhead_test_support::pg` runs the script
//! itself). A missing
//! PostgreSQL is a failure, never a silent skip.

use std::sync::Arc;

use bulkhead_store::{
    AuditAppend, AuditEntryRow, AuditTileRow, DataKeyRow, ErasureCounts, PgOptions, PgStore,
    RecordRow, Store, StoreError, StoredRecord, TenantRow, TenantUsage,
};
use bulkhead_test_support::pg::fresh_database;
use bulkhead_test_support::store::{TempSqlite, fresh_pg};
use bulkhead_types::{
    KeyVersion, LogId, PolicyName, RecordKind, Region, TenantId, TenantStatus, UnixMillis,
};

/// Runs `check` against a new SQLite store and a new PostgreSQL store.
async fn both<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let temp = TempSqlite::new();
    let sqlite: Arc<dyn Store> = temp.store.clone();
    check(Arc::clone(&sqlite)).await;
    sqlite.shutdown().await;
    let pg: Arc<dyn Store> = fresh_pg().await;
    check(Arc::clone(&pg)).await;
    pg.shutdown().await;
}

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

fn record(t: &TenantRow, kind: RecordKind, id: &str, expires_at: Option<i64>) -> RecordRow {
    RecordRow {
        tenant_id: t.id.clone(),
        kind,
        record_id: id.into(),
        key_version: KeyVersion::FIRST,
        sealed: vec![1, 2, 3],
        created_at: UnixMillis(5),
        expires_at: expires_at.map(UnixMillis),
    }
}

fn ids(rows: Vec<StoredRecord>) -> Vec<String> {
    rows.into_iter().map(|r| r.row.record_id).collect()
}

#[tokio::test]
async fn tenants_meta_and_models() {
    both(|store| async move {
        let first = store.get_or_init_meta("k", b"one".to_vec()).await.unwrap();
        let again = store.get_or_init_meta("k", b"two".to_vec()).await.unwrap();
        assert_eq!(
            (first.as_slice(), again.as_slice()),
            (&b"one"[..], &b"one"[..])
        );
        store.put_meta("k", b"three".to_vec()).await.unwrap();
        assert_eq!(
            store.get_or_init_meta("k", b"four".to_vec()).await.unwrap(),
            b"three",
            "put_meta replaces the value"
        );
        let (a, b) = (tenant(1), tenant(2));
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        store.create_tenant(b.clone(), key(1)).await.unwrap();
        assert!(matches!(
            store.create_tenant(a.clone(), key(1)).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(store.tenant(&a.id).await.unwrap().unwrap(), a);
        let listed = store.list_tenants(0, 10).await.unwrap();
        assert_eq!(
            listed.iter().map(|(_, t)| t.id.clone()).collect::<Vec<_>>(),
            [a.id.clone(), b.id.clone()]
        );
        let after_first = store.list_tenants(listed[0].0, 10).await.unwrap();
        assert_eq!(after_first.len(), 1, "the cursor pages");
        assert!(
            store
                .set_tenant_status(&a.id, TenantStatus::Quarantined)
                .await
                .unwrap()
        );
        let models = Some(vec!["m1".to_owned()]);
        assert!(
            store
                .set_tenant_models(&a.id, models.clone())
                .await
                .unwrap()
        );
        assert!(!store.set_tenant_models(&tenant(9).id, None).await.unwrap());
        let got = store.tenant(&a.id).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.models),
            (TenantStatus::Quarantined, models)
        );
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.tenants, counts.quarantined_tenants), (2, 1));
        store.ping().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn records_expiry_parts_and_cursors() {
    both(|store| async move {
        let (a, b) = (tenant(1), tenant(2));
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        store.create_tenant(b.clone(), key(1)).await.unwrap();
        let doc = RecordKind::DOCUMENT;
        let seq = store
            .insert_record(record(&a, doc, "d1", None))
            .await
            .unwrap();
        assert!(seq > 0);
        store
            .insert_record(record(&b, doc, "d1", None))
            .await
            .unwrap();
        store
            .insert_record(record(&a, doc, "old", Some(10)))
            .await
            .unwrap();
        assert!(matches!(
            store.insert_record(record(&a, doc, "d1", None)).await,
            Err(StoreError::Conflict)
        ));
        // All or nothing.
        let batch = vec![record(&a, doc, "d2", None), record(&a, doc, "d1", None)];
        assert!(matches!(
            store.insert_records(batch).await,
            Err(StoreError::Conflict)
        ));
        assert!(
            store
                .record(&a.id, doc, "d2", UnixMillis(0))
                .await
                .unwrap()
                .is_none()
        );
        store
            .insert_records(vec![
                record(&a, doc, "d2", None),
                record(&a, doc, "d3", None),
            ])
            .await
            .unwrap();

        let now = UnixMillis(20);
        assert!(
            store
                .record(&a.id, doc, "old", now)
                .await
                .unwrap()
                .is_none(),
            "expired at read time"
        );
        assert!(
            store
                .record(&a.id, doc, "old", UnixMillis(9))
                .await
                .unwrap()
                .is_some()
        );
        let page = store.list_records(&a.id, doc, 0, 2, now).await.unwrap();
        assert_eq!(ids(page.clone()), ["d1", "d2"]);
        let rest = store
            .list_records(&a.id, doc, page[1].seq, 10, now)
            .await
            .unwrap();
        assert_eq!(ids(rest), ["d3"]);

        let part = RecordKind::SESSION_MESSAGE;
        for (id, exp) in [
            ("s1#2", None),
            ("s1#1", None),
            ("s10#1", None),
            ("s1#3", Some(1)),
        ] {
            store
                .insert_record(record(&a, part, id, exp))
                .await
                .unwrap();
        }
        assert_eq!(
            ids(store
                .record_parts(&a.id, part, "s1", 10, UnixMillis(2))
                .await
                .unwrap()),
            ["s1#1", "s1#2"]
        );
        assert!(
            store
                .record_parts(&b.id, part, "s1", 10, UnixMillis(2))
                .await
                .unwrap()
                .is_empty()
        );

        assert!(
            !store.delete_record(&a.id, doc, "old", now).await.unwrap(),
            "expired counts as none"
        );
        assert!(store.delete_record(&a.id, doc, "d3", now).await.unwrap());
        store
            .insert_record(record(&a, RecordKind::DOCUMENT, "s1", None))
            .await
            .unwrap();
        assert!(
            store
                .delete_record_with_parts(&a.id, doc, "s1", part, now)
                .await
                .unwrap()
        );
        assert_eq!(
            ids(store
                .record_parts(&a.id, part, "s1", 10, UnixMillis(0))
                .await
                .unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(store
                .record_parts(&a.id, part, "s10", 10, UnixMillis(0))
                .await
                .unwrap()),
            ["s10#1"]
        );
        assert!(
            store.record(&b.id, doc, "d1", now).await.unwrap().is_some(),
            "B untouched"
        );
        assert_eq!(store.counts().await.unwrap().documents, 3);
    })
    .await;
}

/// Parts (a session's messages) are written only while their parent lives, in
/// the same transaction: raced against the parent's deletion, either the insert
/// is refused or the deletion takes the new parts with it; none outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_inserted_only_while_their_parent_lives() {
    both(|store| async move {
        let (a, b) = (tenant(1), tenant(2));
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        store.create_tenant(b.clone(), key(1)).await.unwrap();
        let (session, part) = (RecordKind::SESSION, RecordKind::SESSION_MESSAGE);
        let now = UnixMillis(10);
        let parts = |t: &TenantRow, parent: &str| {
            vec![
                record(t, part, &format!("{parent}#0"), None),
                record(t, part, &format!("{parent}#1"), None),
            ]
        };
        // No parent, an expired one, another tenant's: nothing is written.
        assert!(
            !store
                .insert_parts(session, "s1", parts(&a, "s1"), now)
                .await
                .unwrap()
        );
        store
            .insert_record(record(&a, session, "old", Some(5)))
            .await
            .unwrap();
        assert!(
            !store
                .insert_parts(session, "old", parts(&a, "old"), now)
                .await
                .unwrap()
        );
        store
            .insert_record(record(&a, session, "s1", None))
            .await
            .unwrap();
        assert!(
            !store
                .insert_parts(session, "s1", parts(&b, "s1"), now)
                .await
                .unwrap()
        );
        assert!(
            store
                .record_parts(&b.id, part, "s1", 10, now)
                .await
                .unwrap()
                .is_empty()
        );
        // A live parent: written, all or nothing.
        assert!(
            store
                .insert_parts(session, "s1", parts(&a, "s1"), now)
                .await
                .unwrap()
        );
        assert_eq!(
            ids(store
                .record_parts(&a.id, part, "s1", 10, now)
                .await
                .unwrap()),
            ["s1#0", "s1#1"]
        );
        assert!(matches!(
            store
                .insert_parts(session, "s1", parts(&a, "s1"), now)
                .await,
            Err(StoreError::Conflict)
        ));

        // The race, many times over.
        for i in 0..40 {
            let parent = format!("race{i}");
            store
                .insert_record(record(&a, session, &parent, None))
                .await
                .unwrap();
            let (s1, s2) = (Arc::clone(&store), Arc::clone(&store));
            let rows = parts(&a, &parent);
            let (p1, p2, t) = (parent.clone(), parent.clone(), a.id.clone());
            let insert =
                tokio::spawn(async move { s1.insert_parts(session, &p1, rows, now).await });
            let delete = tokio::spawn(async move {
                s2.delete_record_with_parts(&t, session, &p2, part, now)
                    .await
            });
            let (inserted, deleted) = (
                insert.await.unwrap().unwrap(),
                delete.await.unwrap().unwrap(),
            );
            assert!(deleted);
            assert!(
                store
                    .record_parts(&a.id, part, &parent, 10, now)
                    .await
                    .unwrap()
                    .is_empty(),
                "round {i}: parts outlived their deleted parent (insert returned {inserted})"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_sweeper_sees_and_deletes_only_what_expired() {
    both(|store| async move {
        let a = tenant(3);
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        let doc = RecordKind::DOCUMENT;
        for (id, exp) in [("forever", None), ("soon", Some(100)), ("later", Some(200))] {
            store.insert_record(record(&a, doc, id, exp)).await.unwrap();
        }
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
            ["soon"]
        );
        let k = |id: &str| (a.id.clone(), doc, id.to_owned());
        let n = store
            .delete_expired(vec![k("forever"), k("soon"), k("later")], UnixMillis(150))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            ids(store
                .list_records(&a.id, doc, 0, 10, UnixMillis(0))
                .await
                .unwrap()),
            ["forever", "later"]
        );
    })
    .await;
}

#[tokio::test]
async fn keys_rotate_reseal_and_retire() {
    both(|store| async move {
        let a = tenant(4);
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        let doc = RecordKind::DOCUMENT;
        store
            .insert_record(record(&a, doc, "d", None))
            .await
            .unwrap();
        assert!(store.add_data_key(&a.id, key(2)).await.unwrap());
        assert!(!store.add_data_key(&tenant(9).id, key(2)).await.unwrap());
        assert_eq!(
            store
                .tenant(&a.id)
                .await
                .unwrap()
                .unwrap()
                .current_key_version
                .get(),
            2
        );
        assert_eq!(
            store.tenants_with_old_keys(10).await.unwrap(),
            std::slice::from_ref(&a.id)
        );
        let v2 = KeyVersion::new(2).unwrap();
        assert_eq!(
            store.retire_data_keys(&a.id, v2).await.unwrap(),
            0,
            "still in use"
        );
        let old = store.records_sealed_below(&a.id, v2, 10).await.unwrap();
        assert_eq!(old.len(), 1);
        assert!(
            store
                .reseal_record(&a.id, old[0].seq, KeyVersion::FIRST, v2, vec![7])
                .await
                .unwrap()
        );
        assert!(
            !store
                .reseal_record(&a.id, old[0].seq, KeyVersion::FIRST, v2, vec![8])
                .await
                .unwrap(),
            "compare-and-set"
        );
        assert_eq!(store.retire_data_keys(&a.id, v2).await.unwrap(), 1);
        let versions: Vec<u32> = store
            .data_keys(&a.id)
            .await
            .unwrap()
            .iter()
            .map(|k| k.version.get())
            .collect();
        assert_eq!(versions, [2]);
        assert!(store.tenants_with_old_keys(10).await.unwrap().is_empty());

        // A row sealed under the retired version (by a writer that read it just
        // before) is refused on every path that writes one.
        let late = record(&a, doc, "late", None);
        assert_eq!(late.key_version, KeyVersion::FIRST);
        let refused = store.insert_record(late.clone()).await;
        assert!(matches!(refused, Err(StoreError::StaleKey)), "{refused:?}");
        let refused = store.insert_records(vec![late.clone()]).await;
        assert!(matches!(refused, Err(StoreError::StaleKey)), "{refused:?}");
        let log = LogId::Tenant(a.id.clone());
        let append = |records: Vec<RecordRow>, key_version: u32| AuditAppend {
            log: log.clone(),
            old_size: 0,
            entries: vec![AuditEntryRow {
                key_version,
                ..entry(0)
            }],
            tiles: Vec::new(),
            records,
        };
        let stale_entry = store.audit_append(vec![append(Vec::new(), 1)]).await;
        assert_eq!(stale_entry.unwrap(), [false]);
        let stale_record = store
            .audit_append(vec![append(vec![late.clone()], 2)])
            .await;
        assert_eq!(stale_record.unwrap(), [false]);
        assert_eq!(store.audit_head(&log).await.unwrap().size, 0);
        assert!(
            store
                .record(&a.id, doc, "late", UnixMillis(1))
                .await
                .unwrap()
                .is_none()
        );
        // Under the current version all of them go through.
        let current = RecordRow {
            key_version: v2,
            ..late
        };
        let applied = store
            .audit_append(vec![append(vec![current.clone()], 2)])
            .await;
        assert_eq!(applied.unwrap(), [true]);
        // A re-seal to a version that does not exist is not applied either.
        let v3 = KeyVersion::new(3).unwrap();
        assert!(
            !store
                .reseal_record(&a.id, old[0].seq, v2, v3, vec![9])
                .await
                .unwrap()
        );
        assert!(
            !store
                .reseal_audit_entry(&a.id, 0, v2, v3, vec![9])
                .await
                .unwrap()
        );
    })
    .await;
}

fn entry(index: u64) -> AuditEntryRow {
    AuditEntryRow {
        index,
        leaf_hash: vec![index as u8; 32],
        key_version: 1,
        sealed: Some(vec![9; 16]),
        created_at: UnixMillis(1),
    }
}

#[tokio::test]
async fn audit_appends_checkpoints_and_erasure() {
    both(|store| async move {
        let t = tenant(5);
        store.create_tenant(t.clone(), key(1)).await.unwrap();
        let log = LogId::Tenant(t.id.clone());
        let append = |log: &LogId, old_size: u64, n: u64| AuditAppend {
            log: log.clone(),
            old_size,
            entries: (old_size..old_size + n).map(entry).collect(),
            tiles: vec![AuditTileRow {
                level: 1,
                index: 0,
                data: vec![1; 32 * (old_size + n) as usize],
            }],
            records: vec![record(
                &t,
                RecordKind::TRACE,
                &format!("tr{old_size}"),
                None,
            )],
        };
        let op = LogId::Operator;
        assert_eq!(
            store
                .audit_append(vec![append(&log, 0, 3), append(&op, 0, 1)])
                .await
                .unwrap(),
            [true, true]
        );
        assert_eq!(
            store.audit_append(vec![append(&log, 0, 2)]).await.unwrap(),
            [false],
            "compare-and-set"
        );
        assert!(
            store
                .record(&t.id, RecordKind::TRACE, "tr0", UnixMillis(0))
                .await
                .unwrap()
                .is_some(),
            "rides with its append"
        );
        assert_eq!(
            store
                .audit_append(vec![append(&log, 3, 1), append(&op, 5, 1)])
                .await
                .unwrap(),
            [true, false]
        );
        assert_eq!(store.audit_head(&log).await.unwrap().size, 4);
        assert_eq!(store.audit_head(&op).await.unwrap().size, 1);
        let idx: Vec<u64> = store
            .audit_entries(&log, 1, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(idx, [1, 2, 3]);
        assert_eq!(
            store.audit_leaf_hashes(&log, 0, 2).await.unwrap(),
            [vec![0; 32], vec![1; 32]]
        );
        assert_eq!(store.audit_index_of(&log, &[2; 32]).await.unwrap(), Some(2));
        assert_eq!(
            store
                .audit_tiles(&log, vec![(1, 0), (0, 0)])
                .await
                .unwrap()
                .len(),
            1
        );

        assert!(
            store
                .audit_set_checkpoint(&log, 0, 2, b"cp2".to_vec(), UnixMillis(5))
                .await
                .unwrap()
        );
        assert!(
            !store
                .audit_set_checkpoint(&log, 0, 4, b"x".to_vec(), UnixMillis(5))
                .await
                .unwrap()
        );
        assert!(
            !store
                .audit_set_checkpoint(&log, 2, 1, b"x".to_vec(), UnixMillis(5))
                .await
                .unwrap()
        );
        assert!(
            !store
                .audit_set_checkpoint(&log, 2, 9, b"x".to_vec(), UnixMillis(5))
                .await
                .unwrap()
        );
        let head = store.audit_head(&log).await.unwrap();
        assert_eq!(
            (head.checkpoint_size, head.checkpoint.as_deref()),
            (2, Some(&b"cp2"[..]))
        );
        let behind = store.audit_logs_behind(10).await.unwrap();
        assert!(behind.contains(&log) && behind.contains(&op));
        assert_eq!(store.audit_logs(0, 10).await.unwrap().len(), 2);
        let v2 = KeyVersion::new(2).unwrap();
        store.add_data_key(&t.id, key(2)).await.unwrap();
        assert_eq!(
            store
                .audit_entries_sealed_below(&t.id, v2, 10)
                .await
                .unwrap()
                .len(),
            4
        );
        assert!(
            store
                .reseal_audit_entry(&t.id, 0, KeyVersion::FIRST, v2, vec![1])
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .audit_entries_sealed_below(&t.id, v2, 10)
                .await
                .unwrap()
                .len(),
            3
        );

        let counts = store
            .erase_tenant(&t.id, UnixMillis(9), b"r".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            counts,
            ErasureCounts {
                records: 2,
                api_keys: 0,
                data_keys: 2
            }
        );
        assert!(
            store
                .erase_tenant(&t.id, UnixMillis(9), b"r".to_vec())
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.tenant(&t.id).await.unwrap().is_none());
        assert!(
            matches!(
                store.create_tenant(t.clone(), key(1)).await,
                Err(StoreError::Conflict)
            ),
            "tombstone"
        );
        let entries = store.audit_entries(&log, 0, 10).await.unwrap();
        assert!(
            entries.len() == 4 && entries.iter().all(|e| e.sealed.is_none()),
            "leaves stay, bodies go"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_appends_to_one_log_never_fork_or_leave_gaps() {
    both(|store| async move {
        let log = LogId::Operator;
        let mut tasks = Vec::new();
        for writer in 0..4u8 {
            let store = Arc::clone(&store);
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                while done < 10 {
                    let size = store.audit_head(&log).await.unwrap().size;
                    let mut e = entry(size);
                    e.leaf_hash = vec![writer; 32];
                    let append = AuditAppend {
                        log: log.clone(),
                        old_size: size,
                        entries: vec![e],
                        tiles: vec![],
                        records: vec![],
                    };
                    if store.audit_append(vec![append]).await.unwrap()[0] {
                        done += 1;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let entries = store.audit_entries(&log, 0, 100).await.unwrap();
        assert_eq!(
            entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        for w in 0..4u8 {
            assert_eq!(entries.iter().filter(|e| e.leaf_hash[0] == w).count(), 10);
        }
    })
    .await;
}

#[tokio::test]
async fn api_keys_are_found_revoked_and_quarantined() {
    use bulkhead_store::ApiKeyRow;
    use bulkhead_types::ApiKeyId;
    both(|store| async move {
        let (a, b) = (tenant(6), tenant(7));
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        store.create_tenant(b.clone(), key(1)).await.unwrap();
        let row = ApiKeyRow {
            key_id: ApiKeyId::from_random([1; ApiKeyId::RANDOM_BYTES]),
            tenant_id: a.id.clone(),
            secret_hash: vec![3; 32],
            created_at: UnixMillis(1),
            expires_at: Some(UnixMillis(99)),
            revoked_at: None,
            quarantined_at: None,
        };
        store.insert_api_key(row.clone()).await.unwrap();
        assert_eq!(store.api_key(&row.key_id).await.unwrap().unwrap(), row);
        assert!(
            !store
                .revoke_api_key(&b.id, &row.key_id, UnixMillis(5))
                .await
                .unwrap(),
            "not B's key"
        );
        assert!(
            store
                .set_api_key_quarantine(&a.id, &row.key_id, Some(UnixMillis(4)))
                .await
                .unwrap()
        );
        assert!(
            store
                .revoke_api_key(&a.id, &row.key_id, UnixMillis(5))
                .await
                .unwrap()
        );
        assert!(
            store
                .revoke_api_key(&a.id, &row.key_id, UnixMillis(6))
                .await
                .unwrap()
        );
        let got = store.api_key(&row.key_id).await.unwrap().unwrap();
        assert_eq!(
            (got.revoked_at, got.quarantined_at),
            (Some(UnixMillis(5)), Some(UnixMillis(4)))
        );
        let counts = store
            .erase_tenant(&a.id, UnixMillis(9), vec![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(counts.api_keys, 1);
    })
    .await;
}

/// Row-level security, the second wall: a query with no tenant filter at all, run
/// the way every tenant-plane transaction runs, sees only that tenant's rows, and
/// with no tenant set sees none.
#[tokio::test]
async fn an_unfiltered_query_behind_the_tenant_wall_sees_only_that_tenant() {
    let url = fresh_database().await;
    let store = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    let (a, b) = (tenant(1), tenant(2));
    for t in [&a, &b] {
        store.create_tenant(t.clone(), key(1)).await.unwrap();
        store
            .insert_record(record(t, RecordKind::DOCUMENT, "d", None))
            .await
            .unwrap();
        let append = AuditAppend {
            log: LogId::Tenant(t.id.clone()),
            old_size: 0,
            entries: vec![entry(0)],
            tiles: vec![],
            records: vec![],
        };
        assert_eq!(store.audit_append(vec![append]).await.unwrap(), [true]);
    }
    let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let role: bool = client
        .query_one(
            "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'bulkhead_tenant'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!role, "the runtime role must not bypass row-level security");
    for table in [
        "tenants",
        "records",
        "data_keys",
        "audit_logs",
        "audit_entries",
    ] {
        let column = match table {
            "tenants" => "id",
            "audit_logs" | "audit_entries" => "log_id",
            _ => "tenant_id",
        };
        let tx = client.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "SET LOCAL ROLE bulkhead_tenant; SET LOCAL bulkhead.tenant = '{}'",
            a.id
        ))
        .await
        .unwrap();
        let seen: Vec<String> = tx
            .query(&format!("SELECT {column} FROM {table}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!seen.is_empty(), "{table}: A sees its own rows");
        assert!(
            seen.iter().all(|id| id == a.id.as_str()),
            "{table}: A sees {seen:?}"
        );
        tx.rollback().await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.batch_execute("SET LOCAL ROLE bulkhead_tenant")
            .await
            .unwrap();
        let n = tx
            .query(&format!("SELECT 1 FROM {table}"), &[])
            .await
            .unwrap()
            .len();
        assert_eq!(n, 0, "{table}: no tenant set, no rows");
        tx.rollback().await.unwrap();
    }
    // A write of B's row from A's context is refused, not silently done.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL ROLE bulkhead_tenant; SET LOCAL bulkhead.tenant = '{}'",
        a.id
    ))
    .await
    .unwrap();
    let err = tx
        .execute(
            "INSERT INTO records (tenant_id, kind, record_id, key_version, sealed, created_at) VALUES ($1, 'document', 'x', 1, '\\x00', 1)",
            &[&b.id.as_str()],
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("row-level security")
            || format!("{err:?}").contains("row-level security"),
        "{err:?}"
    );
    drop(tx);
    // And the store's own tenant-plane reads agree.
    assert!(
        store
            .record(&b.id, RecordKind::DOCUMENT, "d", UnixMillis(0))
            .await
            .unwrap()
            .is_some()
    );
    store.shutdown().await;
}

#[tokio::test]
async fn one_leader_at_a_time() {
    let url = fresh_database().await;
    let one = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    let two = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    assert!(one.try_lead().await.unwrap());
    assert!(one.try_lead().await.unwrap(), "leadership is kept");
    assert!(!two.try_lead().await.unwrap());
    one.shutdown().await;
    // The lock goes when the server notices the leader's connection closed; wait
    // for that (bounded), not for a fixed time.
    let mut took_over = false;
    for _ in 0..250 {
        if two.try_lead().await.unwrap() {
            took_over = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(took_over);
    two.shutdown().await;
}

#[tokio::test]
async fn the_record_generation_moves_with_every_write_and_delete() {
    both(|store| async move {
        let (a, b) = (tenant(8), tenant(9));
        let chunk = RecordKind::CHUNK;
        let g0 = store.record_generation(&a.id, chunk).await.unwrap();
        store
            .insert_record(record(&a, chunk, "d#0", None))
            .await
            .unwrap();
        store
            .insert_record(record(&a, chunk, "d#1", None))
            .await
            .unwrap();
        let g1 = store.record_generation(&a.id, chunk).await.unwrap();
        assert_ne!(g0, g1);
        store
            .insert_record(record(&a, RecordKind::DOCUMENT, "live", None))
            .await
            .unwrap();
        store
            .insert_record(record(&a, RecordKind::DOCUMENT, "gone", Some(1)))
            .await
            .unwrap();
        assert_eq!(
            store.document_count(&a.id, UnixMillis(2)).await.unwrap(),
            1,
            "only unexpired documents count"
        );
        assert_eq!(store.document_count(&b.id, UnixMillis(2)).await.unwrap(), 0);
        store
            .insert_record(record(&b, chunk, "d#0", None))
            .await
            .unwrap();
        store
            .insert_record(record(&a, RecordKind::DOCUMENT, "d", None))
            .await
            .unwrap();
        assert_eq!(
            store.record_generation(&a.id, chunk).await.unwrap(),
            g1,
            "others' rows do not move it"
        );
        // A delete and an insert together still move it.
        store
            .delete_record(&a.id, chunk, "d#0", UnixMillis(0))
            .await
            .unwrap();
        store
            .insert_record(record(&a, chunk, "d#2", None))
            .await
            .unwrap();
        let g2 = store.record_generation(&a.id, chunk).await.unwrap();
        assert_ne!(g1, g2);
        store
            .delete_record(&a.id, chunk, "d#1", UnixMillis(0))
            .await
            .unwrap();
        assert_ne!(store.record_generation(&a.id, chunk).await.unwrap(), g2);
    })
    .await;
}

#[tokio::test]
async fn tenant_usage_counts_live_quota_kinds_of_one_tenant() {
    both(|store| async move {
        let (a, b) = (tenant(1), tenant(2));
        store.create_tenant(a.clone(), key(1)).await.unwrap();
        store.create_tenant(b.clone(), key(1)).await.unwrap();
        let sized = |t: &TenantRow, kind, id: &str, len: usize, expires: Option<i64>| RecordRow {
            sealed: vec![7; len],
            ..record(t, kind, id, expires)
        };
        store
            .insert_records(vec![
                sized(&a, RecordKind::DOCUMENT, "d1", 100, None),
                sized(&a, RecordKind::CHUNK, "d1#0", 40, None),
                sized(&a, RecordKind::SESSION_MESSAGE, "s#00000001", 30, None),
                // Expired: not counted. Not a quota kind: not counted.
                sized(&a, RecordKind::DOCUMENT, "old", 1000, Some(10)),
                sized(&a, RecordKind::TRACE, "t1", 500, None),
                // Another tenant's: not counted.
                sized(&b, RecordKind::DOCUMENT, "d1", 2000, None),
            ])
            .await
            .unwrap();
        let now = UnixMillis(20);
        let usage = store.tenant_usage(&a.id, now).await.unwrap();
        assert_eq!(
            usage,
            TenantUsage {
                documents: 1,
                bytes: 170
            }
        );
        let other = store.tenant_usage(&b.id, now).await.unwrap();
        assert_eq!(
            other,
            TenantUsage {
                documents: 1,
                bytes: 2000
            }
        );
        let nobody = store.tenant_usage(&tenant(3).id, now).await.unwrap();
        assert_eq!(nobody, TenantUsage::default());
    })
    .await;
}
