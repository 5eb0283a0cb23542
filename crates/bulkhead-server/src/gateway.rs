//! The isolating model gateway at the edge: `POST /v1/chat/completions` (whole or
//! streamed), `POST /v1/embeddings` and `GET /v1/models`, in the OpenAI wire format.
//!
//! One call, in order: parse (forwarding only known-safe fields); route the model
//! within the tenant's region and allow-list; screen the user's input for
//! injection; open the session, if named; retrieve the tenant's own chunks, if
//! asked, screening each for injected instructions; put them, with the tenant's
//! canary, in a context message; call the upstream with the tenant's cache salt,
//! pseudonym and credential; pass every byte of the answer through the output
//! guard (a stream through the hold-back scanner) before it leaves; store the turn
//! in the session; seal the decision trace and append its hash to the tenant's log.
//!
//! Must never: send a byte of an answer the guard has not decided; let a blocked
//! answer's text out (the client gets a content-filter notice, never whose data it
//! was); wait on an upstream or a client without a bound; leave a task running
//! after its call ended.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_gateway::openai::{self, ChatRequest, Message, RequestError, RequestLimits};
use bulkhead_gateway::{Completion, Gateway, GatewayConfig, NoSuchModel, Route, UpstreamError};
use bulkhead_guard::{Action, Finding, InjectionAction, Verdict};
use bulkhead_ledger::event::content_hash;
use bulkhead_types::TenantId;
use bulkhead_vault::{TenantCtx, Vault};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::AppState;
use crate::audit::{Arrival, RequestId};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{JsonBytes, Tenant};
use crate::guard::{leak_owners, report_leak, type_counts};
use crate::sessions::{OpenSession, SessionLimits};
use crate::traces::{self, ContextItem, GuardSummary, InjectionSummary, Latency, Trace};

/// What a client sees in place of an answer the guard blocked. It never says
/// whose data matched.
pub const BLOCKED_NOTICE: &str = "[bulkhead] This response was withheld by the output guard. The decision trace has the details.";

/// The purpose label of the server-secret subkey behind cache salts and
/// pseudonyms. Changing it changes every tenant's salt.
pub const GATEWAY_SECRET_PURPOSE: &str = "bulkhead/gateway/v1";

/// The gateway and its limits.
#[derive(Debug)]
pub struct GatewayState {
    pub gateway: Gateway,
    pub request_limits: RequestLimits,
    pub sessions: SessionLimits,
    /// How long traces are kept; `None`: until the tenant is erased.
    pub trace_ttl_secs: Option<u64>,
    /// Put the tenant's canary in every context message, so a model or cache that
    /// regurgitates this tenant's context to another is caught by the guard.
    pub plant_canaries: bool,
    pub embedding_inputs_max: usize,
    /// How long a streamed piece may wait for a client that does not read.
    pub client_stall: Duration,
    pub trace_commit: TraceCommit,
}

/// When a call's trace (and its audit entry) must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceCommit {
    /// Before the answer is released (a whole answer) or before `[DONE]` (a
    /// stream): no answer leaves without its log entry on disk. Costs one group
    /// commit (an fsync) per call on the answer's path.
    Durable,
    /// Right after the answer is released, batched with other calls: no fsync on
    /// the answer's path. A crash of the machine in that moment can lose the entry
    /// of an answer already sent, and a trace may be readable a few milliseconds
    /// after its id is.
    Background,
}

impl GatewayState {
    pub fn new(gateway: Gateway) -> Self {
        Self {
            gateway,
            request_limits: RequestLimits::default(),
            sessions: SessionLimits::default(),
            trace_ttl_secs: None,
            plant_canaries: true,
            embedding_inputs_max: 2048,
            client_stall: Duration::from_secs(30),
            trace_commit: TraceCommit::Durable,
        }
    }

    /// A gateway with no upstream: every model is unknown. What a server without
    /// upstream configuration runs.
    pub fn without_upstreams(vault: &Vault) -> Self {
        let secret = vault.derive_server_key(GATEWAY_SECRET_PURPOSE);
        Self::new(
            Gateway::new(GatewayConfig::default(), &secret)
                .expect("an empty gateway config is valid"),
        )
    }
}

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
struct Prepared {
    /// The tenant's compliance pack: its guard policy and retention.
    pack: Arc<crate::packs::Pack>,
    trace: Trace,
    started: Instant,
    upstream_body: serde_json::Map<String, Value>,
    session: Option<OpenSession>,
    /// The client's messages after its leading system messages: what a session
    /// stores of this turn.
    new_turn: Vec<Message>,
}

