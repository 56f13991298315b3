//! When the distributor and an ingester run in the same process, pushes for
//! that ingester are handed to it directly instead of travelling through a
//! loopback gRPC connection: the protobuf encode, HTTP/2 framing and second
//! decode of every series were the largest cost of the all-in-one write path.
//! Every other address still goes through the gRPC pool, so a process that is
//! one member of a larger ring behaves exactly as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use distributor::IngesterPusher;
use proto::cortex::WriteRequest;
use server::{HttpError, IngesterPool};

/// Direct calls for this process's ingester, the gRPC pool for every other.
pub struct LocalFirstPusher {
    /// The gRPC address this process's ingester registered in the ring.
    local_addr: String,
    ingester: Arc<ingester::Ingester>,
    pool: IngesterPool,
}

impl LocalFirstPusher {
    pub fn new(local_addr: String, ingester: Arc<ingester::Ingester>, pool: IngesterPool) -> Self {
        LocalFirstPusher {
            local_addr,
            ingester,
            pool,
        }
    }
}

impl IngesterPusher for LocalFirstPusher {
    fn push(
        &self,
        addr: &str,
        tenant: &str,
        req: WriteRequest,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), HttpError>> + Send + 'static>> {
        if addr != self.local_addr {
            return IngesterPusher::push(&self.pool, addr, tenant, req, timeout);
        }
        let ingester = self.ingester.clone();
        let tenant = tenant.to_string();
        Box::pin(async move { ingester.push(&tenant, req).await })
    }

    fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.pool.retain(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cortex::{LabelPair, Sample, TimeSeries};

    fn request(t: i64) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![LabelPair {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp_ms: t,
                }],
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn local_address_goes_to_the_ingester_and_keeps_its_errors() {
        let ing = ingester::Ingester::new(ingester::Config::default(), &server::Metrics::new());
        let pusher = LocalFirstPusher::new("10.0.0.1:9095".into(), ing.clone(), IngesterPool::default());
        let timeout = Duration::from_secs(1);
        pusher
            .push("10.0.0.1:9095", "t1", request(2000), timeout)
            .await
            .unwrap();
        assert_eq!(ing.user_stats("t1").num_series, 1);
        // An out-of-order sample is the ingester's 400, as over gRPC.
        let e = pusher
            .push("10.0.0.1:9095", "t1", request(1000), timeout)
            .await
            .unwrap_err();
        assert_eq!(e.code, 400, "{e:?}");
        assert!(e.message.contains("out of order"), "{}", e.message);
    }

    #[tokio::test]
    async fn other_addresses_use_grpc() {
        let ing = ingester::Ingester::new(ingester::Config::default(), &server::Metrics::new());
        let pusher = LocalFirstPusher::new(
            "10.0.0.1:9095".into(),
            ing.clone(),
            IngesterPool::new(Duration::from_millis(200)),
        );
        // Nothing listens on port 1: the gRPC path fails, and nothing reached the local ingester.
        let r = pusher
            .push("127.0.0.1:1", "t1", request(1000), Duration::from_secs(1))
            .await;
        assert!(r.is_err());
        assert_eq!(ing.user_stats("t1").num_series, 0);
    }
}
