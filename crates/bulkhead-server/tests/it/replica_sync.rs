//! A second replica on the same store keeping its output guard in step
//! (`guard::sync_pass`): a reload never leaves a gap in protection, one tenant's
//! failing reload neither stops the pass nor goes unnoticed, and an erased
//! tenant leaves nothing behind in the other replica's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::http::StatusCode;
use bulkhead_app::guard::{SYNC_FAILURES_ALERT, SyncSeen, sync_pass};
use bulkhead_app::{AlertKind, Services};
use bulkhead_guard::Verdict;
use bulkhead_server::guard::GuardState;
use bulkhead_types::TenantId;
use serde_json::json;

use crate::common::Api;

/// Counts the guard's sync failures, as the metrics would.
#[derive(Debug, Default)]
struct Failures(AtomicU64);

impl bulkhead_app::Telemetry for Failures {
    fn guard_sync_failed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Replica 2: its own guard, alerts, hot indexes and counters over replica 1's
/// store.
fn replica(api: &Api, telemetry: Arc<Failures>) -> Services {
    Services {
        guard: Arc::new(GuardState::new(&api.state.vault)),
        alerts: Arc::new(bulkhead_app::alerts::Alerts::new()),
        retrieval: Arc::new(bulkhead_server::retrieval::Retrieval::with_defaults()),
        traffic: Arc::new(bulkhead_app::traffic::Traffic::new()),
        telemetry,
        ..api.state.app.clone()
    }
}

/// Distinct prose per seed: words drawn from a large made-up vocabulary, so two
/// seeds' texts share no run of words by chance.
fn text(seed: u64, words: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::new();
    for _ in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut n = x % 200_000;
        for _ in 0..4 {
            out.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
        }
        out.push(' ');
    }
    out
}

