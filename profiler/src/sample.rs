//! The plain data that leaves the capture stage: one distinct stack of one thread, with how many
//! samples hit it. Nothing here knows about BPF maps, and nothing downstream needs root.

use emberprof_symbolizer::{ProcessKey, PythonStack, UnwindEnd};

/// A distinct (thread, kernel stack, user stack) and its sample count (or its time off CPU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub pid: u32,
    pub tid: u32,
    /// Which program the process was running (see `emberprof_symbolizer::ProcessKey`).
    pub instance: u32,
    /// Name of the process (its main thread), as `ps` shows it.
    pub process_name: String,
    /// Name of the sampled thread.
    pub thread_name: String,
    /// Kernel instruction pointers, innermost first; empty when the sample was in user mode.
    pub kernel_ips: Vec<u64>,
    /// User instruction pointers, innermost first.
    pub user_ips: Vec<u64>,
    /// How `user_ips` were obtained.
    pub user_stack: UserStackSource,
    /// The Python frames the sample walked, named; they replace the native interpreter frames
    /// that ran them (see `profile::python`).
    pub python: Option<PythonStack>,
    /// Samples, or nanoseconds switched out when `off_cpu`.
    pub count: u64,
    /// Time the thread spent switched out in these stacks (`--off-cpu`), not samples on a CPU.
    pub off_cpu: bool,
}

/// How a sample's user stack was obtained: the unwinding paths, counted apart in the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UserStackSource {
    /// No user stack: a kernel thread, `--no-user`, or the walk failed at once.
    None,
    /// Walked by the kernel through frame pointers.
    FramePointers,
    /// Copied and unwound with DWARF CFI; how the unwind ended.
    Dwarf(UnwindEnd),
}

impl StackSample {
    pub fn process(&self) -> ProcessKey {
        ProcessKey {
            pid: self.pid,
            instance: self.instance,
        }
    }
}
