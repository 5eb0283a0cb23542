//! The isolating model gateway at the edge: `POST /v1/chat/completions` (whole or
//! streamed), `POST /v1/embeddings` and `GET /v1/models`, in the OpenAI wire format.
//!
//! One call, in order: parse (forwarding only known-safe fields); route the model
//! within the tenant's region and allow-list; screen the user's input for
//! injection; open the session, if named; retrieve the tenant's own chunks, if
//! asked, screening each for injected instructions; put them, with the tenant's
//! canary, in a context message; call the upstream with the tenant's cache salt,
//! pseudonym and credential; pass every byte of the answer through the output
//! guard before it leaves, with one verdict over everything the client receives
//! (every choice's content, refusal and audio transcript, every tool call's id,
//! name and arguments), a stream through the joint hold-back scanner with each
//! choice under its own index; store the turn in the session; seal the decision
//! trace and append its hash to the tenant's log. Fields of the upstream's answer
//! the gateway does not know were already dropped when it was read
//! (`bulkhead_gateway::Completion`), so nothing reaches the client unscanned.
//!
//! Must never: send a byte of an answer the guard has not decided; let a blocked
//! answer's text out (the client gets a content-filter notice, never whose data it
//! was); wait on an upstream or a client without a bound; leave a task running
//! after its call ended.

use bulkhead_app::TraceOutcome;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_gateway::openai::{self, ChatRequest, RequestError};
use bulkhead_gateway::{
    Answer, ChatStream, Choice, ChoiceDelta, Completion, FunctionCall, NoSuchModel, Route,
    ToolCall, ToolCallDelta, UpstreamError,
};
use bulkhead_guard::{StreamOutput, Verdict};
use bulkhead_ledger::event::content_hash;
use bulkhead_vault::TenantCtx;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::AppState;
use crate::audit::{Arrival, RequestId, Rid};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{JsonBytes, Tenant};
use crate::guard::{LeakSource, report_leak};
use crate::traces::{self, GuardSummary, Latency, Trace};

pub use bulkhead_app::answer_guard::*;
pub use bulkhead_app::chat::{
    ChatRefusal, Prepared, commit_stream_intent, commit_trace, prepare, set_latency,
};
pub use bulkhead_app::gateway::{GATEWAY_SECRET_PURPOSE, GatewayState, TraceCommit};
use bulkhead_app::quota::TokenGrant;

fn request_error(e: RequestError) -> ApiError {
    match e {
        RequestError::Json(m) => ApiError::new(ProblemKind::MalformedJson, m),
        RequestError::Invalid(m) => ApiError::new(ProblemKind::InvalidRequest, m),
    }
}

fn no_such_model(e: NoSuchModel) -> ApiError {
    ApiError::new(
        ProblemKind::NotFound,
        format!("{e}; GET /v1/models lists the models this key may use"),
    )
}

fn upstream_problem(e: &UpstreamError, trace_id: &str) -> ApiError {
    let kind = if e.is_timeout() {
        ProblemKind::UpstreamTimeout
    } else {
        ProblemKind::UpstreamFailed
    };
    ApiError::new(kind, format!("{e}; see trace {trace_id}"))
}

fn with_trace_headers(mut response: Response, trace_id: &str, overhead: Duration) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        headers.insert("x-bulkhead-trace-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)) {
        headers.insert("x-bulkhead-overhead-ms", v);
    }
    response
}

