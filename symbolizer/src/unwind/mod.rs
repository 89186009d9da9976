//! DWARF (.eh_frame / .debug_frame) unwinding of copied user stacks, with framehop.
//!
//! The BPF program sends the user registers and the top of the user stack; this module rebuilds the
//! call chain from them using each mapped module's CFI, and falls back to the frame-pointer rule,
//! frame by frame, where a module has none. Unwind sections are memory-mapped once per module file
//! and shared by all processes; each process gets a framehop unwinder placing those modules at its
//! own addresses, built at its first stack and dropped when it is forgotten.

mod cfi;
pub(crate) mod elf_info;
mod scan;
mod walk;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Unwinder as _};
use gimli::UnwindContext;

use elf_info::SectionBytes;
pub use elf_info::{ElfUnwindInfo, FramePointers};
use walk::Walk;

use crate::modules::{ModuleId, ModuleTable};
use crate::perf_map::PerfMap;
use crate::process::{ProcessKey, ProcessTable};
use crate::tables::ShrinkSparse;

/// Frames kept per unwound stack; deeper stacks are cut (and counted as ended early).
const MAX_UNWIND_FRAMES: usize = 512;

/// User registers at a sample: where unwinding starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegisters {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// All general-purpose registers by DWARF number (rax rdx rcx rbx rsi rdi rbp rsp r8 .. r15),
    /// when the capture has them: CFI of hand-written assembly computes a leaf's CFA from any of them.
    pub general: Option<[u64; 16]>,
}

/// How an unwind ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnwindEnd {
    /// Reached the root of the stack (a function whose CFI marks the end, or a null return address).
    Complete,
    /// The next frame lies beyond the copied bytes: the copy (`--stack-size`) was too small.
    StackCopyExhausted,
    /// The unwind rules led nowhere: the stack stops at the last good frame.
    Failed(UnwindFailure),
    /// No snapshot of the process: only the sampled instruction is known.
    UnknownProcess,
}

/// Why an unwind stopped before the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnwindFailure {
    /// More than [`MAX_UNWIND_FRAMES`] frames.
    TooDeep,
    /// The CFI needs a register whose value is not known in this frame (only the leaf frame has
    /// them all).
    UnknownRegister,
    /// The CFI uses an operation or rule this unwinder does not evaluate.
    UnsupportedCfi,
    /// The CFI of the module could not be parsed.
    UnreadableCfi,
    /// A rule pointed below the stack pointer, outside the copied stack.
    OutsideStackCopy,
    /// The caller's stack pointer would lie below the callee's.
    WentBackwards,
    /// A computed address overflowed.
    BadAddress,
    /// A leaf without CFI where neither `[rsp]` nor the frame pointer gives a return address into code.
    LeafWithoutCfi,
    /// A Python perf trampoline of an unknown shape.
    UnknownTrampoline,
    /// framehop found no way on (its rules repeated the same frame).
    DidNotAdvance,
    /// The module's CFI is over the work caps (see `scan`): it is not used.
    CfiTooLarge,
    /// The module's CFI section cannot be used: compressed beyond the size cap, in an unknown
    /// format, or corrupt.
    UnusableCfiSection,
}

impl UnwindFailure {
    pub const ALL: [UnwindFailure; 12] = [
        UnwindFailure::TooDeep,
        UnwindFailure::UnknownRegister,
        UnwindFailure::UnsupportedCfi,
        UnwindFailure::UnreadableCfi,
        UnwindFailure::OutsideStackCopy,
        UnwindFailure::WentBackwards,
        UnwindFailure::BadAddress,
        UnwindFailure::LeafWithoutCfi,
        UnwindFailure::UnknownTrampoline,
        UnwindFailure::DidNotAdvance,
        UnwindFailure::CfiTooLarge,
        UnwindFailure::UnusableCfiSection,
    ];

    /// For `-v`: why stacks stopped there.
    pub fn describe(self) -> &'static str {
        match self {
            UnwindFailure::TooDeep => "deeper than the frame limit",
            UnwindFailure::UnknownRegister => {
                "CFI needs a register not recovered in an outer frame"
            }
            UnwindFailure::UnsupportedCfi => "CFI operation not supported",
            UnwindFailure::UnreadableCfi => "CFI could not be parsed",
            UnwindFailure::OutsideStackCopy => "a rule read below the copied stack",
            UnwindFailure::WentBackwards => "the stack pointer went backwards",
            UnwindFailure::BadAddress => "an address overflowed",
            UnwindFailure::LeafWithoutCfi => {
                "leaf without CFI and no return address into code at [rsp] or the frame pointer"
            }
            UnwindFailure::UnknownTrampoline => "Python perf trampoline of unknown shape",
            UnwindFailure::DidNotAdvance => "the unwind rule did not move to a caller",
            UnwindFailure::CfiTooLarge => {
                "the module's CFI is too large to use (over the work caps)"
            }
            UnwindFailure::UnusableCfiSection => {
                "the module's CFI section cannot be used (compressed over the size cap, in an \
                 unknown format, or corrupt)"
            }
        }
    }
}

