//! Embedders: text to vectors, one tenant per call.
//!
//! [`Embedder::embed`] takes the tenant and the texts of one call, so a batch can
//! never mix tenants: there is no way to express it. The tenant is not sent
//! upstream (it would tell the provider who our customers are); it is there so
//! an implementation can pick per-tenant credentials or limits, and so callers
//! cannot batch across tenants by accident.
//!
//! - [`HashedNgramEmbedder`]: deterministic, needs no model. Character 3-, 4- and
//!   5-grams of each lowercased word (with boundary markers, as in fastText) are
//!   hashed into `dims` buckets with a sign bit (feature hashing, Weinberger et
//!   al. 2009) and the vector is L2-normalized. It is *lexical*: it matches shared
//!   spellings, including inflections, compounds and typos that exact-term BM25
//!   misses, but it knows nothing of meaning ("car" is not near "automobile").
//!   Its hash is specified here (FNV-1a 64 + splitmix64), so vectors stored today
//!   equal vectors computed by a later release.
//! - [`HttpEmbedder`]: any OpenAI-compatible `POST {base_url}/embeddings` (OpenAI,
//!   TEI, Ollama, vLLM), in batches, with a timeout per request and retries with
//!   exponential backoff on 429, 5xx, timeouts and connection errors.
//!
//! Must never: put two tenants' texts in one request; log texts or vectors.

use std::time::Duration;

use async_trait::async_trait;
use bulkhead_types::TenantId;
use zeroize::{Zeroize, Zeroizing};

use crate::tokenize::hash_bytes;

/// Why embedding failed. Messages carry no text of the inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    #[error("the embedding server answered HTTP {status}")]
    Status { status: u16 },
    #[error("the embedding request timed out")]
    Timeout,
    #[error("could not reach the embedding server: {0}")]
    Connect(String),
    #[error("the embedding server's answer is malformed: {0}")]
    Malformed(String),
    #[error("the embedding server returned {got} dimensions, expected {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("the embedding server returned {got} embeddings for {expected} inputs")]
    Count { expected: usize, got: usize },
    #[error("invalid embedder configuration: {0}")]
    Config(String),
}

impl EmbedError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            EmbedError::Status { status } => *status == 429 || *status >= 500,
            EmbedError::Timeout | EmbedError::Connect(_) => true,
            _ => false,
        }
    }
}

/// Turns texts into vectors of a fixed dimension. Object-safe.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// One vector per text, in order, all for `tenant`.
    async fn embed(&self, tenant: &TenantId, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Hashed character n-grams (3–5) into `dims` signed buckets, L2-normalized. A
/// lexical embedding: see the module docs.
#[derive(Debug, Clone)]
pub struct HashedNgramEmbedder {
    dims: usize,
}

impl HashedNgramEmbedder {
    pub const DEFAULT_DIMS: usize = 256;
    const NGRAM_MIN: usize = 3;
    const NGRAM_MAX: usize = 5;
    const WORD_CHARS_MAX: usize = 64;

    pub fn new(dims: usize) -> Result<Self, EmbedError> {
        if !(16..=4096).contains(&dims) {
            return Err(EmbedError::Config(
                "dims must be between 16 and 4096".into(),
            ));
        }
        Ok(Self { dims })
    }

    /// The vector of one text (synchronous; the trait method wraps it).
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        // The current word as lowercase chars between boundary markers.
        let mut word: Vec<char> = Vec::with_capacity(Self::WORD_CHARS_MAX + 2);
        let mut utf8 = [0u8; 4 * (Self::NGRAM_MAX)];
        let mut flush = |word: &mut Vec<char>, v: &mut [f32]| {
            if word.is_empty() {
                return;
            }
            word.insert(0, '<');
            word.push('>');
            for n in Self::NGRAM_MIN..=Self::NGRAM_MAX {
                if word.len() < n {
                    break;
                }
                for gram in word.windows(n) {
                    let mut len = 0;
                    for c in gram {
                        len += c.encode_utf8(&mut utf8[len..]).len();
                    }
                    let h = hash_bytes(n as u64, &utf8[..len]);
                    let bucket = (h % self.dims as u64) as usize;
                    v[bucket] += if h >> 63 == 0 { 1.0 } else { -1.0 };
                }
            }
            word.zeroize();
            word.clear();
        };
        for c in text.chars() {
            if c.is_alphanumeric() {
                if word.len() < Self::WORD_CHARS_MAX {
                    word.extend(c.to_lowercase());
                }
            } else {
                flush(&mut word, &mut v);
            }
        }
        flush(&mut word, &mut v);
        utf8.zeroize();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }
}

