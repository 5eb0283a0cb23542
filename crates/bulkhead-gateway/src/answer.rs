//! An upstream's chat answer, read into the fields a client may receive and
//! nothing else: every choice under its own `index`, each with its content,
//! refusal, tool calls (function calls with string or object arguments, custom
//! tool calls with their input), legacy `function_call`, audio transcript and
//! finish reason.
//!
//! The rule (invariant 3): everything the client receives is text the guard
//! judges as one answer, so what this module does not name is dropped here and
//! can never be forwarded unscanned — an upstream's `extra_secret`,
//! `provider_data`, audio bytes, logprobs, annotations, reasoning, ids and
//! fingerprints. Usage keeps only its token counts. A shape that cannot be read
//! safely (a choice without a message, text that is not a string, an unknown tool
//! call type, more choices or tool calls than the limits) is
//! `UpstreamError::Malformed`, never a guess.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::UpstreamError;
use crate::openai::N_MAX;

/// The most choices one answer may have (`n` is at most this, and an upstream
/// answering with more, or with an index at or above it, is malformed).
pub const CHOICES_MAX: usize = N_MAX as usize;

/// The most tool calls one choice may make (and the bound on a streamed tool
/// call's `index`).
pub const TOOL_CALLS_MAX: usize = 256;

/// The finish reasons OpenAI defines. Any other value is upstream text the guard
/// does not read, so it is reported as `stop`.
const FINISH_REASONS: &[&str] = &[
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
];

/// The token counts of `usage` (and of its two detail objects) that are forwarded;
/// anything else in it is dropped.
const USAGE_COUNTS: &[&str] = &["prompt_tokens", "completion_tokens", "total_tokens"];
const PROMPT_DETAILS: &[&str] = &["cached_tokens", "audio_tokens"];
const COMPLETION_DETAILS: &[&str] = &[
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
];

/// A chat answer read whole: every choice, sorted by index (each index once).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Completion {
    pub choices: Vec<Choice>,
    /// Token counts only.
    pub usage: Option<Value>,
}

/// One choice of a whole answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Choice {
    pub index: u32,
    pub message: Answer,
    /// One of OpenAI's finish reasons.
    pub finish_reason: String,
}

/// What one choice says: every field of the message a client may receive.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    pub content: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// The legacy (pre-tools) function call.
    pub function_call: Option<FunctionCall>,
    /// The transcript of an audio answer (the audio itself is never forwarded).
    pub audio_transcript: Option<String>,
}

/// What kind of tool a call is for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// `{"type": "function", "function": {"name", "arguments"}}`.
    #[default]
    Function,
    /// `{"type": "custom", "custom": {"name", "input"}}`.
    Custom,
}

/// One tool call, whole.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub kind: ToolKind,
    pub name: String,
    /// A function call's arguments (an object an upstream sent is its JSON text)
    /// or a custom tool call's input.
    pub arguments: String,
}

impl ToolCall {
    /// Adds one streamed piece: the id, kind and name are set when the piece has
    /// them, arguments are appended.
    pub fn merge(&mut self, piece: &ToolCallDelta) {
        if let Some(id) = &piece.id {
            self.id.clone_from(id);
        }
        if let Some(kind) = piece.kind {
            self.kind = kind;
        }
        if let Some(name) = &piece.name {
            self.name.clone_from(name);
        }
        if let Some(args) = &piece.arguments {
            self.arguments.push_str(args);
        }
    }

    /// The call in the OpenAI wire format.
    pub fn to_json(&self) -> Value {
        match self.kind {
            ToolKind::Function => serde_json::json!({
                "id": self.id,
                "type": "function",
                "function": {"name": self.name, "arguments": self.arguments},
            }),
            ToolKind::Custom => serde_json::json!({
                "id": self.id,
                "type": "custom",
                "custom": {"name": self.name, "input": self.arguments},
            }),
        }
    }
}

/// The legacy `function_call` of a message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

