//! The `distributor:` config section and the `limits:` section (the per-tenant
//! limits this role enforces, with Cortex's flag names and defaults).

use model::GoDuration;
use serde::{Deserialize, Serialize};
use server::config::Flag;

/// Cortex's `-distributor.max-recv-msg-size` default: 100 MiB.
pub const DEFAULT_MAX_RECV_MSG_SIZE: usize = 100 << 20;

/// `distributor:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Timeout of each Push RPC to one ingester.
    pub remote_timeout: GoDuration,
    /// Shard series by all their labels instead of (tenant, metric name).
    pub shard_by_all_labels: bool,
    /// Largest remote-write body accepted, compressed and decompressed alike.
    pub max_recv_msg_size: usize,
    /// Drop pooled ingester clients that are no longer ring members (and so
    /// are not worth keeping a connection to) on every cleanup tick.
    pub health_check_ingesters: bool,
    /// How often the ingester client pool is cleaned up.
    pub client_cleanup_period: GoDuration,
    /// Extend the replica set past non-ACTIVE ingesters (`Operation::Write`)
    /// rather than writing to fewer replicas (`Operation::WriteNoExtend`).
    pub extend_writes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            remote_timeout: GoDuration::secs(2),
            shard_by_all_labels: false,
            max_recv_msg_size: DEFAULT_MAX_RECV_MSG_SIZE,
            health_check_ingesters: true,
            client_cleanup_period: GoDuration::secs(15),
            extend_writes: true,
        }
    }
}

impl Config {
    /// Same as [`FLAGS`].
    pub const FLAGS: &'static [Flag] = FLAGS;
}

/// Flags of the `distributor:` section; paths are relative to that section.
pub const FLAGS: &[Flag] = &[
    Flag::new(
        "distributor.remote-timeout",
        "remote_timeout",
        "Timeout for downstream ingesters.",
    ),
    Flag::new(
        "distributor.shard-by-all-labels",
        "shard_by_all_labels",
        "Distribute samples based on all labels, as opposed to solely by user and metric name.",
    ),
    Flag::new(
        "distributor.max-recv-msg-size",
        "max_recv_msg_size",
        "Remote-write message size limit in bytes (applies to the compressed and the decompressed body).",
    ),
    Flag::new(
        "distributor.health-check-ingesters",
        "health_check_ingesters",
        "Periodically drop ingester clients that are no longer in the ring.",
    ),
    Flag::new(
        "distributor.client-cleanup-period",
        "client_cleanup_period",
        "How frequently to clean up clients for ingesters that have gone away.",
    ),
    Flag::new(
        "distributor.extend-writes",
        "extend_writes",
        "Try writing to an additional ingester in the presence of an ingester not in the ACTIVE state.",
    ),
];

/// `limits:` section: the limits of spec §1.3 and §1.6. One set applies to
/// every tenant (per-tenant overrides come with the runtime config).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Samples (plus metadata) per second per tenant.
    pub ingestion_rate: f64,
    /// Token-bucket size per tenant.
    pub ingestion_burst_size: usize,
    pub max_label_names_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub reject_old_samples: bool,
    pub reject_old_samples_max_age: GoDuration,
    pub creation_grace_period: GoDuration,
    pub enforce_metric_name: bool,
    pub enforce_metadata_metric_name: bool,
    pub max_metadata_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ingestion_rate: 25000.0,
            ingestion_burst_size: 50000,
            max_label_names_per_series: 30,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            reject_old_samples: false,
            reject_old_samples_max_age: GoDuration::secs(14 * 24 * 3600),
            creation_grace_period: GoDuration::secs(10 * 60),
            enforce_metric_name: true,
            enforce_metadata_metric_name: true,
            max_metadata_length: 1024,
        }
    }
}

impl Limits {
    /// Same as [`LIMITS_FLAGS`].
    pub const FLAGS: &'static [Flag] = LIMITS_FLAGS;
}

