//! The all-in-one as `make run` starts it (no flags but free ports): a real
//! Prometheus remote-writes into it with no tenant header, promtool reads
//! `up` back; bad input gets the right 4xx and the process keeps serving;
//! bad flags and config files fail at start with a clear message.

use std::process::Command;
use std::time::Duration;

use e2e::*;
use prost::Message;
use proto::cortex as pb;

fn push_body(name: &str, labels: &[(&str, &str)], t: i64) -> Vec<u8> {
    let mut l = vec![pb::LabelPair {
        name: "__name__".into(),
        value: name.to_string().into_bytes().into(),
    }];
    l.extend(labels.iter().map(|(n, v)| pb::LabelPair {
        name: n.to_string().into_bytes().into(),
        value: v.to_string().into_bytes().into(),
    }));
    let ts = pb::TimeSeries {
        labels: l,
        samples: vec![pb::Sample {
            value: 1.0,
            timestamp_ms: t,
        }],
    };
    snappy(
        &pb::WriteRequest {
            timeseries: vec![ts],
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_writes_promtool_reads_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let cortex = our_binary("cortex");
    // A 1 MB body limit instead of 100 MiB: a body over the limit is answered
    // (413) before it is fully sent, which races the client's upload when the
    // body is huge; a small limit keeps the check deterministic.
    let args = vec![
        format!("-server.http-listen-port={http_port}"),
        format!("-server.grpc-listen-port={grpc_port}"),
        "-distributor.max-recv-msg-size=1000000".to_string(),
        // Credentials of backends this run does not use: /config must not show them.
        "-s3.url=s3://AKIAEXAMPLE:s3-top-secret@us-east-1/chunks".to_string(),
        "-dynamodb.url=dynamodb://AKIAEXAMPLE:dynamo-top-secret@us-east-1".to_string(),
        "-consul.acl-token=consul-top-secret".to_string(),
    ];
    let log = dir.path().join("cortex.log");
    let mut proc = {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&cortex)
            .args(&args)
            .current_dir(dir.path())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc {
            name: "cortex".into(),
            child: Some(child),
            log,
        }
    };
    let client = http_client();
    let base = format!("http://127.0.0.1:{http_port}");
    wait_ready(&client, &format!("{base}/ready"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_tail()));

    // A real Prometheus remote-writing into it, with no tenant header (auth disabled → "fake").
    let (mut prom, prom_port) = prometheus_sender(dir.path(), &format!("{base}/api/prom/push"));
    let out = promtool_sees_up(&format!("{base}/api/prom"), prom_port, Duration::from_secs(60), || {
        prom.log_tail()
    })
    .await;
    println!("promtool: {}", out.trim());
    // Prometheus's own metrics arrived too, with metadata, through the same path.
    let (s, _, b) = http(
        &client,
        "GET",
        &format!("{base}/prometheus/api/v1/query?query=count(prometheus_build_info)"),
        &[],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    assert!(
        String::from_utf8_lossy(&b).contains(r#""value""#),
        "{}",
        String::from_utf8_lossy(&b)
    );
    prom.terminate(Duration::from_secs(10));

    // Bad input: each refused with Cortex's status and a message that names the problem.
    let push = |body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = format!("{base}/api/prom/push");
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, _, b) = http(&client, "POST", &url, &h, body).await.unwrap();
            (s, String::from_utf8_lossy(&b).to_lowercase())
        }
    };
    let now = model::now_ms();
    let (s, m) = push(vec![], vec![]).await;
    assert_eq!(s, 400, "empty body: {m}");
    let (s, m) = push(b"definitely not snappy".to_vec(), vec![]).await;
    assert_eq!(s, 400, "not snappy: {m}");
    assert!(m.contains("snappy"), "{m}");
    let (s, m) = push(snappy(b"\xff\xff\xff\xff garbage protobuf"), vec![]).await;
    assert_eq!(s, 400, "garbage protobuf: {m}");
    let good = push_body("allinone_ok", &[], now);
    let (s, m) = push(good[..good.len() / 2].to_vec(), vec![]).await;
    assert_eq!(s, 400, "truncated: {m}");
    let (s, m) = push(vec![0u8; 1_000_001], vec![]).await;
    assert_eq!(s, 413, "oversized: {m}");
    assert!(m.contains("max-recv-msg-size"), "names the flag: {m}");
    // Small on the wire, but its snappy header claims 200 MiB once decompressed.
    let mut bomb = Vec::new();
    prost::encoding::encode_varint(200 << 20, &mut bomb);
    bomb.extend_from_slice(&[0u8; 64]);
    let (s, m) = push(bomb, vec![]).await;
    assert_eq!(s, 413, "decompressed size: {m}");
    let (s, m) = push(push_body("0bad-name", &[], now), vec![]).await;
    assert_eq!(s, 400, "invalid metric name: {m}");
    let (s, m) = push(push_body("m", &[("bad-label", "x")], now), vec![]).await;
    assert_eq!(s, 400, "invalid label name: {m}");
    let many: Vec<(String, String)> = (0..31).map(|i| (format!("l{i:02}"), "v".to_string())).collect();
    let many_ref: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (s, m) = push(push_body("m", &many_ref, now), vec![]).await;
    assert_eq!(s, 400, "too many labels: {m}");
    assert!(m.contains("max-label-names-per-series"), "names the flag: {m}");
    let (s, m) = push(push_body("m", &[], now + 3_600_000), vec![]).await;
    assert_eq!(s, 400, "too far in the future: {m}");
    assert!(m.contains("create-grace-period"), "names the flag: {m}");
    // Still serving, and a good series in the same position is stored.
    let (s, m) = push(good, vec![]).await;
    assert_eq!(s, 200, "{m}");
    let (s, _, b) = http(
        &client,
        "GET",
        &format!("{base}/api/prom/api/v1/query?query=allinone_ok"),
        &[],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&b).contains("allinone_ok"));
    // PromQL errors: bad_data with 400.
    let (s, _, b) = http(
        &client,
        "GET",
        &format!("{base}/api/prom/api/v1/query?query=sum(("),
        &[],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(s, 400);
    assert!(String::from_utf8_lossy(&b).contains(r#""errorType":"bad_data""#));

    // /metrics has the Cortex names dashboards use; /config and /ring answer.
    let (_, _, b) = http(&client, "GET", &format!("{base}/metrics"), &[], vec![])
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&b);
    for name in [
        "cortex_distributor_received_samples_total",
        "cortex_ingester_memory_series",
        "cortex_discarded_samples_total",
        "cortex_request_duration_seconds",
        "cortex_ring_members",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    let (s, _, b) = http(&client, "GET", &format!("{base}/config"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(s, 200);
    let config = String::from_utf8_lossy(&b);
    assert!(config.contains("replication_factor: 1"));
    assert!(!config.contains("top-secret"), "/config shows a credential:\n{config}");
    assert!(
        config.contains("s3://AKIAEXAMPLE:********@us-east-1/chunks"),
        "{config}"
    );
    assert!(config.contains("dynamodb://AKIAEXAMPLE:********@us-east-1"), "{config}");
    assert!(config.contains("acl_token: \"********\""), "{config}");

    // No raw ingester push on the public port: writes go through the
    // distributor's validation (this series has an invalid metric name).
    for path in ["/push", "/ingester/push"] {
        let (s, _, _) = http(
            &client,
            "POST",
            &format!("{base}{path}"),
            &[],
            push_body("not valid", &[], model::now_ms()),
        )
        .await
        .unwrap();
        assert_eq!(s, 404, "{path}");
    }

    // Graceful SIGTERM.
    assert_eq!(
        proc.terminate(Duration::from_secs(20)),
        Some(0),
        "clean exit on SIGTERM:\n{}",
        proc.log_tail()
    );
}

#[test]
fn bad_flags_and_config_files_fail_at_start() {
    let cortex = our_binary("cortex");
    let o = Command::new(&cortex).arg("-no.such-flag=1").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("flag provided but not defined: -no.such-flag"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "distributor:\n  remote_timout: 2s\n").unwrap();
    let o = Command::new(&cortex)
        .arg(format!("-config.file={}", f.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown field \"distributor.remote_timout\""), "{err}");

    let o = Command::new(&cortex)
        .arg("-distributor.replication-factor=three")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected a number"));

    let o = Command::new(&cortex).arg("-help").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("-distributor.replication-factor"));
}
