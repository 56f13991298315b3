//! The ruler (spec §8): per-tenant Prometheus rule groups, evaluated with our PromQL
//! engine, results written back through a pusher, alerts sent to Alertmanager.
//!
//! - [`rulefmt`]: the rule-file format and `promtool check rules` validation.
//! - [`template`]: Prometheus's Go-template dialect for labels and annotations.
//! - [`rules`]: recording and alerting rules; the alert state machine.
//! - [`store`]: rule storage backends (`filesystem`, `local`).
//! - [`manager`]: [`Ruler`], group scheduling and evaluation; [`Pusher`] and
//!   [`TenantQueryables`], what the ruler writes to and reads from.
//! - [`notifier`]: the Alertmanager v2 client and its bounded queue.
//! - [`api`]: the rules API and Prometheus's `/api/v1/rules`, `/api/v1/alerts`.
//! - [`config`], [`metrics`], [`error`].

pub mod api;
pub mod config;
pub mod error;
pub mod manager;
pub mod metrics;
pub mod notifier;
pub mod rulefmt;
pub mod rules;
pub mod store;
pub mod template;

use std::sync::Arc;

pub use config::{Config, FLAGS};
pub use error::RulerError;
pub use manager::{Pusher, Ruler, TenantQueryables};

/// The rule store `cfg` names.
pub fn open_store(cfg: &config::StorageConfig) -> Result<Arc<dyn store::RuleStore>, RulerError> {
    match cfg.backend.as_str() {
        "" | "filesystem" => Ok(Arc::new(store::FilesystemStore::new(&cfg.filesystem_dir))),
        "local" if !cfg.local_directory.is_empty() => Ok(Arc::new(store::LocalStore::new(&cfg.local_directory))),
        "local" => Err(RulerError::BadRequest(
            "-ruler-storage.backend=local needs -ruler-storage.local.directory".into(),
        )),
        other => Err(RulerError::BadRequest(format!(
            "unsupported -ruler-storage.backend {other:?}: valid backends are filesystem, local"
        ))),
    }
}

impl Ruler {
    pub fn http_routes(self: &Arc<Self>) -> axum::Router {
        api::routes(self.clone())
    }
}
