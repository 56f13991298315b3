//! Limits of the process's gRPC server (`-server.grpc-max-recv-msg-size-bytes`,
//! `-server.grpc-max-send-msg-size-bytes`, `-server.grpc-max-concurrent-streams`).
//!
//! The message-size limits are one tower layer over every gRPC service
//! rather than each service's own tonic setting, so a service added later
//! cannot forget them, and so an oversized message gets what grpc-go (and so
//! Cortex) answers: `ResourceExhausted` with "grpc: received message larger
//! than max (N vs. M)". tonic's own check answers `OutOfRange`, which Go
//! clients treat differently. The layer reads the 5-byte gRPC frame headers
//! (flag, big-endian length) as the bytes stream by, before the message is
//! buffered, so a lying length costs nothing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

use crate::http::ServerConfig;

/// The gRPC server's limits, from the `server:` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcServerLimits {
    pub max_recv_msg_size: usize,
    pub max_send_msg_size: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (0 = h2's default).
    pub max_concurrent_streams: u32,
}

impl GrpcServerLimits {
    pub fn from_config(cfg: &ServerConfig) -> Self {
        GrpcServerLimits {
            max_recv_msg_size: cfg.grpc_server_max_recv_msg_size,
            max_send_msg_size: cfg.grpc_server_max_send_msg_size,
            max_concurrent_streams: cfg.grpc_server_max_concurrent_streams,
        }
    }

    /// The tower layer enforcing the message sizes.
    pub fn layer(&self) -> MessageSizeLayer {
        MessageSizeLayer { limits: *self }
    }
}

impl Default for GrpcServerLimits {
    fn default() -> Self {
        Self::from_config(&ServerConfig::default())
    }
}

/// Wraps every gRPC request and response body in a [`FrameLimit`].
#[derive(Clone, Copy, Debug)]
pub struct MessageSizeLayer {
    limits: GrpcServerLimits,
}

impl<S> tower::Layer<S> for MessageSizeLayer {
    type Service = MessageSizeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageSizeService {
            inner,
            limits: self.limits,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MessageSizeService<S> {
    inner: S,
    limits: GrpcServerLimits,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ResBody> tower::Service<Request<tonic::body::Body>> for MessageSizeService<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let limits = self.limits;
        let req = req.map(|body| tonic::body::Body::new(FrameLimit::new(body, limits.max_recv_msg_size, Side::Receive)));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| {
                tonic::body::Body::new(FrameLimit::new(
                    tonic::body::Body::new(body),
                    limits.max_send_msg_size,
                    Side::Send,
                ))
            }))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Receive,
    Send,
}

/// Follows the gRPC length-prefixed framing of a body and stops it at the
/// first message longer than `limit`: a request body with a
/// `ResourceExhausted` error (tonic hands the `Status` to the client as is),
/// a response body with `ResourceExhausted` trailers instead of the message.
pub struct FrameLimit<B> {
    inner: B,
    limit: usize,
    side: Side,
    /// Bytes of the current frame header seen so far (a header may straddle chunks).
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current message still to pass.
    remaining: usize,
    /// Trailers still to send after the data before an oversized response message.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> FrameLimit<B> {
    fn new(inner: B, limit: usize, side: Side) -> Self {
        FrameLimit {
            inner,
            limit,
            side,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            trailers: None,
            done: false,
        }
    }

    /// Walks `data`; returns the offset of the header of the first oversized
    /// message (and its length), if any.
    fn scan(&mut self, data: &[u8]) -> Option<(usize, usize)> {
        let mut i = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() - i);
                self.remaining -= n;
                i += n;
                continue;
            }
            let header_start = i.saturating_sub(self.header_len);
            let n = (5 - self.header_len).min(data.len() - i);
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[i..i + n]);
            self.header_len += n;
            i += n;
            if self.header_len == 5 {
                self.header_len = 0;
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
                if len > self.limit {
                    return Some((header_start, len));
                }
                self.remaining = len;
            }
        }
        None
    }

    fn exhausted(&self, len: usize) -> Status {
        let message = match self.side {
            Side::Receive => format!("grpc: received message larger than max ({len} vs. {})", self.limit),
            Side::Send => format!("grpc: trying to send message larger than max ({len} vs. {})", self.limit),
        };
        Status::resource_exhausted(message)
    }
}

