//! One pass over a module's CFI (`.eh_frame`, or `.debug_frame` where there is none), within caps.
//!
//! The CFI comes from the profiled program, and this pass runs on the recording loop: a crafted
//! section (one CIE with a megabyte of `DW_CFA_nop` shared by thousands of FDEs) must cost a bounded
//! amount of work, not stall the recording. Each CIE's instructions are decoded once, however many
//! FDEs share it; the instructions decoded per module, the instructions of one FDE with its CIE (what
//! every unwind step through it re-runs, in gimli and in framehop) and the FDEs are capped, and a
//! time cap catches what the counts miss. A module over a cap has its CFI marked "too large": it is
//! not used for unwinding, and unwinds that reach it end with that reason instead of a guess.
//!
//! The pass yields what the unwinder needs ([`ModuleCfi`]: which code is covered, and which FDEs
//! have rows framehop does not follow) and what `--unwind auto` needs (per function, whether its
//! CFA is ever based on RBP).

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use gimli::{
    BaseAddresses, CallFrameInstruction, CallFrameInstructionIter, CieOrFde, DebugFrame, EhFrame,
    LittleEndian, Reader, Register, UnwindOffset, UnwindSection, X86_64,
};

use super::UnwindFailure;

/// Instructions of one FDE plus its CIE's initial instructions. Every unwind step through the FDE
/// decodes them again (gimli and framehop both run the CIE's instructions, then the FDE's up to the
/// PC), so this bounds the cost of one step. The largest on this machine: 2232 in Debian's node,
/// 1275 in libjvm, 215 in libcrypto.
pub(crate) const MAX_ENTRY_INSTRUCTIONS: u64 = 16_384;
/// Instructions decoded per module (CIEs once each, FDEs). Debian's node has 0.97 million, libjvm
/// 0.49 million, libcrypto 0.18 million.
pub(crate) const MAX_MODULE_INSTRUCTIONS: u64 = 16 << 20;
/// FDEs per module. Debian's node has 75,936.
pub(crate) const MAX_MODULE_FDES: u64 = 1 << 21;
/// Wall time per module, checked every [`TIME_CHECK_INTERVAL`] FDEs: the fallback if the counted
/// work is slower than expected (the unit test that decodes 17.6 million instructions, just over
/// the module cap, runs in ~0.3 s).
const MAX_SCAN_TIME: Duration = Duration::from_secs(1);
const TIME_CHECK_INTERVAL: u64 = 1024;

/// Gaps between FDEs up to this size (function alignment padding, where no PC ever is) are merged
/// into one covered range.
const MAX_PADDING: u64 = 15;
/// How far the scan reads between two calls of its `scanned_to`: a new module's section is read
/// once, and what was read need not stay resident until the end (LLVM's 7.5 MiB `.eh_frame`). The
/// kernel maps a file's pages 64 KiB at a time.
pub const SCANNED_STEP: usize = 64 << 10;

/// Which section the module's CFI is in (the one framehop is given: `.eh_frame` when there is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CfiKind {
    EhFrame,
    DebugFrame,
}

/// Why a module's CFI is not used: the reason unwinds reaching it end with, and the detail for `-v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CfiProblem {
    pub reason: UnwindFailure,
    pub detail: String,
}

/// An FDE with rows framehop does not follow: its range (SVMA) and offset in its section.
#[derive(Clone, Debug)]
struct SpecialFde {
    range: Range<u64>,
    offset: usize,
}

/// What one module's CFI covers, and which of its FDEs have rows framehop does not follow.
#[derive(Debug, Default)]
pub(crate) struct ModuleCfi {
    kind: Option<CfiKind>,
    /// Sorted by start.
    special: Vec<SpecialFde>,
    /// Code covered by any FDE (SVMA), sorted and merged: a leaf outside gets the no-CFI rules.
    covered: Vec<Range<u64>>,
    /// Set when the module has CFI that cannot be used; everything above is then empty.
    problem: Option<CfiProblem>,
}

/// One function's CFI: its address range (SVMA) and whether its CFA is ever based on RBP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FunctionFrame {
    pub range: Range<u64>,
    pub keeps_frame_pointer: bool,
}

/// What the instructions of one CIE or FDE say, as far as the scan cares.
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    instructions: u64,
    special: bool,
    frame_pointer: bool,
}

