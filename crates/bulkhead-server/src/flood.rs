//! Refused credentials per client address: past a limit in a one-minute window,
//! a request with a missing or wrong credential from that address is answered
//! 429 (with `Retry-After`) and writes nothing — no audit event, no store write —
//! so an unauthenticated flood cannot make the server fsync per request or fill
//! the operator log. The request that crosses the limit is logged once
//! (`address_flood`), so the operator log still shows the flood began.
//!
//! Valid credentials from the same address are not affected (a NAT can hide a
//! legitimate tenant behind an attacker's address). The address is the peer of
//! the TCP connection; behind a reverse proxy it is the proxy's, which then
//! limits all refused credentials together (fail closed).
//!
//! Bounded: at most `ADDRESSES_MAX` addresses are tracked; past that, stale
//! windows are pruned and new addresses share one overflow window.
//!
//! Many addresses (a botnet, an IPv6 range) each under its limit would still
//! write one durable entry per refusal. So the server as a whole logs at most
//! `logged_per_min` refused credentials a minute; past that they are answered as
//! usual (401, their address is not the problem) and counted, and the first
//! refusal logged in a later minute is preceded by one entry saying how many
//! went unlogged (`refusals_not_logged`). The burst alert and the metrics count
//! every refusal, logged or not.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// Addresses tracked at once.
const ADDRESSES_MAX: usize = 10_000;
/// The window's length.
const WINDOW_MS: i64 = 60_000;
/// Refused credentials the whole server logs a minute, unless set otherwise.
pub const LOGGED_PER_MIN_DEFAULT: u32 = 600;
/// The address refused credentials of unknown origin (and the overflow) count under.
const SHARED: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// What to do with one refused credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodCheck {
    /// Under the limit: refuse and log as usual.
    Log,
    /// Under the address's limit, but the server's log budget for this minute is
    /// spent: refuse as usual, write nothing (counted for the next summary).
    Counted,
    /// This one crossed the limit: log it once as the flood's start, then 429.
    Tripped { retry_after_secs: u64 },
    /// Past the limit: 429, nothing written.
    Limited { retry_after_secs: u64 },
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    started_ms: i64,
    count: u32,
}

/// The server's budget of logged refusals in the current minute.
#[derive(Debug, Default)]
struct Budget {
    started_ms: i64,
    logged: u32,
    /// Refusals not logged in this window.
    unlogged: u64,
    /// Refusals not logged in earlier windows, not yet reported.
    unreported: u64,
}

/// Refused credentials per client address per minute.
#[derive(Debug)]
pub struct AuthFlood {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
    logged_per_min: u32,
    budget: Mutex<Budget>,
}

