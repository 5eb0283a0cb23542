//! The probe's HTTP client: every request goes through `Target::send`, which reads
//! the whole answer (bounded) so each family can check every byte it received.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::ProbeError;

/// The largest answer the probe reads. Bigger ones are cut here and counted as an
/// error: nothing the probe asks for is legitimately that large.
const BODY_BYTES_MAX: usize = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per request; a model call against a real upstream can be slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The text a client would see: for a server-sent-events answer, the
    /// concatenated `delta.content` of every chunk (a canary split across pieces
    /// is whole again here); otherwise the body itself.
    pub fn visible_text(&self) -> String {
        if !self.body.starts_with("data:") {
            return self.body.clone();
        }
        let mut out = String::new();
        for line in self.body.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(chunk) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            if let Some(choices) = chunk["choices"].as_array() {
                for choice in choices {
                    if let Some(text) = choice["delta"]["content"].as_str() {
                        out.push_str(text);
                    }
                }
            }
        }
        out
    }
}

/// The deployment under test.
#[derive(Debug, Clone)]
pub struct Target {
    base: String,
    http: reqwest::Client,
}

impl Target {
    pub fn new(base: &str) -> Result<Self, ProbeError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ProbeError::Config(format!(
                "the target must be an http:// or https:// URL, got {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ProbeError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { base, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with `token` as the bearer credential (none when empty)
    /// and reads the whole answer. A transport failure is an error, never a pass.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let mut response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if bytes.len() + chunk.len() > BODY_BYTES_MAX {
                return Err(format!("answer larger than {BODY_BYTES_MAX} bytes"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> Result<Reply, String> {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<Reply, String> {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Result<Reply, String> {
        self.send(Method::DELETE, path, token, None).await
    }
}

/// A transport error without the URL (which may carry ids only, but the shorter
/// message reads better in a scorecard).
fn describe(e: &reqwest::Error) -> String {
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
    fn streamed_pieces_are_joined_into_the_visible_text() {
        let reply = Reply {
            status: 200,
            body: concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"PROBE-CAN\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"content\":\"ARY-42\"}}]}\n\n",
                "data: [DONE]\n\n"
            )
            .into(),
        };
        assert_eq!(reply.visible_text(), "PROBE-CANARY-42");
    }
}
