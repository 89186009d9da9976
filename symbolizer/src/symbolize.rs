//! The symbolizer as one value: the three roles that turn samples into frames, held together.
//!
//! [`Processes`] follows the profiled processes (snapshots, lifecycle, runtimes) and locates their
//! addresses; [`Unwinder`] rebuilds stacks from what the processes hold; [`Namer`] names module
//! offsets and kernel addresses. [`Symbolizer`] owns one of each and only delegates, so callers
//! that want one value keep it, and callers that want the roles apart (a namer working while the
//! capture side follows processes) can hold the three themselves.

use std::path::PathBuf;

use crate::frame::{FrameAddress, Symbol};
use crate::modules::ModuleTable;
use crate::namer::Namer;
use crate::options::SymbolizerOptions;
use crate::process::{ProcessKey, ProcessTable, UserLocation};
use crate::processes::Processes;
use crate::unwind::{StackCopy, UnwoundStack, UserRegisters};
use crate::unwinder::{FramelessCode, Unwinder};
use crate::Error;

/// Every cache is bounded for runs of hours: per-process state until [`Symbolizer::release`] (see
/// [`Processes`] and [`Unwinder`]), per-module state by the files the live processes map (released
/// with the last of them), the namer's caches as [`Namer`] says.
pub struct Symbolizer {
    processes: Processes,
    unwinder: Unwinder,
    namer: Namer,
}

impl Symbolizer {
    pub fn new(options: SymbolizerOptions) -> Result<Self, Error> {
        Ok(Symbolizer {
            processes: Processes::with_module_budget(
                options.max_perf_map_bytes,
                options.max_perf_maps_total_bytes,
                options
                    .max_module_descriptors
                    .unwrap_or_else(crate::module_budget::default_max_descriptors),
            )?,
            unwinder: Unwinder::default(),
            namer: Namer::new(options),
        })
    }

    /// Loads the kernel's symbols now (tens of milliseconds), so the first kernel stacks of a
    /// recording do not stall the reader of the ring buffer.
    pub fn load_kernel_symbols(&mut self) {
        self.namer.load_kernel_symbols();
    }

    /// Names kernel addresses from this kallsyms file instead of `/proc/kallsyms` (a copy saved
    /// elsewhere, or a test's).
    pub fn with_kallsyms(mut self, path: impl Into<PathBuf>) -> Self {
        self.namer = self.namer.with_kallsyms(path);
        self
    }

    /// Called when a process instance is first sampled: snapshots its mappings while it is alive.
    /// Later calls for the same instance keep the snapshot.
    pub fn process_seen(&mut self, key: ProcessKey) -> Result<(), Error> {
        let seen = self.processes.process_seen(key);
        self.forget_dropped_modules();
        seen
    }

    /// Like [`Symbolizer::process_seen`], with the start time the sampled process had
    /// (`start_boottime` in nanoseconds since boot, as the BPF side reads it): the process under this
    /// PID is snapshotted only if it is that one, now and when the snapshot is retaken.
    pub fn process_seen_started(
        &mut self,
        key: ProcessKey,
        start_boottime_ns: u64,
    ) -> Result<(), Error> {
        let seen = self.processes.process_seen_started(key, start_boottime_ns);
        self.forget_dropped_modules();
        seen
    }

    /// Tells the namer and the unwinder which modules were closed or released, so that they drop
    /// what they hold of them (see [`ModuleTable`]). Called after every call that may open a
    /// module (which can close another) or release one.
    fn forget_dropped_modules(&mut self) {
        let dropped = self.processes.take_dropped_modules();
        if !dropped.is_empty() {
            self.namer.forget_modules(&dropped);
            self.unwinder.forget_modules(&dropped);
        }
    }

    /// A round of the caller's loop begins: snapshots may take `work` of the thread's CPU time
    /// from now, and what they do not reach is postponed to later rounds (see
    /// [`crate::SnapshotBudgetStats`]).
    pub fn start_round(&mut self, work: std::time::Duration) {
        self.processes.start_round(work);
    }

