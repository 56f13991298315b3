//! Node-exporter-like series and their pre-encoded remote-write requests.
//!
//! Every simulated host exports the same 84 series (CPU seconds per core and
//! mode, memory gauges, network and disk counters, filesystem gauges, load
//! averages), each with 9 target labels shared by the host plus 0–3 labels of
//! its own: 9–12 labels per series, as a scraped node exporter gives after
//! Kubernetes relabelling.

use bytes::Bytes;
use prost::Message;
use proto::cortex::{LabelPair, Sample, TimeSeries, WriteRequest};

/// Whether values only go up (counter) or move both ways (gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One generated series: sorted labels (shared `Bytes`, so each request
/// referencing the series costs no copy until encoding) and how it evolves.
#[derive(Clone, Debug)]
pub struct SeriesSpec {
    pub labels: Vec<LabelPair>,
    pub kind: Kind,
    /// First value; counters then grow by `step` on average per sample,
    /// gauges move by up to ±`step`.
    pub start: f64,
    pub step: f64,
}

const MODES: [&str; 8] = ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"];
const CPUS: usize = 4;
const MEMORY: [&str; 10] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
    "Active",
    "Inactive",
    "Dirty",
];
const NET_DEVICES: [&str; 3] = ["eth0", "eth1", "lo"];
const NET_METRICS: [&str; 8] = [
    "node_network_receive_bytes_total",
    "node_network_receive_packets_total",
    "node_network_receive_errs_total",
    "node_network_receive_drop_total",
    "node_network_transmit_bytes_total",
    "node_network_transmit_packets_total",
    "node_network_transmit_errs_total",
    "node_network_transmit_drop_total",
];
const MOUNTS: [(&str, &str, &str); 3] = [
    ("/dev/nvme0n1p1", "ext4", "/"),
    ("/dev/nvme1n1", "xfs", "/var/lib/containerd"),
    ("tmpfs", "tmpfs", "/run"),
];
const FS_METRICS: [&str; 3] = [
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_free_bytes",
];
const DISKS: [&str; 2] = ["nvme0n1", "nvme1n1"];
const DISK_METRICS: [&str; 3] = [
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_disk_io_time_seconds_total",
];
const LOADS: [&str; 3] = ["node_load1", "node_load5", "node_load15"];
const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-2"];

/// Series exported by one host.
pub const SERIES_PER_HOST: usize = CPUS * MODES.len()
    + MEMORY.len()
    + NET_DEVICES.len() * NET_METRICS.len()
    + MOUNTS.len() * FS_METRICS.len()
    + DISKS.len() * DISK_METRICS.len()
    + LOADS.len();

/// xorshift64*: deterministic, so two runs (and two targets) get the same load.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn pair(name: &str, value: impl Into<String>) -> LabelPair {
    LabelPair {
        name: Bytes::copy_from_slice(name.as_bytes()),
        value: Bytes::from(value.into()),
    }
}

/// The labels every series of host `h` carries (besides `__name__`).
fn host_labels(h: usize) -> Vec<LabelPair> {
    let cluster = h / 500;
    let ip = format!("10.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
    vec![
        pair("cluster", format!("k8s-prod-{cluster:03}")),
        pair(
            "environment",
            if cluster.is_multiple_of(3) {
                "staging"
            } else {
                "production"
            },
        ),
        pair("instance", format!("{ip}:9100")),
        pair("job", "node-exporter"),
        pair("namespace", "monitoring"),
        pair("node", format!("ip-{}.compute.internal", ip.replace('.', "-"))),
        pair(
            "pod",
            format!("node-exporter-{:05x}", (h as u64).wrapping_mul(0x9e37_79b9) & 0xfffff),
        ),
        pair("region", REGIONS[cluster % REGIONS.len()]),
    ]
}

/// `n` distinct series, host after host, labels sorted by name.
pub fn generate_series(n: usize, seed: u64) -> Vec<SeriesSpec> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut host = 0;
    while out.len() < n {
        let common = host_labels(host);
        let mut add = |name: &str, extra: &[(&str, &str)], kind: Kind, start: f64, step: f64| {
            if out.len() >= n {
                return;
            }
            let mut labels = common.clone();
            labels.push(pair("__name__", name));
            labels.extend(extra.iter().map(|(k, v)| pair(k, *v)));
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(SeriesSpec {
                labels,
                kind,
                start,
                step,
            });
        };
        for cpu in 0..CPUS {
            let cpu = cpu.to_string();
            for mode in MODES {
                let base = rng.unit() * 1e6;
                add(
                    "node_cpu_seconds_total",
                    &[("cpu", &cpu), ("mode", mode)],
                    Kind::Counter,
                    base,
                    rng.unit() * 15.0,
                );
            }
        }
        for m in MEMORY {
            let total = 16e9 + rng.unit() * 48e9;
            add(
                &format!("node_memory_{m}_bytes"),
                &[],
                Kind::Gauge,
                total * rng.unit(),
                1e6,
            );
        }
        for dev in NET_DEVICES {
            for m in NET_METRICS {
                add(
                    m,
                    &[("device", dev)],
                    Kind::Counter,
                    rng.unit() * 1e12,
                    rng.unit() * 1e7,
                );
            }
        }
        for (device, fstype, mountpoint) in MOUNTS {
            for m in FS_METRICS {
                add(
                    m,
                    &[("device", device), ("fstype", fstype), ("mountpoint", mountpoint)],
                    Kind::Gauge,
                    rng.unit() * 5e11,
                    4096.0 * 100.0,
                );
            }
        }
        for dev in DISKS {
            for m in DISK_METRICS {
                add(
                    m,
                    &[("device", dev)],
                    Kind::Counter,
                    rng.unit() * 1e12,
                    rng.unit() * 1e6,
                );
            }
        }
        for m in LOADS {
            add(m, &[], Kind::Gauge, rng.unit() * 4.0, 0.1);
        }
        host += 1;
    }
    out
}

