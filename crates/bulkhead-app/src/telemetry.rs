//! What the application reports to the metrics of whoever hosts it. The HTTP
//! edge implements this over its Prometheus registry; the application never
//! knows a metrics library, label names or an exposition format.

/// Counters the application moves as it works. Every method must be cheap and
/// must not block: they are called on the request path.
pub trait Telemetry: Send + Sync + std::fmt::Debug {
    /// An alert could not be queued for the webhook (the queue was full).
    fn alert_dropped(&self) {}
    /// An answer was blocked because it carried another tenant's data.
    fn leak_blocked(&self) {}
    /// Of those, one whose foreign data the model's own input carried (supplied
    /// by the requester, or planted in its input by the owner): not contained.
    fn leak_supplied(&self) {}
    /// A replica's guard could not reload one tenant from the shared store in a
    /// sync pass (it keeps the tenant's older set and retries).
    fn guard_sync_failed(&self) {}
    /// One chat call through the gateway: its outcome and the time the gateway
    /// itself added (everything but the upstream's own time).
    fn model_call(&self, _outcome: &str, _overhead: std::time::Duration) {}
}

/// Telemetry that goes nowhere (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTelemetry;

impl Telemetry for NoTelemetry {}
