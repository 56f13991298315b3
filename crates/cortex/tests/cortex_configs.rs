//! Cortex v1.13.2's own example configs (testdata/cortex-v1.13.2/configs, copied from its
//! docs/): the chunks-storage one loads, starts the all-in-one and serves push + query; the
//! blocks-storage ones are refused, naming `storage.engine`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{http, http_client, push, synthetic_write};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/cortex-v1.13.2/configs")
}

fn every_config() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    out.sort();
    assert_eq!(out.len(), 5, "{out:?}");
    out
}

/// The example's paths (/tmp/cortex/...) and ports moved into `dir` and onto free ports, by flag,
/// the way an operator would override a shared file.
fn args(file: &Path, dir: &Path) -> Vec<String> {
    let d = |sub: &str| dir.join(sub).display().to_string();
    vec![
        format!("-config.file={}", file.display()),
        "-server.http-listen-address=127.0.0.1".into(),
        "-server.http-listen-port=0".into(),
        "-server.grpc-listen-address=127.0.0.1".into(),
        "-server.grpc-listen-port=0".into(),
        format!("-boltdb.dir={}", d("index")),
        format!("-local.chunk-directory={}", d("chunks")),
        format!("-ingester.wal-dir={}", d("wal")),
        format!("-ingester.tokens-file-path={}", d("wal/tokens")),
        format!("-ruler-storage.local.directory={}", d("rules")),
    ]
}

#[test]
fn every_example_config_loads_or_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for file in every_config() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let loaded = cortex::config::load_with_notes(cortex::Config::embedded(), &args(&file, dir.path()));
        if name.contains("blocks") {
            let e = loaded.unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "config file {}: storage.engine: \"blocks\" is not supported: only the chunks storage engine is implemented",
                    file.display()
                ),
                "{name}"
            );
            continue;
        }
        let (c, notes) = loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
        cortex::verify::verify(&c).unwrap_or_else(|e| panic!("{name}: {e}"));
        // What the file says, read into our tree.
        assert!(!c.auth_enabled);
        assert!(c.distributor.shard_by_all_labels);
        assert!(c.distributor.health_check_ingesters);
        assert!(c.ingester.walconfig.wal_enabled && c.ingester.walconfig.recover_from_wal);
        assert_eq!(c.ingester.lifecycler.ring.kvstore.store, "inmemory");
        assert_eq!(c.ruler.storage.backend, "local");
        let schema = c.storage.schema().unwrap();
        assert_eq!(schema.configs.len(), 1);
        let p = &schema.configs[0];
        assert_eq!(
            (p.store.as_str(), p.object_store.as_str(), p.schema.as_str()),
            ("boltdb", "filesystem", "v10")
        );
        assert_eq!(p.index.prefix, "index_");
        assert_eq!(p.index.period.0, Duration::from_secs(7 * 86_400));
        // match_max_concurrent: the in-process workers follow -querier.max-concurrent.
        assert_eq!(c.frontend_worker.parallelism, c.querier.max_concurrent);
        // Flags override the file (the example's /tmp/cortex paths were moved into `dir`).
        assert!(c
            .storage
            .boltdb_directory
            .starts_with(&dir.path().display().to_string()));
        // Every key with no effect here is named in a warning.
        let warned: Vec<&str> = notes.iter().filter(|n| n.warn).map(|n| n.message.as_str()).collect();
        for key in [
            "ingester_client.grpc_client_config.max_recv_msg_size",
            "ingester_client.grpc_client_config.grpc_compression",
            "storage.delete_store",
            "purger.object_store_type",
            "ruler.enable_api",
            "ruler.enable_sharding",
        ] {
            assert!(
                warned.iter().any(|w| w.contains(&format!("field {key}"))),
                "{name}: no warning for {key}: {warned:#?}"
            );
        }
        assert!(notes.iter().any(|n| !n.warn
            && n.message
                .contains("storage.boltdb.directory read as storage.boltdb_directory")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cortex_chunks_example_config_starts_the_allinone_and_serves_push_and_query() {
    let dir = tempfile::tempdir().unwrap();
    let file = configs_dir().join("chunks-storage--single-process-config.yaml");
    let (c, _) = cortex::config::load_with_notes(cortex::Config::embedded(), &args(&file, dir.path())).unwrap();
    let running = cortex::start(c, None)
        .await
        .expect("start with Cortex's example config");
    let client = http_client();
    let base = format!("http://{}", running.http_addr);
    let mut ready = false;
    for _ in 0..200 {
        if let Ok((200, _, _)) = http(&client, "GET", &format!("{base}/ready"), &[], vec![]).await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready");
    let t0 = model::now_ms() - 300_000;
    let (s, m) = push(
        &client,
        &base,
        "",
        synthetic_write("example_config_metric", 3, t0, 20, &[]),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    let url = format!(
        "{base}/prometheus/api/v1/query_range?query=example_config_metric&start={}&end={}&step=1",
        t0 as f64 / 1000.0,
        (t0 + 19_000) as f64 / 1000.0
    );
    let (s, _, b) = http(&client, "GET", &url, &[], vec![]).await.unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 3, "{v}");
    for r in result {
        assert_eq!(r["values"].as_array().unwrap().len(), 20, "{r}");
    }
    running.stop().await;
}
