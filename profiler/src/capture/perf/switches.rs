//! `--off-cpu` on the perf_event backend: the switch records of the sampled threads timed into
//! off-CPU intervals (every one: the records come at every switch, without privileges), and the
//! stacks they go to, as well as the privilege level allows:
//!
//! - [`SwitchSampling::Exact`]: a `context-switches` event sampled the thread as it switched out;
//!   its stacks went to the collector as held off-CPU stacks, and the interval up to its switch-in
//!   goes to them. At high switch rates the event samples one switch-out in N: the intervals
//!   between go to the thread's last sampled switch-out's stacks (where a thread switching that
//!   fast keeps waiting), rather than count a sampled interval N times. The kernel's adaptive
//!   period is bursty (it jumped to 20 000 on a ping-pong, and to 7 on a thread that sleeps 16
//!   times a second), and one long wait counted 20 000 times made the threads 1.6 to 3.4 times
//!   as wide as they ran; timed one by one, they are as wide as they ran.
//! - [`SwitchSampling::LastSample`]: no stack at a switch without kernel access (the event fires in
//!   kernel mode, which `perf_event_paranoid` 2 excludes), so every interval goes to the thread's
//!   last on-CPU sample's stacks (the collector's `off_cpu_on_last_sample`, samply's approach).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::events::SwitchSampling;
use crate::capture::source::{Event, EventSink};

/// Most threads switched out at once that are followed: far more than a machine runs; past it,
/// further switch-outs are counted as lost.
const MAX_THREADS: usize = 65_536;

#[derive(Debug)]
pub struct Switches {
    min_ns: u64,
    method: SwitchSampling,
    /// Threads sampled by the `context-switches` event whose switch-out record is next.
    sampled: HashSet<u32>,
    /// Threads switched out now: since when (CLOCK_MONOTONIC ns), and whether that switch-out
    /// was sampled.
    out: HashMap<u32, (u64, bool)>,
    pub switch_outs: u64,
    /// Exact method: intervals on their own switch-out's stacks, and on an earlier one's.
    own_stacks: u64,
    earlier_stacks: u64,
    largest_period: u64,
    pub below_min: u64,
    pub lost: u64,
}

impl Switches {
    pub fn new(min: Duration, method: SwitchSampling) -> Self {
        Switches {
            min_ns: u64::try_from(min.as_nanos()).unwrap_or(u64::MAX),
            method,
            sampled: HashSet::new(),
            out: HashMap::new(),
            switch_outs: 0,
            own_stacks: 0,
            earlier_stacks: 0,
            largest_period: 0,
            below_min: 0,
            lost: 0,
        }
    }

    /// A `context-switches` sample of `tid` (its stacks sent on to the collector), standing for
    /// `period` switch-outs: its switch-out record comes next, from the same CPU.
    pub fn sampled(&mut self, tid: u32, period: u64) {
        self.largest_period = self.largest_period.max(period);
        if self.sampled.len() < MAX_THREADS || self.sampled.contains(&tid) {
            self.sampled.insert(tid);
        }
    }

    /// A switch record of a sampled thread, in time order.
    pub fn switch(&mut self, tid: u32, time: u64, out: bool, sink: &mut dyn EventSink) {
        if tid == 0 {
            return;
        }
        // A sample followed by a switch-in has lost its switch-out record (a full ring): it is
        // dropped here rather than taken for a later switch-out's.
        let sampled = self.sampled.remove(&tid);
        if out {
            self.switch_outs += 1;
            if self.out.len() < MAX_THREADS || self.out.contains_key(&tid) {
                self.out.insert(tid, (time, sampled));
            } else {
                self.lost += 1;
            }
            return;
        }
        if let Some((since, sampled)) = self.out.remove(&tid) {
            self.ended(tid, time.saturating_sub(since), sampled, sink);
        }
    }

    /// After the stop: threads still switched out are counted up to `now` (CLOCK_MONOTONIC ns).
    pub fn finish(&mut self, now: u64, sink: &mut dyn EventSink) {
        for (tid, (since, sampled)) in std::mem::take(&mut self.out) {
            self.ended(tid, now.saturating_sub(since), sampled, sink);
        }
    }

