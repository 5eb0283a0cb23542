//! The answer of `POST /v1/chat/completions` without `stream`, as the CLI and the
//! demo read it: the OpenAI chat completion the gateway writes, with its
//! `bulkhead` extension. Field names and types follow the server's
//! `completion_body` and `extension` (crates/bulkhead-server/src/gateway.rs).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletionResponse {
    /// `chatcmpl-<trace id without tr_>`.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    /// The upstream's usage object as it sent it, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    pub bulkhead: ChatExtension,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    /// Always `null` today.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// `stop`, `length`, `tool_calls`, … or `content_filter` when the guard
    /// withheld the answer.
    pub finish_reason: String,
}

/// The assistant's message; `content` is `null` for an answer made only of tool
/// calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<serde_json::Value>,
    /// `{"transcript": …}` of an audio answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<serde_json::Value>,
}

/// The gateway's own part of the answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatExtension {
    /// The call's decision trace, `GET /v1/traces/{trace_id}`.
    pub trace_id: String,
    pub redactions: u32,
    /// True when the guard withheld the answer (`finish_reason` `content_filter`).
    pub blocked: bool,
    /// What the gateway added to the upstream's time, in milliseconds.
    pub overhead_ms: f64,
}