impl FunctionCall {
    /// Adds one streamed piece: a name replaces, arguments are appended.
    pub fn merge(&mut self, piece: &FunctionCallDelta) {
        if let Some(name) = &piece.name {
            self.name.clone_from(name);
        }
        if let Some(args) = &piece.arguments {
            self.arguments.push_str(args);
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({"name": self.name, "arguments": self.arguments})
    }
}

/// One event of a streamed answer: pieces of any of its choices.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delta {
    pub choices: Vec<ChoiceDelta>,
    /// Token counts only.
    pub usage: Option<Value>,
}

impl Delta {
    /// A piece of choice 0's content.
    pub fn content(text: impl Into<String>) -> Self {
        Self {
            choices: vec![ChoiceDelta {
                content: Some(text.into()),
                ..ChoiceDelta::default()
            }],
            usage: None,
        }
    }

    /// The end of choice 0.
    pub fn finish(reason: &str) -> Self {
        Self {
            choices: vec![ChoiceDelta {
                finish_reason: Some(finish_reason(reason)),
                ..ChoiceDelta::default()
            }],
            usage: None,
        }
    }

    /// Whether some choice finished in this event.
    pub fn finishes(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }
}

/// A piece of one choice. Empty texts are `None`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ChoiceDelta {
    pub index: u32,
    pub content: Option<String>,
    pub refusal: Option<String>,
    pub audio_transcript: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
    pub function_call: Option<FunctionCallDelta>,
    pub finish_reason: Option<String>,
}

/// A piece of one tool call, to be merged by (choice, `index`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub kind: Option<ToolKind>,
    pub name: Option<String>,
    /// A piece of the arguments (function) or of the input (custom).
    pub arguments: Option<String>,
}

/// A piece of a legacy `function_call`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FunctionCallDelta {
    pub name: Option<String>,
    pub arguments: Option<String>,
}

fn malformed(what: impl Into<String>) -> UpstreamError {
    UpstreamError::Malformed(what.into())
}

/// A known finish reason as is; anything else is `stop`.
fn finish_reason(reason: &str) -> String {
    if FINISH_REASONS.contains(&reason) {
        reason.to_owned()
    } else {
        "stop".to_owned()
    }
}

/// An optional string field: absent and null are `None`, anything else but a
/// string is malformed.
fn text(map: &Map<String, Value>, name: &str, what: &str) -> Result<Option<String>, UpstreamError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format!("{what}.{name} is not a string"))),
    }
}

/// An optional object field.
fn object<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, UpstreamError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(malformed(format!("{what}.{name} is not an object"))),
    }
}

/// Function arguments: a string, or (from some servers) an object, which is
/// forwarded as its JSON text.
fn arguments(map: &Map<String, Value>, what: &str) -> Result<Option<String>, UpstreamError> {
    match map.get("arguments") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(malformed(format!(
            "{what}.arguments is neither a string nor an object"
        ))),
    }
}

/// A choice's `index`: its position when absent, and below `CHOICES_MAX`.
fn choice_index(choice: &Map<String, Value>, position: usize) -> Result<u32, UpstreamError> {
    let index = match choice.get("index") {
        None | Some(Value::Null) => position as u64,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| malformed("a choice index is not a number"))?,
    };
    if index >= CHOICES_MAX as u64 {
        return Err(malformed(format!(
            "a choice index is {index}, at most {} choices are read",
            CHOICES_MAX
        )));
    }
    Ok(index as u32)
}

/// The token counts of a usage object, nothing else.
fn usage(value: Option<&Value>) -> Option<Value> {
    let Value::Object(map) = value? else {
        return None;
    };
    let counts = |map: &Map<String, Value>, names: &[&str]| -> Map<String, Value> {
        names
            .iter()
            .filter_map(|n| {
                map.get(*n)
                    .filter(|v| v.is_u64())
                    .map(|v| ((*n).to_owned(), v.clone()))
            })
            .collect()
    };
    let mut out = counts(map, USAGE_COUNTS);
    for (name, names) in [
        ("prompt_tokens_details", PROMPT_DETAILS),
        ("completion_tokens_details", COMPLETION_DETAILS),
    ] {
        if let Some(Value::Object(details)) = map.get(name) {
            let details = counts(details, names);
            if !details.is_empty() {
                out.insert(name.to_owned(), Value::Object(details));
            }
        }
    }
    Some(Value::Object(out))
}

