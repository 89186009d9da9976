//! One recording with the perf backend: drains every CPU's ring buffer as it fills, in time order,
//! keeps the task table up to date from the side-band records, snapshots each process at its first
//! sample, turns each sample into a user stack (frame-pointer callchain, or DWARF unwind of the
//! copied stack where the code is frameless), counts distinct stacks, and symbolizes new ones while
//! recording goes on. It stops on the same conditions as the BPF session and hands back the same
//! [`Capture`].

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use emberprof_bpf::Stat;
use emberprof_symbolizer::{FramelessCode, ProcessKey, Symbolizer, UserRegisters};

use super::events::{EventConfig, Events};
use super::reader::Reader;
use super::records::{self, PerfRecord, Sample};
use super::tasks::{InstanceChange, Tasks};
use crate::capture::session::{draw_status, Capture, StopConditions, UnwindStats};
use crate::capture::stats::BpfStats;
use crate::capture::UnwindMode;
use crate::sample::{StackSample, UserStackSource};
use crate::symbols::symbolize_stacks;

/// How often the loop wakes without ring-buffer activity, to check the clock, targets and signals.
const TICK: Duration = Duration::from_millis(100);
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often stacks first seen since the last round are symbolized while recording.
const SYMBOLIZE_INTERVAL: Duration = Duration::from_millis(500);
/// Stacks symbolized between two drains of the ring buffers.
const SYMBOLIZE_BATCH: usize = 64;

/// A distinct stack of one thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    process: ProcessKey,
    tid: u32,
    process_name: String,
    thread_name: String,
    kernel_ips: Vec<u64>,
    user_ips: Vec<u64>,
    source: UserStackSource,
}

/// Which of a sample's two user stacks to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserStackChoice {
    Callchain,
    Dwarf,
}

/// Every sample carries the kernel's frame-pointer callchain, and (unless `--unwind fp`) a copy of
/// the stack. `auto` keeps the callchain unless it passes through frameless code — the sampled
/// instruction or a return address in a frameless module, or a frameless main executable — where
/// a frame-pointer walk skips or invents callers; there it unwinds the copy with DWARF. Without a
/// snapshot (the process was gone before it could be read) DWARF has nothing to work with.
pub fn choose_user_stack(
    mode: UnwindMode,
    frameless: Option<&FramelessCode>,
    callchain: &[u64],
    has_copy: bool,
) -> UserStackChoice {
    if !has_copy {
        return UserStackChoice::Callchain;
    }
    match (mode, frameless) {
        (UnwindMode::FramePointers, _) | (_, None) => UserStackChoice::Callchain,
        (UnwindMode::Dwarf, Some(_)) => UserStackChoice::Dwarf,
        (UnwindMode::Auto, Some(plan)) => {
            if callchain
                .iter()
                .any(|&address| in_frameless_code(plan, address))
            {
                UserStackChoice::Dwarf
            } else {
                UserStackChoice::Callchain
            }
        }
    }
}

/// Whether the code at `address` keeps no frame pointers, by the symbolizer's judgement.
fn in_frameless_code(plan: &FramelessCode, address: u64) -> bool {
    match plan {
        FramelessCode::None => false,
        FramelessCode::Everywhere => true,
        FramelessCode::Mappings(mappings) => emberprof_symbolizer::is_frameless(mappings, address),
    }
}

struct Collector<'s> {
    symbolizer: &'s mut Symbolizer,
    mode: UnwindMode,
    layout: records::SampleLayout,
    tasks: Tasks,
    /// Where each snapshotted process's code is frameless; recomputed when its snapshot changes.
    frameless: HashMap<ProcessKey, Option<FramelessCode>>,
    counts: HashMap<StackKey, u64>,
    new_stacks: Vec<StackSample>,
    samples: u64,
    lost: u64,
    malformed: u64,
    unwinding: UnwindStats,
}

