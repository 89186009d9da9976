//! `--off-cpu` on the BPF backend: the settings and maps of the sched_switch program
//! (`bpf/src/offcpu.bpf.h`) and their decoding into events. Intervals the kernel counted come at
//! each checkpoint with the sampler's counts ([`Weight::OffCpu`], nanoseconds); stacks the program
//! sent through the ring buffer come as they are read ([`Weight::OffCpuUntilEnded`]), their time
//! with the thread's end record; threads still switched out when sampling stops are counted up to
//! the stop.

use std::collections::HashMap as StdHashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap, PerCpuArray, StackTraceMap};
use emberprof_bpf::{names, OffCpuStart, OffCpuStat, SampleKey};

use super::sampler::Sampler;
use crate::capture::clock::monotonic_ns;
use crate::capture::source::{EventSink, StackEvent, UserStack, Weight};

/// The userspace side of the off-CPU maps.
#[derive(Debug, Default)]
pub struct OffCpu {
    /// Stacks of `offcpu_stacks` read so far: ids never change meaning (the map is not emptied
    /// while recording), so each is read once; bounded by the map's size.
    stacks: StdHashMap<i32, Vec<u64>>,
    /// CLOCK_MONOTONIC (the clock of `bpf_ktime_get_ns`) when the program was detached: threads
    /// still switched out are counted up to it.
    stopped_ns: Option<u64>,
    /// The shortest interval counted.
    min_ns: u64,
    /// Without `--off-cpu-sample`: the N one switch-out in N is followed at, set from the rate.
    pub adaptive: Option<Adaptive>,
    /// Names of the threads its stacks belong to.
    texts: super::comm::CommTexts,
}

impl OffCpu {
    /// `sample_every` 0: adaptive sampling.
    pub fn new(min: Duration, sample_every: u32) -> Self {
        OffCpu {
            min_ns: u64::try_from(min.as_nanos()).unwrap_or(u64::MAX),
            adaptive: (sample_every == 0).then(Adaptive::new),
            ..OffCpu::default()
        }
    }

    /// Just after the program was detached.
    pub fn stopped(&mut self) {
        self.stopped_ns = Some(monotonic_ns());
    }

    /// The intervals a generation counted, as events of nanoseconds, and empties it (only for a
    /// generation no program writes to any more).
    pub fn deliver(
        &mut self,
        sampler: &mut Sampler,
        generation: u32,
        sink: &mut dyn EventSink,
    ) -> Result<()> {
        let name = names::OFF_CPU_COUNTS[generation as usize & 1];
        let mut counts: HashMap<_, SampleKey, u64> = HashMap::try_from(
            sampler
                .ebpf_mut()
                .map_mut(name)
                .ok_or_else(|| anyhow!("BPF object has no map {name}"))?,
        )?;
        let entries: Vec<(SampleKey, u64)> = counts
            .iter()
            .map(|entry| entry.context("cannot read the off-CPU counts"))
            .collect::<Result<_>>()?;
        for (key, _) in &entries {
            counts
                .remove(key)
                .with_context(|| format!("cannot clear the {name} map"))?;
        }
        for (key, nanos) in entries {
            let event = self.event(sampler, &key, Weight::OffCpu, nanos)?;
            sink.event(crate::capture::source::Event::Stack(event));
        }
        Ok(())
    }

