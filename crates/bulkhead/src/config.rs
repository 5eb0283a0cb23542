//! Server configuration. Every setting of `bulkhead serve` is declared once, in the
//! `settings!` list below: its name, type, help text and fixed default (taken from
//! the crate that owns it where that crate has one). From that one line come its
//! three spellings — the flag `--foo-bar` (clap's field name), the variable
//! `BULKHEAD_FOO_BAR` (added by `spell`) and the file key `foo_bar` (serde's field
//! name) — the `[default: …]` of `--help`, and the layering: flag, then variable
//! (clap reads both into one `ServeArgs`), then the `--config` TOML file (a second
//! `ServeArgs`), then the default (`ServeArgs::keys`).
//!
//! Why not figment: clap already gives flag-over-variable with the variable named
//! in `--help`, and a second reader of the environment would parse the same text
//! twice with different rules; what was left to share is an `Option::or` per key,
//! which the macro writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Declares the settings: `ServeArgs` (each key optional: one layer), `Keys` (after
/// layering, a key with a fixed default no longer optional), the layering, and the
/// defaults shown by `--help`.
macro_rules! settings {
    ($(
        $(#[$attr:meta])*
        $key:ident: $ty:ty $(= $default:expr)?;
    )*) => {
        /// Settings of `bulkhead serve`, as one layer: the flags and variables, or the
        /// file. All optional here; `resolve` applies the file and the defaults.
        #[derive(Debug, Default, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[command(mut_args(spell))]
        pub struct ServeArgs {
            /// TOML file with any of the settings below (snake_case names).
            #[arg(long)]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[$attr])*
                #[arg(long)]
                pub $key: Option<$ty>,
            )*
            /// The upstreams, as tables (file only: a list of tables has no flag spelling).
            #[arg(skip)]
            #[serde(default)]
            pub upstreams: Vec<UpstreamFile>,
            /// Regions with a store of their own (file only, like the upstreams).
            #[arg(skip)]
            #[serde(default)]
            pub regions: Vec<RegionFile>,
            /// The HTTP embedders, one per region (file only, like the upstreams).
            #[arg(skip)]
            #[serde(default)]
            pub embedders: Vec<EmbedderFile>,
        }

        /// Every key after layering; a key with a fixed default is no longer optional.
        #[derive(Debug)]
        struct Keys {
            $( $key: keys_ty!($ty $(, $default)?), )*
            upstreams: Vec<UpstreamFile>,
            regions: Vec<RegionFile>,
            embedders: Vec<EmbedderFile>,
        }

        impl ServeArgs {
            /// Each key of `self`, else of `lower` (the tables only come from a file).
            fn over(self, lower: ServeArgs) -> ServeArgs {
                ServeArgs {
                    config: self.config.or(lower.config),
                    $( $key: self.$key.or(lower.$key), )*
                    upstreams: lower.upstreams,
                    regions: lower.regions,
                    embedders: lower.embedders,
                }
            }

            /// The last layer: the defaults.
            fn keys(self) -> Keys {
                Keys {
                    $( $key: keys_value!(self.$key $(, $default)?), )*
                    upstreams: self.upstreams,
                    regions: self.regions,
                    embedders: self.embedders,
                }
            }

            /// Each key's value, as `Debug` shows it (tests compare layers by it).
            #[cfg(test)]
            fn shown(&self) -> Vec<(&'static str, String)> {
                vec![$( (stringify!($key), format!("{:?}", self.$key)), )*]
            }
        }

        impl Keys {
            #[cfg(test)]
            fn shown(&self) -> Vec<(&'static str, String)> {
                vec![$( (stringify!($key), format!("{:?}", keys_some!(&self.$key $(, $default)?))), )*]
            }
        }

        /// The fixed default of a key, as `--help` shows it.
        fn default_shown(key: &str) -> Option<String> {
            $($(
                if key == stringify!($key) {
                    let default: $ty = $default;
                    return Some(Shown::shown(&default));
                }
            )?)*
            None
        }
    };
}