    /// Opens, within the round's budget, mappings that snapshots postponed. Returns whether some
    /// are still postponed (call again soon).
    pub fn open_postponed(&mut self) -> bool {
        let left = self.processes.open_postponed();
        self.forget_dropped_modules();
        left
    }

    /// What the snapshot budget did so far, for the summary.
    pub fn snapshot_budget_stats(&self) -> crate::SnapshotBudgetStats {
        self.processes.snapshot_budget_stats()
    }

    /// What the module table did so far (modules released, closed for the descriptor budget), for
    /// the summary.
    pub fn module_stats(&self) -> crate::ModuleStats {
        crate::ModuleStats {
            parsed_dropped: self.namer.parsed_dropped(),
            max_parsed_bytes: self.namer.max_parsed_bytes(),
            parsed_rebuilt: self.namer.parsed_rebuilt(),
            dwarf_refused: self.namer.dwarf_refused(),
            ..self.processes.module_stats()
        }
    }

    /// Executable mappings of instance `key` reported by mapping records (see
    /// [`Processes::mappings_recorded`]): its frames are named even if it was gone before its
    /// memory map could be read.
    pub fn mappings_recorded(&mut self, key: ProcessKey, mappings: &[crate::RecordedMapping]) {
        self.processes.mappings_recorded(key, mappings);
    }

    /// How process instances got their modules (see [`crate::NamingStats`]).
    pub fn naming_stats(&self) -> crate::NamingStats {
        self.processes.naming_stats()
    }

    /// Called when a process instance ends (exec or exit): its snapshot stays, for the samples it
    /// already has, but is never retaken, and its unwinder is dropped.
    pub fn instance_ended(&mut self, key: ProcessKey) {
        self.processes.instance_ended(key);
        self.unwinder.forget(key);
    }

    /// Forgets an ended instance whose samples have all been symbolized: its snapshot (and so its
    /// place among the module table's users), perf map, unwinder, start time and timers. Its symbols
    /// stay in the per-module caches, shared with other processes; its addresses are unknown now.
    pub fn release(&mut self, key: ProcessKey) {
        self.processes.release(key);
        self.unwinder.forget(key);
        self.forget_dropped_modules();
    }

    /// Whether process `key` has JIT code without names yet, which a perf map the runtime writes
    /// at its exit (a JVM's `-XX:+DumpPerfMapAtExit`) may still name: its samples are better built
    /// after it ended.
    pub fn awaits_perf_map(&self, key: ProcessKey) -> bool {
        self.processes.awaits_perf_map(key)
    }

    /// The CPython runtime of process `key`, if it has one that can be read (looked for at each
    /// snapshot until found).
    pub fn python_runtime(&self, key: ProcessKey) -> Option<&crate::python::PythonRuntime> {
        self.processes.python_runtime(key)
    }

    /// Looks again for the runtime of a process whose CPython could not be read yet (see
    /// [`Processes::retry_python`]); returns whether it was found now.
    pub fn retry_python(&mut self, key: ProcessKey) -> bool {
        self.processes.retry_python(key)
    }

    /// Whether process `key` runs CPython, and whether its frames can be read.
    pub fn python_status(&self, key: ProcessKey) -> crate::PythonStatus {
        self.processes.python_status(key)
    }

    /// Names the Python frames a sample of process `key` walked, from the process's memory (or
    /// what was cached of it): call while the process lives.
    pub fn python_stack(
        &mut self,
        key: ProcessKey,
        raw: &crate::RawPythonStack,
    ) -> crate::PythonStack {
        self.processes.python_stack(key, raw)
    }

    /// Drops the pages of module files that unwinding left in this process's RSS: they are page
    /// cache the profiled programs keep anyway, and the next unwinds fault in only what they read.
    /// Call now and then (the recorder does at each checkpoint).
    pub fn drop_file_pages(&self) {
        self.unwinder.drop_file_pages();
    }

