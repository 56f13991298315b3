//! DynamoDB index client and table client (spec §4.5, §4.7, §5): items `h` (S) / `r` (B) / `c` (B),
//! BatchWriteItem in groups of 25 with unprocessed items re-queued and throttling retried with
//! exponential backoff, paginated Query with `r >= :s` or `begins_with(r, :p)` and `c = :v`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput, PutRequest,
    ScalarAttributeType, TableStatus, Tag, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::{IndexClient, IndexRow};
use crate::config::DynamoConfig;
use crate::schema::{IndexEntry, IndexQuery};
use crate::table_manager::{TableClient, TableDesc};
use crate::StoreError;

const HASH_KEY: &str = "h";
const RANGE_KEY: &str = "r";
const VALUE_KEY: &str = "c";
const BATCH_SIZE: usize = 25;
const QUERY_PARALLELISM: usize = 16;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
    status_code: String,
}

#[derive(Clone)]
struct DynamoMetrics {
    duration: Family<OpLabels, Histogram>,
    throttled: Counter,
    pages: Histogram,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

pub struct DynamoIndex {
    client: Client,
    cfg: DynamoConfig,
    metrics: DynamoMetrics,
}

fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded")
    )
}

fn sdk_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &str,
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> StoreError {
    let detail = match e.as_service_error() {
        Some(se) => format!("{}: {}", se.code().unwrap_or("unknown"), se.message().unwrap_or("")),
        None => format!("{e:?}"),
    };
    StoreError::internal(format!("dynamodb {op}: {detail}"))
}

impl DynamoIndex {
    pub async fn new(cfg: &DynamoConfig, metrics: &server::Metrics) -> Result<Self, StoreError> {
        if cfg.dynamodb_url.is_empty() {
            return Err(StoreError::bad_request(
                "the schema uses aws-dynamo but -dynamodb.url is empty",
            ));
        }
        let url = crate::aws::parse_url(cfg.dynamodb_url.expose())?;
        let sdk = crate::aws::sdk_config(&url).await;
        let m = DynamoMetrics {
            duration: metrics.shared(
                "cortex_dynamo_request_duration_seconds",
                "Time spent doing DynamoDB requests.",
                || Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            ),
            throttled: metrics.shared(
                "cortex_dynamo_throttled",
                "Number of throttled DynamoDB requests.",
                Counter::default,
            ),
            pages: metrics.shared("cortex_dynamo_query_pages_count", "Number of pages per query.", || {
                Histogram::new(exponential_buckets(1.0, 2.0, 8))
            }),
        };
        Ok(DynamoIndex {
            client: Client::new(&sdk),
            cfg: cfg.clone(),
            metrics: m,
        })
    }

