//! Generated protobuf and gRPC code. Field numbers match Prometheus `prompb`
//! and Cortex so that real Prometheus servers and Cortex tools interoperate.

/// Cortex ingester protocol (`cortex.Ingester`), remote-write `WriteRequest`.
pub mod cortex {
    tonic::include_proto!("cortex");
}

/// Prometheus `prompb` (remote read with streamed XOR chunks, remote write as a client).
pub mod prometheus {
    tonic::include_proto!("prometheus");
}

/// Hash ring descriptor.
pub mod ring {
    tonic::include_proto!("ring");
}

/// HTTP over gRPC, and the status detail carrying an HTTP code.
pub mod httpgrpc {
    tonic::include_proto!("httpgrpc");
}

/// Query-frontend: the querier pull protocol (`frontend.Frontend`) and the results cache's values.
pub mod frontend {
    tonic::include_proto!("frontend");
}
