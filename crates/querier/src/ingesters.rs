//! Reading from ingesters: choose the replicas, fan out, tolerate the
//! replication set's allowed failures, merge replicas' answers.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{FuturesUnordered, StreamExt};
use model::{Labels, Matcher, Sample, Series};
use promql::{SampleLimit, TooManySamples};
use proto::cortex::ingester_client::IngesterClient;
use proto::cortex::{self as pb, LabelMatcher, LabelPair};
use ring::{Operation, ReplicationSet, Ring};
use server::{HttpError, IngesterPool};
use tonic::transport::Channel;

use crate::merge::{append_in_range, into_series, open_chunk, Gathered};

/// Queries the ingesters that hold a tenant's recent data.
#[derive(Clone)]
pub struct IngesterQuerier {
    ring: Ring,
    pool: IngesterPool,
    shard_by_all_labels: bool,
    /// The chunk store merged into selects (spec §6.1), set once at wiring time.
    store: std::sync::Arc<std::sync::OnceLock<crate::store::StoreQuerier>>,
}

impl IngesterQuerier {
    pub fn new(ring: Ring, pool: IngesterPool, shard_by_all_labels: bool) -> Self {
        IngesterQuerier {
            ring,
            pool,
            shard_by_all_labels,
            store: Default::default(),
        }
    }

    /// Merges the chunk store into every select from now on (first call wins).
    pub fn set_store(&self, store: crate::store::StoreQuerier) {
        let _ = self.store.set(store);
    }

    pub fn store(&self) -> Option<&crate::store::StoreQuerier> {
        self.store.get()
    }

    /// With shard-by-metric-name and an equality matcher on `__name__`, only the
    /// metric's replicas hold it; otherwise every ingester may.
    fn replication_set(&self, tenant: &str, matchers: &[Matcher]) -> Result<ReplicationSet, HttpError> {
        let metric = matchers
            .iter()
            .find(|m| m.name == model::METRIC_NAME && m.kind == model::MatchType::Equal)
            .map(|m| m.value.as_str());
        let rs = match metric {
            Some(name) if !self.shard_by_all_labels => self
                .ring
                .get(model::shard_token_by_metric(tenant, name.as_bytes()), Operation::Read),
            _ => self.ring.replication_set_for_operation(Operation::Read),
        };
        rs.map_err(|e| HttpError::internal(e.to_string()))
    }

    /// Runs `f` on every instance in parallel; succeeds once all but
    /// `max_errors` instances answered, fails when more than `max_errors` failed.
    async fn fan_out<T, F, Fut>(&self, rs: ReplicationSet, f: F) -> Result<Vec<T>, HttpError>
    where
        F: Fn(IngesterClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let needed = rs.instances.len().saturating_sub(rs.max_errors);
        let mut pending = FuturesUnordered::new();
        for inst in &rs.instances {
            let client = self.pool.get(&inst.addr)?;
            let addr = inst.addr.clone();
            let fut = f(client);
            pending.push(async move { (addr, fut.await) });
        }
        let mut results = Vec::with_capacity(needed);
        let mut failures = 0;
        while let Some((addr, r)) = pending.next().await {
            match r {
                Ok(v) => {
                    results.push(v);
                    if results.len() >= needed {
                        break;
                    }
                }
                Err(st) => {
                    failures += 1;
                    tracing::warn!(ingester = %addr, error = %st.message(), "ingester query failed");
                    if failures > rs.max_errors {
                        return Err(HttpError::from_grpc_status(&st));
                    }
                }
            }
        }
        Ok(results)
    }

