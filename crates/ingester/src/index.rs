//! Per-tenant inverted index: label name → label value → fingerprints.
//!
//! Sharded by fingerprint as Cortex does (32 shards): adding a series touches
//! one shard, and a lookup intersects postings inside each shard, where all
//! labels of a series live together, then concatenates the shards' results.
//! Postings hold fingerprints, not series: colliding series share one entry,
//! and the caller re-checks labels against the matchers after the lookup.

use std::collections::HashMap;

use model::{Fingerprint, Labels, MatchType, Matcher};
use parking_lot::RwLock;

const INDEX_SHARDS: usize = 32;

type Postings = Vec<Fingerprint>;

#[derive(Default)]
struct IndexShard {
    names: HashMap<String, HashMap<String, Postings>>,
}

pub(crate) struct InvertedIndex {
    shards: Box<[RwLock<IndexShard>]>,
}

impl Default for InvertedIndex {
    fn default() -> Self {
        InvertedIndex {
            shards: (0..INDEX_SHARDS).map(|_| RwLock::new(IndexShard::default())).collect(),
        }
    }
}

fn shard_of(fp: Fingerprint) -> usize {
    (fp % INDEX_SHARDS as u64) as usize
}

/// Postings are kept in insertion order: fingerprints are random, so keeping
/// them sorted meant a memmove of half the list per new series (quadratic in
/// the series of a popular label such as `job`; it was the top cost of series
/// creation). A lookup copies the postings it reads anyway and sorts the copy.
/// The last entry is checked so a colliding series adding the same pair right
/// after does not duplicate it; other duplicates are removed at lookup.
fn add_posting(postings: &mut Postings, fp: Fingerprint) {
    if postings.last() != Some(&fp) {
        postings.push(fp);
    }
}

