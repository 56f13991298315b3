//! Ring status page (spec §2.5): `GET /ring` and `/ingester/ring` as an HTML table or JSON,
//! `POST forget=<id>` to remove a dead instance, then redirect back (POST-redirect-GET).

use std::fmt::Write as _;

use axum::extract::{Form, OriginalUri, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::ring::{state_name, Ring};
use crate::{heartbeat_fresh, now_secs, state_of};

pub(crate) fn routes(ring: Ring) -> Router {
    Router::new()
        .route("/ring", get(status_page).post(forget))
        .route("/ingester/ring", get(status_page).post(forget))
        .with_state(ring)
}

/// One row of the page, and one element of `shards` in the JSON form (Cortex `ingesterDesc`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardStatus {
    pub id: String,
    /// `ACTIVE`, `LEAVING`, … or `UNHEALTHY` when the heartbeat is older than the timeout.
    pub state: String,
    pub address: String,
    /// Last heartbeat, Go `time.Time.String()` style (`2006-01-02 15:04:05 +0000 UTC`).
    pub timestamp: String,
    /// Registration time in the same style; empty when unknown.
    pub registered_timestamp: String,
    pub tokens: Vec<u32>,
    pub zone: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub shards: Vec<ShardStatus>,
    /// RFC 3339 time of the response.
    pub now: String,
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    tokens: Option<String>,
}

#[derive(Deserialize)]
struct ForgetForm {
    #[serde(default)]
    forget: String,
}

fn go_time(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

async fn status_page(State(ring): State<Ring>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let snap = ring.snapshot();
    let now = now_secs();
    let timeout = ring.inner.cfg.heartbeat_timeout.0;
    let ownership = snap.ownership();
    let mut rows = Vec::with_capacity(snap.instances.len());
    for (i, inst) in snap.instances.iter().enumerate() {
        let d = &snap.desc.ingesters[inst.id.as_ref()];
        let state = if heartbeat_fresh(d, timeout, now) {
            state_name(state_of(d)).to_string()
        } else {
            "UNHEALTHY".to_string()
        };
        rows.push((
            ShardStatus {
                id: inst.id.to_string(),
                state,
                address: d.addr.clone(),
                timestamp: go_time(d.timestamp),
                registered_timestamp: if d.registered_timestamp == 0 {
                    String::new()
                } else {
                    go_time(d.registered_timestamp)
                },
                tokens: d.tokens.clone(),
                zone: d.zone.clone(),
            },
            ownership[i],
        ));
    }

    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        return Json(StatusResponse {
            shards: rows.into_iter().map(|(s, _)| s).collect(),
            now,
        })
        .into_response();
    }
    let show_tokens = q.tokens.as_deref() == Some("true");
    Html(render_html(ring.name(), &rows, show_tokens)).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn render_html(name: &str, rows: &[(ShardStatus, f64)], show_tokens: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\"><title>Cortex Ring Status</title></head><body>\
         <h1>Cortex Ring Status</h1><p>Ring: {} &mdash; current time: {}</p>\
         <form action=\"\" method=\"POST\"><table width=\"100%\" border=\"1\"><thead><tr>\
         <th>Instance ID</th><th>Availability Zone</th><th>State</th><th>Address</th>\
         <th>Registered At</th><th>Last Heartbeat</th><th>Tokens</th><th>Ownership</th><th>Actions</th>\
         </tr></thead><tbody>",
        escape(name),
        go_time(now_secs())
    );
    for (s, owned) in rows {
        let _ = write!(
            out,
            "<tr><td>{id}</td><td>{zone}</td><td>{state}</td><td>{addr}</td><td>{reg}</td><td>{hb}</td>\
             <td>{ntok}</td><td>{pct:.1}%</td>\
             <td><button name=\"forget\" value=\"{id}\" type=\"submit\">Forget</button></td></tr>",
            id = escape(&s.id),
            zone = escape(&s.zone),
            state = escape(&s.state),
            addr = escape(&s.address),
            reg = escape(&s.registered_timestamp),
            hb = escape(&s.timestamp),
            ntok = s.tokens.len(),
            pct = owned * 100.0,
        );
    }
    out.push_str("</tbody></table></form>");
    if show_tokens {
        for (s, _) in rows {
            let _ = write!(out, "<h2>Instance: {}</h2><p>Tokens:<br/>", escape(&s.id));
            for t in &s.tokens {
                let _ = write!(out, "{t} ");
            }
            out.push_str("</p>");
        }
    } else {
        out.push_str("<a href=\"?tokens=true\">Show Tokens</a>");
    }
    out.push_str("</body></html>\n");
    out
}

