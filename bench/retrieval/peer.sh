#!/usr/bin/env bash
# Runs the embedded peer (LanceDB, one table per tenant) over the corpus that
# `cargo bench -p bulkhead-index --bench search` exported. Creates its virtualenv
# under target/ on first use (idempotent; later runs reuse it).
#
# Usage: bench/retrieval/peer.sh EXPORT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/retrieval-peer-venv"
export_dir="${1:?usage: peer.sh EXPORT_DIR}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import lancedb, numpy, pyarrow' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet 'lancedb==0.*' numpy pyarrow
fi
"$venv/bin/python" -c 'import lancedb; print("peer: lancedb", lancedb.__version__)'
# Lance logs a warning for every table it creates; keep them out of the results.
"$venv/bin/python" "$here/peer.py" "$export_dir" 2>&1 | grep -v ' WARN  lance::'
