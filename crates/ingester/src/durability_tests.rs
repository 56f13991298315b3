//! WAL replay, checkpoints, corruption handling and flushing, against real
//! files in a temporary directory and an in-memory chunk store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chunk::XorChunk;
use model::{GoDuration, Matcher};
use parking_lot::Mutex;
use proto::cortex::{LabelPair, Sample, TimeSeries, WriteRequest};
use storage::{ChunkEntry, ChunkStore, StoreError};

use crate::wal::{segment, FsyncPolicy};
use crate::{Config, Ingester};

fn ts(name: &str, id: usize, samples: &[(i64, f64)]) -> TimeSeries {
    let pair = |n: &str, v: &str| LabelPair {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    };
    TimeSeries {
        labels: vec![pair("__name__", name), pair("id", &id.to_string())],
        samples: samples
            .iter()
            .map(|&(t, v)| Sample {
                value: v,
                timestamp_ms: t,
            })
            .collect(),
    }
}

fn wal_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.walconfig.wal_enabled = true;
    cfg.walconfig.wal_dir = dir.to_string_lossy().into_owned();
    cfg.flush.spread_flushes = false;
    cfg
}

async fn start(cfg: Config) -> (Arc<Ingester>, server::Metrics) {
    let metrics = server::Metrics::new();
    let ing = Ingester::new(cfg, &metrics);
    ing.wait_started().await.unwrap();
    (ing, metrics)
}

