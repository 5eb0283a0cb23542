#!/usr/bin/env python3
"""Ingest and search throughput: SQLite vs PostgreSQL, one vs three replicas, in one run.

Starts `bulkhead serve` processes (the binary named by BIN) for each setup in turn:
  sqlite x1      one server, its embedded SQLite file
  postgres x1    one server on a fresh PostgreSQL database
  postgres x3    three servers on one fresh PostgreSQL database (shared data dir:
                 same master key and signing key), requests spread round-robin
Each setup: TENANTS tenants with one key, then DOCS documents of ~1 KiB posted by
CONCURRENCY client threads (tenants round-robin), then SEARCHES searches the same
way. Prints documents/s and searches/s. A measurement, not a test: it stops on any
answer other than the expected status, because throughput of failures means
nothing. Client and servers share this machine's CPUs.
"""
import json, os, re, shutil, subprocess, sys, tempfile, threading, time, urllib.request

BIN = os.environ["BIN"]
PG_URL = os.environ["PG_URL"]
TENANTS = int(os.environ.get("TENANTS", "10"))
DOCS = int(os.environ.get("DOCS", "2000"))
SEARCHES = int(os.environ.get("SEARCHES", "2000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "16"))
ADMIN = "bench-admin-token-0123456789abcd"
WORDS = "harbor lantern copper meadow signal orbit falcon ledger quartz willow ember canyon".split()


def request(method, url, token, body=None, expect=200):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        if resp.status != expect:
            raise SystemExit(f"{method} {url}: {resp.status}")
        return json.loads(resp.read() or b"null")


def start(data_dir, store):
    env = dict(os.environ, BULKHEAD_DATA_DIR=data_dir, BULKHEAD_LISTEN="127.0.0.1:0",
               BULKHEAD_ADMIN_TOKEN=ADMIN, BULKHEAD_STORE=store, RUST_LOG="warn,bulkhead=info", NO_COLOR="1")
    proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    for line in proc.stdout:
        m = re.search(r"listening on (http://[0-9.:]+)", line)
        if m:
            def drain():
                for rest in proc.stdout:
                    if "ERROR" in rest:
                        sys.stderr.write(rest)
            threading.Thread(target=drain, daemon=True).start()
            return proc, m.group(1)
        if time.time() > deadline:
            break
    raise SystemExit(f"server did not start: {proc.poll()}")


def fresh_db(name):
    admin = PG_URL
    subprocess.run(["psql", admin, "-qXc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)
    subprocess.run(["psql", admin, "-qXc", f"CREATE DATABASE {name}"], check=True)
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def run_parallel(n, work):
    counter = iter(range(n))
    lock = threading.Lock()
    errors = []

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                work(i)
            except Exception as e:  # noqa: BLE001 - reported below, run stops
                errors.append(e)
                return

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"run failed: {errors[0]}")
    return n / elapsed


def setup(name, store_of, replicas):
    data = tempfile.mkdtemp(prefix="bulkhead-store-bench-")
    store = store_of(data)
    servers = [start(data, store)]
    servers += [start(data, store) for _ in range(replicas - 1)]
    urls = [u for _, u in servers]
    try:
        keys = []
        for t in range(TENANTS):
            tid = request("POST", f"{urls[0]}/admin/v1/tenants", ADMIN, {"name": f"t{t}"}, 201)["id"]
            keys.append(request("POST", f"{urls[0]}/admin/v1/tenants/{tid}/keys", ADMIN, {}, 201)["key"])

        def ingest(i):
            text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(150)) + f" doc{i}"
            request("POST", f"{urls[i % len(urls)]}/v1/documents", keys[i % TENANTS], {"text": text}, 201)

        def search(i):
            q = f"{WORDS[i % len(WORDS)]} {WORDS[(i * 5) % len(WORDS)]}"
            request("POST", f"{urls[i % len(urls)]}/v1/search", keys[(i // len(urls)) % TENANTS], {"query": q, "top_k": 5})

        docs_per_s = run_parallel(DOCS, ingest)
        searches_per_s = run_parallel(SEARCHES, search)
        return docs_per_s, searches_per_s
    finally:
        for proc, _ in servers:
            proc.terminate()
        for proc, _ in servers:
            proc.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main():
    print(f"bench/store/bench.py  TENANTS={TENANTS} DOCS={DOCS} SEARCHES={SEARCHES} CONCURRENCY={CONCURRENCY}")
    print(f"binary: {BIN}")
    print(f"{'setup':<14} {'ingest docs/s':>14} {'search q/s':>12}")
    rows = [
        ("sqlite x1", lambda d: os.path.join(d, "bulkhead.db"), 1),
        ("postgres x1", lambda d: fresh_db("bh_bench_1"), 1),
        ("postgres x3", lambda d: fresh_db("bh_bench_3"), 3),
    ]
    for name, store_of, replicas in rows:
        docs, searches = setup(name, store_of, replicas)
        print(f"{name:<14} {docs:>14.0f} {searches:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
