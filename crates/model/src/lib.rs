//! The shared data model: what a series is, how it is named, hashed and matched.
//!
//! - [`Labels`]: a sorted, immutable, cheaply clonable label set.
//! - [`Matcher`]: the four PromQL matcher kinds with anchored regexes.
//! - [`hash`]: FNV-1 32 shard tokens, FNV-1a 64 fingerprints (Cortex/Prometheus compatible).
//! - [`tenant`]: tenant ID validation and the `X-Scope-OrgID` header name.
//! - [`Sample`]: one (timestamp ms, value) point.

pub mod duration;
pub mod hash;
pub mod labels;
pub mod matcher;
pub mod tenant;

pub use duration::GoDuration;
pub use hash::{fingerprint, shard_token_by_all_labels, shard_token_by_metric, Fingerprint};
pub use labels::{Label, Labels, LabelsBuilder, METRIC_NAME};
pub use matcher::{matches_all, MatchType, Matcher, MatcherError};

/// One sample: timestamp in milliseconds since the Unix epoch and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// A series with its samples, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// The bit pattern Prometheus uses for a staleness marker (a special NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True if `v` is exactly Prometheus's staleness-marker NaN.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The staleness-marker NaN value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
