//! Drop-in for a Cortex v1.13 chunks cluster (issue 12), with our binary:
//!
//! - Cortex's own example configs (testdata/cortex-v1.13.2/configs) through `-config.verify`:
//!   the chunks one is accepted (warnings name every ignored key), the blocks ones refused.
//! - The chunk objects and index rows a real Cortex v1.13.2 wrote (testdata/cortex-v1.13.2, all
//!   four encodings) loaded through our store's public index/object clients into the embedded
//!   store and into dynalite + s3rver, then served by the binary — configured with a Cortex-style
//!   YAML file — through the query API: raw samples (matrix selector) and `query_range` equal
//!   what the fixtures decode to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use e2e::{free_port, Proc};
use model::Labels;
use storage::config::Backends;
use storage::index::IndexClient;
use storage::object::ObjectClient;
use storage::schema::IndexEntry;
use storage::table_manager::{TableClient, TableDesc};
use storage::StorageConfig;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/cortex-v1.13.2")
}

// ---------------------------------------------------------------- configs

#[test]
fn binary_verifies_cortex_example_configs() {
    let dir = testdata().join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5);
    for f in files {
        let out = std::process::Command::new(e2e::our_binary("cortex"))
            .arg("-config.verify")
            .arg(format!("-config.file={}", f.display()))
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("blocks") {
            assert_eq!(out.status.code(), Some(1), "{name}: {stdout}{stderr}");
            assert!(
                stderr.contains(
                    "storage.engine: \"blocks\" is not supported: only the chunks storage engine is implemented"
                ),
                "{name}: {stderr}"
            );
        } else {
            assert!(out.status.success(), "{name}: {stderr}");
            // The effective config: Cortex's keys landed in our tree.
            for want in [
                "boltdb_directory: /tmp/cortex/index",
                "filesystem_directory: /tmp/cortex/chunks",
                // The inline schema, a list of mappings (rendered in flow style).
                r#""from":"2019-07-29""#,
                r#""schema":"v10","store":"boltdb""#,
            ] {
                assert!(stdout.contains(want), "{name}: {want} not in\n{stdout}");
            }
            for key in [
                "purger.object_store_type",
                "storage.delete_store",
                "ingester_client.grpc_client_config",
            ] {
                assert!(
                    stderr.contains(&format!("warning: Cortex config field {key}")),
                    "{name}: no warning for {key}: {stderr}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- fixtures

const TENANTS: [&str; 4] = ["doubledelta", "varbit", "bigchunk", "prometheusxor"];

/// The pushed dataset: labels → (timestamp, f64 bits), with Cortex's one change applied: its
/// write path stores -0.0 as +0.0 (see the fixture README).
fn dataset() -> BTreeMap<Labels, Vec<(i64, u64)>> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("dataset.json")).unwrap()).unwrap();
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = Labels::from_pairs(
                s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
            );
            let samples = s["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let bits = p[1].as_u64().unwrap();
                    let bits = if bits == (-0.0f64).to_bits() { 0 } else { bits };
                    (p[0].as_i64().unwrap(), bits)
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

fn index_rows() -> Vec<IndexEntry> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("index.json")).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| IndexEntry {
            table: r["table"].as_str().unwrap().into(),
            hash: r["hash"].as_str().unwrap().into(),
            range: b64.decode(r["range"].as_str().unwrap()).unwrap().into(),
            value: b64.decode(r["value"].as_str().unwrap()).unwrap().into(),
        })
        .collect()
}

/// Every chunk object: (tenant, object key, bytes).
fn objects() -> Vec<(String, String, Bytes)> {
    let mut out = Vec::new();
    for t in TENANTS {
        for e in std::fs::read_dir(testdata().join("chunks").join(t)).unwrap() {
            let e = e.unwrap();
            let key = format!("{t}/{}", e.file_name().to_string_lossy());
            out.push((t.to_string(), key, std::fs::read(e.path()).unwrap().into()));
        }
    }
    out.sort();
    out
}

