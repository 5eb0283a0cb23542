#!/usr/bin/env bash
# Presidio comparison for the output guard (issue 5): installs presidio-analyzer
# from PyPI into a venv under target/ (idempotent) and runs presidio_eval.py over
# the same labeled set and benchmark inputs as `cargo bench -p bulkhead-guard`.
#
# Offline by design: only Presidio's pattern recognizers run (called directly,
# no spaCy model is loaded or downloaded), and tldextract is pointed at its
# bundled public-suffix snapshot instead of fetching the list.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/guard-presidio/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import presidio_analyzer' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check presidio-analyzer
fi
exec "$venv/bin/python" "$root/bench/guard/presidio_eval.py" "$root/testdata/guard"