impl AuthFlood {
    /// `per_minute` refused credentials per address per minute are logged;
    /// 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self::with_budget(per_minute, LOGGED_PER_MIN_DEFAULT)
    }

    /// As `new`, with at most `logged_per_min` refusals logged a minute by the
    /// whole server (0: no budget).
    pub fn with_budget(per_minute: u32, logged_per_min: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
            logged_per_min,
            budget: Mutex::new(Budget::default()),
        }
    }

    /// Refusals that went unlogged in minutes now over, once: the caller logs
    /// one entry for them before it logs the next refusal.
    pub fn take_unreported(&self) -> Option<u64> {
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        (b.unreported > 0).then(|| std::mem::take(&mut b.unreported))
    }

    /// Spends one of the server's logged refusals this minute; false when the
    /// budget is spent (the refusal is counted instead).
    fn spend(&self, now_ms: i64) -> bool {
        if self.logged_per_min == 0 {
            return true;
        }
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms - b.started_ms >= WINDOW_MS {
            let carried = b.unreported + b.unlogged;
            *b = Budget {
                started_ms: now_ms,
                unreported: carried,
                ..Budget::default()
            };
        }
        if b.logged < self.logged_per_min {
            b.logged += 1;
            true
        } else {
            b.unlogged += 1;
            false
        }
    }

    /// Counts a refused credential from `address` (`None`: unknown).
    pub fn check(&self, address: Option<IpAddr>, now_ms: i64) -> FloodCheck {
        let per_address = self.per_address(address, now_ms);
        match per_address {
            FloodCheck::Log if !self.spend(now_ms) => FloodCheck::Counted,
            FloodCheck::Tripped { retry_after_secs } if !self.spend(now_ms) => {
                FloodCheck::Limited { retry_after_secs }
            }
            other => other,
        }
    }

    fn per_address(&self, address: Option<IpAddr>, now_ms: i64) -> FloodCheck {
        if self.per_minute == 0 {
            return FloodCheck::Log;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = address.unwrap_or(SHARED);
        if !windows.contains_key(&key) && windows.len() >= ADDRESSES_MAX {
            windows.retain(|_, w| now_ms - w.started_ms < WINDOW_MS);
            if windows.len() >= ADDRESSES_MAX {
                key = SHARED;
            }
        }
        let w = windows.entry(key).or_default();
        if now_ms - w.started_ms >= WINDOW_MS {
            *w = Window {
                started_ms: now_ms,
                count: 0,
            };
        }
        w.count = w.count.saturating_add(1);
        let retry_after_secs = ((w.started_ms + WINDOW_MS - now_ms).max(1000) / 1000) as u64;
        match w.count.cmp(&self.per_minute) {
            std::cmp::Ordering::Greater if w.count == self.per_minute + 1 => {
                FloodCheck::Tripped { retry_after_secs }
            }
            std::cmp::Ordering::Greater => FloodCheck::Limited { retry_after_secs },
            _ => FloodCheck::Log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn an_address_past_its_limit_is_limited_until_the_window_ends() {
        let flood = AuthFlood::new(3);
        let t = 1_000_000;
        for _ in 0..3 {
            assert_eq!(flood.check(ip(1), t), FloodCheck::Log);
        }
        assert_eq!(
            flood.check(ip(1), t + 10_000),
            FloodCheck::Tripped {
                retry_after_secs: 50
            }
        );
        assert_eq!(
            flood.check(ip(1), t + 59_500),
            FloodCheck::Limited {
                retry_after_secs: 1
            }
        );
        // Another address is counted apart; the next window starts afresh.
        assert_eq!(flood.check(ip(2), t), FloodCheck::Log);
        assert_eq!(flood.check(ip(1), t + 60_000), FloodCheck::Log);
    }

    #[test]
    fn many_addresses_under_their_limits_log_within_the_servers_budget() {
        let flood = AuthFlood::with_budget(3, 5);
        let t = 1_000_000;
        let checks: Vec<FloodCheck> = (0..20).map(|i| flood.check(ip(i), t)).collect();
        assert_eq!(checks.iter().filter(|c| **c == FloodCheck::Log).count(), 5);
        assert_eq!(
            checks.iter().filter(|c| **c == FloodCheck::Counted).count(),
            15
        );
        assert_eq!(flood.take_unreported(), None, "the minute is not over");
        // The next minute logs again, and the 15 are reported once.
        assert_eq!(flood.check(ip(100), t + 60_000), FloodCheck::Log);
        assert_eq!(flood.take_unreported(), Some(15));
        assert_eq!(flood.take_unreported(), None);
    }

    #[test]
    fn zero_turns_the_limit_off_and_the_map_stays_bounded() {
        let off = AuthFlood::new(0);
        for _ in 0..100 {
            assert_eq!(off.check(ip(1), 0), FloodCheck::Log);
        }
        let flood = AuthFlood::new(1);
        for i in 0..(ADDRESSES_MAX as u32 + 50) {
            let a = IpAddr::from((i + 1).to_be_bytes());
            let _ = flood.check(Some(a), 0);
        }
        assert!(flood.windows.lock().unwrap().len() <= ADDRESSES_MAX + 1);
        // Beyond the bound, new addresses share one window: the second is limited.
        assert!(matches!(
            flood.check(Some(IpAddr::from([10, 9, 9, 9])), 1),
            FloodCheck::Tripped { .. } | FloodCheck::Limited { .. }
        ));
    }
}
