//! CFI rows that framehop cannot follow, executed with gimli.
//!
//! framehop 0.16 caches rules whose CFA is RSP or RBP plus an offset and whose return address is at
//! CFA − 8; its generic path tracks only ip/sp/bp and cannot read memory, and where neither works it
//! silently applies the frame-pointer rule. Hand-written assembly (OpenSSL's AES, SHA and bignum code)
//! has rows like `DW_CFA_def_cfa_expression: DW_OP_breg7 (rsp) +40; DW_OP_deref; DW_OP_plus_uconst 8`
//! (the caller's stack pointer saved in the frame) or a CFA on rax/rsi/r9/r11 (a leaf that moved RSP
//! somewhere else). The module's scan ([`super::scan`]) knows which FDEs contain such rows, and
//! [`step`] evaluates the row for a PC against the registers known for that frame and the copied
//! stack.

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, DebugFrameOffset, EhFrame, EhFrameOffset, EndianSlice,
    Evaluation, EvaluationResult, Expression, LittleEndian, Location, Piece, Register,
    RegisterRule, UnwindContext, UnwindSection, Value, X86_64,
};

use super::elf_info::ElfUnwindInfo;
use super::scan::CfiKind;
use super::{UnwindEnd, UnwindFailure};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// DWARF register numbers 0..=15 are the general-purpose registers, 16 is the return address (RIP).
pub(crate) const TRACKED_REGISTERS: usize = 17;

/// Registers the x86-64 psABI makes a callee preserve (besides RBP and RSP). A callee that changes
/// one saves it first, with a CFI rule saying where; a step that does not evaluate the rules
/// (framehop's) cannot tell whether it did, so these are unknown in the caller after such a step.
pub(crate) const CALLEE_SAVED: [Register; 5] = [
    X86_64::RBX,
    X86_64::R12,
    X86_64::R13,
    X86_64::R14,
    X86_64::R15,
];

/// Register values known for one frame, by DWARF number; `None` where unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registers(pub [Option<u64>; TRACKED_REGISTERS]);

impl Registers {
    /// Only the PC, stack pointer and frame pointer known.
    #[cfg(test)]
    pub fn ip_sp_bp(ip: u64, sp: u64, bp: u64) -> Self {
        let mut values = [None; TRACKED_REGISTERS];
        values[usize::from(X86_64::RA.0)] = Some(ip);
        values[usize::from(X86_64::RSP.0)] = Some(sp);
        values[usize::from(X86_64::RBP.0)] = Some(bp);
        Registers(values)
    }

    pub fn get(&self, register: Register) -> Option<u64> {
        self.0.get(usize::from(register.0)).copied().flatten()
    }

    pub fn set(&mut self, register: Register, value: Option<u64>) {
        if let Some(slot) = self.0.get_mut(usize::from(register.0)) {
            *slot = value;
        }
    }

    pub fn ip(&self) -> Option<u64> {
        self.get(X86_64::RA)
    }
    pub fn sp(&self) -> Option<u64> {
        self.get(X86_64::RSP)
    }
    pub fn bp(&self) -> Option<u64> {
        self.get(X86_64::RBP)
    }
}

/// Operations evaluated per CFI expression at most.
const MAX_EXPRESSION_STEPS: u32 = 256;

/// Reads 8 bytes of the copied stack; the error says how the unwind ends if it cannot.
pub(crate) type ReadMemory<'a> = dyn FnMut(u64) -> Result<u64, UnwindEnd> + 'a;

