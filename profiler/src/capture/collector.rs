//! The one collector both capture sources feed (see `source`): it snapshots processes as they are
//! seen, unwinds copied user stacks, counts distinct stacks, symbolizes new ones while their
//! processes live, learns `--unwind auto`'s roots and plans for the BPF side, and at each
//! checkpoint builds what it holds into the profile and releases the processes that ended. What a
//! long recording holds is therefore its symbolized profile plus the stacks of the last few
//! seconds, whichever backend ran.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use emberprof_symbolizer::{
    FramelessCode, FramelessMapping, JitStats, ModuleStats, NamingStats, ProcessKey, PythonStack,
    RawPythonStack, ShrinkSparse, SnapshotBudgetStats, StackCopy, Symbolizer, UnwindEnd,
    UserRegisters,
};

use super::launch::remove_pre_exec_samples;
use super::python_report::PythonReport;
use super::roots::Roots;
use super::source::{Event, EventSink, Feedback, StackEvent, Thread, UserStack, Weight};
use super::user_stack::{choose_user_stack, UnwindMode, UnwindStats, UserStackChoice};
use crate::memory::{release_free_memory, FilePageBudget};
use crate::profile::{self, EndedLabels, MergedProfile, Metadata};
use crate::sample::{StackSample, UserStackSource};
use crate::symbols::symbolize_stacks;

/// Most distinct stacks kept back from checkpoints while their processes' JIT code may still be
/// named by a perf map written at exit (see [`Collector::end_checkpoint`]): what a few JIT
/// processes make in minutes (tens of MB at most). Past it, their stacks are built with what is
/// known, and the rest of their JIT frames may stay unnamed (warned once).
const MAX_AWAITING_STACKS: usize = 50_000;

/// Most threads whose last stacks are held for the off-CPU time that ends later
/// ([`Event::OffCpuEnded`]): far more than the threads a machine runs at once; past it, the
/// intervals of further threads are counted as unattributed rather than grow the table.
const MAX_OFF_CPU_THREADS: usize = 65_536;

/// How much CPU time the snapshots of one iteration of the recording loop may take (opening the
/// modules processes map; CPU time, since a machine busy with other work stretches wall time
/// whatever is done): past it, what they did not reach is postponed to the next iterations (see the
/// symbolizer's `snapshot_budget`), so that a process mapping tens of thousands of files does not
/// hold up the ring buffer's reader and a stop signal for seconds.
pub const SNAPSHOT_WORK_PER_ITERATION: std::time::Duration = std::time::Duration::from_millis(50);
/// The same once recording stopped, for the addresses the last build finds in mappings still
/// postponed.
const SNAPSHOT_WORK_AT_FINISH: std::time::Duration = std::time::Duration::from_secs(1);

/// A distinct stack of one thread, as counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct StackKey {
    thread: Thread,
    kernel: Vec<u64>,
    user: Vec<u64>,
    source: UserStackSource,
    /// Time switched out in these stacks (nanoseconds), not samples.
    off_cpu: bool,
    /// Named when the event came in, while the process lives.
    python: Option<PythonStack>,
}

/// What the collector did, for the summary.
#[derive(Clone, Debug, Default)]
pub struct CollectorReport {
    pub unwinding: UnwindStats,
    /// Process instances built and released during the recording.
    pub released: u64,
    pub jit: JitStats,
    /// How process instances got their modules: `/proc` snapshots, mapping records, or neither.
    pub naming: NamingStats,
    /// `--off-cpu`: nanoseconds switched out that came without stacks to put them on (no stack
    /// of the thread known, or [`MAX_OFF_CPU_THREADS`] reached).
    pub off_cpu_unattributed: u64,
    /// Modules released, and closed for the descriptor budget.
    pub modules: ModuleStats,
    pub python: PythonReport,
    /// The longest the recording loop went between two waits on the source (reading, snapshots,
    /// symbolization, checkpoints): how long the ring buffer and a stop signal waited at worst,
    /// and the CPU time it took (less on a busy machine).
    pub longest_iteration: (std::time::Duration, std::time::Duration),
    /// Mappings the snapshot budget postponed, opened later, or never opened.
    pub snapshots: SnapshotBudgetStats,
}

