//! Server configuration: flag, then `BULKHEAD_*` variable, then TOML file, then
//! default. Every key has all three spellings (`foo_bar` in the file,
//! `BULKHEAD_FOO_BAR`, `--foo-bar`); a test checks that no key lacks one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Settings of `bulkhead serve`. All optional here; `resolve` applies the file and
/// the defaults.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case names).
    #[arg(long, env = "BULKHEAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "BULKHEAD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite file and development secrets [default: ./bulkhead-data].
    #[arg(long, env = "BULKHEAD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store: a SQLite path (or sqlite:PATH), or a postgres:// URL for several
    /// replicas on one database [default: <data-dir>/bulkhead.db].
    #[arg(long, env = "BULKHEAD_STORE")]
    pub store: Option<String>,
    /// Admin token for /admin/… [default: generated into <data-dir>/admin.token].
    #[arg(long, env = "BULKHEAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Master key, 32 bytes as base64 or hex [default: generated into <data-dir>/master.key,
    /// for development only].
    #[arg(long, env = "BULKHEAD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Largest request body accepted, in bytes [default: 2097152].
    #[arg(long, env = "BULKHEAD_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// Longest a request may take, in seconds [default: 30].
    #[arg(long, env = "BULKHEAD_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Largest document text, in bytes [default: 1048576].
    #[arg(long, env = "BULKHEAD_DOCUMENT_TEXT_BYTES_MAX")]
    pub document_text_bytes_max: Option<usize>,
    /// Most writes committed (and fsynced) together [default: 256]. 1 disables group commit.
    #[arg(long, env = "BULKHEAD_SQLITE_GROUP_COMMIT_MAX")]
    pub sqlite_group_commit_max: Option<usize>,
    /// Longest a clean shutdown waits for in-flight requests, in seconds [default: 30].
    #[arg(long, env = "BULKHEAD_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// This server's name: the audit signing key's name and the prefix of every audit
    /// log's origin (`<name>/tenants/<id>`). Choose it once; a DNS-like name such as
    /// `bulkhead.example.com` [default: bulkhead.local].
    #[arg(long, env = "BULKHEAD_SERVER_NAME")]
    pub server_name: Option<String>,
    /// File with the Ed25519 key that signs audit checkpoints (C2SP signing-key
    /// format), generated 0600 on first start [default: <data-dir>/audit-signing.key].
    #[arg(long, env = "BULKHEAD_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<PathBuf>,
    /// How often audit logs that grew get a new signed checkpoint, in seconds
    /// [default: 1]. Clients asking for a checkpoint always get a fresh one.
    #[arg(long, env = "BULKHEAD_AUDIT_CHECKPOINT_INTERVAL_SECS")]
    pub audit_checkpoint_interval_secs: Option<u64>,
    /// Memory for hot tenants' search indexes, in bytes; the least recently used
    /// are dropped (and wiped) beyond it [default: 1073741824].
    #[arg(long, env = "BULKHEAD_INDEX_CACHE_BYTES_MAX")]
    pub index_cache_bytes_max: Option<usize>,
    /// Chunk size aimed at, in characters [default: 800].
    #[arg(long, env = "BULKHEAD_CHUNK_TARGET_CHARS")]
    pub chunk_target_chars: Option<usize>,
    /// Largest chunk, in characters [default: 1200].
    #[arg(long, env = "BULKHEAD_CHUNK_MAX_CHARS")]
    pub chunk_max_chars: Option<usize>,
    /// Characters repeated between neighbouring chunks [default: 100].
    #[arg(long, env = "BULKHEAD_CHUNK_OVERLAP_CHARS")]
    pub chunk_overlap_chars: Option<usize>,
    /// Embedder for vector search: `hashed` (built in, no model: hashed character
    /// n-grams, lexical), `http` (an OpenAI-compatible /v1/embeddings: TEI, Ollama,
    /// vLLM…) or `none` (BM25 only) [default: hashed].
    #[arg(long, env = "BULKHEAD_EMBEDDER")]
    pub embedder: Option<String>,
    /// With `embedder = "http"`: base URL ending in /v1, e.g. http://127.0.0.1:8080/v1.
    #[arg(long, env = "BULKHEAD_EMBEDDER_URL")]
    pub embedder_url: Option<String>,
    /// With `embedder = "http"`: the model name to ask for.
    #[arg(long, env = "BULKHEAD_EMBEDDER_MODEL")]
    pub embedder_model: Option<String>,
    /// With `embedder = "http"`: bearer token for the embedding service.
    #[arg(long, env = "BULKHEAD_EMBEDDER_API_KEY", hide_env_values = true)]
    pub embedder_api_key: Option<String>,
    /// Embedding dimensions [default: 256 for `hashed`; required for `http`].
    #[arg(long, env = "BULKHEAD_EMBEDDER_DIMENSIONS")]
    pub embedder_dimensions: Option<usize>,
    /// Ranking of a search that names none: `bm25`, `vector` or `hybrid`
    /// [default: hybrid with an http embedder, else bm25].
    #[arg(long, env = "BULKHEAD_SEARCH_DEFAULT_MODE")]
    pub search_default_mode: Option<String>,
    /// One OpenAI-compatible upstream without a config file: its base URL, ending in
    /// /v1 (e.g. http://127.0.0.1:8000/v1 for vLLM). More upstreams, regions and
    /// per-tenant credentials go in the file's [[upstreams]] tables.
    #[arg(long, env = "BULKHEAD_UPSTREAM_URL")]
    pub upstream_url: Option<String>,
    /// With --upstream-url: the models it serves, comma-separated.
    #[arg(long, env = "BULKHEAD_UPSTREAM_MODELS")]
    pub upstream_models: Option<String>,
    /// With --upstream-url: bearer token sent to it.
    #[arg(long, env = "BULKHEAD_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,
    /// With --upstream-url: the residency region it serves; only tenants of that
    /// region reach it [default: default].
    #[arg(long, env = "BULKHEAD_UPSTREAM_REGION")]
    pub upstream_region: Option<String>,
    /// With --upstream-url: send each tenant's own `cache_salt` (vLLM prefix-cache
    /// isolation) [default: true].
    #[arg(long, env = "BULKHEAD_UPSTREAM_CACHE_SALT", num_args = 0..=1, default_missing_value = "true")]
    pub upstream_cache_salt: Option<bool>,
    /// Offer the built-in echo models `bulkhead-echo` and `bulkhead-echo-leaky`, which
    /// answer with their whole prompt (the leaky one with the previous caller's
    /// too). For tests and demos only: never enable for real traffic [default: false].
    #[arg(long, env = "BULKHEAD_ECHO_MODELS", num_args = 0..=1, default_missing_value = "true")]
    pub echo_models: Option<bool>,
    /// Longest wait to connect to an upstream, in seconds [default: 5].
    #[arg(long, env = "BULKHEAD_UPSTREAM_CONNECT_TIMEOUT_SECS")]
    pub upstream_connect_timeout_secs: Option<u64>,
    /// Longest wait for an upstream's response head, in seconds [default: 60].
    #[arg(long, env = "BULKHEAD_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS")]
    pub upstream_first_byte_timeout_secs: Option<u64>,
    /// Longest silence inside an upstream's answer, in seconds [default: 30].
    #[arg(long, env = "BULKHEAD_UPSTREAM_IDLE_TIMEOUT_SECS")]
    pub upstream_idle_timeout_secs: Option<u64>,
    /// Longest a whole model call may take, in seconds [default: 300].
    #[arg(long, env = "BULKHEAD_UPSTREAM_TOTAL_TIMEOUT_SECS")]
    pub upstream_total_timeout_secs: Option<u64>,
    /// TTL of a session created without one, in seconds [default: 604800].
    #[arg(long, env = "BULKHEAD_SESSION_TTL_SECS")]
    pub session_ttl_secs: Option<u64>,
    /// How long decision traces are kept, in seconds; 0 keeps them until the tenant
    /// is erased [default: 0].
    #[arg(long, env = "BULKHEAD_TRACE_TTL_SECS")]
    pub trace_ttl_secs: Option<u64>,
    /// When a model call's trace and audit entry reach the disk: `durable` (before the
    /// answer is released: no answer without its log entry, at one fsync per call)
    /// or `background` (just after, batched: no fsync on the answer's path; a machine
    /// crash can lose the entries of the last few milliseconds) [default: durable].
    #[arg(long, env = "BULKHEAD_TRACE_COMMIT")]
    pub trace_commit: Option<String>,
    /// How often the retention sweeper deletes expired documents, sessions and
    /// traces, in seconds (they are invisible from the moment they expire) [default: 60].
    #[arg(long, env = "BULKHEAD_SWEEP_INTERVAL_SECS")]
    pub sweep_interval_secs: Option<u64>,
    /// Most rows one sweep deletes (bounded work per tick) [default: 1000].
    #[arg(long, env = "BULKHEAD_SWEEP_BATCH_MAX")]
    pub sweep_batch_max: Option<u32>,
    /// How long what a tenant sends through (prompts of every role, tool results,
    /// session history) stays protected by the output guard after it was last
    /// sent, in seconds; a compliance pack may set its own
    /// (`retention.prompt_window_secs`). Memory grows with it: see BENCHMARKS.md
    /// [default: 3600].
    #[arg(long, env = "BULKHEAD_GUARD_PROMPT_WINDOW_SECS")]
    pub guard_prompt_window_secs: Option<u64>,
    /// A folder of the operator's own compliance packs (`*.toml`, the format of the
    /// built-in `default`, `gdpr`, `hipaa`, `pci-dss` and `soc2`), validated at start.
    #[arg(long, env = "BULKHEAD_POLICY_PACKS_DIR")]
    pub policy_packs_dir: Option<PathBuf>,
    /// URL that receives every alert as JSON (POST; up to 4 attempts; a bounded
    /// queue that never slows requests).
    #[arg(long, env = "BULKHEAD_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,
    /// Secret that signs webhook deliveries: header `x-bulkhead-signature:
    /// sha256=<hex HMAC-SHA256(secret, body)>`.
    #[arg(long, env = "BULKHEAD_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    /// Refused credentials per minute that raise an `auth_failure_burst` alert [default: 20].
    #[arg(long, env = "BULKHEAD_ALERT_AUTH_FAILURE_BURST")]
    pub alert_auth_failure_burst: Option<u32>,
    /// Lookups of ids a tenant does not have (404s), per tenant per minute, that
    /// raise an `id_enumeration` alert [default: 30].
    #[arg(long, env = "BULKHEAD_ALERT_NOT_FOUND_BURST")]
    pub alert_not_found_burst: Option<u32>,
    /// What a blocked cross-tenant leak quarantines at once: `off` (alert only),
    /// `key` (the key that received it) or `tenant` (its whole tenant) [default: off].
    #[arg(long, env = "BULKHEAD_CONTAIN_ON_LEAK")]
    pub contain_on_leak: Option<String>,
    /// Weight of the newest minute in each tenant's requests-per-minute baseline
    /// (EWMA), in (0, 1] [default: 0.1].
    #[arg(long, env = "BULKHEAD_ANOMALY_ALPHA")]
    pub anomaly_alpha: Option<f64>,
    /// Standard deviations above a tenant's baseline that raise a
    /// `traffic_anomaly` alert [default: 4].
    #[arg(long, env = "BULKHEAD_ANOMALY_SIGMA")]
    pub anomaly_sigma: Option<f64>,
    /// A minute with fewer requests than this never raises `traffic_anomaly` [default: 60].
    #[arg(long, env = "BULKHEAD_ANOMALY_MIN_REQUESTS_PER_MIN")]
    pub anomaly_min_requests_per_min: Option<u64>,
    /// Minutes of a tenant's traffic before its baseline may alert [default: 10].
    #[arg(long, env = "BULKHEAD_ANOMALY_WARMUP_MINUTES")]
    pub anomaly_warmup_minutes: Option<u32>,
}

