//! Replication and quorum writes (spec §1.7, Cortex's `ring.DoBatch`).
//!
//! Every key (a series or a metadata entry) has a replica set. Keys are
//! grouped by ingester into one Push per ingester; the write succeeds once
//! every key reached `len(instances) − max_errors` successes and fails as soon
//! as any key saw more than `max_errors` failures. RPCs run as spawned tasks,
//! so the ones still outstanding when the outcome is known (or when the
//! client goes away) finish in the background.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use proto::cortex::WriteRequest;
use server::HttpError;
use tokio::sync::mpsc;

/// One ingester a key is written to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Ring instance ID: what writes are grouped by.
    pub id: Arc<str>,
    /// gRPC address (`host:port`).
    pub addr: Arc<str>,
}

/// The ingesters one key goes to and how many of them may fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSet {
    pub instances: Vec<Replica>,
    pub max_errors: usize,
}

/// Picks the replicas of a token: the ring in production, fixed sets in tests.
pub trait ReplicaPicker: Send + Sync + 'static {
    /// Replicas for a write of `token` (`extend_writes`: `Operation::Write`,
    /// else `Operation::WriteNoExtend`).
    fn get(&self, token: u32, extend_writes: bool) -> Result<ReplicaSet, HttpError>;
    fn replication_factor(&self) -> usize;
    /// Addresses of every ring member, so clients of departed ingesters can be
    /// dropped. `None` if unknown (then nothing is dropped).
    fn member_addrs(&self) -> Option<Vec<Arc<str>>> {
        None
    }
}

/// Sends one Push to one ingester.
pub trait IngesterPusher: Send + Sync + 'static {
    /// Pushes `req` for `tenant` to the ingester at `addr`. `timeout` is passed
    /// on to the ingester as the gRPC deadline; the caller also enforces it.
    fn push(
        &self,
        addr: &str,
        tenant: &str,
        req: WriteRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), HttpError>>;

    /// Drops cached connections to ingesters for which `live` is false.
    fn retain(&self, _live: &dyn Fn(&str) -> bool) {}
}

impl IngesterPusher for server::IngesterPool {
    fn push(
        &self,
        addr: &str,
        tenant: &str,
        req: WriteRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), HttpError>> {
        let client = self.get(addr);
        let mut request = server::tenant::grpc_request(tenant, req);
        request.set_timeout(timeout);
        Box::pin(async move {
            let mut client = client?;
            client
                .push(request)
                .await
                .map(|_| ())
                .map_err(|st| HttpError::from_grpc_status(&st))
        })
    }

    fn retain(&self, live: &dyn Fn(&str) -> bool) {
        server::IngesterPool::retain(self, live)
    }
}

/// What one more RPC result means for the whole write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumOutcome {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct KeyState {
    /// Successes still needed.
    needed: usize,
    /// Failures still tolerated.
    tolerated: usize,
}

/// Per-key success/failure accounting of one batch.
#[derive(Debug)]
pub struct QuorumTracker {
    keys: Vec<KeyState>,
    /// Keys that have not yet reached their minimum successes.
    pending: usize,
    failed: bool,
}

impl QuorumTracker {
    /// One entry per key: (number of replicas, max errors).
    pub fn new(keys: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let keys: Vec<KeyState> = keys
            .into_iter()
            .map(|(replicas, max_errors)| KeyState {
                needed: replicas.saturating_sub(max_errors),
                tolerated: max_errors,
            })
            .collect();
        let pending = keys.iter().filter(|k| k.needed > 0).count();
        QuorumTracker {
            keys,
            pending,
            failed: false,
        }
    }

    pub fn outcome(&self) -> QuorumOutcome {
        if self.failed {
            QuorumOutcome::Failed
        } else if self.pending == 0 {
            QuorumOutcome::Succeeded
        } else {
            QuorumOutcome::Pending
        }
    }

    /// Records one ingester's result for the keys it was sent.
    pub fn record(&mut self, keys: &[u32], ok: bool) -> QuorumOutcome {
        if self.outcome() != QuorumOutcome::Pending {
            return self.outcome();
        }
        for &k in keys {
            let key = &mut self.keys[k as usize];
            if ok {
                if key.needed > 0 {
                    key.needed -= 1;
                    if key.needed == 0 {
                        self.pending -= 1;
                    }
                }
            } else if key.needed > 0 {
                // A key that already reached quorum cannot fail any more.
                if key.tolerated == 0 {
                    self.failed = true;
                    return QuorumOutcome::Failed;
                }
                key.tolerated -= 1;
            }
        }
        self.outcome()
    }
}

/// One ingester's share of a batch.
pub struct IngesterJob {
    /// Indexes of the keys this ingester was sent.
    pub keys: Vec<u32>,
    /// The RPC (with its timeout and metrics), run as a spawned task.
    pub rpc: BoxFuture<'static, Result<(), HttpError>>,
}