pub struct Collector {
    symbolizer: Symbolizer,
    mode: UnwindMode,
    /// The source judges stacks in the kernel (BPF `--unwind auto`): it gets plans and roots.
    feedback_wanted: bool,
    /// Every distinct stack since the last checkpoint and its samples (0: announced, counted in
    /// the kernel and not delivered yet).
    counts: HashMap<StackKey, u64>,
    /// Stacks first seen since the last symbolization round.
    pending: Vec<StackSample>,
    /// Instances that ended since the last checkpoint began.
    ended: Vec<ProcessKey>,
    /// `--unwind auto`: frameless roots of frame-pointer chains, learned from DWARF unwinds.
    roots: Roots,
    /// Where each snapshotted process's code is frameless, for samples that carry both a walk and
    /// a copy; recomputed when its snapshot changes.
    plans: HashMap<ProcessKey, Option<FramelessCode>>,
    feedback: Vec<Feedback>,
    unwinding: UnwindStats,
    built: MergedProfile,
    released: u64,
    /// The launched command, whose samples from before its exec are emberprof's own work.
    launched_pid: Option<u32>,
    /// Some snapshot was taken while the dynamic loader ran: retake it soon.
    loader_snapshots: bool,
    /// Some snapshot has mappings postponed for the snapshot budget: continue soon.
    postponed_snapshots: bool,
    /// [`MAX_AWAITING_STACKS`] was reached (warned once).
    awaiting_full: bool,
    /// `--off-cpu`: each thread's stacks that its next [`Event::OffCpuEnded`] is charged to.
    off_cpu_stacks: HashMap<u32, StackKey>,
    /// `--off-cpu` from a source without stacks at the switch: a thread's off-CPU time goes to its
    /// last on-CPU sample's stacks (samply's approach).
    off_cpu_on_last_sample: bool,
    off_cpu_unattributed: u64,
    /// Processes whose CPython runtime the source was told about.
    python_sent: HashSet<ProcessKey>,
    /// Python stacks named since the last checkpoint, by what the walker saw: a stack announced
    /// while sampling and delivered with its count at the checkpoint is named once, while its
    /// code objects live (a module's top-level code is freed once it has run).
    python_named: HashMap<(ProcessKey, RawPythonStack), PythonStack>,
    /// Those of the checkpoint before (keys announced while the last checkpoint ran are delivered
    /// at the next one).
    python_named_before: HashMap<(ProcessKey, RawPythonStack), PythonStack>,
    python: PythonReport,
    longest_iteration: (std::time::Duration, std::time::Duration),
    /// When to drop unwinding's file pages between checkpoints too.
    file_pages: FilePageBudget,
}

impl Collector {
    pub fn new(
        symbolizer: Symbolizer,
        mode: UnwindMode,
        feedback_wanted: bool,
        labels: EndedLabels,
        launched_pid: Option<u32>,
    ) -> Self {
        Collector {
            symbolizer,
            mode,
            feedback_wanted,
            counts: HashMap::new(),
            pending: Vec::new(),
            ended: Vec::new(),
            roots: Roots::default(),
            plans: HashMap::new(),
            feedback: Vec::new(),
            unwinding: UnwindStats::default(),
            built: MergedProfile::new(labels),
            released: 0,
            launched_pid,
            loader_snapshots: false,
            postponed_snapshots: false,
            awaiting_full: false,
            off_cpu_stacks: HashMap::new(),
            off_cpu_on_last_sample: false,
            off_cpu_unattributed: 0,
            python_sent: HashSet::new(),
            python_named: HashMap::new(),
            python_named_before: HashMap::new(),
            python: PythonReport::default(),
            longest_iteration: Default::default(),
            file_pages: FilePageBudget::new(),
        }
    }

