#!/usr/bin/env bash
# One session, one machine: bulkhead-index's search bench, then the LanceDB peer
# on the corpus the bench exported. Output goes to bench/results/retrieval.txt.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export_dir="${CARGO_TARGET_DIR:-$root/target}/retrieval-export"
out="$root/bench/results/retrieval.txt"
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores"
    BENCH_EXPORT="$export_dir" cargo bench -p bulkhead-index --bench search 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)'
    echo
    bench/retrieval/peer.sh "$export_dir"
} | tee "$out"
