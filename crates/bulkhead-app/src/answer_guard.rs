//! The answer guard of the chat pipeline: every text of a model's answer the
//! client would receive (content, refusal, audio transcript, tool-call ids,
//! names and arguments, function calls), where it sits, and one joint verdict
//! over all of them — whole (`guard_choices`) or streamed (`Scanner`, one part id
//! per choice and field). Blocked: every choice is replaced by `BLOCKED_NOTICE`.
//! Redacted: each text goes back in its own place.

use std::sync::Arc;

use bulkhead_gateway::openai::Message;
use bulkhead_gateway::{Answer, CHOICES_MAX, Choice, ToolCall};
use bulkhead_guard::{Action, AnswerStream, Finding, PartsOutcome, StreamOutput, Verdict};
use bulkhead_ledger::event::content_hash;
use bulkhead_types::TenantId;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::guard::{leak_owners, type_counts};
use crate::kinds::TraceOutcome;
use crate::services::Services;
use crate::traces::GuardSummary;

/// What a client sees in place of an answer the guard blocked. It never says
/// whose data matched.
pub const BLOCKED_NOTICE: &str = "[bulkhead] This response was withheld by the output guard. The decision trace has the details.";

/// Answers (or streamed pieces) of this many bytes or more are scanned off the
/// async runtime.
pub const SCAN_INLINE_BYTES_MAX: usize = 16 << 10;

/// The fields of one tool call that are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallField {
    Id,
    Name,
    Arguments,
}

/// One text of a choice the client receives: where it sits in the `Answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Content,
    Refusal,
    Transcript,
    /// The `i`-th tool call's id, name, or arguments (a custom call's input).
    Tool(usize, CallField),
    FunctionName,
    FunctionArguments,
}

impl Field {
    /// Whether the field carries what the model wrote (not an id or a name).
    pub fn bears_content(self) -> bool {
        !matches!(
            self,
            Field::Tool(_, CallField::Id | CallField::Name) | Field::FunctionName
        )
    }
}

/// Every non-empty text of a choice the client would receive, with its place.
pub fn answer_texts(answer: &Answer) -> Vec<(Field, &str)> {
    let mut all: Vec<(Field, Option<&str>)> = vec![
        (Field::Content, answer.content.as_deref()),
        (Field::Refusal, answer.refusal.as_deref()),
        (Field::Transcript, answer.audio_transcript.as_deref()),
    ];
    for (i, call) in answer.tool_calls.iter().enumerate() {
        all.push((Field::Tool(i, CallField::Id), Some(&call.id)));
        all.push((Field::Tool(i, CallField::Name), Some(&call.name)));
        all.push((Field::Tool(i, CallField::Arguments), Some(&call.arguments)));
    }
    if let Some(f) = &answer.function_call {
        all.push((Field::FunctionName, Some(&f.name)));
        all.push((Field::FunctionArguments, Some(&f.arguments)));
    }
    all.into_iter()
        .filter_map(|(field, text)| text.filter(|t| !t.is_empty()).map(|t| (field, t)))
        .collect()
}

/// Extra texts to scan (never sent) for an answer of several parts: its
/// content-bearing fields read in order with JSON arguments' strings unwrapped,
/// and its tool-call ids and names read in order (`bulkhead_guard::joined_view`).
/// A leak cut into many small tool calls leaves no fingerprint in any one part;
/// read in order, the pieces are the run again. Ids and names are joined apart
/// so they do not cut the content's run.
pub fn joined_views<'a>(fields: impl Iterator<Item = (Field, &'a str)>) -> Vec<String> {
    let (mut content, mut labels) = (Vec::new(), Vec::new());
    for (field, text) in fields {
        if field.bears_content() {
            content.push(text);
        } else {
            labels.push(text);
        }
    }
    [content, labels]
        .into_iter()
        .filter(|texts| texts.len() > 1)
        .map(|texts| bulkhead_guard::joined_view(&texts))
        .collect()
}

