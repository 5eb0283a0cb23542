"""Microsoft Presidio's pattern recognizers on the guard's evaluation set.

Scores the entities both tools cover (email, phone, US SSN, payment card, IBAN,
IP address) with the same rule as crates/bulkhead-guard/tests/it/eval.rs: a result
matches an expected entity of the same type whose span it overlaps; unmatched
results are false positives, unmatched entities false negatives. Reports at
Presidio's default threshold (every result, score > 0) and at score >= 0.5, then
single-thread throughput on the same 1 KB and 64 KB inputs as the Rust bench.

Usage: presidio_eval.py TESTDATA_DIR
"""

import json
import os
import sys
import time

import tldextract

# EmailRecognizer validates domains with tldextract, which would fetch the
# public-suffix list over the network; use the snapshot shipped in the package.
tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

from presidio_analyzer.predefined_recognizers import (  # noqa: E402
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

ENTITY = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "ssn",
    "CREDIT_CARD": "card",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip",
}
DETECTORS = ["card", "email", "iban", "ip", "phone", "ssn"]


def recognizers():
    return [
        EmailRecognizer(),
        PhoneRecognizer(),
        UsSsnRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
    ]


def analyze(recs, text):
    out = []
    for r in recs:
        for res in r.analyze(text, r.supported_entities, None):
            det = ENTITY.get(res.entity_type)
            if det:
                out.append((det, res.start, res.end, res.score))
    return out


def main():
    data = sys.argv[1]
    recs = recognizers()
    cases = []
    with open(os.path.join(data, "eval.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            if d["kind"] == "case":
                cases.append(d)
    results = [analyze(recs, c["text"]) for c in cases]

    from importlib.metadata import version

    print(f"presidio-analyzer {version('presidio-analyzer')}, python {sys.version.split()[0]}")
    for threshold in (0.0, 0.5):
        counts = {d: [0, 0, 0] for d in DETECTORS}  # tp, fp, fn
        for case, found in zip(cases, results):
            expect = [e for e in case["expect"] if e["detector"] in counts]
            used = [False] * len(expect)
            for det, s, e, score in found:
                if score < threshold or (threshold == 0.0 and score <= 0):
                    continue
                hit = None
                for i, x in enumerate(expect):
                    if not used[i] and x["detector"] == det and x["start"] < e and s < x["end"]:
                        hit = i
                        break
                if hit is not None:
                    used[hit] = True
                    counts[det][0] += 1
                elif any(
                    used[i] and x["detector"] == det and x["start"] < e and s < x["end"]
                    for i, x in enumerate(expect)
                ):
                    pass  # a second result on an entity already matched
                else:
                    counts[det][1] += 1
            for i, x in enumerate(expect):
                if not used[i]:
                    counts[x["detector"]][2] += 1
        label = "every result (default)" if threshold == 0.0 else f"score >= {threshold}"
        print(f"\nPresidio pattern recognizers, {label}")
        print(f"{'detector':<10} {'TP':>5} {'FP':>5} {'FN':>5} {'precision':>10} {'recall':>8}")
        for d in DETECTORS:
            tp, fp, fn = counts[d]
            p = tp / (tp + fp) if tp + fp else 1.0
            r = tp / (tp + fn) if tp + fn else 1.0
            print(f"{d:<10} {tp:>5} {fp:>5} {fn:>5} {p:>10.3f} {r:>8.3f}")

    print(f"\n{'throughput (one thread, 6 recognizers)':<44} {'size':>8} {'MB/s':>8}")
    for name in ("bench_1k.txt", "bench_64k.txt"):
        with open(os.path.join(data, name)) as f:
            text = f.read()
        analyze(recs, text)  # warm-up
        rates = []
        for _ in range(5):
            n = 0
            start = time.process_time()
            while time.process_time() - start < 1.0:
                analyze(recs, text)
                n += 1
            rates.append(len(text.encode()) * n / (time.process_time() - start) / 1e6)
        rates.sort()
        print(f"{'presidio ' + name:<44} {len(text.encode()):>7}B {rates[2]:>8.3f}")


if __name__ == "__main__":
    main()
