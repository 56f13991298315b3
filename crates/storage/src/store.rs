//! The series store (Cortex `seriesStore` behind a `compositeStore`): the write path with chunk-cache
//! and write-dedupe-cache deduplication (spec §4.7) and the query lookup (spec §4.5), over the
//! periods of the schema config.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use model::{MatchType, Matcher, METRIC_NAME};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::cache::Cache;
use crate::chunk_object::{self, ChunkRef};
use crate::index::{IndexClient, IndexRow};
use crate::keys::{dedupe_key, series_id};
use crate::object::ObjectClient;
use crate::schema::{parse_range_value, IndexEntry, IndexQuery, RangeValue, Schema};
use crate::schema_config::SchemaConfig;
use crate::{ChunkEntry, ChunkStore, StoreError};

/// Parallel object fetches/puts per request.
const OBJECT_PARALLELISM: usize = 16;
/// How far into the future a query's end may reach before it is clamped.
const FUTURE_SLACK_MS: i64 = 5 * 60 * 1000;

/// Per-query limits (`-store.max-query-length`, `-store.query-chunk-limit`, `-store.cardinality-limit`).
#[derive(Clone, Copy, Debug)]
pub struct StoreLimits {
    /// 0 = unlimited.
    pub max_query_length_ms: i64,
    /// 0 = unlimited.
    pub query_chunk_limit: usize,
    /// 0 = unlimited.
    pub cardinality_limit: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_query_length_ms: 0,
            query_chunk_limit: 2_000_000,
            cardinality_limit: 100_000,
        }
    }
}

/// The backends of one schema period.
pub struct PeriodStore {
    pub schema: Schema,
    pub index: Arc<dyn IndexClient>,
    pub objects: Arc<dyn ObjectClient>,
}

#[derive(Clone)]
struct StoreMetrics {
    index_lookups_per_query: Histogram,
    series_pre_intersection: Histogram,
    series_post_intersection: Histogram,
    chunks_per_query: Histogram,
    index_entries_per_chunk: Histogram,
    deduped_chunks: Counter,
    decode_failures: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

impl StoreMetrics {
    fn new(m: &server::Metrics) -> Self {
        let h = |b: f64| move || Histogram::new(exponential_buckets(1.0, b, 8));
        StoreMetrics {
            index_lookups_per_query: m.shared(
                "cortex_chunk_store_index_lookups_per_query",
                "Distribution of #index lookups per query.",
                h(2.0),
            ),
            series_pre_intersection: m.shared(
                "cortex_chunk_store_series_pre_intersection_per_query",
                "Distribution of #series (pre intersection) per query.",
                h(10.0),
            ),
            series_post_intersection: m.shared(
                "cortex_chunk_store_series_post_intersection_per_query",
                "Distribution of #series (post intersection) per query.",
                h(10.0),
            ),
            chunks_per_query: m.shared(
                "cortex_chunk_store_chunks_per_query",
                "Distribution of #chunks per query.",
                h(10.0),
            ),
            index_entries_per_chunk: m.shared(
                "cortex_chunk_store_index_entries_per_chunk",
                "Number of entries written to storage per chunk.",
                h(2.0),
            ),
            deduped_chunks: m.shared(
                "cortex_chunk_store_deduped_chunks",
                "Count of chunks which were not stored because they have already been stored by another replica.",
                Counter::default,
            ),
            decode_failures: m.shared(
                "cortex_chunk_store_chunk_decode_failures",
                "Chunks fetched from the store that could not be read, by reason (checksum, metadata, encoding, payload, labels, key).",
                Family::default,
            ),
        }
    }
}

pub struct SeriesStore {
    schema_cfg: SchemaConfig,
    periods: Vec<PeriodStore>,
    chunk_cache: Option<Arc<dyn Cache>>,
    write_dedupe_cache: Option<Arc<dyn Cache>>,
    limits: StoreLimits,
    metrics: StoreMetrics,
    /// Bounds the background chunk-cache write-backs of the read path.
    write_back: Arc<tokio::sync::Semaphore>,
}

fn cardinality_error(metric: &str, label: &str, size: usize, limit: usize) -> StoreError {
    StoreError::limit(format!(
        "cardinality limit exceeded for {metric}{{{label}}}; {size} entries, more than limit of {limit}"
    ))
}

/// Cortex `FindSetMatches`: a regex that is a plain alternation of literals → the literals.
pub fn find_set_matches(pattern: &str) -> Option<Vec<String>> {
    const META: &[char] = &['.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$', '\\'];
    if pattern.is_empty() || pattern.contains(META) {
        return None;
    }
    Some(pattern.split('|').map(str::to_string).collect())
}

fn intersect_sorted(a: Vec<String>, b: &[String]) -> Vec<String> {
    let set: HashSet<&String> = b.iter().collect();
    a.into_iter().filter(|x| set.contains(x)).collect()
}

impl SeriesStore {
    /// `periods[i]` serves `schema_cfg.configs[i]`.
    pub fn new(
        schema_cfg: SchemaConfig,
        periods: Vec<PeriodStore>,
        chunk_cache: Option<Arc<dyn Cache>>,
        write_dedupe_cache: Option<Arc<dyn Cache>>,
        limits: StoreLimits,
        metrics: &server::Metrics,
    ) -> Self {
        assert_eq!(
            schema_cfg.configs.len(),
            periods.len(),
            "one backend set per schema period"
        );
        SeriesStore {
            schema_cfg,
            periods,
            chunk_cache,
            write_dedupe_cache,
            limits,
            metrics: StoreMetrics::new(metrics),
            write_back: Arc::new(tokio::sync::Semaphore::new(10)),
        }
    }

