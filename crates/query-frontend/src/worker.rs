//! The querier side of the pull protocol (spec §7.3): `-querier.worker-parallelism` streams to
//! `-querier.frontend-address`, each executing one request at a time against the querier's own
//! HTTP router (tenant header preserved). When the frontend closes a stream mid-request (its
//! caller went away), the request's future is dropped — cancelling the query — and the stream
//! is reopened. In the all-in-one, [`spawn_local`] does the same without gRPC.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use proto::frontend::frontend_client::FrontendClient;
use proto::frontend::{ClientToFrontend, Type};
use proto::httpgrpc::{HttpRequest, HttpResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::config::WorkerConfig;
use crate::downstream::{headers_to_proto, MAX_RESPONSE_BYTES};
use crate::queue::RequestQueue;

/// Runs `req` against `router` and returns its answer; never fails (errors are HTTP answers).
pub async fn execute(router: &Router, req: HttpRequest) -> HttpResponse {
    let text_error = |code: i32, msg: String| HttpResponse {
        code,
        headers: vec![crate::request::header("Content-Type", "text/plain; charset=utf-8")],
        body: msg.into_bytes(),
    };
    let mut b = http::Request::builder()
        .method(req.method.as_str())
        .uri(req.url.as_str());
    for h in &req.headers {
        for v in &h.values {
            b = b.header(h.key.as_str(), v.as_str());
        }
    }
    let r = match b.body(Body::from(req.body)) {
        Ok(r) => r,
        Err(e) => return text_error(400, format!("malformed request from the query-frontend: {e}")),
    };
    let resp = match router.clone().oneshot(r).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let code = resp.status().as_u16() as i32;
    let headers = headers_to_proto(resp.headers());
    match http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(body) => HttpResponse {
            code,
            headers,
            body: body.to_bytes().to_vec(),
        },
        Err(e) => text_error(500, format!("response too large for the query-frontend: {e}")),
    }
}

/// The querier's workers; dropping this stops them.
pub struct Workers(Vec<JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Connects `cfg.parallelism` streams to the frontend at `cfg.frontend_address`.
pub fn start(cfg: &WorkerConfig, router: Router) -> Workers {
    let id = cfg.querier_id();
    let endpoint = format!("http://{}", cfg.frontend_address);
    let max = cfg.grpc_client_max_recv_msg_size;
    let tasks = (0..cfg.parallelism.max(1))
        .map(|_| {
            let (router, id, endpoint) = (router.clone(), id.clone(), endpoint.clone());
            tokio::spawn(async move {
                loop {
                    if let Err(e) = run_stream(&endpoint, &id, &router, max).await {
                        tracing::debug!(frontend = %endpoint, error = %e, "query-frontend stream ended");
                        // Frontend down or restarting: try again shortly.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            })
        })
        .collect();
    tracing::info!(frontend = %cfg.frontend_address, querier = %id, streams = cfg.parallelism, "querier worker started");
    Workers(tasks)
}

/// One stream: answer GET_ID, then requests, until the frontend closes it.
async fn run_stream(endpoint: &str, id: &str, router: &Router, max: usize) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = FrontendClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let (tx, rx) = mpsc::channel::<ClientToFrontend>(1);
    let mut inbound = client
        .process(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let reply = if msg.r#type == Type::GetId as i32 {
            ClientToFrontend {
                client_id: id.to_string(),
                ..Default::default()
            }
        } else {
            let req = msg.http_request.unwrap_or_default();
            tokio::select! {
                resp = execute(router, req) => ClientToFrontend {
                    http_response: Some(resp),
                    client_id: id.to_string(),
                    stats: None,
                },
                // The frontend closed the stream (or broke protocol): drop the work.
                _ = inbound.message() => {
                    tracing::debug!("query-frontend cancelled a request");
                    return Ok(());
                }
            }
        };
        if tx.send(reply).await.is_err() {
            return Err("query-frontend stream closed".into());
        }
    }
}

/// In-process workers for the all-in-one: `n` loops pulling from `queue` into `router`.
pub fn spawn_local(queue: Arc<RequestQueue>, router: Router, n: usize) -> Workers {
    let tasks = (0..n.max(1))
        .map(|_| {
            let (queue, router) = (queue.clone(), router.clone());
            tokio::spawn(async move {
                let _connection = queue.register_querier("local");
                let mut last = None;
                while let Some(mut q) = queue.next("local", &mut last).await {
                    let req = std::mem::take(&mut q.request);
                    tokio::select! {
                        resp = execute(&router, req) => { let _ = q.reply.send(Ok(resp)); }
                        // The caller went away: drop the work.
                        _ = q.reply.closed() => {}
                    }
                }
            })
        })
        .collect();
    Workers(tasks)
}