/// One `[[upstreams]]` table of the config file.
///
/// ```toml
/// [[upstreams]]
/// name = "vllm-eu"
/// base_url = "http://10.0.0.5:8000/v1"
/// api_key_env = "VLLM_EU_KEY"       # or api_key = "…"
/// region = "eu-west"
/// models = ["llama-3.1-8b"]
/// cache_salt = true                  # vLLM prefix-cache isolation
/// [upstreams.tenant_api_keys]        # a tenant's own credential, by tenant id
/// tn_0123456789abcdef01234567 = "env:ACME_OPENAI_KEY"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub name: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// The name of an environment variable holding the key (keeps it out of the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    pub models: Vec<String>,
    #[serde(default)]
    pub cache_salt: Option<bool>,
    #[serde(default)]
    pub prompt_cache_key: Option<bool>,
    /// Tenant id → key, or `env:VAR` to read it from the environment.
    #[serde(default)]
    pub tenant_api_keys: std::collections::BTreeMap<String, String>,
}

/// One `[[regions]]` table of the config file: a residency region whose tenants'
/// rows live in a store of their own. A tenant of a region without such a table
/// lives in the home store (`store`).
///
/// ```toml
/// [[regions]]
/// name = "eu-west"
/// store = "eu-west.db"               # a SQLite path; relative: under data_dir
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFile {
    pub name: String,
    pub store: String,
}