    pub fn schema_config(&self) -> &SchemaConfig {
        &self.schema_cfg
    }

    async fn cache_fetch(cache: &Option<Arc<dyn Cache>>, keys: Vec<String>) -> (HashMap<String, Bytes>, Vec<String>) {
        match cache {
            Some(c) if !keys.is_empty() => {
                let r = c.fetch(keys).await;
                (r.found.into_iter().collect(), r.missing)
            }
            _ => (HashMap::new(), keys),
        }
    }

    /// Series IDs of `metric` in one period matching the index matchers.
    async fn lookup_series(
        &self,
        p: &PeriodStore,
        tenant: &str,
        from: i64,
        through: i64,
        metric: &str,
        matchers: &[&Matcher],
    ) -> Result<Vec<String>, StoreError> {
        let buckets = p.schema.buckets(from, through, tenant);
        if matchers.is_empty() {
            self.metrics.index_lookups_per_query.observe(1.0);
            let queries: Vec<IndexQuery> = buckets
                .iter()
                .flat_map(|b| p.schema.metric_queries(b, metric))
                .collect();
            let rows = p.index.query(&queries).await?;
            let ids = parse_series_ids(rows.into_iter().flatten(), None)?;
            self.metrics.series_pre_intersection.observe(ids.len() as f64);
            self.metrics.series_post_intersection.observe(ids.len() as f64);
            return Ok(ids);
        }
        self.metrics.index_lookups_per_query.observe(matchers.len() as f64);
        let lookups = matchers.iter().map(|m| {
            let queries: Vec<IndexQuery> = match m.kind {
                MatchType::Equal => buckets
                    .iter()
                    .flat_map(|b| p.schema.label_value_queries(b, metric, &m.name, &m.value))
                    .collect(),
                MatchType::RegexMatch if find_set_matches(&m.value).is_some() => {
                    let set = find_set_matches(&m.value).unwrap_or_default();
                    buckets
                        .iter()
                        .flat_map(|b| {
                            set.iter()
                                .flat_map(|v| p.schema.label_value_queries(b, metric, &m.name, v))
                        })
                        .collect()
                }
                _ => buckets
                    .iter()
                    .flat_map(|b| p.schema.label_queries(b, metric, &m.name))
                    .collect(),
            };
            async move {
                let rows = p.index.query(&queries).await?;
                let limit = self.limits.cardinality_limit;
                if limit > 0 {
                    if let Some(big) = rows.iter().find(|r| r.len() > limit) {
                        return Ok(Err(cardinality_error(metric, &m.name, big.len(), limit)));
                    }
                }
                Ok::<_, StoreError>(Ok(parse_series_ids(rows.into_iter().flatten(), Some(m))?))
            }
        });
        let results = futures::future::try_join_all(lookups).await?;
        let mut ids: Option<Vec<String>> = None;
        let mut pre = 0usize;
        let mut cardinality: Option<StoreError> = None;
        for r in results {
            match r {
                Ok(found) => {
                    pre += found.len();
                    ids = Some(match ids {
                        None => found,
                        Some(prev) => intersect_sorted(prev, &found),
                    });
                }
                // A matcher over too many series is skipped and applied later as a filter on the
                // fetched chunks' label sets; only if every matcher is too big does the query fail.
                Err(e) => cardinality = Some(e),
            }
        }
        self.metrics.series_pre_intersection.observe(pre as f64);
        match ids {
            Some(ids) => {
                self.metrics.series_post_intersection.observe(ids.len() as f64);
                Ok(ids)
            }
            None => Err(cardinality.unwrap_or_else(|| StoreError::internal("no index lookups ran"))),
        }
    }

