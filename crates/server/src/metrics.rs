//! One Prometheus registry per process (or per in-process test instance),
//! shared by every role it runs, served at `/metrics`.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;

/// A shared registry. Roles register their metrics into it when constructed.
/// Note: prometheus-client appends `_total` to counters itself, so register
/// `cortex_foo` to expose `cortex_foo_total`.
#[derive(Clone, Default)]
pub struct Metrics(pub Arc<Mutex<Registry>>);

impl Metrics {
    pub fn new() -> Self {
        Metrics(Arc::new(Mutex::new(Registry::default())))
    }

    /// Registers one metric.
    pub fn register<M>(&self, name: &str, help: &str, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        self.0.lock().register(name, help, metric);
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.lock());
        out
    }
}