impl Default for HashedNgramEmbedder {
    fn default() -> Self {
        Self {
            dims: Self::DEFAULT_DIMS,
        }
    }
}

#[async_trait]
impl Embedder for HashedNgramEmbedder {
    fn dimensions(&self) -> usize {
        self.dims
    }

    async fn embed(&self, _tenant: &TenantId, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// Settings of an OpenAI-compatible embedding endpoint.
#[derive(Clone)]
pub struct HttpEmbedderConfig {
    /// Base URL ending in `/v1` (e.g. `http://127.0.0.1:8080/v1`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when present; wiped on drop.
    pub api_key: Option<Zeroizing<String>>,
    pub model: String,
    /// Length of the vectors the model returns; answers are checked against it.
    pub dimensions: usize,
    /// Texts per request.
    pub batch_size: usize,
    pub timeout_ms: u64,
    /// Attempts after the first, on transient errors only.
    pub retries_max: u32,
    /// First backoff; doubles per retry (capped at 10 s), unless the server sends
    /// `Retry-After`.
    pub backoff_ms: u64,
    /// The largest response accepted, in bytes.
    pub response_bytes_max: usize,
}

impl std::fmt::Debug for HttpEmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEmbedderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| ".."))
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries_max", &self.retries_max)
            .finish_non_exhaustive()
    }
}

impl HttpEmbedderConfig {
    /// Defaults for everything but the endpoint, model and dimensions.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimensions: usize) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dimensions,
            batch_size: 64,
            timeout_ms: 30_000,
            retries_max: 3,
            backoff_ms: 200,
            response_bytes_max: 64 << 20,
        }
    }
}

/// An OpenAI-compatible `/v1/embeddings` client. Plain `http://` only unless
/// reqwest's TLS is enabled in the workspace (it is not yet).
#[derive(Debug)]
pub struct HttpEmbedder {
    config: HttpEmbedderConfig,
    url: String,
    client: reqwest::Client,
}

#[derive(serde::Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(serde::Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    index: Option<usize>,
}

