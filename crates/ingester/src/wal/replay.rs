//! Recovery at start: the newest readable checkpoint, then every WAL segment
//! after it. A corrupt segment tail is cut off (and counted); a corrupt
//! checkpoint is deleted and the previous one used.
//!
//! Records of concurrent pushes may be logged in another order than their
//! samples were appended (see [`super`]); replay restores the append order:
//! a series' samples are put in time order, which for accepted samples is
//! their append order ([`crate::series::MemorySeries::replay_sample`]), and
//! samples logged before the record creating their series wait for it.
//! Samples already present (duplicates, e.g. from the checkpoint) are skipped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use model::{Fingerprint, Labels};
use proto::cortex::Sample;

use super::checkpoint::list_checkpoints;
use super::record::{decode, labels_from_pairs, CheckpointSeries, Record, RecordError, RefSample};
use super::segment::{self, read_segment};
use super::{WalConfig, WalError, WalMetrics};
use crate::series::ChunkDesc;
use crate::user_state::{PushOutcome, SeriesLimits, UserState};
use crate::Ingester;

/// What a replay restored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub checkpoint_series: u64,
    pub series_created: u64,
    pub samples_appended: u64,
    pub samples_skipped: u64,
    pub corruptions: u64,
}

const NO_LIMITS: SeriesLimits = SeriesLimits {
    max_series_per_user: 0,
    max_series_per_metric: 0,
};

