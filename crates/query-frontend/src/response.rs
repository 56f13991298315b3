//! Range-query responses: Prometheus JSON ⇄ the proto `PrometheusResponse` the results cache
//! stores, merging of pieces and cutting to a time range.

use std::collections::BTreeMap;

use bytes::Bytes;
use proto::cortex::{LabelPair, Sample};
use proto::frontend::{PrometheusData, PrometheusResponse, PrometheusResponseHeader, SampleStream};
use serde::Deserialize;

use crate::error::FrontendError;

pub const STATUS_SUCCESS: &str = "success";
pub const MATRIX: &str = "matrix";

#[derive(Deserialize)]
struct JsonResponse {
    status: String,
    #[serde(default)]
    data: Option<JsonData>,
}

#[derive(Deserialize)]
struct JsonData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Decodes a successful `query_range` JSON body.
pub fn from_json(body: &[u8]) -> Result<PrometheusResponse, FrontendError> {
    let bad = |why: String| FrontendError::Internal(format!("cannot decode the querier's range query response: {why}"));
    let r: JsonResponse = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let data = r.data.ok_or_else(|| bad("no data".into()))?;
    if data.result_type != MATRIX {
        return Err(bad(format!("result type {:?}, want matrix", data.result_type)));
    }
    let mut result = Vec::with_capacity(data.result.len());
    for s in data.result {
        let labels = s
            .metric
            .into_iter()
            .map(|(n, v)| LabelPair {
                name: Bytes::from(n),
                value: Bytes::from(v),
            })
            .collect();
        let mut samples = Vec::with_capacity(s.values.len());
        for (t, v) in s.values {
            samples.push(Sample {
                timestamp_ms: (t * 1000.0).round() as i64,
                value: parse_value(&v).ok_or_else(|| bad(format!("sample value {v:?}")))?,
            });
        }
        result.push(SampleStream { labels, samples });
    }
    Ok(PrometheusResponse {
        status: r.status,
        data: Some(PrometheusData {
            result_type: data.result_type,
            result,
        }),
        ..Default::default()
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Prometheus's JSON for a matrix, byte for byte as the querier writes it.
pub fn to_json(r: &PrometheusResponse) -> String {
    let series = r.data.as_ref().map(|d| d.result.as_slice()).unwrap_or(&[]);
    let points: usize = series.iter().map(|s| s.samples.len()).sum();
    let mut out = String::with_capacity(64 + series.len() * 64 + points * 24);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[");
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":{");
        for (j, l) in s.labels.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_str(&mut out, &l.name);
            out.push(':');
            write_str(&mut out, &l.value);
        }
        out.push_str("},\"values\":[");
        for (j, p) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push('[');
            out.push_str(&crate::request::format_seconds(p.timestamp_ms));
            out.push_str(",\"");
            out.push_str(&promql::format_float(p.value));
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push_str("]}}");
    out
}

fn write_str(out: &mut String, b: &[u8]) {
    let s = String::from_utf8_lossy(b);
    out.push_str(&serde_json::to_string(s.as_ref()).unwrap_or_else(|_| "\"\"".into()));
}

type LabelKey = Vec<(Bytes, Bytes)>;

fn key(labels: &[LabelPair]) -> LabelKey {
    labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

/// Merges pieces given in time order: per series, samples are concatenated, skipping any
/// timestamp not after the last one kept (pieces may touch at their edges); series come out
/// sorted by labels, as Prometheus orders a matrix.
pub fn merge(pieces: Vec<PrometheusResponse>) -> PrometheusResponse {
    let mut by_series: BTreeMap<LabelKey, SampleStream> = BTreeMap::new();
    let mut headers: Vec<PrometheusResponseHeader> = Vec::new();
    for p in pieces {
        headers.extend(p.headers);
        let Some(data) = p.data else { continue };
        for s in data.result {
            match by_series.entry(key(&s.labels)) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(s);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let have = &mut o.get_mut().samples;
                    let last = have.last().map_or(i64::MIN, |p| p.timestamp_ms);
                    let from = s.samples.partition_point(|p| p.timestamp_ms <= last);
                    have.extend_from_slice(&s.samples[from..]);
                }
            }
        }
    }
    PrometheusResponse {
        status: STATUS_SUCCESS.into(),
        data: Some(PrometheusData {
            result_type: MATRIX.into(),
            result: by_series.into_values().collect(),
        }),
        headers,
        ..Default::default()
    }
}

/// The part of `r` within `[start, end]`; series left without samples are dropped.
pub fn extract(start: i64, end: i64, r: &PrometheusResponse) -> PrometheusResponse {
    let mut result = Vec::new();
    if let Some(d) = &r.data {
        for s in &d.result {
            let from = s.samples.partition_point(|p| p.timestamp_ms < start);
            let to = s.samples.partition_point(|p| p.timestamp_ms <= end);
            if from < to {
                result.push(SampleStream {
                    labels: s.labels.clone(),
                    samples: s.samples[from..to].to_vec(),
                });
            }
        }
    }
    PrometheusResponse {
        status: STATUS_SUCCESS.into(),
        data: Some(PrometheusData {
            result_type: MATRIX.into(),
            result,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn stream(labels: &[(&str, &str)], points: &[(i64, f64)]) -> SampleStream {
        SampleStream {
            labels: labels
                .iter()
                .map(|(n, v)| LabelPair {
                    name: Bytes::from(n.to_string()),
                    value: Bytes::from(v.to_string()),
                })
                .collect(),
            samples: points
                .iter()
                .map(|&(t, v)| Sample {
                    timestamp_ms: t,
                    value: v,
                })
                .collect(),
        }
    }

    pub fn response(streams: Vec<SampleStream>) -> PrometheusResponse {
        PrometheusResponse {
            status: STATUS_SUCCESS.into(),
            data: Some(PrometheusData {
                result_type: MATRIX.into(),
                result: streams,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn json_round_trip_is_byte_exact() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"m","job":"a\"b"},"values":[[1435781451.781,"1"],[1435781466.781,"NaN"],[1435781481,"+Inf"],[1435781496,"0.30000000000000004"],[1435781511,"-1e-7"]]}]}}"#;
        let r = from_json(body.as_bytes()).unwrap();
        let s = &r.data.as_ref().unwrap().result[0];
        assert_eq!(s.samples[0].timestamp_ms, 1_435_781_451_781);
        assert!(s.samples[1].value.is_nan());
        // Go writes -1e-7 as -0.0000001; the value is kept, the spelling is Prometheus's.
        assert_eq!(to_json(&r), body.replace("-1e-7", "-0.0000001"));
    }

    #[test]
    fn non_matrix_or_garbage_is_internal() {
        assert!(matches!(
            from_json(br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
            Err(FrontendError::Internal(_))
        ));
        assert!(from_json(b"\x00garbage").is_err());
    }

    #[test]
    fn merge_concatenates_in_order_dedups_edges_and_sorts_series() {
        let a = response(vec![
            stream(&[("x", "2")], &[(0, 1.0), (10, 2.0)]),
            stream(&[("x", "1")], &[(0, 5.0)]),
        ]);
        let b = response(vec![
            stream(&[("x", "2")], &[(10, 2.0), (20, 3.0)]),
            stream(&[("x", "0")], &[(20, 9.0)]),
        ]);
        let m = merge(vec![a, b]);
        let got: Vec<(String, Vec<i64>)> = m
            .data
            .unwrap()
            .result
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&s.labels[0].value).into_owned(),
                    s.samples.iter().map(|p| p.timestamp_ms).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("0".into(), vec![20]),
                ("1".into(), vec![0]),
                ("2".into(), vec![0, 10, 20])
            ]
        );
    }

    #[test]
    fn extract_cuts_inclusive_and_drops_empty_series() {
        let r = response(vec![
            stream(&[("x", "1")], &[(0, 1.0), (10, 2.0), (20, 3.0)]),
            stream(&[("x", "2")], &[(30, 1.0)]),
        ]);
        let e = extract(10, 20, &r);
        let d = e.data.unwrap();
        assert_eq!(d.result.len(), 1);
        assert_eq!(
            d.result[0].samples.iter().map(|p| p.timestamp_ms).collect::<Vec<_>>(),
            vec![10, 20]
        );
    }
}
