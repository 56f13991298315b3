//! Per-tenant inverted index: label name → label value → fingerprints, with
//! names and values as the tenant's symbol ids (see `symbols`), so the index
//! holds no strings of its own.
//!
//! Sharded by fingerprint as Cortex does (32 shards): adding a series touches
//! one shard, and a lookup intersects postings inside each shard, where all
//! labels of a series live together, then concatenates the shards' results.
//! Postings hold fingerprints, not series: colliding series share one entry,
//! and the caller re-checks labels against the matchers after the lookup.
//!
//! Ids read from a shard are resolved while that shard's lock is held: an id
//! in the index stays live until its series is removed from the index.

use std::collections::HashMap;

use model::{Fingerprint, MatchType, Matcher};
use parking_lot::RwLock;

use crate::symbols::{SymbolId, Symbols};

const INDEX_SHARDS: usize = 32;

type Postings = Vec<Fingerprint>;

#[derive(Default)]
struct IndexShard {
    names: HashMap<SymbolId, HashMap<SymbolId, Postings>>,
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
    /// Indexes the series `fp` with interned labels `ids` (name, value, …).
    pub(crate) fn add(&self, fp: Fingerprint, ids: &[SymbolId]) {
        let mut shard = self.shards[shard_of(fp)].write();
        for p in ids.chunks_exact(2) {
            shard
                .names
                .entry(p[0])
                .or_default()
                .entry(p[1])
                .and_modify(|postings| add_posting(postings, fp))
                .or_insert_with(|| vec![fp]);
        }
    }

    /// Removes the postings of labels `ids` for `fp`. `still_present` lists
    /// the labels of other series that keep the same fingerprint
    /// (collisions): their pairs stay. Must run before `ids` are released.
    pub(crate) fn remove(&self, fp: Fingerprint, ids: &[SymbolId], still_present: &[&[SymbolId]]) {
        let mut shard = self.shards[shard_of(fp)].write();
        for p in ids.chunks_exact(2) {
            let (name, value) = (p[0], p[1]);
            if still_present
                .iter()
                .any(|o| o.chunks_exact(2).any(|q| q[0] == name && q[1] == value))
            {
                continue;
            }
            let Some(values) = shard.names.get_mut(&name) else {
                continue;
            };
            if let Some(postings) = values.get_mut(&value) {
                // Removal is rare (idle series): a scan of an unsorted list is fine.
                postings.retain(|&x| x != fp);
                if postings.is_empty() {
                    values.remove(&value);
                }
            }
            if values.is_empty() {
                shard.names.remove(&name);
            }
        }
    }