macro_rules! keys_ty {
    ($ty:ty) => { Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

macro_rules! keys_value {
    ($value:expr) => {
        $value
    };
    ($value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default)
    };
}

#[cfg(test)]
macro_rules! keys_some {
    ($value:expr) => {
        $value
    };
    ($value:expr, $default:expr) => {
        Some($value)
    };
}

/// Gives every argument its variable, `BULKHEAD_` and the key in capitals, and its
/// fixed default in the help text.
fn spell(arg: clap::Arg) -> clap::Arg {
    let key = arg.get_id().as_str().to_owned();
    let arg = arg.env(format!("BULKHEAD_{}", key.to_uppercase()));
    let Some(default) = default_shown(&key) else {
        return arg;
    };
    let help = arg.get_help().map(|h| format!("{h} [default: {default}]"));
    let long_help = arg
        .get_long_help()
        .map(|h| format!("{h} [default: {default}]"));
    let arg = match help {
        Some(h) => arg.help(h),
        None => arg,
    };
    match long_help {
        Some(h) => arg.long_help(h),
        None => arg,
    }
}

/// A default as `--help` writes it.
trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_by_display {
    ($($ty:ty),*) => {$(
        impl Shown for $ty {
            fn shown(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
shown_by_display!(u32, u64, usize, f64, bool, String, SocketAddr);

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

/// Enums are shown by the name clap and the file use.
macro_rules! shown_by_value_name {
    ($($ty:ty),*) => {$(
        impl Shown for $ty {
            fn shown(&self) -> String {
                self.to_possible_value()
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default()
            }
        }
    )*};
}
shown_by_value_name!(Embedder, SearchDefaultMode, TraceCommit, ContainOnLeak);

/// The embedder for vector search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Embedder {
    Hashed,
    Http,
    None,
}

/// The ranking of a search that names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchDefaultMode {
    Bm25,
    Vector,
    Hybrid,
}

/// When a model call's trace and audit entry reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceCommit {
    Durable,
    Background,
}

/// What a blocked cross-tenant leak quarantines at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainOnLeak {
    Off,
    Key,
    Tenant,
}

impl From<ContainOnLeak> for bulkhead_server::alerts::Containment {
    fn from(c: ContainOnLeak) -> Self {
        match c {
            ContainOnLeak::Off => Self::Off,
            ContainOnLeak::Key => Self::Key,
            ContainOnLeak::Tenant => Self::Tenant,
        }
    }
}

/// Where the binary owns a default, it is here.
const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    7700,
);
/// Refused credentials a minute that raise `auth_failure_burst` (the server's
/// `AlertSettings::default()` leaves it 0: "not set").
const AUTH_FAILURE_BURST_DEFAULT: u32 = 20;

fn server_limits() -> bulkhead_server::ServerLimits {
    bulkhead_server::ServerLimits::default()
}

fn audit_options() -> bulkhead_audit::AuditOptions {
    bulkhead_audit::AuditOptions::default()
}

fn timeouts() -> bulkhead_gateway::Timeouts {
    bulkhead_gateway::Timeouts::default()
}

fn anomaly() -> bulkhead_server::anomaly::AnomalySettings {
    bulkhead_server::anomaly::AnomalySettings::default()
}

fn chunker() -> bulkhead_index::ChunkerConfig {
    bulkhead_index::ChunkerConfig::default()
}

settings! {
    /// Address to listen on.
    listen: SocketAddr = LISTEN_DEFAULT;
    /// Directory for the SQLite file and development secrets.
    data_dir: PathBuf = PathBuf::from("./bulkhead-data");
    /// Store: a SQLite path (or sqlite:PATH), or a postgres:// URL for several
    /// replicas on one database [default: <data-dir>/bulkhead.db].
    store: StoreSpec;
    /// Admin token for /admin/… [default: generated into <data-dir>/admin.token].
    #[arg(hide_env_values = true)]
    admin_token: String;
    /// Master key, 32 bytes as base64 or hex [default: generated into <data-dir>/master.key,
    /// for development only].
    #[arg(hide_env_values = true)]
    master_key: String;
    /// Largest request body accepted, in bytes.
    body_bytes_max: usize = server_limits().body_bytes_max;
    /// Longest a request may take, in seconds.
    request_timeout_secs: u64 = server_limits().request_timeout.as_secs();
    /// Refused credentials per client address per minute that are answered 401 and
    /// logged; past it the address gets 429 and nothing is written until the minute
    /// ends (0: no limit).
    auth_failures_per_address_per_min: u32 = server_limits().auth_failures_per_address_per_min;
    /// Refused credentials the whole server writes to the audit log per minute;
    /// past it they are still refused, counted (metrics, alert) and summarised in
    /// one operator-log entry the next minute, so many addresses together cannot
    /// make it write without bound (0: no budget).
    auth_refusals_logged_per_min: u32 = server_limits().auth_refusals_logged_per_min;
    /// Bearer token `/metrics` requires; unset, it answers anyone who can reach it.
    #[arg(hide_env_values = true)]
    metrics_token: String;
    /// Largest document text, in bytes.
    document_text_bytes_max: usize = bulkhead_vault::VaultLimits::default().document_text_bytes_max;
    /// Most writes committed (and fsynced) together; 1 disables group commit.
    sqlite_group_commit_max: usize = bulkhead_store::SqliteOptions::default().group_commit_max;
    /// Longest a clean shutdown waits for in-flight requests, in seconds.
    shutdown_grace_secs: u64 = 30;
    /// This server's name: the audit signing key's name and the prefix of every audit
    /// log's origin (`<name>/tenants/<id>`). Choose it once; a DNS-like name such as
    /// `bulkhead.example.com`.
    server_name: String = audit_options().server_name;
    /// File with the Ed25519 key that signs audit checkpoints (C2SP signing-key
    /// format), generated 0600 on first start [default: <data-dir>/audit-signing.key].
    audit_signing_key: PathBuf;
    /// How often audit logs that grew get a new signed checkpoint, in seconds.
    /// Clients asking for a checkpoint always get a fresh one.
    audit_checkpoint_interval_secs: u64 = audit_options().checkpoint_interval.as_secs();
    /// Memory for hot tenants' search indexes, in bytes; the least recently used
    /// are dropped (and wiped) beyond it.
    index_cache_bytes_max: usize = 1 << 30;
    /// Chunk size aimed at, in characters.
    chunk_target_chars: usize = chunker().target_chars;
    /// Largest chunk, in characters.
    chunk_max_chars: usize = chunker().max_chars;
    /// Characters repeated between neighbouring chunks.
    chunk_overlap_chars: usize = chunker().overlap_chars;
    /// Embedder for vector search: `hashed` (built in, no model: hashed character
    /// n-grams, lexical; runs in this process, so it serves every region), `http`
    /// (OpenAI-compatible /v1/embeddings services: TEI, Ollama, vLLM…, each serving
    /// one region) or `none` (BM25 only).
    embedder: Embedder = Embedder::Hashed;
    /// With `embedder = "http"`: one embedding service without a config file, its
    /// base URL ending in /v1, e.g. http://127.0.0.1:8080/v1. More services, one
    /// per region, go in the file's [[embedders]] tables.
    embedder_url: String;
    /// With `embedder = "http"`: the model name to ask for.
    embedder_model: String;
    /// With `embedder = "http"`: bearer token for the embedding service.
    #[arg(hide_env_values = true)]
    embedder_api_key: String;
    /// Embedding dimensions [default: 256 for `hashed`; required for `http`, where
    /// an [[embedders]] table may repeat it but every embedder must share it].
    embedder_dimensions: usize;
    /// With --embedder-url: the residency region it serves. Only tenants of that
    /// region send it text; a tenant of a region without an embedder keeps BM25
    /// search and its documents get no vectors (no fallback to another region's
    /// embedder) [default: default].
    embedder_region: String;
    /// Ranking of a search that names none: `bm25`, `vector` or `hybrid`
    /// [default: hybrid with an http embedder, else bm25].
    search_default_mode: SearchDefaultMode;
    /// One OpenAI-compatible upstream without a config file: its base URL, ending in
    /// /v1 (e.g. http://127.0.0.1:8000/v1 for vLLM). More upstreams, regions and
    /// per-tenant credentials go in the file's [[upstreams]] tables.
    upstream_url: String;
    /// With --upstream-url: the models it serves, comma-separated.
    upstream_models: String;
    /// With --upstream-url: bearer token sent to it.
    #[arg(hide_env_values = true)]
    upstream_api_key: String;
    /// With --upstream-url: the residency region it serves; only tenants of that
    /// region reach it [default: default].
    upstream_region: String;
    /// With --upstream-url: send each tenant's own `cache_salt` (vLLM prefix-cache
    /// isolation).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    upstream_cache_salt: bool = true;
    /// Offer the built-in echo models `bulkhead-echo` and `bulkhead-echo-leaky`, which
    /// answer with their whole prompt (the leaky one with the previous caller's
    /// too). For tests and demos only: never enable for real traffic.
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    echo_models: bool = false;
    /// Longest wait to connect to an upstream, in seconds.
    upstream_connect_timeout_secs: u64 = timeouts().connect.as_secs();
    /// Longest wait for an upstream's response head, in seconds.
    upstream_first_byte_timeout_secs: u64 = timeouts().first_byte.as_secs();
    /// Longest silence inside an upstream's answer, in seconds.
    upstream_idle_timeout_secs: u64 = timeouts().idle.as_secs();
    /// Longest a whole model call may take, in seconds.
    upstream_total_timeout_secs: u64 = timeouts().total.as_secs();
    /// TTL of a session created without one, in seconds.
    session_ttl_secs: u64 = bulkhead_server::sessions::SessionLimits::default().ttl_secs_default;
    /// Bytes of messages one session may hold (their stored JSON); a full session
    /// refuses new turns (409) and the client starts a new one.
    session_bytes_max: u64 = bulkhead_server::sessions::SessionLimits::default().bytes_max;
    /// How long decision traces are kept, in seconds; 0 keeps them until the tenant
    /// is erased.
    trace_ttl_secs: u64 = 0;
    /// When a model call's trace and audit entry reach the disk: `durable` (before the
    /// answer is released: no answer without its log entry, at one fsync per call)
    /// or `background` (just after, batched: no fsync on the answer's path; a machine
    /// crash can lose the entries of the last few milliseconds).
    trace_commit: TraceCommit = TraceCommit::Durable;
    /// Largest content part besides text that a compliance pack's `[content]`
    /// table opens (an inline image, audio or file, or an image Bulkhead fetches
    /// from a URL), decoded, in bytes.
    content_part_bytes_max: usize = bulkhead_gateway::content::PART_BYTES_MAX_DEFAULT;
    /// How often the retention sweeper deletes expired documents, sessions and
    /// traces, in seconds (they are invisible from the moment they expire).
    sweep_interval_secs: u64 = 60;
    /// Most rows one sweep deletes (bounded work per tick).
    sweep_batch_max: u32 = 1000;
    /// How long what a tenant sends through (prompts of every role, tool results,
    /// session history) stays protected by the output guard after it was last
    /// sent, in seconds; a compliance pack may set its own
    /// (`retention.prompt_window_secs`). Memory grows with it: see BENCHMARKS.md.
    guard_prompt_window_secs: u64 =
        (bulkhead_guard::GuardLimits::default().ephemeral_ttl_ms / 1000).unsigned_abs();
    /// A folder of the operator's own compliance packs (`*.toml`, the format of the
    /// built-in `default`, `gdpr`, `hipaa`, `pci-dss` and `soc2`), validated at start.
    policy_packs_dir: PathBuf;
    /// URL that receives every alert as JSON (POST; up to 4 attempts; a bounded
    /// queue that never slows requests).
    alert_webhook_url: String;
    /// Secret that signs webhook deliveries: header `x-bulkhead-signature:
    /// sha256=<hex HMAC-SHA256(secret, body)>`.
    #[arg(hide_env_values = true)]
    alert_webhook_secret: String;
    /// Refused credentials per minute that raise an `auth_failure_burst` alert.
    alert_auth_failure_burst: u32 = AUTH_FAILURE_BURST_DEFAULT;
    /// Lookups of ids a tenant does not have (404s), per tenant per minute, that
    /// raise an `id_enumeration` alert.
    alert_not_found_burst: u32 = bulkhead_server::alerts::NOT_FOUND_BURST_DEFAULT;
    /// What a blocked cross-tenant leak quarantines at once: `off` (alert only),
    /// `key` (the key that received it) or `tenant` (its whole tenant). Never
    /// applied when the foreign text came in through the receiver's own input
    /// (a planted canary: a `foreign_data_supplied` warning instead).
    contain_on_leak: ContainOnLeak = ContainOnLeak::Off;
    /// Weight of the newest minute in each tenant's requests-per-minute baseline
    /// (EWMA), in (0, 1].
    anomaly_alpha: f64 = anomaly().alpha;
    /// Standard deviations above a tenant's baseline that raise a
    /// `traffic_anomaly` alert.
    anomaly_sigma: f64 = anomaly().sigma;
    /// A minute with fewer requests than this never raises `traffic_anomaly`.
    anomaly_min_requests_per_min: u64 = anomaly().min_requests_per_min;
    /// Minutes of a tenant's traffic before its baseline may alert.
    anomaly_warmup_minutes: u32 = anomaly().warmup_minutes;
    /// Default quota: requests a second per tenant, all its keys together (429 with
    /// Retry-After past it). A pack's `[quotas]` or the tenant's own
    /// (`bulkhead tenants quotas`) override each default [default: no limit].
    quota_requests_per_second: u32;
    /// Default quota: requests a second per API key [default: no limit].
    quota_requests_per_second_per_key: u32;
    /// Default quota: requests of a tenant in flight at once (a stream counts until
    /// its last byte) [default: no limit].
    quota_concurrent_requests: u32;
    /// Default quota: requests of one API key in flight at once [default: no limit].
    quota_concurrent_requests_per_key: u32;
    /// Default budget: model tokens per tenant per UTC minute, reserved before each
    /// call and settled from the upstream's usage [default: no limit].
    quota_tokens_per_minute: u64;
    /// Default budget: model tokens per tenant per UTC day [default: no limit].
    quota_tokens_per_day: u64;
    /// Default budget: bytes of text a tenant sends to an embedder per UTC day
    /// (documents ingested, /v1/embeddings inputs) [default: no limit].
    quota_embedding_bytes_per_day: u64;
    /// Default quota: sealed bytes a tenant stores (documents, chunks, sessions and
    /// their messages) [default: no limit].
    quota_stored_bytes: u64;
    /// Default quota: live documents per tenant [default: no limit].
    quota_documents: u64;
    /// Under a token budget, the completion tokens reserved (and sent upstream as
    /// `max_tokens`) for a call that sets no `max_tokens`.
    quota_completion_reserve_tokens: u64 = bulkhead_app::quota::COMPLETION_RESERVE_DEFAULT;
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

/// One `[[embedders]]` table of the config file: an OpenAI-compatible embedding
/// service that only tenants of its region send text to (with
/// `embedder = "http"`). One per region; all share one vector length.
///
/// ```toml
/// [[embedders]]
/// region = "eu-west"                 # [default: default]
/// base_url = "http://10.0.0.6:8080/v1"
/// model = "bge-m3"
/// api_key_env = "TEI_EU_KEY"         # or api_key = "…"
/// dimensions = 1024                  # [default: embedder_dimensions]
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderFile {
    #[serde(default)]
    pub region: Option<String>,
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// The name of an environment variable holding the key (keeps it out of the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
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
    pub auth_failures_per_address_per_min: u32,
    pub auth_refusals_logged_per_min: u32,
    pub metrics_token: Option<String>,
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
    /// The default quotas of every tenant (a pack's or the tenant's own override
    /// them field by field).
    pub quotas: bulkhead_api::quotas::Quotas,
    pub quota_completion_reserve_tokens: u64,
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
    pub session_bytes_max: u64,
    pub trace_ttl_secs: Option<u64>,
    pub trace_commit_background: bool,
    pub content_part_bytes_max: usize,
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
    /// In process: serves every region.
    Hashed {
        dimensions: usize,
    },
    /// HTTP services, each serving one region: no region twice, one vector
    /// length for all.
    Http(Vec<RegionalEmbedder>),
}

/// An HTTP embedder and the one region whose tenants' text it receives.
#[derive(Debug)]
pub struct RegionalEmbedder {
    pub region: bulkhead_types::Region,
    pub config: bulkhead_index::HttpEmbedderConfig,
}

/// The three spellings of a key, for error messages.
fn spelled(key: &str) -> String {
    format!(
        "{key} (--{}, BULKHEAD_{})",
        key.replace('_', "-"),
        key.to_uppercase()
    )
}

/// A number of seconds that must be at least 1.
fn secs(value: u64, key: &str) -> anyhow::Result<Duration> {
    match value {
        0 => bail!("{} must be at least 1", spelled(key)),
        n => Ok(Duration::from_secs(n)),
    }
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<Settings> {
        self.layered()?.keys().resolve()
    }

    /// The flags and variables over the `--config` file.
    fn layered(self) -> anyhow::Result<ServeArgs> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => ServeArgs::default(),
        };
        Ok(self.over(file))
    }
}

