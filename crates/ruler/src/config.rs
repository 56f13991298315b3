//! `ruler:` section and its flags (Cortex's names).

use model::GoDuration;
use serde::{Deserialize, Serialize};
use server::config::Flag;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub evaluation_interval: GoDuration,
    pub poll_interval: GoDuration,
    /// Evaluations run this far in the past, so late samples are seen.
    pub evaluation_delay_duration: GoDuration,
    /// Comma-separated Alertmanager base URLs (`/api/v2/alerts` is appended).
    pub alertmanager_url: String,
    pub external_url: String,
    pub resend_delay: GoDuration,
    pub notification_queue_capacity: usize,
    pub notification_timeout: GoDuration,
    /// 0 = no limit.
    pub max_rule_groups_per_tenant: usize,
    /// 0 = no limit.
    pub max_rules_per_rule_group: usize,
    /// Largest rule-group body the API accepts.
    pub max_group_bytes: usize,
    pub storage: StorageConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `filesystem` (default) or `local`.
    pub backend: String,
    pub filesystem_dir: String,
    pub local_directory: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            evaluation_interval: GoDuration::secs(60),
            poll_interval: GoDuration::secs(60),
            evaluation_delay_duration: GoDuration::secs(0),
            alertmanager_url: String::new(),
            external_url: String::new(),
            resend_delay: GoDuration::secs(60),
            notification_queue_capacity: 10_000,
            notification_timeout: GoDuration::secs(10),
            max_rule_groups_per_tenant: 0,
            max_rules_per_rule_group: 0,
            max_group_bytes: 1 << 20,
            storage: StorageConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "filesystem".into(),
            filesystem_dir: "./data/rules".into(),
            local_directory: String::new(),
        }
    }
}

pub const FLAGS: &[Flag] = &[
    Flag::new(
        "ruler.evaluation-interval",
        "evaluation_interval",
        "How frequently to evaluate rule groups that set no interval.",
    ),
    Flag::new(
        "ruler.poll-interval",
        "poll_interval",
        "How frequently to poll for rule changes.",
    ),
    Flag::new(
        "ruler.evaluation-delay-duration",
        "evaluation_delay_duration",
        "Duration by which to delay the evaluation of rules to ensure the underlying metrics have been pushed.",
    ),
    Flag::new(
        "ruler.alertmanager-url",
        "alertmanager_url",
        "Comma-separated list of URL(s) of the Alertmanager(s) to send notifications to.",
    ),
    Flag::new(
        "ruler.external.url",
        "external_url",
        "URL of alerts return path (generator URLs).",
    ),
    Flag::new(
        "ruler.resend-delay",
        "resend_delay",
        "Minimum amount of time to wait before resending an alert to Alertmanager.",
    ),
    Flag::new(
        "ruler.notification-queue-capacity",
        "notification_queue_capacity",
        "Capacity of the queue for notifications to be sent to the Alertmanager.",
    ),
    Flag::new(
        "ruler.notification-timeout",
        "notification_timeout",
        "HTTP timeout duration when sending notifications to the Alertmanager.",
    ),
    Flag::new(
        "ruler.max-rule-groups-per-tenant",
        "max_rule_groups_per_tenant",
        "Maximum number of rule groups per-tenant. 0 to disable.",
    ),
    Flag::new(
        "ruler.max-rules-per-rule-group",
        "max_rules_per_rule_group",
        "Maximum number of rules per rule group per-tenant. 0 to disable.",
    ),
    Flag::new(
        "ruler-storage.backend",
        "storage.backend",
        "Backend storage to use: filesystem (the default, writable through the API) or local (read-only rule files).",
    ),
    Flag::new(
        "ruler-storage.filesystem.dir",
        "storage.filesystem_dir",
        "Local filesystem storage directory.",
    ),
    Flag::new(
        "ruler-storage.local.directory",
        "storage.local_directory",
        "Directory to scan for rules: <dir>/<tenant>/<namespace>.yaml.",
    ),
];
