//! One recording: waits while the BPF program samples, drains the ring buffer as it fills (so new
//! processes are snapshotted while alive), shows a status line, and stops on the duration, a signal,
//! or the end of the targets. Then it reads the maps into plain [`StackSample`]s.
//!
//! On long runs memory stays bounded: every few seconds the BPF side is switched to the other
//! generation of its count and stack maps, and the old one is read and emptied, so the kernel maps
//! never fill; process instances that ended (exec or exit) before the switch then have all their
//! samples in hand, so they are symbolized into a profile at once and their state released.

use std::collections::{HashMap, HashSet};
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
use crate::profile::{self, MergedProfile, Metadata};
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
/// How often the map generations are switched and the old one read and emptied.
const ROTATE_INTERVAL: Duration = Duration::from_secs(5);
/// ... or sooner when a generation fills (see `Rotation::due`), but not more often than this.
const MIN_ROTATE_INTERVAL: Duration = Duration::from_secs(1);

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

impl StopConditions<'_> {
    /// Why the recording that started at `started` should stop now, if it should: a signal, the
    /// duration, the launched command's exit, or the end of every watched process. Shared by both
    /// backends' recording loops.
    pub fn reached(&mut self, started: Instant) -> Result<Option<StopReason>> {
        match self.signal.load(Ordering::Relaxed) {
            0 => {}
            signal => return Ok(Some(StopReason::Signal(signal as i32))),
        }
        if self.duration.is_some_and(|d| started.elapsed() >= d) {
            return Ok(Some(StopReason::DurationElapsed));
        }
        if let Some(command) = self.command.as_deref_mut() {
            if command.try_wait()?.is_some() {
                return Ok(Some(StopReason::CommandExited));
            }
        }
        if !self.watches.is_empty() && self.watches.iter_mut().all(|w| w.has_exited()) {
            return Ok(Some(StopReason::TargetsExited));
        }
        Ok(None)
    }
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
    /// Samples of the processes still running at the end (or not released yet).
    pub samples: Vec<StackSample>,
    /// Samples read at each map switch, already symbolized and built (launch mode: without the
    /// command's pre-exec samples); the processes that had ended then are released.
    pub built: MergedProfile,
    /// Times the map generations were switched and the old one emptied.
    pub rotations: u64,
    /// Process instances built and released during the recording.
    pub released: u64,
    pub stats: BpfStats,
    pub recorded_for: Duration,
    pub stop_reason: StopReason,
    /// When sampling stopped; post-processing time is measured from here.
    pub stopped_at: Instant,
    /// Ring-buffer records that did not decode (version skew or a bug); counted as lost.
    pub malformed_records: u64,
    pub unwinding: UnwindStats,
    /// Time in the BPF programs and their runs, when `kernel.bpf_stats_enabled` is 1.
    pub bpf_run_time: (Duration, u64),
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
    /// Every sample read so far (from either generation of the maps, or the ring buffer), with its
    /// stacks as frames: keys hold no map ids (see [`resolve`]).
    samples: HashMap<StreamedKey, u64>,
    /// Ring-buffer samples whose stack ids still point into the maps: resolved after each drain.
    unresolved: Vec<StreamedKey>,
    /// Keys added to the current generation, to switch before it fills.
    keys_in_generation: u64,
    /// Stacks read from the maps of both generations.
    stack_cache: StackCache,
    /// Instances that ended (exec or exit) since the last rotation.
    ended: Vec<ProcessKey>,
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

/// A sample keyed with its stacks as frames and how the user stack was obtained.
type StreamedKey = (SampleKey, Vec<u64>, Vec<u64>, UserStackSource);

/// The map generation in use, and when it was switched to.
struct Rotation {
    generation: u32,
    since: Instant,
    count: u64,
    released: u64,
    /// Every sample read at a switch, built then (see [`Capture::built`]).
    built: MergedProfile,
}

