//! CFI rows that framehop cannot follow, found and executed with gimli.
//!
//! framehop 0.16 caches rules whose CFA is RSP or RBP plus an offset and whose return address is at
//! CFA − 8; its generic path tracks only ip/sp/bp and cannot read memory, and where neither works it
//! silently applies the frame-pointer rule. Hand-written assembly (OpenSSL's AES, SHA and bignum code)
//! has rows like `DW_CFA_def_cfa_expression: DW_OP_breg7 (rsp) +40; DW_OP_deref; DW_OP_plus_uconst 8`
//! (the caller's stack pointer saved in the frame) or a CFA on rax/rsi/r9/r11 (a leaf that moved RSP
//! somewhere else). For those, [`ModuleCfi`] knows which FDEs contain such rows, and [`step`]
//! evaluates the row for a PC against the registers known for that frame and the copied stack.

use std::ops::Range;

use gimli::{
    BaseAddresses, CallFrameInstruction, CfaRule, CieOrFde, EhFrame, EhFrameHdr, EndianSlice,
    Evaluation, EvaluationResult, Expression, LittleEndian, Location, Piece, Register,
    RegisterRule, UnwindContext, UnwindSection, Value, X86_64,
};

use super::elf_info::ElfUnwindInfo;
use super::{UnwindEnd, UnwindFailure};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// DWARF register numbers 0..=15 are the general-purpose registers, 16 is the return address (RIP).
pub(crate) const TRACKED_REGISTERS: usize = 17;

/// Registers the x86-64 psABI makes a callee preserve: without a CFI rule they keep their value in
/// the caller. Every other register is unknown in the caller unless a rule says where it is.
pub(crate) const CALLEE_SAVED: [Register; 6] = [
    X86_64::RBX,
    X86_64::RBP,
    X86_64::R12,
    X86_64::R13,
    X86_64::R14,
    X86_64::R15,
];

/// Register values known for one frame, by DWARF number; `None` where unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registers(pub [Option<u64>; TRACKED_REGISTERS]);

impl Registers {
    /// Only the PC, stack pointer and frame pointer known (what framehop hands back).
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

    fn set(&mut self, register: Register, value: Option<u64>) {
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

/// Reads 8 bytes of the copied stack; the error says how the unwind ends if it cannot.
pub(crate) type ReadMemory<'a> = dyn FnMut(u64) -> Result<u64, UnwindEnd> + 'a;

/// The FDEs of one module that have rows framehop does not follow.
#[derive(Debug, Default)]
pub(crate) struct ModuleCfi {
    /// Their address ranges (SVMA), sorted by start.
    special: Vec<Range<u64>>,
}

impl ModuleCfi {
    /// Scans the module's `.eh_frame` once (the instructions, not the rows: cheap enough to do for
    /// every module a process maps).
    pub fn scan(info: &ElfUnwindInfo) -> Self {
        let Some(eh_frame) = &info.eh_frame else {
            return ModuleCfi::default();
        };
        let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
        let bases = bases(info);
        let mut special = Vec::new();
        let mut entries = section.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
                continue;
            };
            let data_alignment = fde.cie().data_alignment_factor();
            let mut cie_instructions = fde.cie().instructions(&section, &bases);
            let mut fde_instructions = fde.instructions(&section, &bases);
            let mut is_special = false;
            while let Ok(Some(instruction)) = cie_instructions.next() {
                is_special |= framehop_cannot_follow(&instruction, data_alignment);
            }
            while let Ok(Some(instruction)) = fde_instructions.next() {
                is_special |= framehop_cannot_follow(&instruction, data_alignment);
            }
            if is_special {
                let start = fde.initial_address();
                special.push(start..start.saturating_add(fde.len()));
            }
        }
        special.sort_by_key(|range| range.start);
        ModuleCfi { special }
    }

    /// Whether the FDE covering `svma` has rows framehop does not follow.
    pub fn needs_own_step(&self, svma: u64) -> bool {
        let index = self.special.partition_point(|range| range.start <= svma);
        index
            .checked_sub(1)
            .and_then(|i| self.special.get(i))
            .is_some_and(|range| svma < range.end)
    }

    /// How many FDEs have such rows.
    #[cfg(test)]
    pub fn special_fdes(&self) -> usize {
        self.special.len()
    }
}

