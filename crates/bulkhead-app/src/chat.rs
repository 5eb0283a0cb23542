//! The chat pipeline up to the model: a call's tenant and route, the input
//! screen, the session, the retrieved context (each chunk screened), the
//! protected prompts and the upstream body, in that order; and the decision
//! trace committed as the settings say. The answer's own guard is
//! `answer_guard`; the wire (whole JSON or SSE) is the HTTP edge's.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_gateway::openai::{ChatRequest, Message};
use bulkhead_gateway::{NoSuchModel, Route};
use bulkhead_guard::{InjectionAction, Verdict};
use bulkhead_ledger::event::content_hash;
use bulkhead_vault::TenantCtx;
use serde_json::Value;

use crate::error::{AppError, AppResult};
use crate::gateway::TraceCommit;
use crate::kinds::{EventKind, TraceOutcome};
use crate::services::Services;
use crate::sessions::OpenSession;
use crate::traces::{self, ContextItem, GuardSummary, InjectionSummary, Latency, Trace};
use crate::trail::RequestId;

/// Why a chat call stops before it reaches a model.
#[derive(Debug)]
pub enum ChatRefusal {
    /// An application failure (the tenant, its session, the audit log, retrieval).
    App(AppError),
    /// The model is not one this tenant may call.
    NoSuchModel(NoSuchModel),
    /// A content part the tenant's pack does not open, or one that is malformed,
    /// oversize or whose image could not be fetched; `message` names the part.
    Content { message: String },
    /// The user's input read as a prompt injection; its trace is committed.
    InputRefused {
        score: u32,
        trace_id: String,
        overhead: Duration,
    },
}

impl From<AppError> for ChatRefusal {
    fn from(e: AppError) -> Self {
        ChatRefusal::App(e)
    }
}

/// A call made ready for its upstream.
#[derive(Debug)]
pub struct Prepared {
    /// The tenant's compliance pack: its guard policy and retention.
    pub pack: Arc<crate::packs::Pack>,
    pub trace: Trace,
    pub started: Instant,
    pub upstream_body: serde_json::Map<String, Value>,
    pub session: Option<OpenSession>,
    /// The client's messages after its leading system messages: what a session
    /// stores of this turn.
    pub new_turn: Vec<Message>,
    /// The model tokens reserved for the call; settle it with the answer's usage.
    pub tokens: crate::quota::TokenGrant,
}

/// The parts of a chat call shared by the whole and the streamed paths, up to the
/// upstream body: tenant and route, the input screen, the session, the context
/// message, the protected prompts, the upstream body, in that order.
pub async fn prepare<'a>(
    app: &'a Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    req: &'a ChatRequest,
    started: Instant,
) -> Result<(Prepared, Route<'a>), ChatRefusal> {
    let gw = &app.gateway;
    let tenant = app
        .vault
        .tenant(ctx.tenant())
        .await
        .map_err(AppError::from)?;
    let route = gw
        .gateway
        .route(&req.model, &tenant.region, tenant.models.as_deref())
        .map_err(ChatRefusal::NoSuchModel)?;
    let pack = app.packs.for_tenant(&tenant.policy);
    if !req.dropped.is_empty() {
        tracing::debug!(fields = ?req.dropped, "dropped request fields that are not forwarded");
    }
    let messages = admit_content(app, req, &pack).await?;
    let mut trace = chat_trace(app, ctx, rid, req, route, tenant.region.to_string());
    screen_user_input(app, ctx, rid, req, &pack, &mut trace, started).await?;

    let session = match &req.extension.session_id {
        Some(id) => {
            Some(crate::sessions::open(app, ctx, rid, gw.sessions, EventKind::ModelCall, id).await?)
        }
        None => None,
    };

    // The tenant's own context: retrieved chunks, each screened for injected
    // instructions, then the session's recent messages.
    let context = TurnContext {
        text: retrieve_context(app, ctx, req, &pack, &mut trace).await?,
        history: session_history(
            session.as_ref(),
            gw.sessions.context_messages_max,
            &mut trace,
        ),
    };
    let (mut upstream_body, new_turn) =
        upstream_body(app, ctx, req, &messages, route, &pack, context, &mut trace).await;
    let tokens = reserve_tokens(app, ctx, &mut upstream_body).await?;
    Ok((
        Prepared {
            pack,
            trace,
            started,
            upstream_body,
            session,
            new_turn,
            tokens,
        },
        route,
    ))
}

/// Reserves the call's model tokens against the tenant's budgets: the upstream
/// body's length bounds the prompt's tokens from above (a token is at least one
/// byte), and each answer is capped by `max_tokens`. When a budget applies and
/// the client set no cap, the reserve becomes the call's cap upstream, so no
/// answer can spend past the budget.
async fn reserve_tokens(
    app: &Services,
    ctx: &TenantCtx,
    body: &mut serde_json::Map<String, Value>,
) -> AppResult<crate::quota::TokenGrant> {
    // Serialising the body is work on every call: done only under a budget.
    let prompt_estimate = || serde_json::to_vec(&*body).map_or(0, |b| b.len() as u64);
    let choices = body
        .get("n")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.clamp(1, u64::from(u32::MAX)) as u32);
    let requested = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    let grant = app
        .quotas
        .reserve_tokens(ctx.tenant(), prompt_estimate, choices, requested)
        .await?;
    if let (Some(cap), None) = (grant.cap, requested) {
        body.insert("max_tokens".into(), Value::from(cap));
    }
    Ok(grant)
}

