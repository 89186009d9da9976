//! What unwinding needs from one module file: its unwind sections (memory-mapped once from the
//! module's [`StableFile`], so a truncated file cannot raise SIGBUS, and shared by every process that
//! maps the module), its loadable segments (to place it at a mapping's address),
//! and whether its code keeps frame pointers (for `--unwind auto`).

use std::ops::{Deref, Range};
use std::sync::Arc;

use gimli::{
    BaseAddresses, CfiEntriesIter, CieOrFde, EhFrame, LittleEndian, UnwindSection, X86_64,
};
use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

use crate::untrusted::{byte_range, StableFile};

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
    pub executable: bool,
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
    /// Offsets and sizes come from the file and are checked: a malformed section is left out.
    pub fn read(file: &StableFile) -> Option<Self> {
        let map = Arc::new(file.map().ok()?);
        let elf = object::File::parse(&map[..]).ok()?;
        let section = |name: &str| -> Option<Section> {
            let section = elf.section_by_name(name)?;
            let (offset, size) = section.file_range()?;
            let range = byte_range(offset, size, map.len())?;
            Some(Section {
                svma: section.address()..section.address().checked_add(section.size())?,
                bytes: SectionBytes {
                    map: Arc::clone(&map),
                    range,
                },
            })
        };
        let eh_frame = section(".eh_frame");
        let text = section(".text");
        let load_segments = load_segments(&elf);
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
                .and_then(|s| Some(s.address()..s.address().checked_add(s.size())?)),
            text,
            eh_frame,
            load_segments,
            keeps_frame_pointers,
        })
    }

    /// The address at which this module's address 0 lies, for an executable mapping of it at
    /// `start` from file offset `offset`: `start - (segment vaddr + (offset - segment file offset))`
    /// with the executable PT_LOAD segment the mapping comes from.
    ///
    /// The kernel maps a segment from its file offset rounded down to a page, so `offset` can lie
    /// *before* the segment's own offset, inside the previous segment's last page: lld puts the text
    /// segment at file offset 0x...e70 right after a read-only segment ending at 0x...e64, and "the
    /// segment containing `offset`" would be the read-only one, a page off.
    pub fn base_address(&self, start: u64, offset: u64) -> Option<u64> {
        const PAGE: u64 = 4096;
        let segment = self.load_segments.iter().find(|s| {
            s.executable
                && (s.file_offset & !(PAGE - 1)..s.file_offset.saturating_add(s.file_size))
                    .contains(&offset)
        })?;
        let vaddr_at_start = segment.vaddr as i128 + (offset as i128 - segment.file_offset as i128);
        u64::try_from(start as i128 - vaddr_at_start).ok()
    }
}

/// The PT_LOAD segments of an ELF file that have bytes in the file.
pub(crate) fn load_segments(elf: &object::File<'_>) -> Vec<LoadSegment> {
    elf.segments()
        .filter_map(|segment| {
            let (file_offset, file_size) = segment.file_range();
            let executable = matches!(
                segment.flags(),
                object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_X.0 != 0
            );
            Some(LoadSegment {
                file_offset,
                file_size,
                vaddr: segment.address(),
                executable,
            })
            .filter(|_| file_size > 0)
        })
        .collect()
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
        total = total.saturating_add(fde.len());
        let mut instructions = fde.instructions(&section, &bases);
        while let Ok(Some(instruction)) = instructions.next() {
            use gimli::CallFrameInstruction::*;
            if let DefCfa { register, .. }
            | DefCfaSf { register, .. }
            | DefCfaRegister { register } = instruction
            {
                if register == X86_64::RBP {
                    on_rbp = on_rbp.saturating_add(fde.len());
                    break;
                }
            }
        }
    }
    (total > 0).then(|| on_rbp as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(load_segments: Vec<LoadSegment>) -> ElfUnwindInfo {
        ElfUnwindInfo {
            text: None,
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            got_svma: None,
            load_segments,
            keeps_frame_pointers: false,
        }
    }

    /// lld layout: the text segment starts mid-page right after a read-only one, so its mapping's
    /// file offset (rounded down) falls inside the read-only segment; the base must still come from
    /// the text segment.
    #[test]
    fn base_address_with_lld_layout() {
        let lld = info(vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0xe2e64,
                vaddr: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0xe2e70,
                file_size: 0x285a20,
                vaddr: 0xe3e70,
                executable: true,
            },
        ]);
        let start = 0x55a7_ddb4_3000;
        assert_eq!(lld.base_address(start, 0xe2000), Some(start - 0xe3000));
    }

    /// GNU ld layout: page-aligned segments with offset == vaddr.
    #[test]
    fn base_address_with_bfd_layout() {
        let bfd = info(vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0x760,
                vaddr: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0x1000,
                file_size: 0x44d,
                vaddr: 0x1000,
                executable: true,
            },
        ]);
        assert_eq!(
            bfd.base_address(0x5600_0000_1000, 0x1000),
            Some(0x5600_0000_0000)
        );
        assert_eq!(
            bfd.base_address(0x5600_0000_1000, 0x9000),
            None,
            "no segment there"
        );
    }
}
