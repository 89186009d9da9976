//! DWARF (.eh_frame / .debug_frame) unwinding of copied user stacks, with framehop.
//!
//! The BPF program sends the user registers and the top of the user stack; this module rebuilds the
//! call chain from them using each mapped module's CFI, and falls back to the frame-pointer rule,
//! frame by frame, where a module has none. Unwind sections are memory-mapped once per module file
//! and shared by all processes; each process gets a framehop unwinder placing those modules at its
//! own addresses, built at its first stack and dropped when it is forgotten.

pub(crate) mod elf_info;

use std::collections::HashMap;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Unwinder as _};

use elf_info::SectionBytes;
pub use elf_info::{ElfUnwindInfo, FramePointers};

use crate::modules::{ModuleId, ModuleTable};
use crate::process::{ProcessKey, ProcessTable};

/// Frames kept per unwound stack; deeper stacks are cut (and counted as ended early).
const MAX_UNWIND_FRAMES: usize = 512;

/// User registers at a sample: where unwinding starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegisters {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// How an unwind ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnwindEnd {
    /// Reached the root of the stack (a function whose CFI marks the end, or a null return address).
    Complete,
    /// The next frame lies beyond the copied bytes: the copy (`--stack-size`) was too small.
    StackCopyExhausted,
    /// The unwind rules led nowhere (no or wrong unwind info and no frame pointer), or too deep.
    Failed,
    /// No snapshot of the process: only the sampled instruction is known.
    UnknownProcess,
}

/// A user stack rebuilt from a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwoundStack {
    /// Innermost first: the instruction pointer, then return addresses.
    pub frames: Vec<u64>,
    pub end: UnwindEnd,
}

type ProcessUnwinder = UnwinderX86_64<SectionBytes>;

#[derive(Default)]
pub(crate) struct Unwinders {
    elf_info: HashMap<ModuleId, Option<Arc<ElfUnwindInfo>>>,
    processes: HashMap<ProcessKey, ProcessUnwinder>,
    cache: CacheX86_64,
}

impl Unwinders {
    /// The unwind information of a module, read at first use.
    pub fn elf_info(
        &mut self,
        module: ModuleId,
        modules: &ModuleTable,
    ) -> Option<Arc<ElfUnwindInfo>> {
        self.elf_info
            .entry(module)
            .or_insert_with(|| ElfUnwindInfo::read(modules.get(module).file()).map(Arc::new))
            .clone()
    }

    /// Drops the per-process unwinder (the process exited, or its snapshot changed).
    pub fn forget(&mut self, key: ProcessKey) {
        self.processes.remove(&key);
    }

    pub fn unwind(
        &mut self,
        key: ProcessKey,
        registers: UserRegisters,
        stack: &[u8],
        processes: &ProcessTable,
        modules: &ModuleTable,
    ) -> UnwoundStack {
        if !self.processes.contains_key(&key) {
            let Some(unwinder) = self.build_unwinder(key, processes, modules) else {
                return UnwoundStack {
                    frames: vec![registers.ip],
                    end: UnwindEnd::UnknownProcess,
                };
            };
            self.processes.insert(key, unwinder);
        }
        let unwinder = &self.processes[&key];
        let stack_end = registers.sp.saturating_add(stack.len() as u64);
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            let offset = address.checked_sub(registers.sp).ok_or(())? as usize;
            let bytes = stack
                .get(offset..offset.checked_add(8).ok_or(())?)
                .ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let regs = UnwindRegsX86_64::new(registers.ip, registers.sp, registers.bp);
        let mut frames = Vec::with_capacity(32);
        let mut iterator =
            unwinder.iter_frames(registers.ip, regs, &mut self.cache, &mut read_stack);
        let end = loop {
            if frames.len() >= MAX_UNWIND_FRAMES {
                break UnwindEnd::Failed;
            }
            match iterator.next() {
                Ok(Some(frame)) => frames.push(frame.address()),
                Ok(None) | Err(framehop::Error::ReturnAddressIsNull) => break UnwindEnd::Complete,
                Err(framehop::Error::CouldNotReadStack(address)) if address >= stack_end => {
                    break UnwindEnd::StackCopyExhausted
                }
                Err(_) => break UnwindEnd::Failed,
            }
        };
        UnwoundStack { frames, end }
    }

    fn build_unwinder(
        &mut self,
        key: ProcessKey,
        processes: &ProcessTable,
        modules: &ModuleTable,
    ) -> Option<ProcessUnwinder> {
        let snapshot = processes.get(key)?;
        let mut unwinder = ProcessUnwinder::new();
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
            unwinder.add_module(framehop::Module::new(
                name,
                mapping.start..mapping.end,
                base,
                section_info,
            ));
        }
        Some(unwinder)
    }
}
