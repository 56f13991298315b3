//! Alerts to Alertmanager over its v2 API (`POST <url>/api/v2/alerts`), with the tenant
//! in `X-Scope-OrgID`. One bounded queue per process (`-ruler.notification-queue-capacity`
//! alerts); when it is full the newest alerts are dropped and counted, so an Alertmanager
//! that is down never holds up evaluation. Resending is the rules' job (resend delay).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::metrics::RulerMetrics;
use crate::rules::Alert;

/// One alert as Alertmanager's v2 API takes it (the alert-generator spec's format).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Prometheus's generator URL: the expression on the external URL's graph page.
pub fn generator_url(external_url: &str, expr: &str) -> String {
    let q: String = form_urlencoded_component(expr);
    format!("{}/graph?g0.expr={q}&g0.tab=1", external_url.trim_end_matches('/'))
}

fn form_urlencoded_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl PostableAlert {
    pub fn from_alert(a: &Alert, generator_url: &str) -> Self {
        PostableAlert {
            labels: a.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339_millis(a.fired_at.unwrap_or(a.active_at)),
            ends_at: rfc3339_millis(a.resolved_at.unwrap_or(a.valid_until)),
            generator_url: generator_url.to_string(),
        }
    }
}

struct Queue {
    items: VecDeque<(String, PostableAlert)>,
}

/// The queue and the task draining it.
pub struct Notifier {
    queue: Mutex<Queue>,
    wake: Notify,
    capacity: usize,
    urls: Vec<String>,
    client: reqwest::Client,
    metrics: RulerMetrics,
}

/// Most alerts one POST carries (Prometheus's `maxBatchSize`).
const MAX_BATCH: usize = 64;

impl Notifier {
    pub fn new(urls: &str, capacity: usize, timeout: Duration, metrics: RulerMetrics) -> Arc<Self> {
        let urls = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(|u| format!("{u}/api/v2/alerts"))
            .collect();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Notifier {
            queue: Mutex::new(Queue { items: VecDeque::new() }),
            wake: Notify::new(),
            capacity: capacity.max(1),
            urls,
            client,
            metrics,
        })
    }

    pub fn has_alertmanagers(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Queues `alerts` of `tenant`; what does not fit is dropped and counted.
    pub fn send(&self, tenant: &str, alerts: Vec<PostableAlert>) {
        if alerts.is_empty() || self.urls.is_empty() {
            return;
        }
        let mut q = self.queue.lock();
        for a in alerts {
            if q.items.len() >= self.capacity {
                self.metrics.notifications_dropped.inc();
                continue;
            }
            q.items.push_back((tenant.to_string(), a));
        }
        self.metrics.notifications_queue_length.set(q.items.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    /// Takes the next batch: up to [`MAX_BATCH`] alerts of the first queued tenant.
    fn next_batch(&self) -> Option<(String, Vec<PostableAlert>)> {
        let mut q = self.queue.lock();
        let tenant = q.items.front()?.0.clone();
        let mut batch = vec![];
        let mut rest = VecDeque::with_capacity(q.items.len());
        while let Some((t, a)) = q.items.pop_front() {
            if t == tenant && batch.len() < MAX_BATCH {
                batch.push(a);
            } else {
                rest.push_back((t, a));
            }
        }
        q.items = rest;
        self.metrics.notifications_queue_length.set(q.items.len() as i64);
        Some((tenant, batch))
    }

    /// Drains the queue until the process stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            while let Some((tenant, batch)) = self.next_batch() {
                let body = match serde_json::to_vec(&batch) {
                    Ok(b) => b,
                    Err(_) => continue,
                };
                let mut delivered = false;
                for url in &self.urls {
                    let r = self
                        .client
                        .post(url)
                        .header("Content-Type", "application/json")
                        .header(model::tenant::ORG_ID_HEADER, tenant.as_str())
                        .body(body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status().is_success() => delivered = true,
                        Ok(resp) => {
                            self.metrics.notifications_errors.inc();
                            tracing::warn!(url, tenant, status = %resp.status(), "Alertmanager refused alerts");
                        }
                        Err(e) => {
                            self.metrics.notifications_errors.inc();
                            tracing::warn!(url, tenant, error = %e, "sending alerts to Alertmanager failed");
                        }
                    }
                }
                if delivered {
                    self.metrics.notifications_sent.inc_by(batch.len() as u64);
                } else {
                    self.metrics.notifications_dropped.inc_by(batch.len() as u64);
                }
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(n: &str) -> PostableAlert {
        PostableAlert {
            labels: [("alertname".to_string(), n.to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: rfc3339_millis(1_500),
            ends_at: rfc3339_millis(61_500),
            generator_url: generator_url("http://r:9009/", "up == 0"),
        }
    }

    #[test]
    fn payload_format() {
        let j = serde_json::to_string(&alert("A")).unwrap();
        assert_eq!(
            j,
            r#"{"labels":{"alertname":"A"},"startsAt":"1970-01-01T00:00:01.500Z","endsAt":"1970-01-01T00:01:01.500Z","generatorURL":"http://r:9009/graph?g0.expr=up+%3D%3D+0&g0.tab=1"}"#
        );
    }

    #[test]
    fn full_queue_drops_and_counts_and_batches_per_tenant() {
        let m = RulerMetrics::default();
        let n = Notifier::new("http://127.0.0.1:1", 3, Duration::from_secs(1), m.clone());
        n.send("t1", vec![alert("a"), alert("b")]);
        n.send("t2", vec![alert("c"), alert("d")]);
        assert_eq!(m.notifications_dropped.get(), 1);
        let (t, b) = n.next_batch().unwrap();
        assert_eq!((t.as_str(), b.len()), ("t1", 2));
        let (t, b) = n.next_batch().unwrap();
        assert_eq!((t.as_str(), b.len()), ("t2", 1));
        assert!(n.next_batch().is_none());
    }
}
