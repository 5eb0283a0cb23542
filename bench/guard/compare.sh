#!/usr/bin/env bash
# Issue 16's before/after, side by side in one run on this machine: the guard's
# throughput bench (10,000 tenants loaded, every stage on) and the streaming
# hold-back (added latency to first and last byte), for the guard before the
# leak-detection rewrite (BASE, default the commit before it) and for this tree.
#
#   bench/guard/compare.sh            # ~15 min on 2 vCPUs (two release builds)
#   BASE=<commit> bench/guard/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=${BASE:-f6c8d7a}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
WT="$CARGO_TARGET_DIR/bench-guard-base"
if [ ! -d "$WT" ]; then
    git worktree add --detach "$WT" "$BASE" >/dev/null
else
    git -C "$WT" checkout -q --detach "$BASE"
fi
# The hold-back bench uses only API both versions have.
cp crates/bulkhead-guard/examples/bench_hold.rs "$WT/crates/bulkhead-guard/examples/bench_hold.rs"
lscpu | grep 'Model name' || true
for side in before after; do
    dir=$([ "$side" = before ] && echo "$WT" || echo "$PWD")
    echo "=== $side ($( git -C "$dir" rev-parse --short HEAD ))"
    (cd "$dir" && cargo run -q --release -p bulkhead-guard --example bench_hold)
    (cd "$dir" && cargo bench -q -p bulkhead-guard --bench scan 2>/dev/null)
done