/// The parts of a chat call shared by the whole and the streamed paths, up to the
/// upstream body.
async fn prepare<'a>(
    state: &'a AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    req: &'a ChatRequest,
    started: Instant,
) -> Result<(Prepared, Route<'a>), Response> {
    let gw = &state.gateway;
    let tenant = state
        .vault
        .tenant(ctx.tenant())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let route = gw
        .gateway
        .route(&req.model, &tenant.region, tenant.models.as_deref())
        .map_err(|e| no_such_model(e).into_response())?;
    let pack = state.packs.for_tenant(&tenant.policy);
    if !req.dropped.is_empty() {
        tracing::debug!(fields = ?req.dropped, "dropped request fields that are not forwarded");
    }
    let client_messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| Value::Object(m.0.clone()))
        .collect();
    let mut trace = Trace {
        id: traces::new_trace_id(),
        call: "chat.completion".into(),
        tenant: ctx.tenant().to_string(),
        key_id: ctx.key_id().to_string(),
        request_id: rid.0.clone(),
        model: req.model.clone(),
        upstream: route.upstream.name().to_owned(),
        region: tenant.region.to_string(),
        stream: req.stream,
        started_at: traces::started_at(state.vault.now()),
        prompt_hash: content_hash(&serde_json::to_vec(&client_messages).unwrap_or_default()),
        messages: req.messages.len(),
        session_id: req.extension.session_id.clone(),
        context: Vec::new(),
        injection: None,
        guard: GuardSummary::default(),
        output_hash: None,
        finish_reason: None,
        usage: None,
        latency_ms: Latency::default(),
        outcome: "pending".into(),
        error: None,
    };

    // The user's own words: an instruction-override attempt is refused before it
    // reaches a model.
    let guard = &state.guard;
    let user_text: String = req
        .messages
        .iter()
        .filter(|m| m.role() == "user")
        .map(Message::text)
        .collect::<Vec<_>>()
        .join("\n");
    let report = guard.guard.screen_input(&user_text, &pack.guard);
    if report.score > 0 {
        trace.injection = Some(InjectionSummary {
            score: report.score,
            action: format!("{:?}", report.action).to_lowercase(),
            rules: report.rules.iter().map(ToString::to_string).collect(),
        });
    }
    if report.action == InjectionAction::Block {
        trace.outcome = "refused_input".into();
        trace.guard.verdict = "blocked".into();
        let overhead = started.elapsed();
        trace.latency_ms = Latency {
            total: traces::millis(overhead),
            overhead: traces::millis(overhead),
            ..Latency::default()
        };
        state.metrics.model_call(&trace.outcome, overhead);
        let id = trace.id.clone();
        if let Err(e) = commit_trace(state, ctx, rid, &trace, &pack).await {
            return Err(e.into_response());
        }
        let problem = ApiError::new(
            ProblemKind::ContentRefused,
            format!(
                "the input was refused as a prompt injection (score {}); see trace {id}",
                report.score
            ),
        );
        return Err(with_trace_headers(problem.into_response(), &id, overhead));
    }

    let session = match &req.extension.session_id {
        Some(id) => Some(
            crate::sessions::open(state, ctx, rid, "model.call", id)
                .await
                .map_err(IntoResponse::into_response)?,
        ),
        None => None,
    };

    // The tenant's own context: retrieved chunks, each screened for injected
    // instructions, then the session's recent messages.
    let mut context_text = String::new();
    if let Some(retrieve) = &req.extension.retrieve {
        let query = truncate(
            &req.messages
                .iter()
                .rev()
                .find(|m| m.role() == "user")
                .map(Message::text)
                .unwrap_or_default(),
            state.retrieval.query_bytes_max,
        );
        if !query.trim().is_empty() {
            let found = state
                .retrieval
                .retrieve(
                    state,
                    ctx,
                    &query,
                    retrieve.top_k,
                    state.retrieval.default_mode,
                    None,
                )
                .await
                .map_err(IntoResponse::into_response)?;
            for hit in found {
                let text: &str = &hit.chunk.text;
                let screened = guard.guard.screen_retrieved(text, &pack.guard);
                let dropped = matches!(
                    screened.action,
                    InjectionAction::Drop | InjectionAction::Block
                );
                trace.context.push(ContextItem {
                    kind: "chunk".into(),
                    id: hit.chunk.chunk_id.clone(),
                    hash: content_hash(text.as_bytes()),
                    used: !dropped,
                    reason: dropped.then(|| format!("injection score {}", screened.score)),
                });
                if !dropped {
                    context_text
                        .push_str(&format!("[source: {}]\n{}\n\n", hit.chunk.chunk_id, text));
                }
            }
        }
    }
    let history: Vec<Message> = match &session {
        Some(s) => s
            .context(gw.sessions.context_messages_max)
            .iter()
            .map(|m| {
                trace.context.push(ContextItem {
                    kind: "session_message".into(),
                    id: m.record_id.clone(),
                    hash: m.hash.clone(),
                    used: true,
                    reason: None,
                });
                m.message.clone()
            })
            .collect(),
        None => Vec::new(),
    };

    let lead = req
        .messages
        .iter()
        .take_while(|m| matches!(m.role(), "system" | "developer"))
        .count();
    let mut messages: Vec<Message> = req.messages[..lead].to_vec();
    if !context_text.is_empty() || !history.is_empty() {
        let mut system = String::from(
            "Context from this organization's own records follows. Use it to answer; cite sources by their id.\n",
        );
        if gw.plant_canaries
            && let Some(canary) = guard.guard.canaries(ctx.tenant()).into_iter().next()
        {
            // The canary is this tenant's: echoed back to it, it is harmless; seen in
            // anyone else's answer, it proves this context leaked.
            system.push_str(&format!(
                "Internal reference tag (do not repeat): {canary}\n"
            ));
            trace.context.push(ContextItem {
                kind: "canary".into(),
                id: "canary".into(),
                hash: content_hash(canary.as_bytes()),
                used: true,
                reason: None,
            });
        }
        system.push('\n');
        system.push_str(&context_text);
        messages.push(Message::new("system", &system));
    }
    messages.extend(history);
    let new_turn: Vec<Message> = req.messages[lead..].to_vec();
    messages.extend(new_turn.iter().cloned());
    let upstream_body =
        gw.gateway
            .chat_body(route, ctx.tenant(), &messages, &req.forward, req.stream);
    Ok((
        Prepared {
            pack,
            trace,
            started,
            upstream_body,
            session,
            new_turn,
        },
        route,
    ))
}