/// The same keys, as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
    pub body_bytes_max: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub document_text_bytes_max: Option<usize>,
    pub sqlite_group_commit_max: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub server_name: Option<String>,
    pub audit_signing_key: Option<PathBuf>,
    pub audit_checkpoint_interval_secs: Option<u64>,
    pub index_cache_bytes_max: Option<usize>,
    pub chunk_target_chars: Option<usize>,
    pub chunk_max_chars: Option<usize>,
    pub chunk_overlap_chars: Option<usize>,
    pub embedder: Option<String>,
    pub embedder_url: Option<String>,
    pub embedder_model: Option<String>,
    pub embedder_api_key: Option<String>,
    pub embedder_dimensions: Option<usize>,
    pub search_default_mode: Option<String>,
    pub upstream_url: Option<String>,
    pub upstream_models: Option<String>,
    pub upstream_api_key: Option<String>,
    pub upstream_region: Option<String>,
    pub upstream_cache_salt: Option<bool>,
    pub echo_models: Option<bool>,
    pub upstream_connect_timeout_secs: Option<u64>,
    pub upstream_first_byte_timeout_secs: Option<u64>,
    pub upstream_idle_timeout_secs: Option<u64>,
    pub upstream_total_timeout_secs: Option<u64>,
    pub session_ttl_secs: Option<u64>,
    pub trace_ttl_secs: Option<u64>,
    pub trace_commit: Option<String>,
    pub sweep_interval_secs: Option<u64>,
    pub sweep_batch_max: Option<u32>,
    pub guard_prompt_window_secs: Option<u64>,
    pub policy_packs_dir: Option<PathBuf>,
    pub alert_webhook_url: Option<String>,
    pub alert_webhook_secret: Option<String>,
    pub alert_auth_failure_burst: Option<u32>,
    pub alert_not_found_burst: Option<u32>,
    pub contain_on_leak: Option<String>,
    pub anomaly_alpha: Option<f64>,
    pub anomaly_sigma: Option<f64>,
    pub anomaly_min_requests_per_min: Option<u64>,
    pub anomaly_warmup_minutes: Option<u32>,
    /// The upstreams, as tables (file only: a list of tables has no flag spelling).
    #[serde(default)]
    pub upstreams: Vec<UpstreamFile>,
    /// Regions with a store of their own (file only, like the upstreams).
    #[serde(default)]
    pub regions: Vec<RegionFile>,
}

