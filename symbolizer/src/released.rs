//! The process instances whose samples are all symbolized, so that a late notice or sample of one
//! never snapshots the process that has its PID now.

use std::collections::BTreeMap;

/// Instance ids as disjoint ranges. Both backends draw instance ids from one counter for every PID
/// (in the order processes are first sampled), so an id alone names one run of one process, and
/// instances are released mostly in that order: the ranges are about as many as the older
/// instances still running, however many were released. A map from PID to its last released
/// instance, as before, held an entry per PID ever released, up to `pid_max` (4,194,304 where
/// systemd raises it): some tens of MB after hours of a fork-heavy machine.
#[derive(Debug, Default)]
pub struct ReleasedInstances {
    /// First id of each range, to its last.
    ranges: BTreeMap<u32, u32>,
}

impl ReleasedInstances {
    pub fn insert(&mut self, instance: u32) {
        if self.contains(instance) {
            return;
        }
        let mut first = instance;
        let mut last = instance;
        // Joined to the range that ends right before it, and to the one that starts right after.
        if let Some((&start, &end)) = self.ranges.range(..instance).next_back() {
            if end.checked_add(1) == Some(instance) {
                first = start;
            }
        }
        if let Some(next) = instance.checked_add(1) {
            if let Some(end) = self.ranges.remove(&next) {
                last = end;
            }
        }
        self.ranges.insert(first, last);
    }

    pub fn contains(&self, instance: u32) -> bool {
        self.ranges
            .range(..=instance)
            .next_back()
            .is_some_and(|(_, &last)| instance <= last)
    }

    /// How many ranges hold them, for the debug log.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids in any order, the ends of `u32` included: each is found once inserted, no other is,
    /// and neighbours join, so ids released in start order around a few long-lived instances
    /// take a range per gap.
    #[test]
    fn holds_ids_as_joined_ranges() {
        let mut released = ReleasedInstances::default();
        let long_lived = [3, 500, 9_999];
        for id in 1..10_000u32 {
            if !long_lived.contains(&id) {
                released.insert(id);
            }
        }
        assert_eq!(released.ranges(), 3, "{released:?}");
        for id in 1..10_000u32 {
            assert_eq!(released.contains(id), !long_lived.contains(&id), "{id}");
        }
        assert!(!released.contains(0) && !released.contains(10_000));
        // Filling a gap joins its two neighbours; out of order, and twice, changes nothing else.
        released.insert(500);
        released.insert(500);
        assert_eq!(released.ranges(), 2);
        for id in [u32::MAX, 0, 20_000, 19_998, 19_999] {
            released.insert(id);
            assert!(released.contains(id));
        }
        assert!(!released.contains(u32::MAX - 1) && !released.contains(20_001));
        assert!(released.contains(1) && !released.contains(3));
        assert_eq!(released.ranges(), 4, "0 joins 1..=2: {released:?}");
    }
}