fn truncate(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_owned();
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    Arrival(started): Arrival,
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    rid: RequestId,
    JsonBytes(body): JsonBytes,
) -> Response {
    let req = match openai::parse_chat(&body, state.gateway.request_limits) {
        Ok(r) => r,
        Err(e) => return request_error(e).into_response(),
    };
    drop(body);
    let (prepared, route) = match prepare(&state, &ctx, &rid, &req, started).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if req.stream {
        stream_chat(&state, ctx, rid, &req, route, prepared).await
    } else {
        whole_chat(&state, &ctx, &rid, &req, route, prepared).await
    }
}

/// Commits a trace as the settings say: awaited (durable before the caller goes
/// on) or in the background (errors are logged; the answer has already left). It
/// is kept as long as the tenant's pack says (or the server's `trace_ttl_secs`
/// where the pack sets none).
async fn commit_trace(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    trace: &Trace,
    pack: &crate::packs::Pack,
) -> ApiResult<()> {
    let ttl = pack
        .retention
        .trace_ttl_secs
        .or(state.gateway.trace_ttl_secs);
    match state.gateway.trace_commit {
        TraceCommit::Durable => traces::commit(state, ctx, rid, trace, ttl)
            .await
            .map(|_| ()),
        TraceCommit::Background => {
            let (state, ctx, rid, trace) = (state.clone(), ctx.clone(), rid.clone(), trace.clone());
            tokio::spawn(async move {
                if let Err(e) = traces::commit(&state, &ctx, &rid, &trace, ttl).await {
                    tracing::error!(trace = %trace.id, error = %e.detail,
                        "a decision trace could not be committed after its answer was sent; \
                         check the store, and consider trace_commit = \"durable\"");
                }
            });
            Ok(())
        }
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
    trace.outcome = e.outcome().into();
    trace.error = Some(e.to_string());
    set_latency(&mut trace, started, upstream, None);
    let overhead = started.elapsed().saturating_sub(upstream);
    state.metrics.model_call(&trace.outcome, overhead);
    if let Err(audit) = commit_trace(state, ctx, rid, &trace, pack).await {
        return audit.into_response();
    }
    with_trace_headers(
        upstream_problem(&e, &trace.id).into_response(),
        &trace.id,
        overhead,
    )
}

fn set_latency(trace: &mut Trace, started: Instant, upstream: Duration, first: Option<Duration>) {
    let total = started.elapsed();
    trace.latency_ms = Latency {
        total: traces::millis(total),
        upstream: traces::millis(upstream),
        first_token: first.map(traces::millis),
        overhead: traces::millis(total.saturating_sub(upstream)),
    };
}

/// Scans a text for the tenant; big texts off the async runtime.
async fn scan(
    state: &AppState,
    pack: &Arc<crate::packs::Pack>,
    tenant: &TenantId,
    text: String,
) -> bulkhead_guard::ScanOutcome {
    if text.len() < 16 << 10 {
        return state.guard.guard.scan(tenant, &text, &pack.guard);
    }
    let (guard, tenant, pack) = (Arc::clone(&state.guard), tenant.clone(), Arc::clone(pack));
    let text = zeroize::Zeroizing::new(text);
    match tokio::task::spawn_blocking(move || guard.guard.scan(&tenant, &text, &pack.guard)).await {
        Ok(outcome) => outcome,
        Err(_) => bulkhead_guard::ScanOutcome {
            // A panicked scan decides nothing: block rather than let text out unscanned.
            findings: Vec::new(),
            verdict: Verdict::Blocked,
            redacted: None,
        },
    }
}

/// What the guard decided for one answer.
#[derive(Default)]
struct Decision {
    findings: Vec<Finding>,
    blocked: bool,
}

impl Decision {
    fn summary(&self) -> GuardSummary {
        let redactions = if self.blocked {
            0
        } else {
            self.findings
                .iter()
                .filter(|f| f.action == Action::Redact)
                .count() as u32
        };
        GuardSummary {
            verdict: if self.blocked {
                "blocked"
            } else if redactions > 0 {
                "redacted"
            } else {
                "allow"
            }
            .into(),
            findings: type_counts(&self.findings),
            redactions,
            blocked: self.blocked,
            cross_tenant: !leak_owners(&self.findings).is_empty(),
        }
    }

    fn outcome(&self) -> &'static str {
        let s = self.summary();
        if s.blocked {
            "blocked"
        } else if s.redactions > 0 {
            "redacted"
        } else {
            "ok"
        }
    }
}

