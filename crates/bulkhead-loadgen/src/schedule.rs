//! When each request is due: request `i` is due `i / rate` seconds after the start,
//! whatever happened to the requests before it. The schedule never looks at
//! responses; that is what makes the generator open-loop.

use std::time::Duration;

/// The most requests one run may schedule, warmup included. Every measured request
/// keeps a few `u32`s until the report, so this bounds the generator's memory
/// (about 120 MB at the limit).
pub const REQUESTS_MAX: u64 = 10_000_000;

/// The lowest rate accepted, in requests per second: one request per 1,000 s.
/// Keeps every due time of a run far inside what a `Duration` holds.
pub const RATE_MIN: f64 = 0.001;

/// The highest rate accepted, in requests per second.
pub const RATE_MAX: f64 = 1_000_000.0;

/// A fixed-rate schedule: a warmup phase whose requests are sent but not recorded,
/// then the measured phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate_per_sec: f64,
    /// Requests `0..warmup_count` are warmup.
    warmup_count: u64,
    /// Requests `warmup_count..end_count` are measured.
    end_count: u64,
    duration: Duration,
}

/// A schedule that cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("rate must be {RATE_MIN} to {RATE_MAX} requests/s")]
    Rate,
    #[error("duration must be above 0")]
    Duration,
    #[error("rate × (warmup + duration) is {0} requests; at most {REQUESTS_MAX} per run")]
    TooMany(u64),
}

impl Schedule {
    pub fn new(
        rate_per_sec: f64,
        warmup: Duration,
        duration: Duration,
    ) -> Result<Self, ScheduleError> {
        if !(RATE_MIN..=RATE_MAX).contains(&rate_per_sec) {
            return Err(ScheduleError::Rate);
        }
        if duration.is_zero() {
            return Err(ScheduleError::Duration);
        }
        let end_estimate = ((warmup + duration).as_secs_f64() * rate_per_sec).ceil();
        if end_estimate > REQUESTS_MAX as f64 {
            return Err(ScheduleError::TooMany(end_estimate as u64));
        }
        let mut s = Self {
            rate_per_sec,
            warmup_count: 0,
            end_count: 0,
            duration,
        };
        s.warmup_count = s.first_due_at_or_after(warmup);
        s.end_count = s.first_due_at_or_after(warmup + duration);
        Ok(s)
    }

    /// The first request due at or after `t`: request i belongs to the phase its due
    /// time falls in. The estimate ceil(t × rate) can be one off in floating point
    /// (0.2 s × 200/s is not exactly 40), so it is settled against `due` itself.
    fn first_due_at_or_after(&self, t: Duration) -> u64 {
        let mut i = (t.as_secs_f64() * self.rate_per_sec).ceil() as u64;
        while i > 0 && self.due(i - 1) >= t {
            i -= 1;
        }
        while self.due(i) < t {
            i += 1;
        }
        i
    }

    pub fn rate_per_sec(&self) -> f64 {
        self.rate_per_sec
    }

    /// The length of the measured phase.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Requests scheduled in all, warmup included.
    pub fn end_count(&self) -> u64 {
        self.end_count
    }

    /// Requests in the measured phase.
    pub fn measured_count(&self) -> u64 {
        self.end_count - self.warmup_count
    }

    /// When the first measured request is due, counted from the start of the run.
    pub fn measured_start(&self) -> Duration {
        self.due(self.warmup_count)
    }

    pub fn is_warmup(&self, i: u64) -> bool {
        i < self.warmup_count
    }

    /// When request `i` is due, counted from the start of the run. Computed from `i`
    /// rather than by adding intervals, so rounding never accumulates into drift.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn counts_split_into_warmup_and_measured() {
        let s = Schedule::new(200.0, secs(2.0), secs(1.0)).unwrap();
        assert_eq!(s.end_count(), 600);
        assert_eq!(s.measured_count(), 200);
        assert!(s.is_warmup(399));
        assert!(!s.is_warmup(400));

        let none = Schedule::new(500.0, Duration::ZERO, secs(20.0)).unwrap();
        assert_eq!(none.measured_count(), 10_000);
        assert!(!none.is_warmup(0));

        // A fractional rate rounds up: requests at 0 s, 3 s and 6 s fall in [0, 7 s).
        let slow = Schedule::new(1.0 / 3.0, Duration::ZERO, secs(7.0)).unwrap();
        assert_eq!(slow.measured_count(), 3);
    }

    #[test]
    fn counts_are_exact_where_floating_point_is_not() {
        // 0.1 and 0.2 s are not exact in binary; the counts still are.
        for (rate, warmup_ms, duration_ms, warmup, measured) in [
            (200.0, 200, 1000, 40, 200),
            (300.0, 100, 700, 30, 210),
            (2000.0, 3000, 20_000, 6000, 40_000),
            (1500.0, 100, 100, 150, 150),
        ] {
            let s = Schedule::new(
                rate,
                Duration::from_millis(warmup_ms),
                Duration::from_millis(duration_ms),
            )
            .unwrap();
            assert_eq!(s.end_count() - s.measured_count(), warmup, "rate {rate}");
            assert_eq!(s.measured_count(), measured, "rate {rate}");
        }
    }

    #[test]
    fn due_times_are_evenly_spaced_without_drift() {
        let s = Schedule::new(2000.0, Duration::ZERO, secs(3600.0)).unwrap();
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_micros(500));
        assert_eq!(s.due(2000), secs(1.0));
        // After an hour of 0.5 ms steps the schedule is still on the nanosecond.
        let last = s.end_count() - 1;
        let expect = Duration::from_nanos(last * 500_000);
        let error = s.due(last).abs_diff(expect);
        assert!(error <= Duration::from_nanos(1), "drift {error:?}");

        let odd = Schedule::new(3.0, Duration::ZERO, secs(1.0)).unwrap();
        assert_eq!(odd.due(1), Duration::from_nanos(333_333_333));
        assert_eq!(odd.due(3), secs(1.0));
    }

    #[test]
    fn the_first_measured_request_is_due_at_the_end_of_warmup() {
        let s = Schedule::new(300.0, secs(1.5), secs(1.0)).unwrap();
        let first = (0..s.end_count()).find(|&i| !s.is_warmup(i)).unwrap();
        assert_eq!(s.due(first), s.measured_start());
        assert!(s.due(first) >= secs(1.5));
        assert!(s.due(first - 1) < secs(1.5));
        let last = s.end_count() - 1;
        assert!(s.due(last) < secs(2.5));
    }

    #[test]
    fn rejects_schedules_that_cannot_run() {
        let d = secs(1.0);
        assert_eq!(
            Schedule::new(0.0, Duration::ZERO, d),
            Err(ScheduleError::Rate)
        );
        assert_eq!(
            Schedule::new(f64::NAN, Duration::ZERO, d),
            Err(ScheduleError::Rate)
        );
        assert_eq!(
            Schedule::new(-5.0, Duration::ZERO, d),
            Err(ScheduleError::Rate)
        );
        assert_eq!(
            Schedule::new(1e-300, Duration::ZERO, d),
            Err(ScheduleError::Rate)
        );
        assert_eq!(
            Schedule::new(100.0, d, Duration::ZERO),
            Err(ScheduleError::Duration)
        );
        assert!(matches!(
            Schedule::new(RATE_MAX, Duration::ZERO, secs(11.0)),
            Err(ScheduleError::TooMany(11_000_000))
        ));
    }
}
