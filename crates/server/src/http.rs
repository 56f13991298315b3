//! The process's HTTP and gRPC servers: common endpoints, request metrics,
//! and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use model::GoDuration;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::Flag;
use crate::tenant::AuthConfig;
use crate::Metrics;

/// `server:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    pub http_listen_address: String,
    pub http_listen_port: u16,
    pub grpc_listen_address: String,
    pub grpc_listen_port: u16,
    pub graceful_shutdown_timeout: GoDuration,
    pub grpc_server_max_recv_msg_size: usize,
    pub grpc_server_max_send_msg_size: usize,
    pub grpc_server_max_concurrent_streams: u32,
    pub log_level: String,
    pub log_format: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_listen_address: String::new(),
            // Cortex's default is 80; we default to the single-process example's
            // 9009 so that nothing needs root and `make run` matches the docs.
            http_listen_port: 9009,
            grpc_listen_address: String::new(),
            grpc_listen_port: 9095,
            graceful_shutdown_timeout: GoDuration::secs(30),
            grpc_server_max_recv_msg_size: 100 << 20,
            grpc_server_max_send_msg_size: 100 << 20,
            grpc_server_max_concurrent_streams: 1000,
            log_level: "info".into(),
            log_format: "logfmt".into(),
        }
    }
}

pub const SERVER_FLAGS: &[Flag] = &[
    Flag::new(
        "server.http-listen-address",
        "http_listen_address",
        "HTTP server listen address (empty = all interfaces).",
    ),
    Flag::new(
        "server.http-listen-port",
        "http_listen_port",
        "HTTP server listen port.",
    ),
    Flag::new(
        "server.grpc-listen-address",
        "grpc_listen_address",
        "gRPC server listen address (empty = all interfaces).",
    ),
    Flag::new(
        "server.grpc-listen-port",
        "grpc_listen_port",
        "gRPC server listen port.",
    ),
    Flag::new(
        "server.graceful-shutdown-timeout",
        "graceful_shutdown_timeout",
        "Timeout for graceful shutdowns.",
    ),
    Flag::new(
        "server.grpc-max-recv-msg-size-bytes",
        "grpc_server_max_recv_msg_size",
        "Limit on the size of a gRPC message this server can receive (bytes).",
    ),
    Flag::new(
        "server.grpc-max-send-msg-size-bytes",
        "grpc_server_max_send_msg_size",
        "Limit on the size of a gRPC message this server can send (bytes).",
    ),
    Flag::new(
        "server.grpc-max-concurrent-streams",
        "grpc_server_max_concurrent_streams",
        "Limit on the number of concurrent streams for gRPC calls.",
    ),
    Flag::new(
        "log.level",
        "log_level",
        "Only log messages with the given severity or above: debug, info, warn, error.",
    ),
    Flag::new(
        "log.format",
        "log_format",
        "Output log messages in the given format: logfmt or json.",
    ),
];

impl ServerConfig {
    pub fn http_addr(&self) -> String {
        let host = if self.http_listen_address.is_empty() {
            "0.0.0.0"
        } else {
            &self.http_listen_address
        };
        format!("{host}:{}", self.http_listen_port)
    }
    pub fn grpc_addr(&self) -> String {
        let host = if self.grpc_listen_address.is_empty() {
            "0.0.0.0"
        } else {
            &self.grpc_listen_address
        };
        format!("{host}:{}", self.grpc_listen_port)
    }
}

/// Sets up `tracing` output as `-log.level` / `-log.format` say.
pub fn init_logging(cfg: &ServerConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    use std::io::IsTerminal;
    // Logs go to stderr, coloured only for a person at a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if cfg.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Readiness of the process: `Ok` or the reason it is not ready yet.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status_code: String,
    ws: String,
}

#[derive(Clone)]
struct HttpMetrics {
    duration: Family<RequestLabels, Histogram>,
    inflight: Family<Vec<(String, String)>, Gauge>,
}

/// Wraps the roles' routes with the common endpoints (`/metrics`, `/ready`,
/// `/config`, `/`), the auth setting and request-duration metrics.
pub fn router(roles: Router, metrics: &Metrics, auth: AuthConfig, config_yaml: String, ready: ReadyCheck) -> Router {
    let m = HttpMetrics {
        duration: Family::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
            ])
        }),
        inflight: Family::default(),
    };
    metrics.register(
        "cortex_request_duration_seconds",
        "Time (in seconds) spent serving HTTP requests.",
        m.duration.clone(),
    );
    metrics.register(
        "cortex_inflight_requests",
        "Current number of inflight requests.",
        m.inflight.clone(),
    );
    let metrics_for_handler = metrics.clone();
    let config_yaml = Arc::new(config_yaml);
    roles
        .route(
            "/metrics",
            get(move || async move { metrics_response(&metrics_for_handler) }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
        .route(
            "/config",
            get(move || {
                let c = config_yaml.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        c.as_str().to_string(),
                    )
                }
            }),
        )
        .route("/", get(index))
        .layer(middleware::from_fn_with_state(metrics.panics(), catch_panics))
        .layer(middleware::from_fn_with_state(m, track))
        .layer(Extension(auth))
}

