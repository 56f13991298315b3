//! Sends pre-encoded requests with a fixed number in flight and measures.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::series::EncodedRequest;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub requests: usize,
    pub samples_sent: u64,
    /// Samples in requests answered 2xx.
    pub samples_ok: u64,
    pub errors: usize,
    /// `status: body` (or the transport error) of the first failed request.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Request latencies, sorted ascending.
    pub latencies: Vec<Duration>,
}

impl Report {
    pub fn samples_per_sec(&self) -> f64 {
        self.samples_sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile of the request latencies (`q` in 0..=100).
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {} samples in {:.3} s: {:.0} samples/s",
            self.samples_sent,
            self.elapsed.as_secs_f64(),
            self.samples_per_sec()
        )?;
        write!(
            f,
            "latency p50={} p90={} p99={} max={} over {} requests; errors: {}",
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.requests,
            self.errors
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "\nfirst error: {e}")?;
        }
        Ok(())
    }
}

struct WorkerResult {
    latencies: Vec<Duration>,
    samples_ok: u64,
    errors: usize,
    first_error: Option<String>,
}

async fn send_one(client: &HttpClient, url: &hyper::Uri, tenant: Option<&str>, body: Bytes) -> Result<(), String> {
    let mut b = hyper::Request::post(url.clone())
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("User-Agent", "cortex-rs-loadgen")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(t) = tenant {
        b = b.header("X-Scope-OrgID", t);
    }
    let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    // Read the body to the end either way so the connection can be reused.
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{status}: reading body: {e}"))?
        .to_bytes();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body).trim()))
    }
}

/// Sends every request in order with `concurrency` in flight.
pub async fn run(
    url: &str,
    tenant: Option<String>,
    concurrency: usize,
    timeout: Duration,
    requests: Arc<Vec<EncodedRequest>>,
) -> Result<Report, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, uri, tenant, next, requests) = (
            client.clone(),
            uri.clone(),
            tenant.clone(),
            next.clone(),
            requests.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut r = WorkerResult {
                latencies: Vec::with_capacity(requests.len() / concurrency + 1),
                samples_ok: 0,
                errors: 0,
                first_error: None,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let sent = Instant::now();
                let result =
                    match tokio::time::timeout(timeout, send_one(&client, &uri, tenant.as_deref(), req.body.clone()))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!("timed out after {timeout:?}")),
                    };
                r.latencies.push(sent.elapsed());
                match result {
                    Ok(()) => r.samples_ok += req.samples as u64,
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(format!("request {i}: {e}"));
                    }
                }
            }
            r
        }));
    }
    let mut report = Report {
        requests: requests.len(),
        samples_sent: requests.iter().map(|r| r.samples as u64).sum(),
        ..Default::default()
    };
    let mut first_errors = Vec::new();
    for w in workers {
        let r = w.await.map_err(|e| format!("worker failed: {e}"))?;
        report.latencies.extend(r.latencies);
        report.samples_ok += r.samples_ok;
        report.errors += r.errors;
        first_errors.extend(r.first_error);
    }
    report.elapsed = start.elapsed();
    report.latencies.sort_unstable();
    // The lowest request index is the first error in sending order.
    first_errors.sort_by_key(|e| {
        e.strip_prefix("request ")
            .and_then(|s| s.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    report.first_error = first_errors.into_iter().next();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let r = Report {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            samples_sent: 1000,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(r.percentile(50.0), Duration::from_millis(50));
        assert_eq!(r.percentile(99.0), Duration::from_millis(99));
        assert_eq!(r.percentile(100.0), Duration::from_millis(100));
        assert_eq!(r.samples_per_sec(), 500.0);
        let text = r.to_string();
        assert!(
            text.starts_with("sent 1000 samples in 2.000 s: 500 samples/s\n"),
            "{text}"
        );
        assert!(text.contains("p50=50.0ms p90=90.0ms p99=99.0ms"), "{text}");
    }

    /// A tiny HTTP server answering 204 to the first requests and 400 with a
    /// body to one of them: errors are counted and the first body reported.
    #[tokio::test]
    async fn counts_errors_and_reports_first_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut served = 0usize;
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 65536];
                let mut pending = Vec::new();
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    // Each request: headers then a body of Content-Length bytes.
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + len {
                            break;
                        }
                        pending.drain(..end + 4 + len);
                        served += 1;
                        let resp: &[u8] = if served == 2 {
                            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\nout of order"
                        } else {
                            b"HTTP/1.1 204 No Content\r\n\r\n"
                        };
                        sock.write_all(resp).await.unwrap();
                    }
                }
            }
        });
        let reqs: Vec<EncodedRequest> = (0..5)
            .map(|_| EncodedRequest {
                body: Bytes::from_static(b"x"),
                samples: 10,
            })
            .collect();
        let r = run(
            &format!("http://{addr}/push"),
            Some("t".into()),
            1,
            Duration::from_secs(5),
            Arc::new(reqs),
        )
        .await
        .unwrap();
        assert_eq!(r.requests, 5);
        assert_eq!(r.samples_sent, 50);
        assert_eq!(r.samples_ok, 40);
        assert_eq!(r.errors, 1);
        assert_eq!(
            r.first_error.as_deref(),
            Some("request 1: 400 Bad Request: out of order")
        );
        assert_eq!(r.latencies.len(), 5);
    }
}
