//! The results cache (spec §7.4 item 4). Per key — tenant, query, step, the step grid's offset
//! and the split interval the request starts in — the cache holds extents: time ranges already
//! answered, each with its response. A request is answered from the extents it overlaps plus
//! downstream requests for only the missing sub-ranges; the new pieces are merged into the
//! extents and written back. Nothing newer than now − `-frontend.max-cache-freshness` is ever
//! stored (recent data may still change), responses marked `Cache-Control: no-store` are not
//! stored, and an undecodable value is a miss.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use proto::frontend::{AnyResponse, CachedResponse, Extent, PrometheusResponse};
use storage::cache::Cache;

use super::Handler;
use crate::error::FrontendError;
use crate::request::RangeRequest;
use crate::response;

const RESPONSE_TYPE_URL: &str = "type.googleapis.com/queryrange.PrometheusResponse";

pub struct ResultsCache {
    pub cache: Arc<dyn Cache>,
    pub next: Arc<dyn Handler>,
    /// Extents are grouped per interval (the split interval, 24h by default).
    pub interval_ms: i64,
    pub max_freshness_ms: i64,
    pub snappy: bool,
    /// The clock (tests move it).
    pub now_ms: fn() -> i64,
}

/// The full key; stored hashed (memcached keys are short), with the full key inside the value
/// to tell collisions apart.
pub fn cache_key(tenant: &str, req: &RangeRequest, interval_ms: i64) -> String {
    format!(
        "{tenant}:{}:{}:{}:{}",
        req.query,
        req.step,
        req.start.div_euclid(interval_ms.max(1)),
        // Requests on different step grids never share points.
        req.start.rem_euclid(req.step)
    )
}

fn hashed(key: &str) -> String {
    format!("fe:{:016x}", xxhash_rust::xxh64::xxh64(key.as_bytes(), 0))
}

/// A cached extent, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Cached {
    start: i64,
    end: i64,
    response: PrometheusResponse,
}

/// Which sub-ranges of `req` must be fetched, and the cached parts it is answered from. Both
/// on `req`'s step grid: a missing range starts one step after an extent ends.
/// Cached parts come with the first point they cover.
fn partition(req: &RangeRequest, extents: &[Cached]) -> (Vec<RangeRequest>, Vec<(i64, PrometheusResponse)>) {
    let last = req.last_point();
    let mut missing = Vec::new();
    let mut cached = Vec::new();
    let mut next = req.start;
    for e in extents {
        if next > last {
            break;
        }
        if e.end < next || e.start > last {
            continue;
        }
        if next < e.start {
            missing.push(req.with_start_end(next, e.start - req.step));
        }
        let from = next.max(e.start);
        cached.push((from, response::extract(from, e.end.min(last), &e.response)));
        next = e.end + req.step;
    }
    if next <= last {
        missing.push(req.with_start_end(next, last));
    }
    (missing, cached)
}

/// Sorted, with extents that touch or overlap on the step grid merged into one.
fn merge_extents(mut extents: Vec<Cached>, step: i64) -> Vec<Cached> {
    extents.sort_by_key(|e| e.start);
    let mut out: Vec<Cached> = Vec::with_capacity(extents.len());
    for e in extents {
        match out.last_mut() {
            Some(acc) if e.start <= acc.end + step => {
                if e.end > acc.end {
                    let joined = response::merge(vec![std::mem::take(&mut acc.response), e.response]);
                    acc.response = joined;
                    acc.end = e.end;
                }
            }
            _ => out.push(e),
        }
    }
    out
}

fn no_store(r: &PrometheusResponse) -> bool {
    r.headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("cache-control") && h.values.iter().any(|v| v.contains("no-store")))
}