    fn ended(&mut self, tid: u32, nanos: u64, sampled: bool, sink: &mut dyn EventSink) {
        if nanos < self.min_ns {
            self.below_min += 1;
            return;
        }
        match self.method {
            SwitchSampling::LastSample => sink.event(Event::OffCpuEnded { tid, nanos }),
            SwitchSampling::Exact => {
                match sampled {
                    true => self.own_stacks += 1,
                    false => self.earlier_stacks += 1,
                }
                sink.event(Event::OffCpuAfterSampledSwitch { tid, nanos });
            }
        }
    }

    /// For the summary.
    pub fn notes(&self) -> Vec<(log::Level, String)> {
        let method = match self.method {
            SwitchSampling::Exact if self.largest_period > 1 => format!(
                "{} on the stacks they switched out in, {} on their thread's last sampled \
                 switch-out's (the context-switches event sampled one switch-out in up to {})",
                self.own_stacks, self.earlier_stacks, self.largest_period
            ),
            SwitchSampling::Exact => format!(
                "{} on the stacks they switched out in (context-switches event)",
                self.own_stacks + self.earlier_stacks
            ),
            SwitchSampling::LastSample => "each interval charged to its thread's last on-CPU \
                 sample (perf_event gives no stack at a switch without kernel access)"
                .to_owned(),
        };
        vec![(
            log::Level::Info,
            format!(
                "off-CPU: {} switch-outs seen, {} shorter than --off-cpu-min, {} lost (too many \
                 threads switched out at once); {method}",
                self.switch_outs, self.below_min, self.lost
            ),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events a run of switch records and samples sends.
    #[derive(Default)]
    struct Sent(Vec<String>);

    impl EventSink for Sent {
        fn event(&mut self, event: Event<'_>) {
            self.0.push(match event {
                Event::OffCpuEnded { tid, nanos } => format!("last-sample {tid} {nanos}"),
                Event::OffCpuAfterSampledSwitch { tid, nanos } => format!("switch {tid} {nanos}"),
                other => format!("{other:?}"),
            });
        }
    }

    /// Exact method: every interval is timed once, for its own thread, whether its switch-out was
    /// sampled or not (those go to the last sampled one's stacks, which the collector keeps); a
    /// sample whose switch-out record was lost is not taken for a later switch-out; intervals
    /// shorter than the minimum add nothing.
    #[test]
    fn exact_intervals_are_timed_once_each() {
        let mut switches = Switches::new(Duration::from_nanos(10), SwitchSampling::Exact);
        let mut sent = Sent::default();
        switches.sampled(7, 1);
        switches.switch(7, 100, true, &mut sent);
        switches.switch(8, 150, true, &mut sent);
        switches.switch(7, 400, false, &mut sent);
        switches.switch(8, 155, false, &mut sent);
        // Sampled with period 3; then a sample whose switch-out record was lost.
        switches.sampled(8, 3);
        switches.switch(8, 200, true, &mut sent);
        switches.switch(7, 500, true, &mut sent);
        switches.switch(7, 505, false, &mut sent);
        switches.switch(8, 1200, false, &mut sent);
        switches.sampled(7, 1);
        switches.switch(7, 600, false, &mut sent);
        switches.switch(7, 700, true, &mut sent);
        switches.finish(1000, &mut sent);
        assert_eq!(
            sent.0,
            ["switch 7 300", "switch 8 1000", "switch 7 300"],
            "{switches:?}"
        );
        assert_eq!(
            (
                switches.own_stacks,
                switches.earlier_stacks,
                switches.below_min
            ),
            (2, 1, 2)
        );
        assert_eq!(switches.largest_period, 3);
        assert_eq!(switches.switch_outs, 5);
    }

    /// Last-sample method: every interval goes to the collector's last on-CPU sample, as before.
    #[test]
    fn last_sample_intervals_are_ended_plainly() {
        let mut switches = Switches::new(Duration::ZERO, SwitchSampling::LastSample);
        let mut sent = Sent::default();
        switches.switch(5, 10, true, &mut sent);
        switches.switch(0, 11, true, &mut sent);
        switches.switch(5, 30, false, &mut sent);
        assert_eq!(sent.0, ["last-sample 5 20"]);
        let notes = switches.notes();
        assert!(notes[0].1.contains("last on-CPU sample"), "{notes:?}");
    }
}