/// Writes the fixtures through the store's own clients (so whatever layout the backends use on
/// disk or in the bucket is theirs); returns (rows, objects) written.
async fn load_fixtures(cfg: &StorageConfig) -> (usize, usize) {
    let schema = cfg.schema().unwrap();
    let backends = Backends::open(cfg, &schema, &server::Metrics::new()).await.unwrap();
    let rows = index_rows();
    let tables: std::collections::BTreeSet<String> = rows.iter().map(|r| r.table.clone()).collect();
    let index: std::sync::Arc<dyn IndexClient> = match (&backends.embedded, &backends.dynamo) {
        (Some(e), _) => std::sync::Arc::new(e.clone()),
        (None, Some(d)) => {
            for t in &tables {
                d.create_table(&TableDesc {
                    name: t.clone(),
                    provisioned_read: 1,
                    provisioned_write: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
                let mut active = false;
                for _ in 0..100 {
                    if d.describe_table(t).await.unwrap().is_some() {
                        active = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(active, "table {t} becomes ACTIVE");
            }
            d.clone()
        }
        _ => panic!("no index backend opened"),
    };
    let objects_client: std::sync::Arc<dyn ObjectClient> = match (&backends.fs, &backends.s3) {
        (Some(f), _) => f.clone(),
        (None, Some(s)) => s.clone(),
        _ => panic!("no object backend opened"),
    };
    let n_rows = rows.len();
    index.batch_write(rows).await.unwrap();
    let objs = objects();
    let n_objects = objs.len();
    for (_, key, data) in objs {
        objects_client.put(&key, data).await.unwrap();
    }
    (n_rows, n_objects)
}

/// A Cortex-style config file: inline `schema:` as make_fixtures.py gave Cortex (v11, weekly
/// `cortex_index_` tables from 2021-05-01) on `store`/`object_store`, plus `storage:` as Cortex
/// spells it.
fn cortex_config(store: &str, object_store: &str, storage_yaml: &str) -> String {
    format!(
        "auth_enabled: true
distributor:
  pool:
    health_check_ingesters: true
ingester:
  lifecycler:
    join_after: 0
    min_ready_duration: 0s
    final_sleep: 0s
    ring:
      kvstore:
        store: inmemory
      replication_factor: 1
schema:
  configs:
  - from: 2021-05-01
    store: {store}
    object_store: {object_store}
    schema: v11
    index:
      prefix: cortex_index_
      period: 168h
storage:
{storage_yaml}
"
    )
}

fn parse_value(s: &str) -> u64 {
    s.parse::<f64>().unwrap_or_else(|_| panic!("value {s:?}")).to_bits()
}

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What Prometheus 2.x answers at `t`: the newest sample in [t - 5m, t], none if it is a stale marker.
fn at(samples: &[(i64, u64)], t: i64) -> Option<u64> {
    let i = samples.partition_point(|s| s.0 <= t);
    let (ts, v) = *samples.get(i.checked_sub(1)?)?;
    (ts >= t - 300_000 && v != STALE_NAN).then_some(v)
}

async fn get_json(client: &e2e::HttpClient, url: &str, tenant: &str) -> serde_json::Value {
    let (s, _, b) = e2e::http(client, "GET", url, &[("X-Scope-OrgID", tenant)], vec![])
        .await
        .unwrap();
    assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

/// Queries every series of every tenant: raw samples and a 15s `query_range`. Returns
/// (series answered exactly, objects behind them).
async fn check_served(base: &str) -> (usize, usize) {
    let client = e2e::http_client();
    let want = dataset();
    let objs = objects();
    let mut series_ok = 0;
    let mut objects_ok = 0;
    for tenant in TENANTS {
        for (labels, samples) in &want {
            let name = labels.get("__name__").to_string();
            let sel = format!("{name}{{job=\"fixtures\"}}");
            let (first, last) = (samples[0].0, samples[samples.len() - 1].0);
            // Raw samples: a matrix selector over the whole series (stale markers are not samples).
            let q: String = form_urlencoded::byte_serialize(format!("{sel}[12h]").as_bytes()).collect();
            let url = format!("{base}/prometheus/api/v1/query?query={q}&time={}", last as f64 / 1000.0);
            let v = get_json(&client, &url, tenant).await;
            let result = v["data"]["result"].as_array().unwrap();
            assert_eq!(result.len(), 1, "{tenant} {name}: {v}");
            let got: Vec<(i64, u64)> = result[0]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                        parse_value(p[1].as_str().unwrap()),
                    )
                })
                .collect();
            let raw: Vec<(i64, u64)> = samples.iter().copied().filter(|s| s.1 != STALE_NAN).collect();
            assert_eq!(got, raw, "{tenant} {name}: raw samples");

            // query_range at 15s steps from the first sample.
            let q: String = form_urlencoded::byte_serialize(sel.as_bytes()).collect();
            let url = format!(
                "{base}/prometheus/api/v1/query_range?query={q}&start={}&end={}&step=15",
                first as f64 / 1000.0,
                last as f64 / 1000.0
            );
            let v = get_json(&client, &url, tenant).await;
            let result = v["data"]["result"].as_array().unwrap();
            assert_eq!(result.len(), 1, "{tenant} {name}: {v}");
            let got: Vec<(i64, u64)> = result[0]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                        parse_value(p[1].as_str().unwrap()),
                    )
                })
                .collect();
            let expect: Vec<(i64, u64)> = (0..)
                .map(|i| first + i * 15_000)
                .take_while(|t| *t <= last)
                .filter_map(|t| at(samples, t).map(|v| (t, v)))
                .collect();
            assert_eq!(got.len(), expect.len(), "{tenant} {name}: query_range points");
            assert_eq!(got, expect, "{tenant} {name}: query_range");
            series_ok += 1;
            let fp = model::hash::labels_fingerprint(labels);
            objects_ok += objs
                .iter()
                .filter(|(t, key, _)| {
                    t == tenant && storage::chunk_object::ChunkRef::parse(t, key).unwrap().fingerprint == fp
                })
                .count();
        }
    }
    (series_ok, objects_ok)
}

