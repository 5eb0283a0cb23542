//! `POST /v1/chat/completions`: the models' behaviours in the OpenAI chat wire
//! format, plain and streamed as server-sent events.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::stream::channel_body;
use crate::{InFlight, Shared};

const PATH: &str = "/v1/chat/completions";

/// The last event of every well-formed stream.
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// The bytes `fault-cut` sends before cutting a plain answer, out of the
/// `CUT_PROMISED_BYTES` it announces.
const CUT_SENT_BYTES: usize = 20;
const CUT_PROMISED_BYTES: usize = 1000;

/// The most choices `multi` answers with, whatever `n` asks.
const MULTI_CHOICES_MAX: usize = 8;

/// What a model does with a chat request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    Echo,
    Leaky,
    Fast,
    Multi,
    Tools,
    Extras,
    Refusal,
    LeakyMulti,
    LeakyTools,
    LeakyRefusal,
    Fault500,
    FaultMalformed,
    FaultCut,
    FaultDrip,
    FaultHang,
    FaultEmpty,
    Gullible,
}

impl Model {
    /// In the order of [`crate::MODELS`].
    const ALL: [Model; 17] = [
        Model::Echo,
        Model::Leaky,
        Model::Fast,
        Model::Multi,
        Model::Tools,
        Model::Extras,
        Model::Refusal,
        Model::LeakyMulti,
        Model::LeakyTools,
        Model::LeakyRefusal,
        Model::Fault500,
        Model::FaultMalformed,
        Model::FaultCut,
        Model::FaultDrip,
        Model::FaultHang,
        Model::FaultEmpty,
        Model::Gullible,
    ];

    fn name(self) -> &'static str {
        match self {
            Model::Echo => "echo",
            Model::Leaky => "leaky",
            Model::Fast => "fast",
            Model::Multi => "multi",
            Model::Tools => "tools",
            Model::Extras => "extras",
            Model::Refusal => "refusal",
            Model::LeakyMulti => "leaky-multi",
            Model::LeakyTools => "leaky-tools",
            Model::LeakyRefusal => "leaky-refusal",
            Model::Fault500 => "fault-500",
            Model::FaultMalformed => "fault-malformed",
            Model::FaultCut => "fault-cut",
            Model::FaultDrip => "fault-drip",
            Model::FaultHang => "fault-hang",
            Model::FaultEmpty => "fault-empty",
            Model::Gullible => "gullible",
        }
    }

    fn from_name(name: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|model| model.name() == name)
    }

    /// Whether the model answers from the memory shared with `leaky` (the
    /// previous leaky caller's prompt, then this one's) instead of the echo.
    fn is_leaky(self) -> bool {
        matches!(
            self,
            Model::Leaky | Model::LeakyMulti | Model::LeakyTools | Model::LeakyRefusal
        )
    }
}

/// The parts of an OpenAI chat request the mock looks at; the rest is ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest<'a> {
    model: &'a str,
    #[serde(default, borrow)]
    messages: Vec<Message<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// How many choices `multi` answers with (at least two).
    #[serde(default)]
    n: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(default)]
    role: &'a str,
    /// Missing or null for an assistant turn that only calls tools.
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    #[serde(borrow)]
    Parts(Vec<Part<'a>>),
}

#[derive(Debug, Deserialize)]
struct Part<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    text: Option<&'a str>,
}

impl Message<'_> {
    /// The message's text: a string content as is, or its text parts joined
    /// with no separator; images and other parts carry no text.
    fn texts(&self) -> impl Iterator<Item = &str> {
        let (text, parts) = match &self.content {
            None => (None, &[][..]),
            Some(Content::Text(text)) => (Some(*text), &[][..]),
            Some(Content::Parts(parts)) => (None, parts.as_slice()),
        };
        let part_texts = parts
            .iter()
            .filter(|part| part.kind == "text")
            .filter_map(|part| part.text);
        text.into_iter().chain(part_texts)
    }
}