fn tool_kind(call: &Map<String, Value>, what: &str) -> Result<Option<ToolKind>, UpstreamError> {
    match call.get("type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if t == "function" => Ok(Some(ToolKind::Function)),
        Some(Value::String(t)) if t == "custom" => Ok(Some(ToolKind::Custom)),
        Some(_) => Err(malformed(format!("{what}.type is not function or custom"))),
    }
}

/// One tool call (or a piece of one): its kind (from `type`, else from which of
/// `function` and `custom` it has), id, name and arguments or input.
fn tool_call_parts(value: &Value, what: &str) -> Result<ToolCallDelta, UpstreamError> {
    let Value::Object(call) = value else {
        return Err(malformed(format!("{what} is not an object")));
    };
    let function = object(call, "function", what)?;
    let custom = object(call, "custom", what)?;
    let kind = tool_kind(call, what)?.or(match (function, custom) {
        (None, Some(_)) => Some(ToolKind::Custom),
        (Some(_), _) => Some(ToolKind::Function),
        (None, None) => None,
    });
    let (name, arguments) = match kind.unwrap_or_default() {
        ToolKind::Function => match function {
            Some(f) => (
                text(f, "name", &format!("{what}.function"))?,
                arguments(f, &format!("{what}.function"))?,
            ),
            None => (None, None),
        },
        ToolKind::Custom => match custom {
            Some(c) => (
                text(c, "name", &format!("{what}.custom"))?,
                text(c, "input", &format!("{what}.custom"))?,
            ),
            None => (None, None),
        },
    };
    let index = match call.get("index") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|i| *i < TOOL_CALLS_MAX as u64)
                .ok_or_else(|| {
                    malformed(format!(
                        "{what}.index is not a number below {TOOL_CALLS_MAX}"
                    ))
                })?,
        ),
    };
    Ok(ToolCallDelta {
        index: index.unwrap_or(0) as u32,
        id: text(call, "id", what)?,
        kind,
        name,
        arguments,
    })
}

fn tool_calls<'a>(map: &'a Map<String, Value>, what: &str) -> Result<&'a [Value], UpstreamError> {
    match map.get("tool_calls") {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(calls)) if calls.len() <= TOOL_CALLS_MAX => Ok(calls),
        Some(Value::Array(_)) => Err(malformed(format!(
            "{what} has more than {TOOL_CALLS_MAX} tool calls"
        ))),
        Some(_) => Err(malformed(format!("{what}.tool_calls is not an array"))),
    }
}

fn function_call(
    map: &Map<String, Value>,
    what: &str,
) -> Result<Option<FunctionCallDelta>, UpstreamError> {
    let what = format!("{what}.function_call");
    Ok(match object(map, "function_call", &what)? {
        Some(f) => Some(FunctionCallDelta {
            name: text(f, "name", &what)?,
            arguments: arguments(f, &what)?,
        }),
        None => None,
    })
}

/// The transcript of an `audio` object; the rest of it (the audio data above
/// all) is dropped.
fn transcript(map: &Map<String, Value>, what: &str) -> Result<Option<String>, UpstreamError> {
    let what = format!("{what}.audio");
    match object(map, "audio", &what)? {
        Some(audio) => text(audio, "transcript", &what),
        None => Ok(None),
    }
}

/// The choices of an answer or chunk, each with its index.
type IndexedChoices<'a> = Vec<(u32, &'a Map<String, Value>)>;

