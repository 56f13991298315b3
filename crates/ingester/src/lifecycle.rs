//! The ingester's service state around the WAL: replay before accepting
//! writes, periodic checkpoints and fsyncs, and the stop sequences
//! (`/shutdown`, process stop).
//!
//! States: Starting (replaying; pushes get 503, `/ready` fails) → Running →
//! Stopping (a `/shutdown` flush in progress; pushes still accepted, as in
//! Cortex) → Stopped (pushes refused). A replay that fails on I/O leaves the
//! ingester Failed: it never reports ready, so it is never given writes
//! that it could not make durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use server::HttpError;

use crate::wal::{self, Wal};
use crate::Ingester;

pub(crate) const STARTING: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const STOPPING: u8 = 2;
pub(crate) const STOPPED: u8 = 3;
pub(crate) const FAILED: u8 = 4;

impl Ingester {
    /// Replays the WAL (if enabled or `recover_from_wal`), opens it for
    /// writing and starts the checkpoint/fsync loops. Blocking.
    pub(crate) fn recover_and_open_wal(self: &Arc<Self>) -> Result<(), wal::WalError> {
        let wcfg = &self.cfg.walconfig;
        let mut next_segment = 0;
        if wcfg.wal_enabled || wcfg.recover_from_wal {
            let (next, stats) = wal::replay::recover(self, wcfg, &self.wal_metrics)?;
            next_segment = next;
            *self.replay_stats.lock() = Some(stats);
        }
        if wcfg.wal_enabled {
            let w = Wal::open(wcfg, next_segment, self.wal_metrics.clone())?;
            let _ = self.wal.set(w);
        }
        Ok(())
    }

    /// Called from [`Ingester::new`]: replays in the background when a
    /// runtime is there (so `/metrics` serves meanwhile), else inline.
    pub(crate) fn start_wal(self: &Arc<Self>) {
        let wcfg = &self.cfg.walconfig;
        if !(wcfg.wal_enabled || wcfg.recover_from_wal) {
            self.state.store(RUNNING, Ordering::SeqCst);
            return;
        }
        let finish = |ing: &Arc<Ingester>, r: Result<(), wal::WalError>| {
            match r {
                Ok(()) => ing.state.store(RUNNING, Ordering::SeqCst),
                Err(e) => {
                    tracing::error!(error = %e, "WAL replay failed; the ingester will not become ready");
                    *ing.start_error.lock() = Some(e.to_string());
                    ing.state.store(FAILED, Ordering::SeqCst);
                }
            }
            ing.started.notify_waiters();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let ing = self.clone();
                let rt2 = rt.clone();
                rt.spawn(async move {
                    let ing2 = ing.clone();
                    let r = tokio::task::spawn_blocking(move || ing2.recover_and_open_wal())
                        .await
                        .unwrap_or_else(|e| {
                            Err(wal::WalError::Io {
                                path: ing.cfg.walconfig.wal_dir.clone().into(),
                                source: std::io::Error::other(e),
                            })
                        });
                    let ok = r.is_ok();
                    finish(&ing, r);
                    if ok {
                        ing.start_wal_loops(&rt2);
                    }
                });
            }
            Err(_) => {
                let r = self.recover_and_open_wal();
                finish(self, r);
            }
        }
    }

    fn start_wal_loops(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let Some(w) = self.wal.get().cloned() else { return };
        if let Some(period) = w.fsync_period() {
            crate::spawn_every(rt, &w, period, |w| async move {
                if let Err(e) = tokio::task::spawn_blocking(move || w.sync()).await.unwrap_or(Ok(())) {
                    tracing::warn!(error = %e, "WAL fsync failed");
                }
            });
        }
        let period = self.cfg.walconfig.checkpoint_duration.0;
        if self.cfg.walconfig.checkpoint_enabled && !period.is_zero() {
            crate::spawn_every(rt, self, period, |ing| async move {
                let _ = tokio::task::spawn_blocking(move || ing.checkpoint()).await;
            });
        }
    }

    /// Writes a checkpoint now (blocking). Returns the segment it covers.
    pub fn checkpoint(&self) -> Result<u64, wal::WalError> {
        let w = self.wal.get().ok_or_else(|| wal::WalError::Io {
            path: self.cfg.walconfig.wal_dir.clone().into(),
            source: std::io::Error::other("the WAL is not enabled"),
        })?;
        wal::checkpoint::create(self, w)
    }

    /// Waits until the WAL replay is over; the error says why it failed.
    pub async fn wait_started(&self) -> Result<(), String> {
        loop {
            let notified = self.started.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.state.load(Ordering::SeqCst) {
                STARTING => notified.await,
                FAILED => return Err(self.start_error.lock().clone().unwrap_or_default()),
                _ => return Ok(()),
            }
        }
    }

    /// What the start-up replay restored (None without a replay).
    pub fn replay_stats(&self) -> Option<wal::replay::ReplayStats> {
        *self.replay_stats.lock()
    }

    /// Readiness contributed by the service state.
    pub(crate) fn state_ready(&self) -> Result<(), String> {
        match self.state.load(Ordering::SeqCst) {
            RUNNING => Ok(()),
            STARTING => Err("ingester is replaying its WAL".into()),
            STOPPING | STOPPED => Err("ingester is shutting down".into()),
            _ => Err(format!(
                "ingester failed to start: {}",
                self.start_error.lock().clone().unwrap_or_default()
            )),
        }
    }

    /// Pushes are taken while Running or Stopping (spec §3.2), else 503.
    pub(crate) fn check_accepting(&self) -> Result<(), HttpError> {
        match self.state.load(Ordering::SeqCst) {
            RUNNING | STOPPING => Ok(()),
            _ => Err(HttpError::new(
                503,
                format!("ingester not accepting writes: {}", self.state_ready().unwrap_err()),
            )),
        }
    }

    /// `/shutdown`: flushes everything to the chunk store, leaves the ring
    /// and refuses further writes. The process stays up.
    pub async fn shutdown_and_flush(&self) {
        self.state.store(STOPPING, Ordering::SeqCst);
        if !self.flush_and_wait(Duration::from_secs(24 * 3600)).await {
            tracing::warn!("shutdown flush did not finish");
        }
        if let Some(lc) = self.lifecycler() {
            lc.shutdown().await;
        }
        self.state.store(STOPPED, Ordering::SeqCst);
        self.sync_wal();
    }

    /// Process stop: with the WAL, fsync it (chunks stay for the next start,
    /// unless `flush_on_shutdown_with_wal_enabled`); without, flush every
    /// chunk to the store within `timeout`.
    pub async fn stop(&self, timeout: Duration) {
        let wcfg = &self.cfg.walconfig;
        let flush = !wcfg.wal_enabled || wcfg.flush_on_shutdown_with_wal_enabled;
        if flush && !self.flush_and_wait(timeout).await {
            tracing::warn!(?timeout, "flush on shutdown did not finish in time");
        }
        self.sync_wal();
    }

    fn sync_wal(&self) {
        if let Some(w) = self.wal.get() {
            if let Err(e) = w.sync() {
                tracing::warn!(error = %e, "WAL fsync on shutdown failed");
            }
        }
    }
}
