"""The embedded peer: LanceDB, one table per tenant, over the corpus, queries and
query embeddings that `cargo bench -p bulkhead-index --bench search` exported
(BENCH_EXPORT). Like for like with bulkhead-index: the same chunk texts, the same
hashed 3-5-gram vectors (256 dims, passed in; no model), the same queries, top 10.

- BM25: LanceDB's native full-text index (`create_fts_index`, not tantivy).
- Vector: exact (flat) cosine search; no ANN index is built, as bulkhead-index
  scans exactly too.
- Hybrid: LanceDB's hybrid query with its RRF reranker.

Each mode runs the first PEER_QUERIES (default 300) queries. Reported: build time (table + FTS index) and chunks/s, search p50/p99, and a cold
open of a 1,000-chunk tenant (open the table, first query).
"""

import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import lancedb
import numpy as np
import pyarrow as pa

DIMS = 256
TOP_K = 10
# The first N exported queries (the peer's exact vector search at 100k chunks
# takes over 100 ms a query; 300 keep the run within minutes).
QUERIES = int(os.environ.get("PEER_QUERIES", "300"))


def pct(values, p):
    v = sorted(values)
    return v[round((len(v) - 1) * p)]


def load(export_dir, name):
    rows = [json.loads(l) for l in open(os.path.join(export_dir, f"{name}.jsonl"))]
    vecs = np.fromfile(os.path.join(export_dir, f"{name}.f32"), dtype="<f4").reshape(-1, DIMS)
    queries = [json.loads(l) for l in open(os.path.join(export_dir, f"{name}.queries.jsonl"))]
    assert len(rows) == len(vecs)
    return rows, vecs, queries


def arrow_table(rows, vecs):
    return pa.table(
        {
            "id": [r["id"] for r in rows],
            "doc": [r["doc"] for r in rows],
            "text": [r["text"] for r in rows],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(vecs.reshape(-1), type=pa.float32()), DIMS
            ),
        }
    )


def build(db, name, rows, vecs):
    t = time.perf_counter()
    tbl = db.create_table(name, data=arrow_table(rows, vecs), mode="overwrite")
    tbl.create_fts_index("text", use_tantivy=False, replace=True)
    return tbl, time.perf_counter() - t


def timed(fn, n):
    lat = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t) * 1e3)
    return pct(lat, 0.5), pct(lat, 0.99), max(lat)


def main():
    # `create_fts_index` is deprecated in favour of `create_index(config=FTS())`;
    # the old name is kept because it exists in every 0.x release.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    export_dir = sys.argv[1]
    work = tempfile.mkdtemp(prefix="lancedb-peer-", dir=os.environ.get("PEER_TMP"))
    try:
        db = lancedb.connect(work)
        print(f"peer: LanceDB {lancedb.__version__}, one table per tenant, data in {work}")
        print(f"{'peer search':<22} {'chunks':>8} {'p50 ms':>10} {'p99 ms':>10} {'max ms':>10}")
        builds = []
        for name in ["tenant10k", "tenant100k"]:
            rows, vecs, queries = load(export_dir, name)
            tbl, secs = build(db, name, rows, vecs)
            builds.append((name, len(rows), secs))
            n = min(len(queries), QUERIES)
            qv = [np.asarray(q["embedding"], dtype=np.float32) for q in queries]
            qt = [q["text"] for q in queries]

            def bm25(i):
                return tbl.search(qt[i], query_type="fts").limit(TOP_K).to_arrow()

            def vector(i):
                return (
                    tbl.search(qv[i], vector_column_name="vector")
                    .distance_type("cosine")
                    .limit(TOP_K)
                    .to_arrow()
                )

            def hybrid(i):
                return (
                    tbl.search(query_type="hybrid", vector_column_name="vector")
                    .vector(qv[i])
                    .text(qt[i])
                    .limit(TOP_K)
                    .to_arrow()
                )

            for label, fn in [("Bm25", bm25), ("Vector", vector), ("Hybrid", hybrid)]:
                fn(0)  # warm-up
                p50, p99, mx = timed(fn, n)
                print(f"{label:<22} {len(rows):>8} {p50:>10.3f} {p99:>10.3f} {mx:>10.3f}")
        print()
        print(f"{'peer indexing':<34} {'seconds':>10} {'chunks/s':>12}")
        for name, n, secs in builds:
            print(f"{name + ' (table + FTS index)':<34} {secs:>10.2f} {n / secs:>12.0f}")

        # Cold open of a 1,000-chunk tenant: build once, then open and query.
        rows, vecs, queries = load(export_dir, "tenant10k")
        rows, vecs = rows[:1000], vecs[:1000]
        opens = []
        builds_1k = []
        for r in range(20):
            _, secs = build(db, f"small{r}", rows, vecs)
            builds_1k.append(secs * 1e3)
        for r in range(20):
            t = time.perf_counter()
            tbl = lancedb.connect(work).open_table(f"small{r}")
            tbl.search(queries[r]["text"], query_type="fts").limit(TOP_K).to_arrow()
            opens.append((time.perf_counter() - t) * 1e3)
        print()
        print(f"{'peer, 1,000-chunk tenant':<40} {'p50 ms':>10} {'p99 ms':>10}")
        print(f"{'build (table + FTS index)':<40} {pct(builds_1k, 0.5):>10.2f} {pct(builds_1k, 0.99):>10.2f}")
        print(f"{'open table + first BM25 query':<40} {pct(opens, 0.5):>10.2f} {pct(opens, 0.99):>10.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
