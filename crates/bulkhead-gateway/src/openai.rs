//! The OpenAI chat and embeddings requests as SDKs send them, parsed into what the
//! gateway needs, with the parameters it forwards chosen by name.
//!
//! The rule (invariant 7): accept the OpenAI schema, forward only fields known to be
//! safe. A field that would carry text past the output guard (`logprobs`, audio
//! output) or fan a call out into more answers than the guard judges together
//! (`n` above `N_MAX`) is refused with a clear error; a field that would share or store data across the
//! tenant boundary (`user`, `cache_salt`, `prompt_cache_key`, `store`, `metadata`)
//! is dropped and, where the upstream needs one, replaced by the gateway's own
//! per-tenant value; anything unknown is dropped.

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

/// The most choices a client may ask for (`n`). Every choice is scanned, and the
/// verdict is over all of them together.
pub const N_MAX: u64 = 4;

/// Parameters passed to the upstream as the client sent them. Each only shapes
/// sampling or the answer's form.
const FORWARDED: &[&str] = &[
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "logit_bias",
    "service_tier",
    "top_k",
    "min_p",
    "repetition_penalty",
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> RequestError {
    RequestError::Invalid(msg.into())
}

/// The `bulkhead` request extension.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    #[serde(default)]
    pub retrieve: Option<Retrieve>,
    #[serde(default)]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retrieve {
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    5
}

/// One chat message, kept as JSON so that content parts and tool calls pass
/// through unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Message(pub Map<String, Value>);

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        let mut map = Map::new();
        map.insert("role".into(), Value::String(role.into()));
        map.insert("content".into(), Value::String(content.into()));
        Self(map)
    }

    pub fn role(&self) -> &str {
        self.0.get("role").and_then(Value::as_str).unwrap_or("")
    }

    /// The message's text: the content string, or its text (and refusal) parts
    /// joined by newlines, plus tool call arguments and custom tool inputs (which
    /// are text a model reads too). Other parts are not text: which of them may be
    /// sent at all is `crate::content`'s.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match self.0.get("content") {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(parts)) => {
                for part in parts {
                    let text = match part.get("type").and_then(Value::as_str) {
                        Some("refusal") => part.get("refusal"),
                        _ => part.get("text"),
                    };
                    if let Some(t) = text.and_then(Value::as_str) {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(t);
                    }
                }
            }
            _ => {}
        }
        if let Some(Value::Array(calls)) = self.0.get("tool_calls") {
            for call in calls {
                let args = call
                    .pointer("/function/arguments")
                    .or_else(|| call.pointer("/custom/input"))
                    .and_then(Value::as_str);
                if let Some(args) = args {
                    out.push('\n');
                    out.push_str(args);
                }
            }
        }
        out
    }
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// A chat completion request after parsing.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    /// The client asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    pub extension: Extension,
    /// The parameters forwarded as sent.
    pub forward: Map<String, Value>,
    /// Names of fields dropped, for the debug log (never values).
    pub dropped: Vec<String>,
}

/// Limits on what a client may ask for.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub messages_max: usize,
    pub top_k_max: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            messages_max: 1000,
            top_k_max: 20,
        }
    }
}

pub fn parse_chat(body: &[u8], limits: RequestLimits) -> Result<ChatRequest, RequestError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::Json(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(invalid("the body must be a JSON object"));
    };
    let model = take_model(&mut map)?;
    let messages = match map.remove("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(invalid("messages must not be empty")),
        _ => return Err(invalid("messages must be an array of messages")),
    };
    if messages.len() > limits.messages_max {
        return Err(invalid(format!(
            "at most {} messages per request",
            limits.messages_max
        )));
    }
    let messages = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let stream = match map.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("stream must be true or false")),
    };
    let include_usage = match map.remove("stream_options") {
        Some(Value::Object(o)) => o
            .get("include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        None | Some(Value::Null) => false,
        Some(_) => return Err(invalid("stream_options must be an object")),
    };
    let extension = match map.remove("bulkhead") {
        None | Some(Value::Null) => Extension::default(),
        Some(v) => serde_json::from_value::<Extension>(v)
            .map_err(|e| invalid(format!("bulkhead extension: {e}")))?,
    };
    if let Some(r) = &extension.retrieve
        && (r.top_k == 0 || r.top_k > limits.top_k_max)
    {
        return Err(invalid(format!(
            "bulkhead.retrieve.top_k must be between 1 and {}",
            limits.top_k_max
        )));
    }
    refuse_unscanned(&map)?;
    let (forward, dropped) = split_forwarded(map);
    Ok(ChatRequest {
        model,
        messages,
        stream,
        include_usage,
        extension,
        forward,
        dropped,
    })
}