    /// Series matching `matchers` with samples in [start, end], replicas merged.
    pub async fn select(
        &self,
        tenant: &str,
        start: i64,
        end: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<Series>, HttpError> {
        let unlimited = SampleLimit::new(usize::MAX);
        self.select_limited(tenant, start, end, matchers, &unlimited)
            .await
            .map_err(|e| match e {
                SelectError::Http(e) => e,
                SelectError::TooManySamples => HttpError::new(422, promql::TooManySamples.to_string()),
            })
    }

    /// [`IngesterQuerier::select`], charging samples to `limit` as they arrive, so that a
    /// query over too much data stops before that data is in memory.
    ///
    /// Compressed chunks are counted while they stream in (the chunk header holds the
    /// sample count), against the remaining budget times the replication factor since
    /// every replica sends its copy; decoded samples are then charged exactly, once
    /// replicas are merged.
    pub async fn select_limited(
        &self,
        tenant: &str,
        start: i64,
        end: i64,
        matchers: &[Matcher],
        limit: &SampleLimit,
    ) -> Result<Vec<Series>, SelectError> {
        let responses = self.query_stream(tenant, start, end, matchers, limit).await?;
        let mut merged = Gathered::new();
        for batch in responses {
            merge_batch(&mut merged, batch, start, end)?;
        }
        let out = into_series(merged);
        limit
            .add(out.iter().map(|s| s.samples.len()).sum())
            .map_err(|_| SelectError::TooManySamples)?;
        Ok(out)
    }

    /// The replicas' streamed answers, chunks still encoded (remote read passes them on);
    /// what streams in is counted against `limit`'s remaining budget × replicas, nothing
    /// is charged to it.
    pub(crate) async fn query_stream(
        &self,
        tenant: &str,
        start: i64,
        end: i64,
        matchers: &[Matcher],
        limit: &SampleLimit,
    ) -> Result<Vec<pb::QueryStreamResponse>, SelectError> {
        let rs = self.replication_set(tenant, matchers)?;
        let req = pb::QueryRequest {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: to_proto(matchers),
        };
        let replicas = self.ring.replication_factor().clamp(1, rs.instances.len().max(1));
        let streamed_budget = limit.remaining().saturating_mul(replicas);
        let streamed = AtomicUsize::new(0);
        let responses = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(tenant, req.clone());
                let streamed = &streamed;
                async move {
                    let mut stream = c.query_stream(req).await?.into_inner();
                    let mut batches = Vec::new();
                    while let Some(batch) = stream.message().await? {
                        let n = streamed_samples(&batch);
                        if streamed.fetch_add(n, Ordering::Relaxed) + n > streamed_budget {
                            // Dropping the stream cancels the rest of this replica's answer.
                            return Ok(Err(TooManySamples));
                        }
                        batches.push(batch);
                    }
                    Ok(Ok(batches))
                }
            })
            .await?;
        let mut batches = Vec::new();
        for replica in responses {
            batches.extend(replica.map_err(|_| SelectError::TooManySamples)?);
        }
        Ok(batches)
    }

    pub async fn label_names(&self, tenant: &str) -> Result<Vec<String>, HttpError> {
        let rs = self.replication_set(tenant, &[])?;
        let all = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(tenant, pb::LabelNamesRequest::default());
                async move { Ok(c.label_names(req).await?.into_inner().label_names) }
            })
            .await?;
        Ok(all.into_iter().flatten().collect::<BTreeSet<_>>().into_iter().collect())
    }

    pub async fn label_values(&self, tenant: &str, name: &str) -> Result<Vec<String>, HttpError> {
        let rs = self.replication_set(tenant, &[])?;
        let all = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(
                    tenant,
                    pb::LabelValuesRequest {
                        label_name: name.to_string(),
                        ..Default::default()
                    },
                );
                async move { Ok(c.label_values(req).await?.into_inner().label_values) }
            })
            .await?;
        Ok(all.into_iter().flatten().collect::<BTreeSet<_>>().into_iter().collect())
    }

    /// Label sets of the series matching any of the matcher sets.
    pub async fn series(&self, tenant: &str, matcher_sets: &[Vec<Matcher>]) -> Result<Vec<Labels>, HttpError> {
        let rs = self.replication_set(tenant, &[])?;
        let req = pb::MetricsForLabelMatchersRequest {
            start_timestamp_ms: 0,
            end_timestamp_ms: 0,
            matchers_set: matcher_sets
                .iter()
                .map(|m| pb::LabelMatchers { matchers: to_proto(m) })
                .collect(),
        };
        let all = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(tenant, req.clone());
                async move { Ok(c.metrics_for_label_matchers(req).await?.into_inner().metric) }
            })
            .await?;
        let set: BTreeSet<Labels> = all
            .into_iter()
            .flatten()
            .map(|m| labels_from_proto(&m.labels))
            .collect();
        Ok(set.into_iter().collect())
    }

    pub async fn metadata(&self, tenant: &str) -> Result<Vec<pb::MetricMetadata>, HttpError> {
        let rs = self.replication_set(tenant, &[])?;
        let all = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(tenant, pb::MetricsMetadataRequest {});
                async move { Ok(c.metrics_metadata(req).await?.into_inner().metadata) }
            })
            .await?;
        let mut out: Vec<pb::MetricMetadata> = Vec::new();
        for m in all.into_iter().flatten() {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The tenant's series count and ingestion rate, summed over ingesters ÷ RF.
    pub async fn user_stats(&self, tenant: &str) -> Result<pb::UserStatsResponse, HttpError> {
        let rs = self
            .ring
            .replication_set_for_operation(Operation::Read)
            .map_err(|e| HttpError::internal(e.to_string()))?;
        let all = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(tenant, pb::UserStatsRequest {});
                async move { Ok(c.user_stats(req).await?.into_inner()) }
            })
            .await?;
        let rf = self.ring.replication_factor().max(1) as f64;
        let mut sum = pb::UserStatsResponse::default();
        for s in all {
            sum.ingestion_rate += s.ingestion_rate / rf;
            sum.num_series += (s.num_series as f64 / rf).round() as u64;
            sum.api_ingestion_rate += s.api_ingestion_rate / rf;
            sum.rule_ingestion_rate += s.rule_ingestion_rate / rf;
        }
        Ok(sum)
    }
}