/// Whether one CFI instruction makes a row framehop 0.16 would get wrong: a CFA that is an
/// expression or on a register other than RSP/RBP, or a return-address/RBP rule other than "saved at
/// CFA + n" (and, for the return address, other than CFA − 8).
fn framehop_cannot_follow<T: gimli::ReaderOffset>(
    instruction: &CallFrameInstruction<T>,
    data_alignment: i64,
) -> bool {
    use CallFrameInstruction as I;
    let watched = |register: Register| register == X86_64::RA || register == X86_64::RBP;
    match *instruction {
        I::DefCfaExpression { .. } => true,
        I::DefCfa { register, .. }
        | I::DefCfaSf { register, .. }
        | I::DefCfaRegister { register } => register != X86_64::RSP && register != X86_64::RBP,
        I::Offset {
            register,
            factored_offset,
        } => {
            register == X86_64::RA
                && i64::try_from(factored_offset)
                    .ok()
                    .and_then(|o| o.checked_mul(data_alignment))
                    != Some(-8)
        }
        I::OffsetExtendedSf {
            register,
            factored_offset,
        } => register == X86_64::RA && factored_offset.checked_mul(data_alignment) != Some(-8),
        I::ValOffset { register, .. }
        | I::ValOffsetSf { register, .. }
        | I::Expression { register, .. }
        | I::ValExpression { register, .. } => watched(register),
        I::Register { dest_register, .. } => watched(dest_register),
        _ => false,
    }
}

fn bases(info: &ElfUnwindInfo) -> BaseAddresses {
    let mut bases = BaseAddresses::default();
    if let Some(eh_frame) = &info.eh_frame {
        bases = bases.set_eh_frame(eh_frame.svma.start);
    }
    if let Some(hdr) = &info.eh_frame_hdr {
        bases = bases.set_eh_frame_hdr(hdr.svma.start);
    }
    if let Some(text) = &info.text {
        bases = bases.set_text(text.svma.start);
    }
    if let Some(got) = &info.got_svma {
        bases = bases.set_got(got.start);
    }
    bases
}

/// Whether an FDE covers `svma`: `None` when the module has no `.eh_frame_hdr` to look it up in.
pub(crate) fn covers(info: &ElfUnwindInfo, svma: u64) -> Option<bool> {
    let (eh_frame, hdr) = (info.eh_frame.as_ref()?, info.eh_frame_hdr.as_ref()?);
    let bases = bases(info);
    let hdr = EhFrameHdr::new(&hdr.bytes, LittleEndian).parse(&bases, 8).ok()?;
    let table = hdr.table()?;
    let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
    Some(
        table
            .fde_for_address(&section, &bases, svma, EhFrame::cie_from_offset)
            .is_ok(),
    )
}

/// One unwind step with the CFI row for `svma` (the PC, or a return address − 1, in the module's own
/// addresses): the caller's registers, or `None` at the root (the return address is undefined).
pub(crate) fn step(
    info: &ElfUnwindInfo,
    context: &mut UnwindContext<usize>,
    svma: u64,
    registers: &Registers,
    read: &mut ReadMemory<'_>,
) -> Result<Option<Registers>, UnwindEnd> {
    let bad_cfi = UnwindEnd::Failed(UnwindFailure::UnreadableCfi);
    let (eh_frame, hdr) = info
        .eh_frame
        .as_ref()
        .zip(info.eh_frame_hdr.as_ref())
        .ok_or(bad_cfi)?;
    let bases = bases(info);
    let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
    let hdr = EhFrameHdr::new(&hdr.bytes, LittleEndian)
        .parse(&bases, 8)
        .map_err(|_| bad_cfi)?;
    let table = hdr.table().ok_or(bad_cfi)?;
    let fde = table
        .fde_for_address(&section, &bases, svma, EhFrame::cie_from_offset)
        .map_err(|_| bad_cfi)?;
    let encoding = fde.cie().encoding();
    let row = fde
        .unwind_info_for_address(&section, &bases, context, svma)
        .map_err(|_| bad_cfi)?;
    let expression = |e: &gimli::UnwindExpression<usize>| e.get(&section).map_err(|_| bad_cfi);

    let sp = registers.sp().ok_or(UnwindEnd::Failed(UnwindFailure::UnknownRegister))?;
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
            None if CALLEE_SAVED.contains(&register) => registers.get(register),
            None | Some(RegisterRule::Undefined) => None,
            Some(RegisterRule::SameValue) => registers.get(register),
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
    if let Some(value) = initial {
        evaluation.set_initial_value(value);
    }
    let mut result = evaluation.evaluate().map_err(|_| unsupported)?;
    // Each operation asks at most once; the bound only guards against a malformed program.
    for _ in 0..256 {
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
