//! Per-tenant traffic baselines: an exponentially weighted moving average (EWMA)
//! of each tenant's authenticated requests per minute, with its variance, and a
//! `traffic_anomaly` alert the moment a minute's count rises past the baseline by
//! more than `sigma` standard deviations.
//!
//! A stolen key being used to pull a tenant's context out shows first as a spike
//! in that tenant's traffic; this is the behavioural counterpart of the output
//! guard's content checks. It counts requests only — no content, no paths.
//! Must never: block or slow a request (an `observe` is a map lookup under a
//! short lock), or grow without bound (at most `TENANTS_MAX` baselines; the
//! longest idle is dropped).

use std::collections::HashMap;
use std::sync::Mutex;

use bulkhead_types::{TenantId, UnixMillis};

/// Baselines kept at most; beyond it the one idle longest is forgotten.
const TENANTS_MAX: usize = 10_000;
/// Idle minutes folded into a baseline at most when a tenant comes back (a long
/// silence is a baseline of zero either way).
const GAP_MINUTES_MAX: i64 = 120;

/// Thresholds, from the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalySettings {
    /// Weight of the newest minute in the EWMA (0 < alpha ≤ 1) [0.1].
    pub alpha: f64,
    /// Standard deviations above the mean that make a minute anomalous [4].
    pub sigma: f64,
    /// A minute below this many requests is never anomalous (small tenants are
    /// bursty) [60].
    pub min_requests_per_min: u64,
    /// Minutes of history before a baseline can alert [10].
    pub warmup_minutes: u32,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            sigma: 4.0,
            min_requests_per_min: 60,
            warmup_minutes: 10,
        }
    }
}

impl AnomalySettings {
    /// Checks the ranges; the error names the setting.
    pub fn validated(self) -> Result<Self, String> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!(
                "anomaly_alpha must be in (0, 1], not {}",
                self.alpha
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(format!(
                "anomaly_sigma must be positive, not {}",
                self.sigma
            ));
        }
        Ok(self)
    }
}

/// What crossed the line.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub tenant: TenantId,
    /// Requests so far in the current minute.
    pub requests: u64,
    /// The baseline's mean and standard deviation, requests per minute.
    pub mean: f64,
    pub stddev: f64,
}

#[derive(Debug, Clone)]
struct Baseline {
    minute: i64,
    count: u64,
    mean: f64,
    var: f64,
    minutes_seen: u32,
    alerted: bool,
}

impl Baseline {
    fn fold(&mut self, x: f64, alpha: f64) {
        if self.minutes_seen == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.minutes_seen = self.minutes_seen.saturating_add(1);
    }

    /// The standard deviation used for the threshold: never below the Poisson
    /// spread of the mean, so a perfectly steady tenant does not alert on +1.
    fn spread(&self) -> f64 {
        self.var.sqrt().max(self.mean.sqrt()).max(1.0)
    }
}

#[derive(Debug)]
pub struct TrafficBaselines {
    settings: AnomalySettings,
    tenants: Mutex<HashMap<TenantId, Baseline>>,
}