impl Rotation {
    /// Time to switch: the interval passed, or the generation is half full (of keys, or of stacks:
    /// a new key brings up to two).
    fn due(&self, keys: u64, sizes: super::MapSizes) -> bool {
        let elapsed = self.since.elapsed();
        elapsed >= ROTATE_INTERVAL
            || (elapsed >= MIN_ROTATE_INTERVAL
                && (keys * 2 >= u64::from(sizes.counts) || keys * 4 >= u64::from(sizes.stacks)))
    }
}

pub fn record(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    unwind: UnwindMode,
    mut stop: StopConditions<'_>,
    status_line: bool,
    built: MergedProfile,
) -> Result<Capture> {
    let status_line = status_line && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut collected = Collected::default();
    let mut last_status = started;
    let mut last_symbolized = started;
    let mut rotation = Rotation {
        generation: 0,
        since: started,
        count: 0,
        released: 0,
        built,
    };

    let stop_reason = loop {
        let mut wakeup = next_wakeup(started, stop.duration);
        if collected.loader_snapshots {
            wakeup = wakeup.min(LOADER_RETRY);
        }
        wait_readable(sampler.records_fd(), wakeup);
        drain(sampler, symbolizer, unwind, &mut collected)?;
        let pending = !collected.new_keys.is_empty() || !collected.new_streamed.is_empty();
        if last_symbolized.elapsed() >= SYMBOLIZE_INTERVAL && pending {
            symbolize_new_keys(sampler, symbolizer, unwind, &mut collected)?;
            last_symbolized = Instant::now();
        }
        if rotation.due(collected.keys_in_generation, sampler.map_sizes()) {
            rotate(
                sampler,
                symbolizer,
                unwind,
                &mut rotation,
                &mut collected,
                stop.command.as_deref(),
            )?;
        }

        if let Some(reason) = stop.reached(started)? {
            break reason;
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
    let bpf_run_time = sampler.programs_run_time();
    let stopped_at = Instant::now();
    if status_line {
        // stderr may be gone (a closed terminal after SIGHUP): never a panic for that.
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    // Records written before the detach are still in the ring buffer.
    drain(sampler, symbolizer, unwind, &mut collected)?;
    // Both generations: the current one, and the previous one if samples were still on their way to
    // it at the last switch. Nothing writes to them now, and they are freed with the sampler.
    for generation in [rotation.generation ^ 1, rotation.generation] {
        collect_generation(sampler, generation, &mut collected)?;
    }
    let Collected {
        samples,
        malformed_records,
        unwinding,
        roots,
        ..
    } = collected;

    let stats = sampler.stats()?;
    let mut samples: Vec<StackSample> = samples
        .into_iter()
        .map(|((key, kernel, user, source), count)| to_sample(&key, kernel, user, source, count))
        .collect();
    roots.complete(&mut samples);
    Ok(Capture {
        samples,
        built: rotation.built,
        rotations: rotation.count,
        released: rotation.released,
        stats,
        recorded_for,
        stop_reason,
        stopped_at,
        malformed_records,
        unwinding,
        bpf_run_time,
    })
}

/// Switches the BPF side to the other map generation, waits until no program can still be writing
/// to the old one, reads it into `collected` and empties it. Instances that had ended before the
/// switch have all their samples in hand then: they are released, and every sample read is built
/// into `rotation.built`.
fn rotate(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    unwind: UnwindMode,
    rotation: &mut Rotation,
    collected: &mut Collected,
    command: Option<&RunningCommand>,
) -> Result<()> {
    let finished: HashSet<ProcessKey> = std::mem::take(&mut collected.ended).into_iter().collect();
    let old = rotation.generation;
    rotation.generation ^= 1;
    rotation.since = Instant::now();
    rotation.count += 1;
    sampler.switch_generation(rotation.generation)?;
    wait_for_bpf_programs();
    // Streamed samples and notices of the old generation are in the ring buffer now.
    drain(sampler, symbolizer, unwind, collected)?;
    // Keys still waiting to be symbolized name stacks of the old generation: take their frames now.
    for key in std::mem::take(&mut collected.new_keys) {
        let (key, kernel, user, source) = resolve(
            sampler,
            &mut collected.stack_cache,
            key,
            Vec::new(),
            Vec::new(),
        )?;
        collected
            .new_streamed
            .push(to_sample(&key, kernel, user, source, 0));
    }
    collect_generation(sampler, old, collected)?;
    sampler.clear_generation(old, &mut collected.stack_cache)?;
    collected.keys_in_generation = 0;
    log::debug!("map generation {old} read and emptied");
    if !finished.is_empty() {
        release_ended(sampler, symbolizer, rotation, collected, command, &finished);
    }
    // The processes still running: built now too, so what a long recording holds is its
    // symbolized profile (see `profile::merge`), not every address-level stack until the end.
    let running: Vec<StackSample> = collected
        .samples
        .drain()
        .map(|((key, kernel, user, source), count)| to_sample(&key, kernel, user, source, count))
        .collect();
    for part in profile::split_by_process(running) {
        let part = build_part(part, symbolizer, collected, command);
        rotation.built.add(part);
    }
    // What was built and released is free heap now; give it back (glibc keeps it otherwise).
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    if log::log_enabled!(log::Level::Debug) {
        // SAFETY: mallinfo2 has no preconditions.
        let heap = unsafe { libc::mallinfo2() };
        log::debug!(
            "after switch {}: heap {} KiB in use of {} KiB; {} pending; profile: {}; roots: {}; \
             symbolizer: {}",
            rotation.count,
            heap.uordblks / 1024,
            (heap.arena + heap.hblkhd) / 1024,
            collected.new_streamed.len(),
            rotation.built.sizes(),
            collected.roots.sizes(),
            symbolizer.cache_sizes()
        );
    }
    Ok(())
}

/// Completes `samples` with the learned roots, leaves out the launched command's pre-exec ones and
/// builds them into a profile part.
fn build_part(
    mut samples: Vec<StackSample>,
    symbolizer: &mut Symbolizer,
    collected: &Collected,
    command: Option<&RunningCommand>,
) -> profile::Profile {
    collected.roots.complete(&mut samples);
    if let Some(command) = command {
        // The launched child before its exec was emberprof (see `record.rs`).
        command.remove_pre_exec_samples(&mut samples);
    }
    profile::build(&samples, symbolizer, Metadata::default())
}

/// Builds the samples of `finished` instances into `rotation.built` and releases their state in
/// the symbolizer, the learned roots and the BPF maps.
fn release_ended(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    rotation: &mut Rotation,
    collected: &mut Collected,
    command: Option<&RunningCommand>,
    finished: &HashSet<ProcessKey>,
) {
    let is_finished = |pid: u32, instance: u32| finished.contains(&ProcessKey { pid, instance });
    let done: Vec<StackSample> = collected
        .samples
        .extract_if(|(key, _, _, _), _| is_finished(key.tgid, key.instance))
        .map(|((key, kernel, user, source), count)| to_sample(&key, kernel, user, source, count))
        .collect();
    collected
        .new_streamed
        .retain(|sample| !is_finished(sample.pid, sample.instance));
    let stacks = done.len();
    for part in profile::split_by_process(done) {
        let part = build_part(part, symbolizer, collected, command);
        rotation.built.add_ended(part);
    }
    for &key in finished {
        symbolizer.release(key);
        for root in collected.roots.release(key) {
            if let Err(error) = sampler.set_known_root(key.instance, root, false) {
                log::debug!("{error:#}");
            }
        }
    }
    rotation.released += finished.len() as u64;
    log::debug!(
        "{} ended processes built into the profile ({stacks} stacks) and released",
        finished.len()
    );
}

/// Waits for an RCU grace period: every BPF program running when this is called has returned.
/// membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu() from userspace; where it is unavailable
/// (nohz_full kernels refuse it), a sleep far longer than any program run does the same in practice.
fn wait_for_bpf_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes integer arguments and touches no memory of ours.
    let result = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if result != 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a generation's counted keys into `collected.samples`, with their stacks as frames.
fn collect_generation(
    sampler: &mut Sampler,
    generation: u32,
    collected: &mut Collected,
) -> Result<()> {
    for (key, count) in sampler.read_counts(generation)? {
        if key.user_stack_id >= 0 {
            collected.unwinding.frame_pointer += count;
        }
        let sample = resolve(
            sampler,
            &mut collected.stack_cache,
            key,
            Vec::new(),
            Vec::new(),
        )?;
        *collected.samples.entry(sample).or_default() += count;
    }
    Ok(())
}

/// A sample with its map stack ids replaced by the stacks' frames: the key then holds
/// `STACK_ID_IN_RECORD` (or `STACK_ID_NONE`) and generation 0, so samples of the same stacks meet
/// whichever generation or path they came by.
fn resolve(
    sampler: &Sampler,
    cache: &mut StackCache,
    mut key: SampleKey,
    kernel_inline: Vec<u64>,
    user_inline: Vec<u64>,
) -> Result<StreamedKey> {
    let source = frame_pointer_stack(key.user_stack_id);
    let mut frames = |id: &mut i32, inline: Vec<u64>| -> Result<Vec<u64>> {
        if *id < 0 {
            return Ok(inline);
        }
        sampler.load_stack(key.generation, *id, cache)?;
        let frames = cache.frames(key.generation, *id).to_vec();
        *id = STACK_ID_IN_RECORD;
        Ok(frames)
    };
    let kernel = frames(&mut key.kernel_stack_id, kernel_inline)?;
    let user = frames(&mut key.user_stack_id, user_inline)?;
    key.generation = 0;
    Ok((key, kernel, user, source))
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
    /// Counts a sample (its stacks already frames); a stack not seen before is queued for
    /// symbolization while recording.
    fn add_sample(&mut self, key: StreamedKey) {
        match self.samples.entry(key) {
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
) -> Result<()> {
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
        Some(Record::NewKey(key)) => {
            collected.keys_in_generation += 1;
            collected.new_keys.push(key);
        }
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
            collected.ended.push(key);
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
            collected
                .unresolved
                .push((record.key, kernel, user, source));
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
            collected.add_sample(key);
        }
        None => collected.malformed_records += 1,
    });
    // Streamed samples may name one of their stacks by map id (the other one collided): take its
    // frames while the generation holds it.
    for (key, kernel, user, source) in std::mem::take(&mut collected.unresolved) {
        let (key, kernel, user, _) =
            resolve(sampler, &mut collected.stack_cache, key, kernel, user)?;
        collected.add_sample((key, kernel, user, source));
    }
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
    Ok(())
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
    collected: &mut Collected,
) -> Result<()> {
    let keys = std::mem::take(&mut collected.new_keys);
    // In batches, draining the ring buffer in between: a round can take tens of milliseconds (the
    // first one loads kallsyms and the DWARF of every module), while stack copies keep arriving.
    for batch in keys.chunks(SYMBOLIZE_BATCH) {
        let mut samples = Vec::with_capacity(batch.len());
        for key in batch {
            let (key, kernel, user, source) = resolve(
                sampler,
                &mut collected.stack_cache,
                *key,
                Vec::new(),
                Vec::new(),
            )?;
            samples.push(to_sample(&key, kernel, user, source, 0));
        }
        // The result is dropped: the point is the symbolizer's caches.
        symbolize_stacks(&samples, symbolizer);
        drain(sampler, symbolizer, unwind, collected)?;
    }
    // Only what was pending when the round started: stacks streamed in meanwhile wait for the next.
    let mut left = collected.new_streamed.len();
    while left > 0 {
        let batch_size = left.min(SYMBOLIZE_BATCH).min(collected.new_streamed.len());
        if batch_size == 0 {
            break;
        }
        left -= batch_size;
        let batch: Vec<StackSample> = collected.new_streamed.drain(..batch_size).collect();
        symbolize_stacks(&batch, symbolizer);
        drain(sampler, symbolizer, unwind, collected)?;
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

/// The live status line on stderr (a terminal), for both backends.
pub(crate) fn draw_status(elapsed: Duration, duration: Option<Duration>, samples: u64) {
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