    /// `--off-cpu` with a source that knows when threads switch but not where (perf_event without
    /// kernel access): each interval goes to the thread's last on-CPU sample's stacks. Off (the
    /// default), on-CPU samples cost nothing more.
    pub fn off_cpu_on_last_sample(mut self, on: bool) -> Self {
        self.off_cpu_on_last_sample = on;
        self
    }

    /// The profile holds at most about `bytes` (`--max-profile-size`).
    pub fn profile_within(mut self, bytes: u64) -> Self {
        self.built = self.built.within(bytes);
        self
    }

    /// After a source's read: retakes snapshots taken while the loader ran (before more stacks of
    /// those processes arrive: a short-lived one may be gone by then), and recomputes the plans of
    /// processes whose snapshot changed. Returns what the source must be told.
    pub fn after_read(&mut self) -> Vec<Feedback> {
        self.loader_snapshots = self.symbolizer.retake_loader_snapshots();
        self.postponed_snapshots = self.symbolizer.open_postponed();
        for key in self.symbolizer.take_changed() {
            self.plans.remove(&key);
            // Mapping records complete the snapshots of instances already gone: a plan for their
            // PID would only outlive them in the BPF maps (and meet whatever gets the PID next).
            if self.feedback_wanted && !self.ended.contains(&key) {
                self.send_plan(key);
            }
            self.send_python(key);
        }
        std::mem::take(&mut self.feedback)
    }

    /// The recording loop woke and starts its work: snapshots get
    /// [`SNAPSHOT_WORK_PER_ITERATION`] of it.
    pub fn begin_iteration(&mut self) {
        self.symbolizer.start_round(SNAPSHOT_WORK_PER_ITERATION);
    }

    /// The recording loop's work took `busy` since [`Collector::begin_iteration`], `cpu` of it on
    /// the CPU.
    pub fn end_iteration(&mut self, busy: std::time::Duration, cpu: std::time::Duration) {
        if busy > self.longest_iteration.0 {
            self.longest_iteration = (busy, cpu);
        }
        if self.file_pages.exceeded() {
            self.drop_file_pages();
        }
    }

    /// Drops the module file pages unwinding left resident (see `FilePageBudget`).
    fn drop_file_pages(&mut self) {
        self.symbolizer.drop_file_pages();
        self.file_pages.dropped();
    }

    /// Whether a snapshot should be retaken soon (see [`Collector::after_read`]).
    pub fn retake_soon(&self) -> bool {
        self.loader_snapshots || self.postponed_snapshots
    }

    /// Stacks waiting to be symbolized.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Symbolizes up to `limit` of the stacks first seen since the last round, while their
    /// processes are alive and sampling goes on, so that little is left to do when it stops.
    /// Returns how many it took.
    pub fn symbolize_pending(&mut self, limit: usize) -> usize {
        let batch: Vec<StackSample> = self
            .pending
            .drain(..limit.min(self.pending.len()))
            .collect();
        // The result is dropped: the point is the symbolizer's caches.
        symbolize_stacks(&batch, &mut self.symbolizer);
        batch.len()
    }

    /// The instances whose samples a checkpoint that starts now completes.
    pub fn begin_checkpoint(&mut self) -> HashSet<ProcessKey> {
        std::mem::take(&mut self.ended).into_iter().collect()
    }