impl<'a> ChatRequest<'a> {
    /// Borrows the request's strings from `value`, which holds them unescaped.
    fn from_json(value: &'a Value) -> Result<ChatRequest<'a>, ApiError> {
        ChatRequest::deserialize(value).map_err(|err| {
            ApiError::invalid_request(format!(
                "the request is not a chat completion request: {err}"
            ))
        })
    }

    /// Every piece of the rendered prompt in order; concatenated they give
    /// `"{role}: {text}\n"` per message.
    fn prompt_pieces(&self) -> impl Iterator<Item = &str> {
        self.messages.iter().flat_map(|message| {
            std::iter::once(message.role)
                .chain(std::iter::once(": "))
                .chain(message.texts())
                .chain(std::iter::once("\n"))
        })
    }

    fn render_prompt(&self) -> String {
        self.prompt_pieces().collect()
    }

    /// The prompt's token count without rendering it, so `fast` stays cheap.
    fn prompt_tokens(&self) -> usize {
        let mut words = WordCount::default();
        for piece in self.prompt_pieces() {
            words.feed(piece);
        }
        words.count
    }
}

/// What `gullible` answers: the prompt with what a model obeying instructions
/// planted in it would undo — every base64 word decoded, every run of
/// one-character words joined into one word, and every word after `reversed:`
/// reversed. A framing attacker's tool: its encoded text reaches the answer
/// decoded.
fn gullible(prompt: &str) -> String {
    use base64::Engine as _;
    let mut out: Vec<String> = Vec::new();
    let mut letters = String::new();
    let mut reverse_next = false;
    for word in prompt.split_whitespace() {
        if word.chars().count() == 1 {
            letters.push_str(word);
            continue;
        }
        if !letters.is_empty() {
            out.push(std::mem::take(&mut letters));
        }
        let decoded = (word.len() >= 16)
            .then(|| base64::engine::general_purpose::STANDARD.decode(word).ok())
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        let word = decoded.unwrap_or_else(|| word.to_owned());
        if reverse_next {
            out.push(word.chars().rev().collect());
        } else {
            out.push(word.clone());
        }
        reverse_next = word.eq_ignore_ascii_case("reversed:");
    }
    if !letters.is_empty() {
        out.push(letters);
    }
    out.join(" ")
}

/// Counts whitespace-separated words across pieces of one text, as
/// `split_whitespace` would count them in the concatenation.
#[derive(Debug, Default)]
struct WordCount {
    count: usize,
    in_word: bool,
}

impl WordCount {
    fn feed(&mut self, piece: &str) {
        for ch in piece.chars() {
            let is_word = !ch.is_whitespace();
            if is_word && !self.in_word {
                self.count += 1;
            }
            self.in_word = is_word;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Usage {
    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// The fields every object of one completion repeats.
#[derive(Debug, Clone)]
struct Envelope {
    id: String,
    created: u64,
    model: String,
}

impl Envelope {
    /// A whole answer with these choices.
    fn completion_of(&self, choices: Value, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage.to_json(),
        })
    }

    fn completion(&self, content: &str, usage: Usage) -> Value {
        self.completion_of(
            json!([{
                "index": 0,
                "message": { "role": "assistant", "content": content },
                "finish_reason": "stop",
            }]),
            usage,
        )
    }

    fn chunk_value(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// One chunk holding one choice's delta.
    fn choice_event(&self, index: usize, delta: Value, finish: Option<&str>) -> Bytes {
        sse_event(
            &self.chunk_value(json!([{ "index": index, "delta": delta, "finish_reason": finish }])),
        )
    }

    fn role_event_of(&self, index: usize) -> Bytes {
        self.choice_event(index, json!({ "role": "assistant", "content": "" }), None)
    }

    fn role_event(&self) -> Bytes {
        self.role_event_of(0)
    }

    fn content_event_of(&self, index: usize, piece: &str) -> Bytes {
        self.choice_event(index, json!({ "content": piece }), None)
    }

    fn content_event(&self, piece: &str) -> Bytes {
        self.content_event_of(0, piece)
    }

    fn finish_event_of(&self, index: usize, reason: &str) -> Bytes {
        self.choice_event(index, json!({}), Some(reason))
    }

    fn finish_event(&self) -> Bytes {
        self.finish_event_of(0, "stop")
    }

    fn usage_event(&self, usage: Usage) -> Bytes {
        let mut chunk = self.chunk_value(json!([]));
        chunk["usage"] = usage.to_json();
        sse_event(&chunk)
    }
}

fn sse_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// Splits `text` into `count` consecutive parts of (nearly) equal numbers of
/// characters: part `i` holds characters `i·len/count .. (i+1)·len/count`.
fn split_even(text: &str, count: usize) -> Vec<&str> {
    let count = count.max(1);
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(index, _)| index)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars = bounds.len() - 1;
    (0..count)
        .map(|i| &text[bounds[i * chars / count]..bounds[(i + 1) * chars / count]])
        .collect()
}

/// Splits `text` into pieces of `chars_per_piece` characters, never inside a
/// character.
fn pieces(text: &str, chars_per_piece: usize) -> impl Iterator<Item = &str> {
    let chars_per_piece = chars_per_piece.max(1);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .char_indices()
            .nth(chars_per_piece)
            .map_or(rest.len(), |(index, _)| index);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

pub(crate) async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = crate::parse_json(body);
    shared.record(PATH, &headers, body.as_ref().unwrap_or(&Value::Null));
    shared.answer_latency().await;
    let value = match body {
        Ok(value) => value,
        Err(err) => return err.into_response(),
    };
    // The request borrows its strings from the parsed body, so even a large
    // prompt is not copied unless a model needs it rendered.
    let request = match ChatRequest::from_json(&value) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let Some(model) = Model::from_name(request.model) else {
        return ApiError::model_not_found(request.model).into_response();
    };
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|options| options.include_usage)
        .unwrap_or(false);
    let serial = shared.next_completion_id.fetch_add(1, Ordering::Relaxed);
    let envelope = Envelope {
        id: format!("chatcmpl-mock-{serial}"),
        created: crate::unix_now_secs(),
        model: model.name().to_owned(),
    };
    let prompt_tokens = request.prompt_tokens();

    match model {
        Model::Echo | Model::Leaky | Model::Fast | Model::Gullible => {
            let answer = match model {
                Model::Echo => request.render_prompt(),
                Model::Gullible => gullible(&request.render_prompt()),
                Model::Leaky => shared.leak(request.render_prompt()),
                _ => "ok".to_owned(),
            };
            let usage = Usage {
                prompt_tokens,
                completion_tokens: crate::count_words(&answer),
            };
            if stream {
                stream_answer(&shared, envelope, answer, usage, include_usage)
            } else {
                Json(envelope.completion(&answer, usage)).into_response()
            }
        }
        Model::Multi
        | Model::Tools
        | Model::Extras
        | Model::Refusal
        | Model::LeakyMulti
        | Model::LeakyTools
        | Model::LeakyRefusal => {
            let answer = if model.is_leaky() {
                shared.leak(request.render_prompt())
            } else {
                request.render_prompt()
            };
            let usage = Usage {
                prompt_tokens,
                completion_tokens: crate::count_words(&answer),
            };
            let shape = Shaped {
                envelope,
                answer,
                usage,
                include_usage,
                chunk_chars: shared.options.chunk_chars,
            };
            match model {
                Model::Multi | Model::LeakyMulti => {
                    let count = request
                        .n
                        .map_or(2, |n| usize::try_from(n).unwrap_or(usize::MAX))
                        .clamp(2, MULTI_CHOICES_MAX);
                    shape.multi(&shared, count, stream)
                }
                Model::Tools | Model::LeakyTools => shape.tools(&shared, stream),
                Model::Extras => shape.extras(&shared, stream),
                _ => shape.refusal(&shared, stream),
            }
        }
        Model::Fault500 => ApiError::upstream_failure().into_response(),
        Model::FaultMalformed => malformed(&shared, &envelope, stream),
        Model::FaultCut => cut(&shared, &envelope, stream),
        Model::FaultDrip => drip(&shared, envelope, stream, prompt_tokens),
        Model::FaultHang => hang(&shared).await,
        Model::FaultEmpty => empty(&envelope, stream),
    }
}

fn event_stream(body: Body) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn json_body(status: StatusCode, body: Body) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn stream_answer(
    shared: &Arc<Shared>,
    envelope: Envelope,
    answer: String,
    usage: Usage,
    include_usage: bool,
) -> Response {
    let (mut producer, body) = channel_body(shared, None);
    let chunk_chars = shared.options.chunk_chars;
    tokio::spawn(async move {
        if !producer.send(envelope.role_event()).await {
            return;
        }
        for piece in pieces(&answer, chunk_chars) {
            if !producer.send(envelope.content_event(piece)).await {
                return;
            }
        }
        if !producer.send(envelope.finish_event()).await {
            return;
        }
        if include_usage && !producer.send(envelope.usage_event(usage)).await {
            return;
        }
        producer.send(Bytes::from_static(DONE_EVENT)).await;
    });
    event_stream(body)
}

/// Sends `events`, then `[DONE]`, as an event stream.
fn send_events(shared: &Arc<Shared>, events: Vec<Bytes>) -> Response {
    let (mut producer, body) = channel_body(shared, None);
    tokio::spawn(async move {
        for event in events {
            if !producer.send(event).await {
                return;
            }
        }
        producer.send(Bytes::from_static(DONE_EVENT)).await;
    });
    event_stream(body)
}

/// The models that answer with the echo (or, for the leaky ones, the leaky
/// answer) in another shape than one choice's content.
struct Shaped {
    envelope: Envelope,
    answer: String,
    usage: Usage,
    include_usage: bool,
    chunk_chars: usize,
}

impl Shaped {
    /// The events after the answer's own: the usage chunk, if asked for.
    fn tail(&self, events: &mut Vec<Bytes>) {
        if self.include_usage {
            events.push(self.envelope.usage_event(self.usage));
        }
    }