/// Pushes `rounds` requests of `series` series, one sample each per round.
async fn push_rounds(ing: &Ingester, series: usize, rounds: std::ops::Range<i64>) {
    for r in rounds {
        let batch = (0..series)
            .map(|i| ts("m", i, &[(r * 15_000, (i as i64 * 1000 + r) as f64)]))
            .collect();
        ing.push(
            "t1",
            WriteRequest {
                timeseries: batch,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
}

/// Every sample of `t1`, sorted by series id.
fn dump(ing: &Ingester) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut out: Vec<_> = ing
        .query("t1", i64::MIN, i64::MAX, &[Matcher::equal("__name__", "m")])
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.labels.get("id").to_string(),
                s.samples.iter().map(|p| (p.t, p.v)).collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn expected(series: usize, rounds: std::ops::Range<i64>) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut out: Vec<_> = (0..series)
        .map(|i| {
            (
                i.to_string(),
                rounds
                    .clone()
                    .map(|r| (r * 15_000, (i as i64 * 1000 + r) as f64))
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn metric(metrics: &server::Metrics, name: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[tokio::test]
async fn every_acknowledged_sample_is_replayed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ing, metrics) = start(wal_config(dir.path())).await;
        push_rounds(&ing, 20, 0..250).await;
        // A rejected sample is not logged; the accepted ones of the same push are.
        let err = ing
            .push(
                "t1",
                WriteRequest {
                    timeseries: vec![ts("m", 0, &[(0, 5.0)]), ts("m", 20, &[(1, 1.0)])],
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(metric(&metrics, "cortex_ingester_wal_records_logged_total") >= 251.0);
        assert!(metric(&metrics, "cortex_ingester_wal_logged_bytes_total") > 0.0);
        // Dropped without any shutdown: as after kill -9.
    }
    let (ing, metrics) = start(wal_config(dir.path())).await;
    let mut want = expected(20, 0..250);
    want.push(("20".into(), vec![(1, 1.0)]));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(dump(&ing), want);
    assert_eq!(ing.num_series("t1"), 21);
    assert_eq!(metric(&metrics, "cortex_ingester_memory_series"), 21.0);
    assert_eq!(metric(&metrics, "cortex_ingester_wal_corruptions_total"), 0.0);
    let stats = ing.replay_stats().unwrap();
    assert_eq!(stats.samples_appended, 20 * 250 + 1);
    // The restarted ingester keeps logging into a new segment.
    push_rounds(&ing, 20, 250..260).await;
    drop(ing);
    let (ing, _) = start(wal_config(dir.path())).await;
    let mut want = expected(20, 0..260);
    want.push(("20".into(), vec![(1, 1.0)]));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(dump(&ing), want);
}

fn one(series: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: series,
        ..Default::default()
    }
}

/// Two pushes to one series, appended A then B but logged B then A: what
/// [`Ingester::push`] does when B's append and log both happen between A's
/// append and A's log (each push is exactly `append` then `log`).
async fn push_crossed(ing: &Ingester, a: WriteRequest, b: WriteRequest) {
    let (ra, wal_a) = ing.append("t1", &a);
    let (rb, wal_b) = ing.append("t1", &b);
    ra.unwrap();
    rb.unwrap();
    ing.log(wal_b).await.unwrap();
    ing.log(wal_a).await.unwrap();
}

#[tokio::test]
async fn samples_logged_in_the_other_order_than_appended_are_all_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ing, _) = start(wal_config(dir.path())).await;
        push_rounds(&ing, 1, 0..3).await;
        // Both pushes were acknowledged: 45 s (A) and 60 s (B) are in memory.
        push_crossed(
            &ing,
            one(vec![ts("m", 0, &[(45_000, 1.0)])]),
            one(vec![ts("m", 0, &[(60_000, 2.0)])]),
        )
        .await;
        // Crossed again, now straddling a full chunk: A's sample lands in
        // the middle of a chunk that already holds 120 samples.
        let full: Vec<(i64, f64)> = (0..119).map(|i| (100_000 + i * 1000, i as f64)).collect();
        push_crossed(
            &ing,
            one(vec![ts("m", 0, &[(90_000, 3.0)])]),
            one(vec![ts("m", 0, &full)]),
        )
        .await;
        assert_eq!(dump(&ing)[0].1.len(), 3 + 2 + 1 + 119);
    }
    let (ing, _) = start(wal_config(dir.path())).await;
    let mut want: Vec<(i64, f64)> = vec![
        (0, 0.0),
        (15_000, 1.0),
        (30_000, 2.0),
        (45_000, 1.0),
        (60_000, 2.0),
        (90_000, 3.0),
    ];
    want.extend((0..119).map(|i| (100_000 + i * 1000, i as f64)));
    assert_eq!(dump(&ing), vec![("0".to_string(), want)]);
    let stats = ing.replay_stats().unwrap();
    assert_eq!(stats.samples_skipped, 0);
    assert_eq!(stats.samples_appended, 3 + 2 + 1 + 119);
    // The series goes on taking samples after its last one, and still
    // rejects one older than that.
    ing.push("t1", one(vec![ts("m", 0, &[(300_000, 9.0)])])).await.unwrap();
    let err = ing
        .push("t1", one(vec![ts("m", 0, &[(95_000, 9.0)])]))
        .await
        .unwrap_err();
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn samples_logged_before_the_record_creating_their_series_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ing, _) = start(wal_config(dir.path())).await;
        // A creates series 7 (its series record is in A's batch), B appends
        // to it; B's batch is logged first and names a series not yet known.
        push_crossed(
            &ing,
            one(vec![ts("m", 7, &[(1_000, 1.0)])]),
            one(vec![ts("m", 7, &[(2_000, 2.0)]), ts("m", 8, &[(2_000, 8.0)])]),
        )
        .await;
    }
    let (ing, _) = start(wal_config(dir.path())).await;
    assert_eq!(
        dump(&ing),
        vec![
            ("7".to_string(), vec![(1_000, 1.0), (2_000, 2.0)]),
            ("8".to_string(), vec![(2_000, 8.0)])
        ]
    );
    assert_eq!(ing.replay_stats().unwrap().samples_skipped, 0);
}

#[tokio::test]
async fn checkpoints_replace_old_segments_and_replay_continues_after_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ing, metrics) = start(wal_config(dir.path())).await;
        push_rounds(&ing, 10, 0..100).await;
        let first = ing.checkpoint().unwrap();
        push_rounds(&ing, 10, 100..200).await;
        let second = ing.checkpoint().unwrap();
        push_rounds(&ing, 10, 200..300).await;
        let third = ing.checkpoint().unwrap();
        push_rounds(&ing, 10, 300..310).await;
        assert!(first < second && second < third);
        assert_eq!(metric(&metrics, "cortex_ingester_checkpoint_creations_total"), 3.0);
        assert_eq!(metric(&metrics, "cortex_ingester_checkpoint_deletions_total"), 1.0);
        // Kept: the newest two checkpoints and the segments after the older one.
        let ckpts = crate::wal::checkpoint::list_checkpoints(dir.path()).unwrap();
        assert_eq!(ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), vec![second, third]);
        let segs = segment::list_segments(dir.path()).unwrap();
        assert!(segs.iter().all(|&s| s > second), "{segs:?}");
    }
    let (ing, _) = start(wal_config(dir.path())).await;
    assert_eq!(dump(&ing), expected(10, 0..310));
    assert_eq!(ing.replay_stats().unwrap().checkpoint_series, 10);
}

