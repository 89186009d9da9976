//! One recording: waits while the BPF program samples, drains the ring buffer as it fills (so new
//! processes are snapshotted while alive), shows a status line, and stops on the duration, a signal,
//! or the end of the targets. Then it reads the maps into plain [`StackSample`]s.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use emberprof_bpf::{Record, SampleKey, UserStackRecord, STACK_ID_IN_RECORD, STACK_ID_NONE};
use emberprof_symbolizer::{
    FramelessCode, ProcessKey, Symbolizer, UnwindEnd, UnwindFailure, UserRegisters,
};

use super::launch::RunningCommand;
use super::roots::Roots;
use super::sampler::{Sampler, StackCache, UnwindMode};
use super::stats::BpfStats;
use super::targets::ProcessWatch;
use crate::sample::{StackSample, UserStackSource};
use crate::symbols::symbolize_stacks;

/// How often the loop wakes without ring-buffer activity, to check the clock, targets and signals.
const TICK: Duration = Duration::from_millis(100);
/// How soon a snapshot taken while the dynamic loader ran is retaken.
const LOADER_RETRY: Duration = Duration::from_millis(2);
/// How often the status line is redrawn.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often stacks first seen since the last round are symbolized while recording.
const SYMBOLIZE_INTERVAL: Duration = Duration::from_millis(500);
/// Keys symbolized between two drains of the ring buffer.
const SYMBOLIZE_BATCH: usize = 64;

/// What ends a recording besides a signal.
pub struct StopConditions<'a> {
    pub duration: Option<Duration>,
    /// Stop when all of these have exited (`--pid`).
    pub watches: Vec<ProcessWatch>,
    /// Stop when this command exits (launch mode).
    pub command: Option<&'a mut RunningCommand>,
    /// Set to a signal number by the signal handler.
    pub signal: &'a AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    DurationElapsed,
    Signal(i32),
    TargetsExited,
    CommandExited,
}

/// What a recording produced.
pub struct Capture {
    pub samples: Vec<StackSample>,
    pub stats: BpfStats,
    pub recorded_for: Duration,
    pub stop_reason: StopReason,
    /// When sampling stopped; post-processing time is measured from here.
    pub stopped_at: Instant,
    /// Ring-buffer records that did not decode (version skew or a bug); counted as lost.
    pub malformed_records: u64,
    pub unwinding: UnwindStats,
}

/// How user stacks were obtained, in samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Copied and unwound with DWARF to the root of the stack.
    pub dwarf_complete: u64,
    /// ... that ended because the copy was too short (`--stack-size`).
    pub dwarf_stack_copy_exhausted: u64,
    /// ... that ended where no unwind rule worked.
    pub dwarf_failed: u64,
    /// `dwarf_failed` by reason, indexed like [`UnwindFailure::ALL`].
    pub dwarf_failures: [u64; UnwindFailure::ALL.len()],
    /// ... of processes that were never snapshotted (only the sampled instruction is known).
    pub dwarf_unknown_process: u64,
    /// Walked by the kernel through frame pointers.
    pub frame_pointer: u64,
}

impl UnwindStats {
    pub fn dwarf_total(&self) -> u64 {
        self.dwarf_complete
            + self.dwarf_stack_copy_exhausted
            + self.dwarf_failed
            + self.dwarf_unknown_process
    }

    pub(crate) fn count(&mut self, end: UnwindEnd) {
        match end {
            UnwindEnd::Complete => self.dwarf_complete += 1,
            UnwindEnd::StackCopyExhausted => self.dwarf_stack_copy_exhausted += 1,
            UnwindEnd::Failed(reason) => {
                self.dwarf_failed += 1;
                if let Some(i) = UnwindFailure::ALL.iter().position(|&r| r == reason) {
                    self.dwarf_failures[i] += 1;
                }
            }
            UnwindEnd::UnknownProcess => self.dwarf_unknown_process += 1,
        }
    }
}

/// What the drain loop keeps between rounds.
#[derive(Default)]
struct Collected {
    /// Samples that came through the ring buffer, with their stacks.
    streamed: HashMap<StreamedKey, u64>,
    /// Keys first counted in the kernel since the last symbolization round.
    new_keys: Vec<SampleKey>,
    /// Streamed stacks first seen since the last symbolization round.
    new_streamed: Vec<StackSample>,
    malformed_records: u64,
    unwinding: UnwindStats,
    /// `--unwind auto`: frameless roots of frame-pointer chains, learned from DWARF unwinds.
    roots: Roots,
    /// Some snapshot was taken while the dynamic loader ran: retake it soon.
    loader_snapshots: bool,
}

/// A sample that came through the ring buffer, keyed with its inline stacks and how the user stack
/// was obtained.
type StreamedKey = (SampleKey, Vec<u64>, Vec<u64>, UserStackSource);