    fn observe(&self, op: &str, start: Instant, ok: bool) {
        self.metrics
            .duration
            .get_or_create(&OpLabels {
                operation: op.to_string(),
                status_code: if ok { "200" } else { "500" }.to_string(),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let min = self.cfg.min_backoff.0.max(Duration::from_millis(1));
        let d = min.saturating_mul(1u32 << attempt.min(16));
        d.min(self.cfg.max_backoff.0.max(min))
    }

    async fn query_one(&self, q: &IndexQuery) -> Result<Vec<IndexRow>, StoreError> {
        let mut out = Vec::new();
        let mut start_key: Option<HashMap<String, AttributeValue>> = None;
        let mut pages = 0u32;
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&q.table)
                .consistent_read(true)
                .expression_attribute_values(":h", AttributeValue::S(q.hash.clone()))
                .set_exclusive_start_key(start_key.clone());
            let mut cond = format!("{HASH_KEY} = :h");
            if let Some(p) = &q.range_prefix {
                cond.push_str(&format!(" AND begins_with({RANGE_KEY}, :r)"));
                req = req.expression_attribute_values(":r", AttributeValue::B(Blob::new(p.to_vec())));
            } else if let Some(s) = &q.range_start {
                cond.push_str(&format!(" AND {RANGE_KEY} >= :r"));
                req = req.expression_attribute_values(":r", AttributeValue::B(Blob::new(s.to_vec())));
            }
            if let Some(v) = &q.value_equal {
                req = req
                    .filter_expression(format!("{VALUE_KEY} = :v"))
                    .expression_attribute_values(":v", AttributeValue::B(Blob::new(v.to_vec())));
            }
            let t = Instant::now();
            let resp = req.key_condition_expression(cond).send().await;
            self.observe("DynamoDB.QueryPages", t, resp.is_ok());
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    let code = e.as_service_error().and_then(|se| se.code().map(str::to_string));
                    // A table the table-manager has not created yet holds no rows.
                    if code.as_deref() == Some("ResourceNotFoundException") {
                        return Ok(out);
                    }
                    if is_throttle(code.as_deref()) && attempt < self.cfg.max_retries {
                        self.metrics.throttled.inc();
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(sdk_err("Query", &e));
                }
            };
            pages += 1;
            for item in resp.items() {
                let range = match item.get(RANGE_KEY) {
                    Some(AttributeValue::B(b)) => Bytes::copy_from_slice(b.as_ref()),
                    _ => continue,
                };
                let value = match item.get(VALUE_KEY) {
                    Some(AttributeValue::B(b)) => Bytes::copy_from_slice(b.as_ref()),
                    _ => Bytes::new(),
                };
                out.push(IndexRow { range, value });
            }
            match resp.last_evaluated_key() {
                Some(k) if !k.is_empty() => start_key = Some(k.clone()),
                _ => break,
            }
        }
        self.metrics.pages.observe(pages as f64);
        Ok(out)
    }

    async fn arn(&self, table: &str) -> Result<Option<String>, StoreError> {
        let r = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_err("DescribeTable", &e))?;
        Ok(r.table().and_then(|t| t.table_arn().map(str::to_string)))
    }

    async fn tag(&self, table: &str, tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        let Some(arn) = self.arn(table).await? else {
            return Ok(());
        };
        let tags: Vec<Tag> = tags
            .iter()
            .filter_map(|(k, v)| Tag::builder().key(k).value(v).build().ok())
            .collect();
        let t = Instant::now();
        let r = self
            .client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await;
        self.observe("DynamoDB.TagResource", t, r.is_ok());
        r.map(|_| ()).map_err(|e| sdk_err("TagResource", &e))
    }
}