    /// After the source delivered everything up to the checkpoint: builds and releases the
    /// instances that had ended before it, and builds the running ones too, so what a long
    /// recording holds is its symbolized profile, not every address-level stack until the end.
    /// Running processes whose JIT code a perf map written at their exit may still name are kept
    /// back (within [`MAX_AWAITING_STACKS`]): built now, their JIT frames would stay unnamed.
    pub fn end_checkpoint(&mut self, finished: HashSet<ProcessKey>) -> Vec<Feedback> {
        // Before the profile is built, whose memory would come on top of those pages.
        self.drop_file_pages();
        if !finished.is_empty() {
            self.release_ended(&finished);
        }
        // Everything announced before the last checkpoint has been delivered now.
        self.python_named_before = std::mem::take(&mut self.python_named);
        let awaiting = self.awaiting_perf_maps();
        let running = self.take_samples(|key| !awaiting.contains(&key.thread.process));
        for part in profile::split_by_process(running) {
            let part = self.build_part(part);
            self.built.add(part);
        }
        // The profile now holds what it keeps of the names; what it pruned goes.
        self.symbolizer.forget_unused_names();
        let stacks_room = self.counts.capacity();
        self.shrink_tables();
        release_free_memory();
        if log::log_enabled!(log::Level::Debug) {
            // SAFETY: mallinfo2 has no preconditions.
            let heap = unsafe { libc::mallinfo2() };
            log::debug!(
                "after checkpoint: {}, file pages dropped {} times; heap {} KiB in use of an arena \
                 of {} KiB, and {} KiB in blocks mapped apart; {} pending; stacks since the last \
                 checkpoint: {} left, room for {} before shrinking; profile: {}; roots: {}; \
                 symbolizer: {}",
                crate::memory::own_rss(),
                self.file_pages.drops,
                // glibc counts blocks past the mmap threshold (large vectors and tables) apart from
                // the arena's: both are in use.
                heap.uordblks / 1024,
                heap.arena / 1024,
                heap.hblkhd / 1024,
                self.pending.len(),
                self.counts.len(),
                stacks_room,
                self.built.sizes(),
                self.roots.sizes(),
                self.symbolizer.cache_sizes()
            );
        }
        std::mem::take(&mut self.feedback)
    }

    /// Gives back the room a burst left in the tables emptied at each checkpoint (the stacks since
    /// the last one above all) and in the per-process ones (see `ShrinkSparse`).
    fn shrink_tables(&mut self) {
        self.counts.shrink_if_sparse();
        self.pending.shrink_if_sparse();
        self.plans.shrink_if_sparse();
        self.off_cpu_stacks.shrink_if_sparse();
        self.python_sent.shrink_if_sparse();
        self.symbolizer.shrink_tables();
    }

    /// Running processes whose stacks wait for a perf map written at exit, unless they hold more
    /// than [`MAX_AWAITING_STACKS`] stacks.
    fn awaiting_perf_maps(&mut self) -> HashSet<ProcessKey> {
        let mut awaiting = HashSet::new();
        let mut stacks = 0;
        for key in self.counts.keys() {
            let process = key.thread.process;
            if awaiting.contains(&process) || self.symbolizer.awaits_perf_map(process) {
                awaiting.insert(process);
                stacks += 1;
            }
        }
        if stacks <= MAX_AWAITING_STACKS {
            return awaiting;
        }
        if !self.awaiting_full {
            self.awaiting_full = true;
            log::warn!(
                "{stacks} stacks of JIT processes without a perf map yet: built now, their JIT \
                 frames stay unnamed even if a map is written at exit"
            );
        }
        HashSet::new()
    }

    /// Builds everything left into the profile, every process being done now. The symbolizer
    /// goes with it: its parsed debug info (tens of MB) is not needed for the outputs.
    pub fn finish(mut self) -> (MergedProfile, CollectorReport) {
        self.symbolizer.start_round(SNAPSHOT_WORK_AT_FINISH);
        let samples = self.take_samples(|_| true);
        for part in profile::split_by_process(samples) {
            let part = self.build_part(part);
            // Those past the label budget are counted like ended ones.
            self.built.add_ended(part);
        }
        self.python.code = self.symbolizer.python_stats();
        let report = CollectorReport {
            unwinding: self.unwinding,
            released: self.released,
            jit: self.symbolizer.jit_stats(),
            naming: self.symbolizer.naming_stats(),
            off_cpu_unattributed: self.off_cpu_unattributed,
            modules: self.symbolizer.module_stats(),
            python: self.python,
            longest_iteration: self.longest_iteration,
            snapshots: self.symbolizer.snapshot_budget_stats(),
        };
        (self.built, report)
    }