/// `GET /v1/models`: the models this tenant may call (its region, its allow-list).
pub async fn models(Tenant(ctx): Tenant, State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let tenant = state.vault.tenant(ctx.tenant()).await?;
    let created = tenant.created_at.0 / 1000;
    let data: Vec<Value> = state
        .gateway
        .gateway
        .models_for(&tenant.region, tenant.models.as_deref())
        .iter()
        .map(|r| {
            json!({
                "id": r.model,
                "object": "model",
                "created": created,
                "owned_by": r.upstream.name(),
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Everything known about a call before the upstream answers.
/// The problem a chat call refused before its upstream gets.
fn refusal_response(refusal: ChatRefusal) -> Response {
    match refusal {
        ChatRefusal::App(e) => ApiError::from(e).into_response(),
        ChatRefusal::NoSuchModel(e) => no_such_model(e).into_response(),
        // Every refusal of a content part is the client's to fix (400), an image
        // host that failed included: the detail says which part and why, and no
        // model was asked.
        ChatRefusal::Content { message } => {
            ApiError::new(ProblemKind::InvalidRequest, message).into_response()
        }
        ChatRefusal::InputRefused {
            score,
            trace_id,
            overhead,
        } => {
            let problem = ApiError::new(
                ProblemKind::ContentRefused,
                format!(
                    "the input was refused as a prompt injection (score {score}); see trace {trace_id}"
                ),
            );
            with_trace_headers(problem.into_response(), &trace_id, overhead)
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    Arrival(started): Arrival,
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    JsonBytes(body): JsonBytes,
) -> Response {
    let req = match openai::parse_chat(&body, state.gateway.request_limits) {
        Ok(r) => r,
        Err(e) => return request_error(e).into_response(),
    };
    drop(body);
    let (prepared, route) = match prepare(&state, &ctx, &rid, &req, started).await {
        Ok(p) => p,
        Err(refusal) => return refusal_response(refusal),
    };
    if req.stream {
        stream_chat(&state, ctx, rid, &req, route, prepared).await
    } else {
        whole_chat(&state, &ctx, &rid, &req, route, prepared).await
    }
}

/// Records a failed upstream call and answers with a problem.
async fn upstream_failed(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    pack: &crate::packs::Pack,
    mut trace: Trace,
    (started, upstream): (Instant, Duration),
    e: UpstreamError,
) -> Response {
    tracing::warn!(trace = %trace.id, upstream = %trace.upstream, error = %e, "model call failed at the upstream");
    trace.outcome = upstream_outcome(&e);
    trace.error = Some(e.to_string());
    set_latency(&mut trace, started, upstream, None);
    let overhead = started.elapsed().saturating_sub(upstream);
    state.metrics.model_call(trace.outcome.as_str(), overhead);
    if let Err(audit) = commit_trace(state, ctx, rid, &trace, pack).await {
        return ApiError::from(audit).into_response();
    }
    with_trace_headers(
        upstream_problem(&e, &trace.id).into_response(),
        &trace.id,
        overhead,
    )
}

/// A delta carrying one piece of a streamed text field.
fn text_delta(field: Field, text: &str) -> Value {
    match field {
        Field::Refusal => json!({"refusal": text}),
        Field::Transcript => json!({"audio": {"transcript": text}}),
        _ => json!({"content": text}),
    }
}

fn extension(trace: &Trace, overhead: Duration) -> Value {
    json!({
        "trace_id": trace.id,
        "redactions": trace.guard.redactions,
        "blocked": trace.guard.blocked,
        "overhead_ms": traces::millis(overhead),
    })
}

fn completion_id(trace_id: &str) -> String {
    format!("chatcmpl-{}", trace_id.trim_start_matches("tr_"))
}

/// A call without `stream`: the upstream's whole answer, guarded, stored in the
/// session, traced, then released.
async fn whole_chat(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    req: &ChatRequest,
    route: Route<'_>,
    prepared: Prepared,
) -> Response {
    let Prepared {
        pack,
        mut trace,
        started,
        upstream_body,
        mut session,
        new_turn,
        tokens,
    } = prepared;
    let gw = &state.gateway;
    let asked = Instant::now();
    let result = gw.gateway.chat(route, ctx.tenant(), &upstream_body).await;
    let upstream = asked.elapsed();
    let completion = match result {
        Ok(c) => c,
        Err(e) => {
            tokens.release();
            return upstream_failed(state, ctx, rid, &pack, trace, (started, upstream), e).await;
        }
    };
    let Completion { mut choices, usage } = completion;
    tokens.settle(bulkhead_app::quota::reported_tokens(usage.as_ref()));
    let decision = guard_choices(state, &pack, ctx.tenant(), &mut choices).await;
    state
        .traffic
        .record_findings(state.vault.now(), &decision.findings, decision.blocked);
    let source = LeakSource::ModelAnswer(&upstream_body);
    if let Err(e) = report_leak(state, ctx, rid, &pack, &decision.findings, source).await {
        return ApiError::from(e).into_response();
    }
    drop(upstream_body);
    trace.guard = decision.summary();
    trace.outcome = decision.outcome();
    trace.finish_reason = choices.first().map(|c| c.finish_reason.clone());
    trace.usage = usage.clone();
    trace.output_hash = Some(output_hash(choices.iter().map(|c| &c.message)));
    set_latency(&mut trace, started, upstream, None);

    // A session keeps choice 0, the one a client continues with.
    if let (Some(s), Some(first)) = (&mut session, choices.first()) {
        let mut turn = new_turn;
        turn.push(session_message(&first.message));
        if let Err(e) = s
            .append(state, ctx, state.gateway.sessions, turn, &trace.id)
            .await
        {
            return ApiError::from(e).into_response();
        }
    }
    if let Err(e) = commit_trace(state, ctx, rid, &trace, &pack).await {
        return ApiError::from(e).into_response();
    }
    let overhead = started.elapsed().saturating_sub(upstream);
    state.metrics.model_call(trace.outcome.as_str(), overhead);
    let body = completion_body(state, req, &trace, &choices, usage, overhead);
    with_trace_headers(
        (StatusCode::OK, Json(body)).into_response(),
        &trace.id,
        overhead,
    )
}

/// One verdict over every text of every choice, applied in place: a leak cut
/// across choices, tool calls or fields is judged whole; a block replaces every
/// choice with the notice, otherwise redactions go back where their text was.
/// The body of a whole answer in the OpenAI wire format, with the gateway's
/// extension; separate so the call's steps read apart from its wire shape.
fn completion_body(
    state: &AppState,
    req: &ChatRequest,
    trace: &Trace,
    choices: &[Choice],
    usage: Option<Value>,
    overhead: Duration,
) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .map(|c| {
            json!({
                "index": c.index,
                "message": Value::Object(message_json(&c.message)),
                "logprobs": Value::Null,
                "finish_reason": c.finish_reason,
            })
        })
        .collect();
    let mut body = json!({
        "id": completion_id(&trace.id),
        "object": "chat.completion",
        "created": state.vault.now().0 / 1000,
        "model": req.model,
        "choices": choices,
        "bulkhead": extension(trace, overhead),
    });
    if let Some(u) = usage {
        body["usage"] = u;
    }
    body
}

/// The response body of a stream: the frames a task sends, in order. When the
/// client goes away, this is dropped, the task's next send fails, and it stops.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn stream_chat(
    state: &AppState,
    ctx: TenantCtx,
    rid: RequestId,
    req: &ChatRequest,
    route: Route<'_>,
    prepared: Prepared,
) -> Response {
    let gw = &state.gateway;
    let asked = Instant::now();
    // The call's intent is written while the upstream starts answering, so the
    // fsync costs no time to first token unless it is the slower of the two;
    // no byte of the answer is released before it is durable.
    let (upstream, intent) = tokio::join!(
        gw.gateway
            .chat_stream(route, ctx.tenant(), &prepared.upstream_body),
        commit_stream_intent(state, &ctx, &rid, &prepared.trace),
    );
    let waited = asked.elapsed();
    if let Err(e) = intent {
        tracing::error!(trace = %prepared.trace.id, error = %e,
            "a streamed call's intent could not be written to the audit log, so none of its \
             answer is sent; check the store");
        prepared.tokens.release();
        return ApiError::from(e).into_response();
    }
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
            prepared.tokens.release();
            return upstream_failed(
                state,
                &ctx,
                &rid,
                &prepared.pack,
                prepared.trace,
                (prepared.started, waited),
                e,
            )
            .await;
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let trace_id = prepared.trace.id.clone();
    let overhead_so_far = prepared.started.elapsed().saturating_sub(waited);
    let job = StreamJob {
        created: state.vault.now().0 / 1000,
        state: state.clone(),
        ctx,
        rid,
        model: req.model.clone(),
        include_usage: req.include_usage,
        prepared,
        upstream_wait: waited,
        tx,
    };
    // The task owns the upstream stream and ends with it: the upstream's total
    // timeout and the client-stall bound limit its life.
    tokio::spawn(job.run(upstream));
    let mut response = Response::new(Body::new(ChannelBody(rx)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_trace_headers(response, &trace_id, overhead_so_far)
}

struct StreamJob {
    state: AppState,
    ctx: TenantCtx,
    rid: RequestId,
    model: String,
    include_usage: bool,
    created: i64,
    prepared: Prepared,
    upstream_wait: Duration,
    tx: mpsc::Sender<Bytes>,
}

/// Why a stream ended early.
enum Stop {
    Upstream(UpstreamError),
    Client,
}

impl StreamJob {
    fn frame(&self, index: u32, delta: Value, finish: Option<&str>, ext: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": completion_id(&self.prepared.trace.id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        });
        if let Some(ext) = ext {
            chunk["bulkhead"] = ext;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    /// Sends a frame; false when the client is gone or stopped reading.
    async fn send(&self, frame: Bytes) -> bool {
        let stall = self.state.gateway.client_stall;
        matches!(
            tokio::time::timeout(stall, self.tx.send(frame)).await,
            Ok(Ok(()))
        )
    }

    /// Sends a choice's role, once: the first frame of that choice.
    async fn start_choice(&self, sent: &mut BTreeMap<u32, Answer>, index: u32) -> bool {
        if sent.contains_key(&index) {
            return true;
        }
        sent.insert(index, Answer::default());
        self.send(self.frame(
            index,
            json!({"role": "assistant", "content": ""}),
            None,
            None,
        ))
        .await
    }

    /// Sends released text of one field of a choice, and remembers it as delivered.
    async fn deliver(
        &self,
        sent: &mut BTreeMap<u32, Answer>,
        index: u32,
        field: Field,
        text: String,
    ) -> bool {
        let frame = self.frame(index, text_delta(field, &text), None, None);
        let answer = sent.entry(index).or_default();
        let slot = match field {
            Field::Refusal => &mut answer.refusal,
            Field::Transcript => &mut answer.audio_transcript,
            _ => &mut answer.content,
        };
        slot.get_or_insert_with(String::new).push_str(&text);
        self.send(frame).await
    }

    /// The streamed chat task: reads and guards the upstream's events, decides
    /// what the scanner still holds, traces the call, then ends the stream for
    /// the client, in that order.
    async fn run(mut self, mut upstream: ChatStream) {
        let state = self.state.clone();
        let tenant = self.ctx.tenant().clone();
        let mut p = Progress {
            scanner: Scanner(Some(
                state
                    .guard
                    .guard
                    .answer_stream(&tenant, &self.prepared.pack.guard),
            )),
            decision: Decision::default(),
            sent: BTreeMap::new(),
            finish_reasons: BTreeMap::new(),
            tools: BTreeMap::new(),
            functions: BTreeMap::new(),
            usage: None,
            first_token: None,
            stop: None,
        };
        if !self.start_choice(&mut p.sent, 0).await {
            p.stop = Some(Stop::Client);
        }
        self.read_upstream(&mut upstream, &mut p).await;
        // Closing the upstream connection now, not when the trace is written.
        drop(upstream);
        if p.decision.blocked {
            p.finish_blocked().await;
        }
        if !p.decision.blocked && !matches!(p.stop, Some(Stop::Client)) {
            self.release_rest(&mut p).await;
        }
        state
            .traffic
            .record_findings(state.vault.now(), &p.decision.findings, p.decision.blocked);
        let leak_report = report_leak(
            &state,
            &self.ctx,
            &self.rid,
            &self.prepared.pack,
            &p.decision.findings,
            LeakSource::ModelAnswer(&self.prepared.upstream_body),
        )
        .await
        .map_err(ApiError::from);
        self.settle_trace(&mut p);
        let saved = self.save_turn(&p).await;
        let overhead = self
            .prepared
            .started
            .elapsed()
            .saturating_sub(self.upstream_wait);
        state
            .metrics
            .model_call(self.prepared.trace.outcome.as_str(), overhead);
        if matches!(p.stop, Some(Stop::Client)) {
            return;
        }
        self.send_ending(&p, overhead, leak_report.and(saved)).await;
    }

    /// Reads the upstream's events until it ends or fails, the client leaves, or
    /// the guard blocks; every text goes through the scanner before it is sent.
    async fn read_upstream(&mut self, upstream: &mut ChatStream, p: &mut Progress) {
        while p.stop.is_none() && !p.decision.blocked {
            let asked = Instant::now();
            // A client that leaves is noticed at once, not at the next send: the
            // scanner may hold a slow drip back for a long time.
            let next = tokio::select! {
                next = upstream.next() => next,
                () = self.tx.closed() => {
                    p.stop = Some(Stop::Client);
                    break;
                }
            };
            self.upstream_wait += asked.elapsed();
            let delta = match next {
                None => break,
                Some(Err(e)) => {
                    p.stop = Some(Stop::Upstream(e));
                    break;
                }
                Some(Ok(d)) => d,
            };
            if delta.usage.is_some() {
                p.usage = delta.usage;
            }
            for choice in delta.choices {
                if !self.take_choice(p, choice).await {
                    return;
                }
            }
        }
    }

    /// Takes one choice's piece of an event: starts the choice, scans and sends
    /// its texts, merges its tool calls. False when reading must stop (the
    /// client left, or the guard blocked).
    async fn take_choice(&self, p: &mut Progress, choice: ChoiceDelta) -> bool {
        let index = choice.index;
        if !self.start_choice(&mut p.sent, index).await {
            p.stop = Some(Stop::Client);
            return false;
        }
        // Each choice's texts are parts of their own: what is sent stays under
        // the choice's index, and the verdict is over all of them.
        for (field, text) in [
            (Field::Content, choice.content),
            (Field::Refusal, choice.refusal),
            (Field::Transcript, choice.audio_transcript),
        ] {
            let Some(text) = text else { continue };
            p.first_token
                .get_or_insert_with(|| self.prepared.started.elapsed());
            let out = p.scanner.push(stream_part(index, field), text).await;
            p.decision.findings.extend(out.findings);
            if out.blocked {
                p.decision.blocked = true;
                return false;
            }
            if !out.release.is_empty()
                && !self.deliver(&mut p.sent, index, field, out.release).await
            {
                p.stop = Some(Stop::Client);
                return false;
            }
        }
        merge_tool_calls(&mut p.tools, index, &choice.tool_calls);
        if let Some(piece) = &choice.function_call {
            p.functions.entry(index).or_default().merge(piece);
        }
        if let Some(reason) = choice.finish_reason {
            p.finish_reasons.insert(index, reason);
        }
        true
    }

    /// What is left once the upstream stopped with nothing blocked and the
    /// client still there. Tool calls, merged by choice and index, are scanned
    /// whole with the rest of the answer, and only when the upstream finished: a
    /// cut answer sends none. Whatever the scanner still holds is decided now; on
    /// an upstream fault the part already received is still the tenant's to see,
    /// scanned.
    async fn release_rest(&self, p: &mut Progress) {
        let mut calls = p.merged_calls();
        let (slots, mut released) = p.scan_rest(&calls).await;
        if p.decision.blocked {
            return;
        }
        self.deliver_held(p, &released).await;
        for (part, choice, field) in slots {
            let text = released.remove(&part).unwrap_or_default();
            if let Some(slot) = calls.get_mut(&choice).and_then(|a| field_mut(a, field)) {
                *slot = text;
            }
        }
        self.send_calls(p, calls).await;
    }

    /// Sends the text the scanner released at the end (not the tool calls'),
    /// each under its choice and field.
    async fn deliver_held(&self, p: &mut Progress, released: &BTreeMap<usize, String>) {
        for (part, text) in released {
            if *part >= TOOL_PARTS_FIRST || text.is_empty() {
                continue;
            }
            let (index, field) = stream_field(*part);
            if !self.deliver(&mut p.sent, index, field, text.clone()).await {
                p.stop = Some(Stop::Client);
                break;
            }
        }
    }

    /// Sends each choice's scanned tool and function calls in one frame, and
    /// remembers them as delivered.
    async fn send_calls(&self, p: &mut Progress, calls: BTreeMap<u32, Answer>) {
        for (index, answer) in calls {
            if p.stop.is_some() {
                break;
            }
            let delta = calls_delta(&answer);
            let ok = self.start_choice(&mut p.sent, index).await
                && self.send(self.frame(index, delta, None, None)).await;
            let delivered = p.sent.entry(index).or_default();
            delivered.tool_calls = answer.tool_calls;
            delivered.function_call = answer.function_call;
            if !ok {
                p.stop = Some(Stop::Client);
            }
        }
    }

    /// Writes what was decided into the call's trace: verdict, outcome, finish
    /// reason, output hash, latency. A block turns every started choice into
    /// the notice first, so the hash is of what the client is given.
    fn settle_trace(&mut self, p: &mut Progress) {
        let mut trace = std::mem::replace(&mut self.prepared.trace, placeholder_trace());
        trace.guard = p.decision.summary();
        trace.usage = p.usage.clone();
        std::mem::replace(&mut self.prepared.tokens, TokenGrant::none())
            .settle(bulkhead_app::quota::reported_tokens(p.usage.as_ref()));
        if p.decision.blocked {
            for (index, answer) in &mut p.sent {
                *answer = blocked_answer();
                p.finish_reasons.insert(*index, "content_filter".into());
            }
        }
        trace.outcome = match &p.stop {
            _ if p.decision.blocked => TraceOutcome::Blocked,
            Some(Stop::Client) => TraceOutcome::ClientDisconnected,
            Some(Stop::Upstream(e)) => upstream_outcome(e),
            None => p.decision.outcome(),
        };
        if let Some(Stop::Upstream(e)) = &p.stop {
            tracing::warn!(trace = %trace.id, upstream = %trace.upstream, error = %e, "stream failed at the upstream");
            trace.error = Some(e.to_string());
        }
        trace.finish_reason = p.sent.keys().next().map(|i| p.finish_of(i));
        trace.output_hash = Some(output_hash(p.sent.values()));
        set_latency(
            &mut trace,
            self.prepared.started,
            self.upstream_wait,
            p.first_token,
        );
        self.prepared.trace = trace;
    }

    /// Stores the turn in the session (when the client was given all of choice
    /// 0), then commits the trace; the first error of the two, both attempted.
    async fn save_turn(&mut self, p: &Progress) -> ApiResult<()> {
        let mut stored = Ok(());
        let complete = p.decision.blocked || p.stop.is_none();
        if let (Some(session), Some(first), true) =
            (&mut self.prepared.session, p.sent.values().next(), complete)
        {
            let mut turn = std::mem::take(&mut self.prepared.new_turn);
            turn.push(session_message(first));
            stored = session
                .append(
                    &self.state,
                    &self.ctx,
                    self.state.gateway.sessions,
                    turn,
                    &self.prepared.trace.id,
                )
                .await
                .map_err(ApiError::from);
        }
        let committed = commit_trace(
            &self.state,
            &self.ctx,
            &self.rid,
            &self.prepared.trace,
            &self.prepared.pack,
        )
        .await
        .map_err(ApiError::from);
        stored.and(committed)
    }

    /// Ends the stream for a client still there: an `error` event when the call
    /// failed after the answer began, otherwise every choice's finish.
    async fn send_ending(&self, p: &Progress, overhead: Duration, saved: ApiResult<()>) {
        let ext = extension(&self.prepared.trace, overhead);
        let failure = match (&p.stop, saved) {
            (_, Err(e)) => Some((e.kind.code(), e.detail)),
            (Some(Stop::Upstream(e)), Ok(_)) if !p.decision.blocked => Some((
                e.outcome(),
                format!("{e}; see trace {}", self.prepared.trace.id),
            )),
            _ => None,
        };
        if let Some((code, message)) = failure {
            // OpenAI SDKs raise an APIError on an `error` event: the client learns
            // the answer is incomplete instead of taking it for a whole one.
            let event = json!({
                "error": {"message": message, "type": "upstream_error", "code": code},
                "bulkhead": ext,
            });
            let _ = self.send(Bytes::from(format!("data: {event}\n\n"))).await;
            return;
        }
        self.send_finishes(p, ext).await;
    }

    /// Every choice that started ends with its own finish (the notice, when
    /// blocked); the last frame carries the extension; then the usage, when
    /// asked for, and `[DONE]`.
    async fn send_finishes(&self, p: &Progress, ext: Value) {
        let indexes: Vec<u32> = p.sent.keys().copied().collect();
        for (n, index) in indexes.iter().enumerate() {
            let ext = (n + 1 == indexes.len()).then(|| ext.clone());
            let last = if p.decision.blocked {
                self.frame(
                    *index,
                    json!({"content": BLOCKED_NOTICE}),
                    Some("content_filter"),
                    ext,
                )
            } else {
                self.frame(*index, json!({}), Some(&p.finish_of(index)), ext)
            };
            if !self.send(last).await {
                return;
            }
        }
        if self.include_usage
            && let Some(u) = &p.usage
        {
            let chunk = json!({
                "id": completion_id(&self.prepared.trace.id),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": u,
            });
            if !self.send(Bytes::from(format!("data: {chunk}\n\n"))).await {
                return;
            }
        }
        let _ = self.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }
}

/// What a stream's task has so far, handed from stage to stage: the scanner,
/// the guard's decision, what each choice was sent, what is still to send.
struct Progress {
    scanner: Scanner,
    decision: Decision,
    /// What each choice was sent, by index; a choice is here once its role was.
    sent: BTreeMap<u32, Answer>,
    finish_reasons: BTreeMap<u32, String>,
    tools: BTreeMap<(u32, u32), ToolCall>,
    functions: BTreeMap<u32, FunctionCall>,
    usage: Option<Value>,
    first_token: Option<Duration>,
    stop: Option<Stop>,
}

impl Progress {
    /// A choice's finish reason, `stop` when the upstream gave none.
    fn finish_of(&self, index: &u32) -> String {
        self.finish_reasons
            .get(index)
            .cloned()
            .unwrap_or_else(|| "stop".into())
    }

    /// After a block: ending the scan closes what was still open (a cluster of
    /// another tenant's fingerprints), so the block carries its finding. Nothing
    /// is released once blocked.
    async fn finish_blocked(&mut self) {
        if let Some(outs) = self.scanner.run(0, |s| s.finish()).await {
            for (_, out) in outs {
                debug_assert!(out.release.is_empty());
                self.decision.findings.extend(out.findings);
            }
        }
    }

    /// The merged tool and function calls by choice, when the upstream finished
    /// (none on a cut answer).
    fn merged_calls(&mut self) -> BTreeMap<u32, Answer> {
        let mut calls: BTreeMap<u32, Answer> = BTreeMap::new();
        if self.stop.is_none() {
            for ((choice, _), call) in std::mem::take(&mut self.tools) {
                calls.entry(choice).or_default().tool_calls.push(call);
            }
            for (choice, call) in std::mem::take(&mut self.functions) {
                calls.entry(choice).or_default().function_call = Some(call);
            }
        }
        calls
    }

    /// Scans the calls' texts as parts from `TOOL_PARTS_FIRST` and ends the scan:
    /// where each call text sits, and what was released by part.
    async fn scan_rest(
        &mut self,
        calls: &BTreeMap<u32, Answer>,
    ) -> (Vec<(usize, u32, Field)>, BTreeMap<usize, String>) {
        let mut slots: Vec<(usize, u32, Field)> = Vec::new();
        let mut texts: Vec<(usize, String)> = Vec::new();
        for (choice, answer) in calls {
            for (field, text) in answer_texts(answer) {
                let part = TOOL_PARTS_FIRST + texts.len();
                slots.push((part, *choice, field));
                texts.push((part, text.to_owned()));
            }
        }
        // Scanned only, as in a whole answer (`guard_choices`): no slot, so
        // nothing of them is sent.
        let fields = calls.values().flat_map(answer_texts);
        for view in joined_views(fields) {
            texts.push((TOOL_PARTS_FIRST + texts.len(), view));
        }
        let texts = Zeroizing::new(texts);
        let bytes = texts.iter().map(|(_, t)| t.len()).sum();
        let outs = self
            .scanner
            .run(bytes, move |s| {
                let mut outs: Vec<(usize, StreamOutput)> = texts
                    .iter()
                    .map(|(part, text)| (*part, s.push(*part, text)))
                    .collect();
                outs.extend(s.finish());
                outs
            })
            .await;
        let mut released: BTreeMap<usize, String> = BTreeMap::new();
        match outs {
            None => self.decision.blocked = true,
            Some(outs) => {
                for (part, out) in outs {
                    self.decision.findings.extend(out.findings);
                    self.decision.blocked |= out.blocked;
                    released.entry(part).or_default().push_str(&out.release);
                }
            }
        }
        (slots, released)
    }
}

/// The delta that carries one choice's tool calls (each with its `index`) and
/// function call.
fn calls_delta(answer: &Answer) -> Value {
    let mut delta = serde_json::Map::new();
    if !answer.tool_calls.is_empty() {
        let list: Vec<Value> = answer
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let mut call = call.to_json();
                call["index"] = Value::from(i);
                call
            })
            .collect();
        delta.insert("tool_calls".into(), Value::Array(list));
    }
    if let Some(f) = &answer.function_call {
        delta.insert("function_call".into(), f.to_json());
    }
    Value::Object(delta)
}

fn placeholder_trace() -> Trace {
    Trace {
        id: String::new(),
        call: String::new(),
        tenant: String::new(),
        key_id: String::new(),
        request_id: String::new(),
        model: String::new(),
        upstream: String::new(),
        region: String::new(),
        stream: true,
        started_at: String::new(),
        prompt_hash: String::new(),
        messages: 0,
        session_id: None,
        context: Vec::new(),
        injection: None,
        guard: GuardSummary::default(),
        output_hash: None,
        finish_reason: None,
        usage: None,
        latency_ms: Latency::default(),
        outcome: TraceOutcome::Pending,
        error: None,
    }
}

/// Merges streamed tool-call pieces by choice and by their `index` within it:
/// ids, types and names are set when a piece has them, arguments (or a custom
/// call's input) arrive in pieces and are concatenated.
fn merge_tool_calls(
    tools: &mut BTreeMap<(u32, u32), ToolCall>,
    choice: u32,
    pieces: &[ToolCallDelta],
) {
    for piece in pieces {
        tools.entry((choice, piece.index)).or_default().merge(piece);
    }
}

/// `POST /v1/embeddings`: the tenant's inputs to the model it may use, with its
/// pseudonym; traced like a chat call.
pub async fn embeddings(
    Arrival(started): Arrival,
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    JsonBytes(body): JsonBytes,
) -> Response {
    let gw = &state.gateway;
    let req = match openai::parse_embeddings(&body, gw.embedding_inputs_max) {
        Ok(r) => r,
        Err(e) => return request_error(e).into_response(),
    };
    let tenant = match state.vault.tenant(ctx.tenant()).await {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let route = match gw
        .gateway
        .route(&req.model, &tenant.region, tenant.models.as_deref())
    {
        Ok(r) => r,
        Err(e) => return no_such_model(e).into_response(),
    };
    // The embedding budget: bytes of text (or of the token arrays' JSON) sent.
    let bytes = match req.inputs.is_empty() {
        false => req.inputs.iter().map(|i| i.len() as u64).sum(),
        true => serde_json::to_vec(&req.raw_input).map_or(0, |b| b.len() as u64),
    };
    if let Err(e) = state.quotas.spend_embedding(ctx.tenant(), bytes).await {
        return ApiError::from(e).into_response();
    }
    let pack = state.packs.for_tenant(&tenant.policy);
    let mut trace = placeholder_trace();
    trace.id = traces::new_trace_id();
    trace.call = "embeddings".into();
    trace.tenant = ctx.tenant().to_string();
    trace.key_id = ctx.key_id().to_string();
    trace.request_id = rid.0.clone();
    trace.model = req.model.clone();
    trace.upstream = route.upstream.name().to_owned();
    trace.region = tenant.region.to_string();
    trace.stream = false;
    trace.started_at = traces::started_at(state.vault.now());
    trace.prompt_hash = content_hash(&serde_json::to_vec(&req.raw_input).unwrap_or_default());
    trace.messages = req.inputs.len();
    trace.guard.verdict = Some(Verdict::Allow);
    let asked = Instant::now();
    let result = gw.gateway.embeddings(route, ctx.tenant(), &req).await;
    let upstream = asked.elapsed();
    let mut answer = match result {
        Ok(v) => v,
        Err(e) => {
            return upstream_failed(&state, &ctx, &rid, &pack, trace, (started, upstream), e).await;
        }
    };
    trace.outcome = TraceOutcome::Ok;
    trace.usage = answer.get("usage").cloned();
    trace.output_hash = Some(content_hash(
        &serde_json::to_vec(&answer["data"]).unwrap_or_default(),
    ));
    set_latency(&mut trace, started, upstream, None);
    if let Err(e) = commit_trace(&state, &ctx, &rid, &trace, &pack).await {
        return ApiError::from(e).into_response();
    }
    let overhead = started.elapsed().saturating_sub(upstream);
    state.metrics.model_call("ok", overhead);
    answer["model"] = Value::String(req.model);
    answer["bulkhead"] = extension(&trace, overhead);
    with_trace_headers(
        (StatusCode::OK, Json(answer)).into_response(),
        &trace.id,
        overhead,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_pieces_merge_by_choice_and_index() {
        use bulkhead_gateway::ToolKind;
        let piece = |index, id: Option<&str>, name: Option<&str>, args: &str| ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            kind: id.map(|_| ToolKind::Function),
            name: name.map(str::to_owned),
            arguments: Some(args.to_owned()),
        };
        let mut tools = BTreeMap::new();
        merge_tool_calls(
            &mut tools,
            0,
            &[piece(0, Some("call_1"), Some("f"), "{\"a\"")],
        );
        // Choice 1's call 0 is another call than choice 0's.
        merge_tool_calls(&mut tools, 1, &[piece(0, Some("call_9"), Some("h"), "{}")]);
        merge_tool_calls(
            &mut tools,
            0,
            &[
                piece(0, None, None, ":1}"),
                piece(1, Some("call_2"), Some("g"), ""),
            ],
        );
        assert_eq!(tools[&(0, 0)].arguments, "{\"a\":1}");
        assert_eq!(tools[&(0, 0)].id, "call_1");
        assert_eq!(tools[&(0, 1)].name, "g");
        assert_eq!(tools[&(1, 0)].arguments, "{}");
        assert_eq!(tools.len(), 3);
    }

    #[test]
    fn every_text_of_an_answer_is_a_part_and_goes_back_in_place() {
        let mut answer = Answer {
            content: Some("c".into()),
            refusal: None,
            tool_calls: vec![ToolCall {
                id: "i".into(),
                name: "n".into(),
                arguments: "a".into(),
                ..ToolCall::default()
            }],
            function_call: Some(FunctionCall {
                name: "fn".into(),
                arguments: String::new(),
            }),
            audio_transcript: Some("t".into()),
        };
        let texts: Vec<(Field, String)> = answer_texts(&answer)
            .into_iter()
            .map(|(f, t)| (f, t.to_owned()))
            .collect();
        let got: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            got,
            ["c", "t", "i", "n", "a", "fn"],
            "empty texts are no parts"
        );
        for (field, text) in &texts {
            *field_mut(&mut answer, *field).unwrap() = text.to_uppercase();
        }
        let m = message_json(&answer);
        assert_eq!(m["content"], "C");
        assert_eq!(m["audio"], json!({"transcript": "T"}));
        assert_eq!(
            m["tool_calls"],
            json!([{"id": "I", "type": "function", "function": {"name": "N", "arguments": "A"}}])
        );
        assert_eq!(m["function_call"], json!({"name": "FN", "arguments": ""}));
        assert!(!m.contains_key("refusal"));
        assert!(!session_message(&answer).0.contains_key("audio"));
    }

    #[test]
    fn stream_parts_map_back_to_their_choice_and_field() {
        for choice in 0..bulkhead_gateway::CHOICES_MAX as u32 {
            for field in [Field::Content, Field::Refusal, Field::Transcript] {
                let part = stream_part(choice, field);
                assert!(part < TOOL_PARTS_FIRST);
                assert_eq!(stream_field(part), (choice, field));
            }
        }
    }

    #[test]
    fn joined_views_read_content_and_labels_apart_in_order() {
        let fields = [
            (Field::Tool(0, CallField::Id), "call_0"),
            (Field::Tool(0, CallField::Name), "save"),
            (
                Field::Tool(0, CallField::Arguments),
                r#"{"text":"the Halc"}"#,
            ),
            (Field::Tool(1, CallField::Id), "call_1"),
            (Field::Tool(1, CallField::Name), "save"),
            (Field::Tool(1, CallField::Arguments), "yon deal"),
        ];
        assert_eq!(
            joined_views(fields.into_iter()),
            ["the Halcyon deal", "call_0savecall_1save"]
        );
        // One text alone is its own part already: no view.
        assert!(joined_views([(Field::Content, "only")].into_iter()).is_empty());
    }
}
