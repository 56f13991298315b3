//! Shared server plumbing for every role.
//!
//! - [`tenant`]: who a request is for (HTTP header / gRPC metadata / `fake`).
//! - [`error`]: [`HttpError`], the one mapping of errors to HTTP and gRPC status.
//! - [`metrics`]: the process's Prometheus registry.
//! - [`config`]: flags + YAML over serde defaults.
//! - [`http`]: the HTTP and gRPC servers; [`grpc`]: the gRPC server's limits.
//! - [`ingester_client`]: pooled gRPC clients to ingesters.
//! - [`tenant_activity`]: when tenants were last seen, to free idle tenants' state.

pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ingester_client;
pub mod metrics;
pub mod tenant;
pub mod tenant_activity;

pub use error::HttpError;
pub use ingester_client::IngesterPool;
pub use metrics::Metrics;
pub use tenant::Tenant;
