//! One unwind, frame by frame: each step picks the rule for its frame.
//!
//! - A PC in an FDE with rows framehop does not follow: the row, evaluated with gimli ([`cfi::step`]).
//! - A return address inside a Python perf trampoline: the trampoline's fixed frame.
//! - A leaf PC without CFI (JIT code, V8 builtins in node's text): `[rsp]` or the frame pointer,
//!   whichever returns into code of the process.
//! - Everything else: framehop (cached rules, frame-pointer rule where a module has no CFI).

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::{FrameAddress, Unwinder as _};
use gimli::{UnwindContext, X86_64};

use super::cfi::{self, Registers, CALLEE_SAVED, TRACKED_REGISTERS};
use super::{
    ProcessUnwinder, StackCopy, UnwindEnd, UnwindFailure, UnwoundStack, UserRegisters,
    MAX_UNWIND_FRAMES,
};
use crate::perf_map::PerfMap;

/// Python's perf trampoline (3.12, 3.13): `sub $8,%rsp; call *%rcx; add $8,%rsp; ret`, 11 bytes,
/// copied once per code object into anonymous memory, with `endbr64` in front (15 bytes) in CET
/// builds. Its frame: 8 bytes of padding below the return address.
const TRAMPOLINE_SIZE: u64 = 11;
const ENDBR64_SIZE: u64 = 4;
/// Offsets within the trampoline (after any `endbr64`) where the padding is on the stack: after the
/// `sub`, and at the return address of the `call`.
const TRAMPOLINE_AFTER_SUB: u64 = 4;
const TRAMPOLINE_AFTER_CALL: u64 = 6;
/// The `ret`, after the padding was popped.
const TRAMPOLINE_RET: u64 = 10;
/// Perf-map names of Python trampolines start with this.
const PYTHON_TRAMPOLINE_PREFIX: &str = "py::";

pub(super) struct Walk<'a> {
    pub process: &'a ProcessUnwinder,
    pub cache: &'a mut CacheX86_64,
    pub context: &'a mut UnwindContext<usize>,
    pub stack: StackCopy<'a>,
    pub jit: Option<&'a mut PerfMap>,
}

/// A perf-map entry, copied out of the map.
struct JitCode {
    start: u64,
    size: u64,
    python_trampoline: bool,
}

