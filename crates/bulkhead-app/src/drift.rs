//! Configuration drift: the effective isolation policy — every compliance pack,
//! the upstreams and where they may send data, the guard's containment and the
//! alert thresholds — as one canonical JSON document with a SHA-256 hash, checked
//! against the baseline an operator approved.
//!
//! A change an operator did not approve (a pack file edited on disk, an upstream
//! moved to another region, containment switched off) raises `config_drift` at
//! start and on every check; approving makes the current policy the baseline and
//! is itself an audited admin action. The document holds names, regions, models
//! and switches — never credentials or URLs with secrets in them.
//! Must never: approve by itself, except the very first time a store is started
//! (there is nothing to compare with; the start logs the hash it recorded).

use bulkhead_audit::Attr;
use bulkhead_types::LogId;
use serde_json::{Value, json};

use crate::error::AppResult;
use crate::gateway::GatewayState;
use crate::kinds::{AlertKind, EventKind, Severity};
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// What the policy document records of the model gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPolicy {
    pub upstreams: Vec<UpstreamPolicy>,
    pub plant_canaries: bool,
    /// `durable` or `background`.
    pub trace_commit: &'static str,
    pub trace_ttl_secs: Option<u64>,
}

/// One upstream as the policy document records it: names, region, models and
/// switches; never its URL or credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    pub name: String,
    /// `http` or `builtin`.
    pub kind: &'static str,
    pub region: Option<String>,
    pub models: Vec<String>,
    pub cache_salt: bool,
    pub prompt_cache_key: bool,
}

/// The stored baseline: the approved document, canonical JSON.
const BASELINE_META: &str = "policy_baseline.v1";

/// The effective policy, as a JSON document with sorted keys.
pub fn effective_policy(app: &Services) -> Value {
    let gateway = &gateway_policy(&app.gateway);
    let packs: serde_json::Map<String, Value> = app
        .packs
        .all()
        .map(|p| {
            (
                p.name.to_string(),
                serde_json::to_value(&**p).unwrap_or_default(),
            )
        })
        .collect();
    let upstreams: Vec<Value> = gateway
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "kind": u.kind,
                "region": u.region,
                "models": u.models,
                "cache_salt": u.cache_salt,
                "prompt_cache_key": u.prompt_cache_key,
            })
        })
        .collect();
    let anomaly = app.alerts.baselines.settings();
    let mut policy = json!({
        "packs": packs,
        "upstreams": upstreams,
        "gateway": {
            "plant_canaries": gateway.plant_canaries,
            "trace_commit": gateway.trace_commit,
            "trace_ttl_secs": gateway.trace_ttl_secs,
        },
        "containment": {
            "contain_on_leak": app.alerts.contain_on_leak.as_str(),
        },
        "alerts": {
            "auth_failure_burst": app.alerts.burst_threshold(),
            "not_found_burst": app.alerts.not_found_threshold(),
            "anomaly_alpha": anomaly.alpha,
            "anomaly_sigma": anomaly.sigma,
            "anomaly_min_requests_per_min": anomaly.min_requests_per_min,
            "anomaly_warmup_minutes": anomaly.warmup_minutes,
        },
    });
    // The server's default quotas, once any is set (a deployment that sets none
    // keeps the hash it had before quotas existed).
    let quotas = app.quotas.defaults();
    if quotas != bulkhead_api::quotas::Quotas::default() {
        policy["quotas"] = serde_json::to_value(quotas).unwrap_or_default();
    }
    policy
}

fn canonical(value: &Value) -> Vec<u8> {
    // Floats are allowed here (thresholds); the ledger's canonical form refuses
    // them, so sort keys through serde_json's ordered map and print compactly.
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

fn hash(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        bulkhead_types::hex_lower(&bulkhead_crypto::sha256(bytes))
    )
}

/// Where the effective policy stands against the approved baseline (the wire
/// type: the policy document is JSON by nature).
pub use bulkhead_api::admin_views::DriftStatus;

/// Compares the effective policy with the stored baseline. The first call on a
/// fresh store makes the current policy the baseline.
pub async fn status(app: &Services) -> AppResult<DriftStatus> {
    let effective = effective_policy(app);
    let bytes = canonical(&effective);
    let stored = app
        .vault
        .store()
        .get_or_init_meta(BASELINE_META, bytes.clone())
        .await?;
    let approved: Value = serde_json::from_slice(&stored).unwrap_or(Value::Null);
    Ok(DriftStatus {
        hash: hash(&bytes),
        approved_hash: hash(&stored),
        drift: stored != bytes,
        changed: changed_sections(&approved, &effective),
        effective,
    })
}