    /// Builds the samples of `finished` instances and releases their state in the symbolizer,
    /// the learned roots and the source.
    fn release_ended(&mut self, finished: &HashSet<ProcessKey>) {
        let done = self.take_samples(|key| finished.contains(&key.thread.process));
        self.pending
            .retain(|sample| !finished.contains(&sample.process()));
        let stacks = done.len();
        for part in profile::split_by_process(done) {
            let part = self.build_part(part);
            self.built.add_ended(part);
        }
        if !self.off_cpu_stacks.is_empty() {
            self.off_cpu_stacks
                .retain(|_, key| !finished.contains(&key.thread.process));
        }
        for &key in finished {
            self.python_sent.remove(&key);
            self.symbolizer.release(key);
            self.plans.remove(&key);
            for address in self.roots.release(key) {
                self.feedback.push(Feedback::KnownRoot {
                    instance: key.instance,
                    address,
                    known: false,
                });
            }
        }
        self.released += finished.len() as u64;
        log::debug!(
            "{} ended processes built into the profile ({stacks} stacks) and released",
            finished.len()
        );
    }

    /// Takes the counted stacks that match `which` out of the counts (announced-only ones are
    /// dropped: their samples, if any, come with a later delivery).
    fn take_samples(&mut self, which: impl Fn(&StackKey) -> bool) -> Vec<StackSample> {
        self.counts
            .extract_if(|key, _| which(key))
            .filter(|(_, count)| *count > 0)
            .map(|(key, count)| to_sample(key, count))
            .collect()
    }

    /// Completes `samples` with the learned roots, leaves out the launched command's pre-exec ones
    /// and builds them into a profile part.
    fn build_part(&mut self, mut samples: Vec<StackSample>) -> profile::Profile {
        self.roots.complete(&mut samples);
        if let Some(pid) = self.launched_pid {
            let removed = remove_pre_exec_samples(pid, &mut samples);
            if removed > 0 {
                log::debug!("left out {removed} stacks of the command before its exec");
            }
        }
        profile::build(&samples, &mut self.symbolizer, Metadata::default())
    }

    /// `--unwind auto` with a source that judges stacks in the kernel: tells it where this
    /// process's code is frameless, so samples whose frame-pointer walk meets it get their stacks
    /// copied while the rest keeps the cheap walk. Until then, the source copies every stack.
    fn send_plan(&mut self, key: ProcessKey) {
        let plan = self.symbolizer.frameless_code(key);
        log::debug!(
            "process {} instance {}: frameless code {plan:?}",
            key.pid,
            key.instance
        );
        if let Some(plan) = plan {
            self.roots.set_plan(key, mappings_of(&plan));
            self.feedback.push(Feedback::Plan(key, plan));
        }
    }

    /// The named frames of a Python stack (see [`Collector::python_named`]).
    fn python_stack(&mut self, process: ProcessKey, raw: RawPythonStack) -> PythonStack {
        let key = (process, raw);
        if let Some(named) = self.python_named_before.get(&key) {
            return named.clone();
        }
        if let Some(named) = self.python_named.get(&key) {
            return named.clone();
        }
        let named = self.symbolizer.python_stack(key.0, &key.1);
        // A stack with an unreadable code object is named again next time: a later sample may
        // come while the object is readable (or cached) again.
        if !named.has_unknown_frames() {
            self.python_named.insert(key, named.clone());
        }
        named
    }

    /// A process whose snapshot changed may have loaded CPython: tells the source, once.
    fn send_python(&mut self, key: ProcessKey) {
        if self.python_sent.contains(&key) {
            return;
        }
        let retried = self.symbolizer.retry_python(key);
        if retried || !self.python.knows(key) {
            self.python.status(key, self.symbolizer.python_status(key));
        }
        if let Some(runtime) = self.symbolizer.python_runtime(key) {
            // Found since its status was taken (a snapshot completed by mapping records).
            self.python.status(key, self.symbolizer.python_status(key));
            self.python_sent.insert(key);
            self.feedback.push(Feedback::Python {
                process: key,
                runtime: runtime.clone(),
            });
        }
    }

