//! Fair sharing (capability 18): per-tenant and per-key request rates and
//! concurrency, model-token budgets (reserved before a call, settled from the
//! upstream's `usage` after), an embedding budget, and storage quotas (enforced
//! by the vault's admission gate on every write, whatever the path).
//!
//! Each tenant's meters sit behind one lock, so a check and its spend are one
//! step: a burst of concurrent requests can never overspend, on this server.
//! Several replicas share a store but not these meters: request and token limits
//! then hold per replica, and the storage ledger is re-read from the store at
//! least every `LEDGER_TTL_MS`, which bounds what a burst spread over replicas
//! can overspend to what they admit in that time. ARCHITECTURE.md says so.
//!
//! Limits come, field by field, from the tenant's own quotas (an operator
//! setting, sealed in the tenant's records), else its pack's, else the server's.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use bulkhead_api::quotas::{Meter, Quotas, UsageResponse};
use bulkhead_types::{ApiKeyId, TenantId};
use bulkhead_vault::{Admission, Admitted, TenantCtx, Vault, VaultError, VaultResult};

use crate::error::{AppError, AppResult};
use crate::packs::Packs;

/// How long a tenant's effective limits are trusted before they are read again
/// (another replica's operator may have changed them). A change made on this
/// replica applies at once.
const LIMITS_TTL_MS: i64 = 5_000;
/// How long a storage ledger is trusted before the store is asked again (rows
/// expire, other replicas write).
const LEDGER_TTL_MS: i64 = 30_000;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// The operator setting that holds a tenant's own quotas.
const SETTING: &str = "quotas";

/// Why a quota refused: the quota's name (the metrics label and the key of
/// `refused` in usage), a detail a client may read, and when a retry can succeed
/// (`None`: waiting does not help).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub quota: &'static str,
    pub detail: String,
    pub retry_after_secs: Option<u64>,
}

impl From<Refusal> for AppError {
    fn from(r: Refusal) -> Self {
        match r.retry_after_secs {
            Some(secs) => AppError::RateLimited {
                detail: r.detail,
                retry_after_secs: secs,
            },
            None => AppError::QuotaExceeded(r.detail),
        }
    }
}

/// Requests admitted over one second, refilled continuously: a token bucket
/// holding at most one second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn full(rate: u32, now_ms: i64) -> Self {
        Self {
            tokens: f64::from(rate),
            at_ms: now_ms,
        }
    }

    /// Tokens now; refills as time passed.
    fn refill(&mut self, rate: u32, now_ms: i64) {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        self.at_ms = now_ms;
    }

    /// Milliseconds until one token is there (0: there is one now).
    fn wait_ms(&self, rate: u32) -> i64 {
        if self.tokens >= 1.0 {
            0
        } else {
            ((1.0 - self.tokens) * 1000.0 / f64::from(rate)).ceil() as i64
        }
    }
}

/// A fixed window (a UTC minute or day): what was used in it.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    index: i64,
    used: u64,
}

impl Window {
    fn used(&mut self, len_ms: i64, now_ms: i64) -> u64 {
        let index = now_ms.div_euclid(len_ms);
        if index != self.index {
            *self = Window { index, used: 0 };
        }
        self.used
    }

    fn add(&mut self, len_ms: i64, now_ms: i64, n: u64) {
        self.used(len_ms, now_ms);
        self.used = self.used.saturating_add(n);
    }

    /// Seconds until the window ends, at least 1.
    fn secs_left(len_ms: i64, now_ms: i64) -> u64 {
        let end = (now_ms.div_euclid(len_ms) + 1) * len_ms;
        (((end - now_ms) + 999) / 1000).max(1) as u64
    }
}

#[derive(Debug, Default)]
struct KeyMeter {
    bucket: Option<Bucket>,
    in_flight: u32,
}

/// Everything a tenant spends that changes per request, behind one lock.
#[derive(Debug, Default)]
struct Live {
    bucket: Option<Bucket>,
    keys: HashMap<ApiKeyId, KeyMeter>,
    in_flight: u32,
    second: Window,
    minute: Window,
    day: Window,
    /// Tokens held by calls in flight; they count against both windows.
    reserved: u64,
    embed_day: Window,
    refused: BTreeMap<&'static str, u64>,
}

