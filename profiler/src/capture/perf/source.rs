//! The perf_event backend as a capture source: every CPU's ring buffer, decoded in time order into
//! [`Event`]s. The task table follows the side-band records (names, exec, exit), so each process
//! instance is announced at its first sample and ended at its exec or exit; each sample carries
//! the kernel's frame-pointer callchain and, unless `--unwind fp`, a copy of the stack, between
//! which the collector chooses.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use emberprof_symbolizer::{StackCopy, UserRegisters};

use super::events::{EventConfig, Events, SwitchSampling};
use super::order::TimeOrder;
use super::reader::{Reader, Taken};
use super::records::{self, PerfRecord, Sample, SampleLayout};
use super::side_band;
use super::switches::Switches;
use super::tasks::{InstanceChange, Tasks};
use crate::capture::address_spaces::AddressSpaces;
use crate::capture::clock::monotonic_ns;
use crate::capture::source::{
    Event, EventSink, Source, SourceReport, StackEvent, Thread, UserStack, Weight,
};

/// How often a checkpoint lets the collector build and release what it holds. Records arrive in
/// time order, so every sample of an instance that ended is in hand by then.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Record bytes decoded in one read: a few hundred samples with stack copies, so a session that has
/// fallen behind still looks at the clock, signals and checkpoints between reads.
const READ_BYTES: usize = 4 << 20;

pub struct PerfSource {
    events: Events,
    reader: Reader,
    layout: SampleLayout,
    tasks: Tasks,
    /// Which executable mappings each PID had when (see `address_spaces`).
    spaces: AddressSpaces,
    /// `--no-inherit`: only these processes (the events follow children regardless, as they must
    /// to see a target's new threads).
    only_pids: Option<HashSet<u32>>,
    capture_user: bool,
    /// Records taken by [`Source::wait`] (at most [`READ_BYTES`]), decoded by the next
    /// [`Source::read`].
    pending: Option<Taken>,
    /// Records decoded once every older one is in hand.
    order: TimeOrder,
    last_checkpoint: Instant,
    checkpoints: u64,
    samples: u64,
    lost: u64,
    malformed: u64,
    /// `--off-cpu`: switch records timed into intervals.
    switches: Option<Switches>,
    /// When the events were disabled (CLOCK_MONOTONIC ns).
    stopped_ns: Option<u64>,
    own_pid: u32,
}

impl PerfSource {
    /// Starts reading the rings of opened events (enabled, or enabling themselves at a launched
    /// child's exec).
    pub fn new(
        mut events: Events,
        config: &EventConfig,
        only_pids: Option<Vec<u32>>,
        capture_user: bool,
    ) -> Result<Self> {
        let reader = events.start_reader()?;
        let layout = events.layout();
        let switches = config
            .off_cpu_min
            .map(|min| Switches::new(min, events.switch_sampling()));
        Ok(PerfSource {
            events,
            reader,
            layout,
            tasks: Tasks::default(),
            spaces: AddressSpaces::default(),
            only_pids: only_pids.map(|pids| pids.into_iter().collect()),
            capture_user,
            pending: None,
            order: TimeOrder::default(),
            last_checkpoint: Instant::now(),
            checkpoints: 0,
            samples: 0,
            lost: 0,
            malformed: 0,
            switches,
            stopped_ns: None,
            own_pid: std::process::id(),
        })
    }

    /// Decodes records of several ring buffers oldest first: records of different CPUs interleave
    /// (an exec on one CPU, the new program's first sample on another), and the task table must
    /// see them in the order they happened. Those that an older record of the next read may still
    /// precede wait for it (see `order`).
    fn decode(&mut self, taken: Taken, sink: &mut dyn EventSink) {
        let layout = self.layout;
        self.order.add(
            taken
                .records
                .into_iter()
                .map(|record| (records::record_time(&record, layout).unwrap_or(0), record)),
        );
        let Some(complete_before) = taken.complete_before else {
            return;
        };
        for (time, record) in &self.order.ready(complete_before) {
            match records::parse(record, self.layout) {
                Some(record) => self.handle(record, *time, sink),
                None => self.malformed += 1,
            }
        }
        self.spaces.end_round();
    }

    fn handle(&mut self, record: PerfRecord<'_>, time: u64, sink: &mut dyn EventSink) {
        side_band::follow(&mut self.spaces, &record, time, sink);
        let change = match record {
            PerfRecord::Sample(sample) => {
                self.sample(sample, sink);
                None
            }
            PerfRecord::Comm {
                pid,
                tid,
                name,
                exec,
            } => self.tasks.comm(pid, tid, name, exec, time),
            PerfRecord::Fork {
                pid,
                ppid,
                tid,
                ptid,
            } => self.tasks.fork(pid, ppid, tid, ptid, time),
            PerfRecord::Exit { pid, tid } => self.tasks.exit(pid, tid, time),
            // Followed above, in the address spaces' history.
            PerfRecord::Mmap { .. } => None,
            PerfRecord::Switch {
                pid,
                tid,
                time,
                out,
            } => {
                // emberprof's own waiting (under --all) is never counted.
                if let Some(switches) = self.switches.as_mut().filter(|_| pid != self.own_pid) {
                    switches.switch(tid, time, out, sink);
                }
                None
            }
            PerfRecord::Lost { count } => {
                self.lost = self.lost.saturating_add(count);
                None
            }
            PerfRecord::Other => None,
        };
        if let Some(InstanceChange::Ended(process)) = change {
            self.spaces.instance_ended(process);
        }
        announce(change, sink);
    }

