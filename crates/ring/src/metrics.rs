//! Metric families shared by every ring client, lifecycler and KV client of one registry.
//!
//! Several roles in one process (distributor, querier, ruler) each start a `Ring` over the same
//! `server::Metrics`; registering the same family twice would expose it twice, so each family is
//! registered once per registry and handed out again to later callers.

use std::any::Any;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use prometheus_client::registry::{Metric, Registry};

struct SharedEntry {
    registry: Weak<Mutex<Registry>>,
    name: &'static str,
    metric: Box<dyn Any + Send + Sync>,
}

static SHARED: OnceLock<Mutex<Vec<SharedEntry>>> = OnceLock::new();

/// The family `name` of `metrics`'s registry, registering `make()` the first time.
pub(crate) fn shared_metric<M>(metrics: &server::Metrics, name: &'static str, help: &str, make: impl FnOnce() -> M) -> M
where
    M: Metric + Clone + Send + Sync + 'static,
{
    let mut entries = SHARED.get_or_init(Default::default).lock();
    entries.retain(|e| e.registry.strong_count() > 0);
    let registry_ptr = Arc::as_ptr(&metrics.0);
    if let Some(existing) = entries
        .iter()
        .find(|e| e.name == name && std::ptr::eq(e.registry.as_ptr(), registry_ptr))
        .and_then(|e| e.metric.downcast_ref::<M>())
    {
        return existing.clone();
    }
    let metric = make();
    metrics.register(name, help, metric.clone());
    entries.push(SharedEntry {
        registry: Arc::downgrade(&metrics.0),
        name,
        metric: Box::new(metric.clone()),
    });
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn one_family_per_registry() {
        let m1 = server::Metrics::new();
        let m2 = server::Metrics::new();
        let a: Counter = shared_metric(&m1, "cortex_test_shared", "h", Counter::default);
        let b: Counter = shared_metric(&m1, "cortex_test_shared", "h", Counter::default);
        let c: Counter = shared_metric(&m2, "cortex_test_shared", "h", Counter::default);
        a.inc();
        b.inc();
        c.inc();
        let text = m1.encode();
        assert_eq!(text.matches("cortex_test_shared_total 2").count(), 1, "{text}");
        assert!(m2.encode().contains("cortex_test_shared_total 1"));
    }
}
