//! bulkhead-server's integration tests, one test binary (one link) for all of
//! them: `common` is the harness (a server state over a temporary SQLite file,
//! driven through `app(state)` with `oneshot`); every other module is one
//! feature's suite.
//!
//! Tests here run on threads of one process: none of them may change the
//! process's environment or other global state.

mod common;

mod alerts;
mod api;
mod audit;
mod content;
mod dashboard;
mod drift;
mod embedders;
mod evidence;
mod framing;
mod gateway;
mod guard;
mod incident;
mod packs;
mod prompts;
mod quotas;
mod replica_sync;
mod retention;
mod search;
