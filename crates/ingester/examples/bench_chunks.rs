//! `make bench-chunks`: bytes per sample of the chunks the ingester flushes
//! for node-exporter-like data (goal ≤ 1.3; Gorilla's paper reports 1.37).
//!
//! Samples go through the real push path (chunk cutting at 120 samples,
//! spread-flush cuts with the default 12h max chunk age, WAL on in a temp
//! directory) and are flushed with `/flush` semantics into a store that only
//! counts. Series are what one node exporter exposes, per host: CPU-seconds
//! counters with 10 ms resolution, memory/filesystem gauges in 4 KiB pages,
//! network and disk counters, load averages, and constants; scraped every
//! 15 s with a few milliseconds of jitter on some scrapes.
//!
//! `HOSTS=50 HOURS=4 cargo run --release -p ingester --example bench_chunks`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ingester::{Config, Ingester};
use model::Matcher;
use proto::cortex::{LabelPair, Sample, TimeSeries, WriteRequest};
use storage::{ChunkEntry, ChunkStore, StoreError};

/// Small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How one series evolves between scrapes.
#[derive(Clone, Copy)]
enum Kind {
    /// Never changes (boot time, total memory, filesystem size…).
    Constant,
    /// Counter in units of `quantum`, growing by about `rate` quanta per scrape
    /// (0 most of the time when `rate` < 1).
    Counter { rate: f64, quantum: f64 },
    /// Gauge in units of `quantum`, random walk of about `step` quanta, changing
    /// on a fraction `p_change` of scrapes.
    Gauge { step: f64, quantum: f64, p_change: f64 },
    /// Load average: 2 decimals, smooth.
    Load,
    /// A fresh measurement every scrape (collector durations): full entropy.
    Noise,
}

struct Series {
    labels: Vec<LabelPair>,
    kind: Kind,
    value: f64,
}