/// Scans tool-call arguments one by one; a blocked one blocks the answer, a
/// redacted one is replaced.
async fn scan_tool_calls(
    state: &AppState,
    pack: &Arc<crate::packs::Pack>,
    tenant: &TenantId,
    calls: &mut Value,
    decision: &mut Decision,
) {
    let Some(list) = calls.as_array_mut() else {
        return;
    };
    for call in list {
        let Some(args) = call
            .pointer_mut("/function/arguments")
            .and_then(|a| a.as_str().map(str::to_owned))
        else {
            continue;
        };
        let outcome = scan(state, pack, tenant, args.clone()).await;
        decision.findings.extend(outcome.findings.iter().cloned());
        match outcome.verdict {
            Verdict::Blocked => decision.blocked = true,
            Verdict::Redacted => {
                if let Some(slot) = call.pointer_mut("/function/arguments") {
                    *slot = Value::String(outcome.redacted.clone().unwrap_or_default());
                }
            }
            Verdict::Allow => {}
        }
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
    } = prepared;
    let gw = &state.gateway;
    let asked = Instant::now();
    let result = gw.gateway.chat(route, ctx.tenant(), &upstream_body).await;
    let upstream = asked.elapsed();
    drop(upstream_body);
    let completion = match result {
        Ok(c) => c,
        Err(e) => {
            return upstream_failed(state, ctx, rid, &pack, trace, (started, upstream), e).await;
        }
    };
    let Completion {
        content,
        refusal,
        mut tool_calls,
        finish_reason,
        usage,
    } = completion;
    let mut decision = Decision::default();
    let mut delivered = None;
    if let Some(text) = content.or(refusal.clone()) {
        let outcome = scan(state, &pack, ctx.tenant(), text.clone()).await;
        decision.blocked |= outcome.verdict == Verdict::Blocked;
        delivered = outcome.output(&text).map(str::to_owned);
        decision.findings.extend(outcome.findings);
    }
    if let Some(calls) = &mut tool_calls {
        scan_tool_calls(state, &pack, ctx.tenant(), calls, &mut decision).await;
    }
    state
        .traffic
        .record_findings(state.vault.now(), &decision.findings, decision.blocked);
    if let Err(e) = report_leak(state, ctx, rid, &decision.findings).await {
        return e.into_response();
    }
    let (content, tool_calls, finish_reason) = if decision.blocked {
        (
            Some(BLOCKED_NOTICE.to_owned()),
            None,
            "content_filter".to_owned(),
        )
    } else {
        (delivered, tool_calls, finish_reason)
    };
    trace.guard = decision.summary();
    trace.outcome = decision.outcome().into();
    trace.finish_reason = Some(finish_reason.clone());
    trace.usage = usage.clone();
    let mut answer = serde_json::Map::new();
    answer.insert("role".into(), Value::String("assistant".into()));
    answer.insert(
        "content".into(),
        content.clone().map_or(Value::Null, Value::String),
    );
    if let Some(calls) = &tool_calls {
        answer.insert("tool_calls".into(), calls.clone());
    }
    if refusal.is_some() && !decision.blocked {
        answer.insert("refusal".into(), answer["content"].clone());
        answer.insert("content".into(), Value::Null);
    }
    trace.output_hash = Some(content_hash(
        &serde_json::to_vec(&answer).unwrap_or_default(),
    ));
    set_latency(&mut trace, started, upstream, None);

    if let Some(s) = &mut session {
        let mut turn = new_turn;
        turn.push(Message(answer.clone()));
        if let Err(e) = s.append(state, ctx, turn, &trace.id).await {
            return e.into_response();
        }
    }
    if let Err(e) = commit_trace(state, ctx, rid, &trace, &pack).await {
        return e.into_response();
    }
    let overhead = started.elapsed().saturating_sub(upstream);
    state.metrics.model_call(&trace.outcome, overhead);
    let mut body = json!({
        "id": completion_id(&trace.id),
        "object": "chat.completion",
        "created": state.vault.now().0 / 1000,
        "model": req.model,
        "choices": [{
            "index": 0,
            "message": Value::Object(answer),
            "logprobs": Value::Null,
            "finish_reason": finish_reason,
        }],
        "bulkhead": extension(&trace, overhead),
    });
    if let Some(u) = usage {
        body["usage"] = u;
    }
    with_trace_headers(
        (StatusCode::OK, Json(body)).into_response(),
        &trace.id,
        overhead,
    )
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
    let upstream = gw
        .gateway
        .chat_stream(route, ctx.tenant(), &prepared.upstream_body)
        .await;
    let waited = asked.elapsed();
    let upstream = match upstream {
        Ok(s) => s,
        Err(e) => {
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
    fn frame(&self, delta: Value, finish: Option<&str>, ext: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": completion_id(&self.prepared.trace.id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
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

    async fn run(mut self, mut upstream: bulkhead_gateway::ChatStream) {
        let state = self.state.clone();
        let tenant = self.ctx.tenant().clone();
        let mut scanner = state.guard.guard.stream(&tenant, &self.prepared.pack.guard);
        let mut decision = Decision::default();
        let mut delivered = String::new();
        let mut tools: BTreeMap<u64, Value> = BTreeMap::new();
        let (mut finish_reason, mut usage, mut first_token) = (None, None, None);
        let mut stop: Option<Stop> = None;

        if !self
            .send(self.frame(json!({"role": "assistant", "content": ""}), None, None))
            .await
        {
            stop = Some(Stop::Client);
        }
        while stop.is_none() && !decision.blocked {
            let asked = Instant::now();
            // A client that leaves is noticed at once, not at the next send: the
            // scanner may hold a slow drip back for a long time.
            let next = tokio::select! {
                next = upstream.next() => next,
                () = self.tx.closed() => {
                    stop = Some(Stop::Client);
                    break;
                }
            };
            self.upstream_wait += asked.elapsed();
            let delta = match next {
                None => break,
                Some(Err(e)) => {
                    stop = Some(Stop::Upstream(e));
                    break;
                }
                Some(Ok(d)) => d,
            };
            if let Some(text) = delta.content.or(delta.refusal) {
                first_token.get_or_insert_with(|| self.prepared.started.elapsed());
                let out = scanner.push(&text);
                decision.findings.extend(out.findings);
                if out.blocked {
                    decision.blocked = true;
                    break;
                }
                if !out.release.is_empty() {
                    delivered.push_str(&out.release);
                    let frame = self.frame(json!({"content": out.release}), None, None);
                    if !self.send(frame).await {
                        stop = Some(Stop::Client);
                    }
                }
            }
            if let Some(calls) = delta.tool_calls {
                merge_tool_calls(&mut tools, &calls);
            }
            if delta.finish_reason.is_some() {
                finish_reason = delta.finish_reason;
            }
            if delta.usage.is_some() {
                usage = delta.usage;
            }
        }
        // Closing the upstream connection now, not when the trace is written.
        drop(upstream);
        if decision.blocked {
            // The scan stopped at the block; ending it closes what was still open
            // (a cluster of another tenant's fingerprints), so the block carries its
            // finding. Nothing is released once blocked.
            let out = scanner.finish();
            debug_assert!(out.release.is_empty());
            decision.findings.extend(out.findings);
        }

        if !decision.blocked && !matches!(stop, Some(Stop::Client)) {
            // Whatever the scanner still holds is decided now; on an upstream fault
            // the part already received is still the tenant's to see, scanned.
            let out = scanner.finish();
            decision.findings.extend(out.findings);
            if out.blocked {
                decision.blocked = true;
            } else if !out.release.is_empty() {
                delivered.push_str(&out.release);
                let frame = self.frame(json!({"content": out.release}), None, None);
                if !self.send(frame).await {
                    stop = Some(Stop::Client);
                }
            }
        }
        if !tools.is_empty() && !decision.blocked && stop.is_none() {
            let mut calls = Value::Array(tools.into_values().collect());
            scan_tool_calls(
                &state,
                &self.prepared.pack,
                &tenant,
                &mut calls,
                &mut decision,
            )
            .await;
            if !decision.blocked {
                let frame = self.frame(json!({"tool_calls": calls}), None, None);
                if !self.send(frame).await {
                    stop = Some(Stop::Client);
                }
            }
        }
        state
            .traffic
            .record_findings(state.vault.now(), &decision.findings, decision.blocked);
        let leak_report = report_leak(&state, &self.ctx, &self.rid, &decision.findings).await;

        let mut trace = std::mem::replace(&mut self.prepared.trace, placeholder_trace());
        trace.guard = decision.summary();
        trace.usage = usage.clone();
        if decision.blocked {
            delivered = BLOCKED_NOTICE.to_owned();
            finish_reason = Some("content_filter".into());
        }
        trace.outcome = match &stop {
            _ if decision.blocked => "blocked".into(),
            Some(Stop::Client) => "client_disconnected".into(),
            Some(Stop::Upstream(e)) => e.outcome().into(),
            None => decision.outcome().into(),
        };
        if let Some(Stop::Upstream(e)) = &stop {
            tracing::warn!(trace = %trace.id, upstream = %trace.upstream, error = %e, "stream failed at the upstream");
            trace.error = Some(e.to_string());
        }
        trace.finish_reason = finish_reason.clone();
        trace.output_hash = Some(content_hash(delivered.as_bytes()));
        set_latency(
            &mut trace,
            self.prepared.started,
            self.upstream_wait,
            first_token,
        );
        self.prepared.trace = trace;

        // The session keeps what the client was given, when it was given all of it.
        let mut stored = Ok(());
        let complete = decision.blocked || stop.is_none();
        if let (Some(session), true) = (&mut self.prepared.session, complete) {
            let mut turn = std::mem::take(&mut self.prepared.new_turn);
            turn.push(Message::new("assistant", &delivered));
            stored = session
                .append(&state, &self.ctx, turn, &self.prepared.trace.id)
                .await;
        }
        let committed = commit_trace(
            &state,
            &self.ctx,
            &self.rid,
            &self.prepared.trace,
            &self.prepared.pack,
        )
        .await;
        let overhead = self
            .prepared
            .started
            .elapsed()
            .saturating_sub(self.upstream_wait);
        state
            .metrics
            .model_call(&self.prepared.trace.outcome, overhead);
        if matches!(stop, Some(Stop::Client)) {
            return;
        }
        let ext = extension(&self.prepared.trace, overhead);
        let failure = match (&stop, leak_report.and(stored).and(committed)) {
            (_, Err(e)) => Some((e.kind.code(), e.detail)),
            (Some(Stop::Upstream(e)), Ok(_)) if !decision.blocked => Some((
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
        let last = if decision.blocked {
            self.frame(
                json!({"content": BLOCKED_NOTICE}),
                Some("content_filter"),
                Some(ext),
            )
        } else {
            self.frame(
                json!({}),
                Some(finish_reason.as_deref().unwrap_or("stop")),
                Some(ext),
            )
        };
        if !self.send(last).await {
            return;
        }
        if self.include_usage
            && let Some(u) = usage
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
        outcome: String::new(),
        error: None,
    }
}

/// Merges streamed tool-call pieces by their `index`: ids, types and names are
/// set once, arguments arrive in pieces and are concatenated.
fn merge_tool_calls(tools: &mut BTreeMap<u64, Value>, calls: &Value) {
    let Some(list) = calls.as_array() else {
        return;
    };
    for piece in list {
        let index = piece.get("index").and_then(Value::as_u64).unwrap_or(0);
        let entry = tools.entry(index).or_insert_with(|| {
            json!({"index": index, "id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        });
        for field in ["id", "type"] {
            if let Some(v) = piece.get(field).and_then(Value::as_str) {
                entry[field] = Value::String(v.to_owned());
            }
        }
        if let Some(name) = piece.pointer("/function/name").and_then(Value::as_str) {
            entry["function"]["name"] = Value::String(name.to_owned());
        }
        if let Some(args) = piece.pointer("/function/arguments").and_then(Value::as_str) {
            let mut joined = entry["function"]["arguments"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            joined.push_str(args);
            entry["function"]["arguments"] = Value::String(joined);
        }
    }
}

/// `POST /v1/embeddings`: the tenant's inputs to the model it may use, with its
/// pseudonym; traced like a chat call.
pub async fn embeddings(
    Arrival(started): Arrival,
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    rid: RequestId,
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
    trace.guard.verdict = "allow".into();
    let asked = Instant::now();
    let result = gw.gateway.embeddings(route, ctx.tenant(), &req).await;
    let upstream = asked.elapsed();
    let mut answer = match result {
        Ok(v) => v,
        Err(e) => {
            return upstream_failed(&state, &ctx, &rid, &pack, trace, (started, upstream), e).await;
        }
    };
    trace.outcome = "ok".into();
    trace.usage = answer.get("usage").cloned();
    trace.output_hash = Some(content_hash(
        &serde_json::to_vec(&answer["data"]).unwrap_or_default(),
    ));
    set_latency(&mut trace, started, upstream, None);
    if let Err(e) = commit_trace(&state, &ctx, &rid, &trace, &pack).await {
        return e.into_response();
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
    fn tool_call_pieces_merge_by_index() {
        let mut tools = BTreeMap::new();
        merge_tool_calls(
            &mut tools,
            &json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]),
        );
        merge_tool_calls(
            &mut tools,
            &json!([{"index": 0, "function": {"arguments": ":1}"}}, {"index": 1, "id": "call_2", "function": {"name": "g"}}]),
        );
        assert_eq!(tools[&0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(tools[&0]["id"], "call_1");
        assert_eq!(tools[&1]["function"]["name"], "g");
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
