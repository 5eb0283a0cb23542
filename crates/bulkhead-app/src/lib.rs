//! The application behind Bulkhead's HTTP edge: the closed sets its records and
//! audit events are made of, and (in `app`) the one composition root.
//!
//! Must never: know axum or the JSON wire format of the HTTP API; name an enum by
//! its `Debug` form (names written to logs and hashed into the policy baseline are
//! spelled out, so renaming a variant changes nothing a reader sees).

#![forbid(unsafe_code)]

pub mod anomaly;
pub mod app;
pub mod kinds;
pub mod packs;

pub use app::{App, AppConfig, RegionStore, StartError, StoreSpec};
pub use kinds::{AlertKind, EventKind, IncidentStatus, Severity, TraceOutcome};
