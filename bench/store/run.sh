#!/usr/bin/env bash
# Ingest and search throughput, SQLite vs PostgreSQL, one vs three replicas, in
# one run (see bench.py). PostgreSQL is the throwaway server of
# scripts/pg-test-server (fsync off there: it measures Bulkhead and the protocol,
# not a disk); SQLite runs with its production settings (synchronous=FULL).
#
#   bench/store/run.sh                    # builds the release binary, writes bench/results/store-DATE.txt
#   BIN=path/to/bulkhead bench/store/run.sh   # another build
#   TENANTS=10 DOCS=2000 SEARCHES=2000 CONCURRENCY=16
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
if [ -z "${BIN:-}" ]; then
    cargo build -q --release -p bulkhead
    BIN="$target/release/bulkhead"
fi
PG_URL="$(scripts/pg-test-server)"
export BIN PG_URL
OUT="${OUT:-$root/bench/results/store-$(date +%F).txt}"
python3 bench/store/bench.py | tee "$OUT"
echo "written to $OUT" >&2