pub fn record(
    events: &mut Events,
    config: &EventConfig,
    symbolizer: &mut Symbolizer,
    mode: UnwindMode,
    mut stop: StopConditions<'_>,
    status_line: bool,
) -> Result<Capture> {
    let status_line = status_line && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut collector = Collector {
        symbolizer,
        mode,
        layout: config.layout(),
        tasks: Tasks::default(),
        frameless: HashMap::new(),
        counts: HashMap::new(),
        new_stacks: Vec::new(),
        samples: 0,
        lost: 0,
        malformed: 0,
        unwinding: UnwindStats::default(),
    };
    let mut last_status = started;
    let mut last_symbolized = started;
    let mut reader = events.start_reader()?;

    let stop_reason = loop {
        let records = reader.take(next_wakeup(started, stop.duration));
        collector.handle_all(records);
        if last_symbolized.elapsed() >= SYMBOLIZE_INTERVAL && !collector.new_stacks.is_empty() {
            collector.symbolize_new(&reader);
            last_symbolized = Instant::now();
        }
        if let Some(reason) = stop.reached(started)? {
            break reason;
        }
        if status_line && last_status.elapsed() >= STATUS_INTERVAL {
            last_status = Instant::now();
            draw_status(started.elapsed(), stop.duration, collector.samples);
        }
    };
    let recorded_for = started.elapsed();
    events.disable()?;
    let stopped_at = Instant::now();
    if status_line {
        // stderr may be gone (a closed terminal after SIGHUP): never a panic for that.
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    // Records written before the events were disabled are still in the buffers.
    let records = reader.finish()?;
    collector.handle_all(records);
    if reader.skipped_bytes() > 0 {
        log::warn!(
            "skipped {} bytes of perf ring buffers that did not decode",
            reader.skipped_bytes()
        );
        collector.malformed += 1;
    }
    collector.lost += reader.dropped_samples();

    // The summary reads the BPF counters; the perf backend fills the ones it has an equivalent
    // for: samples kept, and records the kernel dropped for want of ring-buffer space.
    let mut stats = BpfStats::default();
    stats.set(Stat::Samples, collector.samples + collector.lost);
    stats.set(Stat::Counted, collector.samples);
    stats.set(Stat::LostRingbufFull, collector.lost);
    let samples = collector
        .counts
        .into_iter()
        .map(|(key, count)| to_sample(key, count))
        .collect();
    Ok(Capture {
        // Nothing is built while recording here: this backend records one user's own processes.
        built: crate::profile::MergedProfile::new(crate::profile::EndedLabels::All),
        rotations: 0,
        released: 0,
        samples,
        stats,
        recorded_for,
        stop_reason,
        stopped_at,
        malformed_records: collector.malformed,
        unwinding: collector.unwinding,
        bpf_run_time: (Duration::ZERO, 0),
    })
}

impl Collector<'_> {
    /// Handles records read from the ring buffers, oldest first: records of different CPUs
    /// interleave (an exec on one CPU, the new program's first sample on another), and the task
    /// table must see them in the order they happened.
    fn handle_all(&mut self, pending: Vec<Vec<u8>>) {
        let mut timed: Vec<(u64, Vec<u8>)> = pending
            .into_iter()
            .map(|record| (records::record_time(&record).unwrap_or(0), record))
            .collect();
        timed.sort_by_key(|(time, _)| *time);
        for (_, record) in &timed {
            match records::parse(record, self.layout) {
                Some(record) => self.handle(record),
                None => self.malformed += 1,
            }
        }
        // A snapshot taken or retaken (a library loaded since) changes where code is frameless.
        for key in self.symbolizer.take_changed() {
            self.frameless.remove(&key);
        }
    }

    fn handle(&mut self, record: PerfRecord<'_>) {
        let change = match record {
            PerfRecord::Sample(sample) => {
                self.sample(sample);
                None
            }
            PerfRecord::Comm {
                pid,
                tid,
                name,
                exec,
            } => self.tasks.comm(pid, tid, name, exec),
            PerfRecord::Fork {
                pid,
                ppid,
                tid,
                ptid,
            } => self.tasks.fork(pid, ppid, tid, ptid),
            PerfRecord::Exit { pid, tid } => self.tasks.exit(pid, tid),
            PerfRecord::Mmap {
                pid,
                address,
                length,
                filename,
            } => {
                // The symbolizer re-reads a process's maps when a stack leads outside its snapshot.
                log::trace!("process {pid} mapped {filename} at {address:#x}+{length:#x}");
                None
            }
            PerfRecord::Lost { count } => {
                self.lost = self.lost.saturating_add(count);
                None
            }
            PerfRecord::Other => None,
        };
        self.apply(change);
    }

    fn apply(&mut self, change: Option<InstanceChange>) {
        match change {
            Some(InstanceChange::Started(key)) => {
                if let Err(error) = self.symbolizer.process_seen(key) {
                    // Usually a process that exited between its first sample and now.
                    log::debug!("no snapshot of process {}: {error}", key.pid);
                }
            }
            Some(InstanceChange::Ended(key)) => {
                log::debug!(
                    "process {} instance {} ended (exec or exit)",
                    key.pid,
                    key.instance
                );
                self.symbolizer.instance_ended(key);
                self.frameless.remove(&key);
            }
            None => {}
        }
    }

    fn sample(&mut self, sample: Sample<'_>) {
        // Idle (the swapper) under --all.
        if sample.tid == 0 {
            return;
        }
        self.samples += 1;
        let (process, change) = self.tasks.instance(sample.pid);
        self.apply(change);
        let has_copy = sample.registers.is_some() && !sample.stack.is_empty();
        let frameless = match self.frameless.get(&process) {
            Some(plan) => plan.clone(),
            None if has_copy && self.mode != UnwindMode::FramePointers => {
                let plan = self.symbolizer.frameless_code(process);
                self.frameless.insert(process, plan.clone());
                plan
            }
            None => None,
        };
        let choice = choose_user_stack(self.mode, frameless.as_ref(), &sample.user_ips, has_copy);
        let (user_ips, source) = match (choice, sample.registers) {
            (UserStackChoice::Dwarf, Some(regs)) => {
                let registers = UserRegisters {
                    ip: regs.ip,
                    sp: regs.sp,
                    bp: regs.bp,
                    general: Some(regs.general),
                };
                let unwound = self.symbolizer.unwind(process, registers, sample.stack);
                self.unwinding.count(unwound.end);
                (unwound.frames, UserStackSource::Dwarf(unwound.end))
            }
            _ if sample.user_ips.is_empty() => (Vec::new(), UserStackSource::None),
            _ => {
                self.unwinding.frame_pointer += 1;
                (sample.user_ips, UserStackSource::FramePointers)
            }
        };
        let thread_name = self.tasks.thread_name(sample.pid, sample.tid);
        let process_name = if sample.pid == sample.tid {
            thread_name.clone()
        } else {
            self.tasks.thread_name(sample.pid, sample.pid)
        };
        let key = StackKey {
            process,
            tid: sample.tid,
            process_name,
            thread_name,
            kernel_ips: sample.kernel_ips,
            user_ips,
            source,
        };
        match self.counts.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut entry) => *entry.get_mut() += 1,
            std::collections::hash_map::Entry::Vacant(entry) => {
                self.new_stacks.push(to_sample(entry.key().clone(), 0));
                entry.insert(1);
            }
        }
    }

    /// Symbolizes stacks first seen since the last round, while their processes are alive, in
    /// batches with the ring buffers drained in between.
    fn symbolize_new(&mut self, reader: &Reader) {
        let mut left = self.new_stacks.len();
        while left > 0 {
            let batch_size = left.min(SYMBOLIZE_BATCH);
            left -= batch_size;
            let batch: Vec<StackSample> = self.new_stacks.drain(..batch_size).collect();
            // The result is dropped: the point is the symbolizer's caches.
            symbolize_stacks(&batch, self.symbolizer);
            self.handle_all(reader.take(Duration::ZERO));
        }
    }
}

