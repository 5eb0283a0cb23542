//! The vault's invariants, tested at its boundary over a real SQLite file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_crypto::{LocalKek, SecretKey};
use bulkhead_store::{SqliteStore, Store};
use bulkhead_test_support::TestClock;
use bulkhead_test_support::store::TempSqlite;
use bulkhead_types::{DocumentId, KeyVersion, PolicyName, RecordKind, Region, UnixMillis};
use bulkhead_vault::{
    AuthError, NewDocument, NewTenant, TenantCtx, Vault, VaultError, VaultLimits,
};
use proptest::prelude::*;

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    store: Arc<SqliteStore>,
    vault: Vault,
    clock: Arc<TestClock>,
}

async fn fixture() -> Fixture {
    let TempSqlite {
        dir,
        path: db,
        store,
    } = TempSqlite::new();
    let kek = Arc::new(LocalKek::new(&SecretKey::from_slice(&[9; 32]).unwrap(), "test").unwrap());
    let clock = Arc::new(TestClock::fixed(UnixMillis(1_800_000_000_000)));
    let vault = Vault::open(store.clone(), kek, clock.clone(), VaultLimits::default())
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        db,
        store,
        vault,
        clock,
    }
}

async fn tenant_with_key(vault: &Vault, name: &str) -> TenantCtx {
    let tenant = vault
        .create_tenant(NewTenant {
            name: name.into(),
            region: Region::default(),
            policy: PolicyName::default(),
            models: None,
        })
        .await
        .unwrap();
    let key = vault.issue_api_key(&tenant.id, None).await.unwrap();
    vault.authenticate(&key.token).await.unwrap()
}

fn doc(id: &str, text: &str) -> NewDocument {
    NewDocument {
        id: Some(DocumentId::parse(id).unwrap()),
        text: text.into(),
        metadata: None,
        ttl_secs: None,
    }
}

fn did(id: &str) -> DocumentId {
    DocumentId::parse(id).unwrap()
}

fn sealed_of(db: &Path, tenant: &str, id: &str) -> Vec<u8> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT sealed FROM records WHERE tenant_id = ?1 AND record_id = ?2",
        [tenant, id],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_row_moved_to_another_tenant_kind_or_id_fails_to_open() {
    let f = fixture().await;
    let a = tenant_with_key(&f.vault, "a").await;
    let b = tenant_with_key(&f.vault, "b").await;
    f.vault
        .put_document(&a, doc("secret", "alpha plans"))
        .await
        .unwrap();
    f.vault
        .put_document(&b, doc("secret", "bravo plans"))
        .await
        .unwrap();
    f.vault
        .put_document(&b, doc("other", "bravo other"))
        .await
        .unwrap();

    // Copy A's ciphertext over B's row with the same id: B's key cannot open it.
    let a_sealed = sealed_of(&f.db, a.tenant().as_str(), "secret");
    {
        let conn = rusqlite::Connection::open(&f.db).unwrap();
        conn.execute(
            "UPDATE records SET sealed = ?1 WHERE tenant_id = ?2 AND record_id = 'secret'",
            rusqlite::params![a_sealed, b.tenant().as_str()],
        )
        .unwrap();
        // And B's own ciphertext moved to another of B's ids fails too.
        let b_other = sealed_of(&f.db, b.tenant().as_str(), "other");
        let _ = b_other;
    }
    assert!(matches!(
        f.vault.document(&b, &did("secret")).await,
        Err(VaultError::Integrity)
    ));
    assert_eq!(
        f.vault
            .document(&a, &did("secret"))
            .await
            .unwrap()
            .text
            .as_str(),
        "alpha plans"
    );

    let other_row = f
        .store
        .record(b.tenant(), RecordKind::DOCUMENT, "other", f.vault.now())
        .await
        .unwrap()
        .unwrap();
    // Same tenant, same bytes, but read as another kind: the kind is bound.
    let as_other_kind = f
        .vault
        .open_record(&b, RecordKind::test_only("session"), &other_row.row)
        .await;
    assert!(matches!(as_other_kind, Err(VaultError::Integrity)));
    assert!(
        f.vault
            .open_record(&b, RecordKind::DOCUMENT, &other_row.row)
            .await
            .is_ok()
    );
    // Read under another id: the id is bound.
    let mut renamed = other_row.row.clone();
    renamed.record_id = "renamed".into();
    assert!(matches!(
        f.vault
            .open_record(&b, RecordKind::DOCUMENT, &renamed)
            .await,
        Err(VaultError::Integrity)
    ));
    // Read as A (A's key, A's binding): fails.
    assert!(matches!(
        f.vault
            .open_record(&a, RecordKind::DOCUMENT, &other_row.row)
            .await,
        Err(VaultError::Integrity)
    ));
}

