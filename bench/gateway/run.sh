#!/usr/bin/env bash
# The latency the gateway adds over calling its upstream directly, on one machine:
# bulkhead-mock-upstream (model "fast") as the upstream, `bulkhead serve` in front
# of it, bulkhead-loadgen (open-loop, constant rate) driving both. See README.md.
#
#   bench/gateway/run.sh                 # full run, ~10-20 min
#   QUICK=1 bench/gateway/run.sh         # smoke test: 5 s runs, 1,000 chunks
#
# Environment:
#   DURATION=20s   measured phase of each run      WARMUP=3s  warmup before it
#   RATES="500 2000"                               rates of the side-by-side runs
#   ROUNDS=1       side-by-side rounds per rate (each round: direct, plain, rag)
#   SWEEP_RATES="500 1000 1500 2000 2500 3000 4000 5000 6000 8000"
#   SWEEP=0        skip the sweep                  SWEEP_TRIES=2  tries per failed step
#   CHUNKS=10000   RAG tenant size (chunks)
#   CONNECTIONS=64 loadgen keep-alive connections  OVERHEAD_P99_MAX_MS=5
#   SKIP_BUILD=1   use the release binaries already built
#   OUT=path       results file [bench/results/gateway-YYYY-MM-DD.txt]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if [ "${QUICK:-0}" = 1 ]; then
    DURATION="${DURATION:-5s}" WARMUP="${WARMUP:-1s}" CHUNKS="${CHUNKS:-1000}"
fi
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-3s}"
CHUNKS="${CHUNKS:-10000}"
RATES="${RATES:-500 2000}"
ROUNDS="${ROUNDS:-1}"
SWEEP="${SWEEP:-1}"
SWEEP_TRIES="${SWEEP_TRIES:-2}"
SWEEP_RATES="${SWEEP_RATES:-500 1000 1500 2000 2500 3000 4000 5000 6000 8000}"
CONNECTIONS="${CONNECTIONS:-64}"
OVERHEAD_P99_MAX_MS="${OVERHEAD_P99_MAX_MS:-5}"
OUT="${OUT:-$root/bench/results/gateway-$(date +%F).txt}"
# A known admin token (32 characters) so nothing has to read the data directory.
ADMIN_TOKEN="bench-admin-token-0123456789abcd"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
helper="$root/bench/gateway/bench.py"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p bulkhead -p bulkhead-mock-upstream -p bulkhead-loadgen
fi
for b in bulkhead bulkhead-mock-upstream bulkhead-loadgen; do
    [ -x "$bin/$b" ] || { echo "missing $bin/$b (build it, or unset SKIP_BUILD)" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-gateway-bench.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Dies with the tail of a log when a server has stopped.
alive() { # name pid log
    if ! kill -0 "$2" 2>/dev/null; then
        echo "$1 exited; last lines of its log:" >&2
        tail -n 20 "$3" >&2
        exit 1
    fi
}

# 1. The mock upstream; it prints `listening on http://ADDR/v1` once bound.
"$bin/bulkhead-mock-upstream" --listen 127.0.0.1:0 --no-record >"$work/mock.out" 2>"$work/mock.err" &
mock_pid=$!
pids+=("$mock_pid")
mock_base=""
for _ in $(seq 100); do
    mock_base="$(sed -n 's|^listening on \(http://[^ ]*/v1\)$|\1|p' "$work/mock.out")"
    [ -n "$mock_base" ] && break
    alive mock "$mock_pid" "$work/mock.err"
    sleep 0.1
done
[ -n "$mock_base" ] || { echo "the mock printed no address in 10 s" >&2; exit 1; }
echo "mock upstream: $mock_base"

# 2. The gateway, in a fresh data directory, on a free port.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
gateway="http://127.0.0.1:$port"
BULKHEAD_ADMIN_TOKEN="$ADMIN_TOKEN" RUST_LOG=warn "$bin/bulkhead" serve \
    --data-dir "$work/data" --listen "127.0.0.1:$port" \
    --upstream-url "$mock_base" --upstream-models fast >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
ready=0
for _ in $(seq 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$gateway/readyz")" = 200 ]; then
        ready=1
        break
    fi
    alive gateway "$gateway_pid" "$work/gateway.log"
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "the gateway was not ready in 30 s" >&2; tail -n 20 "$work/gateway.log" >&2; exit 1; }
echo "gateway: $gateway"

