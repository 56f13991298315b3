//! Where requests go after the middlewares: the fair queue (queriers pull them), or a
//! Prometheus-compatible URL (`-frontend.downstream-url`); retried on 5xx and transport errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::histogram::Histogram;
use proto::httpgrpc::{Header, HttpRequest, HttpResponse};

use crate::error::FrontendError;
use crate::queue::RequestQueue;

/// Largest downstream response read back (the gRPC message limit of the pull protocol).
pub const MAX_RESPONSE_BYTES: usize = 100 << 20;

#[async_trait]
pub trait RoundTripper: Send + Sync {
    /// One attempt. A downstream error status is an `Ok` response; `Err` is a transport failure.
    async fn round_trip(&self, tenant: &str, req: HttpRequest) -> Result<HttpResponse, FrontendError>;
}

/// Enqueues for the queriers and waits for the answer. Dropping the future (the caller went
/// away) drops the receiver: the request is skipped if still queued, and the querier's stream
/// is closed (cancelling its work) if already running.
pub struct Queue(pub Arc<RequestQueue>);

#[async_trait]
impl RoundTripper for Queue {
    async fn round_trip(&self, tenant: &str, req: HttpRequest) -> Result<HttpResponse, FrontendError> {
        let rx = self.0.enqueue(tenant, req)?;
        rx.await
            .map_err(|_| FrontendError::Unavailable("the querier handling the request went away".into()))?
    }
}

/// Proxies to `-frontend.downstream-url`: the `/api/prom` or `/prometheus` prefix is replaced by
/// the URL's path, so `http://prometheus:9090` serves `/api/prom/api/v1/query` as `/api/v1/query`.
pub struct Proxy {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Proxy {
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("-frontend.downstream-url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "-frontend.downstream-url {url:?}: only http://host:port[/path] is supported"
            ));
        }
        Ok(Proxy {
            base: url.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }
}

/// The path below the API prefix (`/api/prom/api/v1/query` → `/api/v1/query`).
pub fn strip_prefix(url: &str) -> &str {
    for p in ["/api/prom", "/prometheus"] {
        if let Some(rest) = url.strip_prefix(p) {
            if rest.starts_with('/') || rest.starts_with('?') || rest.is_empty() {
                return rest;
            }
        }
    }
    url
}

#[async_trait]
impl RoundTripper for Proxy {
    async fn round_trip(&self, _tenant: &str, req: HttpRequest) -> Result<HttpResponse, FrontendError> {
        let url = format!("{}{}", self.base, strip_prefix(&req.url));
        let mut b = hyper::Request::builder().method(req.method.as_str()).uri(&url);
        for h in &req.headers {
            for v in &h.values {
                b = b.header(h.key.as_str(), v.as_str());
            }
        }
        let r = b
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| FrontendError::Internal(format!("building downstream request {url}: {e}")))?;
        let resp = self
            .client
            .request(r)
            .await
            .map_err(|e| FrontendError::Unavailable(format!("downstream {url}: {e}")))?;
        let code = resp.status().as_u16() as i32;
        let headers = headers_to_proto(resp.headers());
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| FrontendError::Unavailable(format!("reading downstream response {url}: {e}")))?
            .to_bytes();
        Ok(HttpResponse {
            code,
            headers,
            body: body.to_vec(),
        })
    }
}

pub fn headers_to_proto(h: &http::HeaderMap) -> Vec<Header> {
    let mut out: Vec<Header> = Vec::with_capacity(h.keys_len());
    for k in h.keys() {
        out.push(Header {
            key: k.as_str().to_string(),
            values: h
                .get_all(k)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect(),
        });
    }
    out
}

/// Up to `max_attempts` tries while the answer is a 5xx or a transport error (spec §7.4 item 6).
pub struct Retry {
    pub inner: Arc<dyn RoundTripper>,
    pub max_attempts: usize,
    pub retries: Histogram,
}

#[async_trait]
impl RoundTripper for Retry {
    async fn round_trip(&self, tenant: &str, req: HttpRequest) -> Result<HttpResponse, FrontendError> {
        let attempts = self.max_attempts.max(1);
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self.inner.round_trip(tenant, req.clone()).await;
            let failed = match &r {
                Ok(resp) => resp.code >= 500,
                Err(e) => e.is_retryable(),
            };
            if !failed || tries >= attempts {
                self.retries.observe((tries - 1) as f64);
                return r;
            }
            if let Err(e) = &r {
                tracing::debug!(error = %e, tries, "retrying downstream request");
            }
            // A short pause: a querier that just died takes a moment to leave the queue.
            tokio::time::sleep(Duration::from_millis(10 * tries as u64)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Flaky {
        calls: AtomicUsize,
        fail_first: usize,
        code: i32,
    }

    #[async_trait]
    impl RoundTripper for Flaky {
        async fn round_trip(&self, _: &str, _: HttpRequest) -> Result<HttpResponse, FrontendError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                if self.code == 0 {
                    return Err(FrontendError::Unavailable("querier died".into()));
                }
                return Ok(HttpResponse {
                    code: self.code,
                    ..Default::default()
                });
            }
            Ok(HttpResponse {
                code: 200,
                ..Default::default()
            })
        }
    }

    async fn run(fail_first: usize, code: i32, max: usize) -> (Result<HttpResponse, FrontendError>, usize) {
        let f = Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_first,
            code,
        });
        let r = Retry {
            inner: f.clone(),
            max_attempts: max,
            retries: Histogram::new([1.0]),
        };
        let out = r.round_trip("t", HttpRequest::default()).await;
        (out, f.calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn retries_5xx_and_transport_errors_only() {
        let (r, calls) = run(2, 500, 5).await;
        assert_eq!((r.unwrap().code, calls), (200, 3));
        let (r, calls) = run(2, 0, 5).await;
        assert_eq!((r.unwrap().code, calls), (200, 3));
        // A 4xx is the client's: answered at once.
        let (r, calls) = run(2, 422, 5).await;
        assert_eq!((r.unwrap().code, calls), (422, 1));
        // Gives up after max attempts with the last answer.
        let (r, calls) = run(10, 503, 5).await;
        assert_eq!((r.unwrap().code, calls), (503, 5));
    }

    #[test]
    fn prefixes_are_stripped_for_a_plain_prometheus() {
        assert_eq!(strip_prefix("/api/prom/api/v1/query?x=1"), "/api/v1/query?x=1");
        assert_eq!(strip_prefix("/prometheus/api/v1/labels"), "/api/v1/labels");
        assert_eq!(strip_prefix("/api/promx/y"), "/api/promx/y");
    }
}