/// One ready-to-send remote-write body.
#[derive(Clone, Debug)]
pub struct EncodedRequest {
    /// Block-snappy protobuf `WriteRequest`.
    pub body: Bytes,
    pub samples: usize,
}

/// The compressed bodies to send, in sending order: scrape round by scrape
/// round (`samples_per_series` rounds, `interval_ms` apart, the last one just
/// before `now_ms`), each round cut into requests of `batch` samples, one
/// sample per series per round, as Prometheus's remote-write queue does.
pub fn encode_requests(
    series: &[SeriesSpec],
    samples_per_series: usize,
    batch: usize,
    interval_ms: i64,
    now_ms: i64,
    seed: u64,
) -> Vec<EncodedRequest> {
    let batch = batch.max(1);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut values: Vec<f64> = series.iter().map(|s| s.start).collect();
    let first_t = now_ms - samples_per_series as i64 * interval_ms;
    let mut bodies = Vec::with_capacity(samples_per_series * series.len().div_ceil(batch));
    let mut raw = Vec::new();
    let mut compressor = snap::raw::Encoder::new();
    for round in 0..samples_per_series {
        let t = first_t + round as i64 * interval_ms;
        for (chunk_index, chunk) in series.chunks(batch).enumerate() {
            let base = chunk_index * batch;
            let timeseries = chunk
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let v = &mut values[base + i];
                    if round > 0 {
                        *v = match s.kind {
                            Kind::Counter => *v + s.step * (0.5 + rng.unit()),
                            Kind::Gauge => (*v + s.step * (rng.unit() * 2.0 - 1.0)).max(0.0),
                        };
                    }
                    TimeSeries {
                        labels: s.labels.clone(),
                        samples: vec![Sample {
                            value: *v,
                            timestamp_ms: t,
                        }],
                    }
                })
                .collect();
            let req = WriteRequest {
                timeseries,
                ..Default::default()
            };
            raw.clear();
            req.encode(&mut raw).expect("a Vec grows as needed");
            let body = compressor
                .compress_vec(&raw)
                .expect("snappy compression of an in-memory buffer cannot fail");
            bodies.push(EncodedRequest {
                body: Bytes::from(body),
                samples: chunk.len(),
            });
        }
    }
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn series_are_distinct_sorted_and_have_9_to_12_labels() {
        let s = generate_series(1000, 1);
        assert_eq!(s.len(), 1000);
        assert_eq!(SERIES_PER_HOST, 84);
        let mut seen = HashSet::new();
        for spec in &s {
            assert!((9..=12).contains(&spec.labels.len()), "{} labels", spec.labels.len());
            assert!(spec.labels.windows(2).all(|w| w[0].name < w[1].name), "labels sorted");
            let key: Vec<_> = spec.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            assert!(seen.insert(key), "duplicate series");
        }
        let names: HashSet<_> = s
            .iter()
            .map(|spec| {
                spec.labels
                    .iter()
                    .find(|l| &l.name[..] == b"__name__")
                    .unwrap()
                    .value
                    .clone()
            })
            .collect();
        assert!(names.contains(&Bytes::from_static(b"node_cpu_seconds_total")));
        assert!(names.contains(&Bytes::from_static(b"node_memory_MemAvailable_bytes")));
        assert!(names.contains(&Bytes::from_static(b"node_network_receive_bytes_total")));
    }

    #[test]
    fn requests_carry_every_sample_in_time_order_per_series() {
        let s = generate_series(250, 7);
        let now = 1_700_000_000_000;
        let bodies = encode_requests(&s, 3, 100, 15_000, now, 7);
        // 3 rounds of ceil(250 / 100) = 3 requests.
        assert_eq!(bodies.len(), 9);
        let mut last: std::collections::HashMap<Vec<u8>, (i64, f64)> = Default::default();
        let mut total = 0;
        for b in &bodies {
            let raw = snap::raw::Decoder::new().decompress_vec(&b.body).unwrap();
            let req = WriteRequest::decode(&raw[..]).unwrap();
            assert!(req.timeseries.len() <= 100);
            assert_eq!(req.timeseries.len(), b.samples);
            for ts in req.timeseries {
                let key: Vec<u8> = ts
                    .labels
                    .iter()
                    .flat_map(|l| [&l.name[..], &l.value[..]].concat())
                    .collect();
                let sample = ts.samples[0];
                assert!(sample.timestamp_ms < now && sample.timestamp_ms >= now - 3 * 15_000);
                if let Some((t, v)) = last.get(&key) {
                    assert_eq!(sample.timestamp_ms, t + 15_000);
                    let is_counter = ts.labels.iter().any(|l| l.value.ends_with(b"_total"));
                    if is_counter {
                        assert!(sample.value >= *v, "counter went down");
                    }
                }
                last.insert(key, (sample.timestamp_ms, sample.value));
                total += 1;
            }
        }
        assert_eq!(total, 750);
        assert_eq!(last.len(), 250);
    }
}
