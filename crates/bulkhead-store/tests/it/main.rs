//! bulkhead-store's integration tests, one test binary (one link) for both
//! suites: the backend conformance checks (SQLite and PostgreSQL) and the
//! regional store over real SQLite files.

mod conformance;
mod regional;