pub fn record(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    unwind: UnwindMode,
    mut stop: StopConditions<'_>,
    status_line: bool,
) -> Result<Capture> {
    let status_line = status_line && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut collected = Collected::default();
    let mut last_status = started;
    let mut stack_cache = StackCache::default();
    let mut last_symbolized = started;

    let stop_reason = loop {
        let mut wakeup = next_wakeup(started, stop.duration);
        if collected.loader_snapshots {
            wakeup = wakeup.min(LOADER_RETRY);
        }
        wait_readable(sampler.records_fd(), wakeup);
        drain(sampler, symbolizer, unwind, &mut collected);
        let pending = !collected.new_keys.is_empty() || !collected.new_streamed.is_empty();
        if last_symbolized.elapsed() >= SYMBOLIZE_INTERVAL && pending {
            symbolize_new_keys(
                sampler,
                symbolizer,
                unwind,
                &mut stack_cache,
                &mut collected,
            )?;
            last_symbolized = Instant::now();
        }

        if let Some(signal) = match stop.signal.load(Ordering::Relaxed) {
            0 => None,
            signal => Some(signal as i32),
        } {
            break StopReason::Signal(signal);
        }
        if stop.duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::DurationElapsed;
        }
        if let Some(command) = stop.command.as_deref_mut() {
            if command.try_wait()?.is_some() {
                break StopReason::CommandExited;
            }
        }
        if !stop.watches.is_empty() && stop.watches.iter_mut().all(|w| w.has_exited()) {
            break StopReason::TargetsExited;
        }
        if status_line && last_status.elapsed() >= STATUS_INTERVAL {
            last_status = Instant::now();
            draw_status(
                started.elapsed(),
                stop.duration,
                sampler.stats().map(|s| s.kept()).unwrap_or(0),
            );
        }
    };
    let recorded_for = started.elapsed();
    sampler.detach()?;
    let stopped_at = Instant::now();
    if status_line {
        // stderr may be gone (a closed terminal after SIGHUP): never a panic for that.
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    // Records written before the detach are still in the ring buffer.
    drain(sampler, symbolizer, unwind, &mut collected);
    let Collected {
        streamed,
        malformed_records,
        mut unwinding,
        roots,
        ..
    } = collected;

    let stats = sampler.stats()?;
    let counted = sampler.read_counts()?;
    for (key, _) in &counted {
        sampler.load_stack(key.kernel_stack_id, &mut stack_cache)?;
        sampler.load_stack(key.user_stack_id, &mut stack_cache)?;
    }
    for (key, _, _, _) in streamed.keys() {
        sampler.load_stack(key.kernel_stack_id, &mut stack_cache)?;
        sampler.load_stack(key.user_stack_id, &mut stack_cache)?;
    }
    // Streamed frame-pointer samples were counted as they came; add those counted in the kernel.
    unwinding.frame_pointer += counted
        .iter()
        .filter(|(key, _)| key.user_stack_id >= 0)
        .map(|(_, count)| count)
        .sum::<u64>();
    let mut samples = to_samples(&stack_cache, &counted, streamed);
    roots.complete(&mut samples);
    Ok(Capture {
        samples,
        stats,
        recorded_for,
        stop_reason,
        stopped_at,
        malformed_records,
        unwinding,
    })
}

fn next_wakeup(started: Instant, duration: Option<Duration>) -> Duration {
    match duration {
        Some(duration) => duration.saturating_sub(started.elapsed()).min(TICK),
        None => TICK,
    }
}

/// Sleeps until `fd` is readable or `timeout` passes (or a signal arrives).
fn wait_readable(fd: i32, timeout: Duration) {
    let mut poll_fd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd. EINTR (a signal) just ends the wait early.
    unsafe { libc::poll(&mut poll_fd, 1, timeout.as_millis() as i32) };
}

impl Collected {
    /// Counts a streamed sample; a stack not seen before is queued for symbolization while recording.
    fn add_streamed(&mut self, key: StreamedKey) {
        match self.streamed.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut entry) => *entry.get_mut() += 1,
            std::collections::hash_map::Entry::Vacant(entry) => {
                let (sample_key, kernel, user, source) = entry.key();
                self.new_streamed.push(to_sample(
                    sample_key,
                    kernel.clone(),
                    user.clone(),
                    *source,
                    0,
                ));
                entry.insert(1);
            }
        }
    }
}