impl ModuleCfi {
    /// A module whose CFI cannot be used.
    pub fn unusable(problem: CfiProblem) -> Self {
        ModuleCfi {
            problem: Some(problem),
            ..ModuleCfi::default()
        }
    }

    /// Scans the module's CFI once, within the caps: the index, and every function's frame (empty
    /// if the CFI is unusable). `.eh_frame` is used where there is one, else `.debug_frame`;
    /// `bases` are what their pointer encodings are relative to. `scanned_to` is called with the
    /// section offset the scan reached, every [`SCANNED_STEP`] bytes or so.
    pub fn scan(
        eh_frame: Option<&[u8]>,
        debug_frame: Option<&[u8]>,
        bases: &BaseAddresses,
        scanned_to: &mut dyn FnMut(usize),
    ) -> (Self, Vec<FunctionFrame>) {
        let (kind, scanned) = if let Some(eh_frame) = eh_frame {
            let section = EhFrame::new(eh_frame, LittleEndian);
            (CfiKind::EhFrame, scan_section(&section, bases, scanned_to))
        } else if let Some(debug_frame) = debug_frame {
            let mut section = DebugFrame::new(debug_frame, LittleEndian);
            section.set_address_size(8);
            (
                CfiKind::DebugFrame,
                scan_section(&section, bases, scanned_to),
            )
        } else {
            return (ModuleCfi::default(), Vec::new());
        };
        let (mut special, mut functions) = match scanned {
            Ok(scanned) => scanned,
            Err(problem) => return (ModuleCfi::unusable(problem), Vec::new()),
        };
        special.sort_by_key(|fde| fde.range.start);
        functions.sort_unstable_by_key(|f| (f.range.start, f.range.end));
        let mut covered: Vec<Range<u64>> = Vec::with_capacity(functions.len() / 8);
        for range in functions.iter().map(|f| f.range.clone()) {
            match covered.last_mut() {
                Some(last) if range.start <= last.end.saturating_add(MAX_PADDING) => {
                    last.end = last.end.max(range.end);
                }
                _ => covered.push(range),
            }
        }
        covered.shrink_to_fit();
        special.shrink_to_fit();
        let cfi = ModuleCfi {
            kind: Some(kind),
            special,
            covered,
            problem: None,
        };
        (cfi, functions)
    }

    /// The section the CFI is in; `None` without usable CFI.
    pub fn kind(&self) -> Option<CfiKind> {
        self.kind
    }

    /// Why the module's CFI is not used, if it is not.
    pub fn problem(&self) -> Option<&CfiProblem> {
        self.problem.as_ref()
    }

    /// Whether an FDE covers `svma`.
    pub fn covers(&self, svma: u64) -> bool {
        let index = self.covered.partition_point(|range| range.start <= svma);
        index
            .checked_sub(1)
            .and_then(|i| self.covered.get(i))
            .is_some_and(|range| svma < range.end)
    }

    /// The section offset of the FDE covering `svma`, if that FDE has rows framehop does not follow.
    pub fn special_fde(&self, svma: u64) -> Option<usize> {
        let index = self.special.partition_point(|fde| fde.range.start <= svma);
        let fde = self.special.get(index.checked_sub(1)?)?;
        (svma < fde.range.end).then_some(fde.offset)
    }

    /// How many FDEs have such rows.
    #[cfg(test)]
    pub fn special_fdes(&self) -> usize {
        self.special.len()
    }
}

fn too_large(detail: String) -> CfiProblem {
    CfiProblem {
        reason: UnwindFailure::CfiTooLarge,
        detail,
    }
}