/// Sorted, deduplicated copy of `postings`.
fn sorted_postings(postings: &[Fingerprint]) -> Postings {
    let mut v = postings.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Intersection of two sorted, deduplicated lists.
fn intersect(a: &[Fingerprint], b: &[Fingerprint]) -> Postings {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

impl InvertedIndex {
    pub(crate) fn add(&self, fp: Fingerprint, labels: &Labels) {
        let mut shard = self.shards[shard_of(fp)].write();
        for l in labels {
            let values = match shard.names.get_mut(l.name.as_str()) {
                Some(v) => v,
                None => shard.names.entry(l.name.clone()).or_default(),
            };
            match values.get_mut(l.value.as_str()) {
                Some(p) => add_posting(p, fp),
                None => {
                    values.insert(l.value.clone(), vec![fp]);
                }
            }
        }
    }

    /// Removes `labels`' postings for `fp`. `still_present` lists the labels of
    /// other series that keep the same fingerprint (collisions): their pairs stay.
    // Called by series removal once flushing exists (next task); tested below.
    #[allow(dead_code)]
    pub(crate) fn remove(&self, fp: Fingerprint, labels: &Labels, still_present: &[&Labels]) {
        let mut shard = self.shards[shard_of(fp)].write();
        for l in labels {
            if still_present.iter().any(|o| o.get(&l.name) == l.value) {
                continue;
            }
            let Some(values) = shard.names.get_mut(l.name.as_str()) else {
                continue;
            };
            if let Some(p) = values.get_mut(l.value.as_str()) {
                // Removal is rare (idle series): a scan of an unsorted list is fine.
                p.retain(|&x| x != fp);
                if p.is_empty() {
                    values.remove(l.value.as_str());
                }
            }
            if values.is_empty() {
                shard.names.remove(l.name.as_str());
            }
        }
    }

    /// Fingerprints of series that may match all `matchers`, sorted per
    /// shard. Every matcher must not match the empty string: those cannot be
    /// answered from postings (a series without the label matches) and are
    /// applied by the caller as filters.
    pub(crate) fn lookup(&self, matchers: &[&Matcher]) -> Vec<Fingerprint> {
        debug_assert!(matchers.iter().all(|m| !m.matches_empty()));
        if matchers.is_empty() {
            return Vec::new();
        }
        let mut result = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            let mut acc: Option<Postings> = None;
            for m in matchers {
                let Some(values) = shard.names.get(m.name.as_str()) else {
                    acc = Some(Vec::new());
                    break;
                };
                let candidates: Postings = if m.kind == MatchType::Equal {
                    values
                        .get(m.value.as_str())
                        .map(|p| sorted_postings(p))
                        .unwrap_or_default()
                } else {
                    let mut fps: Postings = values
                        .iter()
                        .filter(|(v, _)| m.matches(v))
                        .flat_map(|(_, p)| p.iter().copied())
                        .collect();
                    fps.sort_unstable();
                    fps.dedup();
                    fps
                };
                let next = match acc {
                    None => candidates,
                    Some(prev) => intersect(&prev, &candidates),
                };
                let empty = next.is_empty();
                acc = Some(next);
                if empty {
                    break;
                }
            }
            result.extend(acc.unwrap_or_default());
        }
        result
    }

    /// All label names, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for shard in self.shards.iter() {
            names.extend(shard.read().names.keys().cloned());
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// All values of label `name`, sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        for shard in self.shards.iter() {
            if let Some(v) = shard.read().names.get(name) {
                values.extend(v.keys().cloned());
            }
        }
        values.sort_unstable();
        values.dedup();
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MatchType, n: &str, v: &str) -> Matcher {
        Matcher::new(kind, n, v).unwrap()
    }

    fn sorted(mut v: Vec<Fingerprint>) -> Vec<Fingerprint> {
        v.sort_unstable();
        v
    }

    fn index() -> InvertedIndex {
        let idx = InvertedIndex::default();
        idx.add(1, &Labels::from_pairs([("__name__", "up"), ("job", "api")]));
        idx.add(
            2,
            &Labels::from_pairs([("__name__", "up"), ("job", "db"), ("env", "prod")]),
        );
        idx.add(
            35,
            &Labels::from_pairs([("__name__", "cpu"), ("job", "api"), ("env", "dev")]),
        );
        idx
    }

    #[test]
    fn lookup_by_each_matcher_kind() {
        let idx = index();
        let eq = m(MatchType::Equal, "job", "api");
        assert_eq!(sorted(idx.lookup(&[&eq])), vec![1, 35]);
        let re = m(MatchType::RegexMatch, "job", "a.*|d.");
        assert_eq!(sorted(idx.lookup(&[&re])), vec![1, 2, 35]);
        // Non-empty-matching forms of != and !~ (they require the label to exist).
        let ne = m(MatchType::NotEqual, "env", "");
        assert_eq!(sorted(idx.lookup(&[&ne])), vec![2, 35]);
        let nre = m(MatchType::RegexNoMatch, "env", "|dev");
        assert_eq!(sorted(idx.lookup(&[&nre])), vec![2]);
        let name = m(MatchType::Equal, "__name__", "up");
        assert_eq!(sorted(idx.lookup(&[&name, &eq])), vec![1]);
        let missing = m(MatchType::Equal, "nope", "x");
        assert!(idx.lookup(&[&name, &missing]).is_empty());
    }

    #[test]
    fn names_values_and_removal() {
        let idx = index();
        assert_eq!(idx.label_names(), vec!["__name__", "env", "job"]);
        assert_eq!(idx.label_values("job"), vec!["api", "db"]);
        let l35 = Labels::from_pairs([("__name__", "cpu"), ("job", "api"), ("env", "dev")]);
        idx.remove(35, &l35, &[]);
        assert_eq!(idx.label_values("__name__"), vec!["up"]);
        assert_eq!(idx.label_values("env"), vec!["prod"]);
        let eq = m(MatchType::Equal, "job", "api");
        assert_eq!(idx.lookup(&[&eq]), vec![1]);
    }

    #[test]
    fn unsorted_postings_intersect_correctly() {
        // Fingerprints arrive in random order and colliding series add the
        // same pair twice; lookups still see sorted, unique candidates.
        let idx = InvertedIndex::default();
        let fps: Vec<Fingerprint> = vec![32 * 9, 32 * 3, 32 * 7, 32, 32 * 5, 32 * 3];
        for (i, &fp) in fps.iter().enumerate() {
            let job = if i % 2 == 0 { "a" } else { "b" };
            idx.add(fp, &Labels::from_pairs([("__name__", "up"), ("job", job)]));
        }
        let name = m(MatchType::Equal, "__name__", "up");
        assert_eq!(idx.lookup(&[&name]), vec![32, 32 * 3, 32 * 5, 32 * 7, 32 * 9]);
        let b = m(MatchType::Equal, "job", "b");
        assert_eq!(idx.lookup(&[&name, &b]), vec![32, 32 * 3]);
        idx.remove(32 * 3, &Labels::from_pairs([("__name__", "up"), ("job", "b")]), &[]);
        assert_eq!(idx.lookup(&[&name]), vec![32, 32 * 5, 32 * 7, 32 * 9]);
    }

    #[test]
    fn removal_keeps_pairs_of_colliding_series() {
        let idx = InvertedIndex::default();
        let a = Labels::from_pairs([("__name__", "x"), ("a", "1")]);
        let b = Labels::from_pairs([("__name__", "x"), ("b", "2")]);
        idx.add(7, &a);
        idx.add(7, &b);
        idx.remove(7, &a, &[&b]);
        assert_eq!(idx.label_names(), vec!["__name__", "b"]);
        let name = m(MatchType::Equal, "__name__", "x");
        assert_eq!(idx.lookup(&[&name]), vec![7]);
    }
}
