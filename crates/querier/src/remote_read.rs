//! Remote read (`/api/prom/read`, `/api/prom/api/v1/read`, `/prometheus/api/v1/read`):
//! Prometheus's protocol (`storage/remote/codec.go`, `chunked.go`, v2.42), answered from the
//! same data as `query` and `query_range`: the ingesters and the chunk store, merged.
//!
//! A snappy `ReadRequest` comes in; the response type is negotiated from
//! `accepted_response_types` as Prometheus does (empty = `SAMPLES`, else the first supported):
//!
//! - `SAMPLES`: one snappy-compressed `ReadResponse`, samples clipped to each query's range.
//! - `STREAMED_XOR_CHUNKS`: frames of `uvarint(len) ‖ CRC-32C(msg) big-endian ‖ msg`, each msg a
//!   `ChunkedReadResponse` holding one series (split over frames past [`MAX_FRAME_BYTES`]), series
//!   sorted by labels. XOR chunks (from ingesters, the store, or inside a store Bigchunk) are
//!   passed on as they are, whole, as Prometheus does; only a series whose chunks overlap
//!   (replicas that cut differently) or that the store holds in a Prometheus-1.x encoding is
//!   decoded, merged and re-encoded.
//!
//! Hostile input is refused before work proportional to it is done: body and declared
//! decompressed sizes are checked before decompressing (413), every query of the request is
//! validated before any is run (400), all queries share one `-querier.max-samples` budget that
//! is charged from chunk headers before anything is decoded (422), the request holds a
//! `-querier.max-concurrent` slot and ends at `-querier.timeout` (503). [`ReadError::status`] is
//! the one place errors become HTTP codes.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chunk::{StoredChunk, XorChunk, ENCODING_PROMETHEUS_XOR, MAX_SAMPLES_PER_CHUNK};
use model::{Labels, Matcher, Sample, Series};
use promql::SampleLimit;
use prost::Message;
use proto::prometheus as prompb;
use server::{HttpError, Tenant};
use std::sync::Arc;

use crate::ingesters::{labels_from_proto, IngesterQuerier, SelectError};
use crate::{Querier, Source};

/// Largest compressed request accepted (Cortex: 1 MiB). A read request is a few matchers.
pub const MAX_COMPRESSED_BYTES: usize = 1 << 20;
/// Largest decompressed request accepted, checked against snappy's length header first.
pub const MAX_DECOMPRESSED_BYTES: usize = 4 << 20;
/// Queries in one request. Prometheus, Thanos and Cortex clients send one; each query is a
/// fan-out to every ingester and the store, so thousands of them are refused up front.
pub const MAX_QUERIES: usize = 128;
/// Frame size a streamed series is split at (Prometheus `--storage.remote.read-max-bytes-in-frame`).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Content type of a `STREAMED_XOR_CHUNKS` response.
pub const STREAMED_CONTENT_TYPE: &str = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// Why a remote read failed; [`ReadError::status`] maps each to its HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("empty request body: expected a snappy-compressed protobuf ReadRequest")]
    Empty,
    #[error("remote read request of {size} bytes is larger than the limit of {max} bytes")]
    CompressedTooLarge { size: usize, max: usize },
    #[error("remote read request decompresses to {size} bytes, larger than the limit of {max} bytes")]
    DecompressedTooLarge { size: usize, max: usize },
    #[error("decompressing remote read request (expected block snappy, as Prometheus sends): {0}")]
    Snappy(#[from] snap::Error),
    #[error("unmarshalling protobuf ReadRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error(
        "server does not support any of the requested response types: {0:?}; supported: SAMPLES (0), STREAMED_XOR_CHUNKS (1)"
    )]
    NoResponseType(Vec<i32>),
    #[error("remote read request has {0} queries, more than the limit of {MAX_QUERIES}")]
    TooManyQueries(usize),
    #[error("remote read query {index}: {reason}")]
    BadQuery { index: usize, reason: String },
    #[error(
        "query processing would load too many samples into memory in query execution (remote read; limit -querier.max-samples={0})"
    )]
    TooManySamples(usize),
    #[error("query timed out in query execution (remote read; -querier.timeout={0:?})")]
    Timeout(Duration),
    #[error("querier shutting down")]
    ShuttingDown,
    /// From the ingesters or the store: a 4xx is a limit or the user's query, else ours.
    #[error("{}", .0.message)]
    Storage(HttpError),
    #[error("encoding remote read response: {0}")]
    Encode(String),
}

