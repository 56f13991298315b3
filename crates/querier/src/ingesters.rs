//! Reading from ingesters: choose the replicas, fan out, tolerate the
//! replication set's allowed failures, merge replicas' answers.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use chunk::{XorChunk, ENCODING_PROMETHEUS_XOR};
use futures::stream::{FuturesUnordered, StreamExt};
use model::{Labels, Matcher, Sample, Series};
use proto::cortex::ingester_client::IngesterClient;
use proto::cortex::{self as pb, LabelMatcher, LabelPair};
use ring::{Operation, ReplicationSet, Ring};
use server::{HttpError, IngesterPool};
use tonic::transport::Channel;

/// Queries the ingesters that hold a tenant's recent data.
#[derive(Clone)]
pub struct IngesterQuerier {
    ring: Ring,
    pool: IngesterPool,
    shard_by_all_labels: bool,
}

impl IngesterQuerier {
    pub fn new(ring: Ring, pool: IngesterPool, shard_by_all_labels: bool) -> Self {
        IngesterQuerier {
            ring,
            pool,
            shard_by_all_labels,
        }
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
        let rs = self.replication_set(tenant, matchers)?;
        let req = pb::QueryRequest {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: to_proto(matchers),
        };
        let responses = self
            .fan_out(rs, |mut c| {
                let req = server::tenant::grpc_request(tenant, req.clone());
                async move {
                    let mut stream = c.query_stream(req).await?.into_inner();
                    let mut batches = Vec::new();
                    while let Some(batch) = stream.message().await? {
                        batches.push(batch);
                    }
                    Ok(batches)
                }
            })
            .await?;
        let mut merged: HashMap<Labels, Vec<Sample>> = HashMap::new();
        for batch in responses.into_iter().flatten() {
            for cs in batch.chunkseries {
                let samples = merged.entry(labels_from_proto(&cs.labels)).or_default();
                for c in cs.chunks {
                    if c.encoding != ENCODING_PROMETHEUS_XOR {
                        return Err(HttpError::internal(format!(
                            "unsupported chunk encoding {}",
                            c.encoding
                        )));
                    }
                    let chunk = XorChunk::from_bytes(c.data)
                        .map_err(|e| HttpError::internal(format!("corrupt chunk from ingester: {e}")))?;
                    samples.extend(
                        chunk
                            .iter()
                            .filter(|(t, _)| *t >= start && *t <= end)
                            .map(|(t, v)| Sample { t, v }),
                    );
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
        }
        let mut out: Vec<Series> = merged
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(labels, mut samples)| {
                // Replicas hold identical samples: keep one per timestamp.
                samples.sort_by_key(|s| s.t);
                samples.dedup_by_key(|s| s.t);
                Series { labels, samples }
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
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
        self.ingesters
            .select(self.tenant, start_ms, end_ms, matchers)
            .await
            .map_err(|e| promql::StorageError {
                code: e.code,
                message: e.message,
            })
    }
}
