//! What is kept per file between looks (a log's tally, a database's connections), bounded by
//! count: past the bound, the entry used longest ago goes, so memory stays bounded however
//! many sessions a node has run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Entries by file, each with when it was last used (a tick of the map).
#[derive(Debug)]
pub struct Recent<V> {
    entries: HashMap<PathBuf, (V, u64)>,
    tick: u64,
    bound: usize,
}

impl<V> Recent<V> {
    /// An empty map that keeps at most `bound` entries.
    pub fn new(bound: usize) -> Self {
        Recent {
            entries: HashMap::new(),
            tick: 0,
            bound,
        }
    }

    fn now(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The entry for `path`, marked used now.
    pub fn get_mut(&mut self, path: &Path) -> Option<&mut V> {
        let now = self.now();
        self.entries.get_mut(path).map(|(v, used)| {
            *used = now;
            v
        })
    }

    /// Takes the entry for `path` out.
    pub fn remove(&mut self, path: &Path) -> Option<V> {
        self.entries.remove(path).map(|(v, _)| v)
    }

    /// Keeps `value` for `path`, marked used now; a new entry past the bound makes the one
    /// used longest ago go.
    pub fn insert(&mut self, path: &Path, value: V) {
        let now = self.now();
        if self.entries.len() >= self.bound && !self.entries.contains_key(path) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(path.to_path_buf(), (value, now));
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an entry for `path` is kept.
    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_the_entry_used_longest_ago_goes() {
        let mut r = Recent::new(2);
        let (a, b, c) = (Path::new("/a"), Path::new("/b"), Path::new("/c"));
        r.insert(a, 1);
        r.insert(b, 2);
        // `a` used after `b`: `b` is now the one used longest ago.
        assert_eq!(r.get_mut(a), Some(&mut 1));
        r.insert(c, 3);
        assert_eq!(r.len(), 2);
        assert!(r.contains(a) && r.contains(c) && !r.contains(b));
        // Replacing a kept entry makes nothing go.
        r.insert(c, 4);
        assert_eq!((r.len(), r.remove(c)), (2, Some(4)));
        assert!(!r.is_empty());
    }
}