/// One unwind step with the CFI row for `svma` (the PC, or a return address − 1, in the module's own
/// addresses) of the FDE at `fde_offset` in the module's CFI section (found by the module's scan):
/// the caller's registers, or `None` at the root (the return address is undefined).
pub(crate) fn step(
    info: &ElfUnwindInfo,
    context: &mut UnwindContext<usize>,
    fde_offset: usize,
    svma: u64,
    registers: &Registers,
    read: &mut ReadMemory<'_>,
) -> Result<Option<Registers>, UnwindEnd> {
    let bad_cfi = UnwindEnd::Failed(UnwindFailure::UnreadableCfi);
    let bases = info.bases();
    match info.cfi.kind() {
        Some(CfiKind::EhFrame) => {
            let eh_frame = info.eh_frame.as_ref().ok_or(bad_cfi)?;
            let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
            let offset = EhFrameOffset(fde_offset);
            step_in(&section, &bases, offset, context, svma, registers, read)
        }
        Some(CfiKind::DebugFrame) => {
            let debug_frame = info.debug_frame.as_ref().ok_or(bad_cfi)?;
            let mut section = DebugFrame::new(&debug_frame.bytes, LittleEndian);
            section.set_address_size(8);
            let offset = DebugFrameOffset(fde_offset);
            step_in(&section, &bases, offset, context, svma, registers, read)
        }
        None => Err(bad_cfi),
    }
}

fn step_in<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    fde_offset: S::Offset,
    context: &mut UnwindContext<usize>,
    svma: u64,
    registers: &Registers,
    read: &mut ReadMemory<'_>,
) -> Result<Option<Registers>, UnwindEnd> {
    let bad_cfi = UnwindEnd::Failed(UnwindFailure::UnreadableCfi);
    let fde = section
        .fde_from_offset(bases, fde_offset, S::cie_from_offset)
        .map_err(|_| bad_cfi)?;
    let encoding = fde.cie().encoding();
    let row = fde
        .unwind_info_for_address(section, bases, context, svma)
        .map_err(|_| bad_cfi)?;
    let expression = |e: &gimli::UnwindExpression<usize>| e.get(section).map_err(|_| bad_cfi);

    let sp = registers
        .sp()
        .ok_or(UnwindEnd::Failed(UnwindFailure::UnknownRegister))?;
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => registers
            .get(*register)
            .ok_or(UnwindEnd::Failed(UnwindFailure::UnknownRegister))?
            .checked_add_signed(*offset)
            .ok_or(UnwindEnd::Failed(UnwindFailure::BadAddress))?,
        CfaRule::Expression(e) => evaluate(expression(e)?, encoding, registers, None, read)?,
    };
    // The return address is pushed below the CFA, so the caller's stack pointer lies above ours.
    if cfa <= sp {
        return Err(UnwindEnd::Failed(UnwindFailure::WentBackwards));
    }

    let mut caller = Registers([None; TRACKED_REGISTERS]);
    for number in 0..TRACKED_REGISTERS as u16 {
        let register = Register(number);
        let address_at = |offset: i64| {
            cfa.checked_add_signed(offset)
                .ok_or(UnwindEnd::Failed(UnwindFailure::BadAddress))
        };
        let value = match row.register(register) {
            None if register == X86_64::RA => Some(read(address_at(-8)?)?),
            // The x86-64 convention libunwind and libdw apply: a register without a rule keeps its
            // value in the caller ("same value"). Hand-written assembly relies on it for scratch
            // registers too: OpenSSL's AES-GCM keeps its CFA in rax across a call to a leaf that
            // does not touch rax. (RSP is the CFA, set below.)
            None | Some(RegisterRule::SameValue) => registers.get(register),
            Some(RegisterRule::Undefined) => None,
            Some(RegisterRule::Offset(offset)) => {
                let address = address_at(offset)?;
                if register == X86_64::RA {
                    Some(read(address)?)
                } else {
                    read(address).ok()
                }
            }
            Some(RegisterRule::ValOffset(offset)) => Some(address_at(offset)?),
            Some(RegisterRule::Register(from)) => registers.get(from),
            Some(RegisterRule::Expression(e)) => {
                let address = evaluate(expression(&e)?, encoding, registers, Some(cfa), read)?;
                Some(read(address)?)
            }
            Some(RegisterRule::ValExpression(e)) => Some(evaluate(
                expression(&e)?,
                encoding,
                registers,
                Some(cfa),
                read,
            )?),
            Some(_) => None,
        };
        caller.set(register, value);
    }
    let Some(return_address) = caller.ip() else {
        // An undefined return address marks the outermost frame (`_start`, `clone`).
        return Ok(None);
    };
    if return_address == 0 {
        return Ok(None);
    }
    caller.set(X86_64::RSP, Some(cfa));
    Ok(Some(caller))
}

