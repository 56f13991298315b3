//! The fair queue (spec §7.2): one bounded FIFO per tenant, tenants served round-robin per
//! querier connection, requests whose caller has gone dropped, tenants optionally restricted to
//! a deterministic subset of queriers (shuffle sharding). A tenant's queue exists only while it
//! holds requests.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use proto::httpgrpc::{HttpRequest, HttpResponse};
use server::Metrics;
use tokio::sync::{oneshot, Notify};

use crate::error::FrontendError;

pub type Reply = oneshot::Sender<Result<HttpResponse, FrontendError>>;

/// A request waiting for a querier.
pub struct Queued {
    pub tenant: String,
    pub request: HttpRequest,
    pub enqueued: Instant,
    /// Dropped by the caller when it goes away; a closed reply means nobody waits any more.
    pub reply: Reply,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UserLabels {
    user: String,
}

#[derive(Clone)]
struct QueueMetrics {
    queue_length: Family<UserLabels, Gauge>,
    discarded: Family<UserLabels, Counter>,
    queue_duration: Histogram,
    connected_clients: Gauge,
}

impl QueueMetrics {
    fn new(m: &Metrics) -> Self {
        let q = QueueMetrics {
            queue_length: Family::default(),
            discarded: Family::default(),
            queue_duration: Histogram::new(exponential_buckets(0.005, 4.0, 8)),
            connected_clients: Gauge::default(),
        };
        m.register(
            "cortex_query_frontend_queue_length",
            "Number of queries in the queue.",
            q.queue_length.clone(),
        );
        m.register(
            "cortex_query_frontend_discarded_requests",
            "Total number of query requests discarded.",
            q.discarded.clone(),
        );
        m.register(
            "cortex_query_frontend_queue_duration_seconds",
            "Time spend by requests queued.",
            q.queue_duration.clone(),
        );
        m.register(
            "cortex_query_frontend_connected_clients",
            "Number of worker clients currently connected to the frontend.",
            q.connected_clients.clone(),
        );
        q
    }
}

struct TenantQueue {
    requests: VecDeque<Queued>,
    /// The queriers allowed to serve it; `None` = all.
    queriers: Option<HashSet<String>>,
}

#[derive(Default)]
struct Queues {
    tenants: HashMap<String, TenantQueue>,
    /// Round-robin order; a removed tenant leaves a hole that the next new tenant fills.
    slots: Vec<Option<String>>,
    /// Connected querier IDs → number of open connections (streams).
    queriers: BTreeMap<String, usize>,
}

pub struct RequestQueue {
    inner: Mutex<Queues>,
    /// Woken on every enqueue, querier change and stop.
    wake: Notify,
    max_per_tenant: usize,
    max_queriers_per_tenant: usize,
    stopped: std::sync::atomic::AtomicBool,
    metrics: QueueMetrics,
}

impl RequestQueue {
    pub fn new(max_per_tenant: usize, max_queriers_per_tenant: usize, metrics: &Metrics) -> Arc<Self> {
        Arc::new(RequestQueue {
            inner: Mutex::new(Queues::default()),
            wake: Notify::new(),
            max_per_tenant: max_per_tenant.max(1),
            max_queriers_per_tenant,
            stopped: Default::default(),
            metrics: QueueMetrics::new(metrics),
        })
    }

    /// Queues `request` for `tenant`; the receiver gets the querier's answer.
    pub fn enqueue(
        &self,
        tenant: &str,
        request: HttpRequest,
    ) -> Result<oneshot::Receiver<Result<HttpResponse, FrontendError>>, FrontendError> {
        let (reply, rx) = oneshot::channel();
        {
            let mut g = self.inner.lock();
            let q = &mut *g;
            if !q.tenants.contains_key(tenant) {
                match q.slots.iter().position(Option::is_none) {
                    Some(i) => q.slots[i] = Some(tenant.to_string()),
                    None => q.slots.push(Some(tenant.to_string())),
                }
                let queriers = shuffle_shard(tenant, &q.queriers, self.max_queriers_per_tenant);
                q.tenants.insert(
                    tenant.to_string(),
                    TenantQueue {
                        requests: VecDeque::new(),
                        queriers,
                    },
                );
            }
            let tq = q.tenants.get_mut(tenant).expect("inserted above");
            if tq.requests.len() >= self.max_per_tenant {
                self.metrics
                    .discarded
                    .get_or_create(&UserLabels { user: tenant.into() })
                    .inc();
                return Err(FrontendError::TooManyOutstanding);
            }
            tq.requests.push_back(Queued {
                tenant: tenant.to_string(),
                request,
                enqueued: Instant::now(),
                reply,
            });
            self.metrics
                .queue_length
                .get_or_create(&UserLabels { user: tenant.into() })
                .set(tq.requests.len() as i64);
        }
        self.wake.notify_waiters();
        Ok(rx)
    }