    /// Chunk refs of a period's series overlapping [from, through], each with the series ID whose
    /// index row named it (the chunk's labels must hash to it).
    async fn lookup_chunks(
        &self,
        p: &PeriodStore,
        tenant: &str,
        from: i64,
        through: i64,
        series: &[String],
    ) -> Result<Vec<(ChunkRef, String)>, StoreError> {
        let buckets = p.schema.buckets(from, through, tenant);
        let queries: Vec<IndexQuery> = series
            .iter()
            .flat_map(|sid| buckets.iter().map(move |b| p.schema.chunks_for_series_query(b, sid)))
            .collect();
        let rows = p.index.query(&queries).await?;
        let mut ids = BTreeMap::new();
        // Queries are series-major: query i asks for series i / buckets.
        for (qi, query_rows) in rows.iter().enumerate() {
            let sid = &series[qi / buckets.len().max(1)];
            for row in query_rows {
                match parse_range_value(&row.range, &row.value) {
                    Ok(RangeValue::Chunk { id }) => {
                        ids.entry(String::from_utf8_lossy(id).into_owned())
                            .or_insert_with(|| sid.clone());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(StoreError::internal(e.to_string())),
                }
            }
        }
        let mut refs = Vec::with_capacity(ids.len());
        for (id, sid) in ids {
            let r = ChunkRef::parse(tenant, &id).map_err(|e| StoreError::internal(e.to_string()))?;
            if r.through_ms >= from && r.from_ms <= through {
                refs.push((r, sid));
            }
        }
        Ok(refs)
    }

    /// Decodes a fetched object and checks it belongs where the index put it; a failure is
    /// counted, logged with the object key, and names the chunk in the error.
    pub(crate) fn open_object(&self, r: &ChunkRef, series: &str, data: Bytes) -> Result<ChunkEntry, StoreError> {
        let key = r.object_key();
        let fail = |reason: &'static str, message: String| {
            self.metrics
                .decode_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
            tracing::error!(chunk = %key, reason, error = %message, "cannot read chunk from the store");
            StoreError::internal(format!("chunk {key}: {message}"))
        };
        let c = chunk_object::decode(r, data).map_err(|e| fail(e.reason(), e.to_string()))?;
        if series_id(&c.labels) != series {
            return Err(fail(
                "labels",
                format!(
                    "labels {} do not match the series {series} the index lists it under",
                    c.labels
                ),
            ));
        }
        Ok(c)
    }

    /// Fetches chunk objects (cache first, then the period's object store), verifying each.
    async fn fetch_chunks(&self, refs: Vec<(usize, ChunkRef, String)>) -> Result<Vec<ChunkEntry>, StoreError> {
        let keys: Vec<String> = refs.iter().map(|(_, r, _)| r.external_key()).collect();
        let (mut cached, _) = Self::cache_fetch(&self.chunk_cache, keys.clone()).await;
        let mut out = Vec::with_capacity(refs.len());
        let mut to_fetch = Vec::new();
        for ((period, r, series), key) in refs.into_iter().zip(keys) {
            match cached.remove(&key).map(|b| chunk_object::decode(&r, b)) {
                Some(Ok(c)) if series_id(&c.labels) == series => out.push(c),
                // A corrupt cache entry is refetched from the object store.
                _ => to_fetch.push((period, r, series)),
            }
        }
        let fetched: Vec<(ChunkEntry, String, Bytes)> = stream::iter(to_fetch)
            .map(|(period, r, series)| {
                let objects = self.periods[period].objects.clone();
                async move {
                    let key = r.object_key();
                    let data = objects
                        .get(&key)
                        .await?
                        .ok_or_else(|| StoreError::internal(format!("chunk {key} not found in object store")))?;
                    let c = self.open_object(&r, &series, data.clone())?;
                    Ok::<_, StoreError>((c, r.external_key(), data))
                }
            })
            .buffer_unordered(OBJECT_PARALLELISM)
            .try_collect()
            .await?;
        let mut write_back = Vec::with_capacity(fetched.len());
        for (c, key, data) in fetched {
            out.push(c);
            write_back.push((key, data));
        }
        if let (Some(cache), false) = (&self.chunk_cache, write_back.is_empty()) {
            // Best effort and bounded: under pressure the write-back is skipped, not queued.
            if let Ok(permit) = self.write_back.clone().try_acquire_owned() {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache.store(write_back).await;
                    drop(permit);
                });
            }
        }
        Ok(out)
    }
}