    /// `multi`: `count` choices, choice `i` the `i`-th of `count` consecutive
    /// parts of the echo. Streamed, every choice's role comes first, then the
    /// choices' content pieces interleaved (one piece of each in turn), then
    /// each choice's finish.
    fn multi(self, shared: &Arc<Shared>, count: usize, stream: bool) -> Response {
        let parts = split_even(&self.answer, count);
        if !stream {
            let choices: Vec<Value> = parts
                .iter()
                .enumerate()
                .map(|(index, part)| {
                    json!({
                        "index": index,
                        "message": { "role": "assistant", "content": part },
                        "finish_reason": "stop",
                    })
                })
                .collect();
            return Json(self.envelope.completion_of(json!(choices), self.usage)).into_response();
        }
        let pieces: Vec<Vec<&str>> = parts
            .iter()
            .map(|part| pieces(part, self.chunk_chars).collect())
            .collect();
        let mut events: Vec<Bytes> = (0..count)
            .map(|index| self.envelope.role_event_of(index))
            .collect();
        let rounds = pieces.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            for (index, choice) in pieces.iter().enumerate() {
                if let Some(piece) = choice.get(round) {
                    events.push(self.envelope.content_event_of(index, piece));
                }
            }
        }
        events.extend((0..count).map(|index| self.envelope.finish_event_of(index, "stop")));
        self.tail(&mut events);
        send_events(shared, events)
    }

