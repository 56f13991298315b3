//! The real ring as the distributor's [`ReplicaPicker`], and the contract
//! constructor [`Distributor::new`].

use std::sync::Arc;

use server::HttpError;

use crate::replication::{Replica, ReplicaPicker, ReplicaSet};
use crate::{Config, Distributor, Limits};

impl ReplicaPicker for ring::Ring {
    fn get(&self, token: u32, extend_writes: bool) -> Result<ReplicaSet, HttpError> {
        let op = if extend_writes {
            ring::Operation::Write
        } else {
            ring::Operation::WriteNoExtend
        };
        // No replica set is a server-side condition (ingesters down or
        // joining): 500, so that Prometheus retries.
        let set = ring::Ring::get(self, token, op).map_err(|e| HttpError::internal(e.to_string()))?;
        Ok(ReplicaSet {
            instances: set
                .instances
                .into_iter()
                .map(|i| Replica { id: i.id, addr: i.addr })
                .collect(),
            max_errors: set.max_errors,
        })
    }

    fn replication_factor(&self) -> usize {
        ring::Ring::replication_factor(self)
    }

    fn member_addrs(&self) -> Option<Vec<Arc<str>>> {
        Some(
            self.desc()
                .ingesters
                .values()
                .map(|i| Arc::from(i.addr.as_str()))
                .collect(),
        )
    }
}

impl Distributor {
    /// A distributor writing to the ingesters of `ring` through `pool`.
    pub fn new(
        cfg: Config,
        limits: Limits,
        ring: ring::Ring,
        pool: server::IngesterPool,
        metrics: &server::Metrics,
    ) -> Arc<Distributor> {
        Distributor::with_replica_picker(cfg, limits, Arc::new(ring), Arc::new(pool), metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::{Desc, InstanceDesc, InstanceState, RingConfig};

    fn desc(states: &[InstanceState]) -> Desc {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut d = Desc::default();
        for (i, state) in states.iter().enumerate() {
            d.ingesters.insert(
                format!("ing-{i}"),
                InstanceDesc {
                    addr: format!("127.0.0.1:{}", 9000 + i),
                    timestamp: now,
                    state: *state as i32,
                    // Interleaved tokens so every instance owns part of the ring.
                    tokens: (0..16u32).map(|k| k * 0x1000_0000 / 2 + i as u32 * 1000).collect(),
                    ..Default::default()
                },
            );
        }
        d
    }

    fn ring_of(states: &[InstanceState]) -> ring::Ring {
        let cfg = RingConfig {
            replication_factor: 3,
            ..RingConfig::default()
        };
        ring::Ring::from_desc(cfg, desc(states))
    }

    #[test]
    fn write_sets_come_from_the_ring() {
        let r = ring_of(&[InstanceState::Active; 3]);
        let set = ReplicaPicker::get(&r, model::shard_token_by_metric("t", b"up"), true).unwrap();
        assert_eq!(set.instances.len(), 3);
        assert_eq!(set.max_errors, 1);
        let mut ids: Vec<_> = set.instances.iter().map(|i| i.id.to_string()).collect();
        ids.sort();
        assert_eq!(ids, vec!["ing-0", "ing-1", "ing-2"]);
        assert_eq!(ReplicaPicker::replication_factor(&r), 3);
        let mut addrs: Vec<_> = r.member_addrs().unwrap().iter().map(|a| a.to_string()).collect();
        addrs.sort();
        assert_eq!(addrs, vec!["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"]);
    }

    #[test]
    fn too_few_live_replicas_is_500() {
        let r = ring_of(&[InstanceState::Active, InstanceState::Leaving, InstanceState::Leaving]);
        let e = ReplicaPicker::get(&r, 42, true).unwrap_err();
        assert_eq!(e.code, 500);
        assert!(e.message.contains("live replicas required"), "{}", e.message);
    }

    #[tokio::test]
    async fn distributor_new_uses_the_ring() {
        let metrics = server::Metrics::new();
        let d = Distributor::new(
            Config::default(),
            Limits::default(),
            ring_of(&[InstanceState::Active; 3]),
            server::IngesterPool::new(std::time::Duration::from_millis(100)),
            &metrics,
        );
        assert!(metrics.encode().contains("cortex_distributor_replication_factor 3"));
        // Nothing listens on the ring's addresses: the write fails retryably.
        let req = proto::cortex::WriteRequest {
            timeseries: vec![proto::cortex::TimeSeries {
                labels: vec![proto::cortex::LabelPair {
                    name: bytes::Bytes::from_static(b"__name__"),
                    value: bytes::Bytes::from_static(b"up"),
                }],
                samples: vec![proto::cortex::Sample {
                    value: 1.0,
                    timestamp_ms: model::now_ms(),
                }],
            }],
            ..Default::default()
        };
        assert_eq!(d.push("t", req).await.unwrap_err().code, 500);
    }
}