impl Keys {
    fn resolve(mut self) -> anyhow::Result<Settings> {
        // Taken rather than moved: the helpers below borrow what is left.
        let data_dir = std::mem::take(&mut self.data_dir);
        let store = self
            .store
            .take()
            .unwrap_or_else(|| StoreSpec::Sqlite(data_dir.join("bulkhead.db")));
        let regions = resolve_regions(std::mem::take(&mut self.regions), &data_dir, &store)?;
        if self.body_bytes_max < 1024 {
            bail!("{} must be at least 1024", spelled("body_bytes_max"));
        }
        let request_timeout = secs(self.request_timeout_secs, "request_timeout_secs")?;
        let server_name = std::mem::take(&mut self.server_name);
        check_server_name(&server_name)?;
        let audit_signing_key = self
            .audit_signing_key
            .take()
            .unwrap_or_else(|| data_dir.join("audit-signing.key"));
        let audit_checkpoint_interval = secs(
            self.audit_checkpoint_interval_secs,
            "audit_checkpoint_interval_secs",
        )?;
        let retrieval = resolve_retrieval(self.retrieval_keys())?;
        let gateway = resolve_gateway(self.gateway_keys()?)?;
        check_sweep_and_guard(
            self.sweep_interval_secs,
            self.sweep_batch_max,
            self.guard_prompt_window_secs,
        )?;
        let alerts = self.alert_settings()?;
        let quotas = self.quotas()?;
        Ok(Settings {
            quotas,
            quota_completion_reserve_tokens: self.quota_completion_reserve_tokens,
            retrieval,
            gateway,
            sweep_interval: Duration::from_secs(self.sweep_interval_secs),
            sweep_batch_max: self.sweep_batch_max,
            // check_sweep_and_guard keeps it far below i64::MAX.
            guard_prompt_window_secs: self.guard_prompt_window_secs as i64,
            policy_packs_dir: self.policy_packs_dir,
            alerts,
            server_name,
            audit_signing_key,
            audit_checkpoint_interval,
            listen: self.listen,
            data_dir,
            store,
            regions,
            admin_token: self.admin_token,
            master_key: self.master_key,
            body_bytes_max: self.body_bytes_max,
            request_timeout,
            auth_failures_per_address_per_min: self.auth_failures_per_address_per_min,
            auth_refusals_logged_per_min: self.auth_refusals_logged_per_min,
            metrics_token: self.metrics_token.take(),
            document_text_bytes_max: self.document_text_bytes_max,
            sqlite_group_commit_max: self.sqlite_group_commit_max.max(1),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
        })
    }

