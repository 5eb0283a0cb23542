"""Drives a running Bulkhead gateway with the official OpenAI Python SDK.

Run by `crates/bulkhead/tests/it/openai_sdk.rs`, which starts the server with the
built-in echo models, creates two tenants and a session, and passes:

    BULKHEAD_SDK_BASE_URL    the OpenAI-compatible base URL, ending in /v1
    BULKHEAD_SDK_KEY_A       tenant A's API key
    BULKHEAD_SDK_KEY_B       tenant B's API key
    BULKHEAD_SDK_SESSION_ID  a session of tenant A
    BULKHEAD_SDK_SECRET_A    a distinctive string in tenant A's only document

Every check runs, in order, even after one fails, so that one run shows every
incompatibility; the script prints one line per check and exits 0 only when all
pass. The checks run one after another on purpose: `bulkhead-echo-leaky`
remembers the previous caller's prompt globally, so nothing may call it between
tenant A's call and tenant B's.

To see the SDK's HTTP traffic, run with OPENAI_LOG=debug.
"""

import os
import sys
import traceback

import openai
from openai import OpenAI

ECHO = "bulkhead-echo"
LEAKY = "bulkhead-echo-leaky"
TIMEOUT_SECS = 30
FINAL_LINE = "ALL OPENAI SDK CHECKS PASSED"

BASE_URL = os.environ["BULKHEAD_SDK_BASE_URL"]
KEY_A = os.environ["BULKHEAD_SDK_KEY_A"]
KEY_B = os.environ["BULKHEAD_SDK_KEY_B"]
SESSION_ID = os.environ["BULKHEAD_SDK_SESSION_ID"]
SECRET_A = os.environ["BULKHEAD_SDK_SECRET_A"]

# A question that retrieves tenant A's document.
QUESTION_A = "What is the vault code for Project Bluefin?"
RETRIEVE = {"bulkhead": {"retrieve": {"top_k": 3}}}


def client(api_key):
    # No retries: a retried request would hide a failure and, for the leaky
    # model, change what it remembers.
    return OpenAI(base_url=BASE_URL, api_key=api_key, max_retries=0, timeout=TIMEOUT_SECS)


A = client(KEY_A)
B = client(KEY_B)


def user(text):
    return [{"role": "user", "content": text}]


def bulkhead_of(obj, what):
    """The `bulkhead` extension the SDK keeps among a model's unknown fields."""
    extra = obj.model_extra or {}
    assert "bulkhead" in extra, f"{what}: no `bulkhead` member in model_extra {extra!r}"
    return extra["bulkhead"]


def collect_stream(stream, what):
    """Joined delta text, every chunk, and the last chunk that has a finish_reason."""
    chunks = list(stream)
    assert chunks, f"{what}: the stream had no chunks"
    text = "".join(
        choice.delta.content or "" for chunk in chunks for choice in chunk.choices
    )
    finished = [c for c in chunks if any(ch.finish_reason for ch in c.choices)]
    assert finished, f"{what}: no chunk had a finish_reason: {chunks!r}"
    return text, chunks, finished[-1]


def check_models_list():
    ids = [m.id for m in A.models.list()]
    assert ECHO in ids, f"{ECHO} missing from models.list(): {ids}"
    assert LEAKY in ids, f"{LEAKY} missing from models.list(): {ids}"


# Filled by the non-streamed check, compared with by the streamed one.
whole = {}


