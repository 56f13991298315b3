//! The rules API (Cortex's config paths under `/api/v1/rules` and `/api/prom/rules`)
//! and Prometheus's `GET <prefix>/api/v1/rules` and `<prefix>/api/v1/alerts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use server::{HttpError, Tenant};

use crate::manager::{GroupState, RuleKind, Ruler};
use crate::rulefmt::{self, RuleGroup};
use crate::rules::Alert;
use crate::RulerError;

pub fn routes(ruler: Arc<Ruler>) -> Router {
    let mut r = Router::new();
    for prefix in ["/api/v1/rules", "/api/prom/rules"] {
        r = r
            .route(prefix, get(list_rules))
            .route(
                &format!("{prefix}/{{namespace}}"),
                get(get_namespace).post(post_group).delete(delete_namespace),
            )
            .route(
                &format!("{prefix}/{{namespace}}/{{group}}"),
                get(get_group).delete(delete_group),
            );
    }
    for prefix in ["/prometheus", "/api/prom"] {
        r = r
            .route(&format!("{prefix}/api/v1/rules"), get(prometheus_rules))
            .route(&format!("{prefix}/api/v1/alerts"), get(prometheus_alerts));
    }
    r.with_state(ruler)
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<Response, HttpError> {
    let text = serde_saphyr::to_string(v).map_err(|e| HttpError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({"status": "success", "data": null}))).into_response()
}

async fn list_rules(State(r): State<Arc<Ruler>>, Tenant(t): Tenant) -> Result<Response, HttpError> {
    let rules = r.store().tenant_rules(&t).await?;
    if rules.is_empty() {
        return Err(RulerError::NoRules.into());
    }
    yaml(&rules)
}

async fn get_namespace(
    State(r): State<Arc<Ruler>>,
    Tenant(t): Tenant,
    Path(ns): Path<String>,
) -> Result<Response, HttpError> {
    let mut rules = r.store().tenant_rules(&t).await?;
    let groups = rules.remove(&ns).ok_or(RulerError::NoRules)?;
    yaml(&BTreeMap::from([(ns, groups)]))
}