impl ResultsCache {
    fn encode(&self, key: &str, extents: &[Cached]) -> Bytes {
        let value = CachedResponse {
            key: key.to_string(),
            extents: extents
                .iter()
                .map(|e| Extent {
                    start: e.start,
                    end: e.end,
                    trace_id: String::new(),
                    response: Some(AnyResponse {
                        type_url: RESPONSE_TYPE_URL.into(),
                        value: e.response.encode_to_vec(),
                    }),
                })
                .collect(),
        }
        .encode_to_vec();
        if self.snappy {
            // Compressing a buffer we just built cannot fail short of a size over 4 GiB.
            Bytes::from(snap::raw::Encoder::new().compress_vec(&value).unwrap_or_default())
        } else {
            Bytes::from(value)
        }
    }

    /// The extents stored under `key`; anything unexpected — another key hashed alike,
    /// garbage, an extent that makes no sense — is a miss.
    fn decode(&self, key: &str, raw: &[u8]) -> Option<Vec<Cached>> {
        let plain;
        let buf = if self.snappy {
            plain = snap::raw::Decoder::new().decompress_vec(raw).ok()?;
            plain.as_slice()
        } else {
            raw
        };
        let v = CachedResponse::decode(buf).ok()?;
        if v.key != key {
            return None;
        }
        let mut out = Vec::with_capacity(v.extents.len());
        for e in v.extents {
            let any = e.response?;
            if any.type_url != RESPONSE_TYPE_URL || e.start > e.end {
                return None;
            }
            let response = PrometheusResponse::decode(any.value.as_slice()).ok()?;
            if response.status != response::STATUS_SUCCESS {
                return None;
            }
            out.push(Cached {
                start: e.start,
                end: e.end,
                response,
            });
        }
        out.sort_by_key(|e| e.start);
        Some(out)
    }
}