/// The last line of defence: a handler that panics answers 500 (counted in
/// `cortex_panics_total`) instead of dropping the client's connection. Bad input must
/// never get here — it gets a 4xx from the handler — and the tests show it does not.
pub async fn catch_panics(State(panics): State<Counter>, req: Request, next: Next) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(_) => {
            panics.inc();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error: the request handler failed unexpectedly\n",
            )
                .into_response()
        }
    }
}

fn metrics_response(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

async fn index() -> impl IntoResponse {
    axum::response::Html(
        "<html><head><title>Cortex</title></head><body><h1>Cortex</h1><ul>\
         <li><a href=\"/config\">Current config</a></li>\
         <li><a href=\"/ring\">Ingester ring status</a></li>\
         <li><a href=\"/ready\">Readiness</a></li>\
         <li><a href=\"/metrics\">Metrics</a></li>\
         </ul></body></html>",
    )
}

/// Route names as weaveworks' instrumentation spells them: `/api/prom/push` → `api_prom_push`.
fn route_name(path: &str) -> String {
    let mut s: String = path
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.is_empty() {
        s = "root".into();
    }
    s
}

async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_name(p.as_str()))
        .unwrap_or_else(|| "other".into());
    let method = req.method().to_string();
    let ws = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let inflight = m
        .inflight
        .get_or_create(&vec![
            ("method".into(), method.clone()),
            ("route".into(), route.clone()),
        ])
        .clone();
    inflight.inc();
    let start = Instant::now();
    let resp = next.run(req).await;
    inflight.dec();
    m.duration
        .get_or_create(&RequestLabels {
            method,
            route,
            status_code: resp.status().as_u16().to_string(),
            ws: ws.to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Binds a listener, with a readable error naming the address.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves HTTP and gRPC (under `grpc_limits`) until `shutdown` resolves,
/// then drains both for at most `grace`.
pub async fn serve(
    http_listener: TcpListener,
    http: Router,
    grpc_listener: TcpListener,
    grpc: tonic::service::Routes,
    grpc_limits: crate::grpc::GrpcServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx_http = rx.clone();
    let mut rx_grpc = rx;
    // Without TCP_NODELAY, small responses wait for the peer's delayed ACK
    // (Nagle): ~40 ms added to every query and push.
    use axum::serve::ListenerExt;
    let http_listener = http_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx_http.wait_for(|v| *v).await;
            })
            .await
    });
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself.
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let grpc_task = tokio::spawn(async move {
        let streams = (grpc_limits.max_concurrent_streams > 0).then_some(grpc_limits.max_concurrent_streams);
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(streams)
            .layer(grpc_limits.layer())
            .add_routes(grpc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx_grpc.wait_for(|v| *v).await;
            })
            .await
    });
    shutdown.await;
    let _ = tx.send(true);
    let drain = async {
        let _ = http_task.await;
        let _ = grpc_task.await;
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(?grace, "graceful shutdown timed out; closing remaining connections");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_is_counted() {
        use tower::ServiceExt;
        let metrics = Metrics::new();
        let roles = Router::new()
            .route("/boom", get(|| async { panic!("handler bug") as &'static str }))
            .route("/fine", get(|| async { "ok" }));
        let app = router(
            roles,
            &metrics,
            AuthConfig { enabled: false },
            String::new(),
            Arc::new(|| Ok(())),
        );
        let get = |path: &str| axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let resp = app.clone().oneshot(get("/boom")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let resp = app.clone().oneshot(get("/fine")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let text = metrics.encode();
        assert!(text.contains("cortex_panics_total 1"), "{text}");
        assert!(
            text.contains("cortex_request_duration_seconds_count{method=\"GET\",route=\"boom\",status_code=\"500\""),
            "{text}"
        );
    }

    #[test]
    fn route_names_like_cortex() {
        assert_eq!(route_name("/api/prom/push"), "api_prom_push");
        assert_eq!(
            route_name("/api/prom/api/v1/query_range"),
            "api_prom_api_v1_query_range"
        );
        assert_eq!(route_name("/"), "root");
    }
}