impl Walk<'_> {
    pub fn run(&mut self, start: UserRegisters) -> UnwoundStack {
        // The leaf knows every register the sample has; ip/sp/bp are what unwinding starts from.
        let mut registers = Registers([None; TRACKED_REGISTERS]);
        if let Some(general) = start.general {
            for (slot, value) in registers.0.iter_mut().zip(general) {
                *slot = Some(value);
            }
        }
        registers.0[usize::from(X86_64::RSP.0)] = Some(start.sp);
        registers.0[usize::from(X86_64::RBP.0)] = Some(start.bp);
        registers.0[usize::from(X86_64::RA.0)] = Some(start.ip);
        let mut frames = Vec::with_capacity(32);
        frames.push(start.ip);
        let mut address = FrameAddress::InstructionPointer(start.ip);
        let end = loop {
            if frames.len() >= MAX_UNWIND_FRAMES {
                break UnwindEnd::Failed(UnwindFailure::TooDeep);
            }
            match self.step(address, &registers) {
                Ok(Some(caller)) => {
                    let Some(next) = caller.ip().and_then(FrameAddress::from_return_address) else {
                        break UnwindEnd::Complete;
                    };
                    frames.push(next.address());
                    registers = caller;
                    address = next;
                }
                Ok(None) => break UnwindEnd::Complete,
                Err(end) => break end,
            }
        };
        UnwoundStack { frames, end }
    }

    /// The caller's registers, `None` at the root of the stack.
    fn step(
        &mut self,
        address: FrameAddress,
        registers: &Registers,
    ) -> Result<Option<Registers>, UnwindEnd> {
        let lookup = address.address_for_lookup();
        let is_leaf = !address.is_return_address();
        if let Some(module) = self.process.module_at(lookup) {
            let cfi = &module.info.cfi;
            if let Some(problem) = cfi.problem() {
                // CFI that is there but cannot be used: not silently replaced by the frame-pointer
                // rule (framehop's for a module without CFI).
                return Err(UnwindEnd::Failed(problem.reason));
            }
            if let Some(svma) = lookup.checked_sub(module.base) {
                if let Some(fde) = cfi.special_fde(svma) {
                    let stack = &self.stack;
                    return cfi::step(&module.info, self.context, fde, svma, registers, &mut |a| {
                        stack.read(a)
                    });
                }
                if is_leaf && !cfi.covers(svma) {
                    return self.leaf_without_cfi(registers);
                }
            }
        } else {
            match self.jit_code(lookup) {
                Some(code) if code.python_trampoline => {
                    return self.trampoline(&code, address, registers)
                }
                _ if is_leaf => return self.leaf_without_cfi(registers),
                _ => {}
            }
        }
        self.framehop_step(address, registers)
    }

    fn framehop_step(
        &mut self,
        address: FrameAddress,
        registers: &Registers,
    ) -> Result<Option<Registers>, UnwindEnd> {
        let (Some(ip), Some(sp)) = (registers.ip(), registers.sp()) else {
            return Err(UnwindEnd::Failed(UnwindFailure::UnknownRegister));
        };
        // An unknown frame pointer only matters to a rule that uses it, and 0 makes that rule fail.
        let mut regs = UnwindRegsX86_64::new(ip, sp, registers.bp().unwrap_or(0));
        let stack = &self.stack;
        let mut read_stack = |a| stack.read(a).map_err(|_| ());
        match self
            .process
            .framehop
            .unwind_frame(address, &mut regs, self.cache, &mut read_stack)
        {
            Ok(Some(return_address)) if return_address != 0 => {
                // framehop's rules give ip, sp and bp. The other registers keep their values (the
                // DWARF "same value" convention, which hand-written assembly relies on for scratch
                // registers), except the callee-saved ones: framehop does not say whether this
                // frame saved (and changed) them.
                let mut caller = *registers;
                for register in CALLEE_SAVED {
                    caller.set(register, None);
                }
                caller.set(X86_64::RA, Some(return_address));
                caller.set(X86_64::RSP, Some(regs.sp()));
                let bp_known = registers.bp().is_some() || regs.bp() != 0;
                caller.set(X86_64::RBP, bp_known.then_some(regs.bp()));
                Ok(Some(caller))
            }
            Ok(_) | Err(framehop::Error::ReturnAddressIsNull) => Ok(None),
            Err(framehop::Error::CouldNotReadStack(address)) => Err(self
                .stack
                .read(address)
                .err()
                .unwrap_or(UnwindEnd::Failed(UnwindFailure::OutsideStackCopy))),
            Err(framehop::Error::FramepointerUnwindingMovedBackwards) => {
                Err(UnwindEnd::Failed(UnwindFailure::WentBackwards))
            }
            Err(framehop::Error::DidNotAdvance) => {
                Err(UnwindEnd::Failed(UnwindFailure::DidNotAdvance))
            }
            Err(framehop::Error::IntegerOverflow) => {
                Err(UnwindEnd::Failed(UnwindFailure::BadAddress))
            }
        }
    }

    /// A leaf with no CFI: JIT code, or V8's builtins (embedded in node's text without FDEs). Either
    /// it has pushed nothing yet (return address at `[rsp]`) or it keeps a frame pointer (return
    /// address at `[rbp + 8]`). The first of these that returns into code of the process is taken;
    /// none is a failure, not a guess.
    fn leaf_without_cfi(&mut self, registers: &Registers) -> Result<Option<Registers>, UnwindEnd> {
        let failed = UnwindEnd::Failed(UnwindFailure::LeafWithoutCfi);
        let sp = registers.sp().ok_or(failed)?;
        if let Ok(return_address) = self.stack.read(sp) {
            if self.is_code(return_address) {
                let cfa = sp.checked_add(8).ok_or(failed)?;
                return Ok(Some(caller_of_frameless(registers, cfa, return_address)));
            }
        }
        let bp = registers.bp().filter(|&bp| bp >= sp).ok_or(failed)?;
        let saved_bp = self.stack.read(bp).map_err(|_| failed)?;
        let return_address = self
            .stack
            .read(bp.checked_add(8).ok_or(failed)?)
            .map_err(|_| failed)?;
        if !self.is_code(return_address) {
            return Err(failed);
        }
        let cfa = bp.checked_add(16).ok_or(failed)?;
        let mut caller = caller_of_frameless(registers, cfa, return_address);
        caller.set(X86_64::RBP, Some(saved_bp));
        Ok(Some(caller))
    }

    /// A frame of a Python perf trampoline: no CFI, but a fixed shape (see [`TRAMPOLINE_SIZE`]).
    fn trampoline(
        &mut self,
        code: &JitCode,
        address: FrameAddress,
        registers: &Registers,
    ) -> Result<Option<Registers>, UnwindEnd> {
        let unknown = UnwindEnd::Failed(UnwindFailure::UnknownTrampoline);
        let prefix = match code.size {
            TRAMPOLINE_SIZE => 0,
            size if size == TRAMPOLINE_SIZE + ENDBR64_SIZE => ENDBR64_SIZE,
            _ => return Err(unknown),
        };
        let sp = registers.sp().ok_or(unknown)?;
        let offset = address.address().wrapping_sub(code.start);
        let padding = match (address.is_return_address(), offset.checked_sub(prefix)) {
            (true, Some(TRAMPOLINE_AFTER_CALL)) => 8,
            (false, Some(TRAMPOLINE_AFTER_SUB | TRAMPOLINE_AFTER_CALL)) => 8,
            (false, None | Some(0 | TRAMPOLINE_RET)) => 0,
            _ => return Err(unknown),
        };
        let cfa = sp.checked_add(padding + 8).ok_or(unknown)?;
        let return_address = self.stack.read(cfa - 8)?;
        Ok(Some(caller_of_frameless(registers, cfa, return_address)))
    }

    fn jit_code(&mut self, address: u64) -> Option<JitCode> {
        let entry = self.jit.as_mut()?.lookup(address)?;
        Some(JitCode {
            start: entry.start,
            size: entry.size,
            python_trampoline: entry.name.starts_with(PYTHON_TRAMPOLINE_PREFIX),
        })
    }

    /// Whether `address` is in executable code of the process: a mapped module, or JIT code the
    /// runtime declared in its perf map.
    fn is_code(&mut self, address: u64) -> bool {
        self.process.is_code(address) || self.jit_code(address).is_some()
    }
}