fn choices<'a>(value: &'a Value, what: &str) -> Result<IndexedChoices<'a>, UpstreamError> {
    let list = value
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(format!("{what} without choices")))?;
    if list.len() > CHOICES_MAX {
        return Err(malformed(format!(
            "{what} has {} choices, at most {CHOICES_MAX} are read",
            list.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (position, choice) in list.iter().enumerate() {
        let Value::Object(choice) = choice else {
            return Err(malformed("a choice is not an object"));
        };
        let index = choice_index(choice, position)?;
        if !seen.insert(index) {
            return Err(malformed(format!("choice {index} appears twice in {what}")));
        }
        out.push((index, choice));
    }
    Ok(out)
}

/// Reads a whole chat completion.
pub(crate) fn parse_completion(bytes: &[u8]) -> Result<Completion, UpstreamError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    let mut out = Vec::new();
    for (index, choice) in choices(&value, "an answer")? {
        let what = format!("choices[{index}].message");
        let message = match choice.get("message") {
            Some(Value::Object(m)) => m,
            _ => return Err(malformed("a choice without a message")),
        };
        let calls = tool_calls(message, &what)?
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let piece = tool_call_parts(call, &format!("{what}.tool_calls[{i}]"))?;
                let mut whole = ToolCall::default();
                whole.merge(&piece);
                Ok(whole)
            })
            .collect::<Result<Vec<_>, UpstreamError>>()?;
        let function_call = function_call(message, &what)?.map(|piece| {
            let mut whole = FunctionCall::default();
            whole.merge(&piece);
            whole
        });
        let finish = match choice.get("finish_reason") {
            None | Some(Value::Null) => "stop".to_owned(),
            Some(Value::String(r)) => finish_reason(r),
            Some(_) => return Err(malformed("a finish_reason is not a string")),
        };
        out.push(Choice {
            index,
            message: Answer {
                content: text(message, "content", &what)?,
                refusal: text(message, "refusal", &what)?,
                tool_calls: calls,
                function_call,
                audio_transcript: transcript(message, &what)?,
            },
            finish_reason: finish,
        });
    }
    if out.is_empty() {
        return Err(malformed("no choices"));
    }
    out.sort_by_key(|c| c.index);
    Ok(Completion {
        choices: out,
        usage: usage(value.get("usage")),
    })
}