/// A user stack rebuilt from a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwoundStack {
    /// Innermost first: the instruction pointer, then return addresses.
    pub frames: Vec<u64>,
    pub end: UnwindEnd,
}

/// One module placed in a process: where its code is, and what unwinding it needs.
struct PlacedModule {
    avma: Range<u64>,
    /// The address of the module's SVMA 0 in the process.
    base: u64,
    info: Arc<ElfUnwindInfo>,
}

struct ProcessUnwinder {
    /// Of the snapshot this was built from (see [`crate::ProcessSnapshot::generation`]).
    generation: u64,
    framehop: UnwinderX86_64<SectionBytes>,
    /// Sorted by start.
    modules: Vec<PlacedModule>,
    /// Every executable mapping, sorted: of a file (including modules without unwind information)
    /// or anonymous (JIT code).
    code: Vec<Range<u64>>,
}

impl ProcessUnwinder {
    fn module_at(&self, address: u64) -> Option<&PlacedModule> {
        let index = self.modules.partition_point(|m| m.avma.start <= address);
        let module = self.modules.get(index.checked_sub(1)?)?;
        (address < module.avma.end).then_some(module)
    }

    fn is_code(&self, address: u64) -> bool {
        let index = self.code.partition_point(|range| range.start <= address);
        index
            .checked_sub(1)
            .and_then(|i| self.code.get(i))
            .is_some_and(|range| address < range.end)
    }
}

#[derive(Default)]
pub(crate) struct Unwinders {
    elf_info: HashMap<ModuleId, Option<Arc<ElfUnwindInfo>>>,
    processes: HashMap<ProcessKey, ProcessUnwinder>,
    cache: CacheX86_64,
    context: UnwindContext<usize>,
}

/// The copied top of a user stack: `bytes[0]` is the byte at address `start`. The copy may start
/// below the stack pointer (the BPF backend copies the red zone too, where hand-written assembly
/// keeps unwind state); every reader addresses it from `start`, never from sp.
#[derive(Clone, Copy, Debug)]
pub struct StackCopy<'a> {
    pub start: u64,
    pub bytes: &'a [u8],
}

impl StackCopy<'_> {
    fn read(&self, address: u64) -> Result<u64, UnwindEnd> {
        let end = self.start.saturating_add(self.bytes.len() as u64);
        let Some(offset) = address.checked_sub(self.start) else {
            return Err(UnwindEnd::Failed(UnwindFailure::OutsideStackCopy));
        };
        let word = usize::try_from(offset)
            .ok()
            .and_then(|offset| self.bytes.get(offset..offset.checked_add(8)?));
        match word.and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            Some(word) => Ok(u64::from_le_bytes(word)),
            None if address.saturating_add(8) > end => Err(UnwindEnd::StackCopyExhausted),
            None => Err(UnwindEnd::Failed(UnwindFailure::OutsideStackCopy)),
        }
    }
}

impl Unwinders {
    /// The unwind information of a module, read at first use.
    pub fn elf_info(
        &mut self,
        module: ModuleId,
        modules: &ModuleTable,
    ) -> Option<Arc<ElfUnwindInfo>> {
        if let Some(info) = self.elf_info.get(&module) {
            return info.clone();
        }
        // A module closed for the descriptor budget is read once it is open again.
        modules.get(module).file()?;
        self.elf_info
            .entry(module)
            .or_insert_with(|| {
                let module = modules.get(module);
                let info = ElfUnwindInfo::read(module.file()?)?;
                if let Some(problem) = info.cfi.problem() {
                    // Once per module; the unwinds it ends are counted by reason in the summary.
                    log::info!(
                        "{}: CFI not used for unwinding ({}): {}",
                        module.display_name,
                        problem.reason.describe(),
                        problem.detail
                    );
                }
                Some(Arc::new(info))
            })
            .clone()
    }

    /// Entries per cache, for the debug log.
    pub fn sizes(&self) -> String {
        format!(
            "{} ELF infos, {} processes",
            self.elf_info.len(),
            self.processes.len()
        )
    }