    /// After the stop: every thread still switched out, counted up to the stop. Those whose stacks
    /// came by the ring buffer end as such; the others are counted on their stack ids.
    pub fn deliver_waiting(
        &mut self,
        sampler: &mut Sampler,
        sink: &mut dyn EventSink,
    ) -> Result<()> {
        let stopped = self.stopped_ns.unwrap_or_else(monotonic_ns);
        let threads: HashMap<_, u32, OffCpuStart> = HashMap::try_from(
            sampler
                .ebpf()
                .map(names::OFF_CPU_THREADS)
                .ok_or_else(|| anyhow!("BPF object has no map {}", names::OFF_CPU_THREADS))?,
        )?;
        let waiting: Vec<(u32, OffCpuStart)> = threads.iter().filter_map(|e| e.ok()).collect();
        for (tid, start) in waiting {
            let mut nanos = stopped.saturating_sub(start.start_ns);
            if nanos < self.min_ns {
                nanos = 0;
            }
            // With the intervals not followed before it, as the switch-in would have counted it.
            let nanos = nanos.saturating_add(start.carry_ns);
            if nanos == 0 {
                continue;
            }
            if start.streamed != 0 {
                sink.event(crate::capture::source::Event::OffCpuEnded { tid, nanos });
            } else {
                let event = self.event(sampler, &start.key, Weight::OffCpu, nanos)?;
                sink.event(crate::capture::source::Event::Stack(event));
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        sampler: &Sampler,
        key: &SampleKey,
        weight: Weight,
        count: u64,
    ) -> Result<StackEvent<'static>> {
        let kernel = self.frames(sampler, key.kernel_stack_id)?;
        let user = match key.user_stack_id {
            emberprof_bpf::STACK_ID_NONE => UserStack::None,
            id => UserStack::Walked(self.frames(sampler, id)?),
        };
        Ok(StackEvent {
            thread: self.texts.thread(key),
            kernel,
            user,
            // The switch-out program walks no Python frames (the sampler does).
            python: None,
            weight,
            count,
        })
    }

    fn frames(&mut self, sampler: &Sampler, id: i32) -> Result<Vec<u64>> {
        if id < 0 {
            return Ok(Vec::new());
        }
        if let Some(frames) = self.stacks.get(&id) {
            return Ok(frames.clone());
        }
        let stacks: StackTraceMap<_> = StackTraceMap::try_from(
            sampler
                .ebpf()
                .map(names::OFF_CPU_STACKS)
                .ok_or_else(|| anyhow!("BPF object has no map {}", names::OFF_CPU_STACKS))?,
        )?;
        let frames: Vec<u64> = match stacks.get(&(id as u32), 0) {
            Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
            Err(error) => {
                log::warn!("off-CPU stack {id} vanished from its map: {error}");
                Vec::new()
            }
        };
        self.stacks.insert(id, frames.clone());
        Ok(frames)
    }
}

/// The off-CPU program's counters, summed over CPUs.
pub fn stats(sampler: &Sampler) -> Result<[u64; OffCpuStat::COUNT as usize]> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
        sampler
            .ebpf()
            .map(names::OFF_CPU_STATS)
            .ok_or_else(|| anyhow!("BPF object has no map {}", names::OFF_CPU_STATS))?,
    )?;
    let mut totals = [0; OffCpuStat::COUNT as usize];
    for stat in OffCpuStat::ALL {
        let per_cpu = map
            .get(&(stat as u32), 0)
            .with_context(|| format!("cannot read off-CPU counter {stat:?}"))?;
        totals[stat as usize] = per_cpu.iter().sum();
    }
    Ok(totals)
}

/// What the off-CPU counters say, for the summary: switch-outs seen, below the threshold, lost by
/// reason (a warning when any was lost).
pub fn notes(
    totals: &[u64; OffCpuStat::COUNT as usize],
    sample_every: u32,
    adaptive: Option<&Adaptive>,
) -> Vec<(log::Level, String)> {
    let get = |stat: OffCpuStat| totals[stat as usize];
    let mut notes = Vec::new();
    notes.extend(adaptive.and_then(|adaptive| adaptive.note(totals)));
    if sample_every > 1 {
        // Not only with -v: the off-CPU widths are estimates, not measurements.
        notes.push((
            log::Level::Warn,
            format!(
                "off-CPU stacks are sampled (--off-cpu-sample {sample_every}): {} of {} switch-outs \
                 followed; every interval is timed, and those not followed are drawn on their \
                 thread's next followed stack",
                get(OffCpuStat::SwitchOuts),
                get(OffCpuStat::SwitchOuts) + get(OffCpuStat::NotSampled),
            ),
        ));
    }
    notes.push((
        log::Level::Info,
        format!(
            "off-CPU: {} switch-outs of target threads seen, {} switched in again ({} shorter \
             than --off-cpu-min, {} counted in the kernel, {} with stacks sent at the switch-out)",
            get(OffCpuStat::SwitchOuts),
            get(OffCpuStat::SwitchIns),
            get(OffCpuStat::BelowMin),
            get(OffCpuStat::Counted),
            get(OffCpuStat::Ended),
        ),
    ));
    let lost = [
        (OffCpuStat::LostThreadsFull, "the thread table was full"),
        (OffCpuStat::LostCountsFull, "the off-CPU count map was full"),
        (
            OffCpuStat::LostRingbufOut,
            "the ring buffer was full at the switch-out",
        ),
        (
            OffCpuStat::LostRingbufEnd,
            "the ring buffer was full at the switch-in",
        ),
    ];
    let reasons: Vec<String> = lost
        .iter()
        .filter(|(stat, _)| get(*stat) > 0)
        .map(|(stat, reason)| format!("{} because {reason}", get(*stat)))
        .collect();
    if !reasons.is_empty() {
        notes.push((
            log::Level::Warn,
            format!("off-CPU intervals lost: {}", reasons.join(", ")),
        ));
    }
    if get(OffCpuStat::CopyFallback) > 0 {
        notes.push((
            log::Level::Warn,
            format!(
                "{} off-CPU user stacks needed a copy but the ring buffer was full: walked \
                 through frame pointers instead (callers in frameless code may be missing)",
                get(OffCpuStat::CopyFallback)
            ),
        ));
    }
    notes
}

