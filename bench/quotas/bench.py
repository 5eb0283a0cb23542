#!/usr/bin/env python3
"""Fair sharing under a noisy neighbour (issue 17): a quiet tenant's latency with
and without a tenant bursting on 64 connections, whether the noisy tenant's
budgets are overspent, and the server's memory with one tenant at its storage
quota (at start and at steady state).

    bench/quotas/run.sh                  # builds release binaries, ~3 minutes
    SKIP_BUILD=1 DURATION=10 bench/quotas/run.sh

Everything runs on loopback, started and stopped here: bulkhead-mock-upstream
(model `fast`, answering after LATENCY_MS), `bulkhead serve` in a fresh data
directory, and two bulkhead-loadgen processes (open loop, constant rate, latency
from the scheduled send time, so stalls are not hidden).

Rounds alternate "quiet alone" and "quiet beside noisy" so that drift of the
machine falls on both alike; the ratio of the quiet tenant's p99 is per round and
the median of rounds is reported.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ADMIN = "bench-admin-token-0123456789abcd"

DURATION = int(os.environ.get("DURATION", "15"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
QUIET_RATE = int(os.environ.get("QUIET_RATE", "50"))
NOISY_RATE = int(os.environ.get("NOISY_RATE", "2000"))
LATENCY_MS = int(os.environ.get("LATENCY_MS", "20"))
# The noisy tenant's quotas: these are what the burst runs into.
NOISY_QUOTAS = {
    "concurrent_requests": 8,
    "requests_per_second": 400,
    "tokens_per_day": 150_000,
    "stored_bytes": int(os.environ.get("STORED_BYTES", str(32 << 20))),
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(method, url, token, body=None, expect=(200,)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    if status not in expect:
        raise SystemExit(f"{method} {url} answered {status}: {raw[:300]!r}")
    return status, (json.loads(raw) if raw else None)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Stack:
    def __init__(self, bindir, work):
        self.bindir, self.work = bindir, work
        self.procs = []
        mock_out = open(os.path.join(work, "mock.out"), "w+")
        self.mock = subprocess.Popen(
            [f"{bindir}/bulkhead-mock-upstream", "--listen", "127.0.0.1:0", "--no-record",
             "--latency-ms", str(LATENCY_MS)],
            stdout=mock_out, stderr=subprocess.DEVNULL)
        self.procs.append(self.mock)
        for _ in range(100):
            mock_out.seek(0)
            m = re.search(r"listening on (http://\S+/v1)", mock_out.read())
            if m:
                self.mock_base = m.group(1)
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the mock printed no address")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start_server()

    def start_server(self):
        env = dict(os.environ, BULKHEAD_ADMIN_TOKEN=ADMIN, RUST_LOG="warn")
        log = open(os.path.join(self.work, "serve.log"), "a")
        self.server = subprocess.Popen(
            [f"{self.bindir}/bulkhead", "serve", "--data-dir", os.path.join(self.work, "data"),
             "--listen", f"127.0.0.1:{self.port}", "--upstream-url", self.mock_base,
             "--upstream-models", "fast", "--trace-commit", "background"],
            env=env, stdout=log, stderr=log)
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.server.poll() is not None:
                raise SystemExit("bulkhead serve exited; see serve.log")
            time.sleep(0.1)
        raise SystemExit("bulkhead serve was not ready in 60 s")

    def restart_server(self):
        self.server.terminate()
        self.server.wait(timeout=60)
        self.start_server()

    def close(self):
        for p in [self.server, *self.procs]:
            p.terminate()
        for p in [self.server, *self.procs]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def tenant(stack, name):
    _, t = call("POST", f"{stack.base}/admin/v1/tenants", ADMIN, {"name": name}, expect=(201,))
    _, k = call("POST", f"{stack.base}/admin/v1/tenants/{t['id']}/keys", ADMIN, expect=(201,))
    return t["id"], k["key"]


def fill_to_quota(stack, key):
    """Stores 48 KiB documents until the storage quota refuses one."""
    text = ("The quarterly review of the northern warehouse found stock levels in line "
            "with forecasts, except for seasonal items. ") * 420
    stored = 0
    while True:
        status, body = call("POST", f"{stack.base}/v1/documents", key, {"text": text[:48_000]},
                            expect=(201, 429))
        if status == 429:
            assert body["type"] == "/problems/quota-exceeded", body
            return stored
        stored += 1


def loadgen(stack, key, rate, connections, out):
    body = os.path.join(stack.work, "chat.json")
    with open(body, "w") as f:
        json.dump({"model": "fast", "messages": [{"role": "user", "content": "Say ok."}]}, f)
    return subprocess.Popen(
        [f"{stack.bindir}/bulkhead-loadgen", "--url", f"{stack.base}/v1/chat/completions",
         "--rate", str(rate), "--duration", f"{DURATION}s", "--warmup", "2s",
         "--connections", str(connections), "--body-file", body,
         "--header", f"Authorization: Bearer {key}", "--json"],
        stdout=open(out, "w"), stderr=subprocess.DEVNULL)


def report(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main(bindir, out_path):
    work = tempfile.mkdtemp(prefix="bulkhead-quota-bench.")
    stack = Stack(bindir, work)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    try:
        machine = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.*)", machine)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        say(f"# quotas bench {time.strftime('%Y-%m-%d')} commit {commit}")
        say(f"# machine: {os.cpu_count()} cores, {model.group(1) if model else '?'}")
        say(f"# quiet {QUIET_RATE}/s on 4 connections; noisy {NOISY_RATE}/s on 64; "
            f"{DURATION} s each after 2 s warmup; upstream latency {LATENCY_MS} ms; {ROUNDS} rounds")
        say(f"# noisy tenant's quotas: {json.dumps(NOISY_QUOTAS)}")
        quiet_id, quiet_key = tenant(stack, "quiet")
        noisy_id, noisy_key = tenant(stack, "noisy")
        call("PUT", f"{stack.base}/admin/v1/tenants/{noisy_id}/quotas", ADMIN, NOISY_QUOTAS)
        rss_empty = rss_mib(stack.server.pid)
        docs = fill_to_quota(stack, noisy_key)
        _, u = call("GET", f"{stack.base}/admin/v1/tenants/{noisy_id}/usage", ADMIN)
        rss_full = rss_mib(stack.server.pid)
        say(f"noisy tenant filled to its storage quota: {docs} documents, "
            f"{u['stored_bytes']['used']} of {u['stored_bytes']['limit']} sealed bytes")
        stack.restart_server()
        rss_start = rss_mib(stack.server.pid)

        rows = []
        for rnd in range(1, ROUNDS + 1):
            alone_path = os.path.join(work, f"alone{rnd}.json")
            loadgen(stack, quiet_key, QUIET_RATE, 4, alone_path).wait()
            alone = report(alone_path)
            quiet_path = os.path.join(work, f"quiet{rnd}.json")
            noisy_path = os.path.join(work, f"noisy{rnd}.json")
            noisy = loadgen(stack, noisy_key, NOISY_RATE, 64, noisy_path)
            quiet = loadgen(stack, quiet_key, QUIET_RATE, 4, quiet_path)
            quiet.wait()
            noisy.wait()
            beside, burst = report(quiet_path), report(noisy_path)
            ratio = beside["latency_ms"]["p99"] / alone["latency_ms"]["p99"]
            rows.append((alone, beside, burst, ratio))
            say(f"round {rnd}: quiet alone p50 {alone['latency_ms']['p50']:.2f} ms p99 "
                f"{alone['latency_ms']['p99']:.2f} ms; beside noisy p50 "
                f"{beside['latency_ms']['p50']:.2f} ms p99 {beside['latency_ms']['p99']:.2f} ms "
                f"(x{ratio:.2f}); quiet non-2xx {beside['non_2xx']}; noisy ok {burst['ok']} "
                f"refused {burst['non_2xx']} errors {burst['errors']}")
        rss_steady = rss_mib(stack.server.pid)
        hwm = hwm_mib(stack.server.pid)
        _, u = call("GET", f"{stack.base}/admin/v1/tenants/{noisy_id}/usage", ADMIN)
        used, limit = u["tokens_today"]["used"], u["tokens_today"]["limit"]
        say(f"noisy tokens today: {used} of {limit} (overspend {max(0, used - limit)}); "
            f"reserved now {u['tokens_reserved']}; refused by quota: {json.dumps(u['refused'])}")
        say(f"noisy stored bytes: {u['stored_bytes']['used']} of {u['stored_bytes']['limit']} "
            f"(overspend {max(0, u['stored_bytes']['used'] - u['stored_bytes']['limit'])})")
        say(f"quiet p99 ratio, median of {ROUNDS} rounds: x{median([r[3] for r in rows]):.2f} "
            "(target: within x1.5)")
        say(f"server RSS: empty {rss_empty:.0f} MiB; noisy tenant at quota {rss_full:.0f} MiB; "
            f"restarted with it {rss_start:.0f} MiB; after the rounds {rss_steady:.0f} MiB "
            f"(peak {hwm:.0f} MiB)")
    finally:
        stack.close()
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results: {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
