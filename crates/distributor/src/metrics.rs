//! The distributor's Prometheus metrics (Cortex names, spec §1.2 and §11).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabel {
    pub user: String,
}

pub use server::metrics::ReasonUserLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngesterTypeLabels {
    pub ingester: String,
    pub r#type: String,
}

/// Value of the `type` label for sample pushes.
pub const TYPE_SAMPLES: &str = "samples";
/// Value of the `type` label for metadata pushes.
pub const TYPE_METADATA: &str = "metadata";

#[derive(Clone, Default)]
pub struct DistributorMetrics {
    pub samples_in: Family<UserLabel, Counter>,
    pub metadata_in: Family<UserLabel, Counter>,
    pub received_samples: Family<UserLabel, Counter>,
    pub received_metadata: Family<UserLabel, Counter>,
    pub ingester_appends: Family<IngesterTypeLabels, Counter>,
    pub ingester_append_failures: Family<IngesterTypeLabels, Counter>,
    pub latest_seen_sample_timestamp: Family<UserLabel, Gauge<f64, AtomicU64>>,
    pub discarded_samples: Family<ReasonUserLabels, Counter>,
    pub discarded_metadata: Family<ReasonUserLabels, Counter>,
    pub replication_factor: Gauge,
}

impl DistributorMetrics {
    /// Creates and registers every metric (counters without `_total`:
    /// prometheus-client appends it).
    pub fn register(metrics: &server::Metrics) -> Self {
        let m = DistributorMetrics {
            discarded_samples: metrics.discarded_samples(),
            ..Default::default()
        };
        metrics.register(
            "cortex_distributor_samples_in",
            "The total number of samples that have come in to the distributor, including rejected or deduped samples.",
            m.samples_in.clone(),
        );
        metrics.register(
            "cortex_distributor_metadata_in",
            "The total number of metadata that have come in to the distributor, including rejected.",
            m.metadata_in.clone(),
        );
        metrics.register(
            "cortex_distributor_received_samples",
            "The total number of received samples, excluding rejected and deduped samples.",
            m.received_samples.clone(),
        );
        metrics.register(
            "cortex_distributor_received_metadata",
            "The total number of received metadata, excluding rejected.",
            m.received_metadata.clone(),
        );
        metrics.register(
            "cortex_distributor_ingester_appends",
            "The total number of batch appends sent to ingesters.",
            m.ingester_appends.clone(),
        );
        metrics.register(
            "cortex_distributor_ingester_append_failures",
            "The total number of failed batch appends sent to ingesters.",
            m.ingester_append_failures.clone(),
        );
        metrics.register(
            "cortex_distributor_latest_seen_sample_timestamp_seconds",
            "Unix timestamp of latest received sample per user.",
            m.latest_seen_sample_timestamp.clone(),
        );
        metrics.register(
            "cortex_discarded_metadata",
            "The total number of metadata that were discarded.",
            m.discarded_metadata.clone(),
        );
        metrics.register(
            "cortex_distributor_replication_factor",
            "The configured replication factor.",
            m.replication_factor.clone(),
        );
        m
    }
}
