//! The JSON wire types of Bulkhead's own HTTP API, in one place for the server
//! that emits them and every client that reads them (the CLI, the demo, the probe).
//!
//! Requests refuse unknown fields; responses tolerate fields added later, so an
//! older client keeps reading a newer server. Must never do I/O or know axum or
//! reqwest: it is data and nothing else.

#![forbid(unsafe_code)]

pub mod admin_views;
pub mod audit;
pub mod chat;
pub mod incident;
pub mod quotas;
pub mod receipt;
pub mod search;
pub mod tenants;
pub mod traces;

pub use tenants::*;

/// A problem+json body (RFC 9457) as the server writes its errors. Every field is
/// optional on the wire; a body that is not one reads as all `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub detail: Option<String>,
}
