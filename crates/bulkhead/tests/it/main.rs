//! The `bulkhead` binary's integration tests, one test binary (one link) for all
//! of them: each module is one end-to-end suite against the real binary.
//!
//! Tests here run on threads of one process. None of them may change the
//! process's environment, working directory or other global state: what a
//! child process needs is passed to it (`Command::env`, `current_dir`).

/// The binary under test, built by cargo for these tests.
const BULKHEAD: &str = env!("CARGO_BIN_EXE_bulkhead");

mod audit_cli;
mod compliance_cli;
mod dashboard_browser;
mod demo;
mod durability;
mod openai_sdk;
mod probe;
mod replicas;
mod residency;
mod snapshots;