impl ReadError {
    pub fn status(&self) -> StatusCode {
        use ReadError as E;
        match self {
            E::CompressedTooLarge { .. } | E::DecompressedTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::Empty
            | E::Snappy(_)
            | E::Protobuf(_)
            | E::NoResponseType(_)
            | E::TooManyQueries(_)
            | E::BadQuery { .. } => StatusCode::BAD_REQUEST,
            E::TooManySamples(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Timeout(_) | E::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            // A storage 4xx (per-query limits, "query must contain metric name") is answered as
            // the query API answers it: 422, the query is valid but cannot be executed.
            E::Storage(e) if e.is_client_error() => StatusCode::UNPROCESSABLE_ENTITY,
            E::Storage(e) => StatusCode::from_u16(e.code)
                .ok()
                .filter(|s| s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            E::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn from_select(e: SelectError, limit: &SampleLimit) -> Self {
        match e {
            SelectError::Http(e) => ReadError::Storage(e),
            SelectError::TooManySamples => ReadError::TooManySamples(limit.max()),
        }
    }
}

/// Plain text, as Prometheus's `http.Error` answers remote read errors.
impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "remote read failed");
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// The negotiated response type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseType {
    Samples,
    StreamedXorChunks,
}

/// Prometheus's `NegotiateResponseType`: none listed means `SAMPLES` (older clients); else the
/// first listed type this server supports.
fn negotiate(accepted: &[i32]) -> Result<ResponseType, ReadError> {
    use prompb::read_request::ResponseType as R;
    if accepted.is_empty() {
        return Ok(ResponseType::Samples);
    }
    accepted
        .iter()
        .find_map(|&t| match R::try_from(t) {
            Ok(R::Samples) => Some(ResponseType::Samples),
            Ok(R::StreamedXorChunks) => Some(ResponseType::StreamedXorChunks),
            Err(_) => None,
        })
        .ok_or_else(|| ReadError::NoResponseType(accepted.iter().take(16).copied().collect()))
}

/// One validated query of the request.
#[derive(Debug)]
struct Query {
    start: i64,
    end: i64,
    matchers: Vec<Matcher>,
}

/// Decodes a block-snappy `ReadRequest`, sizes checked before any allocation they claim.
fn decode_request(body: &[u8]) -> Result<prompb::ReadRequest, ReadError> {
    if body.is_empty() {
        return Err(ReadError::Empty);
    }
    if body.len() > MAX_COMPRESSED_BYTES {
        return Err(ReadError::CompressedTooLarge {
            size: body.len(),
            max: MAX_COMPRESSED_BYTES,
        });
    }
    // The length header is the client's claim: check it before allocating for it.
    let size = snap::raw::decompress_len(body)?;
    if size > MAX_DECOMPRESSED_BYTES {
        return Err(ReadError::DecompressedTooLarge {
            size,
            max: MAX_DECOMPRESSED_BYTES,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(prompb::ReadRequest::decode(raw.as_slice())?)
}

/// Every query checked before any is run: a bad fifth query costs no fetch for the first four.
fn validate(queries: &[prompb::Query]) -> Result<Vec<Query>, ReadError> {
    if queries.len() > MAX_QUERIES {
        return Err(ReadError::TooManyQueries(queries.len()));
    }
    queries
        .iter()
        .enumerate()
        .map(|(index, q)| {
            let bad = |reason: String| ReadError::BadQuery { index, reason };
            if q.end_timestamp_ms < q.start_timestamp_ms {
                return Err(bad(format!(
                    "end timestamp {} must not be before start timestamp {}",
                    q.end_timestamp_ms, q.start_timestamp_ms
                )));
            }
            let matchers = q
                .matchers
                .iter()
                .map(|m| Matcher::from_i32(m.r#type, m.name.clone(), m.value.clone()).map_err(|e| bad(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            // As PromQL requires of a selector: a query whose every matcher matches the empty
            // string would select every series the tenant has.
            if matchers.iter().all(Matcher::matches_empty) {
                return Err(bad(
                    "a query must contain at least one matcher that does not match the empty string".into(),
                ));
            }
            Ok(Query {
                start: q.start_timestamp_ms,
                end: q.end_timestamp_ms,
                matchers,
            })
        })
        .collect()
}

/// The route handler.
pub(crate) async fn handler(State(q): State<Arc<Querier>>, Tenant(tenant): Tenant, body: Bytes) -> Response {
    let timeout = q.cfg.timeout.0;
    let answer = async {
        let _slot = q.threads.slot().await.ok_or(ReadError::ShuttingDown)?;
        read(&q, &tenant, &body).await
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(_) => ReadError::Timeout(timeout).into_response(),
    }
}

async fn read(q: &Querier, tenant: &str, body: &[u8]) -> Result<Response, ReadError> {
    let req = decode_request(body)?;
    let kind = negotiate(&req.accepted_response_types)?;
    let queries = validate(&req.queries)?;
    drop(req);
    // One budget for the whole request: its answer is held (SAMPLES) or built (frames) whole.
    let limit = SampleLimit::new(q.cfg.max_samples);
    match kind {
        ResponseType::Samples => {
            let mut out = Vec::new();
            for query in &queries {
                let series = select_series(q, tenant, query, &limit).await?;
                encode_query_result(&mut out, series);
            }
            let compressed = snap::raw::Encoder::new()
                .compress_vec(&out)
                .map_err(|e| ReadError::Encode(e.to_string()))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-protobuf"),
                    (header::CONTENT_ENCODING, "snappy"),
                ],
                compressed,
            )
                .into_response())
        }
        ResponseType::StreamedXorChunks => {
            let mut out = Vec::new();
            for (index, query) in queries.iter().enumerate() {
                let series = select_chunks(q, tenant, query, &limit).await?;
                write_series_frames(&mut out, index as i64, &series, MAX_FRAME_BYTES);
            }
            Ok(([(header::CONTENT_TYPE, STREAMED_CONTENT_TYPE)], out).into_response())
        }
    }
}

/// Samples of one query, from the same merge `query`/`query_range` read through.
async fn select_series(
    q: &Querier,
    tenant: &str,
    query: &Query,
    limit: &SampleLimit,
) -> Result<Vec<Series>, ReadError> {
    match &q.source {
        Source::Ingesters(i) => crate::store::select_merged(i, tenant, query.start, query.end, &query.matchers, limit)
            .await
            .map_err(|e| ReadError::from_select(e, limit)),
        Source::Queryable(d) => d
            .select_limited(query.start, query.end, &query.matchers, limit)
            .await
            .map_err(|e| match e {
                promql::PromqlError::TooManySamples => ReadError::TooManySamples(limit.max()),
                promql::PromqlError::Storage(s) => ReadError::Storage(HttpError::new(s.code, s.message)),
                other => ReadError::Storage(HttpError::internal(other.to_string())),
            }),
    }
}

/// Appends `ReadResponse.results[i]` (field 1) holding `series` to `out`, one series at a
/// time, so the answer is never held twice (as series and as a protobuf tree).
fn encode_query_result(out: &mut Vec<u8>, series: Vec<Series>) {
    let mut result = Vec::new();
    let mut samples = Vec::new();
    for s in series {
        samples.clear();
        samples.extend(s.samples.iter().map(|p| prompb::Sample {
            value: p.v,
            timestamp: p.t,
        }));
        let ts = prompb::TimeSeries {
            labels: labels_to_prompb(&s.labels),
            samples: std::mem::take(&mut samples),
        };
        prost::encoding::message::encode(1, &ts, &mut result);
        samples = ts.samples;
    }
    // An empty result is still written: clients check one result per query.
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(result.len() as u64, out);
    out.extend_from_slice(&result);
}

fn labels_to_prompb(labels: &Labels) -> Vec<prompb::Label> {
    labels
        .iter()
        .map(|l| prompb::Label {
            name: l.name.clone(),
            value: l.value.clone(),
        })
        .collect()
}

/// A chunk as fetched, still encoded.
#[derive(Debug, Clone)]
struct RawChunk {
    encoding: i32,
    data: bytes::Bytes,
    /// Where it came from, for the error naming a chunk that fails to decode.
    source: &'static str,
}

/// One series of a streamed answer.
#[derive(Debug)]
struct ChunkSeries {
    labels: Labels,
    chunks: Vec<prompb::Chunk>,
}

/// Chunks of one query, series sorted by labels: from the ingesters and the store as
/// encoded, or (over a fixed data set) the samples cut into XOR chunks.
async fn select_chunks(
    q: &Querier,
    tenant: &str,
    query: &Query,
    limit: &SampleLimit,
) -> Result<Vec<ChunkSeries>, ReadError> {
    let gathered = match &q.source {
        Source::Ingesters(i) => gather_chunks(i, tenant, query, limit).await?,
        Source::Queryable(_) => {
            let series = select_series(q, tenant, query, limit).await?;
            let mut out: Vec<ChunkSeries> = series
                .into_iter()
                .map(|s| ChunkSeries {
                    chunks: encode_xor(&s.samples),
                    labels: s.labels,
                })
                .collect();
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            return Ok(out);
        }
    };
    let mut out = Vec::with_capacity(gathered.len());
    for (labels, raw) in gathered {
        let chunks = series_chunks(raw, query.start, query.end, limit)?;
        if !chunks.is_empty() {
            out.push(ChunkSeries { labels, chunks });
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

/// The encoded chunks the ingesters (every replica) and the store hold for `query`, routed
/// as `select_merged` routes (`-querier.query-ingesters-within`, `-querier.query-store-after`).
/// What streams from the ingesters is bounded by the sample budget × replicas as it arrives.
async fn gather_chunks(
    ingesters: &IngesterQuerier,
    tenant: &str,
    query: &Query,
    limit: &SampleLimit,
) -> Result<HashMap<Labels, Vec<RawChunk>>, ReadError> {
    let (ingester_start, ask_store) = match ingesters.store() {
        Some(store) => store.plan(query.start, query.end),
        None => (Some(query.start), false),
    };
    let from_ingesters = async {
        match ingester_start {
            Some(start) => {
                ingesters
                    .query_stream(tenant, start, query.end, &query.matchers, limit)
                    .await
            }
            None => Ok(Vec::new()),
        }
    };
    let from_store = async {
        match ingesters.store() {
            Some(store) if ask_store => store.chunks(tenant, query.start, query.end, &query.matchers).await,
            _ => Ok(Vec::new()),
        }
    };
    let (batches, stored) = futures::future::join(from_ingesters, from_store).await;
    let (batches, stored) = (
        batches.map_err(|e| ReadError::from_select(e, limit))?,
        stored.map_err(|e| ReadError::from_select(e, limit))?,
    );
    let mut gathered: HashMap<Labels, Vec<RawChunk>> = HashMap::new();
    for batch in batches {
        for cs in batch.chunkseries {
            let chunks = gathered.entry(labels_from_proto(&cs.labels)).or_default();
            chunks.extend(cs.chunks.into_iter().map(|c| RawChunk {
                encoding: c.encoding,
                data: c.data,
                source: "an ingester",
            }));
        }
        // Ingesters stream chunks; a sample list would come from an older ingester.
        for ts in batch.timeseries {
            let samples: Vec<Sample> = ts
                .samples
                .iter()
                .map(|s| Sample {
                    t: s.timestamp_ms,
                    v: s.value,
                })
                .collect();
            let chunks = gathered.entry(labels_from_proto(&ts.labels)).or_default();
            for c in encode_xor(&samples) {
                chunks.push(RawChunk {
                    encoding: ENCODING_PROMETHEUS_XOR,
                    data: c.data,
                    source: "an ingester",
                });
            }
        }
    }
    for c in stored {
        gathered.entry(c.labels).or_default().push(RawChunk {
            encoding: c.encoding,
            data: c.data,
            source: "the store",
        });
    }
    Ok(gathered)
}

/// An opened XOR chunk with its time span and its bytes as received.
struct OpenXor {
    min_t: i64,
    max_t: i64,
    samples: usize,
    data: bytes::Bytes,
    chunk: Option<XorChunk>,
}

/// One series' chunks for the stream. Replicas' and flushed-and-still-in-memory copies of a
/// chunk are the same bytes and kept once; the samples of what remains are charged to
/// `limit` before anything is decoded. Non-overlapping XOR chunks go out as they came;
/// otherwise the series' samples are merged (one per timestamp), clipped to [start, end] and
/// cut into XOR chunks of [`MAX_SAMPLES_PER_CHUNK`].
fn series_chunks(
    mut raw: Vec<RawChunk>,
    start: i64,
    end: i64,
    limit: &SampleLimit,
) -> Result<Vec<prompb::Chunk>, ReadError> {
    raw.sort_by(|a, b| a.encoding.cmp(&b.encoding).then_with(|| a.data.cmp(&b.data)));
    raw.dedup_by(|a, b| a.encoding == b.encoding && a.data == b.data);
    let mut xor = Vec::with_capacity(raw.len());
    let mut other = Vec::new();
    for c in raw {
        let opened = StoredChunk::open(c.encoding, c.data.clone())
            .map_err(|e| ReadError::Storage(HttpError::internal(format!("chunk from {}: {e}", c.source))))?;
        match opened {
            StoredChunk::Xor(x) => {
                if let (Some(min_t), Some(max_t)) = (x.first_time(), x.last_time()) {
                    xor.push(OpenXor {
                        min_t,
                        max_t,
                        samples: x.num_samples(),
                        data: c.data,
                        chunk: Some(x),
                    });
                }
            }
            // A Bigchunk is a list of XOR chunks: those can go out as they are.
            StoredChunk::Bigchunk(b) => {
                for x in b.sub_chunks() {
                    if let (Some(min_t), Some(max_t)) = (x.first_time(), x.last_time()) {
                        xor.push(OpenXor {
                            min_t,
                            max_t,
                            samples: x.num_samples(),
                            data: x.to_bytes(),
                            chunk: Some(x.clone()),
                        });
                    }
                }
            }
            o => other.push(o),
        }
    }
    let samples =
        xor.iter().map(|c| c.samples).sum::<usize>() + other.iter().map(StoredChunk::num_samples).sum::<usize>();
    limit.add(samples).map_err(|_| ReadError::TooManySamples(limit.max()))?;
    xor.sort_by_key(|c| (c.min_t, c.max_t));
    // Sub-chunks of different Bigchunks can be the same bytes too.
    xor.dedup_by(|a, b| a.data == b.data);
    let disjoint = xor.windows(2).all(|w| w[0].max_t < w[1].min_t);
    if other.is_empty() && disjoint {
        return Ok(xor
            .into_iter()
            .map(|c| prompb::Chunk {
                min_time_ms: c.min_t,
                max_time_ms: c.max_t,
                r#type: prompb::chunk::Encoding::Xor as i32,
                data: c.data,
            })
            .collect());
    }
    let mut merged: Vec<Sample> = Vec::with_capacity(samples);
    for c in &xor {
        if let Some(x) = &c.chunk {
            merged.extend(
                x.iter()
                    .filter(|(t, _)| (start..=end).contains(t))
                    .map(|(t, v)| Sample { t, v }),
            );
        }
    }
    for o in &other {
        merged.extend(
            o.iter()
                .filter(|(t, _)| (start..=end).contains(t))
                .map(|(t, v)| Sample { t, v }),
        );
    }
    merged.sort_by_key(|s| s.t);
    merged.dedup_by_key(|s| s.t);
    Ok(encode_xor(&merged))
}

/// `samples` (time-ordered, one per timestamp) as XOR chunks of at most
/// [`MAX_SAMPLES_PER_CHUNK`] samples.
fn encode_xor(samples: &[Sample]) -> Vec<prompb::Chunk> {
    samples
        .chunks(MAX_SAMPLES_PER_CHUNK)
        .map(|part| {
            let mut x = XorChunk::new();
            for s in part {
                x.append(s.t, s.v);
            }
            prompb::Chunk {
                min_time_ms: part[0].t,
                max_time_ms: part[part.len() - 1].t,
                r#type: prompb::chunk::Encoding::Xor as i32,
                data: x.to_bytes(),
            }
        })
        .collect()
}

/// Appends one frame: `uvarint(len(msg))`, CRC-32 Castagnoli of `msg` (big-endian), `msg`.
fn write_frame(out: &mut Vec<u8>, msg: &[u8]) {
    prost::encoding::encode_varint(msg.len() as u64, out);
    out.extend_from_slice(&crc32c::crc32c(msg).to_be_bytes());
    out.extend_from_slice(msg);
}

/// Prometheus's `StreamChunkedReadResponses`: one series per frame, its chunks added until the
/// frame's payload (less the labels) reaches `max_frame_bytes` — overshooting by at most one
/// chunk — then the rest of the series continues in the next frame.
fn write_series_frames(out: &mut Vec<u8>, query_index: i64, series: &[ChunkSeries], max_frame_bytes: usize) {
    let mut msg = Vec::new();
    for s in series {
        let labels = labels_to_prompb(&s.labels);
        let label_bytes: usize = labels.iter().map(|l| l.encoded_len()).sum();
        let max_data = max_frame_bytes as i64 - label_bytes as i64;
        let mut first = 0;
        while first < s.chunks.len() {
            let mut left = max_data;
            let mut last = first;
            while last < s.chunks.len() {
                left -= s.chunks[last].encoded_len() as i64;
                last += 1;
                if left <= 0 {
                    break;
                }
            }
            let frame = prompb::ChunkedReadResponse {
                chunked_series: vec![prompb::ChunkedSeries {
                    labels: labels.clone(),
                    chunks: s.chunks[first..last].to_vec(),
                }],
                query_index,
            };
            msg.clear();
            frame.encode(&mut msg).expect("a Vec grows as needed");
            write_frame(out, &msg);
            first = last;
        }
    }
}

#[cfg(test)]
mod tests;
