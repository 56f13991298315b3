//! S3 object client (`-s3.url`, `-s3.force-path-style`, `-s3.buckets`): PutObject/GetObject by
//! external key; with several buckets the bucket is FNV-1a-32(key) mod n, as Cortex picks it.

use std::time::Instant;

use aws_sdk_s3::Client;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::ObjectClient;
use crate::config::S3Config;
use crate::StoreError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
    status_code: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

pub struct S3ObjectClient {
    client: Client,
    buckets: Vec<String>,
    duration: Family<OpLabels, Histogram>,
}

impl S3ObjectClient {
    pub async fn new(cfg: &S3Config, metrics: &server::Metrics) -> Result<Self, StoreError> {
        if cfg.s3.is_empty() {
            return Err(StoreError::bad_request("the schema uses s3 but -s3.url is empty"));
        }
        let url = crate::aws::parse_url(cfg.s3.expose())?;
        let mut buckets: Vec<String> = cfg
            .bucketnames
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if buckets.is_empty() && !url.path.is_empty() {
            buckets.push(url.path.clone());
        }
        if buckets.is_empty() {
            return Err(StoreError::bad_request(
                "-s3.url names no bucket (and -s3.buckets is empty)",
            ));
        }
        let sdk = crate::aws::sdk_config(&url).await;
        let s3cfg = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.s3forcepathstyle)
            .build();
        Ok(S3ObjectClient {
            client: Client::from_conf(s3cfg),
            buckets,
            duration: metrics.shared(
                "cortex_s3_request_duration_seconds",
                "Time spent doing S3 requests.",
                || Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            ),
        })
    }

    pub fn bucket_for(&self, key: &str) -> &str {
        let i = model::hash::fnv1a_32(key.as_bytes()) as usize % self.buckets.len();
        &self.buckets[i]
    }

    fn observe(&self, op: &str, start: Instant, ok: bool) {
        self.duration
            .get_or_create(&OpLabels {
                operation: op.into(),
                status_code: if ok { "200" } else { "500" }.into(),
            })
            .observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait::async_trait]
impl ObjectClient for S3ObjectClient {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self
            .client
            .put_object()
            .bucket(self.bucket_for(key))
            .key(key)
            .body(data.into())
            .send()
            .await;
        self.observe("S3.PutObject", t, r.is_ok());
        r.map(|_| ())
            .map_err(|e| StoreError::internal(format!("s3 PutObject {key}: {:?}", e.into_service_error())))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let t = Instant::now();
        let r = self
            .client
            .get_object()
            .bucket(self.bucket_for(key))
            .key(key)
            .send()
            .await;
        self.observe("S3.GetObject", t, r.is_ok());
        match r {
            Ok(o) => {
                let body = o
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::internal(format!("s3 GetObject {key}: reading body: {e}")))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) => {
                let se = e.into_service_error();
                if se.is_no_such_key() {
                    Ok(None)
                } else {
                    Err(StoreError::internal(format!("s3 GetObject {key}: {se:?}")))
                }
            }
        }
    }
}