    /// Fingerprints of series that may match all `matchers`, sorted per
    /// shard. Every matcher must not match the empty string: those cannot be
    /// answered from postings (a series without the label matches) and are
    /// applied by the caller as filters.
    pub(crate) fn lookup(&self, symbols: &Symbols, matchers: &[&Matcher]) -> Vec<Fingerprint> {
        debug_assert!(matchers.iter().all(|m| !m.matches_empty()));
        if matchers.is_empty() {
            return Vec::new();
        }
        // A name or equality value nobody uses cannot match a non-empty
        // matcher. An id resolved here could be freed and reused before the
        // shards are read; that only adds candidates, which the caller
        // filters by the full labels anyway.
        let mut resolved: Vec<(SymbolId, Option<SymbolId>)> = Vec::with_capacity(matchers.len());
        {
            let r = symbols.read();
            for m in matchers {
                let Some(name) = r.lookup(&m.name) else {
                    return Vec::new();
                };
                let value = if m.kind == MatchType::Equal {
                    match r.lookup(&m.value) {
                        Some(v) => Some(v),
                        None => return Vec::new(),
                    }
                } else {
                    None
                };
                resolved.push((name, value));
            }
        }
        let mut result = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            let mut acc: Option<Postings> = None;
            for (m, &(name, value)) in matchers.iter().zip(&resolved) {
                let Some(values) = shard.names.get(&name) else {
                    acc = Some(Vec::new());
                    break;
                };
                let candidates: Postings = match value {
                    Some(v) => values.get(&v).map(|p| sorted_postings(p)).unwrap_or_default(),
                    None => {
                        let r = symbols.read();
                        let mut fps: Postings = values
                            .iter()
                            .filter(|(v, _)| m.matches(r.get(**v)))
                            .flat_map(|(_, p)| p.iter().copied())
                            .collect();
                        drop(r);
                        fps.sort_unstable();
                        fps.dedup();
                        fps
                    }
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
    pub(crate) fn label_names(&self, symbols: &Symbols) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            let r = symbols.read();
            names.extend(shard.names.keys().map(|&id| r.get(id).to_string()));
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// All values of label `name`, sorted.
    pub(crate) fn label_values(&self, symbols: &Symbols, name: &str) -> Vec<String> {
        let Some(name) = symbols.read().lookup(name) else {
            return Vec::new();
        };
        let mut values: Vec<String> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            if let Some(v) = shard.names.get(&name) {
                let r = symbols.read();
                values.extend(v.keys().map(|&id| r.get(id).to_string()));
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

    /// An index with its symbol table, as a tenant holds them.
    #[derive(Default)]
    struct Fixture {
        symbols: Symbols,
        idx: InvertedIndex,
    }

    impl Fixture {
        fn add(&self, fp: Fingerprint, pairs: &[(&str, &str)]) -> Box<[SymbolId]> {
            let ids = self.symbols.intern_pairs(pairs.iter().copied());
            self.idx.add(fp, &ids);
            ids
        }

        fn remove(&self, fp: Fingerprint, ids: &[SymbolId], still: &[&[SymbolId]]) {
            self.idx.remove(fp, ids, still);
            self.symbols.release(ids);
        }

        fn lookup(&self, matchers: &[&Matcher]) -> Vec<Fingerprint> {
            self.idx.lookup(&self.symbols, matchers)
        }

        fn names(&self) -> Vec<String> {
            self.idx.label_names(&self.symbols)
        }

        fn values(&self, name: &str) -> Vec<String> {
            self.idx.label_values(&self.symbols, name)
        }
    }

    fn index() -> (Fixture, Box<[SymbolId]>) {
        let f = Fixture::default();
        f.add(1, &[("__name__", "up"), ("job", "api")]);
        f.add(2, &[("__name__", "up"), ("env", "prod"), ("job", "db")]);
        let ids35 = f.add(35, &[("__name__", "cpu"), ("env", "dev"), ("job", "api")]);
        (f, ids35)
    }

    #[test]
    fn lookup_by_each_matcher_kind() {
        let (idx, _) = index();
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
        // A value that exists as a string elsewhere but not for this name.
        let crossed = m(MatchType::Equal, "job", "prod");
        assert!(idx.lookup(&[&crossed]).is_empty());
    }

    #[test]
    fn names_values_and_removal() {
        let (idx, ids35) = index();
        assert_eq!(idx.names(), vec!["__name__", "env", "job"]);
        assert_eq!(idx.values("job"), vec!["api", "db"]);
        assert!(idx.values("nope").is_empty());
        idx.remove(35, &ids35, &[]);
        assert_eq!(idx.values("__name__"), vec!["up"]);
        assert_eq!(idx.values("env"), vec!["prod"]);
        let eq = m(MatchType::Equal, "job", "api");
        assert_eq!(idx.lookup(&[&eq]), vec![1]);
        // "cpu" and "dev" had no other user: gone from the symbol table too.
        assert_eq!(idx.symbols.read().lookup("cpu"), None);
        assert_eq!(idx.symbols.read().lookup("dev"), None);
        assert!(idx.symbols.read().lookup("api").is_some());
    }

    #[test]
    fn unsorted_postings_intersect_correctly() {
        // Fingerprints arrive in random order and colliding series add the
        // same pair twice; lookups still see sorted, unique candidates.
        let idx = Fixture::default();
        let fps: Vec<Fingerprint> = vec![32 * 9, 32 * 3, 32 * 7, 32, 32 * 5, 32 * 3];
        let mut removable = None;
        for (i, &fp) in fps.iter().enumerate() {
            let job = if i % 2 == 0 { "a" } else { "b" };
            let ids = idx.add(fp, &[("__name__", "up"), ("job", job)]);
            if fp == 32 * 3 && job == "b" {
                removable = Some(ids);
            }
        }
        let name = m(MatchType::Equal, "__name__", "up");
        assert_eq!(idx.lookup(&[&name]), vec![32, 32 * 3, 32 * 5, 32 * 7, 32 * 9]);
        let b = m(MatchType::Equal, "job", "b");
        assert_eq!(idx.lookup(&[&name, &b]), vec![32, 32 * 3]);
        idx.remove(32 * 3, &removable.unwrap(), &[]);
        assert_eq!(idx.lookup(&[&name]), vec![32, 32 * 5, 32 * 7, 32 * 9]);
    }

    #[test]
    fn removal_keeps_pairs_of_colliding_series() {
        let idx = Fixture::default();
        let a = idx.add(7, &[("__name__", "x"), ("a", "1")]);
        let b = idx.add(7, &[("__name__", "x"), ("b", "2")]);
        idx.remove(7, &a, &[&b]);
        assert_eq!(idx.names(), vec!["__name__", "b"]);
        let name = m(MatchType::Equal, "__name__", "x");
        assert_eq!(idx.lookup(&[&name]), vec![7]);
    }
}