/// Restores `ing` from `cfg.wal_dir`; returns the index the next segment to
/// write should have, and what was restored.
pub(crate) fn recover(ing: &Ingester, cfg: &WalConfig, metrics: &WalMetrics) -> Result<(u64, ReplayStats), WalError> {
    let started = Instant::now();
    let dir = Path::new(&cfg.wal_dir);
    std::fs::create_dir_all(dir).map_err(WalError::io(dir))?;
    let mut stats = ReplayStats::default();

    let mut checkpoints = list_checkpoints(dir).map_err(WalError::io(dir))?;
    let mut from_segment = 0u64;
    while let Some((index, path)) = checkpoints.pop() {
        match load_checkpoint(ing, &path, &mut stats) {
            Ok(()) => {
                tracing::info!(checkpoint = %path.display(), series = stats.checkpoint_series, "checkpoint loaded");
                from_segment = index + 1;
                break;
            }
            Err(e) => {
                tracing::error!(checkpoint = %path.display(), error = %e, "corrupt checkpoint deleted; trying the previous one");
                metrics.corruptions.inc();
                stats.corruptions += 1;
                ing.clear_users();
                stats.checkpoint_series = 0;
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    let segments: Vec<u64> = segment::list_segments(dir)
        .map_err(WalError::io(dir))?
        .into_iter()
        .filter(|&s| s >= from_segment)
        .collect();
    let mut next_segment = from_segment;
    let mut replayer = SegmentReplayer::new(ing);
    for s in segments {
        next_segment = s + 1;
        let corruption = read_segment(dir, s, |rec| replayer.record(rec, &mut stats)).map_err(WalError::io(dir))?;
        if let Some(c) = corruption {
            tracing::warn!(corruption = %c, "WAL corruption: truncating here and dropping later segments");
            metrics.corruptions.inc();
            stats.corruptions += 1;
            segment::repair(dir, &c).map_err(WalError::io(dir))?;
            break;
        }
    }
    replayer.finish(&mut stats);
    let elapsed = started.elapsed();
    metrics.replay_duration.set(elapsed.as_secs_f64());
    tracing::info!(?stats, duration = ?elapsed, "WAL replay done");
    Ok((next_segment, stats))
}

fn load_checkpoint(ing: &Ingester, path: &Path, stats: &mut ReplayStats) -> Result<(), WalError> {
    let mut samples = Vec::new();
    for s in segment::list_segments(path).map_err(WalError::io(path))? {
        let mut failure: Option<RecordError> = None;
        let corruption = read_segment(path, s, |rec| {
            if failure.is_none() {
                failure = checkpoint_record(ing, rec, &mut samples, stats).err();
            }
        })
        .map_err(WalError::io(path))?;
        if let Some(c) = corruption {
            return Err(WalError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, c.to_string()),
            });
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
    Ok(())
}

/// Restores the series of one checkpoint record.
fn checkpoint_record(
    ing: &Ingester,
    rec: &[u8],
    samples: &mut Vec<RefSample>,
    stats: &mut ReplayStats,
) -> Result<(), RecordError> {
    match decode(rec, samples)? {
        Record::Checkpoint(series) => {
            restore(ing, series)?;
            stats.checkpoint_series += 1;
            Ok(())
        }
        _ => Err(RecordError::UnknownType(0)),
    }
}

/// Replays the bytes of one WAL segment into `ing` as [`recover`] replays each
/// segment file (for fuzzing and tools: no files involved). Returns what was
/// restored and the corruption that ended the read early, if any.
pub fn replay_segment(ing: &Ingester, data: &[u8]) -> (ReplayStats, Option<String>) {
    let mut stats = ReplayStats::default();
    let mut replayer = SegmentReplayer::new(ing);
    let corruption = segment::read_segment_bytes(0, data, |rec| replayer.record(rec, &mut stats));
    (stats, corruption.map(|c| c.to_string()))
}

/// Loads the bytes of one checkpoint segment into `ing` as [`recover`] loads a
/// checkpoint (for fuzzing and tools). Fails on the first corrupt frame or record.
pub fn load_checkpoint_segment(ing: &Ingester, data: &[u8]) -> Result<ReplayStats, String> {
    let mut stats = ReplayStats::default();
    let mut samples = Vec::new();
    let mut failure: Option<RecordError> = None;
    let corruption = segment::read_segment_bytes(0, data, |rec| {
        if failure.is_none() {
            failure = checkpoint_record(ing, rec, &mut samples, &mut stats).err();
        }
    });
    match (corruption, failure) {
        (Some(c), _) => Err(c.to_string()),
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Ok(stats),
    }
}

fn restore(ing: &Ingester, s: CheckpointSeries) -> Result<(), RecordError> {
    let labels = labels_from_pairs(&s.labels)?;
    let now = model::now_ms();
    let mut chunks = Vec::with_capacity(s.chunks.len());
    for c in s.chunks {
        let chunk = chunk::XorChunk::from_bytes(c.data).map_err(|_| RecordError::Truncated)?;
        chunks.push(ChunkDesc::restored(
            chunk,
            c.start_timestamp_ms,
            c.end_timestamp_ms,
            now,
        ));
    }
    let user = ing.user_or_create(&s.user_id);
    let (series_created, chunks_created) = user.restore_series(s.fingerprint, labels, chunks);
    ing.count_restored(&user, series_created, chunks_created);
    Ok(())
}

/// Most samples held back waiting for the record of their series (only
/// pushes in flight together produce such samples; this bounds what a
/// damaged WAL can make replay hold).
const MAX_WAITING_SAMPLES: usize = 1 << 20;

/// Applies WAL records in order, remembering the labels of every series
/// record (a samples record refers to series by fingerprint).
struct SegmentReplayer<'a> {
    ing: &'a Ingester,
    refs: HashMap<Arc<str>, HashMap<Fingerprint, Labels>>,
    /// Samples of series not known yet, by tenant and fingerprint: the
    /// push that created the series logged after a push that appended to it.
    waiting: HashMap<Arc<str>, HashMap<Fingerprint, Vec<Sample>>>,
    waiting_samples: usize,
    samples: Vec<RefSample>,
    run: Vec<Sample>,
}

impl<'a> SegmentReplayer<'a> {
    fn new(ing: &'a Ingester) -> Self {
        SegmentReplayer {
            ing,
            refs: HashMap::new(),
            waiting: HashMap::new(),
            waiting_samples: 0,
            samples: Vec::new(),
            run: Vec::new(),
        }
    }

    /// Samples whose series never appeared are lost; counted as skipped.
    fn finish(self, stats: &mut ReplayStats) {
        if self.waiting_samples > 0 {
            tracing::warn!(
                samples = self.waiting_samples,
                "WAL samples of series without a series record skipped"
            );
            stats.samples_skipped += self.waiting_samples as u64;
        }
    }

    fn record(&mut self, rec: &[u8], stats: &mut ReplayStats) {
        self.samples.clear();
        match decode(rec, &mut self.samples) {
            Ok(Record::Series { tenant, series }) => {
                let tenant: Arc<str> = match self.refs.get_key_value(tenant) {
                    Some((t, _)) => t.clone(),
                    None => Arc::from(tenant),
                };
                let mut ready: Vec<(Fingerprint, Vec<Sample>)> = Vec::new();
                if let Some(waiting) = self.waiting.get_mut(&tenant) {
                    for (fp, _) in &series {
                        if let Some(w) = waiting.remove(fp) {
                            ready.push((*fp, w));
                        }
                    }
                }
                self.refs.entry(tenant.clone()).or_default().extend(series);
                if !ready.is_empty() {
                    let user = self.ing.user_or_create(&tenant);
                    let now = model::now_ms();
                    for (fp, mut run) in ready {
                        self.waiting_samples -= run.len();
                        run.sort_by_key(|s| s.timestamp_ms);
                        let labels = self.refs[&tenant][&fp].clone();
                        self.run = run;
                        self.apply_run(&user, fp, &labels, now, stats);
                    }
                }
            }
            Ok(Record::Samples { tenant }) => {
                let tenant: Arc<str> = Arc::from(tenant);
                self.apply_samples(&tenant, stats);
            }
            Ok(Record::Checkpoint(_)) => {
                tracing::warn!("checkpoint record inside a WAL segment ignored");
            }
            // The frame's CRC was right, so this is a bug or a foreign file: skip it.
            Err(e) => tracing::warn!(error = %e, "undecodable WAL record skipped"),
        }
    }

    fn apply_samples(&mut self, tenant: &Arc<str>, stats: &mut ReplayStats) {
        let user = self.ing.user_or_create(tenant);
        let now = model::now_ms();
        let samples = std::mem::take(&mut self.samples);
        let mut i = 0;
        while i < samples.len() {
            // A push logs each series' samples together: apply them as a run.
            let fp = samples[i].fp;
            let mut j = i;
            self.run.clear();
            while j < samples.len() && samples[j].fp == fp {
                self.run.push(Sample {
                    value: samples[j].v,
                    timestamp_ms: samples[j].t,
                });
                j += 1;
            }
            let labels = self
                .refs
                .get(tenant)
                .and_then(|r| r.get(&fp))
                .cloned()
                .or_else(|| user.labels_of(fp));
            match labels {
                Some(labels) => self.apply_run(&user, fp, &labels, now, stats),
                None if self.waiting_samples + self.run.len() <= MAX_WAITING_SAMPLES => {
                    self.waiting_samples += self.run.len();
                    let waiting = self.waiting.entry(tenant.clone()).or_default();
                    waiting.entry(fp).or_default().extend_from_slice(&self.run);
                }
                None => {
                    stats.samples_skipped += (j - i) as u64;
                    tracing::debug!(tenant = %tenant, fp, "WAL samples for an unknown series skipped");
                }
            }
            i = j;
        }
        self.samples = samples;
    }

    fn apply_run(&mut self, user: &UserState, fp: Fingerprint, labels: &Labels, now: i64, stats: &mut ReplayStats) {
        let pairs: Vec<(&[u8], &[u8])> = labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())).collect();
        let mut out = PushOutcome {
            replaying: true,
            ..Default::default()
        };
        user.push_series(fp, &pairs, &self.run, NO_LIMITS, now, &mut out);
        stats.samples_appended += out.appended;
        stats.samples_skipped += self.run.len() as u64 - out.appended;
        stats.series_created += out.series_created;
        self.ing.count_restored(user, out.series_created, out.chunks_created);
    }
}