fn pair(n: &str, v: &str) -> LabelPair {
    LabelPair {
        name: Bytes::copy_from_slice(n.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

fn node_exporter(host: usize, rng: &mut Rng) -> Vec<Series> {
    let instance = format!("host-{host:04}:9100");
    let mut out = Vec::new();
    let mut add = |name: &str, extra: &[(&str, &str)], kind: Kind, value: f64| {
        let mut labels = vec![pair("__name__", name), pair("instance", &instance), pair("job", "node")];
        labels.extend(extra.iter().map(|(n, v)| pair(n, v)));
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(Series { labels, kind, value });
    };
    for cpu in 0..4 {
        let c = cpu.to_string();
        for (mode, rate) in [
            ("idle", 1300.0),
            ("user", 120.0),
            ("system", 40.0),
            ("iowait", 2.0),
            ("irq", 0.0),
            ("softirq", 3.0),
            ("nice", 0.05),
            ("steal", 0.5),
        ] {
            // CPU seconds with USER_HZ (10 ms) resolution.
            let start = (rng.below(10_000_000) as f64) / 100.0;
            add(
                "node_cpu_seconds_total",
                &[("cpu", &c), ("mode", mode)],
                Kind::Counter { rate, quantum: 0.01 },
                start,
            );
        }
    }
    let page = 4096.0;
    for (name, p_change) in [
        ("node_memory_MemFree_bytes", 1.0),
        ("node_memory_MemAvailable_bytes", 1.0),
        ("node_memory_Buffers_bytes", 0.3),
        ("node_memory_Cached_bytes", 0.8),
        ("node_memory_Active_bytes", 0.9),
        ("node_memory_Inactive_bytes", 0.6),
        ("node_memory_Dirty_bytes", 0.9),
        ("node_memory_Slab_bytes", 0.5),
        ("node_memory_SReclaimable_bytes", 0.4),
        ("node_memory_AnonPages_bytes", 0.9),
        ("node_memory_Mapped_bytes", 0.3),
        ("node_memory_Shmem_bytes", 0.1),
        ("node_memory_PageTables_bytes", 0.3),
        ("node_memory_Committed_AS_bytes", 0.8),
        ("node_memory_KernelStack_bytes", 0.2),
        ("node_memory_SwapFree_bytes", 0.01),
    ] {
        let v = (rng.below(2_000_000) + 10_000) as f64 * page;
        add(
            name,
            &[],
            Kind::Gauge {
                step: 40.0,
                quantum: page,
                p_change,
            },
            v,
        );
    }
    for name in [
        "node_memory_MemTotal_bytes",
        "node_memory_SwapTotal_bytes",
        "node_memory_HugePages_Total",
        "node_memory_Hugepagesize_bytes",
        "node_memory_VmallocTotal_bytes",
        "node_boot_time_seconds",
        "node_time_zone_offset_seconds",
        "node_entropy_pool_size_bits",
    ] {
        add(name, &[], Kind::Constant, (rng.below(1 << 40)) as f64);
    }
    for dev in ["eth0", "eth1", "lo"] {
        let busy = if dev == "eth0" { 1.0 } else { 0.02 };
        for (name, rate) in [
            ("node_network_receive_bytes_total", 400_000.0 * busy),
            ("node_network_transmit_bytes_total", 300_000.0 * busy),
            ("node_network_receive_packets_total", 900.0 * busy),
            ("node_network_transmit_packets_total", 800.0 * busy),
            ("node_network_receive_errs_total", 0.0),
            ("node_network_transmit_errs_total", 0.0),
            ("node_network_receive_drop_total", 0.01),
            ("node_network_transmit_drop_total", 0.0),
        ] {
            add(
                name,
                &[("device", dev)],
                Kind::Counter { rate, quantum: 1.0 },
                rng.below(1 << 36) as f64,
            );
        }
        add("node_network_up", &[("device", dev)], Kind::Constant, 1.0);
        add("node_network_mtu_bytes", &[("device", dev)], Kind::Constant, 1500.0);
    }
    for dev in ["sda", "sdb"] {
        let busy = if dev == "sda" { 1.0 } else { 0.05 };
        for (name, rate, quantum) in [
            ("node_disk_read_bytes_total", 50_000.0 * busy, 512.0),
            ("node_disk_written_bytes_total", 200_000.0 * busy, 512.0),
            ("node_disk_reads_completed_total", 10.0 * busy, 1.0),
            ("node_disk_writes_completed_total", 40.0 * busy, 1.0),
            ("node_disk_io_time_seconds_total", 1.5 * busy, 0.001),
            ("node_disk_read_time_seconds_total", 0.3 * busy, 0.001),
            ("node_disk_write_time_seconds_total", 2.0 * busy, 0.001),
            ("node_disk_io_time_weighted_seconds_total", 2.5 * busy, 0.001),
            ("node_disk_reads_merged_total", 1.0 * busy, 1.0),
            ("node_disk_writes_merged_total", 8.0 * busy, 1.0),
            ("node_disk_discards_completed_total", 0.0, 1.0),
        ] {
            let start = (rng.below(1 << 30) as f64 * quantum * 1000.0).round() / 1000.0;
            add(name, &[("device", dev)], Kind::Counter { rate, quantum }, start);
        }
        add(
            "node_disk_io_now",
            &[("device", dev)],
            Kind::Gauge {
                step: 1.0,
                quantum: 1.0,
                p_change: 0.2,
            },
            0.0,
        );
    }
    for mount in ["/", "/boot", "/var", "/home"] {
        let size = (rng.below(1 << 24) + 1_000_000) as f64 * page;
        add(
            "node_filesystem_size_bytes",
            &[("mountpoint", mount)],
            Kind::Constant,
            size,
        );
        let churn = if mount == "/var" { 0.9 } else { 0.1 };
        for name in ["node_filesystem_avail_bytes", "node_filesystem_free_bytes"] {
            add(
                name,
                &[("mountpoint", mount)],
                Kind::Gauge {
                    step: 30.0,
                    quantum: page,
                    p_change: churn,
                },
                size / 2.0,
            );
        }
        add(
            "node_filesystem_files",
            &[("mountpoint", mount)],
            Kind::Constant,
            6_553_600.0,
        );
        add(
            "node_filesystem_files_free",
            &[("mountpoint", mount)],
            Kind::Gauge {
                step: 5.0,
                quantum: 1.0,
                p_change: churn,
            },
            6_000_000.0,
        );
        add(
            "node_filesystem_readonly",
            &[("mountpoint", mount)],
            Kind::Constant,
            0.0,
        );
    }
    for name in ["node_load1", "node_load5", "node_load15"] {
        add(name, &[], Kind::Load, 1.5);
    }
    for (name, rate) in [
        ("node_context_switches_total", 150_000.0),
        ("node_intr_total", 90_000.0),
        ("node_forks_total", 300.0),
        ("node_vmstat_pgfault", 200_000.0),
        ("node_vmstat_pgmajfault", 0.2),
        ("node_vmstat_pgpgin", 400.0),
        ("node_vmstat_pgpgout", 1600.0),
        ("node_vmstat_pswpin", 0.0),
        ("node_vmstat_pswpout", 0.0),
    ] {
        add(
            name,
            &[],
            Kind::Counter { rate, quantum: 1.0 },
            rng.below(1 << 34) as f64,
        );
    }
    for (name, step) in [
        ("node_procs_running", 2.0),
        ("node_procs_blocked", 0.5),
        ("node_entropy_available_bits", 20.0),
        ("node_filefd_allocated", 10.0),
        ("node_sockstat_TCP_inuse", 3.0),
        ("node_nf_conntrack_entries", 15.0),
    ] {
        add(
            name,
            &[],
            Kind::Gauge {
                step,
                quantum: 1.0,
                p_change: 0.7,
            },
            100.0,
        );
    }
    add(
        "node_time_seconds",
        &[],
        Kind::Counter {
            rate: 15.0,
            quantum: 1e-9,
        },
        1.7e9,
    );
    // The exporter's own view of its ~40 collectors: a success flag each and
    // a duration measured afresh every scrape.
    for i in 0..40 {
        let collector = format!("collector{i:02}");
        add(
            "node_scrape_collector_success",
            &[("collector", &collector)],
            Kind::Constant,
            1.0,
        );
        add(
            "node_scrape_collector_duration_seconds",
            &[("collector", &collector)],
            Kind::Noise,
            0.001,
        );
    }
    // /proc/net/netstat and snmp: ~60 counters, most moving slowly.
    for i in 0..60 {
        let rate = [0.0, 0.02, 0.2, 1.0, 5.0, 40.0][i % 6];
        add(
            &format!("node_netstat_counter_{i:02}"),
            &[],
            Kind::Counter { rate, quantum: 1.0 },
            rng.below(1 << 20) as f64,
        );
    }
    for cpu in 0..4 {
        let c = cpu.to_string();
        for mode in ["user", "nice"] {
            add(
                "node_cpu_guest_seconds_total",
                &[("cpu", &c), ("mode", mode)],
                Kind::Constant,
                0.0,
            );
        }
        add(
            "node_cpu_scaling_frequency_hertz",
            &[("cpu", &c)],
            Kind::Gauge {
                step: 3.0,
                quantum: 100_000_000.0,
                p_change: 0.1,
            },
            2.4e9,
        );
    }
    add("up", &[], Kind::Constant, 1.0);
    out
}

fn step(s: &mut Series, rng: &mut Rng) {
    match s.kind {
        Kind::Constant => {}
        Kind::Counter { rate, quantum } => {
            let inc = if rate < 1.0 {
                (rng.f() < rate) as u64 as f64
            } else {
                // ±30% around the mean rate.
                (rate * (0.7 + 0.6 * rng.f())).round()
            };
            s.value = ((s.value / quantum).round() + inc) * quantum;
            if quantum < 1.0 {
                // Rounded to the exporter's decimal resolution, as the text format carries it.
                let scale = (1.0 / quantum).round();
                s.value = (s.value * scale).round() / scale;
            }
        }
        Kind::Gauge {
            step,
            quantum,
            p_change,
        } => {
            if rng.f() < p_change {
                let delta = ((rng.f() - 0.5) * 2.0 * step).round();
                s.value = (s.value / quantum + delta).max(0.0) * quantum;
            }
        }
        Kind::Noise => s.value = 0.0005 + rng.f() * 0.01,
        Kind::Load => {
            let v = s.value * 0.95 + 0.05 * (rng.f() * 4.0);
            s.value = (v * 100.0).round() / 100.0;
        }
    }
}

/// Counts what is flushed.
#[derive(Default)]
struct CountingStore {
    chunks: AtomicU64,
    bytes: AtomicU64,
    samples: AtomicU64,
    /// Bytes and samples per metric name (printed with BREAKDOWN=1).
    by_metric: parking_lot::Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

#[async_trait::async_trait]
impl ChunkStore for CountingStore {
    async fn put(&self, chunks: Vec<ChunkEntry>) -> Result<(), StoreError> {
        for c in &chunks {
            self.chunks.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(c.data.len() as u64, Ordering::Relaxed);
            self.samples
                .fetch_add(u16::from_be_bytes([c.data[0], c.data[1]]) as u64, Ordering::Relaxed);
            let mut m = self.by_metric.lock();
            let e = m.entry(c.labels.metric_name().to_string()).or_default();
            e.0 += c.data.len() as u64;
            e.1 += u16::from_be_bytes([c.data[0], c.data[1]]) as u64;
        }
        Ok(())
    }

    async fn get(&self, _: &str, _: i64, _: i64, _: &[Matcher]) -> Result<Vec<ChunkEntry>, StoreError> {
        Ok(Vec::new())
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let hosts = env("HOSTS", 50);
    let hours = env("HOURS", 4);
    let wal_dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::default();
    cfg.walconfig.wal_enabled = true;
    cfg.walconfig.wal_dir = wal_dir.path().to_string_lossy().into_owned();
    cfg.walconfig.checkpoint_enabled = false;
    cfg.max_series_per_metric = 0;
    let metrics = server::Metrics::new();
    let ing = Ingester::new(cfg, &metrics);
    ing.wait_started().await.expect("WAL opens");
    let store = Arc::new(CountingStore::default());
    ing.set_chunk_store(store.clone());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut series: Vec<Series> = (0..hosts).flat_map(|h| node_exporter(h, &mut rng)).collect();
    let per_host = series.len() / hosts;
    let scrapes = hours * 3600 / 15;
    let t0: i64 = 1_700_000_000_000;
    let started = Instant::now();
    let mut pushed = 0u64;
    for k in 0..scrapes {
        let timeseries: Vec<TimeSeries> = series
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                step(s, &mut rng);
                // Each host is scraped at its own offset. Prometheus (2.30+) snaps
                // timestamps within 2 ms of the interval back onto it, so only
                // later scrapes show: 1 in 50, by 3-20 ms.
                let host_offset = ((i / per_host) as i64 * 7919) % 15_000;
                let jitter = if rng.below(50) == 0 {
                    3 + rng.below(18) as i64
                } else {
                    0
                };
                TimeSeries {
                    labels: s.labels.clone(),
                    samples: vec![Sample {
                        value: s.value,
                        timestamp_ms: t0 + k as i64 * 15_000 + host_offset + jitter,
                    }],
                }
            })
            .collect();
        pushed += timeseries.len() as u64;
        ing.push(
            "bench",
            WriteRequest {
                timeseries,
                ..Default::default()
            },
        )
        .await
        .expect("push");
    }
    let push_time = started.elapsed();
    assert!(ing.flush_and_wait(Duration::from_secs(600)).await, "flush finished");
    let (chunks, bytes, samples) = (
        store.chunks.load(Ordering::Relaxed),
        store.bytes.load(Ordering::Relaxed),
        store.samples.load(Ordering::Relaxed),
    );
    assert_eq!(samples, pushed, "every pushed sample was flushed");
    let wal_bytes: f64 = metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("cortex_ingester_wal_logged_bytes_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    println!(
        "{} series ({hosts} node exporters), {hours}h at 15s, pushed in {:.1}s",
        series.len(),
        push_time.as_secs_f64()
    );
    println!(
        "chunks: {:.3} bytes/sample over {samples} samples ({chunks} chunks, {:.1} samples/chunk, {bytes} bytes)",
        bytes as f64 / samples as f64,
        samples as f64 / chunks as f64
    );
    if std::env::var("BREAKDOWN").is_ok() {
        for (name, (b, n)) in store.by_metric.lock().iter() {
            println!("  {name:45} {:.2} bytes/sample", *b as f64 / *n as f64);
        }
    }
    println!(
        "wal: {:.2} bytes/sample ({} bytes; one record batch per push)",
        wal_bytes / samples as f64,
        wal_bytes as u64
    );
}
