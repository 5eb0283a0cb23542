//! The model gateway's core, without HTTP serving: which upstream serves a model for
//! a tenant (region and allow-list), what is sent to it (sanitized parameters, the
//! per-tenant cache salt and pseudonym, the tenant's credential), and how its answer
//! is read back (whole or as a stream) with every fault bounded in time and size.
//!
//! The server crate owns the wire edge, the guard, sessions and traces; this crate
//! turns a parsed request into upstream calls. Must never: choose an upstream outside
//! the tenant's region; send one tenant's salt, pseudonym or credential with another
//! tenant's request; wait on an upstream without a deadline; hold an unbounded
//! amount of an upstream's answer.

#![forbid(unsafe_code)]

mod answer;
pub mod content;
mod echo;
pub mod fetch;
pub mod openai;
pub mod sse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_crypto::{KeyedHasher, SecretKey};
use bulkhead_types::{Region, TenantId};
use serde_json::{Map, Value};
use thiserror::Error;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use answer::{
    Answer, CHOICES_MAX, Choice, ChoiceDelta, Completion, Delta, FunctionCall, FunctionCallDelta,
    TOOL_CALLS_MAX, ToolCall, ToolCallDelta, ToolKind,
};
pub use echo::{ECHO_LEAKY_MODEL, ECHO_MODEL};

use crate::answer::{parse_completion, parse_delta};
use crate::openai::Message;
use crate::sse::SseReader;

/// One upstream as configured.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// A short name for logs and traces (`vllm-eu`).
    pub name: String,
    pub kind: UpstreamKind,
    /// The region it serves; `None`: every region (only the built-in echo models,
    /// which never leave the process).
    pub region: Option<Region>,
    pub models: Vec<String>,
    /// Send vLLM's `cache_salt`, so prefix-cache entries are never shared across
    /// tenants.
    pub cache_salt: bool,
    /// Send OpenAI's `prompt_cache_key` (the same per-tenant value), so cache
    /// routing is per tenant.
    pub prompt_cache_key: bool,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("region", &self.region)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub enum UpstreamKind {
    /// An OpenAI-compatible server.
    Http {
        /// Ends in `/v1` (no trailing slash).
        base_url: String,
        /// Sent as `Authorization: Bearer …` unless the tenant has its own.
        api_key: Option<Zeroizing<String>>,
        /// Per-tenant credentials, so each customer's usage is billed and rate
        /// limited on its own account.
        tenant_api_keys: HashMap<TenantId, Zeroizing<String>>,
    },
    /// The built-in echo models (tests and demos only).
    Echo,
}

impl std::fmt::Debug for UpstreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamKind::Http {
                base_url,
                tenant_api_keys,
                api_key,
            } => f
                .debug_struct("Http")
                .field("base_url", base_url)
                .field("api_key", &api_key.as_ref().map(|_| "<set>"))
                .field("tenant_api_keys", &tenant_api_keys.len())
                .finish(),
            UpstreamKind::Echo => f.write_str("Echo"),
        }
    }
}

impl UpstreamConfig {
    /// The built-in echo models, `bulkhead-echo` and `bulkhead-echo-leaky`: they
    /// answer with their whole prompt (the leaky one with the previous caller's
    /// prompt first). The worst possible models, for tests and demos; never a
    /// default.
    pub fn echo() -> Self {
        Self {
            name: "builtin-echo".into(),
            kind: UpstreamKind::Echo,
            region: None,
            models: vec![ECHO_MODEL.into(), ECHO_LEAKY_MODEL.into()],
            cache_salt: false,
            prompt_cache_key: false,
        }
    }
}

/// How long the gateway waits on an upstream, at each phase.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two pieces of a body.
    pub idle: Duration,
    /// The whole call, head to last byte.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub upstreams: Vec<UpstreamConfig>,
    pub timeouts: Timeouts,
    /// Largest upstream answer read, in bytes (a whole body, or one stream's sum).
    pub answer_bytes_max: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            timeouts: Timeouts::default(),
            answer_bytes_max: 8 << 20,
        }
    }
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("upstream `{0}`: {1}")]
    Upstream(String, String),
    #[error("model `{model}` is offered by both `{a}` and `{b}` in region `{region}`")]
    Ambiguous {
        model: String,
        a: String,
        b: String,
        region: String,
    },
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