    /// The next request for `querier`, round-robin over tenants starting after `*last_slot`
    /// (each querier connection keeps its own position). `None` once the queue is stopped.
    pub async fn next(&self, querier: &str, last_slot: &mut Option<usize>) -> Option<Queued> {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before looking, so an enqueue between the look and the wait is not missed.
            woken.as_mut().enable();
            if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
                return None;
            }
            if let Some(q) = self.try_next(querier, last_slot) {
                self.metrics.queue_duration.observe(q.enqueued.elapsed().as_secs_f64());
                return Some(q);
            }
            woken.await;
        }
    }

    fn try_next(&self, querier: &str, last_slot: &mut Option<usize>) -> Option<Queued> {
        let mut g = self.inner.lock();
        let q = &mut *g;
        let n = q.slots.len();
        let first = last_slot.map_or(0, |s| s + 1);
        for i in 0..n {
            let slot = (first + i) % n;
            let Some(tenant) = q.slots[slot].clone() else { continue };
            let tq = q.tenants.get_mut(&tenant).expect("slot names a live tenant");
            if tq.queriers.as_ref().is_some_and(|allowed| !allowed.contains(querier)) {
                continue;
            }
            let mut found = None;
            while let Some(r) = tq.requests.pop_front() {
                // The caller has gone: nobody would read the answer.
                if !r.reply.is_closed() {
                    found = Some(r);
                    break;
                }
            }
            let left = tq.requests.len();
            if left == 0 {
                q.tenants.remove(&tenant);
                q.slots[slot] = None;
                while q.slots.last().is_some_and(Option::is_none) {
                    q.slots.pop();
                }
                self.metrics.queue_length.remove(&UserLabels { user: tenant });
            } else {
                self.metrics
                    .queue_length
                    .get_or_create(&UserLabels { user: tenant })
                    .set(left as i64);
            }
            if found.is_some() {
                *last_slot = Some(slot);
                return found;
            }
        }
        None
    }

    /// A querier connection opened; the returned guard closes it.
    pub fn register_querier(self: &Arc<Self>, id: &str) -> QuerierConnection {
        {
            let mut q = self.inner.lock();
            let first = {
                let c = q.queriers.entry(id.to_string()).or_insert(0);
                *c += 1;
                *c == 1
            };
            if first {
                self.reshard(&mut q);
            }
        }
        self.metrics.connected_clients.inc();
        self.wake.notify_waiters();
        QuerierConnection {
            queue: self.clone(),
            id: id.to_string(),
        }
    }

    fn unregister_querier(&self, id: &str) {
        let mut q = self.inner.lock();
        let gone = match q.queriers.get_mut(id) {
            Some(c) => {
                *c -= 1;
                *c == 0
            }
            None => false,
        };
        if gone {
            q.queriers.remove(id);
            self.reshard(&mut q);
        }
        self.metrics.connected_clients.dec();
        drop(q);
        self.wake.notify_waiters();
    }

    fn reshard(&self, q: &mut Queues) {
        if self.max_queriers_per_tenant == 0 {
            return;
        }
        let queriers = &q.queriers;
        for (tenant, tq) in q.tenants.iter_mut() {
            tq.queriers = shuffle_shard(tenant, queriers, self.max_queriers_per_tenant);
        }
    }

    /// Connected querier connections.
    pub fn connected_queriers(&self) -> usize {
        self.inner.lock().queriers.values().sum()
    }

    /// Requests waiting, over all tenants.
    pub fn len(&self) -> usize {
        self.inner.lock().tenants.values().map(|t| t.requests.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tenants with a queue right now.
    pub fn tenants(&self) -> usize {
        self.inner.lock().tenants.len()
    }

    /// Wakes every waiting querier with `None`; queued callers get an error.
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::Release);
        let drained: Vec<Queued> = {
            let mut q = self.inner.lock();
            q.slots.clear();
            q.tenants.drain().flat_map(|(_, t)| t.requests).collect()
        };
        for r in drained {
            let _ = r
                .reply
                .send(Err(FrontendError::Canceled("query-frontend stopping".into())));
        }
        self.wake.notify_waiters();
    }
}

/// A querier's open connection; dropping it unregisters.
pub struct QuerierConnection {
    queue: Arc<RequestQueue>,
    id: String,
}

impl Drop for QuerierConnection {
    fn drop(&mut self) {
        self.queue.unregister_querier(&self.id);
    }
}

