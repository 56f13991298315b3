//! Chunk objects written by a real Cortex v1.13.2 in every encoding it writes
//! (`testdata/cortex-v1.13.2`, see its README): each decodes to exactly the samples pushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use model::Labels;

use crate::chunk_object::{self, ChunkRef};

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/cortex-v1.13.2")
}

/// The pushed dataset: labels → (timestamp, f64 bits).
pub(crate) fn dataset() -> BTreeMap<Labels, Vec<(i64, u64)>> {
    #[derive(serde::Deserialize)]
    struct Series {
        labels: BTreeMap<String, String>,
        samples: Vec<(i64, u64)>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        series: Vec<Series>,
    }
    let text = std::fs::read_to_string(fixture_dir().join("dataset.json")).unwrap();
    let f: File = serde_json::from_str(&text).unwrap();
    f.series
        .into_iter()
        .map(|s| (Labels::from_pairs(s.labels), s.samples))
        .collect()
}

/// Every chunk object of `tenant`: (external key, bytes).
pub(crate) fn objects(tenant: &str) -> Vec<(String, Bytes)> {
    let dir = fixture_dir().join("chunks").join(tenant);
    let mut out: Vec<(String, Bytes)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let key = format!("{tenant}/{}", e.file_name().to_string_lossy());
            (key, std::fs::read(e.path()).unwrap().into())
        })
        .collect();
    out.sort();
    out
}

/// The tenants of the fixtures and the encoding Cortex wrote for each.
pub(crate) const TENANTS: [(&str, chunk::Encoding); 4] = [
    ("doubledelta", chunk::Encoding::DoubleDelta),
    ("varbit", chunk::Encoding::Varbit),
    ("bigchunk", chunk::Encoding::Bigchunk),
    ("prometheusxor", chunk::Encoding::PrometheusXorChunk),
];

/// The dataset pushes -0.0; Cortex v1.13.2's write path stores +0.0 in every encoding (XOR
/// included, which keeps the sign bit), so the sign is lost before encoding. Every other value —
/// the stale-marker NaN and ±Inf included — is stored bit for bit.
fn stored_by_cortex((t, bits): (i64, u64)) -> (i64, u64) {
    if bits == (-0.0f64).to_bits() {
        (t, 0)
    } else {
        (t, bits)
    }
}

#[test]
fn every_encoding_cortex_wrote_decodes_to_the_exact_samples() {
    let want = dataset();
    let total: usize = want.values().map(Vec::len).sum();
    for (tenant, encoding) in TENANTS {
        let mut got: BTreeMap<Labels, Vec<(i64, u64)>> = BTreeMap::new();
        let objs = objects(tenant);
        assert!(!objs.is_empty(), "no fixtures for {tenant}");
        for (key, data) in objs {
            let r = ChunkRef::parse(tenant, &key).unwrap();
            let c = chunk_object::decode(&r, data).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(c.encoding, encoding.id(), "{key}");
            let x = chunk::StoredChunk::open(c.encoding, c.data).unwrap();
            let samples: Vec<(i64, u64)> = x.iter().map(|(t, v)| (t, v.to_bits())).collect();
            assert_eq!(samples.len(), x.num_samples(), "{key}");
            assert_eq!(
                samples.first().map(|s| s.0),
                Some(c.from_ms),
                "{key}: first sample = from"
            );
            assert_eq!(
                samples.last().map(|s| s.0),
                Some(c.through_ms),
                "{key}: last sample = through"
            );
            got.entry(c.labels).or_default().extend(samples);
        }
        for s in got.values_mut() {
            s.sort_by_key(|x| x.0);
        }
        assert_eq!(got.len(), want.len(), "{tenant}: series");
        for (labels, samples) in &want {
            let g = got.get(labels).unwrap_or_else(|| panic!("{tenant}: {labels} missing"));
            assert_eq!(g.len(), samples.len(), "{tenant} {labels}: sample count");
            for (i, (a, b)) in g.iter().zip(samples).enumerate() {
                assert_eq!(*a, stored_by_cortex(*b), "{tenant} {labels}: sample {i} (t, f64 bits)");
            }
        }
        assert_eq!(got.values().map(Vec::len).sum::<usize>(), total);
    }
}

