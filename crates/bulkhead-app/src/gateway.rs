//! The model gateway's state as the application holds it: the routing core
//! (`bulkhead_gateway::Gateway`: upstreams, salts, pseudonyms) and the limits and
//! switches every chat call reads.

use std::time::Duration;

use bulkhead_gateway::content::ContentLimits;
use bulkhead_gateway::fetch::{FetchConfig, ImageFetcher};
use bulkhead_gateway::openai::RequestLimits;
use bulkhead_gateway::{Gateway, GatewayConfig};
use bulkhead_vault::Vault;

use crate::sessions::SessionLimits;

/// The purpose label of the server-secret subkey behind cache salts and
/// pseudonyms. Changing it changes every tenant's salt.
pub const GATEWAY_SECRET_PURPOSE: &str = "bulkhead/gateway/v1";

/// The gateway and its limits.
#[derive(Debug)]
pub struct GatewayState {
    pub gateway: Gateway,
    pub request_limits: RequestLimits,
    pub sessions: SessionLimits,
    /// How long traces are kept; `None`: until the tenant is erased.
    pub trace_ttl_secs: Option<u64>,
    /// Put the tenant's canary in every context message, so a model or cache that
    /// regurgitates this tenant's context to another is caught by the guard.
    pub plant_canaries: bool,
    pub embedding_inputs_max: usize,
    /// How long a streamed piece may wait for a client that does not read.
    pub client_stall: Duration,
    pub trace_commit: TraceCommit,
    /// Caps on the non-text parts a pack opens.
    pub content_limits: ContentLimits,
    /// Fetches the image URLs of opened `image_url` parts (public addresses only).
    pub fetcher: ImageFetcher,
}

/// When a call's trace (and its audit entry) must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceCommit {
    /// Before the answer is released (a whole answer) or before `[DONE]` (a
    /// stream): no answer leaves without its log entry on disk. Costs one group
    /// commit (an fsync) per call on the answer's path.
    Durable,
    /// Right after the answer is released, batched with other calls: no fsync on
    /// the answer's path. A crash of the machine in that moment can lose the entry
    /// of an answer already sent, and a trace may be readable a few milliseconds
    /// after its id is.
    Background,
}

impl TraceCommit {
    /// The name the policy baseline records (hashed: never change it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Background => "background",
        }
    }
}

impl GatewayState {
    pub fn new(gateway: Gateway) -> Self {
        Self {
            gateway,
            request_limits: RequestLimits::default(),
            sessions: SessionLimits::default(),
            trace_ttl_secs: None,
            plant_canaries: true,
            embedding_inputs_max: 2048,
            client_stall: Duration::from_secs(30),
            trace_commit: TraceCommit::Durable,
            content_limits: ContentLimits::default(),
            fetcher: ImageFetcher::new(FetchConfig::default())
                // The same client builder as the upstreams' (`Gateway::new` built
                // one already), with a resolver and a redirect policy added: it
                // fails only where TLS cannot start at all.
                .expect("the image fetcher's client builds"),
        }
    }

    /// These caps on content parts; the fetcher's image cap follows the part cap.
    pub fn with_content(self, limits: ContentLimits, fetch: FetchConfig) -> Result<Self, String> {
        let fetcher = ImageFetcher::new(FetchConfig {
            bytes_max: limits.part_bytes_max,
            ..fetch
        })
        .map_err(|e| e.to_string())?;
        Ok(Self {
            content_limits: limits,
            fetcher,
            ..self
        })
    }

    /// A gateway with no upstream: every model is unknown. What a server without
    /// upstream configuration runs.
    pub fn without_upstreams(vault: &Vault) -> Self {
        let secret = vault.derive_server_key(GATEWAY_SECRET_PURPOSE);
        Self::new(
            Gateway::new(GatewayConfig::default(), &secret)
                .expect("an empty gateway config is valid"),
        )
    }
}