/// Sorted unique series IDs from metric/label rows, keeping label rows whose value matches `m`.
fn parse_series_ids(rows: impl Iterator<Item = IndexRow>, m: Option<&Matcher>) -> Result<Vec<String>, StoreError> {
    let mut ids = BTreeSet::new();
    for row in rows {
        match parse_range_value(&row.range, &row.value).map_err(|e| StoreError::internal(e.to_string()))? {
            RangeValue::Series { id, label_value } => {
                if let (Some(m), Some(v)) = (m, label_value) {
                    if !m.matches(&String::from_utf8_lossy(v)) {
                        continue;
                    }
                }
                ids.insert(String::from_utf8_lossy(id).into_owned());
            }
            _ => continue,
        }
    }
    Ok(ids.into_iter().collect())
}

#[async_trait::async_trait]
impl ChunkStore for SeriesStore {
    async fn put(&self, chunks: Vec<ChunkEntry>) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        // 1. Chunks already in the chunk cache were written by another replica.
        let encoded: Vec<(ChunkEntry, Bytes, ChunkRef)> = chunks
            .into_iter()
            .map(|c| {
                let (bytes, r) = chunk_object::encode_with_ref(&c);
                (c, bytes, r)
            })
            .collect();
        let keys: Vec<String> = encoded.iter().map(|(_, _, r)| r.external_key()).collect();
        let (cached, _) = Self::cache_fetch(&self.chunk_cache, keys).await;
        let todo: Vec<_> = encoded
            .into_iter()
            .filter(|(_, _, r)| {
                let dup = cached.contains_key(&r.external_key());
                if dup {
                    self.metrics.deduped_chunks.inc();
                }
                !dup
            })
            .collect();
        if todo.is_empty() {
            return Ok(());
        }

        // 2. Index entries: label rows only for (bucket, series) pairs missing from the dedupe cache.
        struct Pending {
            period: usize,
            dedupe_key: String,
            entries: Vec<IndexEntry>,
        }
        let mut label_sets: Vec<Pending> = Vec::new();
        let mut chunk_entries: Vec<(usize, IndexEntry)> = Vec::new();
        let mut objects: Vec<(usize, String, Bytes)> = Vec::new();
        for (c, bytes, r) in &todo {
            let metric = c.labels.get(METRIC_NAME);
            if metric.is_empty() {
                return Err(StoreError::bad_request(format!(
                    "no metric name label for chunk {}",
                    r.external_key()
                )));
            }
            let sid = series_id(&c.labels);
            let chunk_id = r.external_key();
            let mut n = 0usize;
            for (period, f, t) in self.schema_cfg.split(c.from_ms, c.through_ms) {
                let p = &self.periods[period];
                for b in p.schema.buckets(f, t, &c.tenant) {
                    label_sets.push(Pending {
                        period,
                        dedupe_key: dedupe_key(&b.table, &b.hash_key, &sid),
                        entries: p.schema.label_write_entries(&b, metric, &c.labels, &sid),
                    });
                    chunk_entries.push((period, p.schema.chunk_write_entry(&b, &sid, &chunk_id)));
                    n += 1;
                }
                if !objects.iter().any(|(pp, k, _)| *pp == period && *k == r.object_key()) {
                    objects.push((period, r.object_key(), bytes.clone()));
                }
            }
            self.metrics.index_entries_per_chunk.observe(n as f64);
        }
        let dedupe_keys: Vec<String> = label_sets.iter().map(|p| p.dedupe_key.clone()).collect();
        let (present, _) = Self::cache_fetch(&self.write_dedupe_cache, dedupe_keys).await;
        let mut per_period: Vec<Vec<IndexEntry>> = vec![Vec::new(); self.periods.len()];
        let mut seen: HashSet<(String, String, Bytes)> = HashSet::new();
        let mut new_dedupe_keys: Vec<String> = Vec::new();
        let mut push = |period: usize, e: IndexEntry, per_period: &mut Vec<Vec<IndexEntry>>| {
            if seen.insert((e.table.clone(), e.hash.clone(), e.range.clone())) {
                per_period[period].push(e);
            }
        };
        for ls in label_sets {
            if present.contains_key(&ls.dedupe_key) {
                continue;
            }
            if !new_dedupe_keys.contains(&ls.dedupe_key) {
                new_dedupe_keys.push(ls.dedupe_key);
            }
            for e in ls.entries {
                push(ls.period, e, &mut per_period);
            }
        }
        for (period, e) in chunk_entries {
            push(period, e, &mut per_period);
        }

