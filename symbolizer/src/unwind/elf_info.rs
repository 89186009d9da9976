//! What unwinding needs from one module file: its unwind sections (memory-mapped once, shared by
//! every process that maps the module), its loadable segments (to place it at a mapping's address),
//! and whether its code keeps frame pointers (for `--unwind auto`).

use std::ops::{Deref, Range};
use std::sync::Arc;

use gimli::{
    BaseAddresses, CfiEntriesIter, CieOrFde, EhFrame, LittleEndian, UnwindSection, X86_64,
};
use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

/// Share of a module's code (by bytes covered by FDEs) whose CFA is computed from RBP above which the
/// module counts as keeping frame pointers. Frame-pointer builds have nearly all functions on RBP and
/// only start-up stubs (`_start`, PLT) off it; frameless builds have almost none on it.
const FRAME_POINTER_SHARE: f64 = 0.6;

/// Bytes of a memory-mapped module file; cheap to clone, and what framehop reads sections through.
#[derive(Clone)]
pub struct SectionBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// A section: its address in the file's own address space (SVMA) and its bytes.
#[derive(Clone)]
pub struct Section {
    pub svma: Range<u64>,
    pub bytes: SectionBytes,
}

/// A PT_LOAD segment.
#[derive(Clone, Copy, Debug)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub vaddr: u64,
}

pub struct ElfUnwindInfo {
    pub text: Option<Section>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<Section>,
    pub got_svma: Option<Range<u64>>,
    pub load_segments: Vec<LoadSegment>,
    /// Whether most of the module's code keeps a frame pointer in RBP. Modules without CFI count as
    /// keeping one: DWARF unwinding could not do better for them.
    pub keeps_frame_pointers: bool,
}

impl ElfUnwindInfo {
    /// Reads a module. `None` if it is not an ELF file this unwinder understands.
    pub fn read(file: &std::fs::File) -> Option<Self> {
        // SAFETY: the file is a mapped executable held open for the session; a concurrent truncation
        // of a running binary's file would crash its own process first.
        let map = Arc::new(unsafe { Mmap::map(file) }.ok()?);
        let elf = object::File::parse(&map[..]).ok()?;
        let section = |name: &str| -> Option<Section> {
            let section = elf.section_by_name(name)?;
            let (offset, size) = section.file_range()?;
            let range = offset as usize..(offset + size) as usize;
            if range.end > map.len() {
                return None;
            }
            Some(Section {
                svma: section.address()..section.address() + section.size(),
                bytes: SectionBytes {
                    map: Arc::clone(&map),
                    range,
                },
            })
        };
        let eh_frame = section(".eh_frame");
        let text = section(".text");
        let load_segments = elf
            .segments()
            .filter_map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                Some(LoadSegment {
                    file_offset,
                    file_size,
                    vaddr: segment.address(),
                })
                .filter(|_| file_size > 0)
            })
            .collect();
        let keeps_frame_pointers = match (&eh_frame, &text) {
            (Some(eh_frame), text) => frame_pointer_share(eh_frame, text.as_ref())
                .is_none_or(|share| share >= FRAME_POINTER_SHARE),
            (None, _) => true,
        };
        Some(ElfUnwindInfo {
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame"),
            got_svma: elf
                .section_by_name(".got")
                .map(|s| s.address()..s.address() + s.size()),
            text,
            eh_frame,
            load_segments,
            keeps_frame_pointers,
        })
    }

    /// The address at which this module's address 0 lies, for a mapping of it at `start` from file
    /// offset `offset`: `start - (segment vaddr + (offset - segment file offset))`, with the PT_LOAD
    /// segment that contains `offset`.
    pub fn base_address(&self, start: u64, offset: u64) -> Option<u64> {
        let segment = self
            .load_segments
            .iter()
            .find(|s| (s.file_offset..s.file_offset + s.file_size).contains(&offset))?;
        let vaddr = segment.vaddr.checked_add(offset - segment.file_offset)?;
        start.checked_sub(vaddr)
    }
}

/// Share of FDE-covered bytes whose CFA is ever based on RBP; `None` if the CFI cannot be read.
fn frame_pointer_share(eh_frame: &Section, text: Option<&Section>) -> Option<f64> {
    let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(eh_frame.svma.start);
    if let Some(text) = text {
        bases = bases.set_text(text.svma.start);
    }
    let mut entries: CfiEntriesIter<'_, _, _> = section.entries(&bases);
    let (mut on_rbp, mut total) = (0u64, 0u64);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        total += fde.len();
        let mut instructions = fde.instructions(&section, &bases);
        while let Ok(Some(instruction)) = instructions.next() {
            use gimli::CallFrameInstruction::*;
            if let DefCfa { register, .. }
            | DefCfaSf { register, .. }
            | DefCfaRegister { register } = instruction
            {
                if register == X86_64::RBP {
                    on_rbp += fde.len();
                    break;
                }
            }
        }
    }
    (total > 0).then(|| on_rbp as f64 / total as f64)
}