/// The index rows Cortex wrote (a DynamoDB scan, see the fixture README).
pub(crate) fn index_rows() -> Vec<crate::schema::IndexEntry> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Row {
        table: String,
        hash: String,
        range: String,
        value: String,
    }
    #[derive(serde::Deserialize)]
    struct File {
        rows: Vec<Row>,
    }
    let text = std::fs::read_to_string(fixture_dir().join("index.json")).unwrap();
    let f: File = serde_json::from_str(&text).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    f.rows
        .into_iter()
        .map(|r| crate::schema::IndexEntry {
            table: r.table,
            hash: r.hash,
            range: b64.decode(r.range).unwrap().into(),
            value: b64.decode(r.value).unwrap().into(),
        })
        .collect()
}

mod served_by_the_store {
    use std::sync::Arc;

    use super::*;
    use crate::index::embedded::EmbeddedIndex;
    use crate::index::IndexClient;
    use crate::object::fs::FsObjectClient;
    use crate::object::ObjectClient;
    use crate::schema::Schema;
    use crate::store::{PeriodStore, SeriesStore, StoreLimits};
    use crate::{ChunkStore, SchemaConfig};
    use model::Matcher;

    /// The schema Cortex wrote the fixtures with (make_fixtures.py), on our embedded backends.
    const SCHEMA: &str = "configs:
  - from: 2021-05-01
    store: boltdb
    object_store: filesystem
    schema: v11
    index: {prefix: cortex_index_, period: 168h}
";

    struct Loaded {
        _dir: tempfile::TempDir,
        store: SeriesStore,
        objects: Arc<FsObjectClient>,
        metrics: server::Metrics,
    }

