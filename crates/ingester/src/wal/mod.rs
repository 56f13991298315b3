//! The ingester's write-ahead log and checkpoints (spec §3.6).
//!
//! Every push logs, after its samples were appended in memory and before it
//! is acknowledged, one series record for the series it created and one
//! samples record with every sample it appended — a single `write` per
//! push. That makes the push durable against a process crash (`kill -9`):
//! the bytes are in the kernel's page cache when the client gets its 200.
//! Machine-crash durability depends on [`FsyncPolicy`].
//!
//! Every `checkpoint_duration` the whole in-memory state (every series with
//! its chunks) is written as a checkpoint named after the last segment it
//! covers; segments up to the *previous* checkpoint are then deleted, so a
//! checkpoint found corrupt at start can fall back to the one before it
//! with every segment still there.
//!
//! Two concurrent pushes to one series can log their records in the other
//! order from the one they appended in (each push appends to many series
//! under their shard locks, then logs once; no single log order can match
//! every series' append order when two pushes cross on two series). Replay
//! therefore restores each series' append order itself instead of trusting
//! log order: accepted samples of a series are strictly increasing in time,
//! so time order is append order ([`replay`]). That keeps the write path at
//! one unordered `write` per push, with no lock held across it.

pub(crate) mod checkpoint;
pub(crate) mod record;
pub(crate) mod replay;
pub(crate) mod segment;

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::GoDuration;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};
use server::config::Flag;

pub(crate) use record::WalBatch;
pub use replay::{load_checkpoint_segment, replay_segment, ReplayStats};
use segment::SegmentWriter;

/// When WAL writes are fsynced. Every policy hands the bytes to the OS
/// before the push is acknowledged, so a process crash loses nothing; the
/// policy only decides what a machine crash (power loss, kernel panic) can lose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before every acknowledgement: nothing acknowledged is lost on a
    /// machine crash; each push waits for the disk (typically 0.1–10 ms).
    Always,
    /// fsync every `wal_fsync_period` in the background and when a segment is
    /// finished: a machine crash loses at most that period; pushes never wait.
    Interval,
    /// Only finished segments are fsynced (Prometheus TSDB's behaviour): a
    /// machine crash can lose the current segment's unsynced tail.
    Never,
}

/// `ingester.walconfig` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct WalConfig {
    pub wal_enabled: bool,
    pub checkpoint_enabled: bool,
    /// Replay the WAL at start even when writing it is disabled.
    pub recover_from_wal: bool,
    pub wal_dir: String,
    pub checkpoint_duration: GoDuration,
    /// Also flush every chunk to the store on shutdown (normally the WAL
    /// keeps them for the next start).
    pub flush_on_shutdown_with_wal_enabled: bool,
    pub wal_fsync: FsyncPolicy,
    pub wal_fsync_period: GoDuration,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            wal_enabled: false,
            checkpoint_enabled: true,
            recover_from_wal: false,
            wal_dir: "wal".into(),
            checkpoint_duration: GoDuration::secs(30 * 60),
            flush_on_shutdown_with_wal_enabled: false,
            wal_fsync: FsyncPolicy::Interval,
            wal_fsync_period: GoDuration::secs(1),
        }
    }
}

/// WAL flags, paths relative to the `ingester` section.
pub const WAL_FLAGS: &[Flag] = &[
    Flag::new(
        "ingester.wal-enabled",
        "walconfig.wal_enabled",
        "Enable writing of ingested data into the WAL.",
    ),
    Flag::new(
        "ingester.checkpoint-enabled",
        "walconfig.checkpoint_enabled",
        "Enable checkpointing of in-memory chunks. It should always be true when using normally. Set it to false iff you are doing some small tests as there is no mechanism to delete the old WAL yet if checkpoint is disabled.",
    ),
    Flag::new(
        "ingester.recover-from-wal",
        "walconfig.recover_from_wal",
        "Recover data from existing WAL irrespective of WAL enabled/disabled.",
    ),
    Flag::new(
        "ingester.wal-dir",
        "walconfig.wal_dir",
        "The directory in which to write WAL.",
    ),
    Flag::new(
        "ingester.checkpoint-duration",
        "walconfig.checkpoint_duration",
        "Interval at which checkpoints should be created.",
    ),
    Flag::new(
        "ingester.flush-on-shutdown-with-wal-enabled",
        "walconfig.flush_on_shutdown_with_wal_enabled",
        "When WAL is enabled, should chunks be flushed to long-term storage on shutdown.",
    ),
    Flag::new(
        "ingester.wal-fsync",
        "walconfig.wal_fsync",
        "When to fsync the WAL: always (before acknowledging each push; no acknowledged sample is lost even on a machine crash, pushes wait for the disk), interval (every -ingester.wal-fsync-period in the background; a machine crash loses at most that period), never (only finished segments). Every policy survives a process crash.",
    ),
    Flag::new(
        "ingester.wal-fsync-period",
        "walconfig.wal_fsync_period",
        "How often the WAL is fsynced with -ingester.wal-fsync=interval.",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("WAL record: {0}")]
    Record(#[from] record::RecordError),
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { path, source }
    }
}

/// WAL and checkpoint metrics (Cortex names).
#[derive(Clone)]
pub(crate) struct WalMetrics {
    pub(crate) replay_duration: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) corruptions: Counter,
    pub(crate) records_logged: Counter,
    pub(crate) bytes_logged: Counter,
    pub(crate) checkpoint_duration: Histogram,
    pub(crate) checkpoint_creations: Counter,
    pub(crate) checkpoint_creations_failed: Counter,
    pub(crate) checkpoint_deletions: Counter,
    pub(crate) checkpoint_deletions_failed: Counter,
    pub(crate) checkpoint_bytes: Counter,
}

