//! The engine: a ticker thread releases each request at its due time onto the tokio
//! runtime, where it waits for one of `connections` keep-alive connections, is sent,
//! and has its whole body read. Latency runs from the due time to the last body byte,
//! so time spent queued behind a stalled server is counted, not omitted.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc};

use crate::report::Report;
use crate::schedule::Schedule;
use crate::stats::{Distribution, micros};

/// A request that starts more than this after its due time counts as behind
/// schedule: the generator, not the server, was late, and the report says so.
pub const BEHIND_SCHEDULE_AFTER: Duration = Duration::from_millis(1);

/// How much before its due time the ticker wakes for a request. A thread's sleep
/// ends 50–100 µs late on Linux (timer slack, then the runtime thread's wake-up), a
/// systematic lag that would otherwise be half of a fast server's latency. A request
/// that does start early is timed from its actual start, so waking early only
/// jitters the spacing; it never shortens a latency.
pub const WAKE_EARLY: Duration = Duration::from_micros(100);

/// The most connections one run may open.
pub const CONNECTIONS_MAX: usize = 10_000;

/// What every request of a run sends.
#[derive(Debug, Clone)]
pub struct Target {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub schedule: Schedule,
    /// Keep-alive connections, and so the most requests in flight.
    pub connections: usize,
    /// The longest one request may take, waiting for a connection included; a
    /// request over it is an error. With the rate, it bounds the requests queued
    /// behind a stalled server (rate × timeout).
    pub timeout: Duration,
    /// A numeric response header (milliseconds) whose distribution is reported.
    pub header_metric: Option<HeaderName>,
}

/// What the measured requests came to; warmup requests are never recorded.
#[derive(Debug, Default)]
struct Recorder {
    /// Due time to last body byte of each 2xx response, µs.
    latency_us: Vec<u32>,
    /// The header metric of each 2xx response that carried a valid one, µs.
    header_us: Vec<u32>,
    /// Due time to the request's task starting, µs: the generator's own lateness.
    lag_us: Vec<u32>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    header_missing: u64,
    behind_schedule: u64,
    first_error: Option<String>,
    /// When the first and the last measured responses (2xx or not) ended.
    responses_span: Option<(Instant, Instant)>,
}

struct Shared {
    client: Client<HttpConnector, Full<Bytes>>,
    target: Target,
    connections: Semaphore,
    timeout: Duration,
    header_metric: Option<HeaderName>,
    recorder: Mutex<Recorder>,
}

/// A response as far as the report cares.
struct Exchange {
    status: u16,
    header_us: Option<u32>,
}

impl Shared {
    async fn one(&self, due: Instant, record: bool) {
        let started = Instant::now();
        // Early by up to WAKE_EARLY: timed from the actual start, as the server
        // sees it. Late: timed from the due time, so the wait counts.
        let anchor = started.min(due);
        let lag = started.saturating_duration_since(due);
        let outcome = tokio::time::timeout(self.timeout, self.exchange()).await;
        let done = Instant::now();
        let latency = done - anchor;
        if !record {
            return;
        }
        // Held for a few pushes; never across an await.
        let mut r = self.recorder.lock().unwrap_or_else(PoisonError::into_inner);
        r.lag_us.push(micros(lag));
        if lag > BEHIND_SCHEDULE_AFTER {
            r.behind_schedule += 1;
        }
        if matches!(outcome, Ok(Ok(_))) {
            r.responses_span = Some(match r.responses_span {
                Some((first, last)) => (first.min(done), last.max(done)),
                None => (done, done),
            });
        }
        match outcome {
            Ok(Ok(ex)) if (200..300).contains(&ex.status) => {
                r.ok += 1;
                r.latency_us.push(micros(latency));
                match ex.header_us {
                    Some(us) => r.header_us.push(us),
                    None if self.header_metric.is_some() => r.header_missing += 1,
                    None => {}
                }
            }
            Ok(Ok(_)) => r.non_2xx += 1,
            Ok(Err(e)) => {
                r.errors += 1;
                r.first_error.get_or_insert(e);
            }
            Err(_) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("timed out after {:?}", self.timeout));
            }
        }
    }

    async fn exchange(&self) -> Result<Exchange, String> {
        let _permit = self
            .connections
            .acquire()
            .await
            .map_err(|_| "connection limit closed".to_owned())?;
        let mut req = Request::builder()
            .method(self.target.method.clone())
            .uri(self.target.uri.clone())
            .body(Full::new(self.target.body.clone()))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = self.target.headers.clone();
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = resp.status().as_u16();
        let header_us = self.header_metric(resp.headers());
        let mut body = resp.into_body();
        // Drained frame by frame and dropped: nothing is kept, an SSE stream included.
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| error_chain(&e))?;
        }
        Ok(Exchange { status, header_us })
    }

    fn header_metric(&self, headers: &HeaderMap) -> Option<u32> {
        let value = headers.get(self.header_metric.as_ref()?)?;
        let ms: f64 = value.to_str().ok()?.trim().parse().ok()?;
        // A negative, infinite or absurd value is not a latency.
        (ms.is_finite() && (0.0..4_000_000.0).contains(&ms)).then(|| (ms * 1000.0).round() as u32)
    }
}