        // 3. Objects first, so an index entry never points at a missing object.
        stream::iter(objects)
            .map(|(period, key, data)| {
                let objects = self.periods[period].objects.clone();
                async move { objects.put(&key, data).await }
            })
            .buffer_unordered(OBJECT_PARALLELISM)
            .try_collect::<Vec<()>>()
            .await?;
        for (period, entries) in per_period.into_iter().enumerate() {
            if !entries.is_empty() {
                self.periods[period].index.batch_write(entries).await?;
            }
        }

        // 4. Remember what was written.
        if let Some(c) = &self.write_dedupe_cache {
            c.store(new_dedupe_keys.into_iter().map(|k| (k, Bytes::new())).collect())
                .await;
        }
        if let Some(c) = &self.chunk_cache {
            c.store(todo.into_iter().map(|(_, b, r)| (r.external_key(), b)).collect())
                .await;
        }
        Ok(())
    }

    async fn get(
        &self,
        tenant: &str,
        from_ms: i64,
        through_ms: i64,
        matchers: &[Matcher],
    ) -> Result<Vec<ChunkEntry>, StoreError> {
        let (from, mut through) = (from_ms, through_ms);
        if through < from {
            return Err(StoreError::bad_request(format!(
                "invalid query, through < from ({through} < {from})"
            )));
        }
        let max_len = self.limits.max_query_length_ms;
        if max_len > 0 && through - from > max_len {
            return Err(StoreError::limit(format!(
                "the query time range exceeds the limit (query length: {}, limit: {})",
                model::GoDuration(std::time::Duration::from_millis((through - from) as u64)),
                model::GoDuration(std::time::Duration::from_millis(max_len as u64)),
            )));
        }
        let now = model::now_ms();
        if from > now {
            return Ok(Vec::new());
        }
        through = through.min(now + FUTURE_SLACK_MS);

        let Some(metric_matcher) = matchers.iter().find(|m| m.name == METRIC_NAME) else {
            return Err(StoreError::bad_request("query must contain metric name"));
        };
        if metric_matcher.kind != MatchType::Equal {
            return Err(StoreError::bad_request("query must contain metric name"));
        }
        let metric = metric_matcher.value.as_str();
        // Matchers that match "" cannot use the index (series without the label are not in it).
        let index_matchers: Vec<&Matcher> = matchers
            .iter()
            .filter(|m| !std::ptr::eq(*m, metric_matcher) && !m.matches(""))
            .collect();

        let mut refs: Vec<(usize, ChunkRef, String)> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (period, f, t) in self.schema_cfg.split(from, through) {
            let p = &self.periods[period];
            let series = self.lookup_series(p, tenant, f, t, metric, &index_matchers).await?;
            for (r, sid) in self.lookup_chunks(p, tenant, f, t, &series).await? {
                if seen.insert(r.external_key()) {
                    refs.push((period, r, sid));
                }
            }
        }
        self.metrics.chunks_per_query.observe(refs.len() as f64);
        let limit = self.limits.query_chunk_limit;
        if limit > 0 && refs.len() > limit {
            let shown: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
            return Err(StoreError::limit(format!(
                "Query {{{}}} fetched too many chunks ({} > {})",
                shown.join(", "),
                refs.len(),
                limit
            )));
        }
        let mut chunks = self.fetch_chunks(refs).await?;
        // Filters, plus any matcher skipped for cardinality: check every matcher on full label sets.
        chunks.retain(|c| model::matches_all(matchers, &c.labels));
        chunks.sort_by(|a, b| a.labels.cmp(&b.labels).then(a.from_ms.cmp(&b.from_ms)));
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests;