impl Live {
    fn refuse(&mut self, quota: &'static str, detail: String, retry_ms: Option<i64>) -> Refusal {
        *self.refused.entry(quota).or_default() += 1;
        Refusal {
            quota,
            detail,
            retry_after_secs: retry_ms.map(|ms| (((ms.max(1)) + 999) / 1000) as u64),
        }
    }
}

/// What a tenant stores, as last read from the store plus what this server
/// admitted since.
#[derive(Debug, Default)]
struct Ledger {
    /// When it was read from the store; `None`: never, or deletions since.
    seeded_at_ms: Option<i64>,
    bytes: u64,
    documents: u64,
}

#[derive(Debug, Default)]
struct TenantMeter {
    live: Mutex<Live>,
    /// Held from a write's admission until it is stored, so that two writes of one
    /// tenant cannot both fit in the space one of them leaves.
    ledger: Arc<tokio::sync::Mutex<Ledger>>,
    /// Set by a deletion: the ledger must be read again.
    stale: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    quotas: Quotas,
    sources: [Source; 9],
    loaded_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Tenant,
    Pack,
    Server,
    None,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Tenant => "tenant",
            Source::Pack => "pack",
            Source::Server => "server",
            Source::None => "none",
        }
    }
}

const FIELDS: [&str; 9] = [
    "requests_per_second",
    "requests_per_second_per_key",
    "concurrent_requests",
    "concurrent_requests_per_key",
    "tokens_per_minute",
    "tokens_per_day",
    "embedding_bytes_per_day",
    "stored_bytes",
    "documents",
];

fn present(q: &Quotas) -> [bool; 9] {
    [
        q.requests_per_second.is_some(),
        q.requests_per_second_per_key.is_some(),
        q.concurrent_requests.is_some(),
        q.concurrent_requests_per_key.is_some(),
        q.tokens_per_minute.is_some(),
        q.tokens_per_day.is_some(),
        q.embedding_bytes_per_day.is_some(),
        q.stored_bytes.is_some(),
        q.documents.is_some(),
    ]
}

/// What the server's settings say, replaceable while the governor is shared.
#[derive(Debug, Clone)]
struct Settings {
    packs: Arc<Packs>,
    defaults: Quotas,
    /// Completion tokens reserved for a call that sets no `max_tokens` while a
    /// token budget applies (it is also sent upstream as the call's cap).
    completion_reserve: u64,
}

/// Completion tokens reserved for a call without `max_tokens` under a budget,
/// unless the settings say otherwise.
pub const COMPLETION_RESERVE_DEFAULT: u64 = 4096;

/// The meters of every tenant this server has seen, and the limits they answer to.
#[derive(Debug)]
pub struct Governor {
    vault: Weak<Vault>,
    settings: Mutex<Settings>,
    meters: Mutex<HashMap<TenantId, Arc<TenantMeter>>>,
    limits: Mutex<HashMap<TenantId, Limits>>,
}

impl Governor {
    /// A governor over the vault's tenants, with the server's default quotas.
    /// The vault's storage admission is set to it.
    pub fn install(vault: &Arc<Vault>, packs: Arc<Packs>) -> Arc<Self> {
        let me = Arc::new(Self {
            vault: Arc::downgrade(vault),
            settings: Mutex::new(Settings {
                packs,
                defaults: Quotas::default(),
                completion_reserve: COMPLETION_RESERVE_DEFAULT,
            }),
            meters: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
        });
        vault.set_admission(me.clone());
        me
    }

