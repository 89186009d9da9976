//! `--off-cpu` on the BPF backend: the settings and maps of the sched_switch program
//! (`bpf/src/offcpu.bpf.h`) and their decoding into events. Intervals the kernel counted come at
//! each checkpoint with the sampler's counts ([`Weight::OffCpu`], nanoseconds); stacks the program
//! sent through the ring buffer come as they are read ([`Weight::OffCpuUntilEnded`]), their time
//! with the thread's end record; threads still switched out when sampling stops are counted up to
//! the stop.

use std::collections::HashMap as StdHashMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aya::maps::{HashMap, PerCpuArray, StackTraceMap};
use aya::EbpfLoader;
use emberprof_bpf::{names, OffCpuConfig, OffCpuStart, OffCpuStat, SampleKey};

use super::sampler::{Sampler, SamplerConfig};
use crate::capture::source::{EventSink, StackEvent, UserStack, Weight};

/// Threads switched out at once that the kernel can time: far more than a machine runs.
const THREADS: u32 = 16_384;

/// The off-CPU program's configuration.
pub(super) fn settings(config: &SamplerConfig) -> OffCpuConfig {
    OffCpuConfig {
        min_ns: config
            .off_cpu_min
            .map_or(0, |min| u64::try_from(min.as_nanos()).unwrap_or(u64::MAX)),
        self_tgid: std::process::id(),
        sample_every: config.off_cpu_sample.max(1),
    }
}

/// Sets the off-CPU program's configuration and map sizes on `loader`; whether it is to be loaded.
/// Without `--off-cpu` its maps get one entry each, so they cost nothing.
pub(super) fn load_settings<'a>(
    loader: &mut EbpfLoader<'a>,
    settings: &'a OffCpuConfig,
    config: &SamplerConfig,
) -> bool {
    let on = config.off_cpu_min.is_some();
    let (threads, stacks, counts) = match on {
        true => (THREADS, config.map_sizes.stacks, config.map_sizes.counts),
        false => (1, 1, 1),
    };
    loader
        .override_global(names::OFF_CPU_CONFIG_GLOBAL, settings, true)
        .map_max_entries(names::OFF_CPU_THREADS, threads)
        .map_max_entries(names::OFF_CPU_STACKS, stacks)
        .map_max_entries(names::OFF_CPU_COUNTS[0], counts)
        .map_max_entries(names::OFF_CPU_COUNTS[1], counts);
    on
}

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
    /// Each followed switch-out stands for this many (`--off-cpu-sample`).
    sample_every: u64,
    /// Names of the threads its stacks belong to.
    texts: super::comm::CommTexts,
}

impl OffCpu {
    pub fn new(min: Duration, sample_every: u32) -> Self {
        OffCpu {
            min_ns: u64::try_from(min.as_nanos()).unwrap_or(u64::MAX),
            sample_every: u64::from(sample_every.max(1)),
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
            let nanos = stopped.saturating_sub(start.start_ns);
            if nanos < self.min_ns {
                continue;
            }
            let nanos = nanos.saturating_mul(self.sample_every);
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
) -> Vec<(log::Level, String)> {
    let get = |stat: OffCpuStat| totals[stat as usize];
    let mut notes = Vec::new();
    if sample_every > 1 {
        // Not only with -v: the off-CPU widths are estimates, not measurements.
        notes.push((
            log::Level::Warn,
            format!(
                "off-CPU time is sampled (--off-cpu-sample {sample_every}): {} of {} switch-outs \
                 followed, each counted {sample_every} times; rare long waits may be missed or \
                 over-counted",
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

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
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
