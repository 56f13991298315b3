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