    /// `tools`: no content, one tool call per `chunk_chars` characters of the
    /// echo. Whole, the calls take turns among the three shapes upstreams send:
    /// a function call with string arguments, one with object arguments, and a
    /// custom tool call with its input. Streamed, each is a function call whose
    /// id and name come first and whose arguments come in two pieces.
    fn tools(self, shared: &Arc<Shared>, stream: bool) -> Response {
        let notes: Vec<&str> = pieces(&self.answer, self.chunk_chars).collect();
        if !stream {
            let calls: Vec<Value> = notes
                .iter()
                .enumerate()
                .map(|(i, note)| {
                    let id = format!("call_mock_{i}");
                    match i % 3 {
                        0 => json!({"id": id, "type": "function", "function": {
                            "name": "save_note", "arguments": json!({ "text": note }).to_string()}}),
                        1 => json!({"id": id, "type": "function", "function": {
                            "name": "save_note", "arguments": { "text": note }}}),
                        _ => json!({"id": id, "type": "custom", "custom": {
                            "name": "append_note", "input": note}}),
                    }
                })
                .collect();
            let choices = json!([{
                "index": 0,
                "message": { "role": "assistant", "content": null, "tool_calls": calls },
                "finish_reason": "tool_calls",
            }]);
            return Json(self.envelope.completion_of(choices, self.usage)).into_response();
        }
        let mut events = vec![self.envelope.role_event()];
        for (i, note) in notes.iter().enumerate() {
            let head = json!({"tool_calls": [{"index": i, "id": format!("call_mock_{i}"),
                "type": "function", "function": {"name": "save_note", "arguments": ""}}]});
            events.push(self.envelope.choice_event(0, head, None));
            let arguments = json!({ "text": note }).to_string();
            for piece in split_even(&arguments, 2) {
                let delta = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                events.push(self.envelope.choice_event(0, delta, None));
            }
        }
        events.push(self.envelope.finish_event_of(0, "tool_calls"));
        self.tail(&mut events);
        send_events(shared, events)
    }

