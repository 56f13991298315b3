//! One Prometheus registry per process (or per in-process test instance),
//! shared by every role it runs, served at `/metrics`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `cortex_discarded_samples_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonUserLabels {
    pub reason: String,
    pub user: String,
}

/// A shared registry. Roles register their metrics into it when constructed.
/// Note: prometheus-client appends `_total` to counters itself, so register
/// `cortex_foo` to expose `cortex_foo_total`.
#[derive(Clone, Default)]
pub struct Metrics(pub Arc<Mutex<Registry>>, SharedFamilies);

/// Metric families that several roles of one process write to (for example
/// `cortex_discarded_samples_total`, counted by distributor and ingester):
/// registered once, handed to each role.
#[derive(Clone, Default)]
struct SharedFamilies(Arc<Mutex<HashMap<&'static str, Box<dyn Any + Send + Sync>>>>);

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Registers one metric.
    pub fn register<M>(&self, name: &str, help: &str, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        self.0.lock().register(name, help, metric);
    }

    /// The metric `name`, registered by whichever role asks first; later
    /// callers get the same (cheaply cloned) handle. Panics if two callers
    /// disagree on its type — a programming error.
    pub fn shared<M>(&self, name: &'static str, help: &str, make: impl FnOnce() -> M) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Send + Sync + 'static,
    {
        let mut shared = self.1 .0.lock();
        if let Some(existing) = shared.get(name) {
            return existing
                .downcast_ref::<M>()
                .unwrap_or_else(|| panic!("metric {name} shared with two types"))
                .clone();
        }
        let metric = make();
        self.register(name, help, metric.clone());
        shared.insert(name, Box::new(metric.clone()));
        metric
    }

    /// `cortex_discarded_samples_total{reason,user}`, written by the distributor
    /// (validation, rate limits) and the ingester (out-of-order, series limits).
    pub fn discarded_samples(&self) -> Family<ReasonUserLabels, Counter> {
        self.shared(
            "cortex_discarded_samples",
            "The total number of samples that were discarded.",
            Family::default,
        )
    }

    /// `cortex_panics_total`: panics caught (HTTP handlers, gRPC calls, query threads)
    /// and answered as internal errors instead of dropping the connection.
    pub fn panics(&self) -> Counter {
        self.shared(
            "cortex_panics",
            "The total number of panics caught while serving requests.",
            Counter::default,
        )
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.lock());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_family_is_registered_once() {
        let m = Metrics::new();
        let a: Family<Vec<(String, String)>, Counter> = m.shared("cortex_x", "x", Family::default);
        let b: Family<Vec<(String, String)>, Counter> = m.shared("cortex_x", "x", Family::default);
        a.get_or_create(&vec![("user".into(), "t".into())]).inc();
        b.get_or_create(&vec![("user".into(), "t".into())]).inc();
        let text = m.encode();
        assert_eq!(text.matches("# TYPE cortex_x counter").count(), 1, "{text}");
        assert!(text.contains("cortex_x_total{user=\"t\"} 2"), "{text}");
    }
}