    /// The user frames of a stack event and how they were obtained.
    fn user_frames(
        &mut self,
        process: ProcessKey,
        user: UserStack<'_>,
        count: u64,
    ) -> (Vec<u64>, UserStackSource) {
        match user {
            UserStack::None => (Vec::new(), UserStackSource::None),
            UserStack::Walked(frames) => self.walked(frames, count),
            UserStack::Copied { registers, stack } => {
                let (frames, end) = self.unwind(process, registers, stack, count);
                if self.mode == UnwindMode::Auto && end == UnwindEnd::Complete {
                    self.learn_root(process, registers, stack, &frames);
                }
                (frames, UserStackSource::Dwarf(end))
            }
            UserStack::WalkedAndCopied {
                walked,
                registers,
                stack,
            } => {
                let mode = self.mode;
                let symbolizer = &mut self.symbolizer;
                let plan = self
                    .plans
                    .entry(process)
                    .or_insert_with(|| symbolizer.frameless_code(process));
                match choose_user_stack(mode, plan.as_ref(), &walked) {
                    UserStackChoice::Dwarf => {
                        let (frames, end) = self.unwind(process, registers, stack, count);
                        (frames, UserStackSource::Dwarf(end))
                    }
                    UserStackChoice::Callchain => self.walked(walked, count),
                }
            }
        }
    }

    fn walked(&mut self, frames: Vec<u64>, count: u64) -> (Vec<u64>, UserStackSource) {
        if frames.is_empty() {
            return (frames, UserStackSource::None);
        }
        self.unwinding.frame_pointer += count;
        (frames, UserStackSource::FramePointers)
    }

    fn unwind(
        &mut self,
        process: ProcessKey,
        registers: UserRegisters,
        stack: StackCopy<'_>,
        count: u64,
    ) -> (Vec<u64>, UnwindEnd) {
        let unwound = self.symbolizer.unwind(process, registers, stack);
        self.unwinding.count(unwound.end, count);
        if unwound.end == UnwindEnd::StackCopyExhausted {
            // Bytes from sp: the red zone below it is not part of the size the source copies.
            let end = stack.start.saturating_add(stack.bytes.len() as u64);
            let copied = u32::try_from(end.saturating_sub(registers.sp)).unwrap_or(u32::MAX);
            self.feedback.push(Feedback::StackCopyExhausted {
                instance: process.instance,
                copied,
            });
        }
        (unwound.frames, unwound.end)
    }

    /// Learns the outer frames of a frameless root from a complete DWARF unwind (see `roots`).
    fn learn_root(
        &mut self,
        process: ProcessKey,
        registers: UserRegisters,
        stack: StackCopy<'_>,
        frames: &[u64],
    ) {
        // The first stacks of a process come before its plan reaches the source: learn from them
        // already.
        if !self.roots.has_plan(process) {
            if let Some(code) = self.symbolizer.frameless_code(process) {
                self.roots.set_plan(process, mappings_of(&code));
            }
        }
        let change = self
            .roots
            .learn(process, registers.ip, registers.bp, stack, frames);
        if let Some(change) = change {
            self.feedback.push(Feedback::KnownRoot {
                instance: process.instance,
                address: change.address,
                known: change.known,
            });
        }
    }

    fn stack(&mut self, event: StackEvent<'_>) {
        let StackEvent {
            thread,
            kernel,
            user,
            python,
            weight,
            count,
        } = event;
        // The unwinding figures count samples; an off-CPU stack is one interval whatever its length.
        let samples = match weight {
            Weight::Samples => count,
            Weight::OffCpu | Weight::OffCpuUntilEnded => 0,
        };
        let (user, source) = self.user_frames(thread.process, user, samples);
        let python = python.map(|raw| self.python_stack(thread.process, raw));
        // Samples that came with the process's first notice, before the snapshot that found its
        // Python, count too (they have no Python frames: the BPF side did not know it yet).
        self.send_python(thread.process);
        self.python.samples(
            thread.process,
            &thread.process_name,
            samples,
            python.is_some(),
        );
        let key = StackKey {
            thread,
            kernel,
            user,
            source,
            off_cpu: weight != Weight::Samples,
            python,
        };
        match weight {
            Weight::Samples if self.off_cpu_on_last_sample => {
                let mut off_cpu = key.clone();
                off_cpu.off_cpu = true;
                self.hold_off_cpu_stacks(off_cpu);
            }
            Weight::Samples | Weight::OffCpu => {}
            Weight::OffCpuUntilEnded => {
                // Announced now (symbolized while the process lives); counted when it ends.
                self.hold_off_cpu_stacks(key.clone());
                self.add(key, 0);
                return;
            }
        }
        self.add(key, count);
    }