def check_chat_non_streamed():
    resp = A.chat.completions.create(
        model=ECHO, messages=user(QUESTION_A), extra_body=RETRIEVE
    )
    content = resp.choices[0].message.content
    assert content and SECRET_A in content, f"A's secret not in A's own answer: {content!r}"
    assert resp.choices[0].finish_reason == "stop", f"finish_reason {resp.choices[0].finish_reason!r}"
    ext = bulkhead_of(resp, "chat completion")
    trace_id = ext.get("trace_id")
    assert isinstance(trace_id, str) and trace_id.startswith("tr_"), f"trace_id {trace_id!r}"
    assert ext.get("blocked") is False, f"A's own answer was blocked: {ext!r}"
    whole["content"] = content

    raw = A.chat.completions.with_raw_response.create(
        model=ECHO, messages=user(QUESTION_A), extra_body=RETRIEVE
    )
    parsed = raw.parse()
    header = raw.headers.get("x-bulkhead-trace-id")
    body_trace = bulkhead_of(parsed, "raw chat completion").get("trace_id")
    assert header, f"no x-bulkhead-trace-id header: {dict(raw.headers)!r}"
    assert header == body_trace, f"header {header!r} != body trace_id {body_trace!r}"
    assert parsed.choices[0].message.content == content, "the same request answered differently"


def check_chat_streamed():
    assert "content" in whole, "needs the non-streamed check's answer, which failed"
    raw = A.chat.completions.with_raw_response.create(
        model=ECHO,
        messages=user(QUESTION_A),
        stream=True,
        stream_options={"include_usage": True},
        extra_body=RETRIEVE,
    )
    text, chunks, last_finished = collect_stream(raw.parse(), "A streamed")
    assert text == whole["content"], (
        f"streamed text differs from the whole answer:\n{text!r}\nvs\n{whole['content']!r}"
    )
    assert any(
        ch.finish_reason == "stop" for c in chunks for ch in c.choices
    ), "no chunk has finish_reason 'stop'"
    usage = chunks[-1].usage
    assert usage is not None and usage.total_tokens > 0, f"final chunk usage {usage!r}"
    assert chunks[-1].choices == [], f"the usage chunk has choices {chunks[-1].choices!r}"
    ext = bulkhead_of(last_finished, "finishing chunk")
    trace_id = ext.get("trace_id")
    assert isinstance(trace_id, str) and trace_id.startswith("tr_"), f"stream trace_id {trace_id!r}"
    header = raw.headers.get("x-bulkhead-trace-id")
    assert header == trace_id, f"stream header {header!r} != final chunk trace_id {trace_id!r}"


def check_session():
    first = "Remember this: my favourite marmot is called Quillon."
    session = {"bulkhead": {"session_id": SESSION_ID}}
    resp = A.chat.completions.create(model=ECHO, messages=user(first), extra_body=session)
    assert resp.choices[0].finish_reason == "stop", f"first turn {resp!r}"
    resp = A.chat.completions.create(
        model=ECHO, messages=user("What is my marmot called?"), extra_body=session
    )
    content = resp.choices[0].message.content or ""
    assert first in content, f"the session did not carry the first question: {content!r}"


def check_embeddings():
    resp = A.embeddings.create(model=ECHO, input=["a", "b"])
    assert len(resp.data) == 2, f"{len(resp.data)} embeddings for 2 inputs"
    lengths = [len(d.embedding) for d in resp.data]
    assert lengths == [64, 64], f"embedding lengths {lengths}, expected the default 64 each"
    assert [d.index for d in resp.data] == [0, 1], f"indexes {[d.index for d in resp.data]}"
    assert resp.data[0].embedding != resp.data[1].embedding, "different inputs, same vector"


def prime_leaky_model_with_a():
    """A asks the shared leaky model with retrieval: A's secret and canary are now
    in its memory, and the next caller gets them."""
    resp = A.chat.completions.create(model=LEAKY, messages=user(QUESTION_A), extra_body=RETRIEVE)
    content = resp.choices[0].message.content or ""
    assert SECRET_A in content, f"A's secret not in A's own leaky answer: {content!r}"