#[tokio::test]
async fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let newest;
    {
        let (ing, _) = start(wal_config(dir.path())).await;
        push_rounds(&ing, 5, 0..50).await;
        ing.checkpoint().unwrap();
        push_rounds(&ing, 5, 50..100).await;
        newest = ing.checkpoint().unwrap();
        push_rounds(&ing, 5, 100..110).await;
    }
    let ckpt_dir = dir.path().join(crate::wal::checkpoint::checkpoint_name(newest));
    let seg = ckpt_dir.join(segment::segment_name(0));
    let mut data = std::fs::read(&seg).unwrap();
    data[20] ^= 0xff;
    std::fs::write(&seg, data).unwrap();
    let (ing, metrics) = start(wal_config(dir.path())).await;
    assert_eq!(dump(&ing), expected(5, 0..110));
    assert_eq!(metric(&metrics, "cortex_ingester_wal_corruptions_total"), 1.0);
    assert!(!ckpt_dir.exists(), "the corrupt checkpoint is deleted");
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_counted_and_everything_before_it_stays() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (ing, _) = start(wal_config(dir.path())).await;
        push_rounds(&ing, 3, 0..40).await;
    }
    let last = *segment::list_segments(dir.path()).unwrap().last().unwrap();
    let path = dir.path().join(segment::segment_name(last));
    let mut data = std::fs::read(&path).unwrap();
    let n = data.len();
    // Garble the last record's final bytes (the last push: round 39).
    for b in &mut data[n - 5..] {
        *b ^= 0xa5;
    }
    std::fs::write(&path, data).unwrap();
    let (ing, metrics) = start(wal_config(dir.path())).await;
    assert_eq!(metric(&metrics, "cortex_ingester_wal_corruptions_total"), 1.0);
    assert_eq!(dump(&ing), expected(3, 0..39));
    // Writing goes on in a new segment; a second restart sees no corruption.
    push_rounds(&ing, 3, 39..45).await;
    drop(ing);
    let (ing, metrics) = start(wal_config(dir.path())).await;
    assert_eq!(metric(&metrics, "cortex_ingester_wal_corruptions_total"), 0.0);
    assert_eq!(dump(&ing), expected(3, 0..45));
}

#[tokio::test]
async fn fsync_always_and_recover_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut cfg = wal_config(dir.path());
        cfg.walconfig.wal_fsync = FsyncPolicy::Always;
        let (ing, _) = start(cfg).await;
        push_rounds(&ing, 2, 0..10).await;
    }
    // -ingester.recover-from-wal with writing off: replays, logs nothing new.
    let mut cfg = wal_config(dir.path());
    cfg.walconfig.wal_enabled = false;
    cfg.walconfig.recover_from_wal = true;
    let (ing, metrics) = start(cfg).await;
    assert_eq!(dump(&ing), expected(2, 0..10));
    push_rounds(&ing, 2, 10..11).await;
    assert_eq!(metric(&metrics, "cortex_ingester_wal_records_logged_total"), 0.0);
}

/// A chunk store keeping what it is given; fails the first `fail` puts.
#[derive(Default)]
struct FakeStore {
    chunks: Mutex<Vec<ChunkEntry>>,
    puts: AtomicUsize,
    fail: AtomicUsize,
}

#[async_trait::async_trait]
impl ChunkStore for FakeStore {
    async fn put(&self, chunks: Vec<ChunkEntry>) -> Result<(), StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError {
                code: 503,
                message: "store unavailable".into(),
            });
        }
        self.chunks.lock().extend(chunks);
        Ok(())
    }

    async fn get(&self, _: &str, _: i64, _: i64, _: &[Matcher]) -> Result<Vec<ChunkEntry>, StoreError> {
        Ok(Vec::new())
    }
}

fn flush_config() -> Config {
    let mut cfg = Config::default();
    cfg.flush.spread_flushes = false;
    // Sweeps are driven by the tests.
    cfg.flush.flush_period = GoDuration::secs(0);
    cfg.flush.concurrent_flushes = 4;
    // These tests count one object per 120-sample chunk; Bigchunk has its own test below.
    cfg.flush.chunk_encoding = crate::flush::WriteEncoding::XOR;
    cfg
}