const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl HttpEmbedder {
    pub fn new(config: HttpEmbedderConfig) -> Result<Self, EmbedError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(EmbedError::Config("base_url must be an http(s) URL".into()));
        }
        if config.model.is_empty() {
            return Err(EmbedError::Config("model must not be empty".into()));
        }
        if !(1..=IndexDims::MAX).contains(&config.dimensions) {
            return Err(EmbedError::Config(
                "dimensions must be between 1 and 8192".into(),
            ));
        }
        if !(1..=2048).contains(&config.batch_size) {
            return Err(EmbedError::Config(
                "batch_size must be between 1 and 2048".into(),
            ));
        }
        if config.timeout_ms == 0 || config.retries_max > 10 {
            return Err(EmbedError::Config(
                "timeout_ms must be positive and retries_max at most 10".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| EmbedError::Config(format!("http client: {e}")))?;
        let url = format!("{base}/embeddings");
        Ok(Self {
            config,
            url,
            client,
        })
    }

    async fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut attempt = 0u32;
        loop {
            match self.request(texts).await {
                Ok(v) => return Ok(v),
                Err((e, retry_after)) if e.is_transient() && attempt < self.config.retries_max => {
                    let backoff = retry_after.unwrap_or_else(|| {
                        Duration::from_millis(self.config.backoff_ms)
                            .saturating_mul(1 << attempt.min(16))
                    });
                    tracing::debug!(attempt, error = %e, "embedding request failed; retrying");
                    tokio::time::sleep(backoff.min(BACKOFF_MAX)).await;
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One request; on failure, the error and the server's `Retry-After`.
    async fn request(
        &self,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, (EmbedError, Option<Duration>)> {
        let mut req = self.client.post(&self.url).json(&EmbeddingsRequest {
            model: &self.config.model,
            input: texts,
        });
        if let Some(key) = &self.config.api_key {
            let header = Zeroizing::new(format!("Bearer {}", key.as_str()));
            req = req.header(reqwest::header::AUTHORIZATION, header.as_str());
        }
        let mut resp = req.send().await.map_err(|e| (transport_error(&e), None))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err((
                EmbedError::Status {
                    status: status.as_u16(),
                },
                retry_after,
            ));
        }
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| (transport_error(&e), None))?
        {
            if body.len() + chunk.len() > self.config.response_bytes_max {
                return Err((
                    EmbedError::Malformed(format!(
                        "response larger than {} bytes",
                        self.config.response_bytes_max
                    )),
                    None,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let parsed: Result<EmbeddingsResponse, _> = serde_json::from_slice(&body);
        body.zeroize();
        let parsed = parsed.map_err(|e| (EmbedError::Malformed(e.to_string()), None))?;
        self.check(parsed, texts.len()).map_err(|e| (e, None))
    }

    /// Orders the answer by `index` and checks count and dimensions.
    fn check(
        &self,
        resp: EmbeddingsResponse,
        expected: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if resp.data.len() != expected {
            return Err(EmbedError::Count {
                expected,
                got: resp.data.len(),
            });
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in resp.data.into_iter().enumerate() {
            let i = item.index.unwrap_or(position);
            if i >= expected || out[i].is_some() {
                return Err(EmbedError::Malformed(
                    "embedding indexes are not 0..n".into(),
                ));
            }
            if item.embedding.len() != self.config.dimensions {
                return Err(EmbedError::Dimensions {
                    expected: self.config.dimensions,
                    got: item.embedding.len(),
                });
            }
            if item.embedding.iter().any(|x| !x.is_finite()) {
                return Err(EmbedError::Malformed(
                    "non-finite value in an embedding".into(),
                ));
            }
            out[i] = Some(item.embedding);
        }
        // Every slot was filled exactly once: n items, distinct indexes below n.
        Ok(out.into_iter().flatten().collect())
    }
}

/// Upper bound shared with `IndexConfig::DIMS_MAX`.
struct IndexDims;
impl IndexDims {
    const MAX: usize = crate::index::IndexConfig::DIMS_MAX;
}

fn transport_error(e: &reqwest::Error) -> EmbedError {
    if e.is_timeout() {
        EmbedError::Timeout
    } else {
        EmbedError::Connect(e.without_url_string())
    }
}

trait WithoutUrl {
    fn without_url_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_string(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url() {
            s = s.replace(url.as_str(), "<embedding url>");
        }
        s
    }
}

#[async_trait]
impl Embedder for HttpEmbedder {
    fn dimensions(&self) -> usize {
        self.config.dimensions
    }

    async fn embed(&self, _tenant: &TenantId, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.batch_size) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hashed_ngrams_are_deterministic_normalized_and_lexical() {
        let e = HashedNgramEmbedder::default();
        let a = e.embed_one("Tenant isolation for retrieval");
        assert_eq!(a.len(), 256);
        assert_eq!(a, e.embed_one("Tenant isolation for retrieval"));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let inflected = e.embed_one("tenants isolated in retrieving");
        let unrelated = e.embed_one("banana bread recipe with walnuts");
        assert!(cosine(&a, &inflected) > cosine(&a, &unrelated) + 0.2);
        // Case and punctuation do not matter.
        assert_eq!(e.embed_one("Hello, World!"), e.embed_one("hello world"));
        // No alphanumerics: the zero vector.
        assert!(e.embed_one(" ... ").iter().all(|x| *x == 0.0));
        assert!(HashedNgramEmbedder::new(8).is_err());
    }

    #[test]
    fn hashed_ngrams_are_stable_across_releases() {
        // Stored (sealed) embeddings must equal recomputed ones: pin a few values.
        let v = HashedNgramEmbedder::new(16)
            .expect("dims")
            .embed_one("bulkhead");
        let pinned: Vec<i32> = v.iter().map(|x| (x * 1000.0).round() as i32).collect();
        assert_eq!(pinned, PINNED_BULKHEAD_16);
    }

    const PINNED_BULKHEAD_16: [i32; 16] = [
        -229, 229, 459, 0, 229, 0, 0, -229, 459, 0, 0, 0, -229, -229, -459, 229,
    ];
}