/// Every FDE of `section`, within the caps. FDEs (and instructions) that cannot be read are skipped,
/// as before the caps: the rest of the section still unwinds.
fn scan_section<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    scanned_to: &mut dyn FnMut(usize),
) -> Result<(Vec<SpecialFde>, Vec<FunctionFrame>), CfiProblem>
where
    S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>,
{
    let started = Instant::now();
    let mut cies = HashMap::new();
    let mut summaries: HashMap<usize, Summary> = HashMap::new();
    let mut decoded = 0u64;
    let mut fdes = 0u64;
    let mut special = Vec::new();
    let mut functions = Vec::new();
    let mut entries = section.entries(bases);
    let mut next_step = SCANNED_STEP;
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        fdes += 1;
        if fdes > MAX_MODULE_FDES {
            return Err(too_large(format!("more than {MAX_MODULE_FDES} FDEs")));
        }
        if fdes.is_multiple_of(TIME_CHECK_INTERVAL) && started.elapsed() > MAX_SCAN_TIME {
            return Err(too_large(format!(
                "indexing took more than {MAX_SCAN_TIME:?} ({fdes} FDEs)"
            )));
        }
        // Each CIE is parsed once, however many FDEs point to it.
        let Ok(fde) = partial.parse(|section, bases, offset| {
            let key: usize = UnwindOffset::into(offset);
            if let Some(cie) = cies.get(&key) {
                return Ok(Clone::clone(cie));
            }
            let cie = section.cie_from_offset(bases, offset)?;
            cies.insert(key, cie.clone());
            Ok(cie)
        }) else {
            continue;
        };
        let data_alignment = fde.cie().data_alignment_factor();
        let cie = match summaries.get(&fde.cie().offset()) {
            Some(summary) => *summary,
            None => {
                let mut instructions = fde.cie().instructions(section, bases);
                let summary = summarize(&mut instructions, data_alignment, MAX_ENTRY_INSTRUCTIONS);
                decoded += summary.instructions;
                summaries.insert(fde.cie().offset(), summary);
                summary
            }
        };
        let mut instructions = fde.instructions(section, bases);
        let limit = MAX_ENTRY_INSTRUCTIONS.saturating_sub(cie.instructions);
        let own = summarize(&mut instructions, data_alignment, limit);
        decoded += own.instructions;
        if cie.instructions + own.instructions > MAX_ENTRY_INSTRUCTIONS {
            return Err(too_large(format!(
                "an FDE with its CIE has more than {MAX_ENTRY_INSTRUCTIONS} instructions \
                 (every unwind step through it runs them)"
            )));
        }
        if decoded > MAX_MODULE_INSTRUCTIONS {
            return Err(too_large(format!(
                "more than {MAX_MODULE_INSTRUCTIONS} CFI instructions"
            )));
        }
        if fde.offset() >= next_step {
            scanned_to(fde.offset());
            next_step = fde.offset() + SCANNED_STEP;
        }
        let start = fde.initial_address();
        let Some(end) = start.checked_add(fde.len()) else {
            continue;
        };
        if cie.special || own.special {
            special.push(SpecialFde {
                range: start..end,
                offset: fde.offset(),
            });
        }
        functions.push(FunctionFrame {
            range: start..end,
            keeps_frame_pointer: cie.frame_pointer || own.frame_pointer,
        });
    }
    Ok((special, functions))
}

/// Decodes up to `limit` + 1 instructions (one more than allowed tells the caller it is over).
fn summarize<R: Reader<Offset = usize>>(
    instructions: &mut CallFrameInstructionIter<'_, R>,
    data_alignment: i64,
    limit: u64,
) -> Summary {
    let mut summary = Summary::default();
    while summary.instructions <= limit {
        let Ok(Some(instruction)) = instructions.next() else {
            break;
        };
        summary.instructions += 1;
        summary.special |= framehop_cannot_follow(&instruction, data_alignment);
        summary.frame_pointer |= defines_cfa_on_rbp(&instruction);
    }
    summary
}