/// Handles every pending ring-buffer record. New processes are snapshotted at once, before the
/// records after them (their first stack copies may follow directly).
fn drain(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    unwind: UnwindMode,
    collected: &mut Collected,
) {
    let mut root_changes = Vec::new();
    sampler.drain_records(|bytes| match Record::parse(bytes) {
        Some(Record::ProcessSeen(record)) => {
            let key = ProcessKey {
                pid: record.tgid,
                instance: record.instance,
            };
            if let Err(error) = symbolizer.process_seen_started(key, record.start_time) {
                // Usually a process that exited between its first sample and now.
                log::debug!("no snapshot of process {}: {error}", record.tgid);
            }
        }
        Some(Record::NewKey(key)) => collected.new_keys.push(key),
        Some(Record::InstanceEnd(record)) => {
            log::debug!(
                "process {} instance {} ended (exec or exit)",
                record.tgid,
                record.instance
            );
            let key = ProcessKey {
                pid: record.tgid,
                instance: record.instance,
            };
            symbolizer.instance_ended(key);
            collected.roots.instance_ended(key);
        }
        Some(Record::Sample(record)) => {
            if record.key.user_stack_id != STACK_ID_NONE {
                collected.unwinding.frame_pointer += 1;
            }
            let kernel = inline_stack(
                record.key.kernel_stack_id,
                &record.kernel_ips,
                record.kernel_len,
            );
            let user = inline_stack(record.key.user_stack_id, &record.user_ips, record.user_len);
            let source = frame_pointer_stack(record.key.user_stack_id);
            collected.add_streamed((record.key, kernel, user, source));
        }
        Some(Record::UserStack(record, stack)) => {
            let (key, end) = unwind_user_stack(symbolizer, record, stack, &mut collected.unwinding);
            if unwind == UnwindMode::Auto && end == UnwindEnd::Complete {
                let process = ProcessKey {
                    pid: record.key.tgid,
                    instance: record.key.instance,
                };
                // The first stacks of a process come before its plan reaches BPF (at the end of
                // this drain): learn from them already.
                if !collected.roots.has_plan(process) {
                    if let Some(code) = symbolizer.frameless_code(process) {
                        collected.roots.set_plan(process, user_plan(code));
                    }
                }
                let change = collected
                    .roots
                    .learn(process, record.ip, record.sp, record.bp, stack, &key.2);
                if let Some(change) = change {
                    root_changes.push((process.instance, change));
                }
            }
            collected.add_streamed(key);
        }
        None => collected.malformed_records += 1,
    });
    for (instance, change) in root_changes {
        if let Err(error) = sampler.set_known_root(instance, change.address, change.known) {
            log::warn!("{error:#}");
        }
    }
    // Before more stacks of those processes arrive: a short-lived one may be gone by then.
    collected.loader_snapshots = symbolizer.retake_loader_snapshots();
    // A snapshot taken or retaken (a library loaded since the last one) changes where code is
    // frameless.
    for key in symbolizer.take_changed() {
        if unwind == UnwindMode::Auto {
            if let Err(error) = plan_auto_unwinding(sampler, symbolizer, &mut collected.roots, key)
            {
                log::warn!("{error:#}");
            }
        }
    }
}

/// `--unwind auto`: tells the BPF side where this process's code is frameless, so samples whose
/// frame-pointer walk meets it get their stacks copied while the rest keeps the cheap walk. Until
/// this is done, BPF copies every stack of the process.
fn plan_auto_unwinding(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    roots: &mut Roots,
    key: ProcessKey,
) -> Result<()> {
    let pid = key.pid;
    let plan = symbolizer.frameless_code(key);
    log::debug!(
        "process {pid} instance {}: frameless code {plan:?}",
        key.instance
    );
    let Some(plan) = plan else {
        return Ok(());
    };
    match &plan {
        FramelessCode::None => sampler.set_frameless_code(pid, &[])?,
        FramelessCode::Everywhere => sampler.unwind_process_with_dwarf(pid)?,
        FramelessCode::Mappings(mappings) => sampler.set_frameless_code(pid, mappings)?,
    }
    roots.set_plan(key, user_plan(plan));
    Ok(())
}

/// What [`Roots`] needs of a plan: the frameless mappings, `None` when every stack is copied.
fn user_plan(plan: FramelessCode) -> Option<Vec<emberprof_symbolizer::FramelessMapping>> {
    match plan {
        FramelessCode::None => Some(Vec::new()),
        FramelessCode::Mappings(mappings) => Some(mappings),
        FramelessCode::Everywhere => None,
    }
}

fn unwind_user_stack(
    symbolizer: &mut Symbolizer,
    record: &UserStackRecord,
    stack: &[u8],
    stats: &mut UnwindStats,
) -> (StreamedKey, UnwindEnd) {
    let registers = UserRegisters {
        ip: record.ip,
        sp: record.sp,
        bp: record.bp,
        general: Some(record.gp_regs),
    };
    let process = ProcessKey {
        pid: record.key.tgid,
        instance: record.key.instance,
    };
    let unwound = symbolizer.unwind(process, registers, stack);
    stats.count(unwound.end);
    let kernel = inline_stack(
        record.key.kernel_stack_id,
        &record.kernel_ips,
        record.kernel_len,
    );
    (
        (
            record.key,
            kernel,
            unwound.frames,
            UserStackSource::Dwarf(unwound.end),
        ),
        unwound.end,
    )
}

