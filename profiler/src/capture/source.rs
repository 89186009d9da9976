//! The seam between the kernel and everything else. A capture source (the BPF sampler's maps and
//! ring buffer, or perf_event ring buffers) only decodes what the kernel hands over into
//! [`Event`]s and counts what it lost; one [`super::collector::Collector`] does the rest for both
//! (unwinding, counting, symbolizing ahead, releasing ended processes, building the profile).
//! samply has the same split: its live recorder and its perf.data import feed one converter.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use emberprof_symbolizer::{
    FramelessCode, ProcessKey, RawPythonStack, RecordedMapping, StackCopy, UserRegisters,
};

/// A thread as a source saw it at a sample.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Thread {
    /// Process and program instance (see `emberprof_symbolizer::ProcessKey`).
    pub process: ProcessKey,
    pub tid: u32,
    /// Printable names (see `crate::text`): of the process (its main thread) and of the thread.
    pub process_name: Arc<str>,
    pub thread_name: Arc<str>,
}

/// A sample's user stack, as far as the source took it.
#[derive(Debug)]
pub enum UserStack<'a> {
    /// No user stack: a kernel thread, user stacks not captured, or the walk failed at once.
    None,
    /// Walked through frame pointers by the kernel, innermost first.
    Walked(Vec<u64>),
    /// Registers and a copy of the top of the stack (from the red zone below sp when the source
    /// has it), for DWARF unwinding: the source judged (BPF's `--unwind auto` plan) that a
    /// frame-pointer walk would go wrong.
    Copied {
        registers: UserRegisters,
        stack: StackCopy<'a>,
    },
    /// Both (perf_event samples carry the callchain and a copy): the collector picks by where the
    /// process's code is frameless.
    WalkedAndCopied {
        walked: Vec<u64>,
        registers: UserRegisters,
        stack: StackCopy<'a>,
    },
}

/// What a [`StackEvent`]'s `count` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Weight {
    /// Samples taken on a CPU, each one sampling period.
    Samples,
    /// Nanoseconds the thread spent switched out in these stacks (`--off-cpu`).
    OffCpu,
    /// The stacks a thread was switched out in, whose length is not known yet: it comes with the
    /// thread's next [`Event::OffCpuEnded`] (BPF stack copies, taken at the switch-out). `count`
    /// is unused.
    OffCpuUntilEnded,
}

/// One or more samples of the same stacks of one thread, or time it spent switched out in them.
#[derive(Debug)]
pub struct StackEvent<'a> {
    pub thread: Thread,
    /// Kernel frames, innermost first; empty in user mode.
    pub kernel: Vec<u64>,
    pub user: UserStack<'a>,
    /// The Python frames the source walked (BPF only), which replace the native interpreter
    /// frames that ran them; `None` when the sample has none.
    pub python: Option<RawPythonStack>,
    /// What `count` is: samples, or nanoseconds off CPU.
    pub weight: Weight,
    /// Samples (or nanoseconds) with these stacks. 0 announces stacks whose samples are counted in
    /// the kernel and delivered later (so they can be symbolized while their process lives).
    pub count: u64,
}

/// What a source decodes from the kernel. Handed over one at a time and never stored, so the
/// size of the stack variant costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Event<'a> {
    /// The first sample of a process instance: snapshot it now, while it is alive. `start_time`:
    /// its start in `/proc/PID/stat` ticks where the source knows it (to tell a reused PID).
    ProcessSeen {
        process: ProcessKey,
        start_time: Option<u64>,
    },
    /// The instance exec'd or exited: its snapshot is final.
    InstanceEnded(ProcessKey),
    /// Executable mappings the kernel reported the instance made (see `address_spaces`): its
    /// modules even if it is gone before its `/proc/PID/maps` can be read.
    Mappings {
        process: ProcessKey,
        mappings: Vec<RecordedMapping>,
    },
    Stack(StackEvent<'a>),
    /// A thread was switched in again after `nanos` switched out (`--off-cpu`): the time goes to
    /// the stacks of its last [`Weight::OffCpuUntilEnded`] event, or, from a source that has no
    /// stack at the switch (perf_event without kernel access), to its last on-CPU sample's.
    OffCpuEnded {
        tid: u32,
        nanos: u64,
    },
    /// As [`Event::OffCpuEnded`], from a source that takes the stacks of some switch-outs only
    /// (perf's `context-switches` event, one sample in N): the time goes to the stacks of the
    /// thread's last [`Weight::OffCpuUntilEnded`] event, which stay held for its next intervals
    /// until its next such event. Every interval is timed, so widths stay whole however few
    /// switch-outs are sampled.
    OffCpuAfterSampledSwitch {
        tid: u32,
        nanos: u64,
    },
}