/// The names of what differs: `packs.gdpr`, `upstreams.vllm-eu`, `containment`.
fn changed_sections(approved: &Value, effective: &Value) -> Vec<String> {
    let mut changed = Vec::new();
    let empty = serde_json::Map::new();
    let a = approved.as_object().unwrap_or(&empty);
    let e = effective.as_object().unwrap_or(&empty);
    let mut sections: Vec<&String> = a.keys().chain(e.keys()).collect();
    sections.sort();
    sections.dedup();
    for section in sections {
        let (old, new) = (a.get(section), e.get(section));
        if old == new {
            continue;
        }
        let named = |v: Option<&Value>| -> Vec<(String, Value)> {
            match v {
                Some(Value::Object(m)) if section == "packs" => {
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                }
                Some(Value::Array(items)) if section == "upstreams" => items
                    .iter()
                    .map(|u| (u["name"].as_str().unwrap_or("?").to_owned(), u.clone()))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let (olds, news) = (named(old), named(new));
        if olds.is_empty() && news.is_empty() {
            changed.push(section.clone());
            continue;
        }
        let mut names: Vec<&String> = olds.iter().chain(news.iter()).map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        for name in names {
            let o = olds.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let n = news.iter().find(|(n2, _)| n2 == name).map(|(_, v)| v);
            if o != n {
                changed.push(format!("{section}.{name}"));
            }
        }
    }
    changed
}

/// Checks for drift and raises `config_drift` if the policy differs from the
/// approved baseline. Called at start; returns the status.
pub async fn check(app: &Services) -> AppResult<DriftStatus> {
    let status = status(app).await?;
    let rid = RequestId::internal("drift-check");
    if status.drift {
        let alert = crate::alerts::new_alert(
            AlertKind::ConfigDrift,
            Severity::Warning,
            None,
            format!(
                "the effective isolation policy ({}) differs from the approved baseline ({}) in: {}; \
                 if the change was intended, approve it with `bulkhead config approve`, otherwise restore the configuration",
                status.hash,
                status.approved_hash,
                status.changed.join(", ")
            ),
            app.vault.now().rfc3339(),
        );
        app.alerts.raise(app, &rid, alert).await;
    } else {
        tracing::info!(policy = %status.hash, "the effective isolation policy matches the approved baseline");
    }
    Ok(status)
}

/// Makes the effective policy the approved baseline; logged as
/// `config.approve` in the operator log with both hashes. Returns the status
/// from before the approval.
pub async fn approve(app: &Services, rid: &RequestId) -> AppResult<DriftStatus> {
    let before = status(app).await?;
    let bytes = canonical(&before.effective);
    app.vault.store().put_meta(BASELINE_META, bytes).await?;
    Trail::admin(app, EventKind::ConfigApprove, rid)
        .attr("previous", Attr::Text(before.approved_hash.clone()))
        .attr("approved", Attr::Text(before.hash.clone()))
        .attr("changed", Attr::Text(before.changed.join(",")))
        .record(LogId::Operator)
        .await?;
    tracing::info!(policy = %before.hash, "the effective isolation policy is now the approved baseline");
    Ok(before)
}

/// What the policy document records of this gateway.
pub fn gateway_policy(gw: &GatewayState) -> GatewayPolicy {
    let upstreams = gw
        .gateway
        .upstreams()
        .map(|u| {
            let c = &u.config;
            UpstreamPolicy {
                name: c.name.clone(),
                kind: match c.kind {
                    bulkhead_gateway::UpstreamKind::Http { .. } => "http",
                    _ => "builtin",
                },
                region: c.region.as_ref().map(ToString::to_string),
                models: c.models.clone(),
                cache_salt: c.cache_salt,
                prompt_cache_key: c.prompt_cache_key,
            }
        })
        .collect();
    GatewayPolicy {
        upstreams,
        plant_canaries: gw.plant_canaries,
        trace_commit: gw.trace_commit.as_str(),
        trace_ttl_secs: gw.trace_ttl_secs,
    }
}