/// How often the adaptive N is set: soon enough that a burst of switches costs the program little
/// before N follows it, rarely enough that reading the counters costs nothing.
pub const ADAPT_INTERVAL: Duration = Duration::from_millis(100);
/// The first interval, doubled up to [`ADAPT_INTERVAL`]: N is 1 until the first adaptation, when
/// every switch-out costs a stack copy, and 100 ms of that slowed a 0.7 s ping-pong by 40 %.
const FIRST_ADAPT_INTERVAL: Duration = Duration::from_millis(2);
/// Switch-outs followed a second on the busiest CPU that the adaptive N aims at: each costs a
/// stack walk or copy, a map update and, for copies, an unwind in userspace; at this rate the
/// pipe ping-pong of benches/off-cpu.sh is slowed by under 5 % (see docs/performance.md).
pub const FOLLOWED_PER_CPU_SECOND: u64 = 500;
/// Fewer switch-outs than this in an interval leave N at 1: over the first, 2 ms intervals, the
/// start of a program (exec, threads created) looked like 1,000 a second and sampled a thread that
/// sleeps. At the aimed rate, a 100 ms interval sees as many.
const MIN_SWITCH_OUTS_SAMPLED: u64 = FOLLOWED_PER_CPU_SECOND / 10;
/// The largest N: even a CPU switching millions of times a second keeps a picture.
const MAX_SAMPLE_EVERY: u64 = 1 << 16;

/// Adaptive sampling: every [`ADAPT_INTERVAL`], the switch-outs of target threads each CPU saw
/// (followed or not, from the per-CPU counters) give the rate, and N is set so that the busiest
/// CPU follows about [`FOLLOWED_PER_CPU_SECOND`]. Only the stacks are sampled: every interval is
/// timed, and one not followed is counted with its thread's next followed interval, on that one's
/// stacks (a thread carrying 10 ms of such time has its next switch-out followed whatever N says).
#[derive(Debug)]
pub struct Adaptive {
    started: Instant,
    last: Instant,
    /// From [`FIRST_ADAPT_INTERVAL`] up to [`ADAPT_INTERVAL`].
    interval: Duration,
    /// Switch-outs seen by each CPU up to `last`.
    seen: Vec<u64>,
    /// The N now in the map.
    current: u64,
    /// The largest N set, and when it was first set above 1 (since the start).
    largest: u64,
    first_sampled: Option<Duration>,
}

impl Adaptive {
    fn new() -> Self {
        let now = Instant::now();
        Adaptive {
            started: now,
            last: now,
            interval: FIRST_ADAPT_INTERVAL,
            seen: Vec::new(),
            current: 1,
            largest: 1,
            first_sampled: None,
        }
    }

    /// How long the caller may wait before [`Adaptive::adapt`] is due.
    pub fn due_in(&self) -> Duration {
        self.interval.saturating_sub(self.last.elapsed())
    }