/// Evaluates a CFI expression: registers from `registers`, memory from the stack copy.
/// `initial` is pushed first (the CFA, for register rules).
fn evaluate(
    expression: Expression<Slice<'_>>,
    encoding: gimli::Encoding,
    registers: &Registers,
    initial: Option<u64>,
    read: &mut ReadMemory<'_>,
) -> Result<u64, UnwindEnd> {
    let unsupported = UnwindEnd::Failed(UnwindFailure::UnsupportedCfi);
    let mut evaluation: Evaluation<Slice<'_>> = expression.evaluation(encoding);
    // The CFI comes from the profiled program: a branch back in a crafted expression must not make
    // the unwinder loop (real CFI expressions are a handful of operations).
    evaluation.set_max_iterations(MAX_EXPRESSION_STEPS);
    if let Some(value) = initial {
        evaluation.set_initial_value(value);
    }
    let mut result = evaluation.evaluate().map_err(|_| unsupported)?;
    for _ in 0..MAX_EXPRESSION_STEPS {
        result = match result {
            EvaluationResult::Complete => {
                return match evaluation.as_result() {
                    [Piece {
                        location: Location::Address { address },
                        ..
                    }] => Ok(*address),
                    _ => Err(unsupported),
                }
            }
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let word = read(address)?;
                let value = match size {
                    8.. => word,
                    _ => word & ((1u64 << (u32::from(size) * 8)) - 1),
                };
                evaluation.resume_with_memory(Value::Generic(value))
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                let value = registers
                    .get(register)
                    .ok_or(UnwindEnd::Failed(UnwindFailure::UnknownRegister))?;
                evaluation.resume_with_register(Value::Generic(value))
            }
            _ => return Err(unsupported),
        }
        .map_err(|_| unsupported)?;
    }
    Err(unsupported)
}

#[cfg(test)]
pub(crate) mod tests {
    //! Rows generated with `gimli::write` the way OpenSSL's assembly writes them, and stack copies made
    //! up to match: each test checks the exact caller the row gives.

    use gimli::write::{
        Address, CallFrameInstruction as Cfi, CommonInformationEntry, EhFrame as EhFrameWriter,
        EndianVec, Expression as ExpressionWriter, FrameDescriptionEntry, FrameTable,
    };
    use gimli::{Encoding, Format, Register, X86_64};

    use super::*;
    use crate::unwind::elf_info::{ElfUnwindInfo, Section, SectionBytes};
    use crate::unwind::scan::ModuleCfi;

    pub(crate) const STACK: u64 = 0x7ffc_0000_0000;
    /// Functions of the generated module: each FDE covers 0x100 bytes at one of these.
    const EXPRESSION_FN: u64 = 0x1000;
    const RBP_EXPRESSION_FN: u64 = 0x2000;
    const RSI_FN: u64 = 0x3000;
    /// What compilers write (CFA on RSP): framehop's rows.
    pub(crate) const PLAIN_FN: u64 = 0x4000;
    const PLT: u64 = 0x5000;
    /// OpenSSL's AES-GCM shape: the CFA in rax, across calls to leaves that do not touch rax.
    pub(crate) const RAX_FN: u64 = 0x6000;

