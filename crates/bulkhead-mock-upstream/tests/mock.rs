//! The mock over real sockets, with reqwest as the client, as the gateway
//! will use it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bulkhead_mock_upstream::{EXTRAS_AUDIO_DATA, EXTRAS_MARKER, MODELS, MockOptions, MockUpstream};
use serde_json::{Value, json};

/// Generous: only ever a bound on something that should happen at once.
const EVENTUALLY: Duration = Duration::from_secs(5);

async fn start() -> MockUpstream {
    start_with(MockOptions::default()).await
}

async fn start_with(options: MockOptions) -> MockUpstream {
    MockUpstream::start(options)
        .await
        .expect("binding a loopback port")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building a client")
}

async fn chat(mock: &MockUpstream, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&body)
        .send()
        .await
        .expect("the mock answers")
}

fn request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": "Say hello, wörld 🦀." },
        ],
    })
}

const PROMPT: &str = "system: You are terse.\nuser: Say hello, wörld 🦀.\n";

/// Reads a body to its end, or to its first error.
async fn read_all(response: &mut reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8(bytes).expect("utf-8"), None),
            Err(err) => return (String::from_utf8_lossy(&bytes).into_owned(), Some(err)),
        }
    }
}

/// The `data:` payloads of an event stream, checking every event's framing.
fn events(text: &str) -> Vec<&str> {
    assert!(
        text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|event| event.strip_prefix("data: ").expect("a data event"))
        .collect()
}

fn chunk(data: &str) -> Value {
    serde_json::from_str(data).expect("a JSON chunk")
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENTUALLY;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn models_lists_every_model() {
    let mock = start().await;
    let response = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .expect("the mock answers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("a data array");
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert_eq!(ids, MODELS);
    assert_eq!(
        data[0],
        json!({"id": "echo", "object": "model", "created": 1_700_000_000, "owned_by": "bulkhead-mock"})
    );
}

#[tokio::test]
async fn echo_returns_the_whole_prompt() {
    let mock = start().await;
    let mut body = request("echo", false);
    // Array content joins its text parts and skips the rest.
    body["messages"]
        .as_array_mut()
        .expect("messages")
        .push(json!({
            "role": "user",
            "content": [
                { "type": "text", "text": "part one, " },
                { "type": "image_url", "image_url": { "url": "https://example.com/x.png" } },
                { "type": "text", "text": "part two" },
            ],
        }));
    let response = chat(&mock, body).await;
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.expect("a JSON body");
    let expected = format!("{PROMPT}user: part one, part two\n");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "echo");
    assert!(
        completion["id"]
            .as_str()
            .expect("id")
            .starts_with("chatcmpl-mock-")
    );
    assert!(completion["created"].as_u64().expect("created") > 1_700_000_000);
    assert_eq!(
        completion["choices"],
        json!([{
            "index": 0,
            "message": { "role": "assistant", "content": expected },
            "finish_reason": "stop",
        }])
    );
    let words = expected.split_whitespace().count();
    assert_eq!(
        completion["usage"],
        json!({ "prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words })
    );
}

#[tokio::test]
async fn echo_stream_reassembles_to_the_prompt() {
    let chunk_chars = 5;
    let mock = start_with(MockOptions {
        chunk_chars,
        ..MockOptions::default()
    })
    .await;
    let mut response = chat(&mock, request("echo", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an event stream"
    );
    let (text, error) = read_all(&mut response).await;
    assert!(error.is_none(), "the stream ends cleanly: {error:?}");
    let events = events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"));

    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|data| chunk(data))
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert_eq!(c["model"], "echo");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": "" })
    );
    let pieces: Vec<&str> = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content")
        })
        .collect();
    assert!(pieces.iter().all(|p| p.chars().count() <= chunk_chars));
    assert_eq!(pieces.concat(), PROMPT);
    let finish = chunks.last().expect("a finish chunk");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage unless asked"
    );
}