/// What went wrong with an upstream call, in a closed set the server maps to 502
/// and 504 and writes into the trace.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("could not reach the upstream: {0}")]
    Connect(String),
    #[error("the upstream did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("the upstream answered HTTP {status}")]
    Status { status: u16, code: Option<String> },
    #[error("the upstream's answer was malformed: {0}")]
    Malformed(String),
    #[error("the upstream cut its answer off: {0}")]
    Cut(String),
    #[error("the upstream's answer exceeded {0} bytes")]
    TooLarge(usize),
}

/// A transport failure as clients and traces may read it: without the URL
/// (an internal host, port and path of the model network are nobody's business
/// outside it). The upstream is named by its configured name instead.
fn transport(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

impl UpstreamError {
    /// The outcome name in traces and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "upstream_unreachable",
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Status { .. } => "upstream_status",
            UpstreamError::Malformed(_) => "upstream_malformed",
            UpstreamError::Cut(_) => "upstream_cut",
            UpstreamError::TooLarge(_) => "upstream_too_large",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_))
    }
}

/// One upstream, ready.
#[derive(Debug)]
pub struct Upstream {
    pub config: UpstreamConfig,
    echo: Option<echo::EchoModels>,
}

impl Upstream {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The built-in models of an upstream that is not HTTP (`request` returned
    /// `None` for it).
    fn echo(&self) -> &echo::EchoModels {
        self.echo
            .as_ref()
            .expect("an upstream that is not Http is Echo")
    }

    fn serves(&self, region: &Region) -> bool {
        self.config.region.as_ref().is_none_or(|r| r == region)
    }
}

/// A model a tenant may call, and where.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub model: &'a str,
    pub upstream: &'a Upstream,
}

/// Why a model cannot be routed. Unknown, foreign-region and not-allowed look the
/// same to the tenant: the model "does not exist" for it.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("model `{0}` does not exist or is not available to this tenant")]
pub struct NoSuchModel(pub String);

/// Per-tenant values derived from the server secret.
#[derive(Debug)]
struct TenantSecrets(KeyedHasher);

impl TenantSecrets {
    fn derive(&self, purpose: &[u8], tenant: &TenantId) -> String {
        let mut input = Vec::with_capacity(purpose.len() + 1 + tenant.as_str().len());
        input.extend_from_slice(purpose);
        input.push(0);
        input.extend_from_slice(tenant.as_str().as_bytes());
        bulkhead_types::hex_lower(&self.0.hash(&input)[..16])
    }
}

/// The upstreams and the client that calls them.
#[derive(Debug)]
pub struct Gateway {
    upstreams: Vec<Arc<Upstream>>,
    /// (region or "" for any, model) → upstream index.
    routes: HashMap<(String, String), usize>,
    http: reqwest::Client,
    timeouts: Timeouts,
    answer_bytes_max: usize,
    secrets: TenantSecrets,
}

