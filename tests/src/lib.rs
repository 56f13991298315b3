//! Helpers for end-to-end tests: start real processes on free loopback ports,
//! wait for them, talk HTTP to them, and always clean up.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A binary that must be installed (by `scripts/install-peers.sh`); panics with
/// the fix if it is not, so a missing peer fails the suite instead of skipping it.
pub fn require_binary(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/install-peers.sh (make e2e does)");
}

/// Our own binaries, built by `make e2e` before the tests run.
pub fn our_binary(name: &str) -> PathBuf {
    let dir = std::env::var("CORTEX_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --bins` (make e2e does)",
        p.display()
    );
    p
}

/// A child process killed (SIGKILL) when dropped; its output goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, bin: &Path, args: &[String], log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", bin.display()));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `grace` for a clean exit; returns the exit code.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One HTTP request; returns (status, headers, body).
pub async fn http(
    client: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes), String> {
    let mut b = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| format!("{method} {url}: timed out"))?
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, headers, body))
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_ready(client: &HttpClient, url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match http(client, "GET", url, &[], vec![]).await {
            Ok((200, _, _)) => return Ok(()),
            Ok((s, _, b)) => last = format!("{s}: {}", String::from_utf8_lossy(&b).trim()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url} not ready after {timeout:?}: {last}"))
}

/// Block-snappy compression, as remote write/read bodies use.
pub fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(data).expect("snappy")
}

pub fn unsnappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Decoder::new().decompress_vec(data).expect("snappy body")
}

/// A remote-write body (block snappy of a Cortex `WriteRequest`) of `series`
/// series of `metric`, labelled `series="000"`… plus `extra`, each with
/// `samples` samples one second apart from `from_ms`; sample j of series i
/// has the value `i * 10_000 + j`, so a reader can check every point.
pub fn synthetic_write(metric: &str, series: usize, from_ms: i64, samples: usize, extra: &[(&str, &str)]) -> Vec<u8> {
    use prost::Message;
    use proto::cortex as pb;
    let pair = |n: &str, v: &str| pb::LabelPair {
        name: n.to_string().into_bytes().into(),
        value: v.to_string().into_bytes().into(),
    };
    let ts = (0..series)
        .map(|i| {
            let mut labels = vec![pair("__name__", metric), pair("series", &format!("{i:03}"))];
            labels.extend(extra.iter().map(|(n, v)| pair(n, v)));
            pb::TimeSeries {
                labels,
                samples: (0..samples)
                    .map(|j| pb::Sample {
                        value: (i * 10_000 + j) as f64,
                        timestamp_ms: from_ms + j as i64 * 1000,
                    })
                    .collect(),
            }
        })
        .collect();
    snappy(
        &pb::WriteRequest {
            timeseries: ts,
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// POSTs a remote-write body to `{base}/api/prom/push` as `tenant`; returns (status, body).
pub async fn push(client: &HttpClient, base: &str, tenant: &str, body: Vec<u8>) -> (u16, String) {
    let mut headers = vec![
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
    ];
    if !tenant.is_empty() {
        headers.push(("X-Scope-OrgID", tenant));
    }
    let (s, _, b) = http(client, "POST", &format!("{base}/api/prom/push"), &headers, body)
        .await
        .unwrap();
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// A real Prometheus scraping itself every second and remote-writing to
/// `remote_write_url`. Returns the process and its port.
pub fn prometheus_sender(dir: &Path, remote_write_url: &str) -> (Proc, u16) {
    let prometheus = require_binary("prometheus");
    let port = free_port();
    let cfg = dir.join("prom-sender.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: {remote_write_url}\n    queue_config:\n      batch_send_deadline: 1s\n"
        ),
    )
    .unwrap();
    let proc = Proc::start(
        "prometheus",
        &prometheus,
        &[
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("prom-sender").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir,
    );
    (proc, port)
}

/// Runs `promtool query instant {api} up` until it shows the sender's own
/// `up` series with value 1 (or panics after `timeout`); returns promtool's output.
pub async fn promtool_sees_up(api: &str, sender_port: u16, timeout: Duration, context: impl Fn() -> String) -> String {
    let promtool = require_binary("promtool");
    let want = format!("up{{instance=\"127.0.0.1:{sender_port}\", job=\"prometheus\"}} => 1");
    let deadline = Instant::now() + timeout;
    loop {
        let o = Command::new(&promtool)
            .args(["query", "instant", api, "up"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && text.contains(&want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "promtool never saw {want}; last output: {text} {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            context()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
