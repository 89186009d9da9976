//! Tables that follow what is live, not the busiest moment of the run.
//!
//! A hash table or vector keeps the capacity it grew to after its entries are removed: the table
//! of the stacks seen since the last checkpoint, or the per-process tables after a burst of
//! processes (a build's parallel compiles, `--all` starting on a busy machine), stay as large as
//! their largest moment for the rest of the recording. Beside a build, glibc's blocks mapped apart
//! (large tables and vectors) rose in steps from 35.5 to 41.9 MiB between the first and the tenth
//! minute of a run while the heap in use, blazesym's parsed state and the profile stayed level;
//! with these tables shrunk at each checkpoint they were at most 33.8 MiB after the first minute.
//! Whoever empties a table calls [`ShrinkSparse::shrink_if_sparse`] at a quiet moment (the recorder
//! does at each checkpoint).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

/// Below this many entries of capacity a table is left as it is: shrinking it saves little and
/// it would only grow again.
const KEPT_CAPACITY: usize = 1024;
/// A table is sparse when its capacity is more than this many times its entries.
const SPARSE: usize = 4;

/// Gives back the capacity of a table whose entries are far fewer than it holds room for,
/// keeping room for twice the entries it has.
pub trait ShrinkSparse {
    fn shrink_if_sparse(&mut self);
}

/// The capacity a table of `len` entries and `capacity` room should shrink to, if any.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEPT_CAPACITY && capacity > SPARSE * len).then(|| (2 * len).max(KEPT_CAPACITY / 2))
}

impl<K: Eq + Hash, V, S: BuildHasher> ShrinkSparse for HashMap<K, V, S> {
    fn shrink_if_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<T: Eq + Hash, S: BuildHasher> ShrinkSparse for HashSet<T, S> {
    fn shrink_if_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<T> ShrinkSparse for Vec<T> {
    fn shrink_if_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst's room is given back once its entries are gone; what is left keeps room to grow.
    #[test]
    fn a_table_emptied_after_a_burst_gives_its_room_back() {
        let mut stacks: HashMap<u64, u64> = (0..100_000).map(|key| (key, key)).collect();
        let burst = stacks.capacity();
        stacks.retain(|&key, _| key < 3_000);
        stacks.shrink_if_sparse();
        assert!(
            stacks.capacity() >= 6_000 && stacks.capacity() < burst / 8,
            "a table of 3000 entries kept room for {} after a burst of 100000 (room for {burst})",
            stacks.capacity()
        );
        assert_eq!(stacks.len(), 3_000);
        assert_eq!(stacks.get(&2_999), Some(&2_999));

        let mut pending: Vec<u64> = (0..100_000).collect();
        pending.truncate(10);
        pending.shrink_if_sparse();
        assert_eq!(pending.capacity(), KEPT_CAPACITY / 2);
        assert_eq!(pending, (0..10).collect::<Vec<_>>());

        let mut ended: HashSet<u64> = (0..100_000).collect();
        ended.clear();
        ended.shrink_if_sparse();
        assert!(ended.capacity() < KEPT_CAPACITY, "{}", ended.capacity());
    }

    /// A table that is full enough, or small, is left alone: no reallocation at every checkpoint.
    /// (A hash map's buckets come in powers of two, so one at least a quarter full would keep its
    /// room anyway: the vector is what tells.)
    #[test]
    fn a_busy_or_small_table_keeps_its_room() {
        let mut busy: HashMap<u64, u64> = (0..100_000).map(|key| (key, key)).collect();
        busy.retain(|&key, _| key < 40_000);
        let room = busy.capacity();
        busy.shrink_if_sparse();
        assert_eq!(busy.capacity(), room);

        let mut pending: Vec<u64> = Vec::with_capacity(100_000);
        pending.extend(0..40_000);
        pending.shrink_if_sparse();
        assert_eq!(pending.capacity(), 100_000);

        let mut small: Vec<u64> = Vec::with_capacity(KEPT_CAPACITY);
        small.shrink_if_sparse();
        assert_eq!(small.capacity(), KEPT_CAPACITY);
    }
}
