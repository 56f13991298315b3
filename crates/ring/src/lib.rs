//! The consistent hash ring (spec §2): which ingesters own which series.
//!
//! - [`codec`]: the stored form of a ring, protobuf `ring.Desc` then snappy block compression.
//! - [`kv`]: the KV stores holding it (consul, etcd, inmemory) behind [`kv::KvClient`].
//! - [`Ring`]: a read view of one ring key kept fresh by a KV watch; replication sets (§2.6) and
//!   the `/ring` status page (§2.5).
//! - [`Lifecycler`]: one member's life in the ring: register, join with tokens, heartbeat,
//!   readiness, leave (§2.3).

pub mod codec;
mod http;
pub mod kv;
mod lifecycler;
mod metrics;
mod ring;
pub mod tokens;

use std::sync::Arc;

pub use proto::ring::{Desc, InstanceDesc, InstanceState};

pub use codec::{decode_desc, encode_desc, CodecError};
pub use lifecycler::{Lifecycler, LifecyclerConfig};
pub use ring::{Ring, RingConfig};

/// The ingester ring's key; stored under the prefix `collectors/` → `collectors/ring`.
pub const INGESTER_RING_KEY: &str = "ring";

/// What a replication set is for; decides which instance states count as healthy and whether
/// the set is extended past unusable instances (spec §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Healthy iff ACTIVE; every non-ACTIVE instance met extends the set by one.
    Write,
    /// Healthy iff ACTIVE; never extends.
    WriteNoExtend,
    /// Healthy iff ACTIVE, PENDING or LEAVING; extends on PENDING and JOINING.
    Read,
    /// Every live state is healthy; never extends.
    Reporting,
}

impl Operation {
    /// Whether an instance in `state` can serve this operation (heartbeat aside).
    pub fn is_healthy_state(self, state: InstanceState) -> bool {
        use InstanceState::*;
        match self {
            Operation::Write | Operation::WriteNoExtend => state == Active,
            Operation::Read => matches!(state, Active | Pending | Leaving),
            Operation::Reporting => matches!(state, Active | Leaving | Pending | Joining),
        }
    }

    /// Whether meeting an instance in `state` while walking the ring adds one more replica.
    pub fn extends_on(self, state: InstanceState) -> bool {
        use InstanceState::*;
        match self {
            Operation::Write => state != Active,
            Operation::Read => matches!(state, Pending | Joining),
            Operation::WriteNoExtend | Operation::Reporting => false,
        }
    }
}

/// One ring member as callers see it.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: Arc<str>,
    /// gRPC address `ip:port`.
    pub addr: Arc<str>,
    pub zone: Arc<str>,
    pub state: InstanceState,
    /// Unix seconds of the last heartbeat.
    pub timestamp: i64,
    /// Unix seconds when the instance registered (0 = unknown).
    pub registered_timestamp: i64,
}

/// The instances to send one request to, and how many of them may fail.
#[derive(Clone, Debug)]
pub struct ReplicationSet {
    pub instances: Vec<Instance>,
    pub max_errors: usize,
}

impl ReplicationSet {
    /// Successful responses needed: `instances − max_errors`.
    pub fn min_success(&self) -> usize {
        self.instances.len().saturating_sub(self.max_errors)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("empty ring")]
    Empty,
    #[error("at least {required} live replicas required, could only find {found}")]
    TooFewReplicas { required: usize, found: usize },
    #[error("too many unhealthy instances in the ring")]
    TooManyUnhealthy,
    #[error("ring KV store: {0}")]
    Kv(#[from] kv::KvError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("changing instance state from {from:?} to {to:?} is not allowed")]
    InvalidTransition { from: InstanceState, to: InstanceState },
    #[error("tokens file {path}: {reason}")]
    TokensFile { path: String, reason: String },
    #[error("invalid ring configuration: {0}")]
    Config(String),
}

/// Unix seconds, now.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The state of a stored instance; unknown numbers (a newer writer) read as ACTIVE would be
/// wrong, so they read as LEFT, which no operation treats as healthy.
pub(crate) fn state_of(desc: &InstanceDesc) -> InstanceState {
    InstanceState::try_from(desc.state).unwrap_or(InstanceState::Left)
}

/// Whether the heartbeat of `desc` is recent enough; a zero timeout disables the check.
pub(crate) fn heartbeat_fresh(desc: &InstanceDesc, timeout: std::time::Duration, now: i64) -> bool {
    timeout.is_zero() || now - desc.timestamp <= timeout.as_secs() as i64
}

/// Read-modify-write of a ring descriptor through the codec. `f` gets the current descriptor
/// (empty when the key is absent) and returns `Some(new)` to store it or `None` for no change;
/// it may run several times when writers race.
pub async fn cas_desc<F>(kv: &dyn kv::KvClient, key: &str, mut f: F) -> Result<(), RingError>
where
    F: FnMut(Desc) -> Result<Option<Desc>, RingError> + Send,
{
    let mut failure: Option<RingError> = None;
    let result = kv
        .cas(key, &mut |old| {
            let desc = match old.as_deref().map(decode_desc).transpose() {
                Ok(d) => d.unwrap_or_default(),
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e.into());
                    return Err(kv::KvError::Aborted(msg));
                }
            };
            match f(desc) {
                Ok(None) => Ok(None),
                Ok(Some(new)) => match encode_desc(&new) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) => {
                        let msg = e.to_string();
                        failure = Some(e.into());
                        Err(kv::KvError::Aborted(msg))
                    }
                },
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    Err(kv::KvError::Aborted(msg))
                }
            }
        })
        .await;
    match (result, failure) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(original)) => Err(original),
        (Err(e), None) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_health_and_extension_rules() {
        use InstanceState::*;
        let all = [Active, Leaving, Pending, Joining, Left];
        let healthy = |op: Operation| {
            all.iter()
                .filter(|s| op.is_healthy_state(**s))
                .copied()
                .collect::<Vec<_>>()
        };
        let extends = |op: Operation| all.iter().filter(|s| op.extends_on(**s)).copied().collect::<Vec<_>>();
        assert_eq!(healthy(Operation::Write), vec![Active]);
        assert_eq!(extends(Operation::Write), vec![Leaving, Pending, Joining, Left]);
        assert_eq!(healthy(Operation::WriteNoExtend), vec![Active]);
        assert!(extends(Operation::WriteNoExtend).is_empty());
        assert_eq!(healthy(Operation::Read), vec![Active, Leaving, Pending]);
        assert_eq!(extends(Operation::Read), vec![Pending, Joining]);
        assert_eq!(healthy(Operation::Reporting), vec![Active, Leaving, Pending, Joining]);
        assert!(extends(Operation::Reporting).is_empty());
    }
}