    fn add(&mut self, key: StackKey, count: u64) {
        match self.counts.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut entry) => *entry.get_mut() += count,
            std::collections::hash_map::Entry::Vacant(entry) => {
                self.pending.push(to_sample(entry.key().clone(), 0));
                entry.insert(count);
            }
        }
    }

    /// The stacks a thread's next off-CPU interval is charged to (see [`MAX_OFF_CPU_THREADS`]).
    fn hold_off_cpu_stacks(&mut self, key: StackKey) {
        let tid = key.thread.tid;
        if self.off_cpu_stacks.len() < MAX_OFF_CPU_THREADS || self.off_cpu_stacks.contains_key(&tid)
        {
            self.off_cpu_stacks.insert(tid, key);
        }
    }

    /// A thread switched in again after `nanos`: its held stacks get the time. Taken from the
    /// held-stacks table only when they were a switch-out's own and the source sends each
    /// switch-out's stacks (`keep` false); a last on-CPU sample stays the thread's until its next
    /// one, a sampled switch-out's until the next sampled one.
    fn off_cpu_ended(&mut self, tid: u32, nanos: u64, keep: bool) {
        let key = if self.off_cpu_on_last_sample || keep {
            self.off_cpu_stacks.get(&tid).cloned()
        } else {
            self.off_cpu_stacks.remove(&tid)
        };
        match key {
            Some(key) => self.add(key, nanos),
            None => self.off_cpu_unattributed = self.off_cpu_unattributed.saturating_add(nanos),
        }
    }
}

impl EventSink for Collector {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::ProcessSeen {
                process,
                start_time,
            } => {
                let seen = match start_time {
                    Some(start) => self.symbolizer.process_seen_started(process, start),
                    None => self.symbolizer.process_seen(process),
                };
                if let Err(error) = seen {
                    // Usually a process that exited between its first sample and now.
                    log::debug!("no snapshot of process {}: {error}", process.pid);
                }
            }
            Event::InstanceEnded(process) => {
                log::debug!(
                    "process {} instance {} ended (exec or exit)",
                    process.pid,
                    process.instance
                );
                self.symbolizer.instance_ended(process);
                self.roots.instance_ended(process);
                self.plans.remove(&process);
                self.ended.push(process);
            }
            Event::Mappings { process, mappings } => {
                self.symbolizer.mappings_recorded(process, &mappings);
            }
            Event::Stack(stack) => self.stack(stack),
            Event::OffCpuEnded { tid, nanos } => self.off_cpu_ended(tid, nanos, false),
            Event::OffCpuAfterSampledSwitch { tid, nanos } => self.off_cpu_ended(tid, nanos, true),
        }
    }
}

/// What [`Roots`] needs of a plan: the frameless mappings, `None` when every stack is copied.
fn mappings_of(plan: &FramelessCode) -> Option<Vec<FramelessMapping>> {
    match plan {
        FramelessCode::None => Some(Vec::new()),
        FramelessCode::Mappings(mappings) => Some(mappings.clone()),
        FramelessCode::Everywhere => None,
    }
}

fn to_sample(key: StackKey, count: u64) -> StackSample {
    let StackKey {
        thread,
        kernel,
        user,
        source,
        off_cpu,
        python,
    } = key;
    StackSample {
        pid: thread.process.pid,
        tid: thread.tid,
        instance: thread.process.instance,
        process_name: name_text(thread.process_name),
        thread_name: name_text(thread.thread_name),
        kernel_ips: kernel,
        user_ips: user,
        user_stack: source,
        python,
        count,
        off_cpu,
    }
}

fn name_text(name: Arc<str>) -> String {
    name.as_ref().to_owned()
}
