//! Seal+store and load+open throughput through the vault over SQLite (durable group
//! commits), next to raw AES-256-GCM seal and open from aws-lc-rs measured in the
//! same run. The raw figure is the ceiling; the ratio is what storage, binding and
//! serialization cost on top of it.
//!
//! Run: `cargo bench -p bulkhead-vault --bench records` (BENCH_RECORDS overrides the
//! count per size).

use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use bulkhead_crypto::{LocalKek, SecretKey};
use bulkhead_store::{SqliteOptions, SqliteStore};
use bulkhead_types::{DocumentId, PolicyName, Region, SystemClock};
use bulkhead_vault::{NewDocument, NewTenant, Vault, VaultLimits};

const CONCURRENCY: usize = 32;

/// Raw AES-256-GCM seal followed by open of the same buffer, per second.
fn raw_gcm_seal_open_per_sec(size: usize, count: usize) -> f64 {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("key"));
    let mut buf = vec![0x5au8; size];
    let start = Instant::now();
    for i in 0..count {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("seal");
        buf.extend_from_slice(tag.as_ref());
        let len = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("open")
            .len();
        buf.truncate(len);
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let count: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "cargo bench -p bulkhead-vault --bench records   ({count} records per size, concurrency {CONCURRENCY})"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>18}",
        "size", "seal+store/s", "load+open/s", "raw seal+open/s"
    );
    for size in [1024usize, 64 * 1024] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store_rate, load_rate) = rt.block_on(async {
            let store = Arc::new(
                SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).expect("store"),
            );
            let kek = Arc::new(
                LocalKek::new(&SecretKey::generate().expect("rng"), "bench").expect("kek"),
            );
            let limits = VaultLimits {
                document_text_bytes_max: 128 * 1024,
                ..VaultLimits::default()
            };
            let vault = Arc::new(
                Vault::open(store, kek, Arc::new(SystemClock), limits)
                    .await
                    .expect("vault"),
            );
            let tenant = vault
                .create_tenant(NewTenant {
                    name: "bench".into(),
                    region: Region::default(),
                    policy: PolicyName::default(),
                    models: None,
                })
                .await
                .expect("tenant");
            let key = vault.issue_api_key(&tenant.id, None).await.expect("key");
            let ctx = vault.authenticate(&key.token).await.expect("auth");
            let text = "x".repeat(size);

            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..CONCURRENCY {
                let (vault, ctx, text) = (vault.clone(), ctx.clone(), text.clone());
                tasks.push(tokio::spawn(async move {
                    for i in (w..count).step_by(CONCURRENCY) {
                        let doc = NewDocument {
                            id: Some(DocumentId::parse(&format!("d{i}")).expect("id")),
                            text: text.clone(),
                            metadata: None,
                            ttl_secs: None,
                        };
                        vault.put_document(&ctx, doc).await.expect("put");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            let store_rate = count as f64 / start.elapsed().as_secs_f64();

            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..CONCURRENCY {
                let (vault, ctx) = (vault.clone(), ctx.clone());
                tasks.push(tokio::spawn(async move {
                    for i in (w..count).step_by(CONCURRENCY) {
                        let doc = vault
                            .document(&ctx, &DocumentId::parse(&format!("d{i}")).expect("id"))
                            .await
                            .expect("get");
                        assert_eq!(doc.text.len(), size);
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            let load_rate = count as f64 / start.elapsed().as_secs_f64();
            vault.store().shutdown().await;
            (store_rate, load_rate)
        });
        let raw = raw_gcm_seal_open_per_sec(size, count * 10);
        println!(
            "{:<8} {:>16.0} {:>16.0} {:>18.0}",
            format!("{} KiB", size / 1024),
            store_rate,
            load_rate,
            raw
        );
        println!(
            "         seal+store {:.1} MiB/s, load+open {:.1} MiB/s; raw seal+open is {:.0}x / {:.0}x faster",
            store_rate * size as f64 / 1048576.0,
            load_rate * size as f64 / 1048576.0,
            raw / store_rate,
            raw / load_rate
        );
    }
}