async fn put(api: &Api, key: &str, id: &str, body: &str) {
    let r = api
        .call(
            "POST",
            "/v1/documents",
            Some(key),
            Some(json!({"id": id, "text": body})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

fn blocked(replica: &Services, scanning: &TenantId, text: &str) -> bool {
    let g = &replica.guard;
    g.guard.scan(scanning, text, &g.policy).verdict == Verdict::Blocked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reloading_a_tenant_never_scans_without_its_canary() {
    let api = Api::new().await;
    let (a, _) = api.tenant_with_key("a").await;
    let (b, key_b) = api.tenant_with_key("b").await;
    let (a, b) = (TenantId::parse(&a).unwrap(), TenantId::parse(&b).unwrap());
    for i in 0..8 {
        put(&api, &key_b, &format!("d{i}"), &text(i, 400)).await;
    }
    let two = replica(&api, Arc::default());
    let mut seen = SyncSeen::default();
    assert_eq!(sync_pass(&two, &mut seen).await.unwrap().reloaded, 2);
    let canary = api.state.guard.guard.canaries(&b).pop().unwrap();
    let leak = format!("the note says {canary} and more");
    assert!(blocked(&two, &a, &leak));

    // Scan without pause on another thread while replica 1 writes b's documents
    // and replica 2 reloads b after each write.
    let (stop, scans, misses) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let scanner = {
        let (two, a, leak) = (two.clone(), a.clone(), leak.clone());
        let (stop, scans, misses) = (stop.clone(), scans.clone(), misses.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if !blocked(&two, &a, &leak) {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                scans.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut reloads = 0;
    for i in 0..20 {
        put(&api, &key_b, &format!("n{i}"), &text(100 + i, 400)).await;
        reloads += sync_pass(&two, &mut seen).await.unwrap().reloaded;
    }
    stop.store(true, Ordering::Relaxed);
    scanner.join().unwrap();
    assert_eq!(reloads, 20, "every write was a reload of b");
    assert!(scans.load(Ordering::Relaxed) > 0);
    assert_eq!(
        misses.load(Ordering::Relaxed),
        0,
        "scans during a reload let b's canary through"
    );
    // The reloaded set is the stored one: the newest document is protected.
    assert!(blocked(&two, &a, &text(119, 400)));
}

#[tokio::test]
async fn one_tenants_failing_reload_does_not_stop_the_others_and_is_alerted() {
    let api = Api::new().await;
    let mut tenants = Vec::new();
    for name in ["a", "b", "c"] {
        let (id, key) = api.tenant_with_key(name).await;
        tenants.push((TenantId::parse(&id).unwrap(), key));
    }
    let failures = Arc::new(Failures::default());
    let two = replica(&api, failures.clone());
    let mut seen = SyncSeen::default();
    assert_eq!(sync_pass(&two, &mut seen).await.unwrap().reloaded, 3);

    // Replica 1 writes a document for each; a's cannot be opened any more.
    for (i, (_, key)) in tenants.iter().enumerate() {
        put(&api, key, "doc", &text(10 + i as u64, 300)).await;
    }
    let (a, b, c) = (&tenants[0].0, &tenants[1].0, &tenants[2].0);
    let db = rusqlite::Connection::open(api.dir.path().join("db")).unwrap();
    let original: Vec<u8> = db
        .query_row(
            "SELECT sealed FROM records WHERE tenant_id = ?1 AND kind = 'document'",
            [a.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    let mut broken = original.clone();
    let last = broken.len() - 1;
    broken[last] ^= 0x55;
    let set = "UPDATE records SET sealed = ?1 WHERE tenant_id = ?2 AND kind = 'document'";
    db.execute(set, rusqlite::params![broken, a.as_str()])
        .unwrap();

    let a_canary = api.state.guard.guard.canaries(a).pop().unwrap();
    for pass in 1..=SYNC_FAILURES_ALERT {
        let report = sync_pass(&two, &mut seen).await.unwrap();
        assert_eq!(report.failed, vec![(a.clone(), pass)], "pass {pass}");
        assert_eq!(report.reloaded, if pass == 1 { 2 } else { 0 });
        // b and c after a were synced; a keeps its old set.
        assert!(blocked(&two, a, &text(11, 300)) && blocked(&two, a, &text(12, 300)));
        assert!(blocked(&two, c, &format!("x {a_canary} y")));
        assert!(
            !blocked(&two, b, &text(10, 300)),
            "a's unreadable document is not loaded"
        );
        let alerts: Vec<_> = two
            .alerts
            .recent(10)
            .into_iter()
            .filter(|al| al.kind == AlertKind::GuardSyncFailing)
            .collect();
        assert_eq!(
            alerts.len(),
            usize::from(pass == SYNC_FAILURES_ALERT),
            "pass {pass}"
        );
        if let Some(alert) = alerts.first() {
            assert_eq!(alert.tenant.as_ref(), Some(a));
        }
    }
    assert_eq!(
        failures.0.load(Ordering::Relaxed),
        u64::from(SYNC_FAILURES_ALERT)
    );

    // Once the record opens again, a is reloaded and its count starts over.
    db.execute(set, rusqlite::params![original, a.as_str()])
        .unwrap();
    let report = sync_pass(&two, &mut seen).await.unwrap();
    assert_eq!((report.reloaded, report.failed.len()), (1, 0));
    assert!(blocked(&two, b, &text(10, 300)));
    assert!(seen.failures.is_empty());
}

#[tokio::test]
async fn a_tenant_erased_on_one_replica_leaves_nothing_in_the_others_memory() {
    let api = Api::new().await;
    let (_, key_a) = api.tenant_with_key("a").await;
    let (b, key_b) = api.tenant_with_key("b").await;
    let b = TenantId::parse(&b).unwrap();
    put(&api, &key_a, "doc", &text(1, 200)).await;
    put(&api, &key_b, "doc", &text(2, 200)).await;

    // Replica 2 has its own vault (and so its own cache of data keys) over the
    // same store and master key.
    let (kek, _) =
        bulkhead_crypto::LocalKek::load_or_generate(&api.dir.path().join("master.key")).unwrap();
    let vault = bulkhead_vault::Vault::open(
        Arc::clone(api.state.vault.store()),
        Arc::new(kek),
        api.clock.clone(),
        bulkhead_vault::VaultLimits::default(),
    )
    .await
    .unwrap();
    let two = Services {
        vault: Arc::new(vault),
        ..replica(&api, Arc::default())
    };
    let mut seen = SyncSeen::default();
    assert_eq!(sync_pass(&two, &mut seen).await.unwrap().reloaded, 2);
    // Replica 2 serves b for a while: a search, its traffic and alert windows.
    let ctx = two.vault.authenticate(&key_b).await.unwrap();
    let hits = two
        .retrieval
        .retrieve(
            &two,
            &ctx,
            &text(2, 20),
            3,
            Some(bulkhead_index::SearchMode::Bm25),
            None,
        )
        .await
        .unwrap()
        .hits;
    assert!(!hits.is_empty());
    let now = two.vault.now();
    two.traffic.record(b.as_str(), now, 200, 3);
    two.alerts.baselines.observe(&b, now);
    let _ = two.alerts.not_found(&b, now.0);
    let holds = |two: &Services| {
        [
            !two.guard.guard.canaries(&b).is_empty(),
            two.vault.holds_keys_of(&b),
            two.retrieval.cache.contains(&b),
            two.traffic.last_seen(b.as_str()).is_some(),
            two.alerts.baselines.tracks(&b),
        ]
    };
    assert_eq!(holds(&two), [true; 5]);

    // Replica 1 erases b; replica 2's next sync forgets all of it.
    let erased = api
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/{b}"),
            Some(crate::common::ADMIN),
            None,
        )
        .await;
    assert_eq!(erased.status, StatusCode::OK);
    let report = sync_pass(&two, &mut seen).await.unwrap();
    assert_eq!(report.forgotten, vec![b.clone()]);
    assert_eq!(
        holds(&two),
        [false; 5],
        "[canaries, data keys, hot index, traffic, baseline]"
    );
    assert!(!seen.loaded.contains_key(&b));
}