impl TrafficBaselines {
    pub fn new(settings: AnomalySettings) -> Self {
        Self {
            settings,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets an erased tenant's baseline.
    pub fn forget(&self, tenant: &TenantId) {
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }

    /// Whether the tenant has a baseline.
    pub fn tracks(&self, tenant: &TenantId) -> bool {
        self.tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(tenant)
    }

    pub fn settings(&self) -> AnomalySettings {
        self.settings
    }

    /// Counts one request of `tenant` at `now`; returns the anomaly the first time
    /// in a minute that the count passes the threshold.
    pub fn observe(&self, tenant: &TenantId, now: UnixMillis) -> Option<Anomaly> {
        let minute = now.0.div_euclid(60_000);
        let s = self.settings;
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if !tenants.contains_key(tenant) && tenants.len() >= TENANTS_MAX {
            let idlest = tenants
                .iter()
                .min_by_key(|(_, b)| b.minute)
                .map(|(t, _)| t.clone());
            if let Some(t) = idlest {
                tenants.remove(&t);
            }
        }
        let b = tenants.entry(tenant.clone()).or_insert(Baseline {
            minute,
            count: 0,
            mean: 0.0,
            var: 0.0,
            minutes_seen: 0,
            alerted: false,
        });
        if minute > b.minute {
            let finished = b.count as f64;
            b.fold(finished, s.alpha);
            for _ in 0..(minute - b.minute - 1).min(GAP_MINUTES_MAX) {
                b.fold(0.0, s.alpha);
            }
            b.minute = minute;
            b.count = 0;
            b.alerted = false;
        }
        b.count += 1;
        let warm = b.minutes_seen >= s.warmup_minutes;
        let threshold = b.mean + s.sigma * b.spread();
        if warm && !b.alerted && b.count >= s.min_requests_per_min && b.count as f64 > threshold {
            b.alerted = true;
            return Some(Anomaly {
                tenant: tenant.clone(),
                requests: b.count,
                mean: b.mean,
                stddev: b.spread(),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("tn_0123456789abcdef01234567").unwrap()
    }

    /// Feeds `per_minute[i]` requests in minute i; returns the minutes that alerted.
    fn run(settings: AnomalySettings, per_minute: &[u64]) -> Vec<usize> {
        let b = TrafficBaselines::new(settings);
        let t = tenant();
        let mut alerted = Vec::new();
        for (m, n) in per_minute.iter().enumerate() {
            for i in 0..*n {
                let at = UnixMillis(m as i64 * 60_000 + (i as i64 % 60_000));
                if b.observe(&t, at).is_some() {
                    alerted.push(m);
                }
            }
        }
        alerted
    }

    #[test]
    fn steady_traffic_never_alerts_and_a_spike_alerts_once_in_its_minute() {
        let s = AnomalySettings::default();
        let mut traffic = vec![100; 30];
        assert_eq!(run(s, &traffic), Vec::<usize>::new(), "steady");
        let noisy: Vec<u64> = (0..30).map(|i| 80 + (i * 37 % 41)).collect();
        assert_eq!(run(s, &noisy), Vec::<usize>::new(), "noisy but normal");
        traffic.push(1000);
        traffic.push(100);
        assert_eq!(
            run(s, &traffic),
            vec![30],
            "one alert, in the spike's minute"
        );
    }

    #[test]
    fn warmup_and_the_floor_keep_small_or_new_tenants_quiet() {
        let s = AnomalySettings::default();
        assert_eq!(
            run(s, &[1, 1, 1, 1000]),
            Vec::<usize>::new(),
            "still warming up"
        );
        let mut small = vec![1; 20];
        small.push(50);
        assert_eq!(
            run(s, &small),
            Vec::<usize>::new(),
            "below min_requests_per_min"
        );
        small.push(200);
        assert_eq!(run(s, &small), vec![21]);
    }

    #[test]
    fn silence_is_folded_in_as_zero_traffic() {
        let s = AnomalySettings {
            min_requests_per_min: 10,
            ..AnomalySettings::default()
        };
        // Busy, then an hour of nothing: the baseline decays toward zero, so a
        // burst of 30 afterwards is far above it.
        let mut t = vec![20; 15];
        t.extend(std::iter::repeat_n(0, 60));
        t.push(30);
        assert_eq!(run(s, &t), vec![75]);
    }

    #[test]
    fn settings_are_range_checked() {
        let bad = AnomalySettings {
            alpha: 0.0,
            ..AnomalySettings::default()
        };
        assert!(bad.validated().unwrap_err().contains("anomaly_alpha"));
        let bad = AnomalySettings {
            sigma: -1.0,
            ..AnomalySettings::default()
        };
        assert!(bad.validated().unwrap_err().contains("anomaly_sigma"));
    }
}