/// Every stored sample of every series, by series id.
fn stored(store: &FakeStore) -> Vec<(String, Vec<(i64, f64)>)> {
    stored_as(store, chunk::Encoding::PrometheusXorChunk)
}

/// [`stored`], every chunk checked to be written in `encoding`.
fn stored_as(store: &FakeStore, encoding: chunk::Encoding) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut by_id: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
    for c in store.chunks.lock().iter() {
        assert_eq!(c.encoding, encoding.id());
        assert_eq!(c.tenant, "t1");
        let x = chunk::StoredChunk::open(c.encoding, c.data.clone()).unwrap();
        let samples: Vec<(i64, f64)> = x.iter().collect();
        assert_eq!(samples.first().map(|s| s.0), Some(c.from_ms));
        assert_eq!(samples.last().map(|s| s.0), Some(c.through_ms));
        by_id.entry(c.labels.get("id").to_string()).or_default().extend(samples);
    }
    by_id
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|p| p.0);
            (k, v)
        })
        .collect()
}

#[tokio::test]
async fn chunk_encoding_bigchunk_flushes_cortex_default_encoding() {
    let mut cfg = flush_config();
    cfg.flush.chunk_encoding = crate::flush::WriteEncoding::parse("3").unwrap();
    let (ing, _) = start(cfg).await;
    let store = Arc::new(FakeStore::default());
    ing.set_chunk_store(store.clone());
    push_rounds(&ing, 5, 0..250).await;
    assert!(ing.flush_and_wait(Duration::from_secs(10)).await);
    assert_eq!(stored_as(&store, chunk::Encoding::Bigchunk), expected(5, 0..250));
    // Each series' run of three 120-sample chunks is one object.
    assert_eq!(store.chunks.lock().len(), 5);
}

#[test]
fn chunk_encoding_accepts_cortex_spellings_and_refuses_what_we_do_not_write() {
    use crate::flush::WriteEncoding;
    for (s, want) in [
        ("PrometheusXorChunk", WriteEncoding::XOR),
        ("4", WriteEncoding::XOR),
        ("Bigchunk", WriteEncoding::BIGCHUNK),
        ("3", WriteEncoding::BIGCHUNK),
    ] {
        assert_eq!(WriteEncoding::parse(s).unwrap(), want, "{s}");
    }
    for (s, why) in [
        ("DoubleDelta", "DoubleDelta (1) is read but not written"),
        ("2", "Varbit (2) is read but not written"),
        ("0", "Delta"),
        ("Delta", "Delta"),
        ("gorilla", "unknown chunk encoding \"gorilla\""),
        ("7", "unknown chunk encoding 7"),
    ] {
        let e = WriteEncoding::parse(s).unwrap_err();
        assert!(
            e.starts_with("invalid value") && e.contains("-ingester.chunk-encoding") && e.contains(why),
            "{s}: {e}"
        );
    }
    // YAML spells it as a name or a bare number; both deserialise.
    let c: crate::flush::FlushConfig = serde_json::from_value(serde_json::json!({"chunk_encoding": 3})).unwrap();
    assert_eq!(c.chunk_encoding, WriteEncoding::BIGCHUNK);
    let e = serde_json::from_value::<crate::flush::FlushConfig>(serde_json::json!({"chunk_encoding": "Varbit"}))
        .unwrap_err();
    assert!(
        e.to_string().contains("write PrometheusXorChunk (4) or Bigchunk (3)"),
        "{e}"
    );
}

