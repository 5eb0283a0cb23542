//! bulkhead-guard's integration tests, one test binary (one link) for all of
//! them: the guard at its boundary (`guard`), streaming (`stream`), and the two
//! labeled evaluations (`eval`, `leak_eval`), which print their tables with
//! `--nocapture`. `common` holds the deterministic prose and tenants they share.

mod common;

mod attribution;
mod eval;
mod guard;
mod leak_eval;
mod split_leaks;
mod stream;