fn to_sample(key: StackKey, count: u64) -> StackSample {
    let StackKey {
        process,
        tid,
        process_name,
        thread_name,
        kernel_ips,
        user_ips,
        source,
    } = key;
    StackSample {
        pid: process.pid,
        tid,
        instance: process.instance,
        process_name,
        thread_name,
        kernel_ips,
        user_ips,
        user_stack: source,
        count,
    }
}

fn next_wakeup(started: Instant, duration: Option<Duration>) -> Duration {
    match duration {
        Some(duration) => duration.saturating_sub(started.elapsed()).min(TICK),
        None => TICK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fp never unwinds; dwarf always when there is a copy and a snapshot; auto only where the
    /// callchain touches frameless code or the executable is frameless.
    #[test]
    fn chooses_user_stack() {
        use UserStackChoice::*;
        let whole = |range| emberprof_symbolizer::FramelessMapping {
            range,
            bias: 0,
            functions: None,
        };
        let ranges = FramelessCode::Mappings(vec![whole(0x7000..0x8000), whole(0x9000..0x9800)]);
        let through_libc = [0x1000, 0x7100, 0x1200];
        let fp_only = [0x1000, 0x1100];
        let cases = [
            (
                UnwindMode::FramePointers,
                Some(&ranges),
                &through_libc[..],
                true,
                Callchain,
            ),
            (
                UnwindMode::Dwarf,
                Some(&FramelessCode::None),
                &fp_only[..],
                true,
                Dwarf,
            ),
            (
                UnwindMode::Dwarf,
                Some(&ranges),
                &fp_only[..],
                false,
                Callchain,
            ),
            (UnwindMode::Auto, None, &through_libc[..], true, Callchain),
            (
                UnwindMode::Auto,
                Some(&ranges),
                &through_libc[..],
                true,
                Dwarf,
            ),
            (
                UnwindMode::Auto,
                Some(&ranges),
                &fp_only[..],
                true,
                Callchain,
            ),
            (
                UnwindMode::Auto,
                Some(&FramelessCode::Everywhere),
                &fp_only[..],
                true,
                Dwarf,
            ),
            (
                UnwindMode::Auto,
                Some(&FramelessCode::None),
                &through_libc[..],
                true,
                Callchain,
            ),
        ];
        for (mode, frameless, callchain, has_copy, want) in cases {
            assert_eq!(
                choose_user_stack(mode, frameless, callchain, has_copy),
                want,
                "{mode:?} {frameless:?} {callchain:x?} {has_copy}"
            );
        }
    }
}