/// What the context stage hands to the upstream body: the retrieved chunks'
/// text and the session's messages to replay.
struct TurnContext {
    text: String,
    history: Vec<Message>,
}

/// The client's messages as they go upstream: every part besides text checked
/// against the tenant's pack and the caps, and every image URL replaced by the
/// image Bulkhead fetched itself, as a `data:` URL (the model's host never fetches
/// for a tenant). Refused before anything is traced, like an unknown model.
async fn admit_content<'r>(
    app: &Services,
    req: &'r ChatRequest,
    pack: &crate::packs::Pack,
) -> Result<Cow<'r, [Message]>, ChatRefusal> {
    use bulkhead_gateway::content;
    let gw = &app.gateway;
    let fetches = content::admit(&req.messages, &pack.content, gw.content_limits).map_err(|e| {
        ChatRefusal::Content {
            message: e.to_string(),
        }
    })?;
    if fetches.is_empty() {
        return Ok(Cow::Borrowed(&req.messages));
    }
    let mut messages = req.messages.clone();
    for fetch in &fetches {
        let image = gw.fetcher.fetch(&fetch.url).await.map_err(|e| {
            tracing::debug!(part = %fetch.at(), error = %e, "an image URL was not fetched");
            ChatRefusal::Content {
                message: format!("{}: {e}", fetch.at()),
            }
        })?;
        // Base64 of up to the part cap: more than the async path should carry.
        let url =
            tokio::task::spawn_blocking(move || content::data_url(&image.media_type, &image.bytes))
                .await
                .map_err(|_| AppError::Internal)?;
        content::set_image_data(&mut messages, fetch, url);
    }
    Ok(Cow::Owned(messages))
}

/// Protects everything the tenant sends, then builds the upstream body: the
/// client's leading system prompts, the context message, the session history,
/// the new turn (`messages`: the client's, as `admit_content` made them). Also
/// returns the new turn, which a session stores.
#[allow(clippy::too_many_arguments)]
async fn upstream_body(
    app: &Services,
    ctx: &TenantCtx,
    req: &ChatRequest,
    client_messages: &[Message],
    route: Route<'_>,
    pack: &crate::packs::Pack,
    context: TurnContext,
    trace: &mut Trace,
) -> (serde_json::Map<String, Value>, Vec<Message>) {
    let TurnContext { text, history } = context;
    let lead = client_messages
        .iter()
        .take_while(|m| matches!(m.role(), "system" | "developer"))
        .count();
    let mut messages: Vec<Message> = client_messages[..lead].to_vec();
    if !text.is_empty() || !history.is_empty() {
        messages.push(context_message(app, ctx, &text, trace));
    }
    // Everything the tenant sends through is its protected content from now on
    // (every role: system and developer prompts, user turns, replayed assistant
    // turns, tool results; and the session history): a model that regurgitates
    // it to another tenant is caught. Retrieved chunks are the tenant's documents,
    // protected already.
    let sent: Vec<String> = client_messages
        .iter()
        .chain(history.iter())
        .map(Message::text)
        .collect();
    crate::guard::protect_sent(app, ctx.tenant(), pack, sent).await;
    messages.extend(history);
    let new_turn: Vec<Message> = client_messages[lead..].to_vec();
    messages.extend(new_turn.iter().cloned());
    let body =
        app.gateway
            .gateway
            .chat_body(route, ctx.tenant(), &messages, &req.forward, req.stream);
    (body, new_turn)
}

/// A chat call's trace as it starts (pending, nothing decided yet); separate
/// because it is a long literal that no stage of `prepare` needs to read through.
fn chat_trace(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    req: &ChatRequest,
    route: Route<'_>,
    region: String,
) -> Trace {
    let client_messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| Value::Object(m.0.clone()))
        .collect();
    Trace {
        id: traces::new_trace_id(),
        call: "chat.completion".into(),
        tenant: ctx.tenant().to_string(),
        key_id: ctx.key_id().to_string(),
        request_id: rid.0.clone(),
        model: req.model.clone(),
        upstream: route.upstream.name().to_owned(),
        region,
        stream: req.stream,
        started_at: traces::started_at(app.vault.now()),
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
        outcome: TraceOutcome::Pending,
        error: None,
    }
}