    /// Forgets the names and source paths nothing holds any more: call after the profile took what
    /// it keeps (the recorder does at each checkpoint), or they stay for the whole run.
    pub fn forget_unused_names(&mut self) {
        self.namer.forget_unused_names();
    }

    /// Gives back the room per-process tables grew to while more processes were alive than are
    /// now (see `tables`): call at a quiet moment (the recorder does at each checkpoint).
    pub fn shrink_tables(&mut self) {
        self.processes.shrink_tables();
        self.unwinder.shrink_tables();
    }

    /// How many entries each cache holds, for the debug log of long runs.
    pub fn cache_sizes(&self) -> String {
        format!(
            "{}, {}, unwinders: {}, perf maps: {}",
            self.processes.cache_sizes(),
            self.namer.cache_sizes(),
            self.unwinder.cache_sizes(),
            self.processes.runtime_sizes(),
        )
    }

    /// What the readers of Python code objects did, for `-v`.
    pub fn python_stats(&self) -> crate::CodeReaderStats {
        self.processes.python_stats()
    }

    /// What perf maps cost that was not used (over the size or entry limits).
    pub fn jit_stats(&self) -> crate::JitStats {
        self.processes.jit_stats()
    }

    /// Processes whose snapshot was taken or retaken since the last call.
    pub fn take_changed(&mut self) -> Vec<ProcessKey> {
        self.processes.take_changed()
    }

    /// Retakes the snapshots of young processes taken while the dynamic loader was still mapping
    /// their libraries (only the executable and `ld-linux` mapped): a process's first sample often
    /// comes from the loader, and a short-lived one may be gone by the time a stack copy needing
    /// libc's CFI is unwound. Returns whether any such snapshot is still waiting (call again soon).
    pub fn retake_loader_snapshots(&mut self) -> bool {
        let waiting = self.processes.retake_loader_snapshots();
        self.forget_dropped_modules();
        waiting
    }

    /// Rebuilds a user stack from its registers and a copy of its top, with the modules' unwind
    /// information (see the `unwind` module).
    pub fn unwind(
        &mut self,
        key: ProcessKey,
        registers: UserRegisters,
        stack: StackCopy<'_>,
    ) -> UnwoundStack {
        let unwound = self
            .unwinder
            .unwind(&mut self.processes, key, registers, stack);
        self.forget_dropped_modules();
        unwound
    }

    /// Which code of a snapshotted process lacks frame pointers; `None` if there is no snapshot.
    pub fn frameless_code(&mut self, key: ProcessKey) -> Option<FramelessCode> {
        self.unwinder.frameless_code(&self.processes, key)
    }

    pub fn modules(&self) -> &ModuleTable {
        self.processes.modules()
    }

    pub fn processes(&self) -> &ProcessTable {
        self.processes.snapshots()
    }

    /// Symbolizes user addresses of the given processes; one result per input, in order.
    pub fn symbolize_user(&mut self, addresses: &[(ProcessKey, FrameAddress)]) -> Vec<Symbol> {
        let locations: Vec<UserLocation> = addresses
            .iter()
            .map(|&(key, address)| self.processes.locate(key, address.lookup_address()))
            .collect();
        self.forget_dropped_modules();
        let named = self
            .namer
            .symbolize_user(self.processes.modules(), &locations);
        named
            .into_iter()
            .zip(addresses)
            .map(|(symbol, &(key, address))| {
                symbol
                    .unwrap_or_else(|| self.processes.name_unmapped(key, address.lookup_address()))
            })
            .collect()
    }

    /// Symbolizes kernel addresses with kallsyms; one result per input, in order.
    pub fn symbolize_kernel(&mut self, addresses: &[FrameAddress]) -> Vec<Symbol> {
        self.namer.symbolize_kernel(addresses)
    }
}
