//! bulkhead-index's integration tests, one test binary (one link) for all of
//! them: eviction under a memory budget, the HTTP embedder against a local
//! server, tenant isolation (property tests), and retrieval quality (prints its
//! table with `--nocapture`).

mod eviction;
mod http_embedder;
mod isolation;
mod quality;
