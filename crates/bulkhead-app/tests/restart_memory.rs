//! Issue 17, item 2: what a restart holds in memory does not grow with what a
//! tenant stores. The start-up rebuild of the output guard and the first build
//! of a tenant's search index read the tenant's rows page by page, so their peak
//! heap is what they keep (fingerprints, the index) plus about one page — not
//! plus the tenant's whole text, as when every document was opened at once.
//!
//! Its own test binary: the counting global allocator sees the whole process,
//! so nothing else may run beside the measured steps (one test, one thread).

use std::sync::Arc;

use bulkhead_app::guard::GuardState;
use bulkhead_app::retrieval::Retrieval;
use bulkhead_app::{App, AppConfig, Services};
use bulkhead_index::SearchMode;
use bulkhead_types::{PolicyName, Region};
use bulkhead_vault::{NewDocument, NewTenant};
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// Documents of 64 KiB: 16 MiB of tenant text in all.
const DOCUMENTS: usize = 256;
const DOCUMENT_BYTES: usize = 64 << 10;
/// What a restart step may hold beyond what it keeps (about one page). Reading
/// the whole tenant at once held all of its opened text: the guard's rebuild
/// then peaked 17 MiB above what it keeps, the index build 85 MiB (measured
/// with the page sizes set past the tenant's row count).
const TRANSIENT_MAX: usize = 8 << 20;

/// Words from a fixed generator: text the guard and the index treat like prose
/// (many distinct terms), the same on every run.
fn document_text(seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut text = String::with_capacity(DOCUMENT_BYTES + 16);
    while text.len() < DOCUMENT_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = 3 + (state % 8) as usize;
        for i in 0..len {
            text.push((b'a' + ((state >> (i * 5)) % 26) as u8) as char);
        }
        text.push(if state.is_multiple_of(11) { '.' } else { ' ' });
    }
    text
}

/// Runs `step`; returns its peak heap above the start and the heap it kept.
async fn measured(step: impl std::future::Future<Output = ()>) -> (usize, usize) {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    step.await;
    let (peak, after) = (HEAP.peak_usage(), HEAP.current_usage());
    (peak.saturating_sub(before), after.saturating_sub(before))
}

/// `copies`: how many generations of what it keeps a step may hold at once
/// (an index merging its last two segments holds the old ones and the merged
/// one: two).
fn assert_bounded(step: &str, peak: usize, kept: usize, copies: usize) {
    eprintln!("{step}: peak {peak} bytes above the start, {kept} kept");
    assert!(kept > 0, "{step} kept nothing");
    let bound = copies * kept + TRANSIENT_MAX;
    assert!(
        peak <= bound,
        "{step} peaked at {} MiB for {} MiB kept (at most {copies} × kept + {} MiB: about one page)",
        peak >> 20,
        kept >> 20,
        TRANSIENT_MAX >> 20
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_restart_holds_one_page_of_a_large_tenant_beyond_what_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(AppConfig::in_dir(dir.path())).await.unwrap();
    let vault = Arc::clone(&app.vault);
    let tenant = vault
        .create_tenant(NewTenant {
            name: "large".into(),
            region: Region::default(),
            policy: PolicyName::default(),
            models: None,
        })
        .await
        .unwrap();
    let key = vault.issue_api_key(&tenant.id, None).await.unwrap();
    let ctx = vault.authenticate(&key.token).await.unwrap();
    let retrieval = Arc::new(Retrieval::with_defaults());
    for i in 0..DOCUMENTS {
        let text = document_text(i as u64);
        let chunks = retrieval.prepare(&tenant.id, None, &text).await.unwrap();
        let new = NewDocument {
            id: None,
            text,
            metadata: None,
            ttl_secs: None,
        };
        vault.put_document_chunked(&ctx, new, chunks).await.unwrap();
    }

    // The restart: a fresh guard rebuilt from the store.
    let guard = Arc::new(GuardState::new(&vault));
    let (peak, kept) = measured(async {
        guard.rebuild(&vault).await.unwrap();
    })
    .await;
    assert_bounded("the guard's rebuild", peak, kept, 1);

    // The tenant's first search after the restart builds its index from the store.
    let services = Services::new(
        Arc::clone(&vault),
        Arc::clone(&app.audit),
        Arc::clone(&retrieval),
        Arc::clone(&guard),
    );
    let (peak, kept) = measured(async {
        let found = retrieval
            .retrieve(&services, &ctx, "abc def", 3, Some(SearchMode::Bm25), None)
            .await
            .unwrap();
        drop(found);
    })
    .await;
    assert_bounded("the index build", peak, kept, 2);
}