#[tokio::test]
async fn immediate_flush_stores_every_chunk_then_memory_is_released() {
    let mut cfg = flush_config();
    cfg.flush.retain_period = GoDuration::secs(0);
    let (ing, metrics) = start(cfg).await;
    let store = Arc::new(FakeStore::default());
    ing.set_chunk_store(store.clone());
    push_rounds(&ing, 30, 0..250).await;
    assert!(ing.flush_and_wait(Duration::from_secs(10)).await);
    assert_eq!(stored(&store), expected(30, 0..250));
    assert_eq!(store.chunks.lock().len(), 30 * 3);
    assert_eq!(
        metric(&metrics, "cortex_chunk_store_stored_chunks_total{user=\"t1\"}"),
        90.0
    );
    // Flushed chunks stay queryable until the retain period passed …
    assert_eq!(dump(&ing), expected(30, 0..250));
    // … then a sweep drops them and removes the empty series and their index entries.
    tokio::time::sleep(Duration::from_millis(5)).await;
    ing.sweep(false);
    assert_eq!(ing.num_series("t1"), 0);
    assert_eq!(ing.num_chunks("t1"), 0);
    assert!(ing.label_values("t1", "id").is_empty());
    // The last users of every label string are gone, and so are the strings.
    assert_eq!(ing.user("t1").unwrap().symbols.len(), 0);
    assert_eq!(metric(&metrics, "cortex_ingester_memory_series"), 0.0);
    assert_eq!(metric(&metrics, "cortex_ingester_memory_chunks"), 0.0);
    assert_eq!(
        metric(&metrics, "cortex_ingester_memory_series_removed_total{user=\"t1\"}"),
        30.0
    );
    // A new sample re-creates the series; a second flush stores only it.
    push_rounds(&ing, 1, 300..301).await;
    assert!(ing.flush_and_wait(Duration::from_secs(10)).await);
    assert_eq!(store.chunks.lock().len(), 91);
}