    /// A module whose `.eh_frame` has one FDE per function above; rows start 4 bytes in.
    pub(crate) fn module() -> ElfUnwindInfo {
        let encoding = Encoding {
            format: Format::Dwarf32,
            version: 1,
            address_size: 8,
        };
        let mut cie = CommonInformationEntry::new(encoding, 1, -8, X86_64::RA);
        cie.add_instruction(Cfi::Cfa(X86_64::RSP, 8));
        cie.add_instruction(Cfi::Offset(X86_64::RA, -8));
        let mut table = FrameTable::default();
        let cie = table.add_cie(cie);
        let fde = |start: u64, rows: Vec<Cfi>| {
            let mut fde = FrameDescriptionEntry::new(Address::Constant(start), 0x100);
            for row in rows {
                fde.add_instruction(4, row);
            }
            fde
        };
        // OpenSSL's `DW_OP_breg7 (rsp): 40; DW_OP_deref; DW_OP_plus_uconst: 8`, with rbp saved
        // below the CFA as its prologues do.
        let mut saved_rsp = ExpressionWriter::new();
        saved_rsp.op_breg(X86_64::RSP, 40);
        saved_rsp.op_deref();
        saved_rsp.op_plus_uconst(8);
        table.add_fde(
            cie,
            fde(
                EXPRESSION_FN,
                vec![Cfi::CfaExpression(saved_rsp), Cfi::Offset(X86_64::RBP, -16)],
            ),
        );
        // `DW_OP_breg6 (rbp): -8; DW_OP_deref; DW_OP_lit8; DW_OP_plus`.
        let mut via_rbp = ExpressionWriter::new();
        via_rbp.op_breg(X86_64::RBP, -8);
        via_rbp.op_deref();
        via_rbp.op(gimli::DW_OP_lit8);
        via_rbp.op(gimli::DW_OP_plus);
        table.add_fde(
            cie,
            fde(RBP_EXPRESSION_FN, vec![Cfi::CfaExpression(via_rbp)]),
        );
        // A leaf that moved RSP and keeps the CFA in RSI.
        table.add_fde(cie, fde(RSI_FN, vec![Cfi::Cfa(X86_64::RSI, 8)]));
        // What compilers write: framehop's business.
        table.add_fde(cie, fde(PLAIN_FN, vec![Cfi::CfaOffset(16)]));
        // GNU ld's .plt: 16-byte entries that push 8 bytes at offset 11 before jumping:
        // `DW_OP_breg7 (rsp): 8; DW_OP_breg16 (rip): 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11;
        // DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`.
        let mut plt = ExpressionWriter::new();
        plt.op_breg(X86_64::RSP, 8);
        plt.op_breg(X86_64::RA, 0);
        for op in [
            gimli::DW_OP_lit15,
            gimli::DW_OP_and,
            gimli::DW_OP_lit11,
            gimli::DW_OP_ge,
            gimli::DW_OP_lit3,
            gimli::DW_OP_shl,
            gimli::DW_OP_plus,
        ] {
            plt.op(op);
        }
        let mut plt_fde = FrameDescriptionEntry::new(Address::Constant(PLT), 0x100);
        plt_fde.add_instruction(0, Cfi::CfaExpression(plt));
        table.add_fde(cie, plt_fde);
        table.add_fde(cie, fde(RAX_FN, vec![Cfi::Cfa(X86_64::RAX, 8)]));
        let mut eh_frame = EhFrameWriter(EndianVec::new(gimli::LittleEndian));
        table
            .write_eh_frame(&mut eh_frame)
            .expect("write .eh_frame");
        let bytes = eh_frame.0.into_vec();
        let mut info = ElfUnwindInfo {
            text: None,
            eh_frame: Some(Section {
                svma: 0x10_0000..0x10_0000 + bytes.len() as u64,
                bytes: SectionBytes::from_bytes(&bytes).expect("anonymous map"),
            }),
            eh_frame_hdr: None,
            debug_frame: None,
            got_svma: None,
            load_segments: Vec::new(),
            frame_pointers: crate::unwind::FramePointers::Frameless,
            cfi: ModuleCfi::default(),
        };
        info.index_cfi(0);
        info
    }