    /// `extras`: the echo, with fields no OpenAI client knows at every level
    /// (each value holds [`crate::EXTRAS_MARKER`]), logprobs nobody asked for, and
    /// audio whose transcript is the echo and whose data is
    /// [`crate::EXTRAS_AUDIO_DATA`].
    fn extras(self, shared: &Arc<Shared>, stream: bool) -> Response {
        let marker = crate::EXTRAS_MARKER;
        let logprobs = json!({"content": [{"token": marker, "logprob": 0.0, "bytes": [], "top_logprobs": []}]});
        if !stream {
            let choices = json!([{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": self.answer,
                    "extra_secret": format!("{marker} {}", self.answer),
                    "reasoning_content": marker,
                    "annotations": [{"type": "url_citation", "url_citation": {"url": marker}}],
                    "audio": {"id": marker, "data": crate::EXTRAS_AUDIO_DATA,
                              "expires_at": 1_700_000_000, "transcript": self.answer},
                },
                "provider_data": {"route": marker},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }]);
            let mut body = self.envelope.completion_of(choices, self.usage);
            body["system_fingerprint"] = json!(marker);
            body["provider_meta"] = json!({"note": marker});
            body["usage"]["provider_cost"] = json!({"note": marker});
            return Json(body).into_response();
        }
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut chunk = self.envelope.chunk_value(json!([{
                "index": 0, "delta": delta, "finish_reason": finish,
                "provider_data": {"route": marker}, "logprobs": logprobs,
            }]));
            chunk["system_fingerprint"] = json!(marker);
            chunk["provider_meta"] = json!({"note": marker});
            sse_event(&chunk)
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        for piece in pieces(&self.answer, self.chunk_chars) {
            events.push(chunk(
                json!({"content": piece, "extra_secret": marker}),
                None,
            ));
        }
        events.push(chunk(
            json!({"audio": {"id": marker, "data": crate::EXTRAS_AUDIO_DATA}}),
            None,
        ));
        events.push(chunk(json!({}), Some("stop")));
        if self.include_usage {
            let mut usage = self.envelope.chunk_value(json!([]));
            usage["usage"] = self.usage.to_json();
            usage["usage"]["provider_cost"] = json!({"note": marker});
            events.push(sse_event(&usage));
        }
        send_events(shared, events)
    }

    /// `refusal`: the echo as the model's refusal, with no content.
    fn refusal(self, shared: &Arc<Shared>, stream: bool) -> Response {
        if !stream {
            let choices = json!([{
                "index": 0,
                "message": { "role": "assistant", "content": null, "refusal": self.answer },
                "finish_reason": "stop",
            }]);
            return Json(self.envelope.completion_of(choices, self.usage)).into_response();
        }
        let mut events = vec![self.envelope.role_event()];
        for piece in pieces(&self.answer, self.chunk_chars) {
            events.push(
                self.envelope
                    .choice_event(0, json!({ "refusal": piece }), None),
            );
        }
        events.push(self.envelope.finish_event());
        self.tail(&mut events);
        send_events(shared, events)
    }
}