impl Ingester {
    /// Counts series and chunks restored by a replay in the memory metrics.
    pub(crate) fn count_restored(&self, user: &UserState, series_created: u64, chunks_created: u64) {
        let m = &self.metrics;
        if series_created > 0 {
            m.memory_series.inc_by(series_created as i64);
            m.series_created
                .get_or_create(&crate::metrics::UserLabel {
                    user: user.tenant.to_string(),
                })
                .inc_by(series_created);
        }
        if chunks_created > 0 {
            m.memory_chunks.inc_by(chunks_created as i64);
        }
    }

    /// Forgets every tenant (a checkpoint that failed half-way is discarded
    /// before the previous one is loaded).
    pub(crate) fn clear_users(&self) {
        let mut users = self.users.write();
        users.clear();
        self.metrics.memory_users.set(0);
        self.metrics.memory_series.set(0);
        self.metrics.memory_chunks.set(0);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proto::cortex::{LabelPair, TimeSeries, WriteRequest};

    use super::*;
    use crate::Config;

    fn fresh() -> Arc<Ingester> {
        Ingester::new(Config::default(), &server::Metrics::new())
    }

    /// What a real ingester logged, replayed from memory as from its files.
    #[tokio::test]
    async fn segment_and_checkpoint_bytes_replay_as_files_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.walconfig.wal_enabled = true;
        cfg.walconfig.wal_dir = dir.path().to_string_lossy().into_owned();
        let ing = Ingester::new(cfg, &server::Metrics::new());
        ing.wait_started().await.unwrap();
        let timeseries = (0..3)
            .map(|i| TimeSeries {
                labels: vec![
                    LabelPair {
                        name: Bytes::from_static(b"__name__"),
                        value: Bytes::from_static(b"m"),
                    },
                    LabelPair {
                        name: Bytes::from_static(b"id"),
                        value: Bytes::from(i.to_string()),
                    },
                ],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp_ms: 1000,
                    },
                    Sample {
                        value: 2.0,
                        timestamp_ms: 2000,
                    },
                ],
            })
            .collect();
        ing.push(
            "t1",
            WriteRequest {
                timeseries,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let segment = std::fs::read(dir.path().join(segment::segment_name(0))).unwrap();

        let (stats, corruption) = replay_segment(&fresh(), &segment);
        assert_eq!(corruption, None);
        assert_eq!((stats.series_created, stats.samples_appended), (3, 6));
        // A torn tail: what is intact replays, and the reader says where it stopped.
        let (stats, corruption) = replay_segment(&fresh(), &segment[..segment.len() - 1]);
        assert!(corruption.is_some_and(|c| c.contains("offset")));
        assert_eq!(stats.samples_appended, 0);

        let covered = ing.checkpoint().unwrap();
        let ckpt = dir
            .path()
            .join(super::super::checkpoint::checkpoint_name(covered))
            .join(segment::segment_name(0));
        let checkpoint = std::fs::read(ckpt).unwrap();
        let stats = load_checkpoint_segment(&fresh(), &checkpoint).unwrap();
        assert_eq!(stats.checkpoint_series, 3);
        assert!(load_checkpoint_segment(&fresh(), &checkpoint[..checkpoint.len() / 2]).is_err());
        // A WAL segment is not a checkpoint.
        assert!(load_checkpoint_segment(&fresh(), &segment).is_err());
    }
}
