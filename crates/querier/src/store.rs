//! Reading the chunk store and merging it with the ingesters (spec §6.1): the ingesters are asked
//! for `[max(start, now − query_ingesters_within), end]`, the store for the whole range unless
//! `start > now − query_store_after`; both answers are merged per series and deduplicated by
//! timestamp (replicas, and chunks both flushed and still in an ingester's memory).

use std::sync::Arc;

use model::{Matcher, Series};
use promql::SampleLimit;
use server::HttpError;
use storage::ChunkStore;

use crate::ingesters::{IngesterQuerier, SelectError};
use crate::merge::{append_in_range, into_series, open_chunk, Gathered};

/// The store side of a querier.
#[derive(Clone)]
pub struct StoreQuerier {
    store: Arc<dyn ChunkStore>,
    /// `-querier.query-ingesters-within` in ms (0 = always ask the ingesters).
    pub query_ingesters_within_ms: i64,
    /// `-querier.query-store-after` in ms (0 = always ask the store).
    pub query_store_after_ms: i64,
}

impl StoreQuerier {
    pub fn new(store: Arc<dyn ChunkStore>, query_ingesters_within_ms: i64, query_store_after_ms: i64) -> Self {
        StoreQuerier {
            store,
            query_ingesters_within_ms,
            query_store_after_ms,
        }
    }

    /// Series of the store's chunks overlapping [start, end], samples clipped to the range.
    pub async fn select(
        &self,
        tenant: &str,
        start: i64,
        end: i64,
        matchers: &[Matcher],
        limit: &SampleLimit,
    ) -> Result<Vec<Series>, SelectError> {
        let chunks = self.chunks(tenant, start, end, matchers).await?;
        let mut merged = Gathered::new();
        for c in chunks {
            let x = open_chunk(c.encoding, c.data, "the store").map_err(SelectError::Http)?;
            // Charge before decoding: a query over too much stored data stops here.
            limit.add(x.num_samples()).map_err(|_| SelectError::TooManySamples)?;
            append_in_range(merged.entry(c.labels).or_default(), &x, start, end);
        }
        Ok(into_series(merged))
    }

    /// The store's chunks overlapping [start, end], still encoded (remote read passes them on).
    pub(crate) async fn chunks(
        &self,
        tenant: &str,
        start: i64,
        end: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<storage::ChunkEntry>, SelectError> {
        self.store
            .get(tenant, start, end, matchers)
            .await
            .map_err(|e| SelectError::Http(HttpError::new(e.code, e.message)))
    }

    /// Which part of [start, end] to ask the ingesters for (`None`: none of it), and whether
    /// to ask the store.
    pub(crate) fn plan(&self, start: i64, end: i64) -> (Option<i64>, bool) {
        let now = model::now_ms();
        let ingester_start = if self.query_ingesters_within_ms > 0 {
            start.max(now - self.query_ingesters_within_ms)
        } else {
            start
        };
        let ask_store = self.query_store_after_ms == 0 || start <= now - self.query_store_after_ms;
        ((ingester_start <= end).then_some(ingester_start), ask_store)
    }
}

/// Ingesters + store, merged (spec §6.1). Without a store this is the ingesters' answer.
pub async fn select_merged(
    ingesters: &IngesterQuerier,
    tenant: &str,
    start: i64,
    end: i64,
    matchers: &[Matcher],
    limit: &SampleLimit,
) -> Result<Vec<Series>, SelectError> {
    let Some(store) = ingesters.store() else {
        return ingesters.select_limited(tenant, start, end, matchers, limit).await;
    };
    let (ingester_start, ask_store) = store.plan(start, end);
    let from_ingesters = async {
        if let Some(ingester_start) = ingester_start {
            ingesters
                .select_limited(tenant, ingester_start, end, matchers, limit)
                .await
        } else {
            Ok(Vec::new())
        }
    };
    let from_store = async {
        if ask_store {
            store.select(tenant, start, end, matchers, limit).await
        } else {
            Ok(Vec::new())
        }
    };
    let (a, b) = futures::future::join(from_ingesters, from_store).await;
    Ok(merge_series(a?, b?))
}

/// Merges series by label set; samples sorted, one per timestamp.
pub fn merge_series(a: Vec<Series>, b: Vec<Series>) -> Vec<Series> {
    if b.is_empty() {
        return a;
    }
    let mut merged = Gathered::with_capacity(a.len() + b.len());
    for s in a.into_iter().chain(b) {
        merged.entry(s.labels).or_default().extend(s.samples);
    }
    into_series(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chunk::{XorChunk, ENCODING_PROMETHEUS_XOR};
    use model::{Labels, Sample};
    use storage::{ChunkEntry, StoreError};

    fn series(name: &str, ts: &[i64]) -> Series {
        Series {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: ts.iter().map(|&t| Sample { t, v: t as f64 }).collect(),
        }
    }

    #[test]
    fn merge_dedupes_overlap() {
        let m = merge_series(
            vec![series("a", &[3, 4, 5]), series("b", &[1])],
            vec![series("a", &[1, 2, 3, 4])],
        );
        assert_eq!(m.len(), 2);
        let ts: Vec<i64> = m[0].samples.iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![1, 2, 3, 4, 5]);
    }

    struct OneChunk(ChunkEntry);

    #[async_trait::async_trait]
    impl ChunkStore for OneChunk {
        async fn put(&self, _c: Vec<ChunkEntry>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn get(&self, _t: &str, _f: i64, _th: i64, m: &[Matcher]) -> Result<Vec<ChunkEntry>, StoreError> {
            if m.is_empty() {
                return Err(StoreError::bad_request("query must contain metric name"));
            }
            Ok(vec![self.0.clone()])
        }
    }

    #[tokio::test]
    async fn store_select_decodes_clips_and_limits() {
        let mut x = XorChunk::new();
        for t in 0..10 {
            x.append(t * 1000, t as f64);
        }
        let c = ChunkEntry {
            tenant: "t".into(),
            fingerprint: 1,
            labels: Labels::from_pairs([("__name__", "up")]),
            from_ms: 0,
            through_ms: 9000,
            encoding: ENCODING_PROMETHEUS_XOR,
            data: Bytes::copy_from_slice(x.bytes()),
        };
        let q = StoreQuerier::new(Arc::new(OneChunk(c)), 0, 0);
        let m = [Matcher::equal("__name__", "up")];
        let s = q.select("t", 2000, 4000, &m, &SampleLimit::new(100)).await.unwrap();
        assert_eq!(s[0].samples.len(), 3);
        assert!(matches!(
            q.select("t", 0, 9000, &m, &SampleLimit::new(5)).await,
            Err(SelectError::TooManySamples)
        ));
        match q.select("t", 0, 9000, &[], &SampleLimit::new(100)).await {
            Err(SelectError::Http(e)) => assert_eq!(e.code, 400),
            _ => panic!("expected the store's error"),
        }
    }
}
