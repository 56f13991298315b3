//! When each tenant was last seen, so per-tenant state (metric label sets
//! with a `user` label, rate-limiter buckets) can be freed once a tenant has
//! gone idle, as Cortex's `ActiveUsersCleanupService` does. Without it, every
//! `X-Scope-OrgID` ever sent — random ones included — would keep a label set
//! in `/metrics` forever.
//!
//! The map itself holds one small entry per tenant seen within the idle
//! timeout, and no more: [`TenantActivity::purge_idle`] drops the rest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const SHARDS: usize = 16;

struct Seen {
    last: Instant,
    /// Discard reasons counted for the tenant: the `reason` values of its
    /// `{reason, user}` label sets, to remove them with it.
    reasons: Vec<&'static str>,
}

/// A tenant that went idle, with the discard reasons it has label sets for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleTenant {
    pub tenant: String,
    pub reasons: Vec<&'static str>,
}

/// Last activity per tenant (lock-striped: pushes of different tenants rarely contend).
pub struct TenantActivity {
    shards: Box<[Mutex<HashMap<Box<str>, Seen>>]>,
}

impl Default for TenantActivity {
    fn default() -> Self {
        TenantActivity {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl TenantActivity {
    fn shard(&self, tenant: &str) -> &Mutex<HashMap<Box<str>, Seen>> {
        &self.shards[model::hash::fnv1a_32(tenant.as_bytes()) as usize % SHARDS]
    }

    /// Records activity of `tenant` at `now`.
    pub fn touch(&self, tenant: &str, now: Instant) {
        let mut shard = self.shard(tenant).lock();
        match shard.get_mut(tenant) {
            Some(seen) => seen.last = seen.last.max(now),
            None => {
                shard.insert(
                    tenant.into(),
                    Seen {
                        last: now,
                        reasons: Vec::new(),
                    },
                );
            }
        }
    }

    /// Records activity of `tenant` that counted a discard for `reason`.
    pub fn discarded(&self, tenant: &str, reason: &'static str, now: Instant) {
        let mut shard = self.shard(tenant).lock();
        let seen = match shard.get_mut(tenant) {
            Some(seen) => seen,
            None => shard.entry(tenant.into()).or_insert(Seen {
                last: now,
                reasons: Vec::new(),
            }),
        };
        seen.last = seen.last.max(now);
        if !seen.reasons.contains(&reason) {
            seen.reasons.push(reason);
        }
    }

    /// Forgets and returns every tenant not seen for `idle` before `now`,
    /// except those `keep` says still hold state (they stay tracked, so
    /// their labels are removed once they go, not leaked).
    pub fn purge_idle(&self, now: Instant, idle: Duration, mut keep: impl FnMut(&str) -> bool) -> Vec<IdleTenant> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            shard.lock().retain(|tenant, seen| {
                if now.saturating_duration_since(seen.last) < idle || keep(tenant) {
                    return true;
                }
                out.push(IdleTenant {
                    tenant: tenant.to_string(),
                    reasons: std::mem::take(&mut seen.reasons),
                });
                false
            });
        }
        out
    }

    /// Number of tenants tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_tenants_are_purged_with_their_reasons_unless_kept() {
        let a = TenantActivity::default();
        let t0 = Instant::now();
        a.touch("a", t0);
        a.discarded("b", "label_invalid", t0);
        a.discarded("b", "label_invalid", t0);
        a.discarded("b", "rate_limited", t0);
        a.touch("c", t0 + Duration::from_secs(50));
        a.touch("kept", t0);
        assert_eq!(a.len(), 4);
        let idle = Duration::from_secs(60);
        assert!(a.purge_idle(t0 + Duration::from_secs(59), idle, |_| false).is_empty());
        let mut gone = a.purge_idle(t0 + Duration::from_secs(61), idle, |t| t == "kept");
        gone.sort_by(|x, y| x.tenant.cmp(&y.tenant));
        assert_eq!(
            gone,
            vec![
                IdleTenant {
                    tenant: "a".into(),
                    reasons: vec![]
                },
                IdleTenant {
                    tenant: "b".into(),
                    reasons: vec!["label_invalid", "rate_limited"]
                },
            ]
        );
        assert_eq!(a.len(), 2, "c is not idle yet, kept holds state");
        // Activity moves the deadline.
        a.touch("c", t0 + Duration::from_secs(100));
        assert!(a.purge_idle(t0 + Duration::from_secs(150), idle, |t| t == "kept").is_empty());
        assert_eq!(a.purge_idle(t0 + Duration::from_secs(161), idle, |_| false).len(), 2);
        assert!(a.is_empty());
    }
}