/// Where events go (the collector).
pub trait EventSink {
    fn event(&mut self, event: Event<'_>);
}

/// What the collector tells a source that judges stacks in the kernel (BPF's `--unwind auto`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// Where the process's code is frameless: copy stacks whose walk meets it.
    Plan(ProcessKey, FramelessCode),
    /// A frame-pointer chain of this instance ending at `address` needs (no longer) a copy: the
    /// collector appends the outer frames it learned (see `roots`).
    KnownRoot {
        instance: u32,
        address: u64,
        known: bool,
    },
    /// A stack of this instance ended at the edge of its copy, `copied` bytes from sp: copy more
    /// for it (a source that cannot ignores this).
    StackCopyExhausted { instance: u32, copied: u32 },
    /// The process runs CPython: walk its Python frames (a source that cannot ignores this, and
    /// its samples keep their native interpreter frames).
    Python {
        process: ProcessKey,
        runtime: emberprof_symbolizer::python::PythonRuntime,
    },
}

/// A source's own account of the capture, for the summary.
#[derive(Clone, Debug, Default)]
pub struct SourceReport {
    /// Samples the kernel could not hand over (ring buffers full).
    pub lost: u64,
    /// Records that did not decode (version skew or a bug): counted as lost.
    pub malformed: u64,
    /// Times everything the kernel held was read and emptied while recording.
    pub checkpoints: u64,
    /// Lines for the summary at their log level (`-v` shows `Info`): why stacks were copied,
    /// streamed, lost, and what the kernel side cost.
    pub notes: Vec<(log::Level, String)>,
}

/// A capture backend's kernel side, running from when it is started until [`Source::stop`].
pub trait Source {
    /// Sleeps until records are pending or `timeout` passes (or a signal arrives).
    fn wait(&mut self, timeout: Duration);

    /// Decodes every pending record into events, oldest first.
    fn read(&mut self, sink: &mut dyn EventSink) -> Result<()>;

    /// Whether a [`Source::checkpoint`] is due (time, or kernel maps filling up).
    fn checkpoint_due(&self) -> bool;

    /// Hands over every sample the kernel holds so far. Afterwards, every sample of an instance
    /// that ended before the call has been delivered, so its state can be released.
    fn checkpoint(&mut self, sink: &mut dyn EventSink) -> Result<()>;

    /// Whether this source judges stacks in the kernel and wants [`Feedback`].
    fn wants_feedback(&self) -> bool {
        false
    }

    fn apply(&mut self, _feedback: Feedback) -> Result<()> {
        Ok(())
    }

    /// Whether this source takes the stacks of a thread as it switches out (`--off-cpu`); one that
    /// does not sends [`Event::OffCpuEnded`] alone, charged to the thread's last on-CPU sample.
    fn off_cpu_stacks(&self) -> bool {
        true
    }

    /// Samples kept so far, for the status line.
    fn samples(&self) -> u64;

    /// Stops sampling; what the kernel still holds stays readable for [`Source::finish`].
    fn stop(&mut self) -> Result<()>;

    /// After [`Source::stop`]: hands over everything left.
    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<()>;

    fn report(&self) -> Result<SourceReport>;
}