#[tokio::test]
async fn stream_include_usage_adds_a_usage_chunk_before_done() {
    let mock = start().await;
    let mut body = request("fast", true);
    body["stream_options"] = json!({ "include_usage": true });
    let mut response = chat(&mock, body).await;
    let (text, error) = read_all(&mut response).await;
    assert!(error.is_none(), "{error:?}");
    let events = events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"));
    let usage = chunk(events[events.len() - 2]);
    assert_eq!(usage["choices"], json!([]));
    let prompt_words = PROMPT.split_whitespace().count();
    assert_eq!(
        usage["usage"],
        json!({ "prompt_tokens": prompt_words, "completion_tokens": 1, "total_tokens": prompt_words + 1 })
    );
    let contents: String = events[..events.len() - 2]
        .iter()
        .filter_map(|data| {
            chunk(data)["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(contents, "ok");
}

#[tokio::test]
async fn leaky_returns_the_previous_callers_prompt() {
    let mock = start().await;
    let answer = |body: Value| {
        let mock = &mock;
        async move {
            let completion: Value = chat(mock, body).await.json().await.expect("JSON");
            completion["choices"][0]["message"]["content"]
                .as_str()
                .expect("content")
                .to_owned()
        }
    };
    let alice =
        json!({ "model": "leaky", "messages": [{ "role": "user", "content": "alice's secret" }] });
    let bob = json!({ "model": "leaky", "messages": [{ "role": "user", "content": "bob asks" }] });
    assert_eq!(answer(alice).await, "user: alice's secret\n");
    assert_eq!(answer(bob).await, "user: alice's secret\nuser: bob asks\n");
    // Other models neither read nor feed the shared memory.
    chat(&mock, request("echo", false)).await;
    let carol = json!({ "model": "leaky", "messages": [{ "role": "user", "content": "carol" }] });
    assert_eq!(answer(carol).await, "user: bob asks\nuser: carol\n");
}

#[tokio::test]
async fn leaky_shapes_share_the_leaky_memory() {
    let mock = start_with(MockOptions {
        chunk_chars: 5,
        ..MockOptions::default()
    })
    .await;
    let say = |model: &str, text: &str, stream: bool| {
        json!({ "model": model, "stream": stream, "n": 3,
                "messages": [{ "role": "user", "content": text }] })
    };
    // Alice's prompt goes into the memory through `leaky`…
    chat(&mock, say("leaky", "alice's secret plan", false)).await;
    // …and comes back to Bob split across choices.
    let completion: Value = chat(&mock, say("leaky-multi", "bob", false))
        .await
        .json()
        .await
        .expect("JSON");
    let choices = completion["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    let whole: String = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().expect("content"))
        .collect();
    assert_eq!(whole, "user: alice's secret plan\nuser: bob\n");
    // Bob's prompt comes back to Carol as tool calls, streamed.
    let chunks = stream_chunks(&mock, say("leaky-tools", "carol", true)).await;
    let mut arguments: Vec<String> = Vec::new();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("index") as usize;
            if index == arguments.len() {
                arguments.push(String::new());
            }
            arguments[index].push_str(call["function"]["arguments"].as_str().expect("piece"));
        }
    }
    let notes: String = arguments
        .iter()
        .map(|a| {
            let args: Value = serde_json::from_str(a).expect("JSON arguments");
            args["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(notes, "user: bob\nuser: carol\n");
    assert!(arguments.len() > 1, "several calls");
    // Carol's comes back to Dave as a refusal, and Dave's to the plain `leaky`.
    let completion: Value = chat(&mock, say("leaky-refusal", "dave", false))
        .await
        .json()
        .await
        .expect("JSON");
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["refusal"], "user: carol\nuser: dave\n");
    let completion: Value = chat(&mock, say("leaky", "erin", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "user: dave\nuser: erin\n"
    );
    // The plain shapes neither read nor feed the memory.
    let completion: Value = chat(&mock, say("refusal", "frank", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        completion["choices"][0]["message"]["refusal"],
        "user: frank\n"
    );
    let completion: Value = chat(&mock, say("leaky-refusal", "gina", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        completion["choices"][0]["message"]["refusal"],
        "user: erin\nuser: gina\n"
    );
}

/// The chunks of a finished stream, before its `[DONE]`.
async fn stream_chunks(mock: &MockUpstream, body: Value) -> Vec<Value> {
    let mut response = chat(mock, body).await;
    assert_eq!(response.status(), 200);
    let (text, error) = read_all(&mut response).await;
    assert!(error.is_none(), "{error:?}");
    let events = events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"));
    events[..events.len() - 1]
        .iter()
        .map(|d| chunk(d))
        .collect()
}

#[tokio::test]
async fn multi_answers_with_n_choices_that_together_are_the_echo() {
    let mock = start_with(MockOptions {
        chunk_chars: 3,
        ..MockOptions::default()
    })
    .await;
    for (n, expect) in [(None, 2), (Some(1), 2), (Some(3), 3)] {
        let mut body = request("multi", false);
        if let Some(n) = n {
            body["n"] = json!(n);
        }
        let completion: Value = chat(&mock, body.clone()).await.json().await.expect("JSON");
        let choices = completion["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), expect, "n={n:?}");
        let parts: Vec<&str> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                assert_eq!(c["index"], i);
                assert_eq!(c["finish_reason"], "stop");
                c["message"]["content"].as_str().expect("content")
            })
            .collect();
        assert_eq!(parts.concat(), PROMPT);

        // Streamed: each choice's pieces, in order under its index, are its
        // whole content; pieces of different choices take turns.
        body["stream"] = json!(true);
        let chunks = stream_chunks(&mock, body).await;
        let mut streamed = vec![String::new(); expect];
        let mut order = Vec::new();
        let mut finished = vec![false; expect];
        for c in &chunks {
            let choice = &c["choices"][0];
            let index = choice["index"].as_u64().expect("index") as usize;
            if let Some(piece) = choice["delta"]["content"].as_str() {
                assert!(!finished[index], "content after its finish");
                streamed[index].push_str(piece);
                if !piece.is_empty() {
                    order.push(index);
                }
            }
            if choice["finish_reason"] == "stop" {
                finished[index] = true;
            }
        }
        assert_eq!(streamed, parts);
        assert!(finished.iter().all(|f| *f));
        assert_eq!(
            &order[..expect],
            (0..expect).collect::<Vec<_>>(),
            "interleaved"
        );
    }
}

#[tokio::test]
async fn tools_answers_with_many_small_tool_calls() {
    let chunk_chars = 4;
    let mock = start_with(MockOptions {
        chunk_chars,
        ..MockOptions::default()
    })
    .await;
    let completion: Value = chat(&mock, request("tools", false))
        .await
        .json()
        .await
        .expect("JSON");
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .expect("tool calls");
    assert_eq!(calls.len(), PROMPT.chars().count().div_ceil(chunk_chars));
    let mut notes = String::new();
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call["id"], format!("call_mock_{i}"));
        let note = match i % 3 {
            0 => {
                let args: Value = serde_json::from_str(
                    call["function"]["arguments"]
                        .as_str()
                        .expect("string arguments"),
                )
                .expect("JSON arguments");
                args["text"].as_str().expect("text").to_owned()
            }
            1 => call["function"]["arguments"]["text"]
                .as_str()
                .expect("object arguments")
                .to_owned(),
            _ => {
                assert_eq!(call["type"], "custom");
                call["custom"]["input"].as_str().expect("input").to_owned()
            }
        };
        notes.push_str(&note);
    }
    assert_eq!(notes, PROMPT);

    let chunks = stream_chunks(&mock, request("tools", true)).await;
    let mut arguments: Vec<String> = Vec::new();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("index") as usize;
            if index == arguments.len() {
                assert_eq!(call["id"], format!("call_mock_{index}"));
                arguments.push(String::new());
            }
            arguments[index].push_str(call["function"]["arguments"].as_str().expect("piece"));
        }
    }
    let streamed: String = arguments
        .iter()
        .map(|a| {
            let args: Value = serde_json::from_str(a).expect("merged arguments are JSON");
            args["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(streamed, PROMPT);
    assert_eq!(
        chunks.last().expect("a finish")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn extras_carries_unknown_fields_and_audio() {
    let mock = start().await;
    let completion: Value = chat(&mock, request("extras", false))
        .await
        .json()
        .await
        .expect("JSON");
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["content"], PROMPT);
    assert_eq!(message["audio"]["transcript"], PROMPT);
    assert_eq!(message["audio"]["data"], EXTRAS_AUDIO_DATA);
    for field in [
        &message["extra_secret"],
        &completion["choices"][0]["provider_data"]["route"],
        &completion["provider_meta"]["note"],
        &completion["usage"]["provider_cost"]["note"],
    ] {
        assert!(
            field
                .as_str()
                .expect("a marked field")
                .contains(EXTRAS_MARKER)
        );
    }
    let chunks = stream_chunks(&mock, request("extras", true)).await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, PROMPT);
    assert!(
        chunks
            .iter()
            .all(|c| c["provider_meta"]["note"] == EXTRAS_MARKER)
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["delta"]["audio"]["data"] == EXTRAS_AUDIO_DATA)
    );
}

#[tokio::test]
async fn refusal_refuses_with_the_echo() {
    let mock = start().await;
    let completion: Value = chat(&mock, request("refusal", false))
        .await
        .json()
        .await
        .expect("JSON");
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["refusal"], PROMPT);
    let chunks = stream_chunks(&mock, request("refusal", true)).await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["refusal"].as_str())
        .collect();
    assert_eq!(text, PROMPT);
}

#[tokio::test]
async fn fault_500_answers_an_openai_server_error() {
    let mock = start().await;
    let response = chat(&mock, request("fault-500", false)).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(
        body,
        json!({"error": {"message": "mock upstream failure", "type": "server_error", "code": null}})
    );
}

#[tokio::test]
async fn unknown_model_bad_json_and_unknown_path_are_openai_errors() {
    let mock = start().await;
    let response = chat(&mock, request("gpt-4o", false)).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(
        body,
        json!({"error": {
            "message": "model `gpt-4o` does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }})
    );

    let response = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("the mock answers");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = client()
        .get(format!("{}/nowhere", mock.base_url()))
        .send()
        .await
        .expect("the mock answers");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn fault_malformed_does_not_parse() {
    let mock = start().await;
    let response = chat(&mock, request("fault-malformed", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.json::<Value>().await.is_err());

    let mut response = chat(&mock, request("fault-malformed", true)).await;
    assert_eq!(response.status(), 200);
    let (text, error) = read_all(&mut response).await;
    assert!(error.is_none(), "{error:?}");
    let events = events(&text);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(chunk(events[0])["choices"][0]["delta"]["role"], "assistant");
    assert!(serde_json::from_str::<Value>(events[1]).is_err());
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn fault_cut_plain_body_fails_to_read() {
    let mock = start().await;
    let response = chat(&mock, request("fault-cut", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1000");
    assert!(response.bytes().await.is_err(), "the body is incomplete");
}

#[tokio::test]
async fn fault_cut_stream_errors_without_done() {
    let mock = start().await;
    let mut response = chat(&mock, request("fault-cut", true)).await;
    assert_eq!(response.status(), 200);
    let (text, error) = read_all(&mut response).await;
    assert!(error.is_some(), "the stream ends with an error: {text:?}");
    assert!(!text.contains("[DONE]"), "{text:?}");
    let first = text.split("\n\n").next().expect("an event");
    let first = chunk(first.strip_prefix("data: ").expect("a data event"));
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
}

#[tokio::test]
async fn fault_drip_stream_is_released_when_the_client_hangs_up() {
    let mock = start_with(MockOptions {
        drip_interval: Duration::from_millis(20),
        ..MockOptions::default()
    })
    .await;
    let mut response = chat(&mock, request("fault-drip", true)).await;
    assert_eq!(response.status(), 200);
    let first = response
        .chunk()
        .await
        .expect("a first chunk")
        .expect("the stream is open");
    assert!(first.starts_with(b"data: "), "{first:?}");
    let mut text = String::from_utf8(first.to_vec()).expect("utf-8");
    while text.matches("\n\n").count() < 3 {
        let more = response.chunk().await.expect("more").expect("still open");
        text.push_str(std::str::from_utf8(&more).expect("utf-8"));
    }
    let events = events(
        text.split_inclusive("\n\n")
            .take(3)
            .collect::<String>()
            .as_str(),
    )
    .into_iter()
    .map(chunk)
    .collect::<Vec<_>>();
    assert_eq!(events[1]["choices"][0]["delta"]["content"], ".");
    assert_eq!(mock.in_flight(), 1);

    drop(response);
    eventually("the dripping response is dropped", || mock.in_flight() == 0).await;
}

#[tokio::test]
async fn fault_drip_plain_body_drips_json_and_is_released() {
    let mock = start_with(MockOptions {
        drip_interval: Duration::from_millis(20),
        ..MockOptions::default()
    })
    .await;
    let mut response = chat(&mock, request("fault-drip", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let first = response.chunk().await.expect("a byte").expect("open");
    assert_eq!(&first[..], b"{");
    assert_eq!(mock.in_flight(), 1);
    drop(response);
    eventually("the dripping response is dropped", || mock.in_flight() == 0).await;
}

#[tokio::test]
async fn fault_hang_is_released_when_the_client_times_out() {
    let mock = start().await;
    let url = format!("{}/chat/completions", mock.base_url());
    let pending = tokio::spawn(
        reqwest::Client::builder()
            // Long enough for the request to reach the handler first even on
            // a loaded machine, so the test sees it counted.
            .timeout(Duration::from_secs(1))
            .build()
            .expect("a client")
            .post(url)
            .json(&request("fault-hang", false))
            .send(),
    );
    eventually("the hanging request arrives", || mock.in_flight() == 1).await;
    let error = pending
        .await
        .expect("the request task")
        .expect_err("no answer ever comes");
    assert!(error.is_timeout(), "{error:?}");
    eventually("the hanging request is dropped", || mock.in_flight() == 0).await;
}

#[tokio::test]
async fn fault_empty_has_no_choices() {
    let mock = start().await;
    let body: Value = chat(&mock, request("fault-empty", false))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"], json!([]));

    let mut response = chat(&mock, request("fault-empty", true)).await;
    let (text, error) = read_all(&mut response).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "data: [DONE]\n\n");
}

async fn embed(mock: &MockUpstream, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/embeddings", mock.base_url()))
        .json(&body)
        .send()
        .await
        .expect("the mock answers")
}

fn floats(embedding: &Value) -> Vec<f32> {
    embedding
        .as_array()
        .expect("a float array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn assert_unit(vector: &[f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

#[tokio::test]
async fn embeddings_are_deterministic_normalised_and_base64_matches() {
    let mock = start().await;
    let body = json!({ "model": "echo", "input": ["alpha", "beta", "alpha"] });
    let first: Value = embed(&mock, body.clone()).await.json().await.expect("JSON");
    let second: Value = embed(&mock, body).await.json().await.expect("JSON");
    assert_eq!(first, second, "the same inputs give the same vectors");
    assert_eq!(first["object"], "list");
    assert_eq!(first["model"], "echo");
    assert_eq!(
        first["usage"],
        json!({ "prompt_tokens": 3, "total_tokens": 3 })
    );
    let data = first["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            floats(&item["embedding"])
        })
        .collect();
    for vector in &vectors {
        assert_eq!(vector.len(), 8);
        assert_unit(vector);
    }
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);

    let encoded: Value = embed(
        &mock,
        json!({ "model": "echo", "input": "alpha", "encoding_format": "base64", "dimensions": 8 }),
    )
    .await
    .json()
    .await
    .expect("JSON");
    let bytes = STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().expect("a string"))
        .expect("base64");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, vectors[0]);

    let sized: Value = embed(
        &mock,
        json!({ "model": "echo", "input": "alpha", "dimensions": 3 }),
    )
    .await
    .json()
    .await
    .expect("JSON");
    let sized = floats(&sized["data"][0]["embedding"]);
    assert_eq!(sized.len(), 3);
    assert_unit(&sized);
}

#[tokio::test]
async fn embeddings_accept_token_arrays_and_fail_like_openai() {
    let mock = start().await;
    let tokens: Value = embed(&mock, json!({ "model": "echo", "input": [[1, 2, 3], [4]] }))
        .await
        .json()
        .await
        .expect("JSON");
    let as_text: Value = embed(&mock, json!({ "model": "echo", "input": ["1 2 3", "4"] }))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(tokens["data"], as_text["data"]);
    assert_eq!(tokens["usage"]["prompt_tokens"], 4);

    let response = embed(&mock, json!({ "model": "fault-500", "input": "x" })).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["type"], "server_error");

    let response = embed(&mock, json!({ "model": "nope", "input": "x" })).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn requests_are_recorded_in_order_and_cleared() {
    let mock = start().await;
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("sk-tenant-a")
        .json(&request("fast", false))
        .send()
        .await
        .expect("the mock answers");
    embed(&mock, json!({ "model": "echo", "input": "x" })).await;
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .body("not json")
        .send()
        .await
        .expect("the mock answers");

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(
        recorded[0].authorization.as_deref(),
        Some("Bearer sk-tenant-a")
    );
    assert_eq!(recorded[0].body, request("fast", false));
    assert_eq!(recorded[1].path, "/v1/embeddings");
    assert_eq!(recorded[1].authorization, None);
    assert_eq!(recorded[1].body["input"], "x");
    assert_eq!(recorded[2].body, Value::Null);

    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn no_record_keeps_nothing() {
    let mock = start_with(MockOptions {
        record_requests: false,
        ..MockOptions::default()
    })
    .await;
    chat(&mock, request("fast", false)).await;
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn latency_delays_every_model_answer() {
    let latency = Duration::from_millis(200);
    let mock = start_with(MockOptions {
        latency,
        ..MockOptions::default()
    })
    .await;
    for model in ["fast", "fault-500", "no-such-model"] {
        let started = Instant::now();
        chat(&mock, request(model, false)).await;
        assert!(started.elapsed() >= latency, "{model} answered early");
    }
}

#[tokio::test]
async fn dropping_the_mock_ends_open_drip_and_hang_responses() {
    let mock = start_with(MockOptions {
        drip_interval: Duration::from_millis(20),
        ..MockOptions::default()
    })
    .await;
    let mut dripping = chat(&mock, request("fault-drip", true)).await;
    dripping
        .chunk()
        .await
        .expect("a first chunk")
        .expect("open");
    let hanging = tokio::spawn(
        client()
            .post(format!("{}/chat/completions", mock.base_url()))
            .json(&request("fault-hang", false))
            .send(),
    );
    eventually("both responses are open", || mock.in_flight() == 2).await;

    drop(mock);
    let (_, error) = read_all(&mut dripping).await;
    assert!(error.is_some(), "the drip ends with an error, not cleanly");
    let hung = hanging
        .await
        .expect("the request task")
        .expect("an answer once the server stops");
    assert_eq!(hung.status(), 503);
}

#[tokio::test]
async fn dropping_the_mock_stops_the_server() {
    let mock = start().await;
    let url = format!("{}/models", mock.base_url());
    drop(mock);
    let deadline = Instant::now() + EVENTUALLY;
    // A fresh client each time, so no pooled connection outlives the server.
    while client().get(&url).send().await.is_ok() {
        assert!(Instant::now() < deadline, "the server still answers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills the child process on the way out, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_address_and_serves() {
    let child = Command::new(env!("CARGO_BIN_EXE_bulkhead-mock-upstream"))
        .args(["--listen", "127.0.0.1:0", "--no-record"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the binary");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading stdout");
        line
    })
    .await
    .expect("the reader task");
    let base_url = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(base_url.starts_with("http://127.0.0.1:") && base_url.ends_with("/v1"));

    let completion: Value = client()
        .post(format!("{base_url}/chat/completions"))
        .json(&request("echo", false))
        .send()
        .await
        .expect("the binary answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(completion["choices"][0]["message"]["content"], PROMPT);
}