/// Runs every job in the background and returns as soon as the quorum of every
/// key is reached (Ok) or any key failed (the error of the ingester that made
/// it fail).
pub async fn do_batch(mut tracker: QuorumTracker, jobs: Vec<IngesterJob>) -> Result<(), HttpError> {
    if tracker.outcome() == QuorumOutcome::Succeeded {
        return Ok(());
    }
    // Capacity = number of jobs: a task's send never waits, even after we
    // stopped listening (the send then fails and the result is dropped).
    let (tx, mut rx) = mpsc::channel(jobs.len().max(1));
    let mut keys_of_job = Vec::with_capacity(jobs.len());
    for (j, job) in jobs.into_iter().enumerate() {
        keys_of_job.push(job.keys);
        let tx = tx.clone();
        let rpc = job.rpc;
        tokio::spawn(async move {
            let result = rpc.await;
            let _ = tx.send((j, result)).await;
        });
    }
    drop(tx);
    while let Some((j, result)) = rx.recv().await {
        match tracker.record(&keys_of_job[j], result.is_ok()) {
            QuorumOutcome::Pending => {}
            QuorumOutcome::Succeeded => return Ok(()),
            QuorumOutcome::Failed => {
                return Err(result.err().unwrap_or_else(|| HttpError::internal("quorum failed")));
            }
        }
    }
    // Every RPC answered and some key is still short of its quorum: the
    // replica sets were smaller than their own minimum (a picker bug).
    Err(HttpError::internal(
        "not enough ingesters answered to reach the write quorum",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(keys: Vec<u32>, delay_ms: u64, result: Result<(), HttpError>) -> IngesterJob {
        IngesterJob {
            keys,
            rpc: Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                result
            }),
        }
    }

    #[test]
    fn tracker_rf3_tolerates_one_failure() {
        // Two keys, each on 3 replicas, max_errors 1.
        let mut t = QuorumTracker::new([(3, 1), (3, 1)]);
        assert_eq!(t.record(&[0, 1], false), QuorumOutcome::Pending);
        assert_eq!(t.record(&[0, 1], true), QuorumOutcome::Pending);
        assert_eq!(t.record(&[0], true), QuorumOutcome::Pending);
        assert_eq!(t.record(&[1], true), QuorumOutcome::Succeeded);
    }

    #[test]
    fn tracker_fails_when_one_key_exceeds_max_errors() {
        let mut t = QuorumTracker::new([(3, 1), (3, 1)]);
        assert_eq!(t.record(&[0], false), QuorumOutcome::Pending);
        assert_eq!(t.record(&[1], true), QuorumOutcome::Pending);
        assert_eq!(t.record(&[0], false), QuorumOutcome::Failed);
        // Decided is decided.
        assert_eq!(t.record(&[0, 1], true), QuorumOutcome::Failed);
    }

    #[test]
    fn tracker_ignores_failures_after_quorum() {
        let mut t = QuorumTracker::new([(3, 1), (3, 1)]);
        t.record(&[0], true);
        t.record(&[0], true); // key 0 done
        assert_eq!(t.record(&[0, 1], false), QuorumOutcome::Pending);
        assert_eq!(
            t.record(&[0], false),
            QuorumOutcome::Pending,
            "key 0 already has its quorum"
        );
        assert_eq!(t.record(&[1], true), QuorumOutcome::Pending);
        assert_eq!(t.record(&[1], true), QuorumOutcome::Succeeded);
    }

    #[test]
    fn tracker_with_no_keys_is_done() {
        assert_eq!(QuorumTracker::new([]).outcome(), QuorumOutcome::Succeeded);
    }

    #[tokio::test(start_paused = true)]
    async fn batch_returns_at_quorum_without_waiting_for_slow_replica() {
        let t = QuorumTracker::new([(3, 1)]);
        let started = tokio::time::Instant::now();
        let r = do_batch(
            t,
            vec![
                job(vec![0], 10, Ok(())),
                job(vec![0], 20, Ok(())),
                job(vec![0], 60_000, Ok(())),
            ],
        )
        .await;
        assert_eq!(r, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn batch_returns_the_error_that_broke_the_quorum() {
        let t = QuorumTracker::new([(3, 1)]);
        let r = do_batch(
            t,
            vec![
                job(vec![0], 10, Err(HttpError::new(400, "first"))),
                job(vec![0], 20, Err(HttpError::new(429, "second"))),
                job(vec![0], 30, Ok(())),
            ],
        )
        .await;
        assert_eq!(r, Err(HttpError::new(429, "second")));
    }

    #[tokio::test(start_paused = true)]
    async fn outstanding_rpcs_finish_after_return() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let slow = IngesterJob {
            keys: vec![0],
            rpc: Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = done_tx.send(());
                Ok(())
            }),
        };
        let r = do_batch(QuorumTracker::new([(2, 1)]), vec![job(vec![0], 1, Ok(())), slow]).await;
        assert_eq!(r, Ok(()));
        // The slow RPC was not cancelled by do_batch returning.
        done_rx.await.expect("background RPC ran to completion");
    }
}