impl WalMetrics {
    pub(crate) fn new(registry: &server::Metrics) -> Self {
        let m = WalMetrics {
            replay_duration: Default::default(),
            corruptions: Counter::default(),
            records_logged: Counter::default(),
            bytes_logged: Counter::default(),
            checkpoint_duration: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            checkpoint_creations: Counter::default(),
            checkpoint_creations_failed: Counter::default(),
            checkpoint_deletions: Counter::default(),
            checkpoint_deletions_failed: Counter::default(),
            checkpoint_bytes: Counter::default(),
        };
        registry.register(
            "cortex_ingester_wal_replay_duration_seconds",
            "Time taken to replay the checkpoint and the WAL.",
            m.replay_duration.clone(),
        );
        registry.register(
            "cortex_ingester_wal_corruptions",
            "Total number of WAL corruptions encountered.",
            m.corruptions.clone(),
        );
        registry.register(
            "cortex_ingester_wal_records_logged",
            "Total number of WAL records logged.",
            m.records_logged.clone(),
        );
        registry.register(
            "cortex_ingester_wal_logged_bytes",
            "Total number of bytes written to disk for WAL records.",
            m.bytes_logged.clone(),
        );
        registry.register(
            "cortex_ingester_checkpoint_duration_seconds",
            "Time taken to create a checkpoint.",
            m.checkpoint_duration.clone(),
        );
        registry.register(
            "cortex_ingester_checkpoint_creations",
            "Total number of checkpoint creations attempted.",
            m.checkpoint_creations.clone(),
        );
        registry.register(
            "cortex_ingester_checkpoint_creations_failed",
            "Total number of checkpoint creations that failed.",
            m.checkpoint_creations_failed.clone(),
        );
        registry.register(
            "cortex_ingester_checkpoint_deletions",
            "Total number of checkpoint deletions attempted.",
            m.checkpoint_deletions.clone(),
        );
        registry.register(
            "cortex_ingester_checkpoint_deletions_failed",
            "Total number of checkpoint deletions that failed.",
            m.checkpoint_deletions_failed.clone(),
        );
        registry.register(
            "cortex_ingester_checkpoint_logged_bytes",
            "Total number of bytes written to disk for checkpointing.",
            m.checkpoint_bytes.clone(),
        );
        m
    }
}

/// The open WAL: the writer of the newest segment.
pub(crate) struct Wal {
    pub(crate) dir: PathBuf,
    cfg: WalConfig,
    writer: Mutex<SegmentWriter>,
    metrics: WalMetrics,
}

impl Wal {
    /// Opens the WAL for writing in a new segment after `last_segment`.
    pub(crate) fn open(cfg: &WalConfig, first_segment: u64, metrics: WalMetrics) -> Result<Arc<Wal>, WalError> {
        let dir = PathBuf::from(&cfg.wal_dir);
        let writer =
            SegmentWriter::create(&dir, first_segment, segment::DEFAULT_SEGMENT_SIZE).map_err(WalError::io(&dir))?;
        Ok(Arc::new(Wal {
            dir,
            cfg: cfg.clone(),
            writer: Mutex::new(writer),
            metrics,
        }))
    }

    /// Logs one push's records. Returns once the bytes are with the OS (and,
    /// with [`FsyncPolicy::Always`], on disk).
    pub(crate) async fn log(&self, batch: &WalBatch) -> Result<(), WalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = batch.records();
        let (finished, to_sync) = {
            let mut w = self.writer.lock();
            let before = w.bytes_written;
            let finished = w.log(&records).map_err(WalError::io(&self.dir))?;
            self.metrics.bytes_logged.inc_by(w.bytes_written - before);
            self.metrics.records_logged.inc_by(records.len() as u64);
            let to_sync = match self.cfg.wal_fsync {
                FsyncPolicy::Always => Some(w.file_handle().map_err(WalError::io(&self.dir))?),
                _ => None,
            };
            (finished, to_sync)
        };
        if let Some(f) = finished {
            // A finished segment is fsynced off the request path.
            tokio::task::spawn_blocking(move || f.sync_data());
        }
        if let Some(f) = to_sync {
            // fsync of the file covers every write made before it, ours included.
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || f.sync_data())
                .await
                .map_err(|e| WalError::Io {
                    path: dir.clone(),
                    source: io::Error::other(e),
                })?
                .map_err(WalError::io(dir))?;
        }
        Ok(())
    }

    /// Fsyncs the current segment (interval policy and shutdown).
    pub(crate) fn sync(&self) -> Result<(), WalError> {
        let f: File = self.writer.lock().file_handle().map_err(WalError::io(&self.dir))?;
        f.sync_data().map_err(WalError::io(&self.dir))
    }

    /// Finishes the current segment and starts a new one; returns the index
    /// of the finished segment (every record logged so far is in it or before).
    pub(crate) fn cut_segment(&self) -> Result<u64, WalError> {
        let mut w = self.writer.lock();
        let finished = w.index();
        let f = w.next_segment().map_err(WalError::io(&self.dir))?;
        drop(w);
        f.sync_data().map_err(WalError::io(&self.dir))?;
        Ok(finished)
    }

    pub(crate) fn metrics(&self) -> &WalMetrics {
        &self.metrics
    }

    pub(crate) fn fsync_period(&self) -> Option<Duration> {
        (self.cfg.wal_fsync == FsyncPolicy::Interval && !self.cfg.wal_fsync_period.0.is_zero())
            .then_some(self.cfg.wal_fsync_period.0)
    }
}
