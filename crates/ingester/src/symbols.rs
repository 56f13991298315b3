//! Interned label strings, one table per tenant.
//!
//! A series stores its labels as `u32` symbol ids (name, value, name, value,
//! …) instead of a `model::Labels` of owned `String`s: 8 bytes per label
//! instead of 48 plus two heap allocations. Strings are shared by every series
//! using them (`job="node-exporter"` is stored once, not once per series), and
//! the inverted index is keyed by the same ids.
//!
//! Each symbol counts the label slots of live series referring to it, so a
//! string disappears with the last series using it and churning label values
//! (pod names) do not make the table grow without bound.
//!
//! Locking: one `RwLock` per tenant. Interning happens only when a series is
//! created, which is already serialised per tenant by the series-limit lock,
//! so a single writer lock adds no new serialisation; appends to existing
//! series only read (to compare labels on a fingerprint hit), and readers do
//! not block each other. This lock is always the innermost one: nothing else
//! is locked while it is held, so it cannot take part in a lock cycle.
//!
//! Id validity: an id may only be resolved while something that holds a
//! reference to it is known to be alive — a series under its shard lock, or
//! an index entry under its index-shard lock (the index is cleared of a
//! series before the series' references are released).

use std::collections::HashMap;
use std::sync::Arc;

use model::{Label, Labels};
use parking_lot::{RwLock, RwLockReadGuard};

pub(crate) type SymbolId = u32;

#[derive(Default)]
struct Inner {
    ids: HashMap<Arc<str>, SymbolId>,
    /// By id: the string and how many label slots of live series use it;
    /// `None` for a freed id (listed in `free`).
    entries: Vec<Option<(Arc<str>, u32)>>,
    free: Vec<SymbolId>,
}

#[derive(Default)]
pub(crate) struct Symbols {
    inner: RwLock<Inner>,
}

/// Read access to the table: resolves many ids under one lock acquisition.
pub(crate) struct SymbolsRead<'a>(RwLockReadGuard<'a, Inner>);

impl SymbolsRead<'_> {
    #[inline]
    pub(crate) fn get(&self, id: SymbolId) -> &str {
        match self.0.entries.get(id as usize) {
            Some(Some((s, _))) => s,
            // Ids are only handed out for live strings and released with the
            // series holding them; a missing one is a bookkeeping bug.
            _ => panic!("symbol {id} is not in the table"),
        }
    }

    /// The id of `s`, if some live series uses it.
    pub(crate) fn lookup(&self, s: &str) -> Option<SymbolId> {
        self.0.ids.get(s).copied()
    }

    /// Do the interned pairs `ids` equal `pairs` (same order)?
    #[inline]
    pub(crate) fn equals(&self, ids: &[SymbolId], pairs: &[(&[u8], &[u8])]) -> bool {
        ids.len() == pairs.len() * 2
            && ids
                .chunks_exact(2)
                .zip(pairs)
                .all(|(p, (n, v))| self.get(p[0]).as_bytes() == *n && self.get(p[1]).as_bytes() == *v)
    }

    /// Do the interned pairs `ids` equal `labels`?
    pub(crate) fn equals_labels(&self, ids: &[SymbolId], labels: &Labels) -> bool {
        ids.len() == labels.len() * 2
            && ids
                .chunks_exact(2)
                .zip(labels.iter())
                .all(|(p, l)| self.get(p[0]) == l.name && self.get(p[1]) == l.value)
    }

    /// The value of label `name`, "" when absent (Prometheus semantics).
    pub(crate) fn value_of<'s>(&'s self, ids: &[SymbolId], name: &str) -> &'s str {
        ids.chunks_exact(2)
            .find(|p| self.get(p[0]) == name)
            .map_or("", |p| self.get(p[1]))
    }

    /// Do the interned labels satisfy every matcher?
    pub(crate) fn matches_all(&self, ids: &[SymbolId], matchers: &[model::Matcher]) -> bool {
        matchers.iter().all(|m| m.matches(self.value_of(ids, &m.name)))
    }

    /// The labels as a `model::Labels` (query results, WAL, flush, errors).
    pub(crate) fn labels(&self, ids: &[SymbolId]) -> Labels {
        Labels::from_sorted(
            ids.chunks_exact(2)
                .map(|p| Label {
                    name: self.get(p[0]).to_string(),
                    value: self.get(p[1]).to_string(),
                })
                .collect(),
        )
    }
}

