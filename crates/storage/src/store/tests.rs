use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::cache::{CacheConfig, FifoCache, FifoConfig, MemcachedClient, MemcachedConfig};
use crate::index::caching::CachingIndexClient;
use crate::index::embedded::EmbeddedIndex;
use crate::object::fs::FsObjectClient;
use crate::schema_config::MILLIS_PER_DAY;
use model::Labels;

const DAY: i64 = 18_767;
const T0: i64 = DAY * MILLIS_PER_DAY;

/// Counts the entries written through it.
struct Counting {
    inner: Arc<dyn IndexClient>,
    written: AtomicUsize,
}

#[async_trait::async_trait]
impl IndexClient for Counting {
    async fn batch_write(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError> {
        self.written.fetch_add(entries.len(), Ordering::SeqCst);
        self.inner.batch_write(entries).await
    }
    async fn query(&self, queries: &[IndexQuery]) -> Result<Vec<Vec<IndexRow>>, StoreError> {
        self.inner.query(queries).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SeriesStore,
    counting: Arc<Counting>,
    metrics: server::Metrics,
}

const SCHEMA: &str = "configs:
  - from: 2021-01-01
    store: embedded
    object_store: filesystem
    schema: v9
    index: {prefix: i9_, period: 168h}
  - from: 2021-05-19
    store: embedded
    object_store: filesystem
    schema: v11
    index: {prefix: i11_, period: 168h}
";

fn fixture_with(
    chunk_cache: Option<Arc<dyn Cache>>,
    dedupe: Option<Arc<dyn Cache>>,
    read_cache: Option<Arc<dyn Cache>>,
    limits: StoreLimits,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let schema = SchemaConfig::parse(SCHEMA).unwrap();
    let idx: Arc<dyn IndexClient> = Arc::new(EmbeddedIndex::open(&dir.path().join("index")).unwrap());
    let counting = Arc::new(Counting {
        inner: idx,
        written: AtomicUsize::new(0),
    });
    let index: Arc<dyn IndexClient> = match read_cache {
        Some(c) => Arc::new(CachingIndexClient::new(counting.clone(), c, Duration::from_secs(300))),
        None => counting.clone(),
    };
    let objects: Arc<dyn ObjectClient> = Arc::new(FsObjectClient::new(dir.path().join("chunks")).unwrap());
    let periods = schema
        .configs
        .iter()
        .map(|p| PeriodStore {
            schema: Schema::new(p),
            index: index.clone(),
            objects: objects.clone(),
        })
        .collect();
    let metrics = server::Metrics::new();
    let store = SeriesStore::new(schema, periods, chunk_cache, dedupe, limits, &metrics);
    Fixture {
        _dir: dir,
        store,
        counting,
        metrics,
    }
}

fn fixture() -> Fixture {
    fixture_with(None, None, None, StoreLimits::default())
}

fn chunk(labels: &[(&str, &str)], from: i64, through: i64) -> ChunkEntry {
    let labels = Labels::from_pairs(labels.iter().copied());
    let mut x = chunk::XorChunk::new();
    let mut t = from;
    while t <= through {
        x.append(t, t as f64);
        t += (through - from).max(1) / 4 + 1;
    }
    ChunkEntry {
        tenant: "t1".into(),
        fingerprint: model::hash::labels_fingerprint(&labels),
        labels,
        from_ms: from,
        through_ms: through,
        encoding: chunk::ENCODING_PROMETHEUS_XOR,
        data: Bytes::copy_from_slice(x.bytes()),
    }
}

fn eq(n: &str, v: &str) -> Matcher {
    Matcher::equal(n, v)
}

fn m(kind: MatchType, n: &str, v: &str) -> Matcher {
    Matcher::new(kind, n, v).unwrap()
}

fn jobs(chunks: &[ChunkEntry]) -> Vec<String> {
    let mut v: Vec<String> = chunks.iter().map(|c| c.labels.get("job").to_string()).collect();
    v.sort();
    v
}

async fn seed(f: &Fixture) {
    seed_at(f, T0).await
}

async fn seed_at(f: &Fixture, t0: i64) {
    f.store
        .put(vec![
            chunk(
                &[("__name__", "up"), ("job", "api"), ("env", "prod")],
                t0 + 1000,
                t0 + 60_000,
            ),
            chunk(
                &[("__name__", "up"), ("job", "db"), ("env", "prod")],
                t0 + 1000,
                t0 + 60_000,
            ),
            chunk(&[("__name__", "up"), ("job", "web")], t0 + 1000, t0 + 60_000),
            chunk(&[("__name__", "down"), ("job", "api")], t0 + 1000, t0 + 60_000),
        ])
        .await
        .unwrap();
}

#[tokio::test]
async fn put_get_round_trip_with_matchers() {
    let f = fixture();
    seed(&f).await;
    let all = f
        .store
        .get("t1", T0, T0 + 120_000, &[eq("__name__", "up")])
        .await
        .unwrap();
    assert_eq!(jobs(&all), vec!["api", "db", "web"]);
    let c = &all[0];
    let x = chunk::XorChunk::from_bytes(c.data.clone()).unwrap();
    assert_eq!(x.first_time(), Some(T0 + 1000));

    let q = |ms: Vec<Matcher>| {
        let s = &f.store;
        async move { jobs(&s.get("t1", T0, T0 + 120_000, &ms).await.unwrap()) }
    };
    assert_eq!(q(vec![eq("__name__", "up"), eq("job", "api")]).await, vec!["api"]);
    assert_eq!(
        q(vec![eq("__name__", "up"), m(MatchType::RegexMatch, "job", "api|web")]).await,
        vec!["api", "web"]
    );
    assert_eq!(
        q(vec![eq("__name__", "up"), m(MatchType::RegexMatch, "job", "d.*")]).await,
        vec!["db"]
    );
    assert_eq!(
        q(vec![eq("__name__", "up"), m(MatchType::NotEqual, "job", "api")]).await,
        vec!["db", "web"]
    );
    // `env=""` matches the series without env: a filter, not an index lookup.
    assert_eq!(q(vec![eq("__name__", "up"), eq("env", "")]).await, vec!["web"]);
    assert_eq!(
        q(vec![eq("__name__", "up"), eq("env", "prod"), eq("job", "db")]).await,
        vec!["db"]
    );
    // Other tenants see nothing.
    assert!(f
        .store
        .get("t2", T0, T0 + 120_000, &[eq("__name__", "up")])
        .await
        .unwrap()
        .is_empty());
    // Time filtering: a range before the chunks.
    assert!(f
        .store
        .get("t1", T0 - 100_000, T0, &[eq("__name__", "up")])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn chunk_spanning_days_and_periods() {
    let f = fixture();
    // Starts in the v9 period (day 18766 = 2021-05-18), ends in the v11 period.
    let start = T0 - MILLIS_PER_DAY + 3_600_000;
    let c = chunk(&[("__name__", "m"), ("job", "x")], start, T0 + 3_600_000);
    f.store.put(vec![c]).await.unwrap();
    for (from, through) in [(start, start + 10), (T0 + 10, T0 + 20), (start, T0 + 20)] {
        let got = f
            .store
            .get("t1", from, through, &[eq("__name__", "m"), eq("job", "x")])
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "[{from}, {through}]");
    }
}

#[tokio::test]
async fn write_dedupe_cache_skips_label_rows() {
    let dedupe: Arc<dyn Cache> = Arc::new(FifoCache::new(FifoConfig::default()));
    let f = fixture_with(None, Some(dedupe), None, StoreLimits::default());
    let labels = [("__name__", "up"), ("job", "api"), ("env", "prod")];
    f.store.put(vec![chunk(&labels, T0 + 1000, T0 + 2000)]).await.unwrap();
    // v11: metric row + label-names row + 2 label rows + 1 chunk row.
    assert_eq!(f.counting.written.load(Ordering::SeqCst), 5);
    f.store.put(vec![chunk(&labels, T0 + 3000, T0 + 4000)]).await.unwrap();
    assert_eq!(
        f.counting.written.load(Ordering::SeqCst),
        6,
        "second chunk writes only its chunk row"
    );
    let got = f.store.get("t1", T0, T0 + 5000, &[eq("__name__", "up")]).await.unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn chunk_cache_dedupes_replicas() {
    let cache: Arc<dyn Cache> = Arc::new(FifoCache::new(FifoConfig::default()));
    let f = fixture_with(Some(cache), None, None, StoreLimits::default());
    let c = chunk(&[("__name__", "up"), ("job", "api")], T0 + 1000, T0 + 2000);
    f.store.put(vec![c.clone()]).await.unwrap();
    let written = f.counting.written.load(Ordering::SeqCst);
    f.store.put(vec![c]).await.unwrap();
    assert_eq!(f.counting.written.load(Ordering::SeqCst), written);
    assert!(f.metrics.encode().contains("cortex_chunk_store_deduped_chunks_total 1"));
    assert_eq!(
        f.store
            .get("t1", T0, T0 + 5000, &[eq("__name__", "up")])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn index_read_cache_gives_same_answers() {
    let cache: Arc<dyn Cache> = Arc::new(FifoCache::new(FifoConfig::default()));
    let f = fixture_with(None, None, Some(cache), StoreLimits::default());
    seed(&f).await;
    for _ in 0..2 {
        let got = f
            .store
            .get("t1", T0, T0 + 120_000, &[eq("__name__", "up"), eq("job", "db")])
            .await
            .unwrap();
        assert_eq!(jobs(&got), vec!["db"]);
        let got = f
            .store
            .get("t1", T0, T0 + 120_000, &[eq("__name__", "up")])
            .await
            .unwrap();
        assert_eq!(got.len(), 3);
    }
}

#[tokio::test]
async fn query_validation_and_limits() {
    let f = fixture_with(
        None,
        None,
        None,
        StoreLimits {
            max_query_length_ms: 3_600_000,
            query_chunk_limit: 2,
            cardinality_limit: 0,
        },
    );
    seed(&f).await;
    let e = f.store.get("t1", T0, T0 + 1000, &[eq("job", "api")]).await.unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (400, "query must contain metric name"));
    let e = f
        .store
        .get("t1", T0, T0 + 1000, &[m(MatchType::RegexMatch, "__name__", "u.*")])
        .await
        .unwrap_err();
    assert_eq!(e.message, "query must contain metric name");
    let e = f
        .store
        .get("t1", T0 + 10, T0, &[eq("__name__", "up")])
        .await
        .unwrap_err();
    assert!(e.message.starts_with("invalid query, through < from"), "{}", e.message);
    let e = f
        .store
        .get("t1", T0, T0 + 7_200_000, &[eq("__name__", "up")])
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.starts_with("the query time range exceeds the limit"),
        "{}",
        e.message
    );
    let e = f
        .store
        .get("t1", T0, T0 + 120_000, &[eq("__name__", "up")])
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert!(e.message.contains("fetched too many chunks (3 > 2)"), "{}", e.message);
    // A query entirely in the future is empty.
    let future = model::now_ms() + 3_600_000;
    assert!(f
        .store
        .get("t1", future, future + 10, &[eq("__name__", "up")])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn cardinality_limit() {
    let f = fixture_with(
        None,
        None,
        None,
        StoreLimits {
            cardinality_limit: 2,
            ..Default::default()
        },
    );
    // Cardinality is counted per index row; v10+ spread a label over 16 shard rows, so use the v9 period.
    let t9 = T0 - 5 * MILLIS_PER_DAY;
    seed_at(&f, t9).await;
    // `job` rows hold 3 values (> 2): skipped, applied as a filter, because `env` is small.
    let got = f
        .store
        .get(
            "t1",
            t9,
            t9 + 120_000,
            &[
                eq("__name__", "up"),
                m(MatchType::RegexMatch, "job", "d.+"),
                eq("env", "prod"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(jobs(&got), vec!["db"]);
    // Every matcher too big: the query fails.
    let e = f
        .store
        .get(
            "t1",
            t9,
            t9 + 120_000,
            &[eq("__name__", "up"), m(MatchType::RegexMatch, "job", ".+")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.starts_with("cardinality limit exceeded for up{job}"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn memcached_outage_never_fails_writes_or_queries() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let mc = || -> Arc<dyn Cache> {
        Arc::new(MemcachedClient::new(MemcachedConfig {
            addresses: addr.clone(),
            ..Default::default()
        }))
    };
    let f = fixture_with(Some(mc()), Some(mc()), Some(mc()), StoreLimits::default());
    seed(&f).await;
    let got = f
        .store
        .get("t1", T0, T0 + 120_000, &[eq("__name__", "up")])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    let _ = CacheConfig::default();
}

#[test]
fn set_matches() {
    assert_eq!(
        find_set_matches("a|b|c"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(find_set_matches("a.*"), None);
    assert_eq!(find_set_matches(""), None);
}