fn malformed(shared: &Arc<Shared>, envelope: &Envelope, stream: bool) -> Response {
    if !stream {
        return json_body(StatusCode::OK, Body::from(r#"{"choices": ["#));
    }
    let (mut producer, body) = channel_body(shared, None);
    let events = [
        envelope.role_event(),
        Bytes::from_static(b"data: {not json}\n\n"),
        Bytes::from_static(DONE_EVENT),
    ];
    tokio::spawn(async move {
        for event in events {
            if !producer.send(event).await {
                return;
            }
        }
    });
    event_stream(body)
}

fn cut(shared: &Arc<Shared>, envelope: &Envelope, stream: bool) -> Response {
    let (mut producer, body) = channel_body(shared, None);
    let frames = if stream {
        vec![
            envelope.role_event(),
            envelope.content_event("this answer "),
            envelope.content_event("is cut off"),
        ]
    } else {
        let usage = Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        let document = envelope
            .completion("this answer is cut off", usage)
            .to_string();
        let mut bytes = document.into_bytes();
        bytes.truncate(CUT_SENT_BYTES);
        vec![Bytes::from(bytes)]
    };
    tokio::spawn(async move {
        for frame in frames {
            if !producer.send(frame).await {
                return;
            }
        }
        producer.cut().await;
    });
    if stream {
        event_stream(body)
    } else {
        let mut response = json_body(StatusCode::OK, body);
        // hyper frames the body by this header because the body's own length
        // is unknown, so the client waits for bytes that never come.
        response.headers_mut().insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(CUT_PROMISED_BYTES),
        );
        response
    }
}

fn drip(shared: &Arc<Shared>, envelope: Envelope, stream: bool, prompt_tokens: usize) -> Response {
    let (mut producer, body) = channel_body(shared, Some(InFlight::enter(shared)));
    let interval = shared.options.drip_interval;
    if stream {
        tokio::spawn(async move {
            if !producer.send(envelope.role_event()).await {
                return;
            }
            let dot = envelope.content_event(".");
            loop {
                if !producer.pause(interval).await {
                    return producer.abort();
                }
                if !producer.send(dot.clone()).await {
                    return;
                }
            }
        });
        return event_stream(body);
    }
    let usage = Usage {
        prompt_tokens,
        completion_tokens: 1,
    };
    let mut document = envelope.completion(".", usage).to_string().into_bytes();
    // The closing brace never comes; whitespace keeps the document valid so
    // far, so a client parser keeps waiting instead of failing.
    document.pop();
    tokio::spawn(async move {
        let bytes = document.into_iter().chain(std::iter::repeat(b' '));
        for byte in bytes {
            if !producer.send(Bytes::copy_from_slice(&[byte])).await {
                return;
            }
            if !producer.pause(interval).await {
                return producer.abort();
            }
        }
    });
    json_body(StatusCode::OK, body)
}

async fn hang(shared: &Arc<Shared>) -> Response {
    // hyper drops this future, and with it the guard, when the client closes
    // the connection; only a server shutdown ends it otherwise.
    let _in_flight = InFlight::enter(shared);
    shared.stopped().await;
    ApiError::shutting_down().into_response()
}

fn empty(envelope: &Envelope, stream: bool) -> Response {
    if stream {
        return event_stream(Body::from(Bytes::from_static(DONE_EVENT)));
    }
    Json(json!({
        "id": envelope.id,
        "object": "chat.completion",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_match_the_public_list() {
        let names: Vec<&str> = Model::ALL.iter().map(|model| model.name()).collect();
        assert_eq!(names, crate::MODELS);
        for model in Model::ALL {
            assert_eq!(Model::from_name(model.name()), Some(model));
        }
        assert_eq!(Model::from_name("gpt-4o"), None);
    }

    #[test]
    fn pieces_split_on_char_boundaries() {
        let check = |text: &str, n: usize, expect: &[&str]| {
            let got: Vec<&str> = pieces(text, n).collect();
            assert_eq!(got, expect, "pieces({text:?}, {n})");
        };
        check("", 3, &[]);
        check("abcdefg", 3, &["abc", "def", "g"]);
        check("héllo🦀x", 2, &["hé", "ll", "o🦀", "x"]);
        check("ab", 0, &["a", "b"]);
        check("ab", 16, &["ab"]);
    }

    #[test]
    fn split_even_covers_the_text_in_order() {
        let check = |text: &str, n: usize, expect: &[&str]| {
            let got = split_even(text, n);
            assert_eq!(got, expect, "split_even({text:?}, {n})");
            assert_eq!(got.concat(), text);
        };
        check("abcdef", 2, &["abc", "def"]);
        check("abcdefg", 3, &["ab", "cd", "efg"]);
        check("héllo🦀", 2, &["hél", "lo🦀"]);
        check("a", 2, &["", "a"]);
        check("", 2, &["", ""]);
        check("ab", 0, &["ab"]);
    }

    #[test]
    fn word_count_across_pieces_matches_split_whitespace() {
        let check = |pieces: &[&str]| {
            let mut words = WordCount::default();
            for piece in pieces {
                words.feed(piece);
            }
            let joined: String = pieces.concat();
            assert_eq!(words.count, crate::count_words(&joined), "{pieces:?}");
        };
        check(&[]);
        check(&["user", ": ", "hello world", "\n"]);
        check(&[
            "user",
            ": ",
            "foo",
            "bar",
            "\n",
            "assistant",
            ": ",
            "",
            "\n",
        ]);
        check(&["  a", "b  ", " c\t", "d"]);
    }

    #[test]
    fn prompt_renders_roles_text_and_parts() {
        let value = json!({
            "model": "echo",
            "messages": [
                { "role": "system", "content": "be brief" },
                { "role": "user", "content": [
                    { "type": "text", "text": "look at " },
                    { "type": "image_url", "image_url": { "url": "data:," } },
                    { "type": "text", "text": "this" },
                ]},
                { "role": "assistant", "content": null },
            ],
        });
        let request = ChatRequest::from_json(&value).expect("the request is well-formed");
        let prompt = request.render_prompt();
        assert_eq!(
            prompt,
            "system: be brief\nuser: look at this\nassistant: \n"
        );
        assert_eq!(request.prompt_tokens(), 8);
        assert_eq!(request.prompt_tokens(), crate::count_words(&prompt));
    }
}
