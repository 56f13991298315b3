//! `cortex.Ingester` over gRPC. The tenant comes from `x-scope-orgid`
//! metadata; errors with an HTTP meaning travel as httpgrpc statuses.
//!
//! `TransferChunks` (hand-over of in-memory series to a joining ingester on
//! shutdown, spec §3.5) is refused: this implementation is designed around
//! the WAL (§3.6), where an ingester restarts on its own volume and replays
//! its WAL instead of streaming its series to a peer, and Cortex itself
//! disables hand-over when the WAL is on. Accepting the stream would mean
//! silently dropping data, so the sender gets an explicit error and falls
//! back to flushing.

use std::sync::Arc;

use bytes::Bytes;
use model::{Labels, Matcher};
use proto::cortex::ingester_server::Ingester as IngesterRpc;
use proto::cortex::{
    Chunk, LabelMatcher, LabelNamesRequest, LabelNamesResponse, LabelPair, LabelValuesRequest, LabelValuesResponse,
    Metric, MetricsForLabelMatchersRequest, MetricsForLabelMatchersResponse, MetricsMetadataRequest,
    MetricsMetadataResponse, QueryRequest, QueryResponse, QueryStreamResponse, Sample, TimeSeries, TimeSeriesChunk,
    TransferChunksResponse, UserIdStatsResponse, UserStatsRequest, UserStatsResponse, UsersStatsResponse, WriteRequest,
    WriteResponse,
};
use server::tenant::from_grpc;
use server::HttpError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::series::MemorySeries;
use crate::Ingester;

/// Series per `QueryStreamResponse` message, as Cortex's `queryStreamBatchSize`.
pub const QUERY_STREAM_BATCH_SIZE: usize = 128;

/// Messages buffered between the task collecting series and the gRPC stream.
/// Small: the stream applies backpressure, so memory stays bounded by a few batches.
const QUERY_STREAM_BUFFER: usize = 2;

/// The tonic service wrapping an [`Ingester`].
#[derive(Clone, Debug)]
pub struct IngesterService {
    ingester: Arc<Ingester>,
}

impl IngesterService {
    pub fn new(ingester: Arc<Ingester>) -> Self {
        IngesterService { ingester }
    }
}

/// Converts wire matchers, turning a bad regex or type into a 400.
pub fn matchers_from_proto(matchers: &[LabelMatcher]) -> Result<Vec<Matcher>, HttpError> {
    matchers
        .iter()
        .map(|m| Matcher::from_i32(m.r#type, m.name.clone(), m.value.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| HttpError::bad_request(e.to_string()))
}

/// Labels as wire label pairs.
pub fn labels_to_proto(labels: &Labels) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|l| LabelPair {
            name: Bytes::copy_from_slice(l.name.as_bytes()),
            value: Bytes::copy_from_slice(l.value.as_bytes()),
        })
        .collect()
}

/// The series with every chunk overlapping `[from, through]`, or `None` if
/// no chunk does. The open head chunk is sent as a copy of its current bytes.
fn chunk_series(s: &MemorySeries, labels: &Labels, from: i64, through: i64) -> Option<TimeSeriesChunk> {
    let chunks: Vec<Chunk> = s
        .chunks
        .iter()
        .filter(|c| c.overlaps(from, through))
        .map(|c| Chunk {
            start_timestamp_ms: c.first_time,
            end_timestamp_ms: c.last_time,
            encoding: chunk::ENCODING_PROMETHEUS_XOR,
            data: c.chunk.to_bytes(),
        })
        .collect();
    if chunks.is_empty() {
        return None;
    }
    Some(TimeSeriesChunk {
        from_ingester_id: String::new(),
        user_id: String::new(),
        labels: labels_to_proto(labels),
        chunks,
    })
}

fn status(e: HttpError) -> Status {
    e.to_grpc_status()
}

