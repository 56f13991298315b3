//! Checkpoints: directory `checkpoint.NNNNNN` (NNNNNN = the last WAL segment
//! whose records it covers) holding WAL-framed segments of type-3 records,
//! one per in-memory series with all its chunks. Written as `….tmp`, fsynced,
//! then renamed, so a directory without `.tmp` is always complete.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::record::{encode_checkpoint_series, CheckpointSeries};
use super::segment::{self, SegmentWriter};
use super::{Wal, WalError};
use crate::user_state::SERIES_SHARDS;
use crate::Ingester;

const PREFIX: &str = "checkpoint.";
/// Checkpoint segments are smaller than WAL segments: they are written once
/// and read once, and smaller files make a torn checkpoint cheaper to detect.
const CHECKPOINT_SEGMENT_SIZE: usize = 8 * 1024 * 1024;

pub(crate) fn checkpoint_name(index: u64) -> String {
    format!("{PREFIX}{index:06}")
}

/// Complete checkpoints in `dir`, oldest first. Leftover `.tmp` directories
/// of an interrupted checkpoint are removed.
pub(crate) fn list_checkpoints(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if rest.ends_with(".tmp") {
            let _ = fs::remove_dir_all(entry.path());
            continue;
        }
        if let Ok(index) = rest.parse::<u64>() {
            if entry.file_type()?.is_dir() {
                out.push((index, entry.path()));
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// Writes a checkpoint of everything in memory and prunes what it makes
/// redundant. Blocking: run it off the async workers.
pub(crate) fn create(ing: &Ingester, wal: &Wal) -> Result<u64, WalError> {
    let started = Instant::now();
    let m = wal.metrics();
    m.checkpoint_creations.inc();
    let result = write(ing, wal);
    match &result {
        Ok(_) => m.checkpoint_duration.observe(started.elapsed().as_secs_f64()),
        Err(e) => {
            m.checkpoint_creations_failed.inc();
            tracing::error!(error = %e, "checkpoint failed");
        }
    }
    result
}

fn write(ing: &Ingester, wal: &Wal) -> Result<u64, WalError> {
    let dir = &wal.dir;
    // Every record logged so far is in segments <= `last`; memory already
    // holds all of them (records are logged after the in-memory append).
    let last = wal.cut_segment()?;
    let name = checkpoint_name(last);
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    let mut w = SegmentWriter::create(&tmp, 0, CHECKPOINT_SEGMENT_SIZE).map_err(WalError::io(&tmp))?;
    let mut series: Vec<CheckpointSeries> = Vec::new();
    let mut buf = Vec::new();
    let mut finished_files = Vec::new();
    for user in ing.users_snapshot() {
        for shard in 0..SERIES_SHARDS {
            // One shard's series are copied under its lock, then encoded
            // and written without it: pushes wait at most one shard copy.
            series.clear();
            user.checkpoint_shard(shard, &mut series);
            for s in &series {
                encode_checkpoint_series(s, &mut buf);
                if let Some(f) = w.log(&[&buf]).map_err(WalError::io(&tmp))? {
                    finished_files.push(f);
                }
            }
        }
    }
    w.sync().map_err(WalError::io(&tmp))?;
    for f in finished_files {
        f.sync_data().map_err(WalError::io(&tmp))?;
    }
    wal.metrics().checkpoint_bytes.inc_by(w.bytes_written);
    drop(w);
    segment::sync_dir(&tmp);
    let final_path = dir.join(&name);
    let _ = fs::remove_dir_all(&final_path);
    fs::rename(&tmp, &final_path).map_err(WalError::io(&final_path))?;
    segment::sync_dir(dir);
    tracing::info!(checkpoint = %name, "checkpoint done");
    prune(dir, wal);
    Ok(last)
}

/// Keeps the newest checkpoint and the one before it (the fallback if the
/// newest turns out corrupt) and every segment after the older of the two.
fn prune(dir: &Path, wal: &Wal) {
    let Ok(checkpoints) = list_checkpoints(dir) else { return };
    if checkpoints.len() < 2 {
        return;
    }
    let keep_after = checkpoints[checkpoints.len() - 2].0;
    let m = wal.metrics();
    for (index, path) in &checkpoints[..checkpoints.len() - 2] {
        m.checkpoint_deletions.inc();
        if let Err(e) = fs::remove_dir_all(path) {
            m.checkpoint_deletions_failed.inc();
            tracing::warn!(checkpoint = index, error = %e, "deleting old checkpoint");
        }
    }
    if let Ok(segments) = segment::list_segments(dir) {
        for s in segments.into_iter().filter(|&s| s <= keep_after) {
            if let Err(e) = fs::remove_file(dir.join(segment::segment_name(s))) {
                tracing::warn!(segment = s, error = %e, "deleting old WAL segment");
            }
        }
    }
}