/// Symbolizes the stacks of keys first counted since the last round, while their processes are alive
/// and while sampling goes on, so that little is left to do when it stops.
fn symbolize_new_keys(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    unwind: UnwindMode,
    stack_cache: &mut StackCache,
    collected: &mut Collected,
) -> Result<()> {
    let keys = std::mem::take(&mut collected.new_keys);
    // In batches, draining the ring buffer in between: a round can take tens of milliseconds (the
    // first one loads kallsyms and the DWARF of every module), while stack copies keep arriving.
    for batch in keys.chunks(SYMBOLIZE_BATCH) {
        for key in batch {
            sampler.load_stack(key.kernel_stack_id, stack_cache)?;
            sampler.load_stack(key.user_stack_id, stack_cache)?;
        }
        let samples: Vec<StackSample> = batch
            .iter()
            .map(|key| {
                to_sample(
                    key,
                    stack_cache.frames(key.kernel_stack_id).to_vec(),
                    stack_cache.frames(key.user_stack_id).to_vec(),
                    frame_pointer_stack(key.user_stack_id),
                    0,
                )
            })
            .collect();
        // The result is dropped: the point is the symbolizer's caches.
        symbolize_stacks(&samples, symbolizer);
        drain(sampler, symbolizer, unwind, collected);
    }
    // Only what was pending when the round started: stacks streamed in meanwhile wait for the next.
    let mut left = collected.new_streamed.len();
    while left > 0 {
        let batch_size = left.min(SYMBOLIZE_BATCH);
        left -= batch_size;
        let batch: Vec<StackSample> = collected.new_streamed.drain(..batch_size).collect();
        symbolize_stacks(&batch, symbolizer);
        drain(sampler, symbolizer, unwind, collected);
    }
    Ok(())
}

fn inline_stack(id: i32, ips: &[u64], len: u32) -> Vec<u64> {
    if id == STACK_ID_IN_RECORD {
        ips[..(len as usize).min(ips.len())].to_vec()
    } else {
        Vec::new()
    }
}

fn to_samples(
    stacks: &StackCache,
    counted: &[(SampleKey, u64)],
    streamed: HashMap<StreamedKey, u64>,
) -> Vec<StackSample> {
    let stack = |id: i32, inline: Vec<u64>| {
        if id == STACK_ID_IN_RECORD {
            inline
        } else {
            stacks.frames(id).to_vec()
        }
    };
    let from_counts = counted.iter().map(|(key, count)| {
        to_sample(
            key,
            stacks.frames(key.kernel_stack_id).to_vec(),
            stacks.frames(key.user_stack_id).to_vec(),
            frame_pointer_stack(key.user_stack_id),
            *count,
        )
    });
    let from_stream = streamed
        .into_iter()
        .map(|((key, kernel, user, source), count)| {
            to_sample(
                &key,
                stack(key.kernel_stack_id, kernel),
                stack(key.user_stack_id, user),
                source,
                count,
            )
        });
    from_counts.chain(from_stream).collect()
}

fn comm_text(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    crate::text::printable_bytes(&comm[..len])
}

/// The source of a user stack the kernel walked (in the stack map, or inline in a sample record).
fn frame_pointer_stack(user_stack_id: i32) -> UserStackSource {
    if user_stack_id == STACK_ID_NONE {
        UserStackSource::None
    } else {
        UserStackSource::FramePointers
    }
}

fn to_sample(
    key: &SampleKey,
    kernel_ips: Vec<u64>,
    user_ips: Vec<u64>,
    user_stack: UserStackSource,
    count: u64,
) -> StackSample {
    StackSample {
        pid: key.tgid,
        tid: key.tid,
        instance: key.instance,
        // Names the process chose (prctl PR_SET_NAME): any bytes but NUL, made printable once here.
        process_name: comm_text(&key.process_comm),
        thread_name: comm_text(&key.thread_comm),
        kernel_ips,
        user_ips,
        user_stack,
        count,
    }
}

fn draw_status(elapsed: Duration, duration: Option<Duration>, samples: u64) {
    let total = match duration {
        Some(d) => format!(" / {:.0} s", d.as_secs_f64()),
        None => String::new(),
    };
    let _ = write!(
        std::io::stderr(),
        "\r\x1b[2Krecording {:.1} s{total}, {samples} samples (Ctrl-C to stop)",
        elapsed.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}