pub fn field_mut(answer: &mut Answer, field: Field) -> Option<&mut String> {
    match field {
        Field::Content => answer.content.as_mut(),
        Field::Refusal => answer.refusal.as_mut(),
        Field::Transcript => answer.audio_transcript.as_mut(),
        Field::Tool(i, part) => answer.tool_calls.get_mut(i).map(|c| match part {
            CallField::Id => &mut c.id,
            CallField::Name => &mut c.name,
            CallField::Arguments => &mut c.arguments,
        }),
        Field::FunctionName => answer.function_call.as_mut().map(|f| &mut f.name),
        Field::FunctionArguments => answer.function_call.as_mut().map(|f| &mut f.arguments),
    }
}

/// What a blocked choice says instead.
pub fn blocked_answer() -> Answer {
    Answer {
        content: Some(BLOCKED_NOTICE.to_owned()),
        ..Answer::default()
    }
}

/// A choice's message in the OpenAI wire format: `content` always (null when
/// there is none), every other field only when the answer has it. The audio
/// transcript is the only part of an audio answer that is ever forwarded.
pub fn message_json(answer: &Answer) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("role".into(), Value::String("assistant".into()));
    m.insert(
        "content".into(),
        answer.content.clone().map_or(Value::Null, Value::String),
    );
    if let Some(r) = &answer.refusal {
        m.insert("refusal".into(), Value::String(r.clone()));
    }
    if !answer.tool_calls.is_empty() {
        m.insert(
            "tool_calls".into(),
            Value::Array(answer.tool_calls.iter().map(ToolCall::to_json).collect()),
        );
    }
    if let Some(f) = &answer.function_call {
        m.insert("function_call".into(), f.to_json());
    }
    if let Some(t) = &answer.audio_transcript {
        m.insert("audio".into(), json!({"transcript": t}));
    }
    m
}

/// What a session keeps of a choice: its message without the audio transcript
/// (an upstream reads an assistant's `audio` as a reference to audio it keeps).
pub fn session_message(answer: &Answer) -> Message {
    let mut m = message_json(answer);
    m.remove("audio");
    Message(m)
}

/// The output hash of a trace: every choice's message as delivered, in index
/// order, the same for a whole and a streamed answer.
pub fn output_hash<'a>(answers: impl Iterator<Item = &'a Answer>) -> String {
    let messages: Vec<Value> = answers.map(|a| Value::Object(message_json(a))).collect();
    content_hash(&serde_json::to_vec(&messages).unwrap_or_default())
}

/// One joint verdict over every text of an answer; big answers off the async
/// runtime.
pub async fn scan_parts(
    app: &Services,
    pack: &Arc<crate::packs::Pack>,
    tenant: &TenantId,
    parts: &[&str],
) -> PartsOutcome {
    let bytes: usize = parts.iter().map(|p| p.len()).sum();
    if bytes < SCAN_INLINE_BYTES_MAX {
        return app.guard.guard.scan_parts(tenant, parts, &pack.guard);
    }
    let count = parts.len();
    let owned: Zeroizing<Vec<String>> =
        Zeroizing::new(parts.iter().map(|p| (*p).to_owned()).collect());
    let (guard, tenant, pack) = (Arc::clone(&app.guard), tenant.clone(), Arc::clone(pack));
    let scanned = tokio::task::spawn_blocking(move || {
        let parts: Vec<&str> = owned.iter().map(String::as_str).collect();
        guard.guard.scan_parts(&tenant, &parts, &pack.guard)
    })
    .await;
    scanned.unwrap_or_else(|_| PartsOutcome {
        // A panicked scan decides nothing: block rather than let text out unscanned.
        verdict: Verdict::Blocked,
        findings: Vec::new(),
        redacted: vec![None; count],
    })
}

/// A streamed answer's scan. Big pieces are scanned off the async runtime; a scan
/// that panicked leaves no scanner, and everything after it is blocked.
#[derive(Debug)]
pub struct Scanner(pub Option<AnswerStream>);

