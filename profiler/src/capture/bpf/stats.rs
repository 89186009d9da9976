//! The BPF program's counters, summed over CPUs, and what they mean for the summary.

use emberprof_bpf::Stat;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BpfStats {
    values: [u64; Stat::COUNT as usize],
}

impl BpfStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.values[stat as usize]
    }

    pub fn set(&mut self, stat: Stat, value: u64) {
        self.values[stat as usize] = value;
    }

    /// Samples of target processes that were kept, in the maps or through the ring buffer.
    pub fn kept(&self) -> u64 {
        self.get(Stat::Counted) + self.get(Stat::Streamed)
    }

    /// Samples of target processes that were lost.
    pub fn lost(&self) -> u64 {
        self.get(Stat::LostRingbufFull)
    }

    /// Every program invocation is accounted for by exactly one outcome.
    pub fn unaccounted(&self) -> i128 {
        let outcomes = [
            Stat::Idle,
            Stat::Filtered,
            Stat::Counted,
            Stat::Streamed,
            Stat::LostRingbufFull,
        ];
        self.get(Stat::Samples) as i128
            - outcomes.iter().map(|&s| self.get(s) as i128).sum::<i128>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kept/lost/unaccounted add up the right counters.
    #[test]
    fn totals() {
        let mut stats = BpfStats::default();
        stats.set(Stat::Samples, 100);
        stats.set(Stat::Idle, 10);
        stats.set(Stat::Filtered, 20);
        stats.set(Stat::Counted, 60);
        stats.set(Stat::Streamed, 7);
        stats.set(Stat::LostRingbufFull, 3);
        assert_eq!(stats.kept(), 67);
        assert_eq!(stats.lost(), 3);
        assert_eq!(stats.unaccounted(), 0);
    }
}