    /// The default quotas; each present one must be at least 1.
    fn quotas(&self) -> anyhow::Result<bulkhead_api::quotas::Quotas> {
        let quotas = bulkhead_api::quotas::Quotas {
            requests_per_second: self.quota_requests_per_second,
            requests_per_second_per_key: self.quota_requests_per_second_per_key,
            concurrent_requests: self.quota_concurrent_requests,
            concurrent_requests_per_key: self.quota_concurrent_requests_per_key,
            tokens_per_minute: self.quota_tokens_per_minute,
            tokens_per_day: self.quota_tokens_per_day,
            embedding_bytes_per_day: self.quota_embedding_bytes_per_day,
            stored_bytes: self.quota_stored_bytes,
            documents: self.quota_documents,
        };
        if let Err(e) = quotas.validate() {
            // "requests_per_second must be…" names the field without its prefix.
            let (field, rest) = e.split_once(' ').unwrap_or((e.as_str(), ""));
            bail!("{} {rest}", spelled(&format!("quota_{field}")));
        }
        if self.quota_completion_reserve_tokens == 0 {
            bail!(
                "{} must be at least 1",
                spelled("quota_completion_reserve_tokens")
            );
        }
        Ok(quotas)
    }

    /// The retrieval keys, taken out for `resolve_retrieval`.
    fn retrieval_keys(&mut self) -> RetrievalKeys {
        RetrievalKeys {
            index_cache_bytes_max: self.index_cache_bytes_max,
            chunker: bulkhead_index::ChunkerConfig {
                target_chars: self.chunk_target_chars,
                max_chars: self.chunk_max_chars,
                overlap_chars: self.chunk_overlap_chars,
            },
            embedder: self.embedder,
            embedder_url: self.embedder_url.take(),
            embedder_model: self.embedder_model.take(),
            embedder_api_key: self.embedder_api_key.take(),
            embedder_dimensions: self.embedder_dimensions,
            embedder_region: self.embedder_region.take(),
            embedders: std::mem::take(&mut self.embedders),
            search_default_mode: self.search_default_mode,
        }
    }

    /// The gateway keys, taken out for `resolve_gateway`, with the upstream
    /// timeouts checked.
    fn gateway_keys(&mut self) -> anyhow::Result<GatewayKeys> {
        Ok(GatewayKeys {
            timeouts: upstream_timeouts(
                self.upstream_connect_timeout_secs,
                self.upstream_first_byte_timeout_secs,
                self.upstream_idle_timeout_secs,
                self.upstream_total_timeout_secs,
            )?,
            upstream_url: self.upstream_url.take(),
            upstream_models: self.upstream_models.take(),
            upstream_api_key: self.upstream_api_key.take(),
            upstream_region: self.upstream_region.take(),
            upstream_cache_salt: self.upstream_cache_salt,
            echo_models: self.echo_models,
            session_ttl_secs: self.session_ttl_secs,
            session_bytes_max: self.session_bytes_max,
            trace_ttl_secs: self.trace_ttl_secs,
            trace_commit: self.trace_commit,
            content_part_bytes_max: self.content_part_bytes_max,
            upstreams: std::mem::take(&mut self.upstreams),
        })
    }