impl Scanner {
    pub async fn run<R: Send + 'static>(
        &mut self,
        bytes: usize,
        scan: impl FnOnce(&mut AnswerStream) -> R + Send + 'static,
    ) -> Option<R> {
        if bytes < SCAN_INLINE_BYTES_MAX {
            return self.0.as_mut().map(scan);
        }
        let mut stream = self.0.take()?;
        let done = tokio::task::spawn_blocking(move || {
            let out = scan(&mut stream);
            (stream, out)
        })
        .await;
        let (stream, out) = done.ok()?;
        self.0 = Some(stream);
        Some(out)
    }

    pub async fn push(&mut self, part: usize, text: String) -> StreamOutput {
        let text = Zeroizing::new(text);
        let bytes = text.len();
        self.run(bytes, move |s| s.push(part, &text))
            .await
            .unwrap_or_else(|| StreamOutput {
                blocked: true,
                ..StreamOutput::default()
            })
    }
}

/// The part id of a streamed text of a choice: three per choice (content,
/// refusal, audio transcript); the parts of tool calls, scanned when the stream
/// ends, are numbered from `TOOL_PARTS_FIRST`.
pub fn stream_part(choice: u32, field: Field) -> usize {
    let offset = match field {
        Field::Refusal => 1,
        Field::Transcript => 2,
        _ => 0,
    };
    choice as usize * 3 + offset
}

pub const TOOL_PARTS_FIRST: usize = CHOICES_MAX * 3;

/// The field of a streamed part id below `TOOL_PARTS_FIRST`.
pub fn stream_field(part: usize) -> (u32, Field) {
    let field = match part % 3 {
        0 => Field::Content,
        1 => Field::Refusal,
        _ => Field::Transcript,
    };
    ((part / 3) as u32, field)
}

/// What the guard decided for one answer.
#[derive(Debug, Default)]
pub struct Decision {
    pub findings: Vec<Finding>,
    pub blocked: bool,
}

impl Decision {
    pub fn summary(&self) -> GuardSummary {
        let redactions = if self.blocked {
            0
        } else {
            self.findings
                .iter()
                .filter(|f| f.action == Action::Redact)
                .count() as u32
        };
        GuardSummary {
            verdict: Some(if self.blocked {
                Verdict::Blocked
            } else if redactions > 0 {
                Verdict::Redacted
            } else {
                Verdict::Allow
            }),
            findings: type_counts(&self.findings),
            redactions,
            blocked: self.blocked,
            cross_tenant: !leak_owners(&self.findings).is_empty(),
        }
    }

    pub fn outcome(&self) -> TraceOutcome {
        let s = self.summary();
        if s.blocked {
            TraceOutcome::Blocked
        } else if s.redactions > 0 {
            TraceOutcome::Redacted
        } else {
            TraceOutcome::Ok
        }
    }
}

/// The trace outcome of an upstream failure. The gateway names its failures with
/// the same closed set; a name this server does not know (a failure added to the
/// gateway later) is recorded as an error status rather than dropped.
pub fn upstream_outcome(e: &bulkhead_gateway::UpstreamError) -> TraceOutcome {
    TraceOutcome::parse(e.outcome()).unwrap_or(TraceOutcome::UpstreamStatus)
}

pub async fn guard_choices(
    app: &Services,
    pack: &Arc<crate::packs::Pack>,
    tenant: &TenantId,
    choices: &mut [Choice],
) -> Decision {
    let (slots, mut texts): (Vec<(usize, Field)>, Vec<&str>) = choices
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            answer_texts(&c.message)
                .into_iter()
                .map(move |(field, text)| ((i, field), text))
        })
        .unzip();
    let joined = Zeroizing::new(joined_views(
        slots
            .iter()
            .map(|(_, field)| *field)
            .zip(texts.iter().copied()),
    ));
    texts.extend(joined.iter().map(String::as_str));
    let outcome = scan_parts(app, pack, tenant, &texts).await;
    drop(texts);
    let decision = Decision {
        blocked: outcome.verdict == Verdict::Blocked,
        findings: outcome.findings.into_iter().map(|(_, f)| f).collect(),
    };
    if decision.blocked {
        for c in choices.iter_mut() {
            c.message = blocked_answer();
            c.finish_reason = "content_filter".into();
        }
    } else {
        for ((i, field), redacted) in slots.into_iter().zip(outcome.redacted) {
            if let (Some(text), Some(slot)) = (redacted, field_mut(&mut choices[i].message, field))
            {
                *slot = text;
            }
        }
    }
    decision
}
