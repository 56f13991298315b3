//! The ruler (spec §8): per-tenant Prometheus rule groups, evaluated with our PromQL
//! engine, results written back through a pusher, alerts sent to Alertmanager.
//!
//! - [`rulefmt`]: the rule-file format and `promtool check rules` validation.
//! - [`template`]: Prometheus's Go-template dialect for labels and annotations.
//! - [`rules`]: recording and alerting rules; the alert state machine.
pub mod rulefmt;
pub mod rules;
pub mod template;
