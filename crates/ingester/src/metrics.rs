//! The ingester's metrics, under Cortex's names (spec §3.4, §3.9, §11).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use server::metrics::ReasonUserLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UserLabel {
    pub(crate) user: String,
}

/// Reasons a sample is discarded, with Cortex's label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DiscardReason {
    DuplicateSample,
    SampleOutOfOrder,
    NewValueForTimestamp,
    PerUserSeriesLimit,
    PerMetricSeriesLimit,
    InvalidLabels,
}

impl DiscardReason {
    pub(crate) const ALL: [DiscardReason; 6] = [
        DiscardReason::DuplicateSample,
        DiscardReason::SampleOutOfOrder,
        DiscardReason::NewValueForTimestamp,
        DiscardReason::PerUserSeriesLimit,
        DiscardReason::PerMetricSeriesLimit,
        DiscardReason::InvalidLabels,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DiscardReason::DuplicateSample => "duplicate-sample",
            DiscardReason::SampleOutOfOrder => "sample-out-of-order",
            DiscardReason::NewValueForTimestamp => "new-value-for-timestamp",
            DiscardReason::PerUserSeriesLimit => "per_user_series_limit",
            DiscardReason::PerMetricSeriesLimit => "per_metric_series_limit",
            DiscardReason::InvalidLabels => "label_invalid",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone)]
pub(crate) struct IngesterMetrics {
    pub(crate) memory_series: Gauge,
    pub(crate) memory_users: Gauge,
    pub(crate) memory_chunks: Gauge,
    pub(crate) series_created: Family<UserLabel, Counter>,
    pub(crate) series_removed: Family<UserLabel, Counter>,
    pub(crate) ingested_samples: Counter,
    pub(crate) ingested_samples_failures: Counter,
    pub(crate) ingested_metadata: Counter,
    pub(crate) queries: Counter,
    pub(crate) queried_series: Histogram,
    pub(crate) queried_samples: Histogram,
    pub(crate) queried_chunks: Histogram,
    /// Shared with the distributor when both run in one process.
    pub(crate) discarded_samples: Family<ReasonUserLabels, Counter>,
}

impl IngesterMetrics {
    pub(crate) fn new(registry: &server::Metrics) -> Self {
        let m = IngesterMetrics {
            memory_series: Gauge::default(),
            memory_users: Gauge::default(),
            memory_chunks: Gauge::default(),
            series_created: Family::default(),
            series_removed: Family::default(),
            ingested_samples: Counter::default(),
            ingested_samples_failures: Counter::default(),
            ingested_metadata: Counter::default(),
            queries: Counter::default(),
            // Cortex: prometheus.ExponentialBuckets(10, 8, 8) for series and samples, (10, 8, 7) for chunks.
            queried_series: Histogram::new(exponential_buckets(10.0, 8.0, 8)),
            queried_samples: Histogram::new(exponential_buckets(10.0, 8.0, 8)),
            queried_chunks: Histogram::new(exponential_buckets(10.0, 8.0, 7)),
            discarded_samples: registry.discarded_samples(),
        };
        registry.register(
            "cortex_ingester_memory_series",
            "The current number of series in memory.",
            m.memory_series.clone(),
        );
        registry.register(
            "cortex_ingester_memory_users",
            "The current number of users in memory.",
            m.memory_users.clone(),
        );
        registry.register(
            "cortex_ingester_memory_chunks",
            "The total number of chunks in memory.",
            m.memory_chunks.clone(),
        );
        registry.register(
            "cortex_ingester_memory_series_created",
            "The total number of series that were created per user.",
            m.series_created.clone(),
        );
        registry.register(
            "cortex_ingester_memory_series_removed",
            "The total number of series that were removed per user.",
            m.series_removed.clone(),
        );
        registry.register(
            "cortex_ingester_ingested_samples",
            "The total number of samples ingested.",
            m.ingested_samples.clone(),
        );
        registry.register(
            "cortex_ingester_ingested_samples_failures",
            "The total number of samples that errored on ingestion.",
            m.ingested_samples_failures.clone(),
        );
        registry.register(
            "cortex_ingester_ingested_metadata",
            "The total number of metadata ingested.",
            m.ingested_metadata.clone(),
        );
        registry.register(
            "cortex_ingester_queries",
            "The total number of queries the ingester has handled.",
            m.queries.clone(),
        );
        registry.register(
            "cortex_ingester_queried_series",
            "The total number of series returned from queries.",
            m.queried_series.clone(),
        );
        registry.register(
            "cortex_ingester_queried_samples",
            "The total number of samples returned from queries.",
            m.queried_samples.clone(),
        );
        registry.register(
            "cortex_ingester_queried_chunks",
            "The total number of chunks returned from queries.",
            m.queried_chunks.clone(),
        );
        m
    }

    /// Removes every label set of `user` (a tenant gone and idle); `reasons`
    /// are the discard reasons it was counted under.
    pub(crate) fn forget_user(&self, user: &str, reasons: &[&'static str]) {
        let label = UserLabel { user: user.to_string() };
        self.series_created.remove(&label);
        self.series_removed.remove(&label);
        for reason in reasons {
            self.discarded_samples.remove(&ReasonUserLabels {
                reason: reason.to_string(),
                user: user.to_string(),
            });
        }
    }

    pub(crate) fn discard(&self, reason: DiscardReason, user: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.discarded_samples
            .get_or_create(&ReasonUserLabels {
                reason: reason.as_str().to_string(),
                user: user.to_string(),
            })
            .inc_by(n);
    }
}