#[async_trait]
impl Handler for ResultsCache {
    async fn handle(&self, tenant: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
        let max_cache_time = (self.now_ms)() - self.max_freshness_ms;
        if req.no_store || req.start > max_cache_time {
            return self.next.handle(tenant, req).await;
        }
        let key = cache_key(tenant, &req, self.interval_ms);
        let hk = hashed(&key);
        let fetched = self.cache.fetch(vec![hk.clone()]).await;
        let extents = fetched
            .found
            .first()
            .and_then(|(_, raw)| {
                let d = self.decode(&key, raw);
                if d.is_none() {
                    tracing::debug!(key, "undecodable results cache entry; treated as a miss");
                }
                d
            })
            .unwrap_or_default();
        let (missing, cached) = partition(&req, &extents);
        let fetched: Vec<(RangeRequest, PrometheusResponse)> =
            futures::future::try_join_all(missing.into_iter().map(|m| async move {
                let r = self.next.handle(tenant, m.clone()).await?;
                Ok::<_, FrontendError>((m, r))
            }))
            .await?;
        if fetched.is_empty() {
            return Ok(response::merge(cached.into_iter().map(|(_, r)| r).collect()));
        }
        // New extents, cut to what may be cached.
        let mut updated = extents;
        let mut changed = false;
        for (m, r) in &fetched {
            if no_store(r) || m.start > max_cache_time {
                continue;
            }
            let end = m.start + (max_cache_time.min(m.last_point()) - m.start) / m.step * m.step;
            let mut resp = response::extract(m.start, end, r);
            resp.headers.clear();
            updated.push(Cached {
                start: m.start,
                end,
                response: resp,
            });
            changed = true;
        }
        let mut parts = cached;
        parts.extend(fetched.into_iter().map(|(m, r)| (m.start, r)));
        // `merge` wants the disjoint sub-ranges in time order.
        parts.sort_by_key(|(start, _)| *start);
        let mut answer = response::merge(parts.into_iter().map(|(_, r)| r).collect());
        answer.headers.retain(|h| !h.name.eq_ignore_ascii_case("cache-control"));
        if changed {
            let merged = merge_extents(updated, req.step);
            self.cache.store(vec![(hk, self.encode(&key, &merged))]).await;
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use proto::frontend::PrometheusResponseHeader;
    use storage::cache::{FifoCache, FifoConfig};

    use super::*;
    use crate::middleware::test_support::{evaluate, req, Recorder};

    const DAY: i64 = 86_400_000;
    const MIN: i64 = 60_000;

    /// "Now" for these tests: day 10, 12:00.
    fn now() -> i64 {
        10 * DAY + 12 * 60 * MIN
    }

    fn setup() -> (ResultsCache, Arc<Recorder>, Arc<FifoCache>) {
        let rec = Arc::new(Recorder::default());
        let cache = Arc::new(FifoCache::new(FifoConfig::default()));
        let rc = ResultsCache {
            cache: cache.clone(),
            next: rec.clone(),
            interval_ms: DAY,
            max_freshness_ms: MIN,
            snappy: true,
            now_ms: now,
        };
        (rc, rec, cache)
    }

    #[test]
    fn key_has_tenant_query_step_interval_and_grid() {
        let r = req(3 * DAY + 5, 3 * DAY + 500_000, 60_000);
        assert_eq!(cache_key("t1", &r, DAY), "t1:up:60000:3:5");
        // Same day, same grid: same key; another tenant or grid: another key.
        assert_eq!(
            cache_key("t1", &r.with_start_end(3 * DAY + 60_005, 4 * DAY), DAY),
            "t1:up:60000:3:5"
        );
        assert_ne!(cache_key("t2", &r, DAY), cache_key("t1", &r, DAY));
        assert_ne!(
            cache_key("t1", &r.with_start_end(3 * DAY + 6, 4 * DAY), DAY),
            cache_key("t1", &r, DAY)
        );
    }

    #[test]
    fn extents_merge_when_touching_on_the_grid() {
        let e = |s: i64, e: i64| Cached {
            start: s,
            end: e,
            response: evaluate(&req(s, e, 10)),
        };
        let m = merge_extents(vec![e(40, 60), e(0, 20), e(30, 30), e(100, 120)], 10);
        let got: Vec<(i64, i64)> = m.iter().map(|c| (c.start, c.end)).collect();
        // 0-20 and 30 touch (one step apart), 30 and 40-60 too; 100 is separate.
        assert_eq!(got, vec![(0, 60), (100, 120)]);
        assert_eq!(m[0].response, evaluate(&req(0, 60, 10)));
        // An extent inside another changes nothing.
        let m = merge_extents(vec![e(0, 100), e(20, 30)], 10);
        assert_eq!((m.len(), m[0].end), (1, 100));
    }

    #[test]
    fn partition_asks_only_for_the_gaps() {
        let ext = |s: i64, e: i64| Cached {
            start: s,
            end: e,
            response: evaluate(&req(s, e, 10)),
        };
        let (missing, cached) = partition(&req(0, 200, 10), &[ext(50, 100), ext(150, 160)]);
        let m: Vec<(i64, i64)> = missing.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(m, vec![(0, 40), (110, 140), (170, 200)]);
        assert_eq!(cached.len(), 2);
        // Fully covered: nothing to fetch.
        let (missing, _) = partition(&req(60, 90, 10), &[ext(50, 100)]);
        assert!(missing.is_empty());
    }

    #[tokio::test]
    async fn second_request_fetches_only_the_new_minutes() {
        let (rc, rec, _) = setup();
        let day = 10 * DAY;
        // 00:00 → 11:00 today: all older than now − 1m, cached whole.
        let r1 = req(day, day + 11 * 60 * MIN, MIN);
        assert_eq!(rc.handle("t", r1.clone()).await.unwrap(), evaluate(&r1));
        // The dashboard refreshes to 11:30: only 11:01 → 11:30 is computed.
        let r2 = req(day, day + 11 * 60 * MIN + 30 * MIN, MIN);
        assert_eq!(rc.handle("t", r2.clone()).await.unwrap(), evaluate(&r2));
        assert_eq!(
            rec.ranges(),
            vec![(r1.start, r1.end), (day + 11 * 60 * MIN + MIN, r2.end)]
        );
        // Again: nothing left to compute.
        assert_eq!(rc.handle("t", r2.clone()).await.unwrap(), evaluate(&r2));
        assert_eq!(rec.calls.lock().len(), 2);
        // Another tenant shares nothing.
        rc.handle("other", r2.clone()).await.unwrap();
        assert_eq!(rec.calls.lock().len(), 3);
    }

    #[tokio::test]
    async fn nothing_newer_than_max_freshness_is_cached() {
        let (rc, rec, _) = setup();
        // 11:00 → 12:00 (now): the last minute must be recomputed on every request.
        let r = req(10 * DAY + 11 * 60 * MIN, now(), MIN);
        assert_eq!(rc.handle("t", r.clone()).await.unwrap(), evaluate(&r));
        assert_eq!(rc.handle("t", r.clone()).await.unwrap(), evaluate(&r));
        let calls = rec.ranges();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1], (now(), now()), "only the point newer than now − 1m again");
        // A request entirely within the freshness window bypasses the cache.
        let fresh = req(now() - 30_000, now(), 10_000);
        rc.handle("t", fresh.clone()).await.unwrap();
        rc.handle("t", fresh).await.unwrap();
        assert_eq!(rec.calls.lock().len(), 4);
    }

