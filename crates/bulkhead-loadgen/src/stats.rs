//! Exact percentiles over every sample, in microseconds. A run keeps at most
//! `REQUESTS_MAX` samples, so sorting them all is cheap next to the run itself and
//! spares a histogram crate and its rounding.

use serde::Serialize;

/// The nearest-rank percentile of sorted samples: the smallest sample such that at
/// least `p` percent of the samples are at or below it. `None` when there are none.
/// `p` counts to a thousandth of a percent.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    debug_assert!((0.0..=100.0).contains(&p), "percentile {p} out of range");
    debug_assert!(sorted.is_sorted(), "samples must be sorted");
    if sorted.is_empty() {
        return None;
    }
    // In integers: in floating point 99.9 / 100 × 1000 is 999.0000000000001, whose
    // ceiling would skip a rank.
    let p_milli = (p.clamp(0.0, 100.0) * 1000.0).round() as u64;
    let rank =
        usize::try_from((p_milli * sorted.len() as u64).div_ceil(100_000)).unwrap_or(usize::MAX);
    // Rank 0 (p = 0) is the minimum; the clamp keeps p = 100 on the maximum.
    let index = rank.saturating_sub(1).min(sorted.len() - 1);
    Some(sorted[index])
}

/// Microseconds as milliseconds: `u32 / 1000.0` is correctly rounded, so 210 µs
/// prints as `0.21`, not `0.21000000000000002`.
fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Rounded to the microsecond, like the samples.
    pub mean: f64,
}

impl Distribution {
    /// Sorts the samples (microseconds) in place; `None` when there are none.
    pub fn from_micros(samples: &mut [u32]) -> Option<Self> {
        samples.sort_unstable();
        let at = |p| percentile(samples, p).map(ms);
        let sum: u64 = samples.iter().map(|&us| u64::from(us)).sum();
        let mean_us = sum.checked_div(samples.len() as u64)?;
        Some(Self {
            p50: at(50.0)?,
            p90: at(90.0)?,
            p99: at(99.0)?,
            p999: at(99.9)?,
            max: at(100.0)?,
            mean: ms(u32::try_from(mean_us).unwrap_or(u32::MAX)),
        })
    }
}

/// Converts a duration to whole microseconds for a sample, saturating at ~71 minutes
/// (far beyond any request timeout).
pub fn micros(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<u32> = (1..=100).collect();
        let check = |p: f64, expect: u32| assert_eq!(percentile(&hundred, p), Some(expect), "p{p}");
        check(0.0, 1);
        check(1.0, 1);
        check(50.0, 50);
        check(90.0, 90);
        check(99.0, 99);
        check(99.9, 100);
        check(100.0, 100);

        let thousand: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99.9), Some(999));
        assert_eq!(percentile(&thousand, 99.0), Some(990));

        // Two samples: the median is the lower one (at least half are at or below it).
        assert_eq!(percentile(&[10, 20], 50.0), Some(10));
        assert_eq!(percentile(&[10, 20], 50.1), Some(20));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn one_slow_request_in_a_hundred_is_the_p99_only_at_two() {
        // 98 fast, 2 stalled: nearest-rank p99 is the 99th sample, a stalled one.
        let mut samples = vec![100; 98];
        samples.extend([50_000, 60_000]);
        let d = Distribution::from_micros(&mut samples).unwrap();
        assert_eq!(d.p50, 0.1);
        assert_eq!(d.p90, 0.1);
        assert_eq!(d.p99, 50.0);
        assert_eq!(d.max, 60.0);
        assert_eq!(d.mean, 1.198);
    }

    #[test]
    fn distribution_sorts_and_rounds() {
        let mut samples = vec![300, 210, 100, 5_000];
        let d = Distribution::from_micros(&mut samples).unwrap();
        assert_eq!(samples, [100, 210, 300, 5_000]);
        assert_eq!(d.p50, 0.21);
        assert_eq!(d.p999, 5.0);
        assert_eq!(d.mean, 1.402);
        assert_eq!(Distribution::from_micros(&mut []), None);
    }

    #[test]
    fn micros_saturates() {
        assert_eq!(micros(std::time::Duration::from_nanos(1_999)), 1);
        assert_eq!(micros(std::time::Duration::from_secs(10_000)), u32::MAX);
    }
}
