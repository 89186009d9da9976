//! Addresses to frames.
//!
//! The capture side tells this crate about each process the moment it first sees a sample of it
//! ([`Symbolizer::process_seen`]); the crate then takes a [`ProcessSnapshot`] of the process's
//! executable mappings and keeps an open file handle to every mapped module, so its frames can be
//! named even after the process has exited. At the end, user addresses are normalized through the
//! snapshot to (module, file offset) and symbolized with blazesym's ELF source (DWARF lines, inlined
//! functions), then demangled (`demangle`); kernel addresses with kallsyms. Results are cached per (module, offset) and
//! per kernel address, and modules are shared between processes by file identity, so libc is parsed
//! once however many processes map it; a module is released once no live snapshot maps it.
//!
//! The work is split by role: [`Processes`] (lifecycle, snapshots, per-process runtimes such as JIT
//! perf maps; normalizes addresses), [`Unwinder`] (stacks from registers and stack copies, frameless
//! code; reads what the processes hold) and [`Namer`] (module offsets and kernel addresses to
//! frames). [`Symbolizer`] holds one of each for callers that want a single value.
//!
//! A frame that cannot be named is not an error: it comes back as [`Symbol::Unknown`] with the reason,
//! printed `module+0xOFFSET`.
//!
//! [`stack_root`] says which outermost frames make a user stack complete.

#[cfg(test)]
#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

mod compressed;
mod debug_file;
mod demangle;
mod entry_point;
mod error;
mod frame;
mod heap;
mod jit;
mod kallsyms;
mod mapping_records;
mod maps;
mod module_budget;
mod module_id;
mod modules;
mod namer;
mod options;
pub mod perf_map;
mod plt;
mod process;
mod processes;
pub mod python;
mod python_runtime;
mod python_stack;
mod released;
mod runtimes;
mod snapshot_budget;
pub mod stack_root;
mod strings;
mod symbolize;
mod tables;
pub mod untrusted;
mod unwind;
mod unwinder;
mod vdso;

pub use demangle::{demangle, NameStyle};
pub use error::Error;
pub use frame::{Frame, FrameAddress, FrameKind, Symbol, UnknownReason};
pub use heap::{thread_heap_balance, CountingAllocator};
pub use jit::JitStats;
pub use mapping_records::{
    FileIdentity, NamingStats, RecordedMapping, Unusable, MAX_RECORDED_PER_PROCESS,
};
pub use maps::{parse_maps, MapsEntry};
pub use module_budget::ModuleStats;
pub use modules::{DroppedModule, FileKey, Module, ModuleId, ModuleTable};
pub use namer::{Namer, MAX_INFLATED_BYTES, MAX_SYMBOL_ENTRIES};
pub use options::SymbolizerOptions;
pub use process::{Mapping, ProcessKey, ProcessSnapshot, ProcessTable, UserLocation};
pub use processes::Processes;
pub use python::CodeReaderStats;
pub use python_runtime::PythonStatus;
pub use python_stack::{PythonStack, PythonStackFrame, RawPythonFrame, RawPythonStack};
pub use snapshot_budget::{thread_cpu_time, SnapshotBudgetStats, WHOLE_SNAPSHOT_MAPPINGS};
pub use strings::SharedStrings;
pub use symbolize::Symbolizer;
pub use tables::ShrinkSparse;
pub use unwind::{StackCopy, UnwindEnd, UnwindFailure, UnwoundStack, UserRegisters};
pub use unwinder::{is_frameless, FramelessCode, FramelessMapping, Unwinder};