/// The caller of a frame without CFI that saved nothing: every register keeps its value (the DWARF
/// "same value" convention) but the stack pointer and the return address.
fn caller_of_frameless(registers: &Registers, cfa: u64, return_address: u64) -> Registers {
    let mut caller = *registers;
    caller.set(X86_64::RSP, Some(cfa));
    caller.set(X86_64::RA, Some(return_address));
    caller
}

#[cfg(test)]
mod tests {
    //! Code without CFI in a made-up process: JIT functions and Python trampolines declared in a perf
    //! map, and a stack copy laid out as their frames would be.

    use super::*;
    use crate::unwind::{ProcessUnwinder, StackCopy};

    const STACK: u64 = 0x7ffc_0000_0000;
    const LEAF: u64 = 0x9000_0000;
    const CALLER: u64 = 0x9000_1000;
    const TRAMPOLINE: u64 = 0x7000_0000;
    /// An executable mapping of a file (the interpreter).
    const LIBRARY: u64 = 0x5555_0000_0000;

    fn perf_map() -> PerfMap {
        let mut map = PerfMap::new();
        let text = format!(
            "{LEAF:x} 100 JS:*leaf x.js:1\n{CALLER:x} 100 JS:*caller x.js:9\n\
             {TRAMPOLINE:x} b py::work:/app/x.py\n"
        );
        assert_eq!(map.extend_from_text(&text), 0);
        map
    }