async fn forget(State(ring): State<Ring>, OriginalUri(uri): OriginalUri, Form(form): Form<ForgetForm>) -> Response {
    if form.forget.is_empty() {
        return (StatusCode::BAD_REQUEST, "missing form field forget=<instance ID>\n").into_response();
    }
    if let Err(e) = ring.forget(&form.forget).await {
        tracing::error!(instance = %form.forget, error = %e, "forgetting instance failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
    }
    tracing::info!(instance = %form.forget, "instance forgotten from the ring");
    // Back to the page that was posted from (it may be mounted under a prefix).
    Redirect::to(uri.path()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{InMemoryKv, KvClient};
    use crate::{cas_desc, Desc, InstanceDesc, InstanceState, RingConfig};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn test_ring() -> (Ring, std::sync::Arc<InMemoryKv>) {
        let kv = InMemoryKv::new();
        let now = now_secs();
        let mut desc = Desc::default();
        desc.ingesters.insert(
            "ing-1".into(),
            InstanceDesc {
                addr: "10.0.0.1:9095".into(),
                timestamp: now,
                state: InstanceState::Active as i32,
                tokens: vec![0x4000_0000],
                zone: "zone-a".into(),
                registered_timestamp: 1_600_000_000,
            },
        );
        desc.ingesters.insert(
            "ing-<2>".into(),
            InstanceDesc {
                addr: "10.0.0.2:9095".into(),
                timestamp: now - 3600,
                state: InstanceState::Active as i32,
                tokens: vec![0x8000_0000],
                zone: String::new(),
                registered_timestamp: 0,
            },
        );
        cas_desc(kv.as_ref(), "ring", |_| Ok(Some(desc.clone()))).await.unwrap();
        let ring = Ring::start(
            RingConfig::default(),
            kv.clone(),
            "ring",
            "ingester",
            &server::Metrics::new(),
        )
        .await
        .unwrap();
        (ring, kv)
    }

    async fn call(ring: &Ring, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = ring.http_routes().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn html_page_lists_instances_with_derived_health() {
        let (ring, _kv) = test_ring().await;
        for path in ["/ring", "/ingester/ring"] {
            let (status, headers, body) = call(&ring, Request::get(path).body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::OK);
            assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
            assert!(
                body.contains("<td>ing-1</td><td>zone-a</td><td>ACTIVE</td><td>10.0.0.1:9095</td>"),
                "{body}"
            );
            assert!(body.contains("<td>2020-09-13 12:26:40 +0000 UTC</td>"), "{body}");
            // Stale heartbeat → UNHEALTHY; the ID is escaped.
            assert!(
                body.contains("<td>ing-&lt;2&gt;</td><td></td><td>UNHEALTHY</td>"),
                "{body}"
            );
            // ing-1 owns (0x8000_0000, 2^32) ∪ [0, 0x4000_0000]: 75%.
            assert!(body.contains("<td>1</td><td>75.0%</td>"), "{body}");
            assert!(!body.contains("1073741824"), "tokens only with ?tokens=true");
        }
        let (_, _, body) = call(&ring, Request::get("/ring?tokens=true").body(Body::empty()).unwrap()).await;
        assert!(body.contains("1073741824"), "{body}");
    }

    #[tokio::test]
    async fn json_with_accept_header() {
        let (ring, _kv) = test_ring().await;
        let req = Request::get("/ring")
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = call(&ring, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let shards = v["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0]["id"], "ing-1");
        assert_eq!(shards[0]["state"], "ACTIVE");
        assert_eq!(shards[0]["address"], "10.0.0.1:9095");
        assert_eq!(shards[0]["registered_timestamp"], "2020-09-13 12:26:40 +0000 UTC");
        assert_eq!(shards[0]["tokens"], serde_json::json!([1073741824]));
        assert_eq!(shards[0]["zone"], "zone-a");
        assert!(shards[0]["timestamp"].as_str().unwrap().ends_with(" +0000 UTC"));
        assert_eq!(shards[1]["state"], "UNHEALTHY");
        assert_eq!(shards[1]["registered_timestamp"], "");
        assert!(v["now"].as_str().unwrap().ends_with('Z'));
    }

    #[tokio::test]
    async fn forget_removes_the_instance_and_redirects() {
        let (ring, kv) = test_ring().await;
        let req = Request::post("/ingester/ring")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("forget=ing-%3C2%3E"))
            .unwrap();
        let (status, headers, _) = call(&ring, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/ingester/ring");
        let stored = crate::decode_desc(&kv.get("ring").await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.ingesters.keys().collect::<Vec<_>>(), vec!["ing-1"]);
        assert!(
            ring.wait_until(Duration::from_secs(5), |d| d.ingesters.len() == 1)
                .await
        );
        // Forgetting an unknown instance changes nothing and still redirects.
        let version = kv.version();
        let req = Request::post("/ring")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("forget=nobody"))
            .unwrap();
        assert_eq!(call(&ring, req).await.0, StatusCode::SEE_OTHER);
        assert_eq!(kv.version(), version);
        let req = Request::post("/ring")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("other=1"))
            .unwrap();
        assert_eq!(call(&ring, req).await.0, StatusCode::BAD_REQUEST);
    }
}
