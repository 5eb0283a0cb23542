//! Measures tantivy (RAM directory, BM25, no stored fields, frequencies only) on the
//! same synthetic corpus as `crates/bulkhead-index/benches/search.rs`: build time of
//! a 1,000-chunk index, heap bytes per 50-chunk tenant, and search p50/p99 at 100k.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument};

#[path = "../../../../crates/bulkhead-index/benches/common/corpus.rs"]
mod corpus;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

struct Built {
    index: Index,
    reader: IndexReader,
    parser: QueryParser,
}

fn build(texts: &[String]) -> Built {
    let mut sb = Schema::builder();
    let opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let body = sb.add_text_field("body", opts);
    let index = Index::create_in_ram(sb.build());
    {
        let mut w = index.writer_with_num_threads(1, 15_000_000).expect("writer");
        for t in texts {
            let mut d = TantivyDocument::default();
            d.add_text(body, t);
            w.add_document(d).expect("add");
        }
        w.commit().expect("commit");
    }
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .expect("reader");
    let parser = QueryParser::for_index(&index, vec![body]);
    Built { index, reader, parser }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let (_, small) = corpus::chunks(1, 1000, 120);
    let mut t = Vec::new();
    for _ in 0..15 {
        let s = Instant::now();
        let b = build(&small);
        let _ = b.reader.searcher();
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    println!("tantivy build 1,000 chunks: median {:.2} ms, max {:.2} ms", pct(&mut t.clone(), 0.5), pct(&mut t, 1.0));

    let tenants = 1000;
    let before = LIVE.load(Ordering::Relaxed);
    let mut kept = Vec::new();
    for i in 0..tenants {
        let (_, texts) = corpus::chunks(100 + i as u64, 50, 120);
        let b = build(&texts);
        drop(texts);
        kept.push(b);
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "tantivy heap per 50-chunk tenant (writer dropped): {:.1} KiB",
        (after - before) as f64 / tenants as f64 / 1024.0
    );
    drop(kept);

    let (_, big) = corpus::chunks(7, 100_000, 120);
    let s = Instant::now();
    let b = build(&big);
    println!("tantivy build 100k chunks: {:.2} s", s.elapsed().as_secs_f64());
    let qs = corpus::queries(7, &big, 2000);
    let searcher = b.reader.searcher();
    let mut lat = Vec::new();
    for q in &qs {
        let s = Instant::now();
        let query = b.parser.parse_query(q).expect("query");
        let top = searcher.search(&query, &TopDocs::with_limit(10).order_by_score()).expect("search");
        std::hint::black_box(top);
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    println!("tantivy search 100k (OR of 2-4 terms, top 10): p50 {:.3} ms, p99 {:.3} ms", pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));
    let _ = &b.index;
}