    /// Alerting, its anomaly thresholds validated.
    fn alert_settings(&mut self) -> anyhow::Result<bulkhead_server::alerts::AlertSettings> {
        let anomaly = bulkhead_server::anomaly::AnomalySettings {
            alpha: self.anomaly_alpha,
            sigma: self.anomaly_sigma,
            min_requests_per_min: self.anomaly_min_requests_per_min,
            warmup_minutes: self.anomaly_warmup_minutes,
        };
        Ok(bulkhead_server::alerts::AlertSettings {
            webhook_url: self.alert_webhook_url.take(),
            webhook_secret: self.alert_webhook_secret.take(),
            auth_failure_burst: self.alert_auth_failure_burst,
            not_found_burst: self.alert_not_found_burst,
            contain_on_leak: self.contain_on_leak.into(),
            anomaly: anomaly.validated().map_err(|e| anyhow::anyhow!(e))?,
        })
    }
}

/// The server's name goes into every checkpoint's origin line: non-empty, no
/// spaces, no '+'.
fn check_server_name(server_name: &str) -> anyhow::Result<()> {
    if server_name.is_empty()
        || server_name.contains('+')
        || server_name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("server_name must be non-empty, without spaces or '+' (e.g. bulkhead.example.com)");
    }
    Ok(())
}

/// The four upstream timeouts, each at least a second, checked in this order.
fn upstream_timeouts(
    connect_secs: u64,
    first_byte_secs: u64,
    idle_secs: u64,
    total_secs: u64,
) -> anyhow::Result<bulkhead_gateway::Timeouts> {
    Ok(bulkhead_gateway::Timeouts {
        connect: secs(connect_secs, "upstream_connect_timeout_secs")?,
        first_byte: secs(first_byte_secs, "upstream_first_byte_timeout_secs")?,
        idle: secs(idle_secs, "upstream_idle_timeout_secs")?,
        total: secs(total_secs, "upstream_total_timeout_secs")?,
    })
}

fn check_sweep_and_guard(
    sweep_interval_secs: u64,
    sweep_batch_max: u32,
    guard_prompt_window_secs: u64,
) -> anyhow::Result<()> {
    if sweep_interval_secs == 0 || sweep_batch_max == 0 {
        bail!("sweep_interval_secs and sweep_batch_max must be at least 1");
    }
    if !(1..=30 * 86_400).contains(&guard_prompt_window_secs) {
        bail!(
            "{} must be between 1 and 2592000 (30 days), not {guard_prompt_window_secs}",
            spelled("guard_prompt_window_secs")
        );
    }
    Ok(())
}

/// The retrieval keys after layering, before validation.
struct RetrievalKeys {
    index_cache_bytes_max: usize,
    chunker: bulkhead_index::ChunkerConfig,
    embedder: Embedder,
    embedder_url: Option<String>,
    embedder_model: Option<String>,
    embedder_api_key: Option<String>,
    embedder_dimensions: Option<usize>,
    embedder_region: Option<String>,
    embedders: Vec<EmbedderFile>,
    search_default_mode: Option<SearchDefaultMode>,
}

fn resolve_retrieval(keys: RetrievalKeys) -> anyhow::Result<RetrievalSettings> {
    use bulkhead_index::{HttpEmbedderConfig, SearchMode};
    let chunker = keys.chunker;
    bulkhead_index::Chunker::new(chunker)
        .context("chunk_target_chars / chunk_max_chars / chunk_overlap_chars")?;
    let flat_http = keys.embedder == Embedder::Http && keys.embedder_url.is_some();
    if keys.embedder_region.is_some() && !flat_http {
        bail!(
            "embedder_region names the region of the embedder at embedder_url (with embedder = \"http\"); \
             give an [[embedders]] table its own region"
        );
    }
    if keys.embedder != Embedder::Http && !keys.embedders.is_empty() {
        bail!("[[embedders]] tables are HTTP embedders; set embedder = \"http\"");
    }
    let check_dimensions = |dimensions: usize| {
        if !(8..=8192).contains(&dimensions) {
            bail!(
                "{} must be between 8 and 8192",
                spelled("embedder_dimensions")
            );
        }
        Ok(())
    };
    let embedder = match keys.embedder {
        Embedder::None => EmbedderSetting::None,
        Embedder::Hashed => {
            let dimensions = keys
                .embedder_dimensions
                .unwrap_or(bulkhead_index::HashedNgramEmbedder::DEFAULT_DIMS);
            check_dimensions(dimensions)?;
            EmbedderSetting::Hashed { dimensions }
        }
        Embedder::Http => {
            let mut embedders = resolve_embedders(keys.embedders, keys.embedder_dimensions)?;
            if keys.embedder_url.is_none()
                && !embedders.is_empty()
                && (keys.embedder_model.is_some() || keys.embedder_api_key.is_some())
            {
                bail!(
                    "embedder_model and embedder_api_key go with embedder_url; an [[embedders]] table names its own"
                );
            }
            if let Some(url) = keys.embedder_url {
                let model = keys
                    .embedder_model
                    .context("embedder = \"http\" needs embedder_model")?;
                let dimensions = keys.embedder_dimensions.context(
                    "embedder = \"http\" needs embedder_dimensions (the model's vector length)",
                )?;
                let mut config = HttpEmbedderConfig::new(url, model, dimensions);
                config.api_key = keys.embedder_api_key.map(zeroize::Zeroizing::new);
                let region = region(keys.embedder_region.as_deref(), "embedder_region")?;
                embedders.push((
                    "embedder_url".to_owned(),
                    RegionalEmbedder { region, config },
                ));
            }
            if embedders.is_empty() {
                bail!(
                    "embedder = \"http\" needs embedder_url (an OpenAI-compatible base URL ending in /v1) \
                     or [[embedders]] tables in the config file"
                );
            }
            for (i, (what, e)) in embedders.iter().enumerate() {
                check_dimensions(e.config.dimensions).with_context(|| what.clone())?;
                if let Some((other, _)) = embedders[..i].iter().find(|(_, o)| o.region == e.region)
                {
                    bail!(
                        "{what}: region {} already has an embedder ({other}); one embedder serves each region",
                        e.region
                    );
                }
                let (first, f) = &embedders[0];
                if f.config.dimensions != e.config.dimensions {
                    bail!(
                        "{what}: dimensions {} differ from {first}'s {}; all embedders of a server \
                         share one vector length (the index has one)",
                        e.config.dimensions,
                        f.config.dimensions
                    );
                }
            }
            EmbedderSetting::Http(embedders.into_iter().map(|(_, e)| e).collect())
        }
    };
    let default_mode = match keys.search_default_mode {
        None if matches!(embedder, EmbedderSetting::Http(_)) => SearchMode::Hybrid,
        None | Some(SearchDefaultMode::Bm25) => SearchMode::Bm25,
        Some(SearchDefaultMode::Vector) => SearchMode::Vector,
        Some(SearchDefaultMode::Hybrid) => SearchMode::Hybrid,
    };
    if default_mode != SearchMode::Bm25 && matches!(embedder, EmbedderSetting::None) {
        bail!(
            "search_default_mode {default_mode:?} needs an embedder; set embedder = \"hashed\" or \"http\""
        );
    }
    if keys.index_cache_bytes_max < (1 << 20) {
        bail!(
            "{} must be at least 1048576 (1 MiB)",
            spelled("index_cache_bytes_max")
        );
    }
    Ok(RetrievalSettings {
        index_cache_bytes_max: keys.index_cache_bytes_max,
        chunker,
        embedder,
        default_mode,
    })
}

