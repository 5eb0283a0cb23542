//! One client of Bulkhead's own HTTP API for the CLI, the demo and the probe:
//! bounded (connect and total timeouts, a cap on every answer's size), with
//! problem+json errors as a typed [`ClientError`], and every client-side proof
//! check as a typed function in [`verify`].
//!
//! Must never: verify with a key the checked server supplies unless the caller
//! chose to, or re-implement Merkle math (that is `bulkhead-ledger`'s).

#![forbid(unsafe_code)]

pub mod verify;

use std::time::Duration;

use bulkhead_api::Problem;
pub use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How a client is bounded. No setters: build one with the fields you need and
/// `..ClientConfig::new(base)` for the rest.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, without a trailing slash (one is trimmed).
    pub base: String,
    pub connect_timeout: Duration,
    /// Per request, answer included.
    pub request_timeout: Duration,
    /// Largest answer read; a larger one is an error, never truncated silently.
    pub body_bytes_max: usize,
    /// Ignore proxies from the environment (the demo talks to loopback).
    pub no_proxy: bool,
    /// Appended to the error when the server cannot be reached at all: what the
    /// caller's user should check (the CLI: whether `bulkhead serve` runs, and
    /// its `--server` flag). Empty: nothing appended.
    pub unreachable_hint: String,
}

impl ClientConfig {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            body_bytes_max: 64 << 20,
            no_proxy: false,
            unreachable_hint: String::new(),
        }
    }
}

/// Why a request did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("build the HTTP client: {0}")]
    Build(String),
    /// No answer: cannot connect, timed out, connection broken.
    #[error("reach the server at {base}: {message}")]
    Transport { base: String, message: String },
    #[error("the server's answer to {path} is larger than {limit_bytes} bytes; refusing it")]
    TooLarge { path: String, limit_bytes: usize },
    /// A non-success status; `problem` holds the problem+json fields if any.
    #[error("{}", status_line(.status, .problem, .body, .hint))]
    Status {
        status: StatusCode,
        problem: Box<Problem>,
        body: String,
        /// What to check on 401 (the caller's credential), else empty.
        hint: String,
    },
    #[error("the server's answer to {path} is not what was expected: {message}")]
    Decode { path: String, message: String },
}

fn status_line(status: &StatusCode, problem: &Problem, body: &str, hint: &str) -> String {
    let title = problem.title.as_deref().unwrap_or("request failed");
    let detail = problem.detail.as_deref().unwrap_or(body);
    if *status == StatusCode::UNAUTHORIZED && !hint.is_empty() {
        format!("{title}: {detail} (HTTP {status}); {hint}")
    } else {
        format!("{title}: {detail} (HTTP {status})")
    }
}

impl ClientError {
    /// The error for a non-success answer `body` with `status`.
    pub fn from_status(status: StatusCode, body: &str, hint: &str) -> Self {
        Self::Status {
            status,
            problem: Box::new(serde_json::from_str(body).unwrap_or_default()),
            body: body.to_owned(),
            hint: hint.to_owned(),
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One answer, whatever its status, read whole (bounded).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// The `x-bulkhead-trace-id` header of a gateway answer.
    pub trace_id: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// For a server-sent-events answer, the concatenated `delta.content` of every
    /// chunk (a canary split across pieces is whole again); otherwise the body.
    pub fn visible_text(&self) -> String {
        visible_text(&self.text())
    }
}

/// See [`Reply::visible_text`].
pub fn visible_text(body: &str) -> String {
    if !body.starts_with("data:") {
        return body.to_owned();
    }
    let mut out = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
            continue;
        };
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            if let Some(text) = choice["delta"]["content"].as_str() {
                out.push_str(text);
            }
        }
    }
    out
}

/// A server's JSON answer: typed, and as sent (for `--json` output and files
/// that must hold exactly what the server said).
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub raw: serde_json::Value,
}