/// An error and its sources on one line: hyper's top-level errors alone ("client
/// error (Connect)") do not say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Responses per second, from the first measured response to the last: a server
/// that needs 4 s to answer 2 s of requests achieved half the rate, not all of it.
/// The span is at least the measured phase less one interval, so a steady run
/// reports the rate exactly and a burst after a stall cannot report more. One
/// decimal.
fn achieved_rate(responses: u64, schedule: &Schedule, span: Option<(Instant, Instant)>) -> f64 {
    let rate = match span {
        Some((first, last)) if responses >= 2 => {
            let interval = Duration::from_secs_f64(1.0 / schedule.rate_per_sec());
            let floor = schedule.duration().saturating_sub(interval);
            let secs = (last - first).max(floor).as_secs_f64();
            if secs > 0.0 {
                (responses - 1) as f64 / secs
            } else {
                responses as f64 / schedule.duration().as_secs_f64()
            }
        }
        _ => responses as f64 / schedule.duration().as_secs_f64(),
    };
    (rate * 10.0).round() / 10.0
}

/// Runs the schedule to its end, waits for the requests still in flight (at most
/// `timeout`), and reports. Must be called inside a tokio runtime with time and I/O
/// enabled.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(
        (1..=CONNECTIONS_MAX).contains(&config.connections),
        "connections must be 1 to {CONNECTIONS_MAX}"
    );
    let schedule = config.schedule;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // The semaphore keeps at most `connections` requests in flight, so the pool
    // never needs more than that many connections, and they stay open.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.connections)
        .pool_idle_timeout(None)
        .build(connector);
    let measured = usize::try_from(schedule.measured_count()).unwrap_or(usize::MAX);
    let shared = Arc::new(Shared {
        client,
        target: config.target.clone(),
        connections: Semaphore::new(config.connections),
        timeout: config.timeout,
        header_metric: config.header_metric.clone(),
        recorder: Mutex::new(Recorder {
            latency_us: Vec::with_capacity(measured),
            header_us: Vec::with_capacity(if config.header_metric.is_some() {
                measured
            } else {
                0
            }),
            lag_us: Vec::with_capacity(measured),
            ..Recorder::default()
        }),
    });

    // The channel closes once the ticker and every request task have dropped their
    // sender: that is the end of the run, without keeping a handle per request.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let runtime = tokio::runtime::Handle::current();
    let ticker_shared = Arc::clone(&shared);
    // A plain thread sleeps with the kernel's high-resolution timers; tokio's timer
    // wheel has 1 ms ticks, which at 2,000 requests/s would be two intervals late.
    let ticker = std::thread::Builder::new()
        .name("loadgen-ticker".into())
        .spawn(move || {
            let start = Instant::now();
            for i in 0..schedule.end_count() {
                let due = start + schedule.due(i);
                let wake = due.checked_sub(WAKE_EARLY).unwrap_or(due);
                let now = Instant::now();
                if wake > now {
                    std::thread::sleep(wake - now);
                }
                let shared = Arc::clone(&ticker_shared);
                let done = done_tx.clone();
                let record = !schedule.is_warmup(i);
                runtime.spawn(async move {
                    shared.one(due, record).await;
                    drop(done);
                });
            }
        })?;
    // Only closes, never receives: see above.
    let _ = done_rx.recv().await;
    ticker
        .join()
        .map_err(|_| anyhow::anyhow!("the ticker thread panicked"))?;

    let mut r = std::mem::take(
        &mut *shared
            .recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let duration_s = schedule.duration().as_secs_f64();
    let sent = r.ok + r.non_2xx + r.errors;
    debug_assert_eq!(
        sent,
        schedule.measured_count(),
        "every measured request is recorded once"
    );
    let lag = Distribution::from_micros(&mut r.lag_us);
    Ok(Report {
        url: config.target.uri.to_string(),
        method: config.target.method.to_string(),
        rate: schedule.rate_per_sec(),
        duration_s,
        connections: config.connections,
        sent,
        ok: r.ok,
        non_2xx: r.non_2xx,
        errors: r.errors,
        achieved_rate: achieved_rate(r.ok + r.non_2xx, &schedule, r.responses_span),
        behind_schedule: r.behind_schedule,
        latency_ms: Distribution::from_micros(&mut r.latency_us),
        header_metric: config.header_metric.map(|h| h.to_string()),
        header_ms: Distribution::from_micros(&mut r.header_us).map(Into::into),
        header_missing: r.header_missing,
        schedule_lag_ms: lag.map(Into::into),
        first_error: r.first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn achieved_rate_is_the_responses_throughput() {
        let schedule = Schedule::new(100.0, Duration::ZERO, Duration::from_secs(2)).unwrap();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let check = |responses, span, expect: f64| {
            assert_eq!(
                achieved_rate(responses, &schedule, span),
                expect,
                "{span:?}"
            );
        };
        // Steady: 200 responses 10 ms apart, each 21 ms after its due time.
        check(200, Some((at(21), at(1_991))), 100.0);
        // Overloaded: the same 200 answered over 4.8 s.
        check(200, Some((at(20), at(4_800))), 41.6);
        // All held back, then answered at once: no more than the offered rate.
        check(200, Some((at(3_000), at(3_010))), 100.0);
        check(1, Some((at(5), at(5))), 0.5);
        check(0, None, 0.0);
    }
}
