//! The audit service over a real SQLite file: durable appends, proofs that verify
//! against signed checkpoints, restarts, crypto-shredding, rotation, and the
//! refusal to sign a checkpoint inconsistent with an earlier one (invariant 5).

use std::path::PathBuf;
use std::sync::Arc;

use bulkhead_audit::{Audit, AuditError, AuditOptions, Outcome, Subject};
use bulkhead_crypto::{LocalKek, SecretKey};
use bulkhead_ledger::checkpoint::Checkpoint;
use bulkhead_ledger::event::leaf_hash_of_json;
use bulkhead_ledger::note::{NoteSigner, NoteVerifier};
use bulkhead_ledger::proof::{verify_consistency, verify_inclusion};
use bulkhead_ledger::{Hash, root_of};
use bulkhead_store::{SqliteOptions, SqliteStore};
use bulkhead_types::{LogId, PolicyName, Region, SystemClock, TenantId};
use bulkhead_vault::{NewTenant, Vault, VaultLimits};

struct Fixture {
    dir: tempfile::TempDir,
    skey: String,
}

impl Fixture {
    fn new() -> Self {
        let signer = NoteSigner::generate("bulkhead.test").unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            skey: signer.to_skey().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("bulkhead.db")
    }

    /// A fresh process's view: new store, vault and audit service over the file.
    async fn open(&self) -> (Arc<Vault>, Arc<Audit>, Arc<SqliteStore>) {
        let store = Arc::new(SqliteStore::open(&self.db(), SqliteOptions::default()).unwrap());
        let kek =
            Arc::new(LocalKek::new(&SecretKey::from_slice(&[7; 32]).unwrap(), "test").unwrap());
        let vault = Arc::new(
            Vault::open(
                store.clone(),
                kek,
                Arc::new(SystemClock),
                VaultLimits::default(),
            )
            .await
            .unwrap(),
        );
        let options = AuditOptions {
            server_name: "bulkhead.test".into(),
            // Tests sign on demand; the background signer stays out of the way.
            checkpoint_interval: std::time::Duration::from_secs(3600),
            ..AuditOptions::default()
        };
        let audit = Audit::start(
            vault.clone(),
            NoteSigner::from_skey(&self.skey).unwrap(),
            options,
        )
        .unwrap();
        (vault, audit, store)
    }
}

async fn close(audit: &Audit, store: &SqliteStore) {
    audit.shutdown().await;
    bulkhead_store::Store::shutdown(store).await;
}

async fn new_tenant(vault: &Vault, name: &str) -> TenantId {
    vault
        .create_tenant(NewTenant {
            name: name.into(),
            region: Region::default(),
            policy: PolicyName::default(),
            models: None,
        })
        .await
        .unwrap()
        .id
}

async fn record_n(audit: &Arc<Audit>, log: &LogId, n: usize) -> Vec<Hash> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (audit, log) = (audit.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut event = audit.event(
                "document.read",
                "key:bhk_00000000000000aa",
                Outcome::Allowed,
            );
            event
                .subjects
                .push(Subject::new("document", format!("doc-{i}")).with_content(b"text"));
            event.request_id = Some(format!("req_{i}"));
            audit.record(&log, &event).await.unwrap()
        }));
    }
    let mut refs = Vec::new();
    for t in tasks {
        refs.push(t.await.unwrap());
    }
    refs.sort_by_key(|r| r.index);
    // Concurrent appends get contiguous, distinct indices.
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(r.index, i as u64);
    }
    refs.into_iter().map(|r| r.leaf_hash).collect()
}