/// Settings after precedence and defaults are applied.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The home store: tenants of regions without their own, and server-wide rows.
    pub store: StoreSpec,
    /// Regions whose tenants live in a store of their own; empty: every tenant
    /// lives in the home store.
    pub regions: Vec<RegionStore>,
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
    pub body_bytes_max: usize,
    pub request_timeout: Duration,
    pub document_text_bytes_max: usize,
    pub sqlite_group_commit_max: usize,
    pub shutdown_grace: Duration,
    pub server_name: String,
    pub audit_signing_key: PathBuf,
    pub audit_checkpoint_interval: Duration,
    pub retrieval: RetrievalSettings,
    pub gateway: GatewaySettings,
    pub sweep_interval: Duration,
    pub sweep_batch_max: u32,
    pub guard_prompt_window_secs: i64,
    pub policy_packs_dir: Option<PathBuf>,
    pub alerts: bulkhead_server::alerts::AlertSettings,
}

/// A region with its own store, validated: a known-good name and a SQLite file
/// or PostgreSQL database that no other region and not the home store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStore {
    pub region: bulkhead_types::Region,
    pub store: StoreSpec,
}

/// The model gateway, validated.
#[derive(Debug)]
pub struct GatewaySettings {
    pub upstreams: Vec<bulkhead_gateway::UpstreamConfig>,
    pub timeouts: bulkhead_gateway::Timeouts,
    pub echo_models: bool,
    pub session_ttl_secs: u64,
    pub trace_ttl_secs: Option<u64>,
    pub trace_commit_background: bool,
}

/// How retrieval is set up, validated.
#[derive(Debug)]
pub struct RetrievalSettings {
    pub index_cache_bytes_max: usize,
    pub chunker: bulkhead_index::ChunkerConfig,
    pub embedder: EmbedderSetting,
    pub default_mode: bulkhead_index::SearchMode,
}

