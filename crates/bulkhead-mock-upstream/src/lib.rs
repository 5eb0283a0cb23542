//! A mock OpenAI-compatible model server that misbehaves on demand.
//!
//! Bulkhead sits between tenants and an upstream model server. Its tests and
//! benchmarks need a real HTTP upstream that speaks the OpenAI wire format
//! exactly (the clients are the official OpenAI SDKs and reqwest) and that can
//! be told, per request, to fail in each of the ways a real upstream fails.
//! The request's `model` picks the behaviour:
//!
//! - `echo` answers with the whole prompt, one `"{role}: {text}\n"` line per
//!   message. It is the worst possible model: whatever is in its context comes
//!   back out, so a test can see exactly what the gateway let through.
//! - `leaky` keeps one memory for the whole server, shared by every caller: it
//!   answers with the previous leaky request's prompt followed by this
//!   request's prompt, then remembers this prompt. It stands in for a shared
//!   model or prefix cache that regurgitates one customer's prompt to the next.
//! - `fast` answers `"ok"` and does as little work as it can, for latency
//!   benchmarks.
//! - `multi` answers with several choices (the request's `n`, at least two, at
//!   most eight): choice `i` is the `i`-th of that many consecutive, nearly equal
//!   parts of the echo. Streamed, the choices' pieces are interleaved, each under
//!   its own `index`.
//! - `tools` answers with no content and one tool call per
//!   [`MockOptions::chunk_chars`] characters of the echo (`{"text": piece}`
//!   arguments). Whole, the calls take turns among a function call with string
//!   arguments, one with object arguments (as some servers send them) and a
//!   custom tool call; streamed, each call's arguments come in pieces.
//! - `extras` answers with the echo plus fields no OpenAI client knows at every
//!   level (message, choice, answer, usage; each value holds [`EXTRAS_MARKER`]),
//!   unrequested logprobs, and audio with the echo as its transcript and
//!   [`EXTRAS_AUDIO_DATA`] as its data.
//! - `refusal` answers with the echo as the model's `refusal`, and no content.
//! - `leaky-multi`, `leaky-tools` and `leaky-refusal` answer in the shape of
//!   `multi`, `tools` and `refusal`, but with the `leaky` answer instead of the
//!   echo, from the same memory: one caller's prompt comes back to the next
//!   split across choices, cut into tool calls, or as a refusal.
//! - `gullible` answers with the echo as a model obeying instructions planted
//!   in its input would: base64 words decoded, runs of one-character words
//!   joined, the word after `reversed:` reversed. It stands in for a model that
//!   a framing tenant steers into turning its encoded canary back into the
//!   canary in another tenant's answer.
//! - `fault-500` answers 500 with an OpenAI `server_error` body.
//! - `fault-malformed` answers 200 with JSON that does not parse (or, when
//!   streaming, one good chunk and then an event that is not JSON).
//! - `fault-cut` promises a body (or a stream) and closes the connection
//!   part-way through it.
//! - `fault-drip` sends a byte (or, when streaming, a `"."` chunk) every
//!   [`MockOptions::drip_interval`] and never finishes.
//! - `fault-hang` never answers at all.
//! - `fault-empty` answers 200 with no choices (or, when streaming, only
//!   `data: [DONE]`).
//!
//! `/v1/embeddings` answers every model except `fault-500` with deterministic,
//! L2-normalised vectors derived from a hash of each input.
//!
//! The server records every `/v1/*` request (path, `Authorization` header and
//! JSON body) so a test can check what the gateway sent upstream, and counts
//! the `fault-drip` and `fault-hang` responses still open so a test can check
//! the gateway hung up on them. It must never be used as a real upstream: it
//! has no authentication and keeps whatever it is sent.

mod chat;
mod embeddings;
mod error;
mod stream;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ApiError;

/// Every model name the server knows, in the order `GET /v1/models` lists them.
pub const MODELS: &[&str] = &[
    "echo",
    "leaky",
    "fast",
    "multi",
    "tools",
    "extras",
    "refusal",
    "leaky-multi",
    "leaky-tools",
    "leaky-refusal",
    "fault-500",
    "fault-malformed",
    "fault-cut",
    "fault-drip",
    "fault-hang",
    "fault-empty",
    "gullible",
];

/// In every value of the fields `extras` adds that no OpenAI client knows, so a
/// test can tell whether any of them reached a client.
pub const EXTRAS_MARKER: &str = "mock-extra-field";

/// The base64 audio data of an `extras` answer.
pub const EXTRAS_AUDIO_DATA: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEA";

/// The most requests [`MockUpstream::requests`] remembers; older ones are
/// forgotten first so a long benchmark cannot grow the server without bound.
pub const RECORDED_REQUESTS_MAX: usize = 10_000;

/// Request bodies larger than this are refused with 413. It is generous
/// because `echo` is used to check what a gateway does with large contexts.
const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How the server answers; every field has a default suited to tests.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Characters of the answer per streamed content chunk, and per tool call of
    /// `tools`. Zero is treated as one.
    pub chunk_chars: usize,
    /// Time between two bytes or chunks of a `fault-drip` response.
    pub drip_interval: Duration,
    /// Time slept before answering any model request, faults included.
    pub latency: Duration,
    /// Whether to remember requests for [`MockUpstream::requests`].
    /// Benchmarks turn this off to keep memory flat.
    pub record_requests: bool,
}

impl Default for MockOptions {
    fn default() -> MockOptions {
        MockOptions {
            chunk_chars: 16,
            drip_interval: Duration::from_secs(1),
            latency: Duration::ZERO,
            record_requests: true,
        }
    }
}

