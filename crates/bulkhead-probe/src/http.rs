//! The probe's HTTP client: every request goes through `Target::send`, which reads
//! the whole answer (bounded, by `bulkhead-client`) so each family can check every
//! byte it received.

use std::time::Duration;

use bulkhead_client::{Client, ClientConfig, ClientError, Method};
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
        bulkhead_client::visible_text(&self.body)
    }
}

/// The deployment under test.
#[derive(Debug, Clone)]
pub struct Target {
    http: Client,
}

impl Target {
    pub fn new(base: &str) -> Result<Self, ProbeError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ProbeError::Config(format!(
                "the target must be an http:// or https:// URL, got {base:?}"
            )));
        }
        let config = ClientConfig {
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            body_bytes_max: BODY_BYTES_MAX,
            ..ClientConfig::new(&base)
        };
        let http = Client::new(config)
            .map_err(|e| ProbeError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http })
    }

    pub fn base(&self) -> &str {
        self.http.base()
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
        let token = (!token.is_empty()).then_some(token);
        match self.http.send(method, path, token, body).await {
            Ok(reply) => Ok(Reply {
                status: reply.status.as_u16(),
                body: String::from_utf8_lossy(&reply.body).into_owned(),
            }),
            Err(ClientError::Transport { message, .. }) => Err(message),
            Err(ClientError::TooLarge { .. }) => {
                Err(format!("answer larger than {BODY_BYTES_MAX} bytes"))
            }
            Err(e) => Err(e.to_string()),
        }
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