    #[tokio::test]
    async fn no_store_on_the_request_or_the_response_is_honoured() {
        let (rc, rec, cache) = setup();
        let mut r = req(DAY, DAY + 60 * MIN, MIN);
        r.no_store = true;
        rc.handle("t", r.clone()).await.unwrap();
        assert!(cache.is_empty());
        assert_eq!(rec.calls.lock().len(), 1);

        struct NoStore;
        #[async_trait]
        impl Handler for NoStore {
            async fn handle(&self, _: &str, req: RangeRequest) -> Result<PrometheusResponse, FrontendError> {
                let mut r = evaluate(&req);
                r.headers.push(PrometheusResponseHeader {
                    name: "Cache-Control".into(),
                    values: vec!["no-store".into()],
                });
                Ok(r)
            }
        }
        let rc2 = ResultsCache {
            next: Arc::new(NoStore),
            ..setup().0
        };
        let answer = rc2.handle("t", req(DAY, DAY + 60 * MIN, MIN)).await.unwrap();
        assert!(answer.headers.is_empty());
        assert!(rc2
            .cache
            .fetch(vec![hashed(&cache_key("t", &req(DAY, 0, MIN), DAY))])
            .await
            .found
            .is_empty());
    }

    #[tokio::test]
    async fn corrupt_or_colliding_values_are_misses() {
        let (rc, rec, cache) = setup();
        let r = req(DAY, DAY + 60 * MIN, MIN);
        let hk = hashed(&cache_key("t", &r, DAY));
        for garbage in [
            Bytes::from_static(b"\xff\xfe not snappy, not proto"),
            // Valid snappy of garbage proto.
            Bytes::from(snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff").unwrap()),
            // A well-formed value for another key.
            rc.encode(
                "someone-else",
                &[Cached {
                    start: DAY,
                    end: DAY + 60 * MIN,
                    response: response::tests::response(vec![]),
                }],
            ),
        ] {
            cache.store(vec![(hk.clone(), garbage)]).await;
            let before = rec.calls.lock().len();
            assert_eq!(rc.handle("t", r.clone()).await.unwrap(), evaluate(&r));
            assert_eq!(rec.calls.lock().len(), before + 1, "a miss, computed again");
        }
        // And the rewritten entry is good again.
        assert_eq!(rc.handle("t", r.clone()).await.unwrap(), evaluate(&r));
        assert_eq!(rec.calls.lock().len(), 3);
    }
}
