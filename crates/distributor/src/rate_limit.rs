//! Per-tenant ingestion rate limiting (spec §1.6, `local` strategy): a token
//! bucket per tenant refilled at `ingestion_rate` per second, holding at most
//! `ingestion_burst_size` tokens; a request takes one token per sample and per
//! metadata entry, all or nothing (Go's `rate.Limiter.AllowN`).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Tenants are spread over this many independently locked maps so that
/// concurrent pushes of different tenants rarely contend.
const SHARDS: usize = 16;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

/// Token buckets for every tenant seen so far.
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl RateLimiter {
    /// Drops the buckets not used for `idle` before `now` that have refilled
    /// to their burst: such a bucket is exactly what a new one would be, so
    /// forgetting it changes no decision.
    pub fn purge_idle(&self, now: Instant, idle: std::time::Duration) {
        for shard in &self.shards {
            shard.lock().retain(|_, b| {
                let unused = now.saturating_duration_since(b.last);
                unused < idle || b.tokens + unused.as_secs_f64() * b.rate < b.burst
            });
        }
    }

    /// Number of tenants with a bucket.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `n` tokens from `tenant`'s bucket if it holds that many.
    /// A changed rate or burst (runtime overrides) applies from now on; the
    /// bucket keeps its level, capped at the new burst.
    pub fn allow_n(&self, tenant: &str, rate: f64, burst: usize, n: usize, now: Instant) -> bool {
        let shard = &self.shards[model::hash::fnv1a_32(tenant.as_bytes()) as usize % SHARDS];
        let mut buckets = shard.lock();
        let burst = burst as f64;
        let bucket = match buckets.get_mut(tenant) {
            Some(b) => b,
            None => buckets.entry(tenant.to_string()).or_insert(Bucket {
                tokens: burst,
                last: now,
                rate,
                burst,
            }),
        };
        if bucket.rate != rate || bucket.burst != burst {
            bucket.rate = rate;
            bucket.burst = burst;
        }
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = bucket.last.max(now);
        let n = n as f64;
        if n <= bucket.tokens {
            bucket.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_rate() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        assert!(rl.allow_n("a", 10.0, 20, 15, t0));
        assert!(!rl.allow_n("a", 10.0, 20, 6, t0), "only 5 tokens left");
        assert!(rl.allow_n("a", 10.0, 20, 5, t0));
        assert!(!rl.allow_n("a", 10.0, 20, 1, t0));
        // 0.5 s later, 5 tokens are back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(!rl.allow_n("a", 10.0, 20, 6, t1));
        assert!(rl.allow_n("a", 10.0, 20, 5, t1));
        // Refill never exceeds the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(!rl.allow_n("a", 10.0, 20, 21, t2));
        assert!(rl.allow_n("a", 10.0, 20, 20, t2));
    }

    #[test]
    fn tenants_are_independent() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        assert!(rl.allow_n("a", 1.0, 10, 10, t0));
        assert!(!rl.allow_n("a", 1.0, 10, 1, t0));
        assert!(rl.allow_n("b", 1.0, 10, 10, t0));
    }

    #[test]
    fn idle_full_buckets_are_dropped_and_refilling_ones_kept() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        assert!(rl.allow_n("a", 10.0, 20, 20, t0));
        // 1 token per 100 s: after 60 s idle, b is still far from full.
        assert!(rl.allow_n("b", 0.01, 20, 20, t0));
        assert_eq!(rl.len(), 2);
        rl.purge_idle(t0 + Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(rl.len(), 2, "not idle long enough");
        rl.purge_idle(t0 + Duration::from_secs(61), Duration::from_secs(60));
        assert_eq!(rl.len(), 1, "a refilled and went; b still owes tokens");
        // b's debt is remembered: it still cannot take its full burst.
        assert!(!rl.allow_n("b", 0.01, 20, 20, t0 + Duration::from_secs(61)));
        rl.purge_idle(t0 + Duration::from_secs(10_000), Duration::from_secs(60));
        assert!(rl.is_empty());
    }

    #[test]
    fn more_than_burst_is_never_allowed() {
        let rl = RateLimiter::default();
        assert!(!rl.allow_n("a", 1e9, 100, 101, Instant::now()));
    }
}