    fn unwind(registers: UserRegisters, words: &[(u64, u64)]) -> UnwoundStack {
        let mut bytes = vec![0u8; 0x400];
        for &(offset, value) in words {
            let at = offset as usize;
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        let process = ProcessUnwinder {
            generation: 0,
            framehop: framehop::x86_64::UnwinderX86_64::new(),
            modules: Vec::new(),
            code: std::iter::once(LIBRARY..LIBRARY + 0x10_0000).collect(),
        };
        let mut map = perf_map();
        let mut walk = Walk {
            process: &process,
            cache: &mut CacheX86_64::new(),
            context: &mut UnwindContext::new(),
            stack: StackCopy {
                sp: STACK,
                bytes: &bytes,
            },
            jit: Some(&mut map),
        };
        walk.run(registers)
    }

    fn registers(ip: u64, bp: u64) -> UserRegisters {
        UserRegisters {
            ip,
            sp: STACK,
            bp,
            general: None,
        }
    }

    /// A frameless JIT leaf returns into a Python trampoline (the return address is at [rsp]); the
    /// trampoline's frame is 8 bytes of padding and its return address into a JIT caller, which
    /// keeps a frame pointer whose chain ends the stack.
    #[test]
    fn through_a_python_trampoline() {
        let bp = STACK + 0x100;
        let unwound = unwind(
            registers(LEAF + 0x10, bp),
            &[
                (0, TRAMPOLINE + 6),
                (0x10, CALLER + 0x20),
                (0x100, 0),
                (0x108, 0),
            ],
        );
        assert_eq!(
            unwound.frames,
            vec![LEAF + 0x10, TRAMPOLINE + 6, CALLER + 0x20]
        );
        assert_eq!(unwound.end, UnwindEnd::Complete);
    }

    /// The node case: a leaf without CFI that has pushed data; `[rsp]` is no code address,
    /// the frame pointer leads to the JIT caller, then to the interpreter's code.
    #[test]
    fn leaf_without_cfi_takes_the_frame_pointer_when_rsp_is_data() {
        let bp = STACK + 0x40;
        let unwound = unwind(
            registers(LEAF + 0x10, bp),
            &[
                (0, 0x1234_5678),
                (0x40, STACK + 0x80),
                (0x48, CALLER + 0x30),
                (0x80, 0),
                (0x88, LIBRARY + 0x500),
            ],
        );
        assert_eq!(
            unwound.frames[..3],
            [LEAF + 0x10, CALLER + 0x30, LIBRARY + 0x500]
        );
    }

    /// Neither rule returns into code: the stack stops at the leaf, with the reason.
    #[test]
    fn leaf_without_cfi_and_no_code_address_fails() {
        let unwound = unwind(
            registers(LEAF + 0x10, STACK + 0x40),
            &[(0, 0x1234), (0x40, STACK + 0x80), (0x48, 0x4321)],
        );
        assert_eq!(unwound.frames, vec![LEAF + 0x10]);
        assert_eq!(
            unwound.end,
            UnwindEnd::Failed(UnwindFailure::LeafWithoutCfi)
        );
    }

    /// Issue 18, item 1, through framehop: the leaf's row is framehop's (CFA on RSP), the caller's
    /// CFA is in rax (OpenSSL's AES-GCM shape), and framehop does not track rax. The sample's rax
    /// must survive framehop's step for the caller's row to be evaluated; before, the caller's
    /// registers were rebuilt from ip/sp/bp only and the unwind stopped at the caller with
    /// "CFI needs a register not recovered in an outer frame".
    #[test]
    fn rax_survives_a_framehop_step() {
        use crate::unwind::cfi::tests::{module, PLAIN_FN, RAX_FN};
        use crate::unwind::PlacedModule;
        use std::sync::Arc;

        const BASE: u64 = 0x5600_0000_0000;
        let info = Arc::new(module());
        let eh_frame = info.eh_frame.clone().expect(".eh_frame");
        let avma = BASE + PLAIN_FN - 0x3000..BASE + RAX_FN + 0x100;
        let mut framehop = framehop::x86_64::UnwinderX86_64::new();
        framehop.add_module(framehop::Module::new(
            "generated".to_owned(),
            avma.clone(),
            BASE,
            framehop::ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: None,
                text: None,
                got_svma: None,
                eh_frame_svma: Some(eh_frame.svma),
                eh_frame: Some(eh_frame.bytes),
                eh_frame_hdr_svma: None,
                eh_frame_hdr: None,
                debug_frame: None,
                stubs_svma: None,
                stub_helper_svma: None,
                unwind_info: None,
                text_segment_svma: None,
                text_segment: None,
            },
        ));
        let process = ProcessUnwinder {
            generation: 0,
            framehop,
            modules: vec![PlacedModule {
                avma: avma.clone(),
                base: BASE,
                info,
            }],
            code: vec![avma],
        };
        // The leaf has pushed 8 bytes (its row at +0x10: CFA = rsp + 16); the caller's CFA is
        // rax + 8, and its return address there is null: the root.
        let caller_cfa = STACK + 0x180;
        let mut bytes = vec![0u8; 0x400];
        bytes[8..16].copy_from_slice(&(BASE + RAX_FN + 0x20).to_le_bytes());
        let mut general = [0u64; 16];
        general[usize::from(X86_64::RAX.0)] = caller_cfa - 8;
        let mut walk = Walk {
            process: &process,
            cache: &mut CacheX86_64::new(),
            context: &mut UnwindContext::new(),
            stack: StackCopy {
                sp: STACK,
                bytes: &bytes,
            },
            jit: None,
        };
        let unwound = walk.run(UserRegisters {
            ip: BASE + PLAIN_FN + 0x10,
            sp: STACK,
            bp: 0,
            general: Some(general),
        });
        assert_eq!(
            unwound.frames,
            vec![BASE + PLAIN_FN + 0x10, BASE + RAX_FN + 0x20]
        );
        assert_eq!(unwound.end, UnwindEnd::Complete);
    }

    /// A return address anywhere but right after the trampoline's call is not a trampoline frame.
    #[test]
    fn trampoline_of_unknown_shape_fails() {
        let unwound = unwind(registers(LEAF + 0x10, 0), &[(0, TRAMPOLINE + 3)]);
        assert_eq!(unwound.frames, vec![LEAF + 0x10, TRAMPOLINE + 3]);
        assert_eq!(
            unwound.end,
            UnwindEnd::Failed(UnwindFailure::UnknownTrampoline)
        );
    }
}