fn defines_cfa_on_rbp<T: gimli::ReaderOffset>(instruction: &CallFrameInstruction<T>) -> bool {
    use CallFrameInstruction as I;
    matches!(
        *instruction,
        I::DefCfa { register, .. } | I::DefCfaSf { register, .. } | I::DefCfaRegister { register }
            if register == X86_64::RBP
    )
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

#[cfg(test)]
mod tests {
    //! `.eh_frame` sections written byte by byte (gimli's writer has no `DW_CFA_nop`), shaped like
    //! the attack of issue 19: CIEs padded with nops, many FDEs sharing them.

    use super::*;
    use crate::unwind::elf_info::{ElfUnwindInfo, Section, SectionBytes};
    use crate::unwind::FramePointers;

    const FUNCTIONS: u64 = 0x1000;
    const DW_CFA_NOP: u8 = 0;

    /// One CIE (CFA = rsp + 8, return address at CFA − 8) followed by `nops` nops, and `fdes` FDEs
    /// of 16 bytes each pointing at it, without instructions of their own.
    fn eh_frame(nops: usize, fdes: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut cie = vec![0, 0, 0, 0, 1, 0, 1, 0x78, 16, 0x0c, 7, 8, 0x90, 1];
        cie.resize(cie.len() + nops, DW_CFA_NOP);
        while !(cie.len() + 4).is_multiple_of(8) {
            cie.push(DW_CFA_NOP);
        }
        bytes.extend_from_slice(&(cie.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&cie);
        for i in 0..fdes {
            let cie_pointer = (bytes.len() + 4) as u32;
            let mut fde = cie_pointer.to_le_bytes().to_vec();
            fde.extend_from_slice(&(FUNCTIONS + i * 16).to_le_bytes());
            fde.extend_from_slice(&16u64.to_le_bytes());
            while !(fde.len() + 4).is_multiple_of(8) {
                fde.push(DW_CFA_NOP);
            }
            bytes.extend_from_slice(&(fde.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&fde);
        }
        bytes
    }

    fn indexed(eh_frame: &[u8]) -> ElfUnwindInfo {
        let mut info = ElfUnwindInfo {
            text: None,
            eh_frame: Some(Section {
                svma: 0x10_0000..0x10_0000 + eh_frame.len() as u64,
                bytes: SectionBytes::from_bytes(eh_frame).expect("section bytes"),
            }),
            eh_frame_hdr: None,
            debug_frame: None,
            got_svma: None,
            load_segments: Vec::new(),
            frame_pointers: FramePointers::Frameless,
            cfi: ModuleCfi::default(),
        };
        info.index_cfi(0);
        info
    }

    /// The CIE's instructions are decoded once for all the FDEs that share it: 2,000 FDEs on a CIE
    /// of 10,000 nops cost 10,000 decoded instructions, not 20 million (over the module cap).
    #[test]
    fn shared_cie_is_decoded_once() {
        let info = indexed(&eh_frame(10_000, 2_000));
        assert_eq!(info.cfi.problem(), None);
        assert!(info.cfi.covers(FUNCTIONS + 2_000 * 16 - 1));
        assert!(!info.cfi.covers(FUNCTIONS + 2_000 * 16));
    }

    /// The attack of issue 19: a CIE of 1 MiB of nops. Every unwind step through one of its FDEs
    /// would run them again: the module's CFI is refused as a whole, with the reason, and nothing
    /// of it is left for framehop (whose frame-pointer rule would otherwise stand in for it).
    #[test]
    fn huge_cie_makes_the_cfi_too_large() {
        let info = indexed(&eh_frame(1 << 20, 1_000));
        let problem = info.cfi.problem().expect("refused");
        assert_eq!(problem.reason, UnwindFailure::CfiTooLarge);
        assert!(
            problem.detail.contains("instructions"),
            "{}",
            problem.detail
        );
        assert!(info.eh_frame.is_none(), "the section is not handed on");
        assert!(!info.cfi.covers(FUNCTIONS));
        assert_eq!(
            info.frame_pointers,
            FramePointers::Kept {
                frameless: Vec::new().into()
            }
        );
    }

    /// Instructions are capped per module, not only per entry: 1,100 CIEs of 16,000 nops (each
    /// under the entry cap, one FDE each) are 17.6 million, over the module's 16 Mi.
    #[test]
    fn many_large_cies_make_the_cfi_too_large() {
        let mut bytes = Vec::new();
        for i in 0..1_100u64 {
            let mut one = eh_frame(16_000, 1);
            // FDE pc_begin: distinct functions.
            let fde_pc = one.len() - 16;
            one[fde_pc..fde_pc + 8].copy_from_slice(&(FUNCTIONS + i * 16).to_le_bytes());
            bytes.extend_from_slice(&one);
        }
        let info = indexed(&bytes);
        let problem = info.cfi.problem().expect("refused");
        assert_eq!(problem.reason, UnwindFailure::CfiTooLarge);
        assert!(
            problem
                .detail
                .contains(&MAX_MODULE_INSTRUCTIONS.to_string()),
            "{}",
            problem.detail
        );
    }
}