#[derive(Debug)]
pub enum EmbedderSetting {
    None,
    Hashed { dimensions: usize },
    Http(bulkhead_index::HttpEmbedderConfig),
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./bulkhead-data"));
        let store = self.store.or(file.store);
        let store = match store {
            None => StoreSpec::Sqlite(data_dir.join("bulkhead.db")),
            Some(url) => parse_store(&url)?,
        };
        let regions = resolve_regions(file.regions, &data_dir, &store)?;
        let body_bytes_max = self
            .body_bytes_max
            .or(file.body_bytes_max)
            .unwrap_or(2 << 20);
        let document_text_bytes_max = self
            .document_text_bytes_max
            .or(file.document_text_bytes_max)
            .unwrap_or(1 << 20);
        if body_bytes_max < 1024 {
            bail!("body_bytes_max must be at least 1024");
        }
        let request_timeout_secs = self
            .request_timeout_secs
            .or(file.request_timeout_secs)
            .unwrap_or(30);
        if request_timeout_secs == 0 {
            bail!("request_timeout_secs must be at least 1");
        }
        let server_name = self
            .server_name
            .or(file.server_name)
            .unwrap_or_else(|| "bulkhead.local".to_owned());
        if server_name.is_empty()
            || server_name.contains('+')
            || server_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            bail!(
                "server_name must be non-empty, without spaces or '+' (e.g. bulkhead.example.com)"
            );
        }
        let audit_signing_key = self
            .audit_signing_key
            .or(file.audit_signing_key)
            .unwrap_or_else(|| data_dir.join("audit-signing.key"));
        let checkpoint_secs = self
            .audit_checkpoint_interval_secs
            .or(file.audit_checkpoint_interval_secs)
            .unwrap_or(1);
        if checkpoint_secs == 0 {
            bail!("audit_checkpoint_interval_secs must be at least 1");
        }
        let retrieval = resolve_retrieval(RetrievalKeys {
            index_cache_bytes_max: self.index_cache_bytes_max.or(file.index_cache_bytes_max),
            chunk_target_chars: self.chunk_target_chars.or(file.chunk_target_chars),
            chunk_max_chars: self.chunk_max_chars.or(file.chunk_max_chars),
            chunk_overlap_chars: self.chunk_overlap_chars.or(file.chunk_overlap_chars),
            embedder: self.embedder.or(file.embedder),
            embedder_url: self.embedder_url.or(file.embedder_url),
            embedder_model: self.embedder_model.or(file.embedder_model),
            embedder_api_key: self.embedder_api_key.or(file.embedder_api_key),
            embedder_dimensions: self.embedder_dimensions.or(file.embedder_dimensions),
            search_default_mode: self.search_default_mode.or(file.search_default_mode),
        })?;
        let gateway = resolve_gateway(GatewayKeys {
            upstream_url: self.upstream_url.or(file.upstream_url),
            upstream_models: self.upstream_models.or(file.upstream_models),
            upstream_api_key: self.upstream_api_key.or(file.upstream_api_key),
            upstream_region: self.upstream_region.or(file.upstream_region),
            upstream_cache_salt: self.upstream_cache_salt.or(file.upstream_cache_salt),
            echo_models: self.echo_models.or(file.echo_models),
            connect: self
                .upstream_connect_timeout_secs
                .or(file.upstream_connect_timeout_secs),
            first_byte: self
                .upstream_first_byte_timeout_secs
                .or(file.upstream_first_byte_timeout_secs),
            idle: self
                .upstream_idle_timeout_secs
                .or(file.upstream_idle_timeout_secs),
            total: self
                .upstream_total_timeout_secs
                .or(file.upstream_total_timeout_secs),
            session_ttl_secs: self.session_ttl_secs.or(file.session_ttl_secs),
            trace_ttl_secs: self.trace_ttl_secs.or(file.trace_ttl_secs),
            trace_commit: self.trace_commit.or(file.trace_commit),
            upstreams: file.upstreams,
        })?;
        let sweep_interval_secs = self
            .sweep_interval_secs
            .or(file.sweep_interval_secs)
            .unwrap_or(60);
        let sweep_batch_max = self
            .sweep_batch_max
            .or(file.sweep_batch_max)
            .unwrap_or(1000);
        if sweep_interval_secs == 0 || sweep_batch_max == 0 {
            bail!("sweep_interval_secs and sweep_batch_max must be at least 1");
        }
        let guard_prompt_window_secs = self
            .guard_prompt_window_secs
            .or(file.guard_prompt_window_secs)
            .unwrap_or(3600);
        if !(1..=30 * 86_400).contains(&guard_prompt_window_secs) {
            bail!(
                "guard_prompt_window_secs must be between 1 and 2592000 (30 days), not {guard_prompt_window_secs}"
            );
        }
        let contain_on_leak = match self
            .contain_on_leak
            .as_deref()
            .or(file.contain_on_leak.as_deref())
        {
            None | Some("off") => bulkhead_server::alerts::Containment::Off,
            Some("key") => bulkhead_server::alerts::Containment::Key,
            Some("tenant") => bulkhead_server::alerts::Containment::Tenant,
            Some(other) => bail!("contain_on_leak must be off, key or tenant, not {other:?}"),
        };
        let anomaly_defaults = bulkhead_server::anomaly::AnomalySettings::default();
        let anomaly = bulkhead_server::anomaly::AnomalySettings {
            alpha: self
                .anomaly_alpha
                .or(file.anomaly_alpha)
                .unwrap_or(anomaly_defaults.alpha),
            sigma: self
                .anomaly_sigma
                .or(file.anomaly_sigma)
                .unwrap_or(anomaly_defaults.sigma),
            min_requests_per_min: self
                .anomaly_min_requests_per_min
                .or(file.anomaly_min_requests_per_min)
                .unwrap_or(anomaly_defaults.min_requests_per_min),
            warmup_minutes: self
                .anomaly_warmup_minutes
                .or(file.anomaly_warmup_minutes)
                .unwrap_or(anomaly_defaults.warmup_minutes),
        };
        Ok(Settings {
            retrieval,
            gateway,
            sweep_interval: Duration::from_secs(sweep_interval_secs),
            sweep_batch_max,
            guard_prompt_window_secs: guard_prompt_window_secs as i64,
            policy_packs_dir: self.policy_packs_dir.or(file.policy_packs_dir),
            alerts: bulkhead_server::alerts::AlertSettings {
                webhook_url: self.alert_webhook_url.or(file.alert_webhook_url),
                webhook_secret: self.alert_webhook_secret.or(file.alert_webhook_secret),
                auth_failure_burst: self
                    .alert_auth_failure_burst
                    .or(file.alert_auth_failure_burst)
                    .unwrap_or(20),
                not_found_burst: self
                    .alert_not_found_burst
                    .or(file.alert_not_found_burst)
                    .unwrap_or(bulkhead_server::alerts::NOT_FOUND_BURST_DEFAULT),
                contain_on_leak,
                anomaly: anomaly.validated().map_err(|e| anyhow::anyhow!(e))?,
            },
            server_name,
            audit_signing_key,
            audit_checkpoint_interval: Duration::from_secs(checkpoint_secs),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7700))),
            data_dir,
            store,
            regions,
            admin_token: self.admin_token.or(file.admin_token),
            master_key: self.master_key.or(file.master_key),
            body_bytes_max,
            request_timeout: Duration::from_secs(request_timeout_secs),
            document_text_bytes_max,
            sqlite_group_commit_max: self
                .sqlite_group_commit_max
                .or(file.sqlite_group_commit_max)
                .unwrap_or(256)
                .max(1),
            shutdown_grace: Duration::from_secs(
                self.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(30),
            ),
        })
    }
}

/// The retrieval keys after precedence, before validation.
struct RetrievalKeys {
    index_cache_bytes_max: Option<usize>,
    chunk_target_chars: Option<usize>,
    chunk_max_chars: Option<usize>,
    chunk_overlap_chars: Option<usize>,
    embedder: Option<String>,
    embedder_url: Option<String>,
    embedder_model: Option<String>,
    embedder_api_key: Option<String>,
    embedder_dimensions: Option<usize>,
    search_default_mode: Option<String>,
}