/// The `n` queriers of `tenant`: a shuffle of the sorted querier IDs seeded by the tenant, so
/// every frontend picks the same subset. `None` (all queriers) when `n` is 0 or not fewer than
/// the queriers connected.
fn shuffle_shard(tenant: &str, queriers: &BTreeMap<String, usize>, n: usize) -> Option<HashSet<String>> {
    if n == 0 || n >= queriers.len() {
        return None;
    }
    let mut ids: Vec<&String> = queriers.keys().collect();
    let mut state = xxhash_rust::xxh64::xxh64(tenant.as_bytes(), 0);
    // Partial Fisher–Yates with splitmix64: only the first n places are needed.
    for i in 0..n {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let j = i + (z % (ids.len() - i) as u64) as usize;
        ids.swap(i, j);
    }
    Some(ids[..n].iter().map(|s| s.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn req(url: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn full_tenant_queue_is_429_and_others_still_enqueue() {
        let q = RequestQueue::new(2, 0, &Metrics::new());
        let _a = q.enqueue("a", req("1")).unwrap();
        let _b = q.enqueue("a", req("2")).unwrap();
        assert!(matches!(
            q.enqueue("a", req("3")),
            Err(FrontendError::TooManyOutstanding)
        ));
        assert!(q.enqueue("b", req("1")).is_ok());
    }

    #[tokio::test]
    async fn round_robin_across_tenants_and_empty_queues_removed() {
        let q = RequestQueue::new(100, 0, &Metrics::new());
        let mut keep = vec![];
        for i in 0..3 {
            keep.push(q.enqueue("a", req(&format!("a{i}"))).unwrap());
        }
        keep.push(q.enqueue("b", req("b0")).unwrap());
        keep.push(q.enqueue("c", req("c0")).unwrap());
        let mut last = None;
        let mut order = vec![];
        for _ in 0..5 {
            order.push(q.next("q1", &mut last).await.unwrap().request.url);
        }
        assert_eq!(order, vec!["a0", "b0", "c0", "a1", "a2"]);
        assert_eq!(q.tenants(), 0, "no queue left behind once drained");
        assert!(q.inner.lock().slots.is_empty());
    }

    #[tokio::test]
    async fn requests_whose_caller_has_gone_are_dropped() {
        let q = RequestQueue::new(100, 0, &Metrics::new());
        let gone = q.enqueue("a", req("gone")).unwrap();
        let _waiting = q.enqueue("a", req("waiting")).unwrap();
        drop(gone);
        let mut last = None;
        assert_eq!(q.next("q1", &mut last).await.unwrap().request.url, "waiting");
    }

    #[tokio::test]
    async fn waiting_querier_is_woken_by_enqueue_and_stop() {
        let q = RequestQueue::new(100, 0, &Metrics::new());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            let mut last = None;
            q2.next("q1", &mut last).await.map(|r| r.request.url)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _rx = q.enqueue("a", req("x")).unwrap();
        assert_eq!(waiter.await.unwrap().as_deref(), Some("x"));
        let q3 = q.clone();
        let waiter = tokio::spawn(async move {
            let mut last = None;
            q3.next("q1", &mut last).await.is_none()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.stop();
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn shuffle_sharding_binds_a_tenant_to_n_queriers() {
        let q = RequestQueue::new(1000, 2, &Metrics::new());
        let conns: Vec<_> = (0..5).map(|i| q.register_querier(&format!("querier-{i}"))).collect();
        let mut keep = vec![];
        for i in 0..50 {
            keep.push(q.enqueue("tenant-x", req(&i.to_string())).unwrap());
        }
        // Each querier takes what it may; exactly two of them ever get tenant-x's requests.
        let mut served_by = HashSet::new();
        for _round in 0..50 {
            for i in 0..5 {
                let id = format!("querier-{i}");
                let mut last = None;
                if q.try_next(&id, &mut last).is_some() {
                    served_by.insert(id);
                }
            }
        }
        assert!(q.is_empty());
        assert_eq!(served_by.len(), 2, "{served_by:?}");
        // Deterministic: the same tenant and queriers give the same shard.
        let map: BTreeMap<String, usize> = (0..5).map(|i| (format!("querier-{i}"), 1)).collect();
        assert_eq!(shuffle_shard("tenant-x", &map, 2), Some(served_by));
        drop(conns);
        assert_eq!(q.connected_queriers(), 0);
    }

    /// A tenant with 200 queued queries must not hold up another tenant's single query: with
    /// one querier taking 1 ms per query, the single query waits about one query, not 200.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_tenant_does_not_delay_a_light_one() {
        let q = RequestQueue::new(1000, 0, &Metrics::new());
        let mut heavy = vec![];
        for i in 0..200 {
            heavy.push(q.enqueue("heavy", req(&format!("h{i}"))).unwrap());
        }
        let enqueued = Instant::now();
        let light = q.enqueue("light", req("l")).unwrap();
        let q2 = q.clone();
        let querier = tokio::spawn(async move {
            let mut last = None;
            while let Some(r) = q2.next("q1", &mut last).await {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let _ = r.reply.send(Ok(HttpResponse {
                    code: 200,
                    ..Default::default()
                }));
            }
        });
        light.await.unwrap().unwrap();
        let waited = enqueued.elapsed();
        // Two queries of ~1 ms (+ timer slack) at most; 200 would be > 200 ms.
        assert!(waited < Duration::from_millis(25), "light tenant waited {waited:?}");
        assert!(
            q.len() > 150,
            "the heavy tenant's queue is still mostly there: {}",
            q.len()
        );
        q.stop();
        querier.await.unwrap();
    }
}