    async fn load() -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(EmbeddedIndex::open(&dir.path().join("index")).unwrap());
        index.batch_write(index_rows()).await.unwrap();
        let objects = Arc::new(FsObjectClient::new(dir.path().join("chunks")).unwrap());
        for (tenant, _) in TENANTS {
            for (key, data) in super::objects(tenant) {
                objects.put(&key, data).await.unwrap();
            }
        }
        let schema = SchemaConfig::parse(SCHEMA).unwrap();
        let periods = vec![PeriodStore {
            schema: Schema::new(&schema.configs[0]),
            index: index.clone() as Arc<dyn IndexClient>,
            objects: objects.clone() as Arc<dyn ObjectClient>,
        }];
        let metrics = server::Metrics::new();
        let store = SeriesStore::new(schema, periods, None, None, StoreLimits::default(), &metrics);
        Loaded {
            _dir: dir,
            store,
            objects,
            metrics,
        }
    }

    fn metric_of(labels: &Labels) -> String {
        labels.get(model::METRIC_NAME).to_string()
    }

    #[tokio::test]
    async fn cortex_index_rows_and_objects_answer_queries_exactly() {
        let l = load().await;
        let want = dataset();
        let (from, through) = want
            .values()
            .flatten()
            .fold((i64::MAX, i64::MIN), |(a, b), (t, _)| (a.min(*t), b.max(*t)));
        for (tenant, _) in TENANTS {
            for (labels, samples) in &want {
                let m = [
                    Matcher::equal(model::METRIC_NAME, metric_of(labels)),
                    Matcher::equal("job", "fixtures"),
                ];
                let chunks = l.store.get(tenant, from, through, &m).await.unwrap();
                assert!(!chunks.is_empty(), "{tenant} {labels}");
                let mut got: Vec<(i64, u64)> = chunks
                    .iter()
                    .inspect(|c| assert_eq!(&c.labels, labels))
                    .flat_map(|c| {
                        let x = chunk::StoredChunk::open(c.encoding, c.data.clone()).unwrap();
                        x.iter().map(|(t, v)| (t, v.to_bits())).collect::<Vec<_>>()
                    })
                    .collect();
                got.sort_by_key(|s| s.0);
                let want: Vec<_> = samples.iter().copied().map(stored_by_cortex).collect();
                assert_eq!(got, want, "{tenant} {labels}");
            }
        }
    }

    fn failures(m: &server::Metrics, reason: &str) -> f64 {
        let text = m.encode();
        let line = format!("cortex_chunk_store_chunk_decode_failures_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Replaces the one object of the gauge series of `tenant` by `f(bytes)`; returns its key.
    async fn tamper(l: &Loaded, tenant: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) -> String {
        let (key, data) = super::objects(tenant)
            .into_iter()
            .find(|(k, d)| {
                let r = ChunkRef::parse(tenant, k).unwrap();
                chunk_object::decode(&r, d.clone()).unwrap().labels.get("kind") == "gauge"
            })
            .unwrap();
        l.objects.put(&key, f(data.to_vec()).into()).await.unwrap();
        key
    }

    async fn query_gauge(l: &Loaded, tenant: &str) -> crate::StoreError {
        let m = [Matcher::equal(model::METRIC_NAME, "fixture_gauge")];
        l.store
            .get(tenant, 1_622_505_600_000, 1_622_600_000_000, &m)
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn bad_objects_fail_the_query_naming_the_chunk_and_are_counted() {
        let l = load().await;
        // Checksum mismatch: one flipped payload bit.
        let key = tamper(&l, "bigchunk", |mut b| {
            let n = b.len() - 3;
            b[n] ^= 0x10;
            b
        })
        .await;
        let e = query_gauge(&l, "bigchunk").await;
        assert_eq!(
            (e.code, e.message.as_str()),
            (500, format!("chunk {key}: invalid chunk checksum").as_str())
        );
        assert_eq!(failures(&l.metrics, "checksum"), 1.0);

        // A chunk re-encoded by someone else: right key checksum, wrong labels for its index row.
        let key = tamper(&l, "varbit", |b| b).await;
        let r = ChunkRef::parse("varbit", &key).unwrap();
        let mut c = chunk_object::decode(&r, l.objects.get(&key).await.unwrap().unwrap()).unwrap();
        c.labels = Labels::from_pairs([("__name__", "fixture_gauge"), ("job", "fixtures"), ("kind", "other")]);
        let (bytes, new_ref) = chunk_object::encode_with_ref(&c);
        // The key's checksum matches the new bytes; the index row is the gauge series'.
        let forged = ChunkRef {
            checksum: new_ref.checksum,
            ..r.clone()
        };
        let mismatch = l
            .store
            .open_object(&forged, &crate::keys::series_id(&dataset_labels("gauge")), bytes);
        let e = mismatch.unwrap_err();
        assert!(
            e.message
                .starts_with(&format!("chunk {}: labels fixture_gauge{{", forged.object_key()))
                && e.message.contains("do not match the series"),
            "{}",
            e.message
        );
        assert_eq!(failures(&l.metrics, "labels"), 1.0);

        // Unknown encoding byte and a truncated Bigchunk, with valid checksums (so only the payload is bad).
        let (key, data) = super::objects("bigchunk").remove(0);
        let r = ChunkRef::parse("bigchunk", &key).unwrap();
        let mut c = chunk_object::decode(&r, data).unwrap();
        for (encoding, cut, want) in [(9, 0, "unknown chunk encoding 9"), (3, 7, "bigchunk truncated")] {
            c.encoding = encoding;
            c.data = c.data.slice(..c.data.len() - cut);
            let (bytes, r2) = chunk_object::encode_with_ref(&c);
            let e = l
                .store
                .open_object(&r2, &crate::keys::series_id(&c.labels), bytes)
                .unwrap_err();
            assert!(
                e.message.starts_with(&format!("chunk {}: {want}", r2.object_key())),
                "{}",
                e.message
            );
        }
        assert_eq!(failures(&l.metrics, "encoding"), 1.0);
        assert_eq!(failures(&l.metrics, "payload"), 1.0);
    }

    fn dataset_labels(kind: &str) -> Labels {
        dataset().into_keys().find(|l| l.get("kind") == kind).unwrap()
    }
}
