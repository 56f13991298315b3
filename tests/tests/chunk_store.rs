//! The chunk store against real peers: dynalite (DynamoDB API), s3rver (S3 API) and memcached,
//! each started on a free port. Covers the DynamoDB index client (batch writes over 25 items,
//! paginated queries), the S3 object client, the memcached caches and the table-manager
//! (create ahead of time, TagResource, retention deletes).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use e2e::{free_port, require_binary, Proc};
use model::{Labels, Matcher};
use storage::cache::{Cache, MemcachedClient, MemcachedConfig};
use storage::table_manager::{TableClient, TableManager, TableManagerConfig};
use storage::{ChunkEntry, ChunkStore, StorageConfig};

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

struct Peers {
    _procs: Vec<Proc>,
    dynamo_port: u16,
    s3_port: u16,
    memcached_port: u16,
    _dir: tempfile::TempDir,
}

async fn start_peers() -> Peers {
    let dir = tempfile::tempdir().unwrap();
    let (dp, sp, mp) = (free_port(), free_port(), free_port());
    let dynalite = Proc::start(
        "dynalite",
        &node_bin("dynalite"),
        &[
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            dp.to_string(),
            "--createTableMs".into(),
            "10".into(),
            "--deleteTableMs".into(),
            "10".into(),
            "--updateTableMs".into(),
            "10".into(),
        ],
        dir.path(),
    );
    std::fs::create_dir_all(dir.path().join("s3")).unwrap();
    let s3rver = Proc::start(
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
    let memcached = Proc::start(
        "memcached",
        &require_binary("memcached"),
        &[
            "-l".into(),
            "127.0.0.1".into(),
            "-p".into(),
            mp.to_string(),
            "-U".into(),
            "0".into(),
            "-u".into(),
            "root".into(),
        ],
        dir.path(),
    );
    wait_tcp(dp, "dynalite").await;
    wait_tcp(sp, "s3rver").await;
    wait_tcp(mp, "memcached").await;
    Peers {
        _procs: vec![dynalite, s3rver, memcached],
        dynamo_port: dp,
        s3_port: sp,
        memcached_port: mp,
        _dir: dir,
    }
}

fn storage_config(p: &Peers, schema_file: &str, with_caches: bool) -> StorageConfig {
    let mut c = StorageConfig {
        schema_config_file: schema_file.into(),
        ..Default::default()
    };
    c.aws.dynamodb.dynamodb_url = format!("dynamodb://user:pass@127.0.0.1:{}/", p.dynamo_port).into();
    c.aws.s3.s3 = format!("http://S3RVER:S3RVER@127.0.0.1:{}/cortex-chunks", p.s3_port).into();
    c.aws.s3.s3forcepathstyle = true;
    if with_caches {
        let mc = format!("127.0.0.1:{}", p.memcached_port);
        c.chunk_cache_config.memcached.addresses = mc.clone();
        c.index_queries_cache_config.memcached.addresses = mc.clone();
        c.write_dedupe_cache_config.memcached.addresses = mc;
    }
    c
}

fn chunk(tenant: &str, labels: Labels, from: i64) -> ChunkEntry {
    let mut x = chunk::XorChunk::new();
    for i in 0..120 {
        x.append(from + i * 15_000, i as f64);
    }
    ChunkEntry {
        tenant: tenant.into(),
        fingerprint: model::hash::labels_fingerprint(&labels),
        labels,
        from_ms: from,
        through_ms: from + 119 * 15_000,
        encoding: chunk::ENCODING_PROMETHEUS_XOR,
        data: Bytes::copy_from_slice(x.bytes()),
    }
}

/// Writes one chunk for each of `n` series of `metric` (labelled `instance="i<k>"` plus `extra`),
/// then reads them back: all by metric name, and one by instance with its exact bytes.
/// Returns the chunks' start time and the chunks written.
async fn put_and_read_back(
    store: &dyn ChunkStore,
    tenant: &str,
    metric: &str,
    n: usize,
    extra: &[(&str, &str)],
) -> (i64, Vec<ChunkEntry>) {
    let from = model::now_ms() - 3_600_000;
    let chunks: Vec<ChunkEntry> = (0..n)
        .map(|i| {
            let instance = format!("i{i}");
            let mut pairs = vec![("__name__", metric), ("instance", instance.as_str())];
            pairs.extend_from_slice(extra);
            chunk(tenant, Labels::from_pairs(pairs), from)
        })
        .collect();
    store.put(chunks.clone()).await.unwrap();
    let all = store
        .get(tenant, from, from + 3_600_000, &[Matcher::equal("__name__", metric)])
        .await
        .unwrap();
    assert_eq!(all.len(), n, "every series of {metric} read back");
    let k = n / 2;
    let one = store
        .get(
            tenant,
            from,
            from + 3_600_000,
            &[
                Matcher::equal("__name__", metric),
                Matcher::equal("instance", format!("i{k}")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].data, chunks[k].data, "chunk bytes round-trip");
    (from, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_s3_memcached_and_table_manager() {
    let peers = start_peers().await;
    let schema_dir = tempfile::tempdir().unwrap();
    let schema_file = schema_dir.path().join("schema.yaml");
    std::fs::write(
        &schema_file,
        "configs:
  - from: 2020-01-06
    store: aws-dynamo
    object_store: s3
    schema: v11
    index: {prefix: cortex_index_, period: 168h, tags: {env: e2e}}
    chunks: {prefix: cortex_chunks_, period: 168h}
",
    )
    .unwrap();
    let schema_file = schema_file.display().to_string();
    let metrics = server::Metrics::new();
    let cfg = storage_config(&peers, &schema_file, true);

    // Table-manager: this week's tables (and, with a week's retention, only the recent ones).
    let schema = cfg.schema().unwrap();
    let backends = storage::config::Backends::open(&cfg, &schema, &metrics).await.unwrap();
    let dynamo = backends.dynamo.clone().unwrap();
    let tm_cfg = TableManagerConfig {
        retention_period: model::GoDuration(Duration::from_secs(14 * 86_400)),
        retention_deletes_enabled: true,
        ..Default::default()
    };
    let tm = TableManager::new(tm_cfg, schema.clone(), dynamo.clone(), &metrics).unwrap();
    let now_s = model::now_ms() / 1000;
    let week = now_s / (7 * 86_400);
    // An old table from before the retention period, to be deleted.
    dynamo
        .create_table(&storage::table_manager::TableDesc {
            name: format!("cortex_index_{}", week - 10),
            provisioned_read: 1,
            provisioned_write: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let report = tm.sync().await.unwrap();
    assert!(report.created.contains(&format!("cortex_index_{week}")), "{report:?}");
    assert!(report.created.contains(&format!("cortex_chunks_{week}")), "{report:?}");
    assert_eq!(report.deleted, vec![format!("cortex_index_{}", week - 10)]);
    // DeleteTable is asynchronous (DELETING first).
    let old = format!("cortex_index_{}", week - 10);
    let mut gone = false;
    for _ in 0..100 {
        if !dynamo.list_tables().await.unwrap().contains(&old) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "{old} deleted");
    // dynalite ignores Tags on CreateTable: the tags come from TagResource.
    let mut desc = None;
    for _ in 0..50 {
        desc = dynamo.describe_table(&format!("cortex_index_{week}")).await.unwrap();
        if desc.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let desc = desc.expect("table becomes ACTIVE");
    assert_eq!(desc.tags.get("env").map(String::as_str), Some("e2e"));
    assert_eq!((desc.provisioned_read, desc.provisioned_write), (300, 1000));

    // Store: 40 series (more index entries than one BatchWriteItem takes).
    let (store, _) = storage::build_store(&cfg, &metrics).await.unwrap();
    let (from, chunks) = put_and_read_back(store.as_ref(), "tenant-1", "e2e_metric", 40, &[("job", "e2e")]).await;

    // The chunk cache holds the written chunk under its external key.
    let mc = MemcachedClient::new(MemcachedConfig {
        addresses: format!("127.0.0.1:{}", peers.memcached_port),
        ..Default::default()
    });
    let (_, r) = storage::chunk_object::encode_with_ref(&chunks[7]);
    let hit = mc.fetch(vec![r.external_key()]).await;
    assert_eq!(hit.found.len(), 1, "chunk cache written through on put");

    // A store without caches reads the same from DynamoDB + S3 alone.
    let bare = storage_config(&peers, &schema_file, false);
    let (bare_store, _) = storage::build_store(&bare, &server::Metrics::new()).await.unwrap();
    let got = bare_store
        .get(
            "tenant-1",
            from,
            from + 3_600_000,
            &[Matcher::equal("__name__", "e2e_metric"), Matcher::equal("job", "e2e")],
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 40);
    assert!(bare_store
        .get(
            "tenant-2",
            from,
            from + 3_600_000,
            &[Matcher::equal("__name__", "e2e_metric")]
        )
        .await
        .unwrap()
        .is_empty());

    // Re-putting the same chunks is deduplicated by the chunk cache (another replica's flush).
    store.put(chunks).await.unwrap();
    assert!(metrics.encode().contains("cortex_chunk_store_deduped_chunks_total 40"));
}

fn start_cortex(dir: &std::path::Path, args: &[String], n: usize) -> Proc {
    let log = dir.join(format!("cortex-{n}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(e2e::our_binary("cortex"))
        .args(args)
        .current_dir(dir)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc {
        name: "cortex".into(),
        child: Some(child),
        log,
    }
}

async fn query_range(client: &e2e::HttpClient, base: &str, q: &str, start_s: i64, end_s: i64) -> serde_json::Value {
    let url = format!("{base}/prometheus/api/v1/query_range?query={q}&start={start_s}&end={end_s}&step=15");
    let (s, _, b) = e2e::http(client, "GET", &url, &[], vec![]).await.unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    v["data"]["result"].clone()
}

/// Issue 4 "done when" 2: the all-in-one on dynalite + s3rver + memcached with a v11 weekly
/// schema; push, `/ingester/flush`, restart with the WAL deleted: range queries return the same
/// series and points, now served from the store; the table-manager created the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allinone_flushes_to_dynamodb_and_s3_and_reads_back_after_wal_loss() {
    let peers = start_peers().await;
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("schema.yaml");
    std::fs::write(
        &schema_file,
        "configs:
  - from: 2020-01-06
    store: aws-dynamo
    object_store: s3
    schema: v11
    index: {prefix: cortex_index_, period: 168h}
    chunks: {prefix: cortex_chunks_, period: 168h}
",
    )
    .unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let mc = format!("127.0.0.1:{}", peers.memcached_port);
    let args = vec![
        format!("-server.http-listen-port={http_port}"),
        format!("-server.grpc-listen-port={grpc_port}"),
        format!("-schema-config-file={}", schema_file.display()),
        format!("-dynamodb.url=dynamodb://user:pass@127.0.0.1:{}/", peers.dynamo_port),
        format!("-s3.url=http://S3RVER:S3RVER@127.0.0.1:{}/cortex-chunks", peers.s3_port),
        "-s3.force-path-style=true".to_string(),
        format!("-store.chunks-cache.memcached.addresses={mc}"),
        format!("-store.index-cache-read.memcached.addresses={mc}"),
        format!("-store.index-cache-write.memcached.addresses={mc}"),
        // Index rows are cached for this long (Cortex: keep it ≤ -ingester.max-chunk-idle, because
        // a row read before a flush is stale until then). This test flushes on demand and reads
        // right after, so the cached rows must not outlive the flush.
        "-store.index-cache-validity=1ms".to_string(),
    ];
    let client = e2e::http_client();
    let base = format!("http://127.0.0.1:{http_port}");
    let mut proc = start_cortex(dir.path(), &args, 1);
    e2e::wait_ready(&client, &format!("{base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));

    // The table-manager role created this week's tables.
    let cfg = storage_config(&peers, &schema_file.display().to_string(), false);
    let schema = cfg.schema().unwrap();
    let backends = storage::config::Backends::open(&cfg, &schema, &server::Metrics::new())
        .await
        .unwrap();
    let dynamo = backends.dynamo.clone().unwrap();
    let week = model::now_ms() / 1000 / (7 * 86_400);
    let mut tables = Vec::new();
    for _ in 0..100 {
        tables = dynamo.list_tables().await.unwrap();
        if tables.contains(&format!("cortex_index_{week}")) && tables.contains(&format!("cortex_chunks_{week}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tables.contains(&format!("cortex_index_{week}")),
        "{tables:?}\n{}",
        proc.log_tail()
    );

    // 5 series × 600 samples (10 minutes at 1s), ending a minute ago.
    let from = model::now_ms() - 11 * 60_000;
    let (s, m) = e2e::push(
        &client,
        &base,
        "",
        e2e::synthetic_write("flushed_metric", 5, from, 600, &[]),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    let (start_s, end_s) = (from / 1000 - 60, from / 1000 + 660);
    let before = query_range(&client, &base, "flushed_metric", start_s, end_s).await;
    assert_eq!(before.as_array().unwrap().len(), 5, "{before}");

    let (s, _, _) = e2e::http(&client, "POST", &format!("{base}/ingester/flush"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(s, 204);
    // Flushes are asynchronous: wait until the store (read without caches) has every series.
    let (store, _) = storage::build_store(&cfg, &server::Metrics::new()).await.unwrap();
    let mut stored = 0;
    for _ in 0..200 {
        let chunks = store
            .get(
                "fake",
                from - 60_000,
                from + 660_000,
                &[Matcher::equal("__name__", "flushed_metric")],
            )
            .await
            .unwrap();
        let mut series: Vec<Labels> = chunks.into_iter().map(|c| c.labels).collect();
        series.sort();
        series.dedup();
        stored = series.len();
        if stored == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 5, "{}", proc.log_tail());

    // Restart with the WAL gone: what the querier returns can only come from the store.
    proc.terminate(Duration::from_secs(15));
    let wal = dir.path().join("data/wal");
    assert!(wal.exists(), "the all-in-one keeps its WAL under ./data/wal");
    std::fs::remove_dir_all(&wal).unwrap();
    let mut proc = start_cortex(dir.path(), &args, 2);
    e2e::wait_ready(&client, &format!("{base}/ready"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));
    let after = query_range(&client, &base, "flushed_metric", start_s, end_s).await;
    assert_eq!(after, before, "{}", proc.log_tail());
    proc.terminate(Duration::from_secs(15));
}

/// The same DynamoDB + S3 paths against moto, a second, higher-fidelity
/// implementation of both APIs (slower, so a small data set): table-manager
/// creates the tables, the store writes and reads 30 series back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_second_opinion_on_dynamodb_and_s3() {
    let opt = std::env::var("PEERS_OPT").unwrap_or_else(|_| "/opt/peers".into());
    let moto_bin = PathBuf::from(opt).join("venv/bin/moto_server");
    assert!(
        moto_bin.exists(),
        "moto is not installed: run scripts/install-peers.sh (make e2e does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _moto = Proc::start(
        "moto",
        &moto_bin,
        &["-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()],
        dir.path(),
    );
    wait_tcp(port, "moto").await;
    // moto starts with no buckets; S3 CreateBucket is a path-style PUT it accepts unsigned.
    let client = e2e::http_client();
    let mut created = false;
    for _ in 0..100 {
        if let Ok((s, _, _)) = e2e::http(
            &client,
            "PUT",
            &format!("http://127.0.0.1:{port}/cortex-chunks"),
            &[],
            vec![],
        )
        .await
        {
            if s == 200 {
                created = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "moto bucket cortex-chunks created");

    let schema_file = dir.path().join("schema.yaml");
    std::fs::write(
        &schema_file,
        "configs:
  - from: 2020-01-06
    store: aws-dynamo
    object_store: s3
    schema: v11
    index: {prefix: moto_index_, period: 168h}
    chunks: {prefix: moto_chunks_, period: 168h}
",
    )
    .unwrap();
    let mut cfg = StorageConfig {
        schema_config_file: schema_file.display().to_string(),
        ..Default::default()
    };
    // moto takes any credentials but needs a real region name (us-east-1 by default here).
    cfg.aws.dynamodb.dynamodb_url = format!("dynamodb://key:secret@127.0.0.1:{port}/").into();
    cfg.aws.s3.s3 = format!("http://key:secret@127.0.0.1:{port}/cortex-chunks").into();
    cfg.aws.s3.s3forcepathstyle = true;
    let metrics = server::Metrics::new();
    let schema = cfg.schema().unwrap();
    let backends = storage::config::Backends::open(&cfg, &schema, &metrics).await.unwrap();
    let dynamo = backends.dynamo.clone().unwrap();
    let tm = TableManager::new(TableManagerConfig::default(), schema.clone(), dynamo.clone(), &metrics).unwrap();
    let report = tm.sync().await.unwrap();
    let week = model::now_ms() / 1000 / (7 * 86_400);
    assert!(report.created.contains(&format!("moto_index_{week}")), "{report:?}");
    assert!(dynamo
        .list_tables()
        .await
        .unwrap()
        .contains(&format!("moto_index_{week}")));

    let (store, _) = storage::build_store(&cfg, &metrics).await.unwrap();
    put_and_read_back(store.as_ref(), "tenant-m", "moto_metric", 30, &[]).await;
}
