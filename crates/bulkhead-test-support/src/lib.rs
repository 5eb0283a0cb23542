//! Helpers that several test suites of the workspace share, so that each exists
//! once: the PostgreSQL test server and a fresh database per test ([`pg`]), a real
//! `bulkhead serve` process on a free port ([`process`]), the CLI run as a child
//! process ([`cli`]), temporary stores ([`store`]) and a clock tests move by hand
//! ([`clock`]).
//!
//! Only for tests (a dev-dependency, never shipped): helpers panic with a message
//! instead of returning errors, because a failed setup is a failed test. What a
//! single suite needs stays in that suite.

pub mod cli;
pub mod clock;
pub mod pg;
pub mod process;
pub mod store;

pub use cli::describe;
pub use clock::TestClock;
pub use process::{ADMIN_TOKEN, Server, expect_json, lock, string_field, tenant_with_key};