/// Why a limited select failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{}", TooManySamples)]
    TooManySamples,
}

/// Samples in a streamed batch, read from the chunk headers without decoding.
fn streamed_samples(batch: &pb::QueryStreamResponse) -> usize {
    let in_chunks: usize = batch
        .chunkseries
        .iter()
        .flat_map(|cs| cs.chunks.iter())
        .map(|c| c.data.get(..2).map_or(0, |h| u16::from_be_bytes([h[0], h[1]]) as usize))
        .sum();
    let in_series: usize = batch.timeseries.iter().map(|ts| ts.samples.len()).sum();
    in_chunks + in_series
}

/// Decodes one streamed batch into `merged`, keeping samples in [start, end]. Each chunk
/// is decoded exactly once per query.
fn merge_batch(merged: &mut Gathered, batch: pb::QueryStreamResponse, start: i64, end: i64) -> Result<(), HttpError> {
    for cs in batch.chunkseries {
        let samples = merged.entry(labels_from_proto(&cs.labels)).or_default();
        for c in cs.chunks {
            append_in_range(samples, &open_chunk(c.encoding, c.data, "ingester")?, start, end);
        }
    }
    for ts in batch.timeseries {
        let samples = merged.entry(labels_from_proto(&ts.labels)).or_default();
        samples.extend(
            ts.samples
                .iter()
                .filter(|s| s.timestamp_ms >= start && s.timestamp_ms <= end)
                .map(|s| Sample {
                    t: s.timestamp_ms,
                    v: s.value,
                }),
        );
    }
    Ok(())
}