/// Reads one event of a stream (its `data:` payload).
pub(crate) fn parse_delta(data: &str) -> Result<Delta, UpstreamError> {
    let value: Value = serde_json::from_str(data).map_err(|e| malformed(e.to_string()))?;
    if let Some(err) = value.get("error") {
        let code = err
            .get("code")
            .or_else(|| err.get("type"))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect());
        return Err(UpstreamError::Status { status: 200, code });
    }
    let mut out = Delta {
        choices: Vec::new(),
        usage: usage(value.get("usage")),
    };
    for (index, choice) in choices(&value, "a chunk")? {
        let what = format!("choices[{index}].delta");
        let empty = Map::new();
        let delta = object(choice, "delta", &what)?.unwrap_or(&empty);
        let piece = |name: &str| -> Result<Option<String>, UpstreamError> {
            Ok(text(delta, name, &what)?.filter(|s| !s.is_empty()))
        };
        let calls = tool_calls(delta, &what)?
            .iter()
            .enumerate()
            .map(|(i, call)| tool_call_parts(call, &format!("{what}.tool_calls[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let finish = match choice.get("finish_reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(finish_reason(r)),
            Some(_) => return Err(malformed("a finish_reason is not a string")),
        };
        out.choices.push(ChoiceDelta {
            index,
            content: piece("content")?,
            refusal: piece("refusal")?,
            audio_transcript: transcript(delta, &what)?.filter(|s| !s.is_empty()),
            tool_calls: calls,
            function_call: function_call(delta, &what)?,
            finish_reason: finish,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(v: Value) -> Result<Completion, UpstreamError> {
        parse_completion(&serde_json::to_vec(&v).unwrap())
    }

    fn delta(v: Value) -> Result<Delta, UpstreamError> {
        parse_delta(&v.to_string())
    }

    #[test]
    fn every_choice_is_read_under_its_own_index() {
        let c = completion(json!({"choices": [
            {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "length"},
            {"index": 0, "message": {"role": "assistant", "content": "first"}, "finish_reason": "stop"},
        ]}))
        .unwrap();
        let got: Vec<(u32, Option<&str>, &str)> = c
            .choices
            .iter()
            .map(|c| {
                (
                    c.index,
                    c.message.content.as_deref(),
                    c.finish_reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(0, Some("first"), "stop"), (1, Some("second"), "length")]
        );
        // Without indexes, positions are the indexes.
        let c = completion(json!({"choices": [
            {"message": {"content": "a"}}, {"message": {"content": "b"}}
        ]}))
        .unwrap();
        assert_eq!(c.choices[1].index, 1);
        assert_eq!(c.choices[1].finish_reason, "stop");
    }

    #[test]
    fn every_text_field_is_read_and_nothing_else() {
        let c = completion(json!({
            "id": "x", "system_fingerprint": "SECRET", "provider_meta": {"secret": "SECRET"},
            "choices": [{
                "index": 0,
                "provider_data": {"secret": "SECRET"},
                "logprobs": {"content": [{"token": "t"}]},
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": null,
                    "refusal": "no",
                    "extra_secret": "SECRET",
                    "reasoning_content": "SECRET",
                    "annotations": [{"type": "url_citation"}],
                    "audio": {"id": "a1", "data": "UklGRg==", "expires_at": 1, "transcript": "said"},
                    "function_call": {"name": "legacy", "arguments": {"x": 1}},
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"b": [2]}}},
                        {"id": "c3", "type": "custom", "custom": {"name": "h", "input": "free text"}},
                    ],
                },
            }],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "note": "SECRET",
                      "completion_tokens_details": {"reasoning_tokens": 1, "text": "SECRET"}},
        }))
        .unwrap();
        let m = &c.choices[0].message;
        assert_eq!(m.content, None);
        assert_eq!(m.refusal.as_deref(), Some("no"));
        assert_eq!(m.audio_transcript.as_deref(), Some("said"));
        assert_eq!(
            m.function_call,
            Some(FunctionCall {
                name: "legacy".into(),
                arguments: "{\"x\":1}".into()
            })
        );
        let calls: Vec<Value> = m.tool_calls.iter().map(ToolCall::to_json).collect();
        assert_eq!(
            calls,
            [
                json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}),
                json!({"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"b\":[2]}"}}),
                json!({"id": "c3", "type": "custom", "custom": {"name": "h", "input": "free text"}}),
            ]
        );
        assert_eq!(c.choices[0].finish_reason, "tool_calls");
        assert_eq!(
            c.usage,
            Some(
                json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                        "completion_tokens_details": {"reasoning_tokens": 1}})
            )
        );
        // The parsed answer holds no trace of what was dropped.
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("UklGRg"),
            "{debug}"
        );
    }

    #[test]
    fn unknown_finish_reasons_are_stop() {
        let c = completion(
            json!({"choices": [{"message": {"content": "x"}, "finish_reason": "the secret is 42"}]}),
        )
        .unwrap();
        assert_eq!(c.choices[0].finish_reason, "stop");
    }

    #[test]
    fn malformed_answers_are_refused() {
        let check = |v: Value| {
            assert!(
                matches!(completion(v.clone()), Err(UpstreamError::Malformed(_))),
                "{v}"
            );
        };
        check(json!({"choices": []}));
        check(json!({"choices": {}}));
        check(json!({"choices": [{"index": 0}]}));
        check(json!({"choices": [{"message": {"content": 7}}]}));
        check(json!({"choices": [{"message": {"content": ["a"]}}]}));
        check(json!({"choices": [{"message": {"refusal": {}}}]}));
        check(json!({"choices": [{"index": 0, "message": {}}, {"index": 0, "message": {}}]}));
        check(json!({"choices": [{"index": 4, "message": {}}]}));
        check(json!({"choices": [{"index": "0", "message": {}}]}));
        check(
            json!({"choices": [{"message": {}}, {"message": {}}, {"message": {}}, {"message": {}}, {"message": {}}]}),
        );
        check(
            json!({"choices": [{"message": {"tool_calls": [{"type": "mystery", "mystery": {}}]}}]}),
        );
        check(
            json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": 3}}]}}]}),
        );
        check(json!({"choices": [{"message": {"tool_calls": {"function": {}}}}]}));
        check(json!({"choices": [{"message": {"audio": {"transcript": 1}}}]}));
        check(json!({"choices": [{"message": {}, "finish_reason": 1}]}));
        let many: Vec<Value> = (0..=TOOL_CALLS_MAX)
            .map(|i| json!({"id": i.to_string(), "function": {"name": "f", "arguments": "{}"}}))
            .collect();
        check(json!({"choices": [{"message": {"tool_calls": many}}]}));
        assert!(matches!(
            parse_completion(br#"{"choices":["#),
            Err(UpstreamError::Malformed(_))
        ));
    }

    #[test]
    fn deltas_keep_each_choice_and_tool_call_apart() {
        let d = delta(json!({"choices": [
            {"index": 1, "delta": {"content": "b", "extra_secret": "s"}, "finish_reason": null, "provider_data": 1},
            {"index": 0, "delta": {"role": "assistant", "content": "", "refusal": "r",
                                   "audio": {"data": "UklGRg==", "transcript": "t"},
                                   "tool_calls": [{"index": 3, "id": "c", "type": "custom", "custom": {"name": "h", "input": "i"}}],
                                   "function_call": {"arguments": "{\"a\""}},
             "finish_reason": "stop"},
        ]}))
        .unwrap();
        assert_eq!(d.choices.len(), 2);
        let (one, zero) = (&d.choices[0], &d.choices[1]);
        assert_eq!((one.index, one.content.as_deref()), (1, Some("b")));
        assert_eq!(zero.index, 0);
        assert_eq!(zero.content, None, "empty pieces are none");
        assert_eq!(zero.refusal.as_deref(), Some("r"));
        assert_eq!(zero.audio_transcript.as_deref(), Some("t"));
        assert_eq!(
            zero.tool_calls,
            [ToolCallDelta {
                index: 3,
                id: Some("c".into()),
                kind: Some(ToolKind::Custom),
                name: Some("h".into()),
                arguments: Some("i".into()),
            }]
        );
        assert_eq!(
            zero.function_call,
            Some(FunctionCallDelta {
                name: None,
                arguments: Some("{\"a\"".into())
            })
        );
        assert_eq!(zero.finish_reason.as_deref(), Some("stop"));
        assert!(d.finishes());
        assert!(!format!("{d:?}").contains("UklGRg"));
    }

    #[test]
    fn tool_call_pieces_merge() {
        let mut call = ToolCall::default();
        for piece in [
            json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}),
            json!({"index": 0, "function": {"arguments": ":1}"}}),
        ] {
            call.merge(&tool_call_parts(&piece, "t").unwrap());
        }
        assert_eq!(
            call.to_json(),
            json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}})
        );
    }

    #[test]
    fn malformed_deltas_are_refused() {
        let check = |v: Value| {
            assert!(
                matches!(delta(v.clone()), Err(UpstreamError::Malformed(_))),
                "{v}"
            );
        };
        check(json!({}));
        check(json!({"choices": [{"index": 9, "delta": {"content": "x"}}]}));
        check(json!({"choices": [{"delta": {"content": 1}}]}));
        check(json!({"choices": [{"delta": []}]}));
        check(json!({"choices": [{"delta": {"tool_calls": [{"index": 256, "function": {}}]}}]}));
        check(json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "type": "x"}]}}]}));
        check(json!({"choices": [{"index": 0, "delta": {}}, {"index": 0, "delta": {}}]}));
        assert!(matches!(
            parse_delta("{not json"),
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            parse_delta(r#"{"error":{"code":"overloaded"}}"#),
            Err(UpstreamError::Status { .. })
        ));
        let d = parse_delta(r#"{"choices":[],"usage":{"total_tokens":3}}"#).unwrap();
        assert_eq!(d.usage, Some(json!({"total_tokens": 3})));
        assert!(d.choices.is_empty());
    }
}