fn resolve_retrieval(keys: RetrievalKeys) -> anyhow::Result<RetrievalSettings> {
    use bulkhead_index::{ChunkerConfig, HttpEmbedderConfig, SearchMode};
    let defaults = ChunkerConfig::default();
    let chunker = ChunkerConfig {
        target_chars: keys.chunk_target_chars.unwrap_or(defaults.target_chars),
        max_chars: keys.chunk_max_chars.unwrap_or(defaults.max_chars),
        overlap_chars: keys.chunk_overlap_chars.unwrap_or(defaults.overlap_chars),
    };
    bulkhead_index::Chunker::new(chunker)
        .context("chunk_target_chars / chunk_max_chars / chunk_overlap_chars")?;
    let embedder = match keys.embedder.as_deref().unwrap_or("hashed") {
        "none" => EmbedderSetting::None,
        "hashed" => EmbedderSetting::Hashed {
            dimensions: keys.embedder_dimensions.unwrap_or(256),
        },
        "http" => {
            let url = keys
                .embedder_url
                .context("embedder = \"http\" needs embedder_url (an OpenAI-compatible base URL ending in /v1)")?;
            let model = keys
                .embedder_model
                .context("embedder = \"http\" needs embedder_model")?;
            let dimensions = keys.embedder_dimensions.context(
                "embedder = \"http\" needs embedder_dimensions (the model's vector length)",
            )?;
            let mut config = HttpEmbedderConfig::new(url, model, dimensions);
            config.api_key = keys.embedder_api_key.map(zeroize::Zeroizing::new);
            EmbedderSetting::Http(config)
        }
        other => bail!("embedder must be hashed, http or none, not {other:?}"),
    };
    if let EmbedderSetting::Hashed { dimensions }
    | EmbedderSetting::Http(HttpEmbedderConfig { dimensions, .. }) = &embedder
        && !(8..=8192).contains(dimensions)
    {
        bail!("embedder_dimensions must be between 8 and 8192");
    }
    let default_mode = match keys.search_default_mode.as_deref() {
        None if matches!(embedder, EmbedderSetting::Http(_)) => SearchMode::Hybrid,
        None | Some("bm25") => SearchMode::Bm25,
        Some("vector") => SearchMode::Vector,
        Some("hybrid") => SearchMode::Hybrid,
        Some(other) => bail!("search_default_mode must be bm25, vector or hybrid, not {other:?}"),
    };
    if default_mode != SearchMode::Bm25 && matches!(embedder, EmbedderSetting::None) {
        bail!(
            "search_default_mode {default_mode:?} needs an embedder; set embedder = \"hashed\" or \"http\""
        );
    }
    let index_cache_bytes_max = keys.index_cache_bytes_max.unwrap_or(1 << 30);
    if index_cache_bytes_max < (1 << 20) {
        bail!("index_cache_bytes_max must be at least 1048576 (1 MiB)");
    }
    Ok(RetrievalSettings {
        index_cache_bytes_max,
        chunker,
        embedder,
        default_mode,
    })
}

/// The gateway keys after precedence, before validation.
struct GatewayKeys {
    upstream_url: Option<String>,
    upstream_models: Option<String>,
    upstream_api_key: Option<String>,
    upstream_region: Option<String>,
    upstream_cache_salt: Option<bool>,
    echo_models: Option<bool>,
    connect: Option<u64>,
    first_byte: Option<u64>,
    idle: Option<u64>,
    total: Option<u64>,
    session_ttl_secs: Option<u64>,
    trace_ttl_secs: Option<u64>,
    trace_commit: Option<String>,
    upstreams: Vec<UpstreamFile>,
}

fn region(raw: Option<&str>, what: &str) -> anyhow::Result<bulkhead_types::Region> {
    match raw {
        None => Ok(bulkhead_types::Region::default()),
        Some(r) => bulkhead_types::Region::parse(r)
            .map_err(|e| anyhow::anyhow!("{what}: region {r:?}: {}", e.problem)),
    }
}

fn secret_from_env(var: &str, what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    std::env::var(var)
        .map(zeroize::Zeroizing::new)
        .with_context(|| format!("{what}: environment variable {var} is not set"))
}

fn resolve_gateway(keys: GatewayKeys) -> anyhow::Result<GatewaySettings> {
    use bulkhead_gateway::{UpstreamConfig, UpstreamKind};
    let mut upstreams = Vec::new();
    for u in keys.upstreams {
        let what = format!("upstream {:?}", u.name);
        let api_key = match (u.api_key, u.api_key_env) {
            (Some(_), Some(_)) => bail!("{what}: set api_key or api_key_env, not both"),
            (Some(k), None) => Some(zeroize::Zeroizing::new(k)),
            (None, Some(var)) => Some(secret_from_env(&var, &what)?),
            (None, None) => None,
        };
        let mut tenant_api_keys = std::collections::HashMap::new();
        for (tenant, key) in u.tenant_api_keys {
            let id = bulkhead_types::TenantId::parse(&tenant).map_err(|e| {
                anyhow::anyhow!("{what}: tenant_api_keys: {tenant:?}: {}", e.problem)
            })?;
            let key = match key.strip_prefix("env:") {
                Some(var) => secret_from_env(var, &what)?,
                None => zeroize::Zeroizing::new(key),
            };
            tenant_api_keys.insert(id, key);
        }
        upstreams.push(UpstreamConfig {
            region: Some(region(u.region.as_deref(), &what)?),
            kind: UpstreamKind::Http {
                base_url: u.base_url.trim_end_matches('/').to_owned(),
                api_key,
                tenant_api_keys,
            },
            name: u.name,
            models: u.models,
            cache_salt: u.cache_salt.unwrap_or(true),
            prompt_cache_key: u.prompt_cache_key.unwrap_or(false),
        });
    }
    match (keys.upstream_url, keys.upstream_models) {
        (Some(url), Some(models)) => {
            let models: Vec<String> = models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            upstreams.push(UpstreamConfig {
                name: "default".into(),
                kind: UpstreamKind::Http {
                    base_url: url.trim_end_matches('/').to_owned(),
                    api_key: keys.upstream_api_key.map(zeroize::Zeroizing::new),
                    tenant_api_keys: Default::default(),
                },
                region: Some(region(keys.upstream_region.as_deref(), "upstream_region")?),
                models,
                cache_salt: keys.upstream_cache_salt.unwrap_or(true),
                prompt_cache_key: false,
            });
        }
        (Some(_), None) => {
            bail!("--upstream-url needs --upstream-models (the models it serves, comma-separated)")
        }
        (None, Some(_)) => bail!("--upstream-models needs --upstream-url"),
        (None, None) => {}
    }
    let echo_models = keys.echo_models.unwrap_or(false);
    if echo_models {
        upstreams.push(UpstreamConfig::echo());
    }
    let secs = |v: Option<u64>, default: u64, name: &str| -> anyhow::Result<Duration> {
        match v.unwrap_or(default) {
            0 => bail!("{name} must be at least 1"),
            n => Ok(Duration::from_secs(n)),
        }
    };
    let timeouts = bulkhead_gateway::Timeouts {
        connect: secs(keys.connect, 5, "upstream_connect_timeout_secs")?,
        first_byte: secs(keys.first_byte, 60, "upstream_first_byte_timeout_secs")?,
        idle: secs(keys.idle, 30, "upstream_idle_timeout_secs")?,
        total: secs(keys.total, 300, "upstream_total_timeout_secs")?,
    };
    let session_ttl_secs = keys.session_ttl_secs.unwrap_or(7 * 24 * 3600);
    if session_ttl_secs == 0 {
        bail!("session_ttl_secs must be at least 1");
    }
    let trace_commit_background = match keys.trace_commit.as_deref() {
        None | Some("durable") => false,
        Some("background") => true,
        Some(other) => bail!("trace_commit must be durable or background, not {other:?}"),
    };
    Ok(GatewaySettings {
        upstreams,
        timeouts,
        echo_models,
        session_ttl_secs,
        trace_ttl_secs: keys.trace_ttl_secs.filter(|t| *t > 0),
        trace_commit_background,
    })
}