/// One request the server received under `/v1/`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The request path without its query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The `Authorization` header as sent, if there was one.
    pub authorization: Option<String>,
    /// The parsed JSON body, or `Value::Null` if it was missing or not JSON.
    pub body: Value,
}

/// A running mock server on a free loopback port.
///
/// Dropping it stops the server: it stops accepting connections, closes idle
/// ones, and ends the `fault-drip` and `fault-hang` responses still open.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("options", &self.shared.options)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Binds 127.0.0.1 on a free port and serves in a spawned tokio task.
    pub async fn start(options: MockOptions) -> io::Result<MockUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(options, shutdown_rx));
        let task = tokio::spawn(run(listener, Arc::clone(&shared)));
        Ok(MockUpstream {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// Serves on `listener` until the returned future is dropped. The binary
    /// uses this; tests want [`MockUpstream::start`].
    pub async fn serve(listener: TcpListener, options: MockOptions) -> io::Result<()> {
        // Nothing ever asks this server to stop; holding the sender keeps the
        // shutdown signal quiet until this future is dropped.
        let (_shutdown, shutdown_rx) = watch::channel(false);
        run(listener, Arc::new(Shared::new(options, shutdown_rx))).await
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests received under `/v1/`, oldest first, at most the last
    /// [`RECORDED_REQUESTS_MAX`].
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.records().iter().cloned().collect()
    }

    /// Forgets the recorded requests. The leaky models' memory is kept.
    pub fn clear(&self) {
        self.shared.records().clear();
    }

    /// How many `fault-drip` and `fault-hang` responses are still open. A
    /// gateway that hangs up on a stuck upstream brings this back to zero.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The signal reaches the connection tasks, which outlive the accept
        // loop; aborting the accept loop alone would leave them serving.
        self.shutdown.send_replace(true);
        self.task.abort();
    }
}

/// State shared by every handler of one server.
struct Shared {
    options: MockOptions,
    records: Mutex<VecDeque<RecordedRequest>>,
    /// The last prompt of any leaky model (`leaky`, `leaky-multi`,
    /// `leaky-tools`, `leaky-refusal`), shared across callers on purpose.
    leaky_memory: Mutex<String>,
    in_flight: AtomicUsize,
    next_completion_id: AtomicU64,
    /// Turns true (or loses its sender) when the server is stopping.
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn new(options: MockOptions, shutdown: watch::Receiver<bool>) -> Shared {
        Shared {
            options,
            records: Mutex::new(VecDeque::new()),
            leaky_memory: Mutex::new(String::new()),
            in_flight: AtomicUsize::new(0),
            next_completion_id: AtomicU64::new(1),
            shutdown,
        }
    }

    fn records(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        // A panic while holding the lock cannot leave the queue half-updated
        // in a way that matters to a test double, so poisoning is ignored.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers a request. The body is copied only when recording is on, so
    /// benchmarks run with `record_requests: false` copy nothing.
    fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
        if !self.options.record_requests {
            return;
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let mut records = self.records();
        if records.len() == RECORDED_REQUESTS_MAX {
            records.pop_front();
        }
        records.push_back(RecordedRequest {
            path: path.to_owned(),
            authorization,
            body: body.clone(),
        });
    }

    /// The leaky models' answer: the previous leaky request's prompt followed
    /// by `prompt`, which is remembered for the next caller.
    fn leak(&self, prompt: String) -> String {
        let mut memory = self
            .leaky_memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut answer = std::mem::replace(&mut *memory, prompt);
        answer.push_str(&memory);
        answer
    }

    async fn answer_latency(&self) {
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
    }

    /// Resolves once the server is stopping.
    async fn stopped(&self) {
        stopped(&mut self.shutdown.clone()).await;
    }
}

/// Resolves once `shutdown` turns true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Either outcome means stop; the guard `wait_for` returns is dropped at
    // once so it is never held across an await.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Counts one open `fault-drip` or `fault-hang` response for as long as it
/// lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn run(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let mut shutdown = shared.shutdown.clone();
    axum::serve(listener, app(shared))
        .with_graceful_shutdown(async move { stopped(&mut shutdown).await })
        .await
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(models).fallback(wrong_method))
        .route(
            "/v1/chat/completions",
            post(chat::completions).fallback(wrong_method),
        )
        .route(
            "/v1/embeddings",
            post(embeddings::embeddings).fallback(wrong_method),
        )
        .fallback(unknown_path)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(shared)
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Json<Value> {
    shared.record("/v1/models", &headers, &Value::Null);
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "bulkhead-mock",
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn unknown_path(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    record_stray(&shared, &uri, &headers, &body);
    ApiError::unknown_url(&method, uri.path()).into_response()
}

async fn wrong_method(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    record_stray(&shared, &uri, &headers, &body);
    ApiError::method_not_allowed(&method, uri.path()).into_response()
}

/// Records a request no endpoint handles, if it was meant for the API.
fn record_stray(
    shared: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Result<Bytes, BytesRejection>,
) {
    if uri.path().starts_with("/v1/") {
        let body = body
            .as_ref()
            .ok()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or(Value::Null);
        shared.record(uri.path(), headers, &body);
    }
}

/// Parses a request body as JSON, or says what to answer instead.
fn parse_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| ApiError::body_rejected(&rejection))?;
    serde_json::from_slice(&bytes).map_err(|err| {
        ApiError::invalid_request(format!("the request body is not valid JSON: {err}"))
    })
}

/// Whole seconds since the Unix epoch, for the `created` fields.
fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Counts whitespace-separated words, the mock's notion of a token.
fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}
