//! The application behind Bulkhead's HTTP edge: the closed sets its records and
//! audit events are made of, the services (`Services`: audit trails, alerts,
//! the guard's state and leak handling, retrieval, incidents and impact
//! reports, retention, traffic), and (in `app`) the one composition root.
//!
//! Must never: know axum or the JSON wire format of the HTTP API; name an enum by
//! its `Debug` form (names written to logs and hashed into the policy baseline are
//! spelled out, so renaming a variant changes nothing a reader sees).

#![forbid(unsafe_code)]

pub mod alerts;
pub mod anomaly;
pub mod answer_guard;
pub mod app;
pub mod chat;
pub mod documents;
pub mod drift;
pub mod error;
pub mod evidence;
pub mod gateway;
pub mod guard;
pub mod incident;
pub mod kinds;
pub mod packs;
pub mod quota;
pub mod reads;
pub mod retention;
pub mod retrieval;
pub mod services;
pub mod sessions;
pub mod telemetry;
pub mod tenants;
pub mod traces;
pub mod traffic;
pub mod trail;
#[cfg(feature = "weakened-isolation-for-tests")]
pub mod weakened;

pub use app::{App, AppConfig, RegionStore, StartError, StoreSpec};
pub use error::{AppError, AppResult};
pub use kinds::{AlertKind, EventKind, IncidentStatus, Severity, TraceOutcome};
pub use services::Services;
pub use telemetry::Telemetry;
pub use trail::{RequestId, Trail};
