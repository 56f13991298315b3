//! Remote-write load generation: realistic node-exporter-like series, requests
//! encoded (protobuf + block snappy) before the clock starts, and a report of
//! throughput, latency percentiles and errors.

pub mod args;
pub mod run;
pub mod series;

pub use args::{Args, ArgsError};
pub use run::{run, Report};
pub use series::{encode_requests, generate_series, EncodedRequest, SeriesSpec};