/// Flags of the `limits:` section; paths are relative to that section.
pub const LIMITS_FLAGS: &[Flag] = &[
    Flag::new(
        "distributor.ingestion-rate-limit",
        "ingestion_rate",
        "Per-tenant ingestion rate limit in samples per second.",
    ),
    Flag::new(
        "distributor.ingestion-burst-size",
        "ingestion_burst_size",
        "Per-tenant allowed ingestion burst size (in number of samples).",
    ),
    Flag::new(
        "validation.max-label-names-per-series",
        "max_label_names_per_series",
        "Maximum number of label names per series.",
    ),
    Flag::new(
        "validation.max-length-label-name",
        "max_label_name_length",
        "Maximum length accepted for label names.",
    ),
    Flag::new(
        "validation.max-length-label-value",
        "max_label_value_length",
        "Maximum length accepted for label value. This setting also applies to the metric name.",
    ),
    Flag::new(
        "validation.reject-old-samples",
        "reject_old_samples",
        "Reject old samples.",
    ),
    Flag::new(
        "validation.reject-old-samples.max-age",
        "reject_old_samples_max_age",
        "Maximum accepted sample age before rejecting.",
    ),
    Flag::new(
        "validation.create-grace-period",
        "creation_grace_period",
        "Duration which table will be created/deleted before/after it's needed; we won't accept samples from before this time.",
    ),
    Flag::new(
        "validation.enforce-metric-name",
        "enforce_metric_name",
        "Enforce every sample has a metric name.",
    ),
    Flag::new(
        "validation.enforce-metadata-metric-name",
        "enforce_metadata_metric_name",
        "Enforce every metadata has a metric name.",
    ),
    Flag::new(
        "validation.max-metadata-length",
        "max_metadata_length",
        "Maximum length accepted for metric metadata. Metadata refers to Metric Name, HELP and UNIT.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_are_cortex_defaults() {
        let c = Config::default();
        assert_eq!(c.remote_timeout.to_string(), "2s");
        assert_eq!(c.max_recv_msg_size, 104_857_600);
        let l = Limits::default();
        assert_eq!(l.ingestion_rate, 25000.0);
        assert_eq!(l.ingestion_burst_size, 50000);
        assert_eq!(l.reject_old_samples_max_age.to_string(), "336h0m0s");
        assert_eq!(l.creation_grace_period.to_string(), "10m0s");
    }

    #[test]
    fn every_flag_sets_its_field() {
        let c: Config = server::config::load(
            &args(&[
                "-distributor.remote-timeout=5s",
                "-distributor.shard-by-all-labels",
                "-distributor.max-recv-msg-size=1000",
                "-distributor.health-check-ingesters=false",
                "-distributor.client-cleanup-period=1m",
                "-distributor.extend-writes=false",
            ]),
            FLAGS,
        )
        .unwrap();
        assert_eq!(c.remote_timeout, GoDuration::secs(5));
        assert!(c.shard_by_all_labels);
        assert_eq!(c.max_recv_msg_size, 1000);
        assert!(!c.health_check_ingesters);
        assert_eq!(c.client_cleanup_period, GoDuration::secs(60));
        assert!(!c.extend_writes);

        let l: Limits = server::config::load(
            &args(&[
                "-distributor.ingestion-rate-limit=10.5",
                "-distributor.ingestion-burst-size=20",
                "-validation.max-label-names-per-series=5",
                "-validation.max-length-label-name=6",
                "-validation.max-length-label-value=7",
                "-validation.reject-old-samples=true",
                "-validation.reject-old-samples.max-age=1h",
                "-validation.create-grace-period=1m",
                "-validation.enforce-metric-name=false",
                "-validation.enforce-metadata-metric-name=false",
                "-validation.max-metadata-length=8",
            ]),
            LIMITS_FLAGS,
        )
        .unwrap();
        assert_eq!(Limits::FLAGS.len(), LIMITS_FLAGS.len());
        assert_eq!(Config::FLAGS.len(), FLAGS.len());
        assert_eq!(l.ingestion_rate, 10.5);
        assert_eq!(l.ingestion_burst_size, 20);
        assert_eq!(l.max_label_names_per_series, 5);
        assert_eq!(l.max_label_name_length, 6);
        assert_eq!(l.max_label_value_length, 7);
        assert!(l.reject_old_samples);
        assert_eq!(l.reject_old_samples_max_age, GoDuration::secs(3600));
        assert_eq!(l.creation_grace_period, GoDuration::secs(60));
        assert!(!l.enforce_metric_name);
        assert!(!l.enforce_metadata_metric_name);
        assert_eq!(l.max_metadata_length, 8);
    }
}
