//! A run's result: one JSON line for scripts, a few lines for people.

use std::fmt;

use serde::Serialize;

use crate::stats::Distribution;

/// Everything a run measured. The JSON keys are a contract with
/// `bench/gateway/run.sh`; add keys, never rename them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub url: String,
    pub rate: f64,
    pub duration_s: f64,
    /// Measured requests: `ok + non_2xx + errors`.
    pub sent: u64,
    pub ok: u64,
    pub non_2xx: u64,
    /// Transport errors and timeouts.
    pub errors: u64,
    /// Responses (2xx or not) per second of the measured phase.
    pub achieved_rate: f64,
    /// Due time to last body byte, 2xx responses only.
    pub latency_ms: Option<Distribution>,
    /// The `--header-metric` header's values; `null` without the flag or samples.
    pub header_ms: Option<HeaderPercentiles>,
    /// Requests that started more than `BEHIND_SCHEDULE_AFTER` after their due time.
    /// Non-zero means the generator, not only the server, was late: the latencies
    /// then overstate the server's.
    pub behind_schedule: u64,
    /// Due time to the request's task starting: the generator's own lateness.
    pub schedule_lag_ms: Option<LagPercentiles>,
    pub method: String,
    pub connections: usize,
    pub header_metric: Option<String>,
    /// 2xx responses without a valid `--header-metric` header.
    pub header_missing: u64,
    /// The first transport error, to tell a refused connection from a timeout.
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderPercentiles {
    pub p50: f64,
    pub p99: f64,
}

impl From<Distribution> for HeaderPercentiles {
    fn from(d: Distribution) -> Self {
        Self {
            p50: d.p50,
            p99: d.p99,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagPercentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl From<Distribution> for LagPercentiles {
    fn from(d: Distribution) -> Self {
        Self {
            p50: d.p50,
            p99: d.p99,
            max: d.max,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {}  {}/s for {}s, {} connections",
            self.method, self.url, self.rate, self.duration_s, self.connections
        )?;
        writeln!(
            f,
            "  sent {}  ok {}  non-2xx {}  errors {}  achieved {}/s",
            self.sent, self.ok, self.non_2xx, self.errors, self.achieved_rate
        )?;
        match &self.latency_ms {
            Some(d) => writeln!(
                f,
                "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                d.p50, d.p90, d.p99, d.p999, d.max, d.mean
            )?,
            None => writeln!(f, "  latency ms  no 2xx responses")?,
        }
        if let Some(name) = &self.header_metric {
            match &self.header_ms {
                Some(h) => write!(f, "  {name}  p50 {:.3}  p99 {:.3}", h.p50, h.p99)?,
                None => write!(f, "  {name}  no values")?,
            }
            writeln!(f, "  (missing on {} responses)", self.header_missing)?;
        }
        if let Some(lag) = &self.schedule_lag_ms {
            writeln!(
                f,
                "  schedule lag ms  p50 {:.3}  p99 {:.3}  max {:.3}  behind schedule (>1 ms) {}",
                lag.p50, lag.p99, lag.max, self.behind_schedule
            )?;
        }
        if self.behind_schedule > 0 {
            writeln!(
                f,
                "  warning: the generator was late for {} requests; latencies overstate the server's",
                self.behind_schedule
            )?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "  first error: {e}")?;
        }
        Ok(())
    }
}