fn take_model(map: &mut Map<String, Value>) -> Result<String, RequestError> {
    match map.remove("model") {
        Some(Value::String(m))
            if !m.is_empty() && m.len() <= 256 && !m.contains(char::is_control) =>
        {
            Ok(m)
        }
        _ => Err(invalid(
            "model must be the name of a model (see GET /v1/models)",
        )),
    }
}

fn parse_message(i: usize, value: Value) -> Result<Message, RequestError> {
    let Value::Object(mut map) = value else {
        return Err(invalid(format!("messages[{i}] must be an object")));
    };
    let role = map.get("role").and_then(Value::as_str).unwrap_or("");
    if !ROLES.contains(&role) {
        return Err(invalid(format!(
            "messages[{i}].role must be one of {}",
            ROLES.join(", ")
        )));
    }
    match map.get("content") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(_)) => {}
        Some(_) => {
            return Err(invalid(format!(
                "messages[{i}].content must be a string or an array of parts"
            )));
        }
    }
    let role = role.to_owned();
    if let Some(Value::Array(parts)) = map.get_mut("content") {
        let parts = std::mem::take(parts);
        map.insert(
            "content".into(),
            Value::Array(crate::content::sanitize_parts(i, &role, parts)?),
        );
    }
    // Keep only the fields of a chat message; anything else is dropped.
    let kept: Map<String, Value> = map
        .into_iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "role" | "content" | "name" | "tool_calls" | "tool_call_id" | "refusal"
            )
        })
        .collect();
    Ok(Message(kept))
}

/// Parameters whose effect would put text in the answer that the guard does not
/// scan, or more choices than it judges together.
fn refuse_unscanned(map: &Map<String, Value>) -> Result<(), RequestError> {
    if map
        .get("logprobs")
        .is_some_and(|v| v != &Value::Bool(false) && !v.is_null())
        || map.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "logprobs are not supported: they would return token text the output guard cannot scan",
        ));
    }
    if let Some(n) = map.get("n")
        && !n.is_null()
        && !n.as_u64().is_some_and(|n| (1..=N_MAX).contains(&n))
    {
        return Err(invalid(format!(
            "n must be between 1 and {N_MAX}: every choice is scanned, and the answer as a whole"
        )));
    }
    if let Some(m) = map.get("modalities")
        && m.as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() != Some("text")))
    {
        return Err(invalid(
            "only text output is supported: audio cannot be scanned",
        ));
    }
    Ok(())
}

fn split_forwarded(map: Map<String, Value>) -> (Map<String, Value>, Vec<String>) {
    let mut forward = Map::new();
    let mut dropped = Vec::new();
    for (k, v) in map {
        if v.is_null() && k == "n" {
            // The upstream's default, one choice.
        } else if FORWARDED.contains(&k.as_str()) {
            forward.insert(k, v);
        } else if k != "logprobs" {
            dropped.push(k);
        }
    }
    (forward, dropped)
}

/// An embeddings request after parsing.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub inputs: Vec<String>,
    /// Token-array inputs are forwarded as sent (they are not text we can hash as
    /// such; the trace hashes their JSON).
    pub raw_input: Value,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
}