def check_leak_blocked_non_streamed():
    prime_leaky_model_with_a()
    resp = B.chat.completions.create(model=LEAKY, messages=user("Hello, anything new?"))
    content = resp.choices[0].message.content or ""
    assert SECRET_A not in content, f"A's secret reached B: {content!r}"
    assert resp.choices[0].finish_reason == "content_filter", (
        f"finish_reason {resp.choices[0].finish_reason!r}, content {content!r}"
    )
    ext = bulkhead_of(resp, "B's blocked completion")
    assert ext.get("blocked") is True, f"bulkhead.blocked is {ext.get('blocked')!r}"


def check_leak_blocked_streamed():
    # B's previous call replaced the leaky model's memory: prime it again.
    prime_leaky_model_with_a()
    stream = B.chat.completions.create(
        model=LEAKY, messages=user("Hello, anything new?"), stream=True
    )
    text, chunks, last_finished = collect_stream(stream, "B streamed")
    assert SECRET_A not in text, f"A's secret reached B's stream: {text!r}"
    everything = "".join(c.model_dump_json() for c in chunks)
    assert SECRET_A not in everything, "A's secret is somewhere in B's chunks"
    reason = last_finished.choices[0].finish_reason
    assert reason == "content_filter", f"finish_reason {reason!r}, text {text!r}"
    ext = bulkhead_of(last_finished, "B's finishing chunk")
    assert ext.get("blocked") is True, f"bulkhead.blocked is {ext.get('blocked')!r}"


def check_unknown_model():
    try:
        A.chat.completions.create(model="no-such-model", messages=user("hi"))
    except openai.NotFoundError as e:
        said = f"{e} {e.message}"
        assert "does not exist" in said, f"NotFoundError says {said!r}"
        assert e.status_code == 404, f"status {e.status_code}"
    else:
        raise AssertionError("an unknown model did not raise NotFoundError")


def check_logprobs_refused():
    try:
        A.chat.completions.create(model=ECHO, messages=user("hi"), logprobs=True)
    except openai.BadRequestError as e:
        assert "logprobs" in str(e), f"BadRequestError does not name logprobs: {e}"
    else:
        raise AssertionError("logprobs=True did not raise BadRequestError")


def check_bad_key():
    try:
        client("bk_this-key-does-not-exist").models.list()
    except openai.AuthenticationError as e:
        assert e.status_code == 401, f"status {e.status_code}"
    else:
        raise AssertionError("a bad key did not raise AuthenticationError")


CHECKS = [
    ("models.list shows the echo models", check_models_list),
    ("chat completion: retrieval, bulkhead.trace_id, trace header", check_chat_non_streamed),
    ("streamed chat: same text, finish_reason stop, usage", check_chat_streamed),
    ("session memory via extra_body", check_session),
    ("embeddings: 2 vectors of 64", check_embeddings),
    ("leaky model to another tenant, whole: content_filter", check_leak_blocked_non_streamed),
    ("leaky model to another tenant, streamed: content_filter", check_leak_blocked_streamed),
    ("unknown model: NotFoundError", check_unknown_model),
    ("logprobs: BadRequestError", check_logprobs_refused),
    ("bad key: AuthenticationError", check_bad_key),
]


def describe_http(error):
    """The raw response behind an SDK error, for the report."""
    response = getattr(error, "response", None)
    if response is None:
        return ""
    try:
        body = response.text
    except Exception as read_error:  # a streamed body may be closed already
        body = f"<unreadable: {read_error}>"
    return (
        f"    HTTP {response.status_code} {response.request.method} {response.request.url}\n"
        f"    headers: {dict(response.headers)!r}\n"
        f"    body: {body[:2000]!r}\n"
    )


def main():
    print(f"openai {openai.__version__} against {BASE_URL}", flush=True)
    failed = []
    for name, check in CHECKS:
        try:
            check()
        except Exception as error:
            failed.append(name)
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            sys.stdout.write(describe_http(error))
            traceback.print_exc()
        else:
            print(f"ok   {name}", flush=True)
    if failed:
        print(f"{len(failed)} of {len(CHECKS)} OpenAI SDK checks failed: {failed}")
        return 1
    print(FINAL_LINE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