impl Gateway {
    /// `secret` is a subkey of the server secret for this purpose only; the cache
    /// salts of a deployment stay the same across restarts and replicas.
    pub fn new(config: GatewayConfig, secret: &SecretKey) -> Result<Self, ConfigError> {
        let mut upstreams = Vec::new();
        let mut routes: HashMap<(String, String), usize> = HashMap::new();
        for (i, u) in config.upstreams.into_iter().enumerate() {
            if u.name.is_empty() || u.models.is_empty() {
                return Err(ConfigError::Upstream(
                    u.name.clone(),
                    "needs a name and at least one model".into(),
                ));
            }
            if let UpstreamKind::Http { base_url, .. } = &u.kind {
                let parsed = reqwest::Url::parse(base_url)
                    .map_err(|e| ConfigError::Upstream(u.name.clone(), format!("base_url: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || base_url.ends_with('/') {
                    return Err(ConfigError::Upstream(
                        u.name.clone(),
                        "base_url must be http(s)://host[:port]/…/v1 without a trailing slash"
                            .into(),
                    ));
                }
            }
            let region = u.region.as_ref().map(|r| r.to_string()).unwrap_or_default();
            for model in &u.models {
                if let Some(&other) = routes.get(&(region.clone(), model.clone())) {
                    let other: &Arc<Upstream> = &upstreams[other];
                    return Err(ConfigError::Ambiguous {
                        model: model.clone(),
                        a: other.config.name.clone(),
                        b: u.name.clone(),
                        region: region.clone(),
                    });
                }
                routes.insert((region.clone(), model.clone()), i);
            }
            let echo = matches!(u.kind, UpstreamKind::Echo).then(echo::EchoModels::default);
            upstreams.push(Arc::new(Upstream { config: u, echo }));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Self {
            upstreams,
            routes,
            http,
            timeouts: config.timeouts,
            answer_bytes_max: config.answer_bytes_max,
            secrets: TenantSecrets(KeyedHasher::new(secret)),
        })
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.upstreams.iter().map(|u| &**u)
    }

    /// Whether any model at all is configured (a gateway with none answers 404 to
    /// every model and says why in the log at start).
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The models a tenant of `region` with this allow-list may call, sorted.
    pub fn models_for(&self, region: &Region, allow: Option<&[String]>) -> Vec<Route<'_>> {
        let mut out: Vec<Route<'_>> = self
            .upstreams
            .iter()
            .filter(|u| u.serves(region))
            .flat_map(|u| {
                u.config.models.iter().map(move |m| Route {
                    model: m,
                    upstream: u,
                })
            })
            .filter(|r| allow.is_none_or(|a| a.iter().any(|m| m == r.model)))
            .collect();
        out.sort_by(|a, b| a.model.cmp(b.model));
        out.dedup_by(|a, b| a.model == b.model);
        out
    }

    /// Every model name offered in a region (for validating allow-lists).
    pub fn offers(&self, region: &Region, model: &str) -> bool {
        self.route(model, region, None).is_ok()
    }

    /// The upstream that serves `model` to a tenant of `region` whose allow-list
    /// is `allow`. A regional upstream wins over the region-free echo models.
    pub fn route<'a>(
        &'a self,
        model: &'a str,
        region: &Region,
        allow: Option<&[String]>,
    ) -> Result<Route<'a>, NoSuchModel> {
        if allow.is_some_and(|a| !a.iter().any(|m| m == model)) {
            return Err(NoSuchModel(model.to_owned()));
        }
        let key = (region.to_string(), model.to_owned());
        let index = self
            .routes
            .get(&key)
            .or_else(|| self.routes.get(&(String::new(), model.to_owned())))
            .ok_or_else(|| NoSuchModel(model.to_owned()))?;
        Ok(Route {
            model,
            upstream: &self.upstreams[*index],
        })
    }

    /// The tenant's prefix-cache salt: an HMAC of its id under the server secret.
    /// Stable, unguessable, and different for every tenant.
    pub fn cache_salt(&self, tenant: &TenantId) -> String {
        self.secrets.derive(b"cache-salt", tenant)
    }

    /// The tenant's pseudonym for upstreams' `user` field (abuse attribution
    /// without revealing who the customer is).
    pub fn pseudonym(&self, tenant: &TenantId) -> String {
        format!("bh-{}", self.secrets.derive(b"user", tenant))
    }

    /// The body sent upstream for a chat call: the model, the final messages, the
    /// forwarded parameters, and the tenant's own salt and pseudonym in place of
    /// anything the client sent.
    pub fn chat_body(
        &self,
        route: Route<'_>,
        tenant: &TenantId,
        messages: &[Message],
        forward: &Map<String, Value>,
        stream: bool,
    ) -> Map<String, Value> {
        let mut body = forward.clone();
        body.insert("model".into(), Value::String(route.model.to_owned()));
        body.insert(
            "messages".into(),
            Value::Array(
                messages
                    .iter()
                    .map(|m| Value::Object(m.0.clone()))
                    .collect(),
            ),
        );
        body.insert("stream".into(), Value::Bool(stream));
        if stream {
            body.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
        self.stamp_tenant(route, tenant, &mut body);
        body
    }

    fn stamp_tenant(&self, route: Route<'_>, tenant: &TenantId, body: &mut Map<String, Value>) {
        body.insert("user".into(), Value::String(self.pseudonym(tenant)));
        if route.upstream.config.cache_salt {
            body.insert("cache_salt".into(), Value::String(self.cache_salt(tenant)));
        }
        if route.upstream.config.prompt_cache_key {
            body.insert(
                "prompt_cache_key".into(),
                Value::String(self.cache_salt(tenant)),
            );
        }
    }

    fn request(
        &self,
        route: Route<'_>,
        tenant: &TenantId,
        path: &str,
        body: &Map<String, Value>,
    ) -> Option<reqwest::RequestBuilder> {
        let UpstreamKind::Http {
            base_url,
            api_key,
            tenant_api_keys,
        } = &route.upstream.config.kind
        else {
            return None;
        };
        let mut req = self
            .http
            .post(format!("{base_url}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("a JSON map serializes"));
        if let Some(key) = tenant_api_keys.get(tenant).or(api_key.as_ref()) {
            req = req.bearer_auth(key.as_str());
        }
        Some(req)
    }

    /// Sends and waits for the response head, within the first-byte timeout;
    /// non-2xx statuses become `Status`.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<reqwest::Response, UpstreamError> {
        let until = deadline.min(Instant::now() + self.timeouts.first_byte);
        let response = match tokio::time::timeout_at(until, req.send()).await {
            Err(_) => return Err(UpstreamError::Timeout("waiting for the response head")),
            Ok(Err(e)) if e.is_connect() => return Err(UpstreamError::Connect(transport(e))),
            Ok(Err(e)) if e.is_timeout() => {
                return Err(UpstreamError::Timeout("connecting"));
            }
            Ok(Err(e)) => return Err(UpstreamError::Connect(transport(e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            // The error body is read (bounded) only for its machine-readable code;
            // its message may quote the prompt and is never passed on.
            let code = read_body(response, self.timeouts.idle, deadline, 64 << 10)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| {
                    v.pointer("/error/code")
                        .or_else(|| v.pointer("/error/type"))
                        .and_then(Value::as_str)
                        .map(|s| s.chars().take(64).collect())
                });
            return Err(UpstreamError::Status {
                status: status.as_u16(),
                code,
            });
        }
        Ok(response)
    }

    /// Sends and reads the whole answer, every wait and the size bounded.
    async fn fetch(
        &self,
        req: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<Vec<u8>, UpstreamError> {
        let response = self.send(req, deadline).await?;
        read_body(
            response,
            self.timeouts.idle,
            deadline,
            self.answer_bytes_max,
        )
        .await
    }

    /// A whole chat completion.
    pub async fn chat(
        &self,
        route: Route<'_>,
        tenant: &TenantId,
        body: &Map<String, Value>,
    ) -> Result<Completion, UpstreamError> {
        let deadline = Instant::now() + self.timeouts.total;
        let Some(req) = self.request(route, tenant, "/chat/completions", body) else {
            return Ok(route.upstream.echo().complete(route.model, body));
        };
        let bytes = self.fetch(req, deadline).await?;
        parse_completion(&bytes)
    }

    /// A streamed chat completion: the head has arrived when this returns.
    pub async fn chat_stream(
        &self,
        route: Route<'_>,
        tenant: &TenantId,
        body: &Map<String, Value>,
    ) -> Result<ChatStream, UpstreamError> {
        let deadline = Instant::now() + self.timeouts.total;
        let Some(req) = self.request(route, tenant, "/chat/completions", body) else {
            return Ok(ChatStream::Echo(
                route.upstream.echo().stream(route.model, body),
            ));
        };
        let response = self.send(req, deadline).await?;
        Ok(ChatStream::Http(Box::new(HttpStream {
            response,
            reader: SseReader::new(1 << 20),
            pending: std::collections::VecDeque::new(),
            finished: false,
            saw_finish: false,
            received: 0,
            bytes_max: self.answer_bytes_max,
            idle: self.timeouts.idle,
            deadline,
        })))
    }

    /// Embeddings: the upstream's answer as JSON (its `data` checked for shape).
    pub async fn embeddings(
        &self,
        route: Route<'_>,
        tenant: &TenantId,
        request: &openai::EmbeddingsRequest,
    ) -> Result<Value, UpstreamError> {
        let deadline = Instant::now() + self.timeouts.total;
        let mut body = Map::new();
        body.insert("model".into(), Value::String(route.model.to_owned()));
        body.insert("input".into(), request.raw_input.clone());
        if let Some(f) = &request.encoding_format {
            body.insert("encoding_format".into(), Value::String(f.clone()));
        }
        if let Some(d) = request.dimensions {
            body.insert("dimensions".into(), Value::from(d));
        }
        body.insert("user".into(), Value::String(self.pseudonym(tenant)));
        let Some(req) = self.request(route, tenant, "/embeddings", &body) else {
            return Ok(echo::embeddings(route.model, request));
        };
        let bytes = self.fetch(req, deadline).await?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        match value.get("data").and_then(Value::as_array) {
            Some(items) if items.len() == request.inputs.len() => Ok(value),
            _ => Err(UpstreamError::Malformed(
                "embeddings answer without one item per input".into(),
            )),
        }
    }
}

async fn read_body(
    mut response: reqwest::Response,
    idle: Duration,
    deadline: Instant,
    bytes_max: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let mut out = Vec::new();
    loop {
        let until = deadline.min(Instant::now() + idle);
        match tokio::time::timeout_at(until, response.chunk()).await {
            Err(_) => return Err(UpstreamError::Timeout("reading the body")),
            Ok(Err(e)) => return Err(UpstreamError::Cut(transport(e))),
            Ok(Ok(None)) => return Ok(out),
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > bytes_max {
                    return Err(UpstreamError::TooLarge(bytes_max));
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

/// A streamed answer, read piece by piece. Dropping it closes the upstream
/// connection.
#[derive(Debug)]
pub enum ChatStream {
    Http(Box<HttpStream>),
    Echo(std::collections::VecDeque<Delta>),
}

#[derive(Debug)]
pub struct HttpStream {
    response: reqwest::Response,
    reader: SseReader,
    pending: std::collections::VecDeque<Delta>,
    finished: bool,
    saw_finish: bool,
    received: usize,
    bytes_max: usize,
    idle: Duration,
    deadline: Instant,
}

impl ChatStream {
    /// The next piece; `None` at the end. Every wait is bounded by the idle and
    /// total timeouts.
    pub async fn next(&mut self) -> Option<Result<Delta, UpstreamError>> {
        match self {
            ChatStream::Echo(pieces) => pieces.pop_front().map(Ok),
            ChatStream::Http(s) => s.next().await,
        }
    }
}

impl HttpStream {
    async fn next(&mut self) -> Option<Result<Delta, UpstreamError>> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(Ok(d));
            }
            if self.finished {
                return None;
            }
            let until = self.deadline.min(Instant::now() + self.idle);
            let chunk = match tokio::time::timeout_at(until, self.response.chunk()).await {
                Err(_) => {
                    self.finished = true;
                    let phase = if Instant::now() >= self.deadline {
                        "the whole answer took too long"
                    } else {
                        "no data within the idle timeout"
                    };
                    return Some(Err(UpstreamError::Timeout(phase)));
                }
                Ok(Err(e)) => {
                    self.finished = true;
                    return Some(Err(UpstreamError::Cut(transport(e))));
                }
                Ok(Ok(None)) => {
                    self.finished = true;
                    if self.saw_finish {
                        return None;
                    }
                    return Some(Err(UpstreamError::Cut(
                        "the stream ended before the answer finished".into(),
                    )));
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            self.received += chunk.len();
            if self.received > self.bytes_max {
                self.finished = true;
                return Some(Err(UpstreamError::TooLarge(self.bytes_max)));
            }
            let events = match self.reader.push(&chunk) {
                Ok(e) => e,
                Err(e) => {
                    self.finished = true;
                    return Some(Err(UpstreamError::Malformed(e.to_string())));
                }
            };
            for data in events {
                if data.trim() == "[DONE]" {
                    self.finished = true;
                    self.saw_finish = true;
                    break;
                }
                match parse_delta(&data) {
                    Ok(d) => {
                        self.saw_finish |= d.finishes();
                        self.pending.push_back(d);
                    }
                    Err(e) => {
                        self.finished = true;
                        self.pending.clear();
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(upstreams: Vec<UpstreamConfig>) -> Gateway {
        Gateway::new(
            GatewayConfig {
                upstreams,
                ..GatewayConfig::default()
            },
            &SecretKey::from_slice(&[7; 32]).unwrap(),
        )
        .unwrap()
    }

    fn http(name: &str, region: &str, models: &[&str]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            kind: UpstreamKind::Http {
                base_url: "http://127.0.0.1:1/v1".into(),
                api_key: None,
                tenant_api_keys: HashMap::new(),
            },
            region: Some(Region::parse(region).unwrap()),
            models: models.iter().map(|m| m.to_string()).collect(),
            cache_salt: true,
            prompt_cache_key: false,
        }
    }

    #[test]
    fn routes_by_region_and_allow_list() {
        let g = gateway(vec![
            http("eu", "eu-west", &["llama", "mistral"]),
            http("us", "us-east", &["llama"]),
            UpstreamConfig::echo(),
        ]);
        let eu = Region::parse("eu-west").unwrap();
        let us = Region::parse("us-east").unwrap();
        assert_eq!(g.route("llama", &eu, None).unwrap().upstream.name(), "eu");
        assert_eq!(g.route("llama", &us, None).unwrap().upstream.name(), "us");
        assert!(
            g.route("mistral", &us, None).is_err(),
            "another region's model"
        );
        let allow = vec!["mistral".to_string()];
        assert!(g.route("llama", &eu, Some(&allow)).is_err());
        assert!(g.route("mistral", &eu, Some(&allow)).is_ok());
        assert_eq!(
            g.route(ECHO_MODEL, &us, None).unwrap().upstream.name(),
            "builtin-echo"
        );
        let names: Vec<&str> = g.models_for(&eu, None).iter().map(|r| r.model).collect();
        assert_eq!(names, [ECHO_MODEL, ECHO_LEAKY_MODEL, "llama", "mistral"]);
    }

    #[test]
    fn a_model_twice_in_one_region_is_a_config_error() {
        let err = Gateway::new(
            GatewayConfig {
                upstreams: vec![http("a", "eu", &["m"]), http("b", "eu", &["m"])],
                ..GatewayConfig::default()
            },
            &SecretKey::from_slice(&[7; 32]).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Ambiguous { .. }));
    }

    #[test]
    fn salts_are_per_tenant_and_replace_client_values() {
        let g = gateway(vec![http("eu", "default", &["m"])]);
        let (a, b) = (
            TenantId::from_random([1; 12]),
            TenantId::from_random([2; 12]),
        );
        assert_ne!(g.cache_salt(&a), g.cache_salt(&b));
        assert_eq!(g.cache_salt(&a), g.cache_salt(&a));
        assert_ne!(g.cache_salt(&a), g.pseudonym(&a)[3..]);
        let route = g.route("m", &Region::default(), None).unwrap();
        let mut forward = Map::new();
        forward.insert("temperature".into(), Value::from(0.5));
        let body = g.chat_body(route, &a, &[Message::new("user", "hi")], &forward, true);
        assert_eq!(body["cache_salt"], Value::String(g.cache_salt(&a)));
        assert_eq!(body["user"], Value::String(g.pseudonym(&a)));
        assert_eq!(body["stream_options"]["include_usage"], Value::Bool(true));
        assert!(!body.contains_key("prompt_cache_key"));
    }
}