#[tokio::test]
async fn the_database_and_its_wal_hold_no_plaintext() {
    let f = fixture().await;
    let a = tenant_with_key(&f.vault, "a").await;
    let canary = "CANARY-7f3a9c1e-plaintext-must-not-reach-disk";
    for i in 0..50 {
        let text = format!("{canary} document {i} with some body text");
        let mut new = doc(&format!("d{i}"), &text);
        new.metadata = Some(
            serde_json::json!({ "note": format!("{canary}-meta") })
                .as_object()
                .unwrap()
                .clone(),
        );
        f.vault.put_document(&a, new).await.unwrap();
    }
    assert_eq!(
        f.vault.document(&a, &did("d7")).await.unwrap().metadata["note"],
        format!("{canary}-meta")
    );
    let mut checked = 0;
    for entry in std::fs::read_dir(f.db.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.is_empty() {
            continue;
        }
        checked += 1;
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "plaintext found in {}",
            path.display()
        );
    }
    assert!(
        checked >= 2,
        "expected the database and its WAL, checked {checked} files"
    );
}

#[tokio::test]
async fn rotation_keeps_old_records_readable_then_reseals_and_retires_old_keys() {
    let f = fixture().await;
    let a = tenant_with_key(&f.vault, "a").await;
    for i in 0..25 {
        f.vault
            .put_document(&a, doc(&format!("d{i}"), &format!("text {i}")))
            .await
            .unwrap();
    }
    let v2 = f.vault.rotate_key(a.tenant()).await.unwrap();
    assert_eq!(v2, KeyVersion::new(2).unwrap());
    f.vault
        .put_document(&a, doc("new", "after rotation"))
        .await
        .unwrap();
    assert_eq!(
        f.vault
            .document(&a, &did("d3"))
            .await
            .unwrap()
            .text
            .as_str(),
        "text 3"
    );
    assert_eq!(f.store.data_keys(a.tenant()).await.unwrap().len(), 2);
    assert_eq!(
        f.vault.tenants_needing_reseal(10).await.unwrap(),
        vec![a.tenant().clone()]
    );

    let mut total = 0;
    loop {
        let n = f.vault.reseal(a.tenant(), 10).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 25);
    let keys = f.store.data_keys(a.tenant()).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.version).collect::<Vec<_>>(), vec![v2]);
    assert!(f.vault.tenants_needing_reseal(10).await.unwrap().is_empty());
    for i in 0..25 {
        assert_eq!(
            f.vault
                .document(&a, &did(&format!("d{i}")))
                .await
                .unwrap()
                .text
                .as_str(),
            format!("text {i}")
        );
    }
}

#[tokio::test]
async fn erasure_destroys_keys_so_saved_ciphertext_never_opens_again() {
    let f = fixture().await;
    let a = tenant_with_key(&f.vault, "a").await;
    let b = tenant_with_key(&f.vault, "b").await;
    f.vault
        .put_document(&a, doc("x", "to be shredded"))
        .await
        .unwrap();
    f.vault
        .put_document(&b, doc("x", "bystander"))
        .await
        .unwrap();
    let backup = f
        .store
        .record(a.tenant(), RecordKind::DOCUMENT, "x", f.vault.now())
        .await
        .unwrap()
        .unwrap();

    let receipt = f.vault.erase_tenant(a.tenant()).await.unwrap();
    assert_eq!(
        (
            receipt.data_keys_destroyed,
            receipt.records_deleted,
            receipt.api_keys_deleted
        ),
        (1, 1, 1)
    );
    assert!(f.store.data_keys(a.tenant()).await.unwrap().is_empty());
    // The "backup" row cannot be opened: there is no key left to open it with.
    assert!(matches!(
        f.vault
            .open_record(&a, RecordKind::DOCUMENT, &backup.row)
            .await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        f.vault.tenant(a.tenant()).await,
        Err(VaultError::NotFound)
    ));
    assert!(matches!(
        f.vault.erase_tenant(a.tenant()).await,
        Err(VaultError::NotFound)
    ));
    assert_eq!(
        f.vault.document(&b, &did("x")).await.unwrap().text.as_str(),
        "bystander"
    );
}