#[tonic::async_trait]
impl IngesterRpc for IngesterService {
    async fn push(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let tenant = from_grpc(&request)?;
        self.ingester
            .push(&tenant, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(WriteResponse {}))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryResponse>, Status> {
        let tenant = from_grpc(&request)?;
        let req = request.into_inner();
        let matchers = matchers_from_proto(&req.matchers).map_err(status)?;
        let series = self
            .ingester
            .query(&tenant, req.start_timestamp_ms, req.end_timestamp_ms, &matchers)
            .map_err(status)?;
        let timeseries = series
            .into_iter()
            .map(|s| TimeSeries {
                labels: labels_to_proto(&s.labels),
                samples: s
                    .samples
                    .into_iter()
                    .map(|p| Sample {
                        value: p.v,
                        timestamp_ms: p.t,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(QueryResponse { timeseries }))
    }

    type QueryStreamStream = ReceiverStream<Result<QueryStreamResponse, Status>>;

    async fn query_stream(&self, request: Request<QueryRequest>) -> Result<Response<Self::QueryStreamStream>, Status> {
        let tenant = from_grpc(&request)?;
        let req = request.into_inner();
        let matchers = matchers_from_proto(&req.matchers).map_err(status)?;
        let (from, through) = (req.start_timestamp_ms, req.end_timestamp_ms);
        let ing = self.ingester.clone();
        ing.metrics.queries.inc();
        let (tx, rx) = tokio::sync::mpsc::channel(QUERY_STREAM_BUFFER);
        let Some(user) = ing.user(&tenant) else {
            ing.metrics.queried_series.observe(0.0);
            return Ok(Response::new(ReceiverStream::new(rx)));
        };
        tokio::spawn(async move {
            let fps = user.candidate_fingerprints(&matchers);
            let mut batch: Vec<TimeSeriesChunk> = Vec::with_capacity(QUERY_STREAM_BATCH_SIZE);
            let (mut series_sent, mut chunks_sent) = (0usize, 0usize);
            for window in fps.chunks(QUERY_STREAM_BATCH_SIZE) {
                // Shard locks are taken and released inside this call; none is
                // held across the sends below.
                user.for_each_matching(window, &matchers, |s, labels| {
                    if let Some(tsc) = chunk_series(s, labels, from, through) {
                        batch.push(tsc);
                    }
                });
                while batch.len() >= QUERY_STREAM_BATCH_SIZE {
                    let rest = batch.split_off(QUERY_STREAM_BATCH_SIZE);
                    let full = std::mem::replace(&mut batch, rest);
                    series_sent += full.len();
                    chunks_sent += full.iter().map(|s| s.chunks.len()).sum::<usize>();
                    let msg = QueryStreamResponse {
                        chunkseries: full,
                        timeseries: vec![],
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return; // client went away
                    }
                }
            }
            if !batch.is_empty() {
                series_sent += batch.len();
                chunks_sent += batch.iter().map(|s| s.chunks.len()).sum::<usize>();
                let msg = QueryStreamResponse {
                    chunkseries: batch,
                    timeseries: vec![],
                };
                let _ = tx.send(Ok(msg)).await;
            }
            ing.metrics.queried_series.observe(series_sent as f64);
            ing.metrics.queried_chunks.observe(chunks_sent as f64);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let tenant = from_grpc(&request)?;
        let req = request.into_inner();
        Ok(Response::new(LabelValuesResponse {
            label_values: self.ingester.label_values(&tenant, &req.label_name),
        }))
    }

    async fn label_names(&self, request: Request<LabelNamesRequest>) -> Result<Response<LabelNamesResponse>, Status> {
        let tenant = from_grpc(&request)?;
        Ok(Response::new(LabelNamesResponse {
            label_names: self.ingester.label_names(&tenant),
        }))
    }

    async fn user_stats(&self, request: Request<UserStatsRequest>) -> Result<Response<UserStatsResponse>, Status> {
        let tenant = from_grpc(&request)?;
        Ok(Response::new(self.ingester.user_stats(&tenant)))
    }

    async fn all_user_stats(
        &self,
        _request: Request<UserStatsRequest>,
    ) -> Result<Response<UsersStatsResponse>, Status> {
        let stats = self
            .ingester
            .all_user_stats()
            .into_iter()
            .map(|(user_id, data)| UserIdStatsResponse {
                user_id,
                data: Some(data),
            })
            .collect();
        Ok(Response::new(UsersStatsResponse { stats }))
    }

    async fn metrics_for_label_matchers(
        &self,
        request: Request<MetricsForLabelMatchersRequest>,
    ) -> Result<Response<MetricsForLabelMatchersResponse>, Status> {
        let tenant = from_grpc(&request)?;
        let req = request.into_inner();
        let sets = req
            .matchers_set
            .iter()
            .map(|set| matchers_from_proto(&set.matchers))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let metric = self
            .ingester
            .series_for_matchers(&tenant, &sets)
            .iter()
            .map(|l| Metric {
                labels: labels_to_proto(l),
            })
            .collect();
        Ok(Response::new(MetricsForLabelMatchersResponse { metric }))
    }

    async fn metrics_metadata(
        &self,
        request: Request<MetricsMetadataRequest>,
    ) -> Result<Response<MetricsMetadataResponse>, Status> {
        let tenant = from_grpc(&request)?;
        Ok(Response::new(MetricsMetadataResponse {
            metadata: self.ingester.metadata(&tenant),
        }))
    }

    async fn transfer_chunks(
        &self,
        _request: Request<Streaming<TimeSeriesChunk>>,
    ) -> Result<Response<TransferChunksResponse>, Status> {
        Err(transfer_refused())
    }
}

/// The error `TransferChunks` answers with: gRPC `Unimplemented`, carrying an
/// httpgrpc 501 so HTTP-minded callers see "not implemented" too.
pub fn transfer_refused() -> Status {
    let e = HttpError::new(
        501,
        "chunk hand-over (TransferChunks) is not supported: this ingester relies on its WAL to survive restarts; \
         flush or replay the WAL instead",
    );
    let details = e.to_grpc_status().details().to_vec();
    Status::with_details(tonic::Code::Unimplemented, e.message, Bytes::from(details))
}
