//! `POST /v1/embeddings`: deterministic vectors, so a test can compute the
//! vector the gateway should have stored without calling the mock.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{MODELS, Shared};

const PATH: &str = "/v1/embeddings";

/// Dimensions when the request names none.
const DIMENSIONS_DEFAULT: usize = 8;
/// More than the largest OpenAI embedding model has (3072).
const DIMENSIONS_MAX: usize = 4096;
/// OpenAI's own limit on inputs per request.
const INPUTS_MAX: usize = 2048;

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Input,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// Every shape of `input` OpenAI accepts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

impl Input {
    /// Token arrays become their numbers joined by spaces, so they embed
    /// deterministically like any text.
    fn into_texts(self) -> Vec<String> {
        fn join(tokens: &[i64]) -> String {
            let words: Vec<String> = tokens.iter().map(i64::to_string).collect();
            words.join(" ")
        }
        match self {
            Input::Text(text) => vec![text],
            Input::Texts(texts) => texts,
            Input::Tokens(tokens) => vec![join(&tokens)],
            Input::TokenLists(lists) => lists.iter().map(|tokens| join(tokens)).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

pub(crate) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = crate::parse_json(body);
    shared.record(PATH, &headers, body.as_ref().unwrap_or(&Value::Null));
    shared.answer_latency().await;
    let request = body.and_then(|value| {
        EmbeddingRequest::deserialize(value).map_err(|err| {
            ApiError::invalid_request(format!("the request is not an embeddings request: {err}"))
        })
    });
    match request.and_then(answer) {
        Ok(body) => Json(body).into_response(),
        Err(err) => err.into_response(),
    }
}

fn answer(request: EmbeddingRequest) -> Result<Value, ApiError> {
    if request.model == "fault-500" {
        return Err(ApiError::upstream_failure());
    }
    if !MODELS.contains(&request.model.as_str()) {
        return Err(ApiError::model_not_found(&request.model));
    }
    let dimensions = request.dimensions.unwrap_or(DIMENSIONS_DEFAULT);
    if !(1..=DIMENSIONS_MAX).contains(&dimensions) {
        return Err(ApiError::invalid_request(format!(
            "dimensions must be between 1 and {DIMENSIONS_MAX}, not {dimensions}"
        )));
    }
    let encoding = match request.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "encoding_format must be \"float\" or \"base64\", not {other:?}"
            )));
        }
    };
    let texts = request.input.into_texts();
    if texts.len() > INPUTS_MAX {
        return Err(ApiError::invalid_request(format!(
            "at most {INPUTS_MAX} inputs per request, not {}",
            texts.len()
        )));
    }

    let prompt_tokens: usize = texts.iter().map(|text| crate::count_words(text)).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = embed(text, dimensions);
            let embedding = match encoding {
                Encoding::Float => json!(vector),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::String(STANDARD.encode(bytes))
                }
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    }))
}

/// The unit vector for `text`. Hand-written FNV-1a and SplitMix64 rather than
/// `std`'s hasher, whose output may change between Rust releases: the vectors
/// must stay the same for fixtures written today.
fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let seed = fnv1a(text.as_bytes());
    let mut vector: Vec<f32> = (0..dimensions as u64)
        .map(|dimension| {
            let bits = splitmix64(seed.wrapping_add(dimension.wrapping_mul(GOLDEN_GAMMA)));
            // The top 24 bits fit an f32 exactly; map them onto [-1, 1).
            (bits >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    } else if let Some(first) = vector.first_mut() {
        // All 24-bit draws were exactly 2^23; vanishingly unlikely, but the
        // answer must still be a unit vector.
        *first = 1.0;
    }
    vector
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        for (text, dimensions) in [("hello", 8), ("", 1), ("héllo wörld", 3072)] {
            let vector = embed(text, dimensions);
            assert_eq!(vector.len(), dimensions);
            assert_eq!(vector, embed(text, dimensions));
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
        }
        assert_ne!(embed("a", 8), embed("b", 8));
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