#[async_trait::async_trait]
impl IndexClient for DynamoIndex {
    async fn batch_write(&self, entries: Vec<IndexEntry>) -> Result<(), StoreError> {
        let mut queue: VecDeque<(String, WriteRequest)> = entries
            .into_iter()
            .map(|e| {
                let mut item = HashMap::with_capacity(3);
                item.insert(HASH_KEY.to_string(), AttributeValue::S(e.hash));
                item.insert(RANGE_KEY.to_string(), AttributeValue::B(Blob::new(e.range.to_vec())));
                if !e.value.is_empty() {
                    item.insert(VALUE_KEY.to_string(), AttributeValue::B(Blob::new(e.value.to_vec())));
                }
                let put = PutRequest::builder().set_item(Some(item)).build().expect("item is set");
                (e.table, WriteRequest::builder().put_request(put).build())
            })
            .collect();
        let mut attempt = 0u32;
        while !queue.is_empty() {
            let mut by_table: HashMap<String, Vec<WriteRequest>> = HashMap::new();
            for _ in 0..BATCH_SIZE.min(queue.len()) {
                let (t, w) = queue.pop_front().expect("non-empty");
                by_table.entry(t).or_default().push(w);
            }
            let t = Instant::now();
            let r = self
                .client
                .batch_write_item()
                .set_request_items(Some(by_table.clone()))
                .send()
                .await;
            self.observe("DynamoDB.BatchWriteItem", t, r.is_ok());
            match r {
                Ok(resp) => {
                    let mut unprocessed = 0;
                    if let Some(u) = resp.unprocessed_items() {
                        for (table, reqs) in u {
                            for w in reqs {
                                queue.push_back((table.clone(), w.clone()));
                                unprocessed += 1;
                            }
                        }
                    }
                    if unprocessed > 0 {
                        // DynamoDB returns unprocessed items when it is out of capacity: back off.
                        self.metrics.throttled.inc();
                        if attempt >= self.cfg.max_retries {
                            return Err(StoreError::internal(format!(
                                "dynamodb BatchWriteItem: {unprocessed} items still unprocessed after {attempt} retries"
                            )));
                        }
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                    } else {
                        attempt = 0;
                    }
                }
                Err(e) => {
                    let code = e.as_service_error().and_then(|se| se.code().map(str::to_string));
                    if is_throttle(code.as_deref()) && attempt < self.cfg.max_retries {
                        self.metrics.throttled.inc();
                        for (table, reqs) in by_table {
                            for w in reqs {
                                queue.push_front((table.clone(), w));
                            }
                        }
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(sdk_err("BatchWriteItem", &e));
                }
            }
        }
        Ok(())
    }

    async fn query(&self, queries: &[IndexQuery]) -> Result<Vec<Vec<IndexRow>>, StoreError> {
        let futs: Vec<_> = queries.iter().map(|q| self.query_one(q)).collect();
        stream::iter(futs).buffered(QUERY_PARALLELISM).try_collect().await
    }
}

#[async_trait::async_trait]
impl TableClient for DynamoIndex {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let r = self
                .client
                .list_tables()
                .set_exclusive_start_table_name(start.clone())
                .send()
                .await
                .map_err(|e| sdk_err("ListTables", &e))?;
            out.extend(r.table_names().iter().cloned());
            match r.last_evaluated_table_name() {
                Some(n) => start = Some(n.to_string()),
                None => break,
            }
        }
        Ok(out)
    }

    async fn create_table(&self, d: &TableDesc) -> Result<(), StoreError> {
        let mut req = self
            .client
            .create_table()
            .table_name(&d.name)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(HASH_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(RANGE_KEY)
                    .attribute_type(ScalarAttributeType::B)
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(HASH_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(RANGE_KEY)
                    .key_type(KeyType::Range)
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?,
            );
        if d.use_on_demand {
            req = req.billing_mode(BillingMode::PayPerRequest);
        } else {
            req = req.provisioned_throughput(
                ProvisionedThroughput::builder()
                    .read_capacity_units(d.provisioned_read)
                    .write_capacity_units(d.provisioned_write)
                    .build()
                    .map_err(|e| StoreError::internal(e.to_string()))?,
            );
        }
        let t = Instant::now();
        let r = req.send().await;
        self.observe("DynamoDB.CreateTable", t, r.is_ok());
        r.map_err(|e| sdk_err("CreateTable", &e))?;
        // Some DynamoDB implementations ignore Tags on CreateTable (dynalite): tag separately.
        self.tag(&d.name, &d.tags).await
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.client.delete_table().table_name(name).send().await;
        self.observe("DynamoDB.DeleteTable", t, r.is_ok());
        r.map(|_| ()).map_err(|e| sdk_err("DeleteTable", &e))
    }

    async fn describe_table(&self, name: &str) -> Result<Option<TableDesc>, StoreError> {
        let r = self
            .client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| sdk_err("DescribeTable", &e))?;
        let Some(t) = r.table() else { return Ok(None) };
        if t.table_status() != Some(&TableStatus::Active) {
            return Ok(None);
        }
        let mut d = TableDesc {
            name: name.to_string(),
            use_on_demand: t
                .billing_mode_summary()
                .and_then(|b| b.billing_mode())
                .is_some_and(|m| *m == BillingMode::PayPerRequest),
            ..Default::default()
        };
        if let Some(p) = t.provisioned_throughput() {
            d.provisioned_read = p.read_capacity_units().unwrap_or(0);
            d.provisioned_write = p.write_capacity_units().unwrap_or(0);
        }
        if let Some(arn) = t.table_arn() {
            let tags = self
                .client
                .list_tags_of_resource()
                .resource_arn(arn)
                .send()
                .await
                .map_err(|e| sdk_err("ListTagsOfResource", &e))?;
            for tag in tags.tags() {
                d.tags.insert(tag.key().to_string(), tag.value().to_string());
            }
        }
        Ok(Some(d))
    }

    async fn update_table(&self, current: &TableDesc, expected: &TableDesc) -> Result<(), StoreError> {
        let throughput_differs = expected.use_on_demand != current.use_on_demand
            || (!expected.use_on_demand
                && (expected.provisioned_read != current.provisioned_read
                    || expected.provisioned_write != current.provisioned_write));
        if throughput_differs {
            let mut req = self.client.update_table().table_name(&expected.name);
            if expected.use_on_demand {
                req = req.billing_mode(BillingMode::PayPerRequest);
            } else {
                if current.use_on_demand {
                    req = req.billing_mode(BillingMode::Provisioned);
                }
                req = req.provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(expected.provisioned_read)
                        .write_capacity_units(expected.provisioned_write)
                        .build()
                        .map_err(|e| StoreError::internal(e.to_string()))?,
                );
            }
            let t = Instant::now();
            let r = req.send().await;
            self.observe("DynamoDB.UpdateTable", t, r.is_ok());
            r.map_err(|e| sdk_err("UpdateTable", &e))?;
        }
        if expected.tags.iter().any(|(k, v)| current.tags.get(k) != Some(v)) {
            self.tag(&expected.name, &expected.tags).await?;
        }
        Ok(())
    }
}
