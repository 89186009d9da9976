//! `--off-cpu` on the perf_event backend: the switch records of the sampled threads timed into
//! off-CPU intervals. perf_event gives no stack at a switch to a process without kernel access (a
//! `context-switches` sampling event fires in kernel mode, which `perf_event_paranoid` 2 excludes),
//! so each interval goes to the thread's last on-CPU sample's stacks (the collector's
//! `off_cpu_on_last_sample`, samply's approach): time a thread waits right after it ran there.

use std::collections::HashMap;
use std::time::Duration;

use crate::capture::source::{Event, EventSink};

/// Most threads switched out at once that are followed: far more than a machine runs; past it,
/// further switch-outs are counted as lost.
const MAX_THREADS: usize = 65_536;

#[derive(Debug)]
pub struct Switches {
    min_ns: u64,
    /// Threads switched out now, and since when (CLOCK_MONOTONIC ns).
    out: HashMap<u32, u64>,
    pub switch_outs: u64,
    pub below_min: u64,
    pub lost: u64,
}

impl Switches {
    pub fn new(min: Duration) -> Self {
        Switches {
            min_ns: u64::try_from(min.as_nanos()).unwrap_or(u64::MAX),
            out: HashMap::new(),
            switch_outs: 0,
            below_min: 0,
            lost: 0,
        }
    }

    /// A switch record of a sampled thread, in time order.
    pub fn switch(&mut self, tid: u32, time: u64, out: bool, sink: &mut dyn EventSink) {
        if tid == 0 {
            return;
        }
        if out {
            self.switch_outs += 1;
            if self.out.len() < MAX_THREADS || self.out.contains_key(&tid) {
                self.out.insert(tid, time);
            } else {
                self.lost += 1;
            }
            return;
        }
        if let Some(since) = self.out.remove(&tid) {
            self.ended(tid, time.saturating_sub(since), sink);
        }
    }

    /// After the stop: threads still switched out are counted up to `now` (CLOCK_MONOTONIC ns).
    pub fn finish(&mut self, now: u64, sink: &mut dyn EventSink) {
        for (tid, since) in std::mem::take(&mut self.out) {
            self.ended(tid, now.saturating_sub(since), sink);
        }
    }

    fn ended(&mut self, tid: u32, nanos: u64, sink: &mut dyn EventSink) {
        if nanos < self.min_ns {
            self.below_min += 1;
            return;
        }
        sink.event(Event::OffCpuEnded { tid, nanos });
    }

    /// For the summary.
    pub fn note(&self) -> String {
        format!(
            "off-CPU: {} switch-outs seen, {} shorter than --off-cpu-min, {} lost (too many \
             threads switched out at once); each interval charged to its thread's last on-CPU \
             sample (perf_event gives no stack at a switch)",
            self.switch_outs, self.below_min, self.lost
        )
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock the switch records carry (`use_clockid`).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}