async fn get_group(
    State(r): State<Arc<Ruler>>,
    Tenant(t): Tenant,
    Path((ns, g)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    let rules = r.store().tenant_rules(&t).await?;
    let group = rules
        .get(&ns)
        .and_then(|gs| gs.iter().find(|x| x.name == g))
        .ok_or_else(|| RulerError::NotFound("group does not exist".into()))?;
    yaml(group)
}

fn check_namespace(ns: &str) -> Result<(), RulerError> {
    if ns.is_empty() || ns.contains('/') {
        return Err(RulerError::BadRequest(format!(
            "invalid namespace {ns:?}: must be non-empty and contain no '/'"
        )));
    }
    Ok(())
}

async fn post_group(
    State(r): State<Arc<Ruler>>,
    Tenant(t): Tenant,
    Path(ns): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    check_namespace(&ns)?;
    let cfg = r.config();
    if body.len() > cfg.max_group_bytes {
        return Err(HttpError::new(
            413,
            format!(
                "rule group of {} bytes is over the limit of {} bytes",
                body.len(),
                cfg.max_group_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| RulerError::BadRequest("body is not UTF-8".into()))?;
    let group: RuleGroup = rulefmt::parse_group(text).map_err(RulerError::from)?;
    if cfg.max_rules_per_rule_group > 0 && group.rules.len() > cfg.max_rules_per_rule_group {
        return Err(RulerError::Limit(format!(
            "per-user rules per rule group limit (limit: {} actual: {}) exceeded",
            cfg.max_rules_per_rule_group,
            group.rules.len()
        ))
        .into());
    }
    if cfg.max_rule_groups_per_tenant > 0 {
        let existing = r.store().tenant_rules(&t).await?;
        let replaces = existing
            .get(&ns)
            .is_some_and(|gs| gs.iter().any(|g| g.name == group.name));
        let count: usize = existing.values().map(Vec::len).sum();
        if !replaces && count + 1 > cfg.max_rule_groups_per_tenant {
            return Err(RulerError::Limit(format!(
                "per-user rule groups limit (limit: {} actual: {}) exceeded",
                cfg.max_rule_groups_per_tenant,
                count + 1
            ))
            .into());
        }
    }
    r.store().put_group(&t, &ns, &group).await?;
    r.request_sync();
    Ok(accepted())
}

async fn delete_group(
    State(r): State<Arc<Ruler>>,
    Tenant(t): Tenant,
    Path((ns, g)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    if !r.store().delete_group(&t, &ns, &g).await? {
        return Err(RulerError::NotFound("group does not exist".into()).into());
    }
    r.request_sync();
    Ok(accepted())
}

async fn delete_namespace(
    State(r): State<Arc<Ruler>>,
    Tenant(t): Tenant,
    Path(ns): Path<String>,
) -> Result<Response, HttpError> {
    if !r.store().delete_namespace(&t, &ns).await? {
        return Err(RulerError::NotFound("namespace does not exist".into()).into());
    }
    r.request_sync();
    Ok(accepted())
}

/// Go's `time.Time` in JSON (RFC 3339 with nanoseconds, trailing zeros cut); the zero
/// time when never.
fn go_time(ms: Option<i64>) -> String {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// Prometheus's alert `value`: `strconv.FormatFloat(v, 'e', -1, 64)`.
fn value_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let e: i32 = e.parse().unwrap_or(0);
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        None => s,
    }
}

fn alert_json(a: &Alert) -> Value {
    let labels: BTreeMap<&str, &str> = a.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    json!({
        "labels": labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": go_time(Some(a.active_at)),
        "value": value_e(a.value),
    })
}

fn group_json(g: &GroupState) -> Value {
    let rules: Vec<Value> = g
        .rules
        .iter()
        .map(|r| {
            let common = |mut v: Value| {
                let o = v.as_object_mut().expect("object");
                o.insert("health".into(), json!(r.health));
                if !r.last_error.is_empty() {
                    o.insert("lastError".into(), json!(r.last_error));
                }
                o.insert("evaluationTime".into(), json!(r.evaluation_seconds));
                o.insert("lastEvaluation".into(), json!(go_time(r.last_evaluation_ms)));
                v
            };
            match &r.kind {
                RuleKind::Alerting(a) => common(json!({
                    "state": a.state().as_str(),
                    "name": a.name,
                    "query": r.def.expr,
                    "duration": a.hold_ms as f64 / 1000.0,
                    "keepFiringFor": a.keep_firing_for_ms as f64 / 1000.0,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "alerts": a.active_alerts().into_iter().map(alert_json).collect::<Vec<_>>(),
                    "type": "alerting",
                })),
                RuleKind::Recording(rec) => common(json!({
                    "name": rec.name,
                    "query": r.def.expr,
                    "labels": rec.labels,
                    "type": "recording",
                })),
            }
        })
        .collect();
    json!({
        "name": g.def.name,
        "file": g.namespace,
        "rules": rules,
        "interval": g.interval.as_secs_f64(),
        "limit": g.def.limit,
        "evaluationTime": g.evaluation_seconds,
        "lastEvaluation": go_time(g.last_evaluation_ms),
    })
}

/// Prometheus's `GET /api/v1/rules[?type=alert|record]`: any other `type` is a 400, as in Prometheus.
async fn prometheus_rules(
    State(r): State<Arc<Ruler>>,
    Tenant(t): Tenant,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let only = match q.get("type").map(String::as_str) {
        None | Some("") => None,
        Some("alert") => Some("alerting"),
        Some("record") => Some("recording"),
        Some(other) => {
            let body =
                json!({"status": "error", "errorType": "bad_data", "error": format!("not supported value {other:?}")});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let mut groups: Vec<Value> = r.tenant_groups(&t).iter().map(|g| group_json(&g.lock())).collect();
    if let Some(kind) = only {
        for g in &mut groups {
            if let Some(rules) = g["rules"].as_array_mut() {
                rules.retain(|rule| rule["type"] == kind);
            }
        }
        groups.retain(|g| g["rules"].as_array().is_some_and(|r| !r.is_empty()));
    }
    Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

async fn prometheus_alerts(State(r): State<Arc<Ruler>>, Tenant(t): Tenant) -> Json<Value> {
    let mut alerts = vec![];
    for g in r.tenant_groups(&t) {
        let g = g.lock();
        for rule in &g.rules {
            if let RuleKind::Alerting(a) = &rule.kind {
                alerts.extend(a.active_alerts().into_iter().map(alert_json));
            }
        }
    }
    Json(json!({"status": "success", "data": {"alerts": alerts}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_value_and_time_spelling() {
        assert_eq!(value_e(1.0), "1e+00");
        assert_eq!(value_e(1234.5), "1.2345e+03");
        assert_eq!(value_e(0.001), "1e-03");
        assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_time(Some(1_500)), "1970-01-01T00:00:01.500Z");
    }
}