#[tokio::test]
async fn sweeps_flush_full_aged_and_idle_chunks_but_not_the_open_head() {
    let mut cfg = flush_config();
    cfg.flush.max_chunk_idle_time = GoDuration(Duration::from_millis(300));
    cfg.flush.max_chunk_age = GoDuration::secs(3600);
    let (ing, metrics) = start(cfg).await;
    let store = Arc::new(FakeStore::default());
    ing.set_chunk_store(store.clone());
    // Series 0: 130 samples → a full chunk + an open head (MultipleChunksInSeries).
    // Series 1: 2 samples 2h apart → one chunk spanning more than max age (Aged).
    ing.push(
        "t1",
        WriteRequest {
            timeseries: vec![
                ts("m", 0, &(0..130).map(|i| (i * 15_000, i as f64)).collect::<Vec<_>>()),
                ts("m", 1, &[(0, 1.0), (7_200_000, 2.0)]),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ing.sweep(false);
    wait_for(|| store.chunks.lock().len() == 2).await;
    let got = stored(&store);
    assert_eq!(got[0].1.len(), 120, "only the full chunk of series 0");
    assert_eq!(got[1].1, vec![(0, 1.0), (7_200_000, 2.0)]);
    for reason in ["MultipleChunksInSeries", "Aged"] {
        let name = format!("cortex_ingester_flushing_enqueued_series_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &name), 1.0);
    }
    // Queued twice: deduplicated, flushed once.
    ing.sweep(false);
    ing.sweep(false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.chunks.lock().len(), 2);
    // Once idle, the head of series 0 goes too.
    tokio::time::sleep(Duration::from_millis(350)).await;
    ing.sweep(false);
    wait_for(|| store.chunks.lock().len() == 3).await;
    assert_eq!(stored(&store)[0].1.len(), 130);
    assert_eq!(
        metric(
            &metrics,
            "cortex_ingester_flushing_enqueued_series_total{reason=\"Idle\"}"
        ),
        1.0
    );
}

async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met in 5s");
}

#[tokio::test]
async fn failed_immediate_flushes_are_retried() {
    let (ing, metrics) = start(flush_config()).await;
    let store = Arc::new(FakeStore::default());
    store.fail.store(2, Ordering::SeqCst);
    ing.set_chunk_store(store.clone());
    push_rounds(&ing, 1, 0..10).await;
    assert!(ing.flush_and_wait(Duration::from_secs(10)).await);
    assert_eq!(store.puts.load(Ordering::SeqCst), 3);
    assert_eq!(stored(&store), expected(1, 0..10));
    assert_eq!(
        metric(
            &metrics,
            "cortex_ingester_flushing_dequeued_series_total{outcome=\"error\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn flush_and_shutdown_endpoints() {
    use tower::ServiceExt;
    let (ing, _) = start(flush_config()).await;
    let store = Arc::new(FakeStore::default());
    ing.set_chunk_store(store.clone());
    push_rounds(&ing, 4, 0..5).await;
    let call = |path: &'static str| {
        let router = ing.http_routes();
        async move {
            let req = axum::http::Request::post(path).body(axum::body::Body::empty()).unwrap();
            router.oneshot(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(call("/ingester/flush").await, 204);
    wait_for(|| store.chunks.lock().len() == 4).await;
    push_rounds(&ing, 4, 5..7).await;
    assert_eq!(call("/shutdown").await, 204);
    // /shutdown returns once everything is stored.
    assert_eq!(stored(&store), expected(4, 0..7));
    assert!(ing.check_ready().is_err());
    let err = ing
        .push(
            "t1",
            WriteRequest {
                timeseries: vec![ts("m", 0, &[(1_000_000, 1.0)])],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
}

#[tokio::test]
async fn spread_flushes_cut_the_head_at_the_series_slot() {
    let mut cfg = Config::default();
    cfg.flush.max_chunk_age = GoDuration::secs(3600);
    let (ing, _) = start(cfg).await;
    // Samples every 15s for 2h: each series crosses its slot twice, so
    // besides 120-sample cuts its chunks end right before each slot.
    let pts: Vec<_> = (0..480).map(|i| (i * 15_000, i as f64)).collect();
    ing.push(
        "t1",
        WriteRequest {
            timeseries: vec![ts("m", 0, &pts)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let fp = ing.user("t1").unwrap().candidate_fingerprints(&[])[0];
    let slot = (fp % 3_600_000) as i64;
    let user = ing.user("t1").unwrap();
    let mut starts = Vec::new();
    user.for_each_matching(&[fp], &[], |s, _| starts.extend(s.chunks.iter().map(|c| c.first_time)));
    let first_at_or_after = |t: i64| pts.iter().map(|p| p.0).find(|&x| x >= t).unwrap();
    assert!(starts.contains(&first_at_or_after(slot)), "{starts:?} slot {slot}");
    assert!(starts.contains(&first_at_or_after(slot + 3_600_000)), "{starts:?}");
    assert_eq!(dump(&ing)[0].1, pts.iter().map(|&(t, v)| (t, v)).collect::<Vec<_>>());
}

/// Bigchunk (the default): closed chunks wait for their run to be due and are stored as one
/// object whose sub-chunks are the ingester's XOR chunks, samples unchanged.
#[tokio::test]
async fn bigchunk_flushes_a_series_run_as_one_object() {
    let mut cfg = flush_config();
    cfg.flush.chunk_encoding = crate::flush::WriteEncoding::BIGCHUNK;
    cfg.flush.max_chunk_age = GoDuration::secs(3600);
    let (ing, metrics) = start(cfg).await;
    let store = Arc::new(FakeStore::default());
    ing.set_chunk_store(store.clone());
    // 130 samples (32.5 min): a closed chunk and a head, the run shorter than max age: kept.
    let pts: Vec<(i64, f64)> = (0..600).map(|i| (i * 15_000, i as f64)).collect();
    ing.push("t1", one(vec![ts("m", 0, &pts[..130])])).await.unwrap();
    ing.sweep(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.chunks.lock().len(), 0, "a closed chunk waits for its run");
    // Up to 2.5h: the run spans more than max age: its closed chunks go as one Bigchunk.
    ing.push("t1", one(vec![ts("m", 0, &pts[130..])])).await.unwrap();
    ing.sweep(false);
    wait_for(|| store.chunks.lock().len() == 1).await;
    {
        let c = &store.chunks.lock()[0];
        assert_eq!(c.encoding, chunk::Encoding::Bigchunk.id());
        let b = chunk::StoredChunk::open(c.encoding, c.data.clone()).unwrap();
        let got: Vec<(i64, f64)> = b.iter().collect();
        assert_eq!(got, pts[..480].to_vec(), "4 closed chunks, the head stays");
        assert_eq!((c.from_ms, c.through_ms), (0, 479 * 15_000));
    }
    assert_eq!(
        metric(
            &metrics,
            "cortex_ingester_flushing_enqueued_series_total{reason=\"Aged\"}"
        ),
        1.0
    );
    // An immediate flush stores the head: a single chunk stays plain XOR.
    assert!(ing.flush_and_wait(Duration::from_secs(10)).await);
    let chunks = store.chunks.lock();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].encoding, chunk::ENCODING_PROMETHEUS_XOR);
    let rest: Vec<(i64, f64)> = XorChunk::from_bytes(chunks[1].data.clone()).unwrap().iter().collect();
    assert_eq!(rest, pts[480..].to_vec());
}