/// Validates the `[[regions]]` tables. Two regions in one file would put both
/// regions' tenants in one place, and so would a region sharing the home store,
/// so both are refused; paths are compared made absolute (not through symlinks:
/// the files may not exist yet).
fn resolve_regions(
    tables: Vec<RegionFile>,
    data_dir: &Path,
    home: &StoreSpec,
) -> anyhow::Result<Vec<RegionStore>> {
    if tables.len() > bulkhead_store::REGIONS_MAX {
        bail!(
            "regions: at most {} regions may have their own store",
            bulkhead_store::REGIONS_MAX
        );
    }
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    // Two specs name the same place: the same file (made absolute) or the same URL.
    let same = |a: &StoreSpec, b: &StoreSpec| match (a, b) {
        (StoreSpec::Sqlite(x), StoreSpec::Sqlite(y)) => absolute(x) == absolute(y),
        (StoreSpec::Postgres(x), StoreSpec::Postgres(y)) => x == y,
        _ => false,
    };
    let mut out: Vec<RegionStore> = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let what = format!("regions[{i}] ({:?})", table.name);
        let region = bulkhead_types::Region::parse(&table.name)
            .map_err(|e| anyhow::anyhow!("{what}: name: {}", e.problem))?;
        if out.iter().any(|r| r.region == region) {
            bail!("{what}: name: region {region} is listed twice");
        }
        let store = match parse_store(&table.store).with_context(|| format!("{what}: store"))? {
            StoreSpec::Sqlite(path) if path.is_relative() => StoreSpec::Sqlite(data_dir.join(path)),
            other => other,
        };
        // Named without a URL's credentials.
        let named = match &store {
            StoreSpec::Sqlite(path) => path.display().to_string(),
            StoreSpec::Postgres(_) => "this PostgreSQL URL".to_owned(),
        };
        if same(&store, home) {
            bail!("{what}: store: {named} is the home store; give the region a store of its own");
        }
        if let Some(other) = out.iter().find(|r| same(&r.store, &store)) {
            bail!(
                "{what}: store: {named} is already the store of region {}",
                other.region
            );
        }
        out.push(RegionStore { region, store });
    }
    Ok(out)
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
}

/// Where the rows live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// One embedded SQLite file, for one server process.
    Sqlite(PathBuf),
    /// A PostgreSQL URL, shared by any number of replicas.
    Postgres(String),
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL itself: it may carry a password.
        match self {
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Postgres(_) => f.write_str("postgres://…"),
        }
    }
}