# 2b. A second gateway with trace_commit = background: the same work, but the
# trace and its audit entry are committed just after the answer leaves instead of
# before. Measured beside the durable one to show what the fsync on the answer's
# path costs.
port_bg="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
gateway_bg="http://127.0.0.1:$port_bg"
BULKHEAD_ADMIN_TOKEN="$ADMIN_TOKEN" RUST_LOG=error "$bin/bulkhead" serve \
    --data-dir "$work/data-bg" --listen "127.0.0.1:$port_bg" --trace-commit background \
    --upstream-url "$mock_base" --upstream-models fast >"$work/gateway-bg.log" 2>&1 &
gateway_bg_pid=$!
pids+=("$gateway_bg_pid")
ready=0
for _ in $(seq 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$gateway_bg/readyz")" = 200 ]; then
        ready=1
        break
    fi
    alive gateway-bg "$gateway_bg_pid" "$work/gateway-bg.log"
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "the background-commit gateway was not ready in 30 s" >&2; exit 1; }
echo "gateway (trace_commit = background): $gateway_bg"

# 3. Tenants, keys and the RAG tenant's corpus.
echo "setting up tenants; ingesting ~$CHUNKS chunks into bench-rag"
# Writes setup.json (keys, corpus size) and the request bodies chat.json, rag.json.
python3 "$helper" setup "$gateway" "$ADMIN_TOKEN" "$CHUNKS" "$work"
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/setup.json" "$1"; }
plain_key="$(field plain_key)"
rag_key="$(field rag_key)"
rag_docs="$(field docs)"
rag_chunks="$(field chunks)"
mkdir -p "$work/bg"
python3 "$helper" setup "$gateway_bg" "$ADMIN_TOKEN" "$CHUNKS" "$work/bg"
field_bg() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/bg/setup.json" "$1"; }
plain_bg_key="$(field_bg plain_key)"
rag_bg_key="$(field_bg rag_key)"

# One request of each kind before any load, so a broken path fails here, loudly.
probe() { # name url body [key]
    local auth=()
    [ -n "${4:-}" ] && auth=(-H "Authorization: Bearer $4")
    local code
    code="$(curl -s -o "$work/probe.out" -w '%{http_code}' -X POST "$2" \
        -H 'Content-Type: application/json' "${auth[@]}" --data-binary "@$3")"
    if [ "$code" != 200 ]; then
        echo "$1: POST $2 answered $code: $(head -c 500 "$work/probe.out")" >&2
        exit 1
    fi
}
probe direct "$mock_base/chat/completions" "$work/chat.json"
probe plain "$gateway/v1/chat/completions" "$work/chat.json" "$plain_key"
probe rag "$gateway/v1/chat/completions" "$work/rag.json" "$rag_key"
probe plain-bg "$gateway_bg/v1/chat/completions" "$work/bg/chat.json" "$plain_bg_key"
probe rag-bg "$gateway_bg/v1/chat/completions" "$work/bg/rag.json" "$rag_bg_key"