/// The gateway keys after layering, before validation.
struct GatewayKeys {
    upstream_url: Option<String>,
    upstream_models: Option<String>,
    upstream_api_key: Option<String>,
    upstream_region: Option<String>,
    upstream_cache_salt: bool,
    echo_models: bool,
    timeouts: bulkhead_gateway::Timeouts,
    session_ttl_secs: u64,
    session_bytes_max: u64,
    trace_ttl_secs: u64,
    trace_commit: TraceCommit,
    content_part_bytes_max: usize,
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
                cache_salt: keys.upstream_cache_salt,
                prompt_cache_key: false,
            });
        }
        (Some(_), None) => {
            bail!("--upstream-url needs --upstream-models (the models it serves, comma-separated)")
        }
        (None, Some(_)) => bail!("--upstream-models needs --upstream-url"),
        (None, None) => {}
    }
    let echo_models = keys.echo_models;
    if echo_models {
        upstreams.push(UpstreamConfig::echo());
    }
    let session_ttl_secs = keys.session_ttl_secs;
    if session_ttl_secs == 0 {
        bail!("{} must be at least 1", spelled("session_ttl_secs"));
    }
    if keys.session_bytes_max < 1024 {
        bail!("{} must be at least 1024", spelled("session_bytes_max"));
    }
    if keys.content_part_bytes_max == 0 {
        bail!("{} must be at least 1", spelled("content_part_bytes_max"));
    }
    Ok(GatewaySettings {
        content_part_bytes_max: keys.content_part_bytes_max,
        upstreams,
        timeouts: keys.timeouts,
        echo_models,
        session_ttl_secs,
        session_bytes_max: keys.session_bytes_max,
        trace_ttl_secs: Some(keys.trace_ttl_secs).filter(|t| *t > 0),
        trace_commit_background: keys.trace_commit == TraceCommit::Background,
    })
}

/// The `[[embedders]]` tables, each named for error messages; `dimensions`
/// (from `embedder_dimensions`) for a table that gives none.
fn resolve_embedders(
    tables: Vec<EmbedderFile>,
    dimensions: Option<usize>,
) -> anyhow::Result<Vec<(String, RegionalEmbedder)>> {
    use bulkhead_index::HttpEmbedderConfig;
    let mut out = Vec::with_capacity(tables.len());
    for (i, t) in tables.into_iter().enumerate() {
        let what = format!(
            "embedders[{i}] ({:?})",
            t.region.as_deref().unwrap_or("default")
        );
        let region = region(t.region.as_deref(), &what)?;
        let api_key = match (t.api_key, t.api_key_env) {
            (Some(_), Some(_)) => bail!("{what}: set api_key or api_key_env, not both"),
            (Some(k), None) => Some(zeroize::Zeroizing::new(k)),
            (None, Some(var)) => Some(secret_from_env(&var, &what)?),
            (None, None) => None,
        };
        let dimensions = t.dimensions.or(dimensions).with_context(|| {
            format!(
                "{what}: needs dimensions (the model's vector length), or set embedder_dimensions"
            )
        })?;
        let mut config = HttpEmbedderConfig::new(t.base_url, t.model, dimensions);
        config.api_key = api_key;
        out.push((what, RegionalEmbedder { region, config }));
    }
    Ok(out)
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

fn load_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
}

/// Where the rows live.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
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

impl std::str::FromStr for StoreSpec {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Self> {
        parse_store(url)
    }
}

impl TryFrom<String> for StoreSpec {
    type Error = anyhow::Error;

    fn try_from(url: String) -> anyhow::Result<Self> {
        parse_store(&url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// The declared keys, from clap's view of `ServeArgs`: id, flag, variable.
    fn declared() -> Vec<(String, String, String)> {
        Wrapper::command()
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "config"))
            .map(|a| {
                (
                    a.get_id().to_string(),
                    a.get_long().unwrap_or_default().to_owned(),
                    a.get_env()
                        .and_then(|e| e.to_str())
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    /// Two values `key` accepts, different from each other and from its default:
    /// its enum's values, or the first candidates that parse as a flag.
    fn two_values(key: &str) -> [String; 2] {
        let cmd = Wrapper::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key)
            .expect("the key is declared");
        let default = default_shown(key);
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .filter(|v| Some(v) != default.as_ref())
            .collect();
        if possible.len() >= 2 {
            return [possible[0].clone(), possible[1].clone()];
        }
        if let [only] = possible.as_slice() {
            // A bool, or a two-valued enum, whose other value is the default.
            let default = default.expect("one value left: the other is the default");
            return [only.clone(), default];
        }
        for [a, b] in [["2", "3"], ["0.5", "0.25"], ["127.0.0.1:2", "127.0.0.1:3"]] {
            let parses = |v: &str| {
                Wrapper::try_parse_from(["serve", &format!("--{}={v}", key.replace('_', "-"))])
                    .is_ok()
            };
            if parses(a) && parses(b) {
                return [a.to_owned(), b.to_owned()];
            }
        }
        panic!("no test values for {key}");
    }

    /// `key = value` as TOML: bare if the file parser takes it so, else quoted.
    fn toml_line(key: &str, value: &str) -> String {
        let bare = format!("{key} = {value}\n");
        if toml::from_str::<ServeArgs>(&bare).is_ok() {
            bare
        } else {
            format!("{key} = {value:?}\n")
        }
    }

    /// Each key and its value as `Debug` shows it.
    type Shown = Vec<(String, String)>;

    /// Runs this test binary's `layers_child` in a process of its own with `env`
    /// as its `BULKHEAD_*` variables (a test cannot set variables in its own
    /// process safely), and returns each key's value after layering, without and
    /// with the defaults.
    fn layered_in_child(
        flags: &[String],
        env: &[(String, String)],
        file: Option<&Path>,
    ) -> (Shown, Shown) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let mut argv: Vec<String> = flags.to_vec();
        if let Some(file) = file {
            argv.push(format!("--config={}", file.display()));
        }
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "config::tests::layers_child", "--test-threads=1"]);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BULKHEAD_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .env(
                "CONFIG_TEST_CHILD_ARGV",
                serde_json::to_string(&argv).unwrap(),
            )
            .env("CONFIG_TEST_CHILD_OUT", &out);
        let status = cmd.stdout(std::process::Stdio::null()).status().unwrap();
        assert!(status.success(), "child failed");
        let text = std::fs::read_to_string(&out).expect("the child wrote its answer");
        serde_json::from_str(&text).unwrap()
    }