pub fn to_proto(matchers: &[Matcher]) -> Vec<LabelMatcher> {
    matchers
        .iter()
        .map(|m| LabelMatcher {
            r#type: m.kind as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

pub fn from_proto(matchers: &[LabelMatcher]) -> Result<Vec<Matcher>, HttpError> {
    matchers
        .iter()
        .map(|m| {
            Matcher::from_i32(m.r#type, m.name.clone(), m.value.clone())
                .map_err(|e| HttpError::bad_request(e.to_string()))
        })
        .collect()
}

pub fn labels_from_proto(pairs: &[LabelPair]) -> Labels {
    Labels::from_pairs(pairs.iter().map(|p| {
        (
            String::from_utf8_lossy(&p.name).into_owned(),
            String::from_utf8_lossy(&p.value).into_owned(),
        )
    }))
}

pub fn labels_to_proto(labels: &Labels) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|l| LabelPair {
            name: l.name.clone().into_bytes().into(),
            value: l.value.clone().into_bytes().into(),
        })
        .collect()
}

/// A tenant-bound view usable by the PromQL engine.
pub struct TenantQueryable<'a> {
    pub ingesters: &'a IngesterQuerier,
    pub tenant: &'a str,
}

#[async_trait::async_trait]
impl promql::Queryable for TenantQueryable<'_> {
    async fn select(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<Series>, promql::StorageError> {
        let unlimited = SampleLimit::new(usize::MAX);
        crate::store::select_merged(self.ingesters, self.tenant, start_ms, end_ms, matchers, &unlimited)
            .await
            .map_err(|e| match e {
                SelectError::Http(e) => promql::StorageError {
                    code: e.code,
                    message: e.message,
                },
                SelectError::TooManySamples => promql::StorageError {
                    code: 422,
                    message: promql::TooManySamples.to_string(),
                },
            })
    }

    async fn select_limited(
        &self,
        start_ms: i64,
        end_ms: i64,
        matchers: &[Matcher],
        limit: &SampleLimit,
    ) -> Result<Vec<Series>, promql::PromqlError> {
        match crate::store::select_merged(self.ingesters, self.tenant, start_ms, end_ms, matchers, limit).await {
            Ok(s) => Ok(s),
            Err(SelectError::TooManySamples) => Err(promql::PromqlError::TooManySamples),
            Err(SelectError::Http(e)) => Err(promql::PromqlError::Storage(promql::StorageError {
                code: e.code,
                message: e.message,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunk::{XorChunk, ENCODING_PROMETHEUS_XOR};
    use std::collections::HashMap;

    fn chunk_of(n: i64) -> pb::Chunk {
        let mut c = XorChunk::new();
        for t in 0..n {
            c.append(t * 1000, t as f64);
        }
        pb::Chunk {
            encoding: ENCODING_PROMETHEUS_XOR,
            data: bytes::Bytes::copy_from_slice(c.bytes()),
            ..Default::default()
        }
    }

    fn batch(chunks: Vec<pb::Chunk>) -> pb::QueryStreamResponse {
        pb::QueryStreamResponse {
            chunkseries: vec![pb::TimeSeriesChunk {
                labels: labels_to_proto(&Labels::from_pairs([("__name__", "m")])),
                chunks,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn streamed_samples_are_counted_from_chunk_headers() {
        assert_eq!(streamed_samples(&batch(vec![chunk_of(120), chunk_of(7)])), 127);
        assert_eq!(streamed_samples(&batch(vec![])), 0);
    }

    #[test]
    fn merged_batches_keep_the_range_and_decode_each_chunk_once() {
        let mut merged = HashMap::new();
        merge_batch(&mut merged, batch(vec![chunk_of(120)]), 10_000, 19_000).unwrap();
        merge_batch(&mut merged, batch(vec![chunk_of(120)]), 10_000, 19_000).unwrap();
        let samples = &merged[&Labels::from_pairs([("__name__", "m")])];
        // Two replicas' copies of 10 in-range samples, deduplicated later by select.
        assert_eq!(samples.len(), 20);
        assert!(samples.iter().all(|s| (10_000..=19_000).contains(&s.t)));
    }
}