    /// A stack copy at [`STACK`] with these words at these offsets.
    fn stack(words: &[(u64, u64)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x400];
        for &(offset, value) in words {
            let at = offset as usize;
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    fn run_step(
        info: &ElfUnwindInfo,
        svma: u64,
        registers: &Registers,
        bytes: &[u8],
    ) -> Result<Option<Registers>, UnwindEnd> {
        let copy = crate::unwind::StackCopy {
            start: STACK,
            bytes,
        };
        let eh_frame = info.eh_frame.as_ref().expect(".eh_frame");
        let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
        let fde = section
            .fde_for_address(&info.bases(), svma, EhFrame::cie_from_offset)
            .expect("an FDE covers the PC");
        step(
            info,
            &mut UnwindContext::new(),
            fde.offset(),
            svma,
            registers,
            &mut |a| copy.read(a),
        )
    }

    fn leaf(ip: u64, set: &[(Register, u64)]) -> Registers {
        let mut registers = Registers::ip_sp_bp(ip, STACK, 0xbbbb);
        for &(register, value) in set {
            registers.set(register, Some(value));
        }
        registers
    }

    #[test]
    fn scan_finds_exactly_the_rows_framehop_cannot_follow() {
        let info = module();
        let cfi = &info.cfi;
        assert_eq!(cfi.special_fdes(), 5);
        for special in [EXPRESSION_FN, RBP_EXPRESSION_FN, RSI_FN, PLT, RAX_FN] {
            assert!(cfi.special_fde(special + 0x10).is_some(), "{special:#x}");
            assert!(
                cfi.special_fde(special + 0x100).is_none(),
                "{special:#x} ends"
            );
        }
        assert!(cfi.special_fde(PLAIN_FN + 0x10).is_none());
        assert!(cfi.covers(PLAIN_FN + 0x10));
        assert!(
            !cfi.covers(PLAIN_FN + 0x100),
            "no CFI after the last function"
        );
        assert!(!cfi.covers(EXPRESSION_FN - 1), "nor before the first");
    }

    /// The caller's stack pointer saved at [rsp + 40]: the CFA is it + 8, the return address just
    /// below it, rbp saved at CFA − 16.
    #[test]
    fn cfa_expression_with_deref() {
        let caller_sp = STACK + 0x200;
        let bytes = stack(&[
            (40, caller_sp - 8),
            (0x200 - 8, 0x5555_0000_1234),
            (0x200 - 16, STACK + 0x300),
        ]);
        let caller = run_step(
            &module(),
            EXPRESSION_FN + 0x20,
            &leaf(EXPRESSION_FN + 0x20, &[(X86_64::RAX, 0xaaaa)]),
            &bytes,
        )
        .expect("step")
        .expect("not the root");
        assert_eq!(caller.ip(), Some(0x5555_0000_1234));
        assert_eq!(caller.sp(), Some(caller_sp));
        assert_eq!(caller.bp(), Some(STACK + 0x300));
        assert_eq!(caller.get(X86_64::RAX), Some(0xaaaa), "no rule: same value");
    }

    /// Issue 18, item 1: a leaf called from code whose CFA is in rax, and that does not touch rax.
    /// The rax of the sample is still the caller's after the leaf's step (no rule: same value), so
    /// the caller's row can be evaluated; before, rax was dropped and the unwind stopped there.
    #[test]
    fn cfa_on_rax_after_a_leaf_call() {
        let caller_cfa = STACK + 0x180;
        let bytes = stack(&[
            // The leaf has pushed 8 bytes (its row at +0x10: CFA = rsp + 16).
            (8, RAX_FN + 0x20),
            (0x180 - 8, 0x5555_0000_0777),
        ]);
        let sample = leaf(PLAIN_FN + 0x10, &[(X86_64::RAX, caller_cfa - 8)]);
        let in_caller = run_step(&module(), PLAIN_FN + 0x10, &sample, &bytes)
            .expect("leaf step")
            .expect("not the root");
        assert_eq!(in_caller.ip(), Some(RAX_FN + 0x20));
        assert_eq!(in_caller.get(X86_64::RAX), Some(caller_cfa - 8));
        let outer = run_step(&module(), RAX_FN + 0x1f, &in_caller, &bytes)
            .expect("the caller's row uses rax, known from the sample")
            .expect("not the root");
        assert_eq!(outer.ip(), Some(0x5555_0000_0777));
        assert_eq!(outer.sp(), Some(caller_cfa));
    }

    /// The CFA read through the frame pointer.
    #[test]
    fn cfa_expression_through_rbp() {
        let rbp = STACK + 0x80;
        let bytes = stack(&[(0x78, STACK + 0x100), (0x100, 0x5555_0000_4321)]);
        let registers = Registers::ip_sp_bp(RBP_EXPRESSION_FN + 0x30, STACK, rbp);
        let caller = run_step(&module(), RBP_EXPRESSION_FN + 0x30, &registers, &bytes)
            .expect("step")
            .expect("not the root");
        assert_eq!(caller.sp(), Some(STACK + 0x108));
        assert_eq!(caller.ip(), Some(0x5555_0000_4321));
        assert_eq!(
            caller.bp(),
            Some(rbp),
            "rbp has no rule: callee-saved, unchanged"
        );
    }

    /// A CFA on rsi is known in the leaf (the sample has every register) but not in an outer frame,
    /// where the unwind must stop rather than guess.
    #[test]
    fn cfa_on_rsi_in_the_leaf_only() {
        let bytes = stack(&[(0x150, 0x5555_0000_0042)]);
        let in_leaf = leaf(RSI_FN + 0x40, &[(X86_64::RSI, STACK + 0x150)]);
        let caller = run_step(&module(), RSI_FN + 0x40, &in_leaf, &bytes)
            .expect("step")
            .expect("not the root");
        assert_eq!(caller.ip(), Some(0x5555_0000_0042));
        assert_eq!(caller.sp(), Some(STACK + 0x158));

        let outer = Registers::ip_sp_bp(RSI_FN + 0x41, STACK, 0);
        assert_eq!(
            run_step(&module(), RSI_FN + 0x40, &outer, &bytes),
            Err(UnwindEnd::Failed(UnwindFailure::UnknownRegister))
        );
    }

    /// The PLT's CFA depends on the PC: 8 bytes more once the entry has pushed its index.
    #[test]
    fn plt_expression_on_the_pc() {
        let bytes = stack(&[(0, 0x5555_0000_0001), (8, 0x5555_0000_0002)]);
        for (offset_in_entry, return_address) in [(4, 0x5555_0000_0001), (12, 0x5555_0000_0002)] {
            let pc = PLT + 0x20 + offset_in_entry;
            let caller = run_step(&module(), pc, &leaf(pc, &[]), &bytes)
                .expect("step")
                .expect("not the root");
            assert_eq!(
                caller.ip(),
                Some(return_address),
                "at entry + {offset_in_entry}"
            );
        }
    }

    /// A saved stack pointer beyond the copy: the copy was too short, not a wrong rule.
    #[test]
    fn deref_beyond_the_copy() {
        let bytes = stack(&[(40, STACK + 0x10_0000)]);
        assert_eq!(
            run_step(
                &module(),
                EXPRESSION_FN + 0x20,
                &leaf(EXPRESSION_FN + 0x20, &[]),
                &bytes
            ),
            Err(UnwindEnd::StackCopyExhausted)
        );
    }

    /// A saved stack pointer below the stack pointer: garbage, and the unwind says so.
    #[test]
    fn cfa_below_the_stack_pointer() {
        let bytes = stack(&[(40, STACK - 0x100)]);
        assert_eq!(
            run_step(
                &module(),
                EXPRESSION_FN + 0x20,
                &leaf(EXPRESSION_FN + 0x20, &[]),
                &bytes
            ),
            Err(UnwindEnd::Failed(UnwindFailure::WentBackwards))
        );
    }
}