    /// Not a test on its own: the child of `layered_in_child` (does nothing unless
    /// started by it).
    #[test]
    fn layers_child() {
        let (Ok(argv), Ok(out)) = (
            std::env::var("CONFIG_TEST_CHILD_ARGV"),
            std::env::var("CONFIG_TEST_CHILD_OUT"),
        ) else {
            return;
        };
        let argv: Vec<String> = serde_json::from_str(&argv).unwrap();
        let args = Wrapper::try_parse_from(std::iter::once("serve".to_owned()).chain(argv))
            .unwrap()
            .args;
        let layered = args.layered().unwrap();
        let owned = |v: Vec<(&str, String)>| -> Shown {
            v.into_iter().map(|(k, s)| (k.to_owned(), s)).collect()
        };
        let raw = owned(layered.shown());
        let keys = owned(layered.keys().shown());
        std::fs::write(out, serde_json::to_string(&(raw, keys)).unwrap()).unwrap();
    }

    /// Each key's value after layering one value per key through one spelling.
    fn alone(key: &str, value: &str) -> String {
        let flag = format!("--{}={value}", key.replace('_', "-"));
        let args = Wrapper::try_parse_from(["serve", &flag]).unwrap().args;
        args.shown().into_iter().find(|(k, _)| *k == key).unwrap().1
    }