fn verifier(audit: &Audit) -> NoteVerifier {
    NoteVerifier::from_vkey(&audit.vkey()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_proved_by_signed_checkpoints_across_restarts() {
    let fx = Fixture::new();
    let (vault, audit, store) = fx.open().await;
    let tenant = new_tenant(&vault, "acme").await;
    let log = LogId::Tenant(tenant.clone());
    let mut leaves = record_n(&audit, &log, 300).await;
    record_n(&audit, &LogId::Operator, 5).await;

    let first = audit.checkpoint(&log).await.unwrap();
    let cp = Checkpoint::open(&first.note, &verifier(&audit)).unwrap();
    assert_eq!(cp.origin, format!("bulkhead.test/tenants/{tenant}"));
    assert_eq!(cp.size, 300);
    assert_eq!(cp.root, root_of(&leaves));

    // Entries come back with events whose canonical form hashes to the leaf.
    let entries = audit.entries(&log, 0, 300).await.unwrap();
    assert_eq!(entries.len(), 300);
    for (entry, leaf) in entries.iter().zip(&leaves) {
        assert_eq!(entry.leaf_hash, *leaf);
        let event = entry.event.as_ref().unwrap();
        assert_eq!(leaf_hash_of_json(event).unwrap(), *leaf);
        assert!(
            !event.to_string().contains("text\""),
            "content never enters an event"
        );
    }
    close(&audit, &store).await;

    // A restarted process continues the same tree.
    let (_vault, audit, store) = fx.open().await;
    leaves.extend(record_n_from(&audit, &log, 300, 700).await);
    let second = audit.checkpoint(&log).await.unwrap().checkpoint;
    assert_eq!(second.size, 1000);
    assert_eq!(second.root, root_of(&leaves));
    for index in [0u64, 1, 299, 300, 511, 999] {
        let (leaf, proof) = audit.inclusion_proof(&log, index, 1000).await.unwrap();
        assert_eq!(leaf, leaves[index as usize]);
        verify_inclusion(index, 1000, &leaf, &proof, &second.root).unwrap();
    }
    let proof = audit.consistency_proof(&log, 300, 1000).await.unwrap();
    verify_consistency(300, 1000, &proof, &cp.root, &second.root).unwrap();
    assert!(matches!(
        audit.inclusion_proof(&log, 5, 1001).await,
        Err(AuditError::Invalid(_))
    ));
    close(&audit, &store).await;
}

async fn record_n_from(audit: &Arc<Audit>, log: &LogId, from: u64, n: usize) -> Vec<Hash> {
    let mut leaves = Vec::new();
    for i in 0..n {
        let event = audit.event("document.create", "admin", Outcome::Allowed);
        let mut event = event;
        event.request_id = Some(format!("again_{i}"));
        let r = audit.record(log, &event).await.unwrap();
        assert_eq!(r.index, from + i as u64);
        leaves.push(r.leaf_hash);
    }
    leaves
}

/// Invariant 5: whatever happens to storage, two checkpoints this server signs for
/// one log are consistent. The test edits an interior hash, a leaf hash, truncates
/// the log, and races signers; every signed pair must verify as consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_signs_two_inconsistent_checkpoints() {
    let fx = Fixture::new();
    let (_vault, audit, store) = fx.open().await;
    let log = LogId::Operator;
    let mut signed: Vec<Checkpoint> = Vec::new();
    record_n(&audit, &log, 600).await;
    // Many concurrent signers while appends continue.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let e = audit.event("tenant.create", "admin", Outcome::Allowed);
                audit.record(&LogId::Operator, &e).await.unwrap();
            }
            audit.sign(&LogId::Operator).await.unwrap().checkpoint
        }));
    }
    for t in tasks {
        signed.push(t.await.unwrap());
    }
    close(&audit, &store).await;

    // A forked history of the same log, built elsewhere, to splice in.
    let forger = Fixture::new();
    let (_v, forged_audit, forged_store) = forger.open().await;
    record_n(&forged_audit, &log, 700).await;
    close(&forged_audit, &forged_store).await;
    let splice = format!(
        "ATTACH '{}' AS forged;
         DELETE FROM audit_tiles WHERE log = (SELECT seq FROM audit_logs WHERE log_id = 'operator');
         DELETE FROM audit_entries WHERE log = (SELECT seq FROM audit_logs WHERE log_id = 'operator');
         INSERT INTO audit_tiles SELECT (SELECT seq FROM main.audit_logs WHERE log_id = 'operator'),
             level, idx, data FROM forged.audit_tiles;
         INSERT INTO audit_entries SELECT (SELECT seq FROM main.audit_logs WHERE log_id = 'operator'),
             idx, leaf_hash, key_version, sealed, created_at FROM forged.audit_entries;
         UPDATE audit_logs SET size = 700 WHERE log_id = 'operator';",
        forger.db().display()
    );
    // Each attack runs on a pristine copy, in a new process, which then tries to
    // append and sign over the edit.
    let attacks: [(&str, String); 3] = [
        ("a forked history spliced in", splice),
        (
            "the log truncated",
            "UPDATE audit_logs SET size = 100;".into(),
        ),
        (
            "an interior hash of the right edge edited",
            "FLIP level 1".into(),
        ),
    ];
    let pristine = std::fs::read(fx.db()).unwrap();
    let mut refused = 0;
    for (name, attack) in &attacks {
        std::fs::write(fx.db(), &pristine).unwrap();
        let _ = std::fs::remove_file(fx.db().with_extension("db-wal"));
        let conn = rusqlite::Connection::open(fx.db()).unwrap();
        if attack.starts_with("FLIP") {
            let data: Vec<u8> = conn
                .query_row("SELECT data FROM audit_tiles WHERE level = 1", [], |r| {
                    r.get(0)
                })
                .unwrap();
            let mut data = data;
            data[0] ^= 1;
            conn.execute("UPDATE audit_tiles SET data = ?1 WHERE level = 1", [data])
                .unwrap();
        } else {
            conn.execute_batch(attack).unwrap();
        }
        drop(conn);
        let (_vault, audit, store) = fx.open().await;
        let e = audit.event("tenant.create", "admin", Outcome::Allowed);
        let _ = audit.record(&log, &e).await;
        match audit.sign(&log).await {
            Err(AuditError::Inconsistent { .. }) => refused += 1,
            Ok(cp) => signed.push(cp.checkpoint),
            Err(e) => panic!("unexpected error after {name}: {e}"),
        }
        close(&audit, &store).await;
    }
    assert!(
        refused >= 2,
        "the fork and the truncation must both be refused"
    );

    // Every checkpoint ever signed, pairwise: same size means same root, and the
    // pristine log proves the smallest consistent with the largest.
    signed.sort_by_key(|c| c.size);
    for pair in signed.windows(2) {
        if pair[0].size == pair[1].size {
            assert_eq!(
                pair[0].root, pair[1].root,
                "two roots signed for size {}",
                pair[0].size
            );
        }
    }
    std::fs::write(fx.db(), &pristine).unwrap();
    let _ = std::fs::remove_file(fx.db().with_extension("db-wal"));
    let (_vault, audit, store) = fx.open().await;
    let (small, large) = (&signed[0], signed.last().unwrap());
    let proof = audit
        .consistency_proof(&log, small.size, large.size)
        .await
        .unwrap();
    verify_consistency(small.size, large.size, &proof, &small.root, &large.root).unwrap();
    close(&audit, &store).await;
}
