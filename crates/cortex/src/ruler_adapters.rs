//! What the ruler reads from and writes to in this process: the querier's merge of
//! ingesters and chunk store, and the distributor's push path (source RULE).

use std::sync::Arc;

use async_trait::async_trait;
use proto::cortex::WriteRequest;

/// The querier's reader bound to one tenant, owned so the ruler can keep it.
struct TenantReader {
    ingesters: querier::IngesterQuerier,
    tenant: String,
}

#[async_trait]
impl promql::Queryable for TenantReader {
    async fn select(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[model::Matcher],
    ) -> Result<Vec<model::Series>, promql::StorageError> {
        let q = querier::ingesters::TenantQueryable {
            ingesters: &self.ingesters,
            tenant: &self.tenant,
        };
        q.select(start_ms, end_ms, matchers).await
    }

    async fn select_limited(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[model::Matcher],
        limit: &promql::SampleLimit,
    ) -> Result<Vec<model::Series>, promql::PromqlError> {
        let q = querier::ingesters::TenantQueryable {
            ingesters: &self.ingesters,
            tenant: &self.tenant,
        };
        q.select_limited(start_ms, end_ms, matchers, limit).await
    }
}

pub struct QuerierQueryables(pub querier::IngesterQuerier);

impl ruler::TenantQueryables for QuerierQueryables {
    fn queryable(&self, tenant: &str) -> Arc<dyn promql::Queryable> {
        Arc::new(TenantReader {
            ingesters: self.0.clone(),
            tenant: tenant.to_string(),
        })
    }
}

pub struct DistributorPusher(pub Arc<distributor::Distributor>);

#[async_trait]
impl ruler::Pusher for DistributorPusher {
    async fn push(&self, tenant: &str, req: WriteRequest) -> Result<(), String> {
        self.0.push(tenant, req).await.map_err(|e| e.to_string())
    }
}

/// Builds the ruler over this process's ring: the querier's reader (with the chunk
/// store) and a distributor (this process's, or one of its own when the ruler runs alone).
pub fn start_ruler(
    cfg: &crate::Config,
    ring: &ring::Ring,
    pool: &server::IngesterPool,
    chunk_store: Option<Arc<storage::SeriesStore>>,
    distributor: Option<Arc<distributor::Distributor>>,
    metrics: &server::Metrics,
) -> Result<(Arc<ruler::Ruler>, tokio::task::JoinHandle<()>), ruler::RulerError> {
    let reader = querier::IngesterQuerier::new(ring.clone(), pool.clone(), cfg.distributor.shard_by_all_labels);
    if let Some(store) = chunk_store {
        reader.set_store(querier::store::StoreQuerier::new(
            store,
            cfg.querier.query_ingesters_within.as_millis(),
            cfg.querier.query_store_after.as_millis(),
        ));
    }
    let distributor = match distributor {
        Some(d) => d,
        None => distributor::Distributor::with_replica_picker(
            cfg.distributor.clone(),
            cfg.limits.clone(),
            Arc::new(ring.clone()),
            Arc::new(pool.clone()),
            metrics,
        ),
    };
    let engine = promql::Engine::new(promql::EngineOpts {
        lookback_delta: cfg.querier.lookback_delta.0,
        max_samples: cfg.querier.max_samples,
        timeout: cfg.querier.timeout.0,
        default_eval_interval: cfg.querier.default_evaluation_interval.0,
    });
    let r = ruler::Ruler::new(
        cfg.ruler.clone(),
        ruler::open_store(&cfg.ruler.storage)?,
        Arc::new(QuerierQueryables(reader)),
        Arc::new(DistributorPusher(distributor)),
        engine,
        metrics,
    );
    let task = r.spawn();
    Ok((r, task))
}
