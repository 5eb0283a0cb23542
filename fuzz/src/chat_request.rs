//! The gateway's request parsers (`bulkhead_gateway::openai::parse_chat` and
//! `parse_embeddings`) on arbitrary bytes: never a panic, and whatever is accepted
//! keeps invariant 7 (only known-safe fields are forwarded, limits hold).
//!
//! Input: one byte for `messages_max` (1–16), one for `top_k_max` (1–32), then
//! the body.

use bulkhead_gateway::openai::{N_MAX, RequestLimits, parse_chat, parse_embeddings};
use serde_json::Value;

use crate::Input;

/// What may reach the upstream as sent (the module's `FORWARDED`, copied: the
/// target checks the rule, not the list against itself).
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

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

const MESSAGE_FIELDS: &[&str] = &[
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "refusal",
];

fn check_model(model: &str) {
    assert!(!model.is_empty() && model.len() <= 256, "model {model:?}");
    assert!(!model.contains(char::is_control), "model {model:?}");
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = RequestLimits {
        messages_max: 1 + usize::from(input.byte() % 16),
        top_k_max: 1 + usize::from(input.byte() % 32),
    };
    let body = input.rest();

    if let Ok(req) = parse_chat(body, limits) {
        check_model(&req.model);
        assert!(!req.messages.is_empty() && req.messages.len() <= limits.messages_max);
        for m in &req.messages {
            assert!(ROLES.contains(&m.role()), "role {:?}", m.role());
            assert!(
                m.0.keys().all(|k| MESSAGE_FIELDS.contains(&k.as_str())),
                "{m:?}"
            );
            match m.0.get("content") {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(Value::Array(parts)) => assert!(parts.iter().all(Value::is_object)),
                Some(other) => panic!("content {other:?} accepted"),
            }
            let _ = m.text();
        }
        for (k, v) in &req.forward {
            assert!(FORWARDED.contains(&k.as_str()), "forwards {k:?}");
            if k == "n" {
                assert!(
                    v.as_u64().is_some_and(|n| (1..=N_MAX).contains(&n)),
                    "n = {v}"
                );
            }
        }
        for k in &req.dropped {
            assert!(
                !FORWARDED.contains(&k.as_str()),
                "dropped {k:?} is forwarded"
            );
            assert!(
                !req.forward.contains_key(k),
                "{k:?} both dropped and forwarded"
            );
        }
        if let Some(r) = &req.extension.retrieve {
            assert!((1..=limits.top_k_max).contains(&r.top_k));
        }
        // The same body always parses the same way.
        let again = parse_chat(body, limits).expect("parsed once");
        assert_eq!(format!("{req:?}"), format!("{again:?}"));
    }

    let inputs_max = limits.messages_max;
    if let Ok(req) = parse_embeddings(body, inputs_max) {
        check_model(&req.model);
        assert!(!req.inputs.is_empty() && req.inputs.len() <= inputs_max);
        if let Some(f) = &req.encoding_format {
            assert!(f == "float" || f == "base64", "encoding {f:?}");
        }
        if let Some(d) = req.dimensions {
            assert!((1..=65_536).contains(&d));
        }
    }
}