fn parse_store(url: &str) -> anyhow::Result<StoreSpec> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreSpec::Postgres(url.to_owned()));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        bail!("--store needs a SQLite file path");
    }
    Ok(StoreSpec::Sqlite(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// Every setting has a flag `--foo-bar`, a variable `BULKHEAD_FOO_BAR` and a file
    /// key `foo_bar` that the file parser accepts.
    #[test]
    fn every_key_has_flag_env_and_file_spelling() {
        let cmd = Wrapper::command();
        let mut keys = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            keys += 1;
            assert_eq!(
                arg.get_long(),
                Some(id.replace('_', "-").as_str()),
                "flag of {id}"
            );
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(
                env,
                format!("BULKHEAD_{}", id.to_uppercase()),
                "env of {id}"
            );
            if id != "config" {
                let value = match id {
                    "listen" => "\"127.0.0.1:1\"".to_owned(),
                    "data_dir"
                    | "store"
                    | "admin_token"
                    | "master_key"
                    | "server_name"
                    | "audit_signing_key"
                    | "policy_packs_dir"
                    | "alert_webhook_url"
                    | "alert_webhook_secret"
                    | "contain_on_leak"
                    | "embedder"
                    | "embedder_url"
                    | "embedder_model"
                    | "embedder_api_key"
                    | "search_default_mode"
                    | "upstream_url"
                    | "upstream_models"
                    | "upstream_api_key"
                    | "upstream_region"
                    | "trace_commit" => "\"x\"".to_owned(),
                    "upstream_cache_salt" | "echo_models" => "true".to_owned(),
                    _ => "1".to_owned(),
                };
                let parsed: Result<FileConfig, _> = toml::from_str(&format!("{id} = {value}"));
                assert!(parsed.is_ok(), "file key {id}: {parsed:?}");
            }
        }
        assert!(keys >= 10);
        assert!(toml::from_str::<FileConfig>("no_such_key = 1").is_err());
    }

    #[test]
    fn upstreams_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bulkhead.toml");
        std::fs::write(
            &file,
            r#"
[[upstreams]]
name = "eu"
base_url = "http://10.0.0.5:8000/v1/"
api_key = "k"
region = "eu-west"
models = ["llama"]
[upstreams.tenant_api_keys]
tn_000000000000000000000000 = "tenant-key"
"#,
        )
        .unwrap();
        let s = ServeArgs {
            config: Some(file.clone()),
            upstream_url: Some("http://127.0.0.1:9/v1".into()),
            upstream_models: Some("a, b".into()),
            echo_models: Some(true),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        let names: Vec<&str> = s
            .gateway
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(names, ["eu", "default", "builtin-echo"]);
        assert_eq!(s.gateway.upstreams[1].models, ["a", "b"]);
        assert!(
            s.gateway.upstreams[1].cache_salt,
            "salting is on unless turned off"
        );
        assert!(
            ServeArgs {
                upstream_url: Some("http://x/v1".into()),
                ..ServeArgs::default()
            }
            .resolve()
            .is_err(),
            "a URL without models is refused"
        );
        let off = ServeArgs::default().resolve().unwrap();
        assert!(off.gateway.upstreams.is_empty() && !off.gateway.echo_models);
    }

    #[test]
    fn regions_get_their_own_stores_and_bad_tables_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |toml: &str| {
            let file = dir.path().join("bulkhead.toml");
            std::fs::write(&file, toml).unwrap();
            ServeArgs {
                config: Some(file),
                data_dir: Some(PathBuf::from("/srv/bh")),
                ..ServeArgs::default()
            }
            .resolve()
        };
        let s = resolve(
            "[[regions]]\nname = \"eu-west\"\nstore = \"eu.db\"\n\
             [[regions]]\nname = \"us-east\"\nstore = \"sqlite:/data/us.db\"\n",
        )
        .unwrap();
        let got: Vec<(String, PathBuf)> = s
            .regions
            .iter()
            .map(|r| match &r.store {
                StoreSpec::Sqlite(p) => (r.region.to_string(), p.clone()),
                StoreSpec::Postgres(_) => unreachable!("the test names files"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("eu-west".to_owned(), PathBuf::from("/srv/bh/eu.db")),
                ("us-east".to_owned(), PathBuf::from("/data/us.db")),
            ],
            "relative paths live under the data dir"
        );
        assert!(ServeArgs::default().resolve().unwrap().regions.is_empty());
        for (toml, needle) in [
            (
                "[[regions]]\nname = \"EU\"\nstore = \"eu.db\"\n",
                "regions[0] (\"EU\"): name: must be lowercase",
            ),
            (
                "[[regions]]\nname = \"eu\"\nstore = \"a.db\"\n[[regions]]\nname = \"eu\"\nstore = \"b.db\"\n",
                "regions[1] (\"eu\"): name: region eu is listed twice",
            ),
            (
                "[[regions]]\nname = \"eu\"\nstore = \"a.db\"\n[[regions]]\nname = \"us\"\nstore = \"/srv/bh/a.db\"\n",
                "regions[1] (\"us\"): store: /srv/bh/a.db is already the store of region eu",
            ),
            (
                "[[regions]]\nname = \"eu\"\nstore = \"bulkhead.db\"\n",
                "regions[0] (\"eu\"): store: /srv/bh/bulkhead.db is the home store",
            ),
            (
                "[[regions]]\nname = \"eu\"\nstore = \"\"\n",
                "regions[0] (\"eu\"): store",
            ),
            (
                "[[regions]]\nname = \"eu\"\nstore = \"a.db\"\ndsn = \"x\"\n",
                "unknown field `dsn`",
            ),
        ] {
            let err = format!("{:#}", resolve(toml).unwrap_err());
            assert!(err.contains(needle), "{toml}: {err}");
        }
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bulkhead.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nbody_bytes_max = 4096\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            body_bytes_max: Some(8192),
            ..ServeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.body_bytes_max, 8192);
        assert_eq!(
            s.store,
            StoreSpec::Sqlite(PathBuf::from("./bulkhead-data/bulkhead.db"))
        );
        let pg = ServeArgs {
            store: Some("postgres://u:secret@db/bulkhead".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            pg.store,
            StoreSpec::Postgres("postgres://u:secret@db/bulkhead".into())
        );
        assert!(
            !format!("{:?}", pg.store).contains("secret"),
            "a password never reaches a log line"
        );
    }
}