impl<B> Body for FrameLimit<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let Some((at, len)) = this.scan(&data) else {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        };
        this.done = true;
        let status = this.exhausted(len);
        tracing::debug!(side = ?this.side, len, limit = this.limit, "gRPC message over the size limit");
        match this.side {
            Side::Receive => Poll::Ready(Some(Err(status))),
            Side::Send => {
                // The messages before the oversized one still go out (they
                // are complete); the call then ends with the error. A
                // unary response has only the one message.
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
                if let Ok(v) = HeaderValue::from_str(&percent_encode(status.message())) {
                    trailers.insert("grpc-message", v);
                }
                if at > 0 {
                    data.truncate(at);
                    this.trailers = Some(trailers);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// gRPC's `grpc-message` encoding: percent-encodes everything outside
/// printable ASCII and `%` itself.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::httpgrpc::http_client::HttpClient;
    use proto::httpgrpc::http_server::{Http, HttpServer};
    use proto::httpgrpc::{HttpRequest, HttpResponse};

    /// Answers with a body of the size the URL names (`/reply/<bytes>`) and
    /// the request body's length in `Code`; `/block` waits for [`RELEASE`].
    struct Echo;

    static BLOCKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

    #[tonic::async_trait]
    impl Http for Echo {
        async fn handle(&self, req: tonic::Request<HttpRequest>) -> Result<tonic::Response<HttpResponse>, Status> {
            let req = req.into_inner();
            if req.url == "/block" {
                BLOCKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                RELEASE.notified().await;
            }
            let reply: usize = req.url.strip_prefix("/reply/").and_then(|n| n.parse().ok()).unwrap_or(0);
            Ok(tonic::Response::new(HttpResponse {
                code: req.body.len() as i32,
                headers: vec![],
                body: vec![7u8; reply].into(),
            }))
        }
    }

    async fn start(limits: GrpcServerLimits) -> (HttpClient<tonic::transport::Channel>, tokio::sync::oneshot::Sender<()>) {
        let http = crate::http::bind("127.0.0.1:0").await.unwrap();
        let grpc = crate::http::bind("127.0.0.1:0").await.unwrap();
        let addr = grpc.local_addr().unwrap();
        let mut routes = tonic::service::RoutesBuilder::default();
        // tonic's per-service limits lifted, as the roles do: the layer decides.
        routes.add_service(
            HttpServer::new(Echo)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::http::serve(
            http,
            axum::Router::new(),
            grpc,
            routes.routes(),
            limits,
            async move {
                let _ = stopped.await;
            },
            std::time::Duration::from_secs(1),
        ));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = HttpClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        (client, stop)
    }

    fn request(url: &str, body: usize) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![],
            body: vec![1u8; body].into(),
        }
    }

    #[tokio::test]
    async fn oversized_messages_are_resource_exhausted_and_the_server_keeps_serving() {
        let limits = GrpcServerLimits {
            max_recv_msg_size: 64 << 10,
            max_send_msg_size: 32 << 10,
            max_concurrent_streams: 100,
        };
        let (mut client, _stop) = start(limits).await;

        // Just under the receive limit (the body plus a few bytes of framing).
        let ok = client.handle(request("/", (64 << 10) - 100)).await.unwrap();
        assert_eq!(ok.get_ref().code, (64 << 10) - 100);

        let err = client.handle(request("/", 1 << 20)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message().starts_with("grpc: received message larger than max (1048") && err.message().ends_with(" vs. 65536)"),
            "{}",
            err.message()
        );

        // A reply over the send limit is refused the same way.
        let err = client.handle(request("/reply/100000", 10)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(err.message().starts_with("grpc: trying to send message larger than max (100"), "{}", err.message());

        // The same connection still serves normal calls.
        for _ in 0..3 {
            let ok = client.handle(request("/reply/1000", 10)).await.unwrap();
            assert_eq!(ok.get_ref().body.len(), 1000);
            assert_eq!(ok.get_ref().code, 10);
        }
    }

    #[tokio::test]
    async fn a_lying_length_prefix_is_refused_before_anything_is_buffered() {
        let limits = GrpcServerLimits {
            max_recv_msg_size: 1 << 20,
            max_send_msg_size: 1 << 20,
            max_concurrent_streams: 100,
        };
        let (mut client, _stop) = start(limits).await;
        // Scanning alone (no server): a header claiming 4 GiB is caught at
        // once, even split over two chunks, without its payload.
        let mut body = FrameLimit::new(tonic::body::Body::empty(), 1 << 20, Side::Receive);
        assert_eq!(body.scan(&[0, 0xff, 0xff]), None);
        assert_eq!(body.scan(&[0xff, 0xff]), Some((0, u32::MAX as usize)));
        let mut body = FrameLimit::new(tonic::body::Body::empty(), 10, Side::Receive);
        // Two messages of 3 and 10 bytes pass; the third header (11) is caught at its offset.
        let mut data = vec![0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 10];
        data.extend([9; 10]);
        data.extend([0, 0, 0, 0, 11]);
        assert_eq!(body.scan(&data), Some((23, 11)));
        // And the server is up for a normal call.
        let ok = client.handle(request("/reply/5", 5)).await.unwrap();
        assert_eq!(ok.get_ref().body.len(), 5);
    }

    #[tokio::test]
    async fn concurrent_streams_beyond_the_limit_wait() {
        let limits = GrpcServerLimits {
            max_recv_msg_size: 1 << 20,
            max_send_msg_size: 1 << 20,
            max_concurrent_streams: 1,
        };
        let (client, _stop) = start(limits).await;
        // One call first, so the client has the server's SETTINGS (before
        // them it may open more streams, which the server refuses).
        client.clone().handle(request("/", 1)).await.unwrap();
        let mut blocked = client.clone();
        let first = tokio::spawn(async move { blocked.handle(request("/block", 1)).await });
        while BLOCKED.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The only stream is taken: a second call waits for it.
        let mut second = client.clone();
        let mut second = tokio::spawn(async move { second.handle(request("/", 2)).await });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut second).await;
        assert!(waited.is_err(), "a second stream was served while the limit is 1");
        RELEASE.notify_one();
        assert_eq!(first.await.unwrap().unwrap().get_ref().code, 1);
        assert_eq!(second.await.unwrap().unwrap().get_ref().code, 2);
    }
}