fn start_cortex(dir: &Path, config: &str) -> (Proc, String) {
    let file = dir.join("cortex.yaml");
    std::fs::write(&file, config).unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let args = vec![
        format!("-config.file={}", file.display()),
        "-target=distributor,ingester,querier,query-frontend".to_string(),
        format!("-server.http-listen-port={http_port}"),
        format!("-server.grpc-listen-port={grpc_port}"),
        format!("-ingester.wal-dir={}", dir.join("wal").display()),
    ];
    let p = Proc::start("cortex", &e2e::our_binary("cortex"), &args, dir);
    (p, format!("http://127.0.0.1:{http_port}"))
}

async fn serve_and_check(dir: &Path, config: &str, what: &str) {
    let (proc, base) = start_cortex(dir, config);
    e2e::wait_ready(&e2e::http_client(), &format!("{base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
    let (series, objects) = check_served(&base).await;
    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
    assert!(
        log.contains("storage.boltdb.directory") || !config.contains("boltdb:"),
        "the mapping of Cortex's storage.boltdb.directory is logged:\n{log}"
    );
    eprintln!(
        "{what}: {series} of 16 (tenant, series) answered exactly; {objects} of {} Cortex chunk objects behind them",
        objects_total()
    );
    assert_eq!((series, objects), (16, objects_total()));
}

fn objects_total() -> usize {
    objects().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cortex_fixtures_served_from_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let (index_dir, chunk_dir) = (dir.path().join("index"), dir.path().join("chunks"));
    let storage_yaml = format!(
        "  boltdb:\n    directory: {}\n  filesystem:\n    directory: {}\n",
        index_dir.display(),
        chunk_dir.display()
    );
    let config = cortex_config("boltdb", "filesystem", &storage_yaml);
    let cfg = StorageConfig {
        boltdb_directory: index_dir.display().to_string(),
        filesystem_directory: chunk_dir.display().to_string(),
        schema: storage::SchemaConfig::parse(
            "configs:\n  - {from: 2021-05-01, store: boltdb, object_store: filesystem, schema: v11, index: {prefix: cortex_index_, period: 168h}}\n",
        )
        .unwrap(),
        ..Default::default()
    };
    let (rows, objects) = load_fixtures(&cfg).await;
    assert_eq!((rows, objects), (89, 37));
    serve_and_check(dir.path(), &config, "embedded store").await;
}

fn node_bin(name: &str) -> PathBuf {
    let opt = std::env::var("PEERS_OPT").unwrap_or_else(|_| "/opt/peers".into());
    let p = PathBuf::from(opt).join("node/node_modules/.bin").join(name);
    assert!(
        p.exists(),
        "{name} is not installed: run scripts/install-peers.sh (make e2e does)"
    );
    p
}

async fn wait_tcp(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cortex_fixtures_served_from_dynamodb_and_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, sp) = (free_port(), free_port());
    let _dynalite = Proc::start(
        "dynalite",
        &node_bin("dynalite"),
        &[
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            dp.to_string(),
            "--createTableMs".into(),
            "10".into(),
        ],
        dir.path(),
    );
    std::fs::create_dir_all(dir.path().join("s3")).unwrap();
    let _s3rver = Proc::start(
        "s3rver",
        &node_bin("s3rver"),
        &[
            "-d".into(),
            dir.path().join("s3").display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            sp.to_string(),
            "--configure-bucket".into(),
            "cortex-chunks".into(),
            "--allow-mismatched-signatures".into(),
        ],
        dir.path(),
    );
    wait_tcp(dp, "dynalite").await;
    wait_tcp(sp, "s3rver").await;
    let dynamo_url = format!("dynamodb://user:pass@127.0.0.1:{dp}/");
    let s3_url = format!("http://S3RVER:S3RVER@127.0.0.1:{sp}/cortex-chunks");
    let storage_yaml = format!(
        "  aws:\n    dynamodb:\n      dynamodb_url: {dynamo_url}\n    s3: {s3_url}\n    s3forcepathstyle: true\n"
    );
    let config = cortex_config("aws-dynamo", "s3", &storage_yaml);
    let mut cfg = StorageConfig {
        schema: storage::SchemaConfig::parse(
            "configs:\n  - {from: 2021-05-01, store: aws-dynamo, object_store: s3, schema: v11, index: {prefix: cortex_index_, period: 168h}}\n",
        )
        .unwrap(),
        ..Default::default()
    };
    cfg.aws.dynamodb.dynamodb_url = dynamo_url.clone().into();
    cfg.aws.s3.s3 = s3_url.clone().into();
    cfg.aws.s3.s3forcepathstyle = true;
    let (rows, objects) = load_fixtures(&cfg).await;
    assert_eq!((rows, objects), (89, 37));
    serve_and_check(dir.path(), &config, "dynalite + s3rver").await;
}