/// Screens the user's own words: an instruction-override attempt is refused
/// (traced, committed, answered with a problem) before it reaches a model. Its
/// own stage because the refusal is a whole answer of its own.
async fn screen_user_input(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    req: &ChatRequest,
    pack: &crate::packs::Pack,
    trace: &mut Trace,
    started: Instant,
) -> Result<(), ChatRefusal> {
    let user_text: String = req
        .messages
        .iter()
        .filter(|m| m.role() == "user")
        .map(Message::text)
        .collect::<Vec<_>>()
        .join("\n");
    let report = app.guard.guard.screen_input(&user_text, &pack.guard);
    if report.score > 0 {
        trace.injection = Some(InjectionSummary {
            score: report.score,
            action: report.action,
            rules: report.rules.iter().map(ToString::to_string).collect(),
        });
    }
    if report.action != InjectionAction::Block {
        return Ok(());
    }
    trace.outcome = TraceOutcome::RefusedInput;
    trace.guard.verdict = Some(Verdict::Blocked);
    let overhead = started.elapsed();
    trace.latency_ms = Latency {
        total: traces::millis(overhead),
        overhead: traces::millis(overhead),
        ..Latency::default()
    };
    app.telemetry.model_call(trace.outcome.as_str(), overhead);
    commit_trace(app, ctx, rid, trace, pack).await?;
    Err(ChatRefusal::InputRefused {
        score: report.score,
        trace_id: trace.id.clone(),
        overhead,
    })
}

/// The tenant's retrieved chunks for the last user message, each screened for
/// injected instructions, as context text (empty when nothing was asked or
/// kept); every chunk, kept or dropped, is an item of the trace.
async fn retrieve_context(
    app: &Services,
    ctx: &TenantCtx,
    req: &ChatRequest,
    pack: &crate::packs::Pack,
    trace: &mut Trace,
) -> AppResult<String> {
    let mut context_text = String::new();
    let Some(retrieve) = &req.extension.retrieve else {
        return Ok(context_text);
    };
    let query = truncate(
        &req.messages
            .iter()
            .rev()
            .find(|m| m.role() == "user")
            .map(Message::text)
            .unwrap_or_default(),
        app.retrieval.query_bytes_max,
    );
    if query.trim().is_empty() {
        return Ok(context_text);
    }
    let found = app
        .retrieval
        .retrieve(app, ctx, &query, retrieve.top_k, None, None)
        .await?;
    for hit in found.hits {
        let text: &str = &hit.chunk.text;
        let screened = app.guard.guard.screen_retrieved(text, &pack.guard);
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
            context_text.push_str(&format!("[source: {}]\n{}\n\n", hit.chunk.chunk_id, text));
        }
    }
    Ok(context_text)
}

/// The session's recent messages to replay, each an item of the trace; empty
/// without a session.
fn session_history(
    session: Option<&OpenSession>,
    messages_max: usize,
    trace: &mut Trace,
) -> Vec<Message> {
    let Some(s) = session else {
        return Vec::new();
    };
    s.context(messages_max)
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
        .collect()
}

/// The system message that carries the tenant's context to the model, with the
/// tenant's canary when canaries are planted (an item of the trace).
fn context_message(
    app: &Services,
    ctx: &TenantCtx,
    context_text: &str,
    trace: &mut Trace,
) -> Message {
    let mut system = String::from(
        "Context from this organization's own records follows. Use it to answer; cite sources by their id.\n",
    );
    if app.gateway.plant_canaries
        && let Some(canary) = app.guard.guard.canaries(ctx.tenant()).into_iter().next()
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
    system.push_str(context_text);
    Message::new("system", &system)
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

/// Commits a trace as the settings say: awaited (durable before the caller goes
/// on) or in the background (errors are logged; the answer has already left). It
/// is kept as long as the tenant's pack says (or the server's `trace_ttl_secs`
/// where the pack sets none).
pub async fn commit_trace(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    trace: &Trace,
    pack: &crate::packs::Pack,
) -> AppResult<()> {
    let ttl = pack.retention.trace_ttl_secs.or(app.gateway.trace_ttl_secs);
    match app.gateway.trace_commit {
        TraceCommit::Durable => traces::commit(app, ctx, rid, trace, ttl).await.map(|_| ()),
        TraceCommit::Background => {
            let (app, ctx, rid, trace) = (app.clone(), ctx.clone(), rid.clone(), trace.clone());
            tokio::spawn(async move {
                if let Err(e) = traces::commit(&app, &ctx, &rid, &trace, ttl).await {
                    tracing::error!(trace = %trace.id, error = %e,
                        "a decision trace could not be committed after its answer was sent; \
                         check the store, and consider trace_commit = \"durable\"");
                }
            });
            Ok(())
        }
    }
}

/// Makes a streamed call's intent durable, with `trace_commit = durable`: the
/// caller releases no byte of the answer before this returns `Ok`. With
/// `background` nothing is written here (the answer never waits for the disk;
/// the call's `model.call` entry follows it).
pub async fn commit_stream_intent(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    trace: &Trace,
) -> AppResult<()> {
    match app.gateway.trace_commit {
        TraceCommit::Durable => traces::commit_intent(app, ctx, rid, trace)
            .await
            .map(|_| ()),
        TraceCommit::Background => Ok(()),
    }
}

pub fn set_latency(
    trace: &mut Trace,
    started: Instant,
    upstream: Duration,
    first: Option<Duration>,
) {
    let total = started.elapsed();
    trace.latency_ms = Latency {
        total: traces::millis(total),
        upstream: traces::millis(upstream),
        first_token: first.map(traces::millis),
        overhead: traces::millis(total.saturating_sub(upstream)),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