    fn sample(&mut self, sample: Sample<'_>, sink: &mut dyn EventSink) {
        // Idle (the swapper) under --all.
        if sample.tid == 0 {
            return;
        }
        if let Some(pids) = &self.only_pids {
            if !pids.contains(&sample.pid) {
                return;
            }
        }
        // A switch-out's stack (`SwitchSampling::Exact`): held by the collector until the
        // thread's switch-in ends the interval, which the switch records time. Never emberprof's
        // own (under --all), whose switch records are left out too.
        let weight = match &mut self.switches {
            Some(_) if self.events.is_switch_sample(sample.id) && sample.pid == self.own_pid => {
                return;
            }
            Some(switches) if self.events.is_switch_sample(sample.id) => {
                switches.sampled(sample.tid, sample.period);
                Weight::OffCpuUntilEnded
            }
            _ => {
                self.samples += 1;
                Weight::Samples
            }
        };
        let (process, change) = self.tasks.instance(sample.pid);
        match change {
            // With the mappings its address space had, which it may no longer have to show.
            Some(InstanceChange::Started(process)) => {
                self.spaces.process_seen(process, None, sample.time, sink)
            }
            change => announce(change, sink),
        }
        let user = match sample.registers {
            _ if !self.capture_user => UserStack::None,
            Some(regs) if !sample.stack.is_empty() => UserStack::WalkedAndCopied {
                walked: sample.user_ips,
                registers: UserRegisters {
                    ip: regs.ip,
                    sp: regs.sp,
                    bp: regs.bp,
                    general: Some(regs.general),
                },
                // PERF_SAMPLE_STACK_USER starts at sp and has no way to start lower: the red zone
                // is not available here (CFI that reads it ends the unwind, counted by reason).
                stack: StackCopy {
                    start: regs.sp,
                    bytes: sample.stack,
                },
            },
            _ if sample.user_ips.is_empty() => UserStack::None,
            _ => UserStack::Walked(sample.user_ips),
        };
        let thread_name: Arc<str> = self.name(sample.pid, sample.tid, sample.time);
        let process_name = if sample.pid == sample.tid {
            Arc::clone(&thread_name)
        } else {
            self.name(sample.pid, sample.pid, sample.time)
        };
        sink.event(Event::Stack(StackEvent {
            thread: Thread {
                process,
                tid: sample.tid,
                process_name,
                thread_name,
            },
            kernel: sample.kernel_ips,
            user,
            weight,
            // Python frames are not on the native stack a perf_event sample carries.
            python: None,
            count: 1,
        }));
    }

    fn name(&mut self, pid: u32, tid: u32, time: u64) -> Arc<str> {
        crate::text::printable(&self.tasks.thread_name(pid, tid, time))
            .as_ref()
            .into()
    }
}

/// Tells the collector about an instance that started or ended.
fn announce(change: Option<InstanceChange>, sink: &mut dyn EventSink) {
    match change {
        Some(InstanceChange::Started(process)) => sink.event(Event::ProcessSeen {
            process,
            start_time: None,
        }),
        Some(InstanceChange::Ended(process)) => sink.event(Event::InstanceEnded(process)),
        None => {}
    }
}

impl Source for PerfSource {
    fn wait(&mut self, timeout: Duration) {
        if self.pending.is_none() {
            self.pending = Some(self.reader.take(timeout, READ_BYTES));
        }
    }

    fn read(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        let taken = match self.pending.take() {
            Some(taken) => taken,
            None => self.reader.take(Duration::ZERO, READ_BYTES),
        };
        self.decode(taken, sink);
        Ok(())
    }

    fn checkpoint_due(&self) -> bool {
        self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
    }

    fn checkpoint(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        self.last_checkpoint = Instant::now();
        self.checkpoints += 1;
        self.read(sink)
    }

    fn samples(&self) -> u64 {
        self.samples
    }

    fn stop(&mut self) -> Result<()> {
        self.stopped_ns = Some(monotonic_ns());
        self.events.disable()
    }

    fn off_cpu_stacks(&self) -> bool {
        self.events.switch_sampling() == SwitchSampling::Exact
    }

    /// Records written before the events were disabled are still in the buffers.
    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        if let Some(taken) = self.pending.take() {
            self.decode(taken, sink);
        }
        let last = self.reader.finish()?;
        self.decode(last, sink);
        if let Some(switches) = &mut self.switches {
            switches.finish(self.stopped_ns.unwrap_or_else(monotonic_ns), sink);
        }
        if self.reader.skipped_bytes() > 0 {
            log::warn!(
                "skipped {} bytes of perf ring buffers that did not decode",
                self.reader.skipped_bytes()
            );
            self.malformed += 1;
        }
        self.lost += self.reader.dropped_samples();
        Ok(())
    }

    fn report(&self) -> Result<SourceReport> {
        let mut notes = Vec::new();
        let lost = self.lost + self.malformed;
        if lost > 0 {
            notes.push((
                log::Level::Warn,
                format!(
                    "{lost} samples lost: the ring buffers were full ({} records dropped, {} \
                     malformed records); a lower -F, fewer targets or a larger --mmap-pages \
                     avoid it",
                    self.lost, self.malformed
                ),
            ));
        }
        notes.extend(self.spaces.notes());
        if let Some(switches) = &self.switches {
            notes.extend(switches.notes());
        }
        Ok(SourceReport {
            lost: self.lost,
            malformed: self.malformed,
            checkpoints: self.checkpoints,
            notes,
        })
    }
}