#[tokio::test]
async fn api_keys_expire_revoke_and_quarantine() {
    let f = fixture().await;
    let t = f
        .vault
        .create_tenant(NewTenant {
            name: "t".into(),
            region: Region::default(),
            policy: PolicyName::default(),
            models: None,
        })
        .await
        .unwrap();
    let short = f.vault.issue_api_key(&t.id, Some(60)).await.unwrap();
    let long = f.vault.issue_api_key(&t.id, None).await.unwrap();
    assert!(f.vault.authenticate(&short.token).await.is_ok());

    // Forged: right id, wrong secret; and garbage.
    let forged = format!("{}.{}", short.key_id, "A".repeat(43));
    assert_eq!(
        f.vault.authenticate(&forged).await.unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(
        f.vault
            .authenticate("bhk_0000000000000000.x")
            .await
            .unwrap_err(),
        AuthError::Invalid
    );
    assert_eq!(
        f.vault.authenticate("nonsense").await.unwrap_err(),
        AuthError::Invalid
    );

    f.clock.set_offset_ms(61_000);
    assert_eq!(
        f.vault.authenticate(&short.token).await.unwrap_err(),
        AuthError::Expired
    );

    f.vault.set_quarantine(&t.id, true).await.unwrap();
    assert_eq!(
        f.vault.authenticate(&long.token).await.unwrap_err(),
        AuthError::Quarantined
    );
    f.vault.set_quarantine(&t.id, false).await.unwrap();
    assert!(f.vault.authenticate(&long.token).await.is_ok());

    f.vault.revoke_api_key(&t.id, &long.key_id).await.unwrap();
    assert_eq!(
        f.vault.authenticate(&long.token).await.unwrap_err(),
        AuthError::Revoked
    );
    // Stored only as a keyed hash: the secret is nowhere in the file.
    let secret = long.token.split_once('.').unwrap().1.to_owned();
    let bytes = std::fs::read(&f.db).unwrap();
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

/// A list cursor tells nothing of other tenants: it does not hold the global row
/// sequence (which moves with every tenant's writes), it is the same length
/// whatever the position, and one tenant's cursor is refused for another (same
/// error as a cursor the server never issued).
#[tokio::test]
async fn list_cursors_reveal_no_sequence_and_work_only_for_their_listing() {
    let f = fixture().await;
    let a = tenant_with_key(&f.vault, "A").await;
    let b = tenant_with_key(&f.vault, "B").await;
    for i in 0..3 {
        f.vault
            .put_document(&a, doc(&format!("a-{i}"), "alpha text"))
            .await
            .unwrap();
        f.vault
            .put_document(&b, doc(&format!("b-{i}"), "beta text"))
            .await
            .unwrap();
    }
    let page = f.vault.list_documents(&a, None, 1).await.unwrap();
    let cursor = page.next_cursor.expect("more than one page");
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &cursor)
            .unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&decoded).starts_with('s'),
        "the cursor is not the plain sequence"
    );
    let next = f.vault.list_documents(&a, Some(&cursor), 10).await.unwrap();
    assert_eq!(next.documents.len(), 2, "A's cursor continues A's listing");
    let foreign = f.vault.list_documents(&b, Some(&cursor), 10).await;
    assert!(
        matches!(foreign, Err(VaultError::Invalid(_))),
        "{foreign:?}"
    );
    let forged = f.vault.list_documents(&a, Some("czE"), 10).await;
    assert!(matches!(forged, Err(VaultError::Invalid(_))));
    let (_, tenants_cursor) = f.vault.list_tenants(None, 1).await.unwrap();
    let tenants_cursor = tenants_cursor.unwrap();
    assert_eq!(
        tenants_cursor.len(),
        cursor.len(),
        "one length for every cursor"
    );
    assert!(matches!(
        f.vault.list_documents(&a, Some(&tenants_cursor), 10).await,
        Err(VaultError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_different_master_key_is_refused_with_a_clear_error() {
    let f = fixture().await;
    let other =
        Arc::new(LocalKek::new(&SecretKey::from_slice(&[1; 32]).unwrap(), "other").unwrap());
    let err = Vault::open(
        f.store.clone(),
        other,
        f.clock.clone(),
        VaultLimits::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, VaultError::MasterKeyMismatch));
    assert!(err.to_string().contains("BULKHEAD_MASTER_KEY"));
}

/// One step of a random multi-tenant history.
#[derive(Debug, Clone)]
enum Op {
    Put { tenant: usize, doc: u8 },
    Get { tenant: usize, doc: u8 },
    List { tenant: usize },
    Delete { tenant: usize, doc: u8 },
    Rotate { tenant: usize },
    Reseal { tenant: usize },
    Quarantine { tenant: usize, on: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..3usize;
    prop_oneof![
        4 => (t.clone(), 0..6u8).prop_map(|(tenant, doc)| Op::Put { tenant, doc }),
        4 => (t.clone(), 0..6u8).prop_map(|(tenant, doc)| Op::Get { tenant, doc }),
        2 => t.clone().prop_map(|tenant| Op::List { tenant }),
        2 => (t.clone(), 0..6u8).prop_map(|(tenant, doc)| Op::Delete { tenant, doc }),
        1 => t.clone().prop_map(|tenant| Op::Rotate { tenant }),
        1 => t.clone().prop_map(|tenant| Op::Reseal { tenant }),
        1 => (t, any::<bool>()).prop_map(|(tenant, on)| Op::Quarantine { tenant, on }),
    ]
}

fn canary(tenant: usize) -> String {
    format!("CANARY-of-tenant-{tenant}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every tenant uses the same document ids. Whatever the history, a tenant
    /// reads exactly its own documents (checked against a model) and never a
    /// byte carrying another tenant's canary.
    #[test]
    fn no_tenant_ever_observes_another_tenants_data(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let f = fixture().await;
            let mut tokens = Vec::new();
            let mut ids = Vec::new();
            for i in 0..3 {
                let t = f.vault.create_tenant(NewTenant { name: format!("t{i}"), region: Region::default(), policy: PolicyName::default(), models: None }).await.unwrap();
                tokens.push(f.vault.issue_api_key(&t.id, None).await.unwrap().token.to_string());
                ids.push(t.id);
            }
            let mut model: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); 3];
            let mut quarantined = [false; 3];
            let mut version: HashMap<usize, u32> = (0..3).map(|i| (i, 1)).collect();
            let mut counter = 0;
            for op in ops {
                let t = match &op { Op::Put { tenant, .. } | Op::Get { tenant, .. } | Op::List { tenant } | Op::Delete { tenant, .. } | Op::Rotate { tenant } | Op::Reseal { tenant } | Op::Quarantine { tenant, .. } => *tenant };
                let auth = f.vault.authenticate(&tokens[t]).await;
                if let Op::Quarantine { on, .. } = op {
                    f.vault.set_quarantine(&ids[t], on).await.unwrap();
                    quarantined[t] = on;
                    continue;
                }
                if let Op::Rotate { .. } = op {
                    let v = f.vault.rotate_key(&ids[t]).await.unwrap();
                    *version.get_mut(&t).unwrap() += 1;
                    assert_eq!(v.get(), version[&t]);
                    continue;
                }
                if let Op::Reseal { .. } = op {
                    f.vault.reseal(&ids[t], 3).await.unwrap();
                    continue;
                }
                if quarantined[t] {
                    assert_eq!(auth.unwrap_err(), AuthError::Quarantined);
                    continue;
                }
                let ctx = auth.unwrap();
                assert_eq!(ctx.tenant(), &ids[t]);
                match op {
                    Op::Put { doc: d, .. } => {
                        counter += 1;
                        let text = format!("{} body {counter}", canary(t));
                        let res = f.vault.put_document(&ctx, doc(&format!("doc{d}"), &text)).await;
                        match model[t].entry(format!("doc{d}")) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                assert!(matches!(res, Err(VaultError::Conflict)));
                            }
                            std::collections::btree_map::Entry::Vacant(slot) => {
                                res.unwrap();
                                slot.insert(text);
                            }
                        }
                    }
                    Op::Get { doc: d, .. } => {
                        let res = f.vault.document(&ctx, &did(&format!("doc{d}"))).await;
                        match model[t].get(&format!("doc{d}")) {
                            Some(text) => assert_eq!(res.unwrap().text.as_str(), text),
                            None => assert!(matches!(res, Err(VaultError::NotFound))),
                        }
                    }
                    Op::List { .. } => {
                        let page = f.vault.list_documents(&ctx, None, 100).await.unwrap();
                        let got: BTreeMap<String, String> = page.documents.iter().map(|d| (d.id.to_string(), d.text.to_string())).collect();
                        assert_eq!(&got, &model[t]);
                        for other in (0..3).filter(|o| *o != t) {
                            assert!(got.values().all(|text| !text.contains(&canary(other))));
                        }
                    }
                    Op::Delete { doc: d, .. } => {
                        let res = f.vault.delete_document(&ctx, &did(&format!("doc{d}"))).await;
                        if model[t].remove(&format!("doc{d}")).is_some() { res.unwrap() } else { assert!(matches!(res, Err(VaultError::NotFound))) }
                    }
                    _ => unreachable!("handled above"),
                }
            }
        });
    }
}
