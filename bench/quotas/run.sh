#!/usr/bin/env bash
# Fair sharing under a noisy neighbour: see bench.py for what runs and why.
#
#   bench/quotas/run.sh                       # builds the release binaries first
#   SKIP_BUILD=1 DURATION=10 ROUNDS=3 bench/quotas/run.sh
#
# Environment: DURATION (s, 15), ROUNDS (3), QUIET_RATE (50), NOISY_RATE (2000),
# LATENCY_MS (20, the upstream's), STORED_BYTES (the noisy tenant's storage quota),
# OUT (results file [bench/results/quotas-YYYY-MM-DD.txt]).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p bulkhead -p bulkhead-mock-upstream -p bulkhead-loadgen
fi
for b in bulkhead bulkhead-mock-upstream bulkhead-loadgen; do
    [ -x "$bin/$b" ] || { echo "missing $bin/$b (build it, or unset SKIP_BUILD)" >&2; exit 1; }
done
exec python3 "$root/bench/quotas/bench.py" "$bin" "${OUT:-$root/bench/results/quotas-$(date +%F).txt}"
