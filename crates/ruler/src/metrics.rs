//! The ruler's metrics: Prometheus's rule-manager metrics with the `cortex_` prefix and
//! `user`/`rule_group` labels (spec §8). A group's series are removed when the group is.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub user: String,
    pub rule_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabel {
    pub user: String,
}

#[derive(Clone, Default)]
pub struct RulerMetrics {
    pub evaluations: Family<GroupLabels, Counter>,
    pub evaluation_failures: Family<GroupLabels, Counter>,
    pub iterations_missed: Family<GroupLabels, Counter>,
    pub iterations: Family<GroupLabels, Counter>,
    pub last_duration: Family<GroupLabels, Gauge<f64, AtomicU64>>,
    pub write_requests: Counter,
    pub write_requests_failed: Counter,
    pub notifications_sent: Counter,
    pub notifications_errors: Counter,
    pub notifications_dropped: Counter,
    pub notifications_queue_length: Gauge,
}

impl RulerMetrics {
    pub fn register(metrics: &server::Metrics) -> Self {
        let m = RulerMetrics::default();
        metrics.register(
            "cortex_prometheus_rule_evaluations",
            "The total number of rule evaluations.",
            m.evaluations.clone(),
        );
        metrics.register(
            "cortex_prometheus_rule_evaluation_failures",
            "The total number of rule evaluation failures.",
            m.evaluation_failures.clone(),
        );
        metrics.register(
            "cortex_prometheus_rule_group_iterations_missed",
            "The total number of rule group evaluations missed due to slow rule group evaluation.",
            m.iterations_missed.clone(),
        );
        metrics.register(
            "cortex_prometheus_rule_group_iterations",
            "The total number of scheduled rule group evaluations, whether executed or missed.",
            m.iterations.clone(),
        );
        metrics.register(
            "cortex_prometheus_rule_group_last_duration_seconds",
            "The duration of the last rule group evaluation.",
            m.last_duration.clone(),
        );
        metrics.register(
            "cortex_ruler_write_requests",
            "Number of write requests to ingesters.",
            m.write_requests.clone(),
        );
        metrics.register(
            "cortex_ruler_write_requests_failed",
            "Number of failed write requests to ingesters.",
            m.write_requests_failed.clone(),
        );
        metrics.register(
            "cortex_prometheus_notifications_sent",
            "Total number of alerts sent.",
            m.notifications_sent.clone(),
        );
        metrics.register(
            "cortex_prometheus_notifications_errors",
            "Total number of errors sending alert notifications.",
            m.notifications_errors.clone(),
        );
        metrics.register(
            "cortex_prometheus_notifications_dropped",
            "Total number of alerts dropped due to errors when sending to Alertmanager or a full queue.",
            m.notifications_dropped.clone(),
        );
        metrics.register(
            "cortex_prometheus_notifications_queue_length",
            "The number of alert notifications in the queue.",
            m.notifications_queue_length.clone(),
        );
        m
    }

    /// Forgets a group's series once the group is gone.
    pub fn remove_group(&self, l: &GroupLabels) {
        self.evaluations.remove(l);
        self.evaluation_failures.remove(l);
        self.iterations_missed.remove(l);
        self.iterations.remove(l);
        self.last_duration.remove(l);
    }
}