    /// The generation of the snapshot process `key`'s unwinder was built from, if it has one.
    #[cfg(test)]
    pub fn built_from(&self, key: ProcessKey) -> Option<u64> {
        self.processes.get(&key).map(|p| p.generation)
    }

    /// Drops the file pages unwinding left resident in every module (see
    /// [`ElfUnwindInfo::drop_resident_pages`]).
    pub fn drop_file_pages(&self) {
        for info in self.elf_info.values().flatten() {
            info.drop_resident_pages();
        }
    }

    /// See [`crate::Symbolizer::shrink_tables`].
    pub fn shrink_tables(&mut self) {
        self.processes.shrink_if_sparse();
    }

    /// Drops the unwind information of released modules.
    pub fn forget_modules(&mut self, released: impl Iterator<Item = ModuleId>) {
        for module in released {
            self.elf_info.remove(&module);
        }
    }

    /// Drops the per-process unwinder (the process ended).
    pub fn forget(&mut self, key: ProcessKey) {
        self.processes.remove(&key);
    }

    /// Unwinds one copied stack. `jit` is the process's perf map, if it has one: its entries are
    /// code too (a leaf without CFI may return there), and Python's `py::` entries are trampolines
    /// the unwinder steps through.
    pub fn unwind(
        &mut self,
        key: ProcessKey,
        registers: UserRegisters,
        stack: StackCopy<'_>,
        processes: &ProcessTable,
        modules: &ModuleTable,
        jit: Option<&mut PerfMap>,
    ) -> UnwoundStack {
        // Built from an older snapshot of the process: the modules it places may have changed.
        let generation = processes.get(key).map(|s| s.generation());
        if let Some(process) = self.processes.get(&key) {
            if Some(process.generation) != generation {
                self.processes.remove(&key);
            }
        }
        if !self.processes.contains_key(&key) {
            let Some(unwinder) = self.build_unwinder(key, processes, modules) else {
                return UnwoundStack {
                    frames: vec![registers.ip],
                    end: UnwindEnd::UnknownProcess,
                };
            };
            self.processes.insert(key, unwinder);
        }
        let Some(process) = self.processes.get(&key) else {
            return UnwoundStack {
                frames: vec![registers.ip],
                end: UnwindEnd::UnknownProcess,
            };
        };
        let mut walk = Walk {
            process,
            cache: &mut self.cache,
            context: &mut self.context,
            stack,
            jit,
        };
        walk.run(registers)
    }

    fn build_unwinder(
        &mut self,
        key: ProcessKey,
        processes: &ProcessTable,
        modules: &ModuleTable,
    ) -> Option<ProcessUnwinder> {
        let snapshot = processes.get(key)?;
        let mut framehop = UnwinderX86_64::new();
        let mut placed = Vec::new();
        for mapping in snapshot.mappings() {
            let Some(info) = self.elf_info(mapping.module, modules) else {
                continue;
            };
            let Some(base) = info.base_address(mapping.start, mapping.offset) else {
                continue;
            };
            let section_info = ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: info.text.as_ref().map(|s| s.svma.clone()),
                text: info.text.as_ref().map(|s| s.bytes.clone()),
                got_svma: info.got_svma.clone(),
                eh_frame_svma: info.eh_frame.as_ref().map(|s| s.svma.clone()),
                eh_frame: info.eh_frame.as_ref().map(|s| s.bytes.clone()),
                eh_frame_hdr_svma: info.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
                eh_frame_hdr: info.eh_frame_hdr.as_ref().map(|s| s.bytes.clone()),
                debug_frame: info.debug_frame.as_ref().map(|s| s.bytes.clone()),
                stubs_svma: None,
                stub_helper_svma: None,
                unwind_info: None,
                text_segment_svma: None,
                text_segment: None,
            };
            let name = modules.get(mapping.module).display_name.to_string();
            framehop.add_module(framehop::Module::new(
                name,
                mapping.start..mapping.end,
                base,
                section_info,
            ));
            placed.push(PlacedModule {
                avma: mapping.start..mapping.end,
                base,
                info,
            });
        }
        placed.sort_by_key(|m| m.avma.start);
        // Anonymous executable memory is code too: a JIT's, whose perf map may come only at its
        // exit (a JVM's `-XX:+DumpPerfMapAtExit`), so a return address into it must not end the
        // unwind while the map is missing.
        let mut code: Vec<Range<u64>> = snapshot
            .mappings()
            .iter()
            .map(|m| m.start..m.end)
            .chain(snapshot.anonymous_code().iter().cloned())
            .collect();
        code.sort_by_key(|range| range.start);
        Some(ProcessUnwinder {
            generation: snapshot.generation(),
            framehop,
            modules: placed,
            code,
        })
    }
}