pub fn parse_embeddings(body: &[u8], inputs_max: usize) -> Result<EmbeddingsRequest, RequestError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::Json(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(invalid("the body must be a JSON object"));
    };
    let model = take_model(&mut map)?;
    let raw_input = map
        .remove("input")
        .ok_or_else(|| invalid("input is required: a string or an array of strings"))?;
    let inputs: Vec<String> = match &raw_input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Array(tokens) if tokens.iter().all(Value::is_number) => Ok(tokens
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")),
                _ => Err(invalid("input items must be strings or token arrays")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("input must be a string or a non-empty array")),
    };
    if inputs.len() > inputs_max {
        return Err(invalid(format!("at most {inputs_max} inputs per request")));
    }
    let encoding_format = match map.remove("encoding_format") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) if f == "float" || f == "base64" => Some(f),
        Some(_) => return Err(invalid("encoding_format must be float or base64")),
    };
    let dimensions = match map.remove("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|d| (1..=65_536).contains(d))
                .ok_or_else(|| invalid("dimensions must be a positive integer"))?,
        ),
    };
    Ok(EmbeddingsRequest {
        model,
        inputs,
        raw_input,
        encoding_format,
        dimensions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, RequestError> {
        parse_chat(&serde_json::to_vec(&v).unwrap(), RequestLimits::default())
    }

    #[test]
    fn keeps_safe_parameters_and_drops_cross_tenant_ones() {
        let req = parse(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi", "x-junk": 1}],
            "temperature": 0.2, "user": "alice", "cache_salt": "shared", "prompt_cache_key": "k",
            "store": true, "metadata": {"a": "b"}, "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "logprobs": false,
            "bulkhead": {"retrieve": {"top_k": 3}, "session_id": "ses_1"}
        }))
        .unwrap();
        assert_eq!(
            req.forward,
            json!({"temperature": 0.2, "n": 1})
                .as_object()
                .unwrap()
                .clone()
        );
        let mut dropped = req.dropped.clone();
        dropped.sort();
        assert_eq!(
            dropped,
            [
                "cache_salt",
                "metadata",
                "prompt_cache_key",
                "store",
                "user"
            ]
        );
        assert!(req.stream && req.include_usage);
        assert_eq!(req.extension.retrieve, Some(Retrieve { top_k: 3 }));
        assert_eq!(
            req.messages[0].0.len(),
            2,
            "unknown message fields are dropped"
        );
    }

    #[test]
    fn refuses_what_the_guard_could_not_scan_or_what_is_malformed() {
        let base = || json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            parse(b).unwrap_err()
        };
        assert!(
            matches!(with("logprobs", json!(true)), RequestError::Invalid(m) if m.contains("logprobs"))
        );
        for n in [json!(0), json!(N_MAX + 1), json!(1.5), json!("2")] {
            assert!(
                matches!(with("n", n.clone()), RequestError::Invalid(m) if m.contains("n must be between 1 and 4")),
                "{n}"
            );
        }
        assert!(matches!(
            with("modalities", json!(["text", "audio"])),
            RequestError::Invalid(_)
        ));
        assert!(matches!(
            with("messages", json!([])),
            RequestError::Invalid(_)
        ));
        assert!(matches!(
            with("messages", json!([{"role": "wizard", "content": "x"}])),
            RequestError::Invalid(_)
        ));
        assert!(matches!(with("model", json!(7)), RequestError::Invalid(_)));
        assert!(
            matches!(with("bulkhead", json!({"tenant": "tn_x"})), RequestError::Invalid(m) if m.contains("unknown field"))
        );
        assert!(matches!(
            with("bulkhead", json!({"retrieve": {"top_k": 0}})),
            RequestError::Invalid(_)
        ));
        assert!(matches!(
            parse_chat(b"{", RequestLimits::default()),
            Err(RequestError::Json(_))
        ));
    }

    #[test]
    fn several_choices_are_forwarded_up_to_the_limit() {
        let req = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": N_MAX}),
        )
        .unwrap();
        assert_eq!(req.forward["n"], json!(N_MAX));
        let req = parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": null}),
        )
        .unwrap();
        assert!(!req.forward.contains_key("n") && req.dropped.is_empty());
    }

    #[test]
    fn message_text_covers_parts_and_tool_arguments() {
        let m = parse_message(
            0,
            json!({"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}],
                   "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}),
        )
        .unwrap();
        assert_eq!(m.text(), "a\nb\n{\"q\":1}");
        // A refusal part is text a model reads too.
        let m = parse_message(
            1,
            json!({"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}, {"type": "text", "text": "c"}]}),
        )
        .unwrap();
        assert_eq!(m.text(), "no\nc");
    }

    #[test]
    fn embeddings_inputs() {
        let r = parse_embeddings(
            br#"{"model":"e","input":["a",[1,2]],"encoding_format":"base64","user":"x"}"#,
            10,
        )
        .unwrap();
        assert_eq!(r.inputs, ["a", "1 2"]);
        assert_eq!(r.encoding_format.as_deref(), Some("base64"));
        assert!(parse_embeddings(br#"{"model":"e","input":[]}"#, 10).is_err());
        assert!(parse_embeddings(br#"{"model":"e","input":["a","b"]}"#, 1).is_err());
        assert!(parse_embeddings(br#"{"model":"e","input":"a","dimensions":0}"#, 1).is_err());
    }
}