    /// For every declared key: it has the three spellings, and setting it through
    /// several of them gives the flag's value over the variable's over the file's
    /// over the default. All keys at once, one process per case.
    #[test]
    fn every_key_flag_beats_env_beats_file_beats_default() {
        let keys = declared();
        assert!(keys.len() >= 40, "{} keys", keys.len());
        for (key, long, env) in &keys {
            assert_eq!(long, &key.replace('_', "-"), "flag of {key}");
            assert_eq!(
                env,
                &format!("BULKHEAD_{}", key.to_uppercase()),
                "env of {key}"
            );
        }
        let values: Vec<(String, [String; 2])> = keys
            .iter()
            .map(|(k, ..)| (k.clone(), two_values(k)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file_of = |which: usize| {
            let path = dir.path().join(format!("layer{which}.toml"));
            let text: String = values
                .iter()
                .map(|(k, v)| toml_line(k, &v[which]))
                .collect();
            std::fs::write(&path, text).unwrap();
            path
        };
        let env_of = |which: usize| -> Vec<(String, String)> {
            values
                .iter()
                .map(|(k, v)| (format!("BULKHEAD_{}", k.to_uppercase()), v[which].clone()))
                .collect()
        };
        let flags_of = |which: usize| -> Vec<String> {
            values
                .iter()
                .map(|(k, v)| format!("--{}={}", k.replace('_', "-"), v[which]))
                .collect()
        };
        let (file0, file1) = (file_of(0), file_of(1));
        // (case, flags, env, file, which value must win)
        let (file0, file1) = (Some(file0.as_path()), Some(file1.as_path()));
        let cases = [
            ("file beats default", vec![], vec![], file0, 0),
            ("env beats file", vec![], env_of(1), file0, 1),
            ("env beats default", vec![], env_of(0), None, 0),
            ("flag beats env", flags_of(1), env_of(0), None, 1),
            ("flag beats file", flags_of(0), vec![], file1, 0),
            (
                "flag beats env beats file",
                flags_of(0),
                env_of(1),
                file1,
                0,
            ),
        ];
        for (case, flags, env, file, winner) in cases {
            let (raw, with_defaults) = layered_in_child(&flags, &env, file);
            for (key, v) in &values {
                let want = alone(key, &v[winner]);
                let got = raw.iter().find(|(k, _)| k == key).map(|(_, s)| s);
                assert_eq!(got, Some(&want), "{case}: {key}");
                let got = with_defaults.iter().find(|(k, _)| k == key).map(|(_, s)| s);
                assert_eq!(got, Some(&want), "{case}: {key} after the defaults");
            }
        }
        // Nothing set: every key with a fixed default has it.
        let (_, with_defaults) = layered_in_child(&[], &[], None);
        for (key, ..) in &keys {
            let got = &with_defaults.iter().find(|(k, _)| k == key).unwrap().1;
            match default_shown(key) {
                Some(_) => assert_ne!(got, "None", "{key} has a default"),
                None => assert_eq!(got, "None", "{key} has none"),
            }
        }
    }

    /// `--help` names each key's variable and its fixed default.
    #[test]
    fn help_names_variable_and_default() {
        let mut cmd = Wrapper::command();
        let help = cmd.render_long_help().to_string();
        for (key, long, env) in declared() {
            let at = help
                .find(&format!("--{long} "))
                .unwrap_or_else(|| panic!("--{long} in help"));
            let end = help[at + 2..]
                .find("\n  --")
                .map_or(help.len(), |e| at + 2 + e);
            let entry = &help[at..end];
            assert!(entry.contains(&format!("[env: {env}")), "{entry}");
            if let Some(default) = default_shown(&key) {
                assert!(entry.contains(&format!("[default: {default}]")), "{entry}");
            }
        }
        assert!(
            help.contains("[default: 2097152]"),
            "body_bytes_max from ServerLimits"
        );
        assert!(help.contains("[default: 127.0.0.1:7700]"));
    }

    /// An unknown file key, a bad enum value by flag or in the file: clear errors.
    #[test]
    fn unknown_keys_and_bad_enum_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bulkhead.toml");
        let resolve = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            }
            .resolve()
        };
        let err = format!("{:#}", resolve("no_such_key = 1\n").unwrap_err());
        assert!(err.contains("unknown field `no_such_key`"), "{err}");
        assert!(err.contains("parse config file"), "{err}");
        let err = format!("{:#}", resolve("config = \"other.toml\"\n").unwrap_err());
        assert!(err.contains("unknown field `config`"), "{err}");
        let cmd = Wrapper::command();
        let mut enums = 0;
        for arg in cmd.get_arguments() {
            let key = arg.get_id().as_str();
            let names: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect();
            if names.len() < 3 && !matches!(key, "trace_commit") {
                continue; // bools
            }
            enums += 1;
            let flag = format!("--{}=everything", key.replace('_', "-"));
            let err = Wrapper::try_parse_from(["serve", &flag])
                .unwrap_err()
                .to_string();
            let err_file = format!(
                "{:#}",
                resolve(&format!("{key} = \"everything\"\n")).unwrap_err()
            );
            for name in &names {
                assert!(err.contains(name.as_str()), "{key}: {err}");
                assert!(err_file.contains(&format!("`{name}`")), "{key}: {err_file}");
            }
            assert!(err_file.contains(key), "{key}: {err_file}");
        }
        assert_eq!(
            enums, 4,
            "embedder, search_default_mode, trace_commit, contain_on_leak"
        );
    }

    #[test]
    fn defaults_come_from_the_owning_crates() {
        let s = ServeArgs::default().resolve().unwrap();
        let limits = bulkhead_server::ServerLimits::default();
        assert_eq!(s.body_bytes_max, limits.body_bytes_max);
        assert_eq!(s.request_timeout, limits.request_timeout);
        let timeouts = bulkhead_gateway::Timeouts::default();
        assert_eq!(s.gateway.timeouts.total, timeouts.total);
        assert_eq!(
            s.retrieval.chunker,
            bulkhead_index::ChunkerConfig::default()
        );
        assert_eq!(
            s.alerts.anomaly,
            bulkhead_server::anomaly::AnomalySettings::default()
        );
        assert_eq!(s.guard_prompt_window_secs, 3600);
        assert_eq!(s.alerts.auth_failure_burst, 20);
        assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 7700)));
        for bad in [0, 30 * 86_400 + 1] {
            let err = ServeArgs {
                guard_prompt_window_secs: Some(bad),
                ..ServeArgs::default()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("guard_prompt_window_secs (--guard-prompt-window-secs, BULKHEAD_GUARD_PROMPT_WINDOW_SECS) must be between 1 and 2592000"),
                "{err}"
            );
        }
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
    fn embedders_serve_one_region_each_with_one_vector_length() {
        let dir = tempfile::tempdir().unwrap();
        let resolve = |toml: &str, args: ServeArgs| {
            let file = dir.path().join("bulkhead.toml");
            std::fs::write(&file, toml).unwrap();
            ServeArgs {
                config: Some(file),
                ..args
            }
            .resolve()
        };
        let http = |url: Option<&str>, region: Option<&str>| ServeArgs {
            embedder: Some(Embedder::Http),
            embedder_url: url.map(str::to_owned),
            embedder_model: url.map(|_| "m".to_owned()),
            embedder_dimensions: Some(16),
            embedder_region: region.map(str::to_owned),
            ..ServeArgs::default()
        };
        let table = |region: &str, dims: &str| {
            format!(
                "[[embedders]]\nregion = \"{region}\"\nbase_url = \"http://{region}:1/v1\"\nmodel = \"m\"\n{dims}"
            )
        };
        // Tables and the flat embedder together; a table without dimensions
        // takes embedder_dimensions.
        let file = format!(
            "{}{}",
            table("eu-west", "dimensions = 16\n"),
            table("us-east", "")
        );
        let s = resolve(&file, http(Some("http://home:1/v1"), None)).unwrap();
        let EmbedderSetting::Http(list) = &s.retrieval.embedder else {
            panic!("http embedders: {:?}", s.retrieval.embedder);
        };
        let got: Vec<(&str, &str, usize)> = list
            .iter()
            .map(|e| {
                (
                    e.region.as_str(),
                    e.config.base_url.as_str(),
                    e.config.dimensions,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("eu-west", "http://eu-west:1/v1", 16),
                ("us-east", "http://us-east:1/v1", 16),
                ("default", "http://home:1/v1", 16),
            ],
            "the flat embedder serves the default region unless embedder_region names one"
        );
        assert_eq!(s.retrieval.default_mode, bulkhead_index::SearchMode::Hybrid);
        let s = resolve("", http(Some("http://x:1/v1"), Some("eu-west"))).unwrap();
        let EmbedderSetting::Http(list) = &s.retrieval.embedder else {
            panic!("an http embedder");
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].region.as_str(), "eu-west");
        // The hashed embedder serves every region: no region to give it.
        let hashed = resolve("", ServeArgs::default()).unwrap();
        assert!(matches!(
            hashed.retrieval.embedder,
            EmbedderSetting::Hashed { dimensions: 256 }
        ));
        for (toml, args, needle) in [
            (
                format!("{}{}", table("eu", ""), table("eu", "")),
                http(None, None),
                "embedders[1] (\"eu\"): region eu already has an embedder (embedders[0] (\"eu\")); \
                 one embedder serves each region",
            ),
            (
                table("default", ""),
                http(Some("http://x:1/v1"), None),
                "embedder_url: region default already has an embedder (embedders[0] (\"default\"))",
            ),
            (
                format!("{}{}", table("eu", ""), table("us", "dimensions = 32\n")),
                http(None, None),
                "embedders[1] (\"us\"): dimensions 32 differ from embedders[0] (\"eu\")'s 16; \
                 all embedders of a server share one vector length",
            ),
            (
                String::new(),
                http(None, None),
                "embedder = \"http\" needs embedder_url (an OpenAI-compatible base URL ending in /v1) \
                 or [[embedders]] tables",
            ),
            (
                table("eu", ""),
                ServeArgs::default(),
                "[[embedders]] tables are HTTP embedders; set embedder = \"http\"",
            ),
            (
                String::new(),
                ServeArgs {
                    embedder_region: Some("eu".into()),
                    ..ServeArgs::default()
                },
                "embedder_region names the region of the embedder at embedder_url",
            ),
            (
                table("EU", ""),
                http(None, None),
                "embedders[0] (\"EU\"): region \"EU\": must be lowercase",
            ),
            (
                table("eu", "api_key = \"a\"\napi_key_env = \"B\"\n"),
                http(None, None),
                "embedders[0] (\"eu\"): set api_key or api_key_env, not both",
            ),
            (
                table("eu", ""),
                ServeArgs {
                    embedder_dimensions: None,
                    ..http(None, None)
                },
                "embedders[0] (\"eu\"): needs dimensions",
            ),
            (
                table("eu", "url = \"x\"\n"),
                http(None, None),
                "unknown field `url`",
            ),
        ] {
            let err = format!("{:#}", resolve(&toml, args).unwrap_err());
            assert!(err.contains(needle), "{toml}: {err}");
        }
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
            store: Some("postgres://u:secret@db/bulkhead".parse().unwrap()),
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