impl Symbols {
    pub(crate) fn read(&self) -> SymbolsRead<'_> {
        SymbolsRead(self.inner.read())
    }

    /// Interns every name and value of `pairs` (one reference each) and
    /// returns the ids as name, value, name, value, …
    pub(crate) fn intern_pairs<'p>(&self, pairs: impl ExactSizeIterator<Item = (&'p str, &'p str)>) -> Box<[SymbolId]> {
        let mut out = Vec::with_capacity(pairs.len() * 2);
        let mut inner = self.inner.write();
        for (n, v) in pairs {
            out.push(inner.intern(n));
            out.push(inner.intern(v));
        }
        drop(inner);
        out.into_boxed_slice()
    }

    /// Drops one reference to each of `ids` (a series going away).
    pub(crate) fn release(&self, ids: &[SymbolId]) {
        let mut inner = self.inner.write();
        for &id in ids {
            inner.release(id);
        }
    }

    /// Distinct strings held (tests, debugging).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.read().ids.len()
    }
}

impl Inner {
    fn intern(&mut self, s: &str) -> SymbolId {
        if let Some(&id) = self.ids.get(s) {
            if let Some((_, refs)) = &mut self.entries[id as usize] {
                *refs += 1;
            }
            return id;
        }
        let s: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = Some((s.clone(), 1));
                id
            }
            None => {
                let id = SymbolId::try_from(self.entries.len()).expect("fewer than 2^32 distinct label strings");
                self.entries.push(Some((s.clone(), 1)));
                id
            }
        };
        self.ids.insert(s, id);
        id
    }

    fn release(&mut self, id: SymbolId) {
        let Some(Some((s, refs))) = self.entries.get_mut(id as usize) else {
            debug_assert!(false, "release of unknown symbol {id}");
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            let s = s.clone();
            self.ids.remove(&*s);
            self.entries[id as usize] = None;
            self.free.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intern(t: &Symbols, pairs: &[(&str, &str)]) -> Box<[SymbolId]> {
        t.intern_pairs(pairs.iter().copied())
    }

    #[test]
    fn shared_strings_are_stored_once_and_freed_with_the_last_user() {
        let t = Symbols::default();
        let a = intern(&t, &[("__name__", "up"), ("job", "api")]);
        let b = intern(&t, &[("__name__", "up"), ("job", "db")]);
        assert_eq!(a[0], b[0]);
        assert_eq!(a[1], b[1]);
        assert_ne!(a[3], b[3]);
        assert_eq!(t.len(), 5);
        {
            let r = t.read();
            assert_eq!(r.labels(&a), Labels::from_pairs([("__name__", "up"), ("job", "api")]));
            assert!(r.equals(&b, &[(b"__name__", b"up"), (b"job", b"db")]));
            assert!(!r.equals(&b, &[(b"__name__", b"up"), (b"job", b"api")]));
            assert!(!r.equals(&b, &[(b"__name__", b"up")]));
            assert!(r.equals_labels(&b, &Labels::from_pairs([("__name__", "up"), ("job", "db")])));
            assert!(!r.equals_labels(&b, &Labels::from_pairs([("__name__", "up")])));
            assert_eq!(r.value_of(&a, "job"), "api");
            assert_eq!(r.value_of(&a, "nope"), "");
            assert_eq!(r.lookup("db"), Some(b[3]));
            assert_eq!(r.lookup("zzz"), None);
        }
        t.release(&a);
        // "api" had one user; "up", "job", "__name__" are still used by b.
        assert_eq!(t.len(), 4);
        assert_eq!(t.read().lookup("api"), None);
        let c = intern(&t, &[("job", "web")]);
        // The freed id is reused, so ids stay dense.
        assert_eq!(c[1], a[3]);
        assert_eq!(t.read().get(c[1]), "web");
        t.release(&b);
        t.release(&c);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_label_repeated_in_one_series_counts_twice() {
        // name == value within one series ({a="a"}) takes two references.
        let t = Symbols::default();
        let a = intern(&t, &[("a", "a")]);
        assert_eq!(a[0], a[1]);
        t.release(&a[..1]);
        assert_eq!(t.read().get(a[1]), "a");
        t.release(&a[1..]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn matchers_see_absent_labels_as_empty() {
        let t = Symbols::default();
        let a = intern(&t, &[("__name__", "up"), ("job", "api")]);
        let r = t.read();
        let m = |k, n: &str, v: &str| model::Matcher::new(k, n, v).unwrap();
        use model::MatchType::*;
        assert!(r.matches_all(&a, &[m(Equal, "job", "api"), m(Equal, "env", "")]));
        assert!(r.matches_all(&a, &[m(RegexMatch, "job", "a.*")]));
        assert!(!r.matches_all(&a, &[m(NotEqual, "job", "api")]));
        assert!(!r.matches_all(&a, &[m(RegexMatch, "env", ".+")]));
    }
}
