//! An open-loop, constant-rate HTTP load generator, in the manner of wrk2 and
//! `oha -q`: request `i` is due `i / rate` seconds after the start whatever the
//! server did with the requests before it, and its latency runs from that due time
//! to the last byte of its body. A server that stalls for 100 ms therefore shows up
//! in every request that was due during the stall, not just in the one that was in
//! flight (the "coordinated omission" a closed-loop generator makes).
//!
//! It exists to measure the latency `bulkhead serve` adds over its upstream on a
//! two-core machine it shares with the server, so it is built to be lean: one
//! runtime thread by default, one timer thread, a fixed keep-alive pool, exact
//! percentiles over every sample, and no work per request beyond sending it and
//! draining its body. When it cannot keep up itself it says so (`behind_schedule`)
//! rather than report the server slower than it is.
//!
//! The client is hyper 1 through hyper-util's pooled legacy client, not reqwest.
//! Measured against a one-route axum server on the 2-core bench machine, three
//! alternating 9 s runs each, the generator's own CPU time (user + system) was
//! 1.43 s with hyper against 1.70 s with reqwest at 2,000 requests/s, and 2.22 s
//! against 2.83 s at 4,000/s (16–22 % less), with a p50 20–40 µs lower; reqwest's
//! layers (its URL type, redirect policy, body wrapper) are work the server under
//! test would otherwise get. Most of what remains is the kernel's: loopback TCP and
//! one wake-up per request.
//!
//! It must never be mistaken for a test: timing is its output, not something it
//! asserts.

#![forbid(unsafe_code)]

pub mod args;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