    /// Sets N from the rate since the last call, when its interval has passed.
    pub fn adapt(&mut self, sampler: &mut Sampler) -> Result<()> {
        let elapsed = self.last.elapsed();
        if elapsed < self.interval {
            return Ok(());
        }
        self.last = Instant::now();
        self.interval = (self.interval * 2).min(ADAPT_INTERVAL);
        let seen = seen_per_cpu(sampler)?;
        let busiest = seen
            .iter()
            .enumerate()
            .map(|(cpu, &now)| now.saturating_sub(self.seen.get(cpu).copied().unwrap_or(0)))
            .max()
            .unwrap_or(0);
        self.seen = seen;
        let every = sample_every_for(busiest, elapsed);
        if every == self.current {
            return Ok(());
        }
        let mut map: Array<_, u32> = Array::try_from(
            sampler
                .ebpf_mut()
                .map_mut(names::OFF_CPU_SAMPLE_EVERY)
                .ok_or_else(|| anyhow!("BPF object has no map {}", names::OFF_CPU_SAMPLE_EVERY))?,
        )?;
        // At most MAX_SAMPLE_EVERY: fits.
        map.set(0, every as u32, 0)
            .context("cannot set the off-CPU sampling rate")?;
        log::debug!("off-CPU: following 1 in {every} switch-outs ({busiest} on the busiest CPU in {elapsed:?})");
        self.current = every;
        self.largest = self.largest.max(every);
        if every > 1 && self.first_sampled.is_none() {
            self.first_sampled = Some(self.started.elapsed());
        }
        Ok(())
    }

    /// For the summary: when it first sampled, and at most how sparsely.
    pub fn note(&self, totals: &[u64; OffCpuStat::COUNT as usize]) -> Option<(log::Level, String)> {
        let since = self.first_sampled?;
        Some((
            log::Level::Info,
            format!(
                "off-CPU stacks are sampled (adaptive, past {FOLLOWED_PER_CPU_SECOND} switch-outs \
                 a second per CPU): from {:.1} s on, followed 1 in N switch-outs, N up to {} ({} \
                 of {} followed; every interval is timed, those not followed drawn on their \
                 thread's next followed stack; --off-cpu-sample 1 follows every one)",
                since.as_secs_f64(),
                self.largest,
                totals[OffCpuStat::SwitchOuts as usize],
                totals[OffCpuStat::SwitchOuts as usize] + totals[OffCpuStat::NotSampled as usize],
            ),
        ))
    }
}

/// N for `seen` switch-outs in `elapsed` on the busiest CPU: 1 up to the aimed rate, then the
/// ratio rounded up, at most [`MAX_SAMPLE_EVERY`].
fn sample_every_for(seen: u64, elapsed: Duration) -> u64 {
    if seen < MIN_SWITCH_OUTS_SAMPLED {
        return 1;
    }
    let aimed = FOLLOWED_PER_CPU_SECOND as u128 * elapsed.as_micros().max(1);
    let seen = u128::from(seen) * 1_000_000;
    let every = seen.div_ceil(aimed).clamp(1, u128::from(MAX_SAMPLE_EVERY));
    every as u64
}

/// Switch-outs of target threads each CPU saw so far, followed or not.
fn seen_per_cpu(sampler: &Sampler) -> Result<Vec<u64>> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
        sampler
            .ebpf()
            .map(names::OFF_CPU_STATS)
            .ok_or_else(|| anyhow!("BPF object has no map {}", names::OFF_CPU_STATS))?,
    )?;
    let get = |stat: OffCpuStat| {
        map.get(&(stat as u32), 0)
            .with_context(|| format!("cannot read off-CPU counter {stat:?}"))
    };
    let followed = get(OffCpuStat::SwitchOuts)?;
    let left_out = get(OffCpuStat::NotSampled)?;
    Ok(followed
        .iter()
        .zip(left_out.iter())
        .map(|(a, b)| a + b)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_n_follows_the_busiest_cpu_rate() {
        let tenth = Duration::from_millis(100);
        // Below the aimed rate: every switch-out.
        assert_eq!(sample_every_for(0, tenth), 1);
        assert_eq!(sample_every_for(FOLLOWED_PER_CPU_SECOND / 10, tenth), 1);
        // A few switch-outs in a short interval are no rate.
        let first = Duration::from_millis(2);
        assert_eq!(sample_every_for(MIN_SWITCH_OUTS_SAMPLED - 1, first), 1);
        assert!(sample_every_for(MIN_SWITCH_OUTS_SAMPLED * 10, first) > 1);
        // 100k a second: 1 in 100k / aimed, rounded up.
        let every = sample_every_for(10_000, tenth);
        assert_eq!(every, 100_000u64.div_ceil(FOLLOWED_PER_CPU_SECOND));
        // A late wake-up does not inflate N: the rate is per second.
        assert_eq!(sample_every_for(20_000, tenth * 2), every);
        assert_eq!(sample_every_for(u64::MAX, tenth), MAX_SAMPLE_EVERY);
    }
}