runs="$work/runs.jsonl"
: >"$runs"
# Runs one scenario at one rate and leaves its report in $work/last.json.
scenario() { # name rate
    local name=$1 rate=$2 args
    case "$name" in
        direct) args=(--url "$mock_base/chat/completions" --body-file "$work/chat.json") ;;
        plain) args=(--url "$gateway/v1/chat/completions" --body-file "$work/chat.json"
            --header "Authorization: Bearer $plain_key" --header-metric x-bulkhead-overhead-ms) ;;
        rag) args=(--url "$gateway/v1/chat/completions" --body-file "$work/rag.json"
            --header "Authorization: Bearer $rag_key" --header-metric x-bulkhead-overhead-ms) ;;
        plain-bg) args=(--url "$gateway_bg/v1/chat/completions" --body-file "$work/bg/chat.json"
            --header "Authorization: Bearer $plain_bg_key" --header-metric x-bulkhead-overhead-ms) ;;
        rag-bg) args=(--url "$gateway_bg/v1/chat/completions" --body-file "$work/bg/rag.json"
            --header "Authorization: Bearer $rag_bg_key" --header-metric x-bulkhead-overhead-ms) ;;
    esac
    alive mock "$mock_pid" "$work/mock.err"
    alive gateway "$gateway_pid" "$work/gateway.log"
    alive gateway-bg "$gateway_bg_pid" "$work/gateway-bg.log"
    if ! "$bin/bulkhead-loadgen" "${args[@]}" --rate "$rate" --duration "$DURATION" \
        --warmup "$WARMUP" --connections "$CONNECTIONS" --json >"$work/last.json" 2>"$work/last.err"; then
        cat "$work/last.err" >&2
        exit 1
    fi
    python3 "$helper" summary "$work/last.json" "$name"
}

# 4. Side by side: at each rate, direct, plain and rag in turn, so that whatever
# else the machine does hits all three alike.
echo "side by side: rates $RATES, $ROUNDS round(s), $DURATION each after $WARMUP warmup"
for rate in $RATES; do
    for round in $(seq "$ROUNDS"); do
        for name in direct plain rag plain-bg rag-bg; do
            scenario "$name" "$rate"
            python3 "$helper" record "$runs" "$work/last.json" compare "$round" "$name" "$rate"
        done
    done
done

# 5. The sweep: raise the rate until a scenario's p99 overhead passes the bar or
# errors appear; a scenario that failed is not run at higher rates. A failed step
# is tried again (SWEEP_TRIES in all) after a fresh direct run, so that one stall
# of a shared machine does not end the sweep; the table shows every try.
if [ "$SWEEP" = 1 ]; then
    echo "sweep: rates $SWEEP_RATES, until p99 overhead > $OVERHEAD_P99_MAX_MS ms or errors"
    # Each direct run opens a round at $rate; a gateway run is compared with the
    # direct run of its round, the one just before it.
    baseline() {
        round=$((round + 1))
        scenario direct "$rate"
        python3 "$helper" record "$runs" "$work/last.json" sweep "$round" direct "$rate"
        cp "$work/last.json" "$work/direct.json"
    }
    active=(plain rag plain-bg rag-bg)
    for rate in $SWEEP_RATES; do
        [ "${#active[@]}" -gt 0 ] || break
        round=0
        baseline
        still=()
        for name in "${active[@]}"; do
            for try in $(seq "$SWEEP_TRIES"); do
                if [ "$try" -gt 1 ]; then
                    echo "    trying $name at $rate/s again, after a fresh direct run"
                    baseline
                fi
                scenario "$name" "$rate"
                verdict="$(python3 "$helper" verdict "$work/last.json" "$work/direct.json" "$OVERHEAD_P99_MAX_MS")"
                python3 "$helper" record "$runs" "$work/last.json" sweep "$round" "$name" "$rate" "$verdict"
                echo "    -> $verdict"
                [ "$verdict" != pass ] || break
            done
            if [ "$verdict" = pass ]; then
                still+=("$name")
            fi
        done
        active=("${still[@]+"${still[@]}"}")
    done
fi

# 6. The table, with the machine it ran on.
mkdir -p "$(dirname "$OUT")"
{
    echo "# bulkhead gateway overhead, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r)"
    echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
    echo "# runs: $DURATION after $WARMUP warmup, $CONNECTIONS connections, loadgen on 1 thread; all processes share the machine"
    echo "# upstream: bulkhead-mock-upstream model fast; rag tenant: $rag_docs documents, $rag_chunks chunks, top_k 5"
    echo "# scenarios: direct = mock alone; plain = gateway, no retrieval; rag = gateway + retrieval + output guard"
    echo "#   (both with trace_commit = durable: trace and audit entry fsynced before the answer leaves);"
    echo "#   plain-bg, rag-bg = the same on a gateway with trace_commit = background"
    python3 "$helper" table "$runs" "$OVERHEAD_P99_MAX_MS"
} | tee "$OUT"
echo "written to $OUT"
