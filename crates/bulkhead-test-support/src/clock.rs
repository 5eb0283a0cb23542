//! A clock tests move by hand, so expiry and time windows are tested without
//! sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

use bulkhead_types::{Clock, SystemClock, UnixMillis};

/// A start (the wall clock, or a fixed instant) plus an offset the test sets or
/// moves forward.
#[derive(Debug, Default)]
pub struct TestClock {
    /// `None`: the wall clock, read at every `now`.
    start: Option<UnixMillis>,
    offset_ms: AtomicI64,
}

impl TestClock {
    /// The wall clock plus the offset.
    pub fn wall() -> Self {
        Self::default()
    }

    /// `start` plus the offset: the same instant at every call until it is moved.
    pub fn fixed(start: UnixMillis) -> Self {
        Self {
            start: Some(start),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Moves the clock `secs` forward.
    pub fn advance_secs(&self, secs: i64) {
        self.offset_ms.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    /// Puts the clock `offset_ms` after its start.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> UnixMillis {
        let start = self.start.unwrap_or_else(|| SystemClock.now());
        UnixMillis(start.0 + self.offset_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told() {
        let clock = TestClock::fixed(UnixMillis(1_000));
        assert_eq!(clock.now(), UnixMillis(1_000));
        clock.advance_secs(2);
        assert_eq!(clock.now(), UnixMillis(3_000));
        clock.set_offset_ms(500);
        assert_eq!(clock.now(), UnixMillis(1_500));
    }

    #[test]
    fn a_wall_clock_runs_ahead_by_its_offset() {
        let clock = TestClock::wall();
        clock.advance_secs(3600);
        let ahead = clock.now().0 - SystemClock.now().0;
        assert!((3_590_000..=3_600_000).contains(&ahead), "{ahead}");
    }
}