    /// The packs whose quotas apply (the application replaces its packs).
    pub fn set_packs(&self, packs: Arc<Packs>) {
        self.settings().packs = packs;
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The server's default quotas and completion reserve.
    pub fn set_defaults(&self, defaults: Quotas, completion_reserve: u64) -> AppResult<()> {
        defaults
            .validate()
            .map_err(|e| AppError::Invalid(format!("quotas.{e}")))?;
        {
            let mut settings = self.settings();
            settings.defaults = defaults;
            settings.completion_reserve = completion_reserve.max(1);
        }
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// The server's default quotas.
    pub fn defaults(&self) -> Quotas {
        self.settings().defaults
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn vault(&self) -> AppResult<Arc<Vault>> {
        self.vault
            .upgrade()
            .ok_or_else(|| AppError::unavailable("the server is shutting down"))
    }

    fn meter(&self, tenant: &TenantId) -> Arc<TenantMeter> {
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(meters.entry(tenant.clone()).or_default())
    }

    fn now_ms(&self) -> i64 {
        self.vault.upgrade().map_or(0, |v| v.now().0)
    }

    /// The tenant's effective limits (cached for `LIMITS_TTL_MS`).
    async fn limits(&self, tenant: &TenantId) -> AppResult<Limits> {
        let now = self.now_ms();
        if let Some(l) = self
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .filter(|l| now - l.loaded_ms < LIMITS_TTL_MS)
        {
            return Ok(*l);
        }
        let vault = self.vault()?;
        let row = vault.tenant(tenant).await?;
        let own = self.own_quotas(&vault, tenant).await?;
        let Settings {
            packs, defaults, ..
        } = self.settings().clone();
        let pack = packs.for_tenant(&row.policy).quotas;
        let quotas = own.or(pack).or(defaults);
        let (o, p, s) = (present(&own), present(&pack), present(&defaults));
        let sources = std::array::from_fn(|i| match (o[i], p[i], s[i]) {
            (true, _, _) => Source::Tenant,
            (_, true, _) => Source::Pack,
            (_, _, true) => Source::Server,
            _ => Source::None,
        });
        let limits = Limits {
            quotas,
            sources,
            loaded_ms: now,
        };
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.clone(), limits);
        Ok(limits)
    }

    async fn own_quotas(&self, vault: &Vault, tenant: &TenantId) -> AppResult<Quotas> {
        match vault.tenant_setting(tenant, SETTING).await? {
            None => Ok(Quotas::default()),
            Some(body) => serde_json::from_slice(body.as_slice()).map_err(|e| {
                tracing::error!(tenant = %tenant, error = %e, "a tenant's stored quotas do not parse");
                AppError::Internal
            }),
        }
    }

    /// The tenant's own quotas as the operator set them (absent fields: the
    /// pack's or the server's apply).
    pub async fn tenant_quotas(&self, tenant: &TenantId) -> AppResult<Quotas> {
        let vault = self.vault()?;
        vault.tenant(tenant).await?;
        self.own_quotas(&vault, tenant).await
    }

    /// Replaces the tenant's own quotas (all absent: the pack's and server's
    /// apply again). Takes effect on this server at once, on others within
    /// `LIMITS_TTL_MS`.
    pub async fn set_tenant_quotas(&self, tenant: &TenantId, quotas: Quotas) -> AppResult<()> {
        quotas.validate().map_err(AppError::Invalid)?;
        let vault = self.vault()?;
        let body = serde_json::to_vec(&quotas).map_err(|_| AppError::Internal)?;
        let body = (quotas != Quotas::default()).then_some(body);
        vault
            .set_tenant_setting(tenant, SETTING, body.as_deref())
            .await
            .map_err(|e| match e {
                VaultError::Conflict => AppError::Conflict(
                    "another change of this tenant's quotas was made at the same time; retry"
                        .into(),
                ),
                other => other.into(),
            })?;
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
        Ok(())
    }

    /// The tenant's limits are read again on its next request (its pack changed).
    pub fn invalidate(&self, tenant: &TenantId) {
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
    }

    /// A tenant was erased: its meters go.
    pub fn forget(&self, tenant: &TenantId) {
        self.meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
        self.limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
    }

    /// Admits one request of the key, or refuses it (rate or concurrency). The
    /// permit counts the request in flight until it is dropped.
    pub async fn admit_request(&self, ctx: &TenantCtx) -> AppResult<RequestPermit> {
        let limits = self.limits(ctx.tenant()).await?.quotas;
        let meter = self.meter(ctx.tenant());
        let now = self.now_ms();
        {
            let mut live = meter.live.lock().unwrap_or_else(|e| e.into_inner());
            let live = &mut *live;
            check_request(live, &limits, ctx.key_id(), now)?;
            // The check refilled the buckets that apply; each gives one token.
            if let (Some(_), Some(b)) = (limits.requests_per_second, &mut live.bucket) {
                b.tokens -= 1.0;
            }
            let key = live.keys.entry(ctx.key_id().clone()).or_default();
            if let (Some(_), Some(b)) = (limits.requests_per_second_per_key, &mut key.bucket) {
                b.tokens -= 1.0;
            }
            key.in_flight += 1;
            live.in_flight += 1;
            live.second.add(1000, now, 1);
            prune_keys(&mut live.keys, &limits, now);
        }
        Ok(RequestPermit {
            meter,
            key: ctx.key_id().clone(),
        })
    }

    /// Reserves model tokens for one call before it is made: `prompt_estimate()` (an
    /// upper bound of the prompt's tokens, computed only when a budget applies)
    /// plus `choices` × the completion cap.
    /// Without a budget the grant only records what is used. With one, a call
    /// that sets no cap gets `completion_reserve` (or what is left, if less) as
    /// its cap, which the caller sends upstream, so the budget cannot be
    /// overspent by a long answer.
    pub async fn reserve_tokens(
        &self,
        tenant: &TenantId,
        prompt_estimate: impl FnOnce() -> u64,
        choices: u32,
        requested_cap: Option<u64>,
    ) -> AppResult<TokenGrant> {
        let limits = self.limits(tenant).await?.quotas;
        if limits.tokens_per_minute.is_none() && limits.tokens_per_day.is_none() {
            // No budget: nothing to reserve; the grant only records what is used.
            return Ok(TokenGrant {
                meter: Some(self.meter(tenant)),
                vault: self.vault.clone(),
                reserved: 0,
                cap: None,
            });
        }
        let prompt_estimate = prompt_estimate();
        let meter = self.meter(tenant);
        let now = self.now_ms();
        let choices = u64::from(choices.max(1));
        let mut live = meter.live.lock().unwrap_or_else(|e| e.into_inner());
        let budgets = [
            ("tokens_per_minute", limits.tokens_per_minute, MINUTE_MS),
            ("tokens_per_day", limits.tokens_per_day, DAY_MS),
        ];
        // The tightest budget: what is left of it, its name, its window.
        let mut tightest: Option<(u64, &'static str, i64, u64)> = None;
        for (name, limit, len) in budgets {
            let Some(limit) = limit else { continue };
            let used = if len == MINUTE_MS {
                live.minute.used(len, now)
            } else {
                live.day.used(len, now)
            };
            let left = limit.saturating_sub(used).saturating_sub(live.reserved);
            if tightest.is_none_or(|(l, ..)| left < l) {
                tightest = Some((left, name, len, limit));
            }
        }
        let Some((left, name, len, limit)) = tightest else {
            drop(live);
            return Ok(TokenGrant {
                meter: Some(meter),
                vault: self.vault.clone(),
                reserved: 0,
                cap: None,
            });
        };
        let cap = requested_cap
            .unwrap_or(self.settings().completion_reserve)
            .max(1);
        let need = prompt_estimate.saturating_add(choices.saturating_mul(cap));
        let cap = if need <= left {
            cap
        } else if requested_cap.is_none() && left >= prompt_estimate.saturating_add(choices) {
            (left - prompt_estimate) / choices
        } else {
            let whole = prompt_estimate.saturating_add(choices) > limit;
            let detail = if whole {
                format!(
                    "the call needs up to {need} tokens ({prompt_estimate} for the prompt, at most; {cap} per answer), more than the whole {name} budget of {limit}; send a shorter prompt or a lower max_tokens"
                )
            } else {
                format!(
                    "{name}: {left} of {limit} tokens left in this window, and the call may need {need} ({prompt_estimate} for the prompt, at most; {cap} per answer); retry later or lower max_tokens"
                )
            };
            let retry = (!whole).then(|| Window::secs_left(len, now) as i64 * 1000);
            return Err(live.refuse(name, detail, retry).into());
        };
        let reserved = prompt_estimate.saturating_add(choices.saturating_mul(cap));
        live.reserved = live.reserved.saturating_add(reserved);
        drop(live);
        Ok(TokenGrant {
            meter: Some(meter),
            vault: self.vault.clone(),
            reserved,
            cap: Some(cap),
        })
    }

    /// Spends `bytes` of the tenant's embedding budget, or refuses before
    /// anything is sent to an embedder.
    pub async fn spend_embedding(&self, tenant: &TenantId, bytes: u64) -> AppResult<()> {
        let limits = self.limits(tenant).await?.quotas;
        let meter = self.meter(tenant);
        let now = self.now_ms();
        let mut live = meter.live.lock().unwrap_or_else(|e| e.into_inner());
        let used = live.embed_day.used(DAY_MS, now);
        if let Some(limit) = limits.embedding_bytes_per_day
            && used.saturating_add(bytes) > limit
        {
            let whole = bytes > limit;
            let detail = format!(
                "embedding_bytes_per_day: {used} of {limit} bytes embedded today; this needs {bytes} more{}",
                if whole {
                    " (more than the whole budget)"
                } else {
                    "; retry tomorrow (UTC) or ask the operator for more"
                }
            );
            let retry = (!whole).then(|| Window::secs_left(DAY_MS, now) as i64 * 1000);
            return Err(live.refuse("embedding_bytes_per_day", detail, retry).into());
        }
        live.embed_day.add(DAY_MS, now, bytes);
        Ok(())
    }

    /// What the tenant has used against its limits.
    pub async fn usage(&self, tenant: &TenantId) -> AppResult<UsageResponse> {
        let limits = self.limits(tenant).await?;
        let q = limits.quotas;
        let meter = self.meter(tenant);
        let (documents, bytes) = {
            let vault = self.vault()?;
            let mut ledger = meter.ledger.lock().await;
            self.seed(&vault, tenant, &meter, &mut ledger).await?;
            (ledger.documents, ledger.bytes)
        };
        let now = self.now_ms();
        let mut live = meter.live.lock().unwrap_or_else(|e| e.into_inner());
        let reserved = live.reserved;
        Ok(UsageResponse {
            tenant_id: tenant.to_string(),
            concurrent_requests: Meter {
                used: u64::from(live.in_flight),
                limit: q.concurrent_requests.map(u64::from),
            },
            requests_this_second: Meter {
                used: live.second.used(1000, now),
                limit: q.requests_per_second.map(u64::from),
            },
            tokens_this_minute: Meter {
                used: live.minute.used(MINUTE_MS, now) + reserved,
                limit: q.tokens_per_minute,
            },
            tokens_today: Meter {
                used: live.day.used(DAY_MS, now) + reserved,
                limit: q.tokens_per_day,
            },
            tokens_reserved: reserved,
            embedding_bytes_today: Meter {
                used: live.embed_day.used(DAY_MS, now),
                limit: q.embedding_bytes_per_day,
            },
            stored_bytes: Meter {
                used: bytes,
                limit: q.stored_bytes,
            },
            documents: Meter {
                used: documents,
                limit: q.documents,
            },
            refused: live
                .refused
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            quotas: q,
            sources: FIELDS
                .iter()
                .zip(limits.sources)
                .map(|(f, s)| ((*f).to_owned(), s.as_str().to_owned()))
                .collect(),
        })
    }

    /// Refusals per quota since start, over every tenant (for the metrics).
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        let meters: Vec<_> = self
            .meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out = BTreeMap::new();
        for m in meters {
            let live = m.live.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in &live.refused {
                *out.entry(*k).or_default() += v;
            }
        }
        out
    }

    /// Reads the ledger from the store if it was never read, is older than
    /// `LEDGER_TTL_MS`, or rows were deleted since.
    async fn seed(
        &self,
        vault: &Vault,
        tenant: &TenantId,
        meter: &TenantMeter,
        ledger: &mut Ledger,
    ) -> VaultResult<()> {
        let now = self.now_ms();
        let stale = meter.stale.swap(false, std::sync::atomic::Ordering::AcqRel);
        if !stale && ledger.seeded_at_ms.is_some_and(|t| now - t < LEDGER_TTL_MS) {
            return Ok(());
        }
        let usage = vault.store().tenant_usage(tenant, vault.now()).await?;
        *ledger = Ledger {
            seeded_at_ms: Some(now),
            bytes: usage.bytes,
            documents: usage.documents,
        };
        Ok(())
    }

    async fn admit_storage(
        &self,
        tenant: &TenantId,
        bytes: u64,
        documents: u64,
    ) -> VaultResult<Admitted> {
        let limits = self
            .limits(tenant)
            .await
            .map_err(|e| match e {
                AppError::NotFound => VaultError::NotFound,
                _ => VaultError::Invalid("the tenant's quotas could not be read; retry".into()),
            })?
            .quotas;
        if limits.stored_bytes.is_none() && limits.documents.is_none() {
            return Ok(Admitted::free());
        }
        let vault = self
            .vault
            .upgrade()
            .ok_or(VaultError::Store(bulkhead_store::StoreError::Closed))?;
        let meter = self.meter(tenant);
        let mut ledger = Arc::clone(&meter.ledger).lock_owned().await;
        self.seed(&vault, tenant, &meter, &mut ledger).await?;
        let refusal = |quota: &'static str, detail: String| {
            let mut live = meter.live.lock().unwrap_or_else(|e| e.into_inner());
            *live.refused.entry(quota).or_default() += 1;
            VaultError::QuotaExceeded(detail)
        };
        if let Some(limit) = limits.stored_bytes
            && ledger.bytes.saturating_add(bytes) > limit
        {
            return Err(refusal(
                "stored_bytes",
                format!(
                    "stored_bytes: the tenant stores {} of {limit} bytes and this needs {bytes} more (sealed); delete documents or sessions, or ask the operator for more",
                    ledger.bytes
                ),
            ));
        }
        if let Some(limit) = limits.documents
            && ledger.documents.saturating_add(documents) > limit
        {
            return Err(refusal(
                "documents",
                format!(
                    "documents: the tenant stores {} of {limit} documents; delete some, or ask the operator for more",
                    ledger.documents
                ),
            ));
        }
        // The ledger stays locked until the vault has stored the rows (or failed).
        Ok(Admitted::new(move || {
            ledger.bytes = ledger.bytes.saturating_add(bytes);
            ledger.documents = ledger.documents.saturating_add(documents);
        }))
    }
}

fn check_request(
    live: &mut Live,
    limits: &Quotas,
    key_id: &ApiKeyId,
    now: i64,
) -> Result<(), Refusal> {
    if let Some(max) = limits.concurrent_requests
        && live.in_flight >= max
    {
        let detail = format!(
            "concurrent_requests: {max} requests of this tenant are in flight; retry when one ends"
        );
        return Err(live.refuse("concurrent_requests", detail, Some(1000)));
    }
    if let Some(rate) = limits.requests_per_second {
        let b = live.bucket.get_or_insert_with(|| Bucket::full(rate, now));
        b.refill(rate, now);
        let wait = b.wait_ms(rate);
        if wait > 0 {
            let detail = format!("requests_per_second: this tenant may send {rate} a second");
            return Err(live.refuse("requests_per_second", detail, Some(wait)));
        }
    }
    let key = live.keys.entry(key_id.clone()).or_default();
    if let Some(max) = limits.concurrent_requests_per_key
        && key.in_flight >= max
    {
        let detail = format!(
            "concurrent_requests_per_key: {max} requests of this key are in flight; retry when one ends"
        );
        return Err(live.refuse("concurrent_requests_per_key", detail, Some(1000)));
    }
    if let Some(rate) = limits.requests_per_second_per_key {
        let b = key.bucket.get_or_insert_with(|| Bucket::full(rate, now));
        b.refill(rate, now);
        let wait = b.wait_ms(rate);
        if wait > 0 {
            let detail = format!("requests_per_second_per_key: this key may send {rate} a second");
            return Err(live.refuse("requests_per_second_per_key", detail, Some(wait)));
        }
    }
    Ok(())
}

/// Drops meters of idle keys once there are many (a tenant with thousands of
/// keys), keeping those in flight or with a bucket still refilling.
fn prune_keys(keys: &mut HashMap<ApiKeyId, KeyMeter>, limits: &Quotas, now: i64) {
    if keys.len() <= 256 {
        return;
    }
    keys.retain(|_, k| {
        k.in_flight > 0
            || match (limits.requests_per_second_per_key, &mut k.bucket) {
                (Some(rate), Some(b)) => {
                    b.refill(rate, now);
                    b.tokens < f64::from(rate)
                }
                _ => false,
            }
    });
}

impl Admission for Governor {
    fn admit<'a>(
        &'a self,
        tenant: &'a TenantId,
        bytes: u64,
        documents: u64,
    ) -> Pin<Box<dyn Future<Output = VaultResult<Admitted>> + Send + 'a>> {
        Box::pin(self.admit_storage(tenant, bytes, documents))
    }

    fn released(&self, tenant: &TenantId) {
        let meter = self
            .meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned();
        if let Some(meter) = meter {
            meter
                .stale
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// One request in flight; dropping it ends it.
#[derive(Debug)]
pub struct RequestPermit {
    meter: Arc<TenantMeter>,
    key: ApiKeyId,
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        let mut live = self.meter.live.lock().unwrap_or_else(|e| e.into_inner());
        live.in_flight = live.in_flight.saturating_sub(1);
        if let Some(k) = live.keys.get_mut(&self.key) {
            k.in_flight = k.in_flight.saturating_sub(1);
        }
    }
}

/// Tokens reserved for one model call. Settle it with the upstream's reported
/// `total_tokens`; dropped unsettled (a client gone mid-stream, a panic), it
/// spends the whole reservation, since the upstream may have.
#[derive(Debug)]
pub struct TokenGrant {
    meter: Option<Arc<TenantMeter>>,
    /// The clock the windows count by.
    vault: Weak<Vault>,
    reserved: u64,
    /// The completion cap to send upstream (`max_tokens`); `None`: no budget.
    pub cap: Option<u64>,
}

impl TokenGrant {
    /// A grant for nothing (a placeholder once the real one is settled).
    pub fn none() -> Self {
        Self {
            meter: None,
            vault: Weak::new(),
            reserved: 0,
            cap: None,
        }
    }

    /// Spends what the call used (`None`: the upstream did not say, so the
    /// reservation) and releases the reservation.
    pub fn settle(mut self, used: Option<u64>) {
        self.finish(used.unwrap_or(self.reserved));
    }

    /// The call never reached the model: nothing is spent.
    pub fn release(mut self) {
        self.finish(0);
    }

    fn finish(&mut self, used: u64) {
        let Some(meter) = self.meter.take() else {
            return;
        };
        let now = self.vault.upgrade().map_or(0, |v| v.now().0);
        let mut live = meter.live.lock().unwrap_or_else(|e| e.into_inner());
        live.reserved = live.reserved.saturating_sub(self.reserved);
        live.minute.add(MINUTE_MS, now, used);
        live.day.add(DAY_MS, now, used);
    }
}

impl Drop for TokenGrant {
    fn drop(&mut self) {
        let reserved = self.reserved;
        self.finish(reserved);
    }
}

/// The tokens an upstream's `usage` reports: `total_tokens`, else prompt plus
/// completion; `None` when it reports neither.
pub fn reported_tokens(usage: Option<&serde_json::Value>) -> Option<u64> {
    let usage = usage?;
    usage
        .get("total_tokens")
        .and_then(serde_json::Value::as_u64)
        .or_else(|| {
            let part = |k: &str| usage.get(k).and_then(serde_json::Value::as_u64);
            match (part("prompt_tokens"), part("completion_tokens")) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
            }
        })
}
