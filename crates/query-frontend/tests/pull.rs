//! The pull protocol for real: a frontend's HTTP and gRPC servers on loopback, querier workers
//! connected over gRPC running stand-in routers. Checks that answers come back with the tenant,
//! that a client going away cancels the work on the querier, and that a querier dying
//! mid-request is retried on another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use query_frontend::{Frontend, FrontendConfig, Limits, QueryRangeConfig, WorkerConfig};

struct Servers {
    http: String,
    grpc: String,
    frontend: Arc<Frontend>,
}

async fn start_frontend(qr: QueryRangeConfig) -> Servers {
    let metrics = server::Metrics::new();
    let f = Frontend::new(FrontendConfig::default(), qr, Limits::default(), &metrics).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let routes = f.http_routes();
    tokio::spawn(async move { axum::serve(http, routes).await });
    let svc = f.grpc_service(100 << 20).unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc))
            .await
    });
    Servers {
        http: format!("http://{http_addr}"),
        grpc: grpc_addr.to_string(),
        frontend: f,
    }
}

fn worker(frontend: &str, id: &str, parallelism: usize, router: Router) -> query_frontend::worker::Workers {
    query_frontend::worker::start(
        &WorkerConfig {
            frontend_address: frontend.to_string(),
            parallelism,
            id: id.to_string(),
            ..WorkerConfig::default()
        },
        router,
    )
}

async fn get_url(url: &str, tenant: &str) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::get(url)
        .header("X-Scope-OrgID", tenant)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Answers with the tenant it saw and the querier's name.
fn echo_router(name: &'static str) -> Router {
    Router::new().route(
        "/api/prom/api/v1/labels",
        get(move |h: HeaderMap| async move {
            let tenant = h
                .get("X-Scope-OrgID")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            format!("{name}:{tenant}")
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_a_querier_with_their_tenant() {
    let s = start_frontend(QueryRangeConfig::default()).await;
    assert!(s.frontend.check_ready().is_err(), "not ready without queriers");
    let _w = worker(&s.grpc, "q1", 2, echo_router("q1"));
    let q = s.frontend.queue().unwrap().clone();
    wait_until("querier connected", || q.connected_queriers() == 2).await;
    assert!(s.frontend.check_ready().is_ok());
    let (status, body) = get_url(&format!("{}/api/prom/api/v1/labels", s.http), "team-7").await;
    assert_eq!((status, body.as_str()), (200, "q1:team-7"));
    // A bad tenant never reaches the queue.
    let (status, _) = get_url(&format!("{}/api/prom/api/v1/labels", s.http), "../x").await;
    assert_eq!(status, 400);
}

/// Counts handlers that started and handlers whose future was dropped before finishing.
#[derive(Default)]
struct Probe {
    started: AtomicUsize,
    cancelled: AtomicUsize,
}

struct CancelGuard(Arc<Probe>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A query that takes `delay` (forever, in effect, for the cancellation test).
fn slow_router(probe: Arc<Probe>, delay: Duration) -> Router {
    Router::new().route(
        "/api/prom/api/v1/query",
        get(move || {
            let probe = probe.clone();
            async move {
                probe.started.fetch_add(1, Ordering::SeqCst);
                let mut guard = CancelGuard(probe, false);
                tokio::time::sleep(delay).await;
                guard.1 = true;
                "done"
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_going_away_cancels_the_query_on_the_querier() {
    let s = start_frontend(QueryRangeConfig::default()).await;
    let probe = Arc::new(Probe::default());
    let _w = worker(&s.grpc, "q1", 1, slow_router(probe.clone(), Duration::from_secs(3600)));
    let q = s.frontend.queue().unwrap().clone();
    wait_until("querier connected", || q.connected_queriers() == 1).await;
    let url = format!("{}/api/prom/api/v1/query?query=up", s.http);
    // The client gives up after 300 ms (its connection is dropped).
    let r = tokio::time::timeout(Duration::from_millis(300), get_url(&url, "t")).await;
    assert!(r.is_err(), "the query cannot have finished");
    assert_eq!(probe.started.load(Ordering::SeqCst), 1);
    wait_until("the querier's handler dropped", || {
        probe.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    // The worker reconnects and serves the next request.
    wait_until("querier reconnected", || q.connected_queriers() == 1).await;
    let r = tokio::time::timeout(Duration::from_millis(300), get_url(&url, "t")).await;
    assert!(r.is_err());
    wait_until("second query reached the querier", || {
        probe.started.load(Ordering::SeqCst) == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querier_dying_mid_query_is_retried_on_another() {
    let s = start_frontend(QueryRangeConfig::default()).await;
    let q = s.frontend.queue().unwrap().clone();
    let probe = Arc::new(Probe::default());
    let dying = worker(
        &s.grpc,
        "dying",
        1,
        slow_router(probe.clone(), Duration::from_secs(3600)),
    );
    wait_until("dying querier connected", || q.connected_queriers() == 1).await;
    let url = format!("{}/api/prom/api/v1/query?query=up", s.http);
    let client = tokio::spawn(async move { get_url(&url, "t").await });
    wait_until("query running on the dying querier", || {
        probe.started.load(Ordering::SeqCst) == 1
    })
    .await;
    // A healthy querier joins, then the first one dies (its tasks and connection vanish).
    let healthy_probe = Arc::new(Probe::default());
    let _healthy = worker(
        &s.grpc,
        "healthy",
        1,
        slow_router(healthy_probe.clone(), Duration::from_millis(10)),
    );
    wait_until("healthy querier connected", || q.connected_queriers() == 2).await;
    drop(dying);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "done"));
    assert_eq!(healthy_probe.started.load(Ordering::SeqCst), 1);
}