/// The bounded HTTP client, bound to one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout);
        if config.no_proxy {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self { http, config })
    }

    pub fn base(&self) -> &str {
        &self.config.base
    }

    /// Sends a request with `token` as the bearer credential (none when `None`)
    /// and reads the whole answer, whatever its status. Only a transport failure
    /// or an oversized answer is an error.
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<Reply, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.config.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |e: reqwest::Error| ClientError::Transport {
            base: self.config.base.clone(),
            message: if e.is_connect() && !self.config.unreachable_hint.is_empty() {
                format!("{} ({})", describe(&e), self.config.unreachable_hint)
            } else {
                describe(&e)
            },
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let trace_id = response
            .headers()
            .get("x-bulkhead-trace-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > self.config.body_bytes_max {
                return Err(ClientError::TooLarge {
                    path: path.to_owned(),
                    limit_bytes: self.config.body_bytes_max,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            trace_id,
            body: bytes,
        })
    }

    /// The body of a successful answer as text; any other status is
    /// [`ClientError::Status`] with `hint` for a 401.
    pub async fn text<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
        hint: &str,
    ) -> Result<String, ClientError> {
        let reply = self.send(method, path, token, body).await?;
        let text = String::from_utf8(reply.body).map_err(|_| ClientError::Decode {
            path: path.to_owned(),
            message: "not UTF-8".into(),
        })?;
        if !reply.status.is_success() {
            return Err(ClientError::from_status(reply.status, &text, hint));
        }
        Ok(text)
    }

    /// A successful JSON answer, typed and as sent. An empty body reads as `null`.
    pub async fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
        hint: &str,
    ) -> Result<Answer<T>, ClientError> {
        let text = self.text(method, path, token, body, hint).await?;
        let decode = |e: serde_json::Error| ClientError::Decode {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let raw: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(decode)?
        };
        let value = T::deserialize(&raw).map_err(decode)?;
        Ok(Answer { value, raw })
    }

    /// The server's audit verifier key (C2SP vkey). Public: no credentials.
    pub async fn public_key(&self) -> Result<String, ClientError> {
        let text = self
            .text::<()>(Method::GET, "/v1/audit/public-key", None, None, "")
            .await?;
        Ok(text.trim().to_owned())
    }

    /// A log's latest checkpoint note; `prefix` is `/v1/audit`, `/admin/v1/audit`
    /// or `/admin/v1/audit/tenants/{id}`.
    pub async fn checkpoint(
        &self,
        prefix: &str,
        token: &str,
        hint: &str,
    ) -> Result<String, ClientError> {
        self.text::<()>(
            Method::GET,
            &format!("{prefix}/checkpoint"),
            Some(token),
            None,
            hint,
        )
        .await
    }

    pub async fn entries(
        &self,
        prefix: &str,
        token: &str,
        hint: &str,
        start: u64,
        end: u64,
    ) -> Result<bulkhead_api::audit::EntriesResponse, ClientError> {
        self.get_json(
            &format!("{prefix}/entries?start={start}&end={end}"),
            token,
            hint,
        )
        .await
    }

    pub async fn inclusion(
        &self,
        prefix: &str,
        token: &str,
        hint: &str,
        index: u64,
        size: u64,
    ) -> Result<bulkhead_api::audit::InclusionResponse, ClientError> {
        self.get_json(
            &format!("{prefix}/proof/inclusion?index={index}&size={size}"),
            token,
            hint,
        )
        .await
    }

    pub async fn consistency(
        &self,
        prefix: &str,
        token: &str,
        hint: &str,
        old: u64,
        new: u64,
    ) -> Result<bulkhead_api::audit::ConsistencyResponse, ClientError> {
        self.get_json(
            &format!("{prefix}/proof/consistency?old={old}&new={new}"),
            token,
            hint,
        )
        .await
    }

    /// The shape every typed GET shares: `token` as the bearer credential, the
    /// successful answer decoded as `T`.
    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        hint: &str,
    ) -> Result<T, ClientError> {
        Ok(self
            .json::<T, ()>(Method::GET, path, Some(token), None, hint)
            .await?
            .value)
    }
}

/// A transport error in a line: its kind and innermost cause.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "transport error"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_one_line_with_a_hint_on_401() {
        let body = r#"{"type":"https://bulkhead.dev/problems/unauthorized","title":"unauthorized","status":401,"detail":"bad key"}"#;
        let e = ClientError::from_status(StatusCode::UNAUTHORIZED, body, "check the key");
        assert_eq!(
            e.to_string(),
            "unauthorized: bad key (HTTP 401 Unauthorized); check the key"
        );
        let e = ClientError::from_status(StatusCode::NOT_FOUND, "plain", "check the key");
        assert_eq!(e.to_string(), "request failed: plain (HTTP 404 Not Found)");
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
    }

    #[test]
    fn streamed_pieces_are_joined_into_the_visible_text() {
        let body = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"PROBE-CAN\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"ARY-42\"}}]}\n\n",
            "data: [DONE]\n\n"
        );
        assert_eq!(visible_text(body), "PROBE-CANARY-42");
        assert_eq!(visible_text("{\"a\":1}"), "{\"a\":1}");
    }
}
