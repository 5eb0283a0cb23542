//! The built-in echo models: the worst possible models, on purpose.
//!
//! `bulkhead-echo` answers with its whole prompt, so anything in a tenant's context
//! (retrieved chunks, session memory, the planted canary) comes straight back: the
//! guard must let the tenant's own data through and nothing else.
//! `bulkhead-echo-leaky` first repeats the previous caller's prompt, whoever that
//! was: a shared model or prefix cache regurgitating one customer's context to the
//! next. Both run in-process (no data leaves the machine) and exist only when the
//! operator enables them; they are never a default for real traffic.

use std::collections::VecDeque;
use std::sync::Mutex;

use base64::Engine;
use serde_json::{Map, Value};

use crate::Delta;
use crate::openai::{EmbeddingsRequest, Message};

pub const ECHO_MODEL: &str = "bulkhead-echo";
pub const ECHO_LEAKY_MODEL: &str = "bulkhead-echo-leaky";

/// Characters per streamed piece: small, so tests see many pieces and a canary is
/// always split across several of them.
const PIECE_CHARS: usize = 7;

#[derive(Debug, Default)]
pub(crate) struct EchoModels {
    /// The leaky model's memory: the last prompt it saw, from any tenant.
    last_prompt: Mutex<String>,
}

impl EchoModels {
    fn answer(&self, model: &str, body: &Map<String, Value>) -> String {
        let prompt = render(body);
        if model != ECHO_LEAKY_MODEL {
            return prompt;
        }
        // A poisoned lock only means another request panicked mid-swap; the memory
        // is a String either way.
        let mut memory = self.last_prompt.lock().unwrap_or_else(|p| p.into_inner());
        let previous = std::mem::replace(&mut *memory, prompt.clone());
        previous + &prompt
    }

    pub(crate) fn complete(&self, model: &str, body: &Map<String, Value>) -> crate::Completion {
        let content = self.answer(model, body);
        crate::Completion {
            usage: Some(usage(body, &content)),
            choices: vec![crate::Choice {
                index: 0,
                message: crate::Answer {
                    content: Some(content),
                    ..crate::Answer::default()
                },
                finish_reason: "stop".into(),
            }],
        }
    }

    pub(crate) fn stream(&self, model: &str, body: &Map<String, Value>) -> VecDeque<Delta> {
        let content = self.answer(model, body);
        let mut out = VecDeque::new();
        let chars: Vec<char> = content.chars().collect();
        for piece in chars.chunks(PIECE_CHARS) {
            out.push_back(Delta::content(piece.iter().collect::<String>()));
        }
        out.push_back(Delta::finish("stop"));
        out.push_back(Delta {
            usage: Some(usage(body, &content)),
            ..Delta::default()
        });
        out
    }
}

/// `role: text` per message, one per line.
fn render(body: &Map<String, Value>) -> String {
    let mut out = String::new();
    if let Some(Value::Array(messages)) = body.get("messages") {
        for m in messages {
            if let Value::Object(map) = m {
                let message = Message(map.clone());
                out.push_str(message.role());
                out.push_str(": ");
                out.push_str(&message.text());
                out.push('\n');
            }
        }
    }
    out
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn usage(body: &Map<String, Value>, answer: &str) -> Value {
    let prompt = words(&render(body));
    let completion = words(answer);
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// Deterministic unit vectors from a hash of each input: enough for tests of the
/// embeddings path, meaningless as semantics.
pub(crate) fn embeddings(model: &str, request: &EmbeddingsRequest) -> Value {
    let dims = request.dimensions.unwrap_or(64) as usize;
    let data: Vec<Value> = request
        .inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let vector = hashed_unit_vector(text, dims);
            let embedding = if request.encoding_format.as_deref() == Some("base64") {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes))
            } else {
                Value::from(vector)
            };
            serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = request.inputs.iter().map(|t| words(t)).sum();
    serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

fn hashed_unit_vector(text: &str, dims: usize) -> Vec<f32> {
    let seed = bulkhead_crypto::sha256(text.as_bytes());
    let mut state = u64::from_le_bytes(seed[..8].try_into().expect("8 of 32 bytes")) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            // xorshift64: a stream of pseudo-random values from the text's hash.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(text: &str) -> Map<String, Value> {
        json!({"messages": [{"role": "user", "content": text}]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn echo_repeats_the_prompt_and_leaky_the_previous_callers_too() {
        let models = EchoModels::default();
        let content = |c: crate::Completion| c.choices[0].message.content.clone();
        let c = models.complete(ECHO_MODEL, &body("hello"));
        assert_eq!(content(c).as_deref(), Some("user: hello\n"));
        models.complete(ECHO_LEAKY_MODEL, &body("secret of A"));
        let c = models.complete(ECHO_LEAKY_MODEL, &body("question of B"));
        assert_eq!(
            content(c).as_deref(),
            Some("user: secret of A\nuser: question of B\n")
        );
        let pieces = models.stream(ECHO_MODEL, &body("héllo wörld, again"));
        let text: String = pieces
            .iter()
            .flat_map(|d| &d.choices)
            .filter_map(|c| c.content.clone())
            .collect();
        assert_eq!(text, "user: héllo wörld, again\n");
        assert!(pieces.iter().any(Delta::finishes));
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let req = EmbeddingsRequest {
            model: ECHO_MODEL.into(),
            inputs: vec!["a".into(), "b".into()],
            raw_input: json!(["a", "b"]),
            encoding_format: None,
            dimensions: Some(16),
        };
        let v = embeddings(ECHO_MODEL, &req);
        let first: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(first.len(), 16);
        let norm: f64 = first.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_eq!(v, embeddings(ECHO_MODEL, &req));
        assert_ne!(v["data"][0]["embedding"], v["data"][1]["embedding"]);
    }
}
