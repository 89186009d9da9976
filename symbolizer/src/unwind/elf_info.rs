//! What unwinding needs from one module file: its unwind sections (memory-mapped once from the
//! module's [`StableFile`], so a truncated file cannot raise SIGBUS, and shared by every process that
//! maps the module), its loadable segments (to place it at a mapping's address), and which of its
//! functions keep frame pointers (for `--unwind auto`).

use std::ops::{Deref, Range};
use std::sync::Arc;

use gimli::{
    BaseAddresses, CfiEntriesIter, CieOrFde, EhFrame, LittleEndian, UnwindSection, X86_64,
};
use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

use crate::untrusted::{byte_range, StableFile};

/// Frame pointers are a per-function property: a function keeps one when its CFI computes the CFA
/// from RBP somewhere in its body. A module counts as frame-pointer code when at least this share of
/// its FDE-covered bytes keeps one; its other functions are then listed as exceptions. Frame-pointer
/// builds are near 100 % (gcc's frameless leaves and C start-up code are the exceptions), Debian's
/// libc 17 %, a default Rust release build a mix of both (std with frame pointers, the crate without).
const FRAME_POINTER_SHARE: f64 = 0.5;

/// A frame-pointer module with more (merged) frameless ranges than this counts as frameless as a
/// whole: the BPF side holds a bounded number of them per module. Debian's node has 6913.
pub const MAX_MODULE_EXCEPTIONS: usize = 8192;

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

impl SectionBytes {
    /// Bytes not from a file, for unit tests that generate sections.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1)).ok()?;
        map[..bytes.len()].copy_from_slice(bytes);
        Some(SectionBytes {
            map: Arc::new(map.make_read_only().ok()?),
            range: 0..bytes.len(),
        })
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
    /// Which code keeps a frame pointer in RBP. Modules without CFI count as keeping one: DWARF
    /// unwinding could not do better for them.
    pub frame_pointers: FramePointers,
}

/// Where a module's code keeps frame pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramePointers {
    /// Most code does; these functions (file addresses, SVMA, sorted, adjacent ones merged) do not.
    Kept { frameless: Arc<[Range<u64>]> },
    /// Most code does not: treat the whole module as frameless.
    Frameless,
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
        let frame_pointers = match &eh_frame {
            Some(eh_frame) => {
                let functions = function_frames(eh_frame, text.as_ref());
                judge_frame_pointers(functions, elf.entry())
            }
            None => FramePointers::Kept {
                frameless: Arc::from([]),
            },
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
            frame_pointers,
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

/// One function's CFI: its address range (SVMA) and whether its CFA is ever based on RBP.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FunctionFrame {
    range: Range<u64>,
    keeps_frame_pointer: bool,
}

/// Every FDE of `.eh_frame`, sorted by address. FDEs that cannot be read are skipped.
fn function_frames(eh_frame: &Section, text: Option<&Section>) -> Vec<FunctionFrame> {
    let section = EhFrame::new(&eh_frame.bytes, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(eh_frame.svma.start);
    if let Some(text) = text {
        bases = bases.set_text(text.svma.start);
    }
    let mut entries: CfiEntriesIter<'_, _, _> = section.entries(&bases);
    let mut functions = Vec::new();
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        let Some(end) = fde.initial_address().checked_add(fde.len()) else {
            continue;
        };
        let mut keeps_frame_pointer = false;
        let mut instructions = fde.instructions(&section, &bases);
        while let Ok(Some(instruction)) = instructions.next() {
            use gimli::CallFrameInstruction::*;
            if let DefCfa { register, .. }
            | DefCfaSf { register, .. }
            | DefCfaRegister { register } = instruction
            {
                if register == X86_64::RBP {
                    keeps_frame_pointer = true;
                    break;
                }
            }
        }
        functions.push(FunctionFrame {
            range: fde.initial_address()..end,
            keeps_frame_pointer,
        });
    }
    functions.sort_unstable_by_key(|f| (f.range.start, f.range.end));
    functions
}

/// The module's verdict from its functions' CFI. The ELF entry (`_start`) is exempt: it is only ever
/// the outermost frame, which a frame-pointer walk never needs to leave. Consecutive frameless
/// functions (no frame-pointer function between them) form one range.
fn judge_frame_pointers(functions: Vec<FunctionFrame>, entry: u64) -> FramePointers {
    let (mut kept, mut total) = (0u64, 0u64);
    let mut frameless: Vec<Range<u64>> = Vec::new();
    let mut previous_frameless = false;
    for function in functions {
        let len = function.range.end - function.range.start;
        total += len;
        if function.keeps_frame_pointer || function.range.contains(&entry) {
            kept += len;
            previous_frameless = false;
            continue;
        }
        match frameless.last_mut() {
            Some(last) if previous_frameless && function.range.start >= last.start => {
                last.end = last.end.max(function.range.end);
            }
            _ => frameless.push(function.range),
        }
        previous_frameless = true;
    }
    if total == 0 {
        return FramePointers::Kept {
            frameless: Arc::from([]),
        };
    }
    if (kept as f64) < total as f64 * FRAME_POINTER_SHARE || frameless.len() > MAX_MODULE_EXCEPTIONS
    {
        return FramePointers::Frameless;
    }
    FramePointers::Kept {
        frameless: frameless.into(),
    }
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
            frame_pointers: FramePointers::Frameless,
        }
    }

    fn function(range: Range<u64>, keeps_frame_pointer: bool) -> FunctionFrame {
        FunctionFrame {
            range,
            keeps_frame_pointer,
        }
    }

    /// gcc -O2 -fno-omit-frame-pointer: leaves are frameless; neighbours merge, `_start` is exempt.
    #[test]
    fn frameless_functions_of_a_frame_pointer_module() {
        let functions = vec![
            function(0x1000..0x1030, false), // _start (the entry)
            function(0x1040..0x1100, true),
            function(0x1100..0x1120, false),
            function(0x1130..0x1140, false),
            function(0x1140..0x1400, true),
            function(0x1400..0x1410, false),
        ];
        assert_eq!(
            judge_frame_pointers(functions, 0x1000),
            FramePointers::Kept {
                frameless: vec![0x1100..0x1140, 0x1400..0x1410].into()
            }
        );
    }

    #[test]
    fn mostly_frameless_module_is_frameless() {
        let functions = vec![
            function(0x1000..0x1100, true),
            function(0x1100..0x1300, false),
        ];
        assert_eq!(judge_frame_pointers(functions, 0), FramePointers::Frameless);
    }

    #[test]
    fn too_many_exceptions_make_a_module_frameless() {
        let functions: Vec<_> = (0..=MAX_MODULE_EXCEPTIONS as u64)
            .flat_map(|i| {
                let at = 0x1000 + i * 0x200;
                [
                    function(at..at + 0x1f0, true),
                    function(at + 0x1f0..at + 0x200, false),
                ]
            })
            .collect();
        assert_eq!(judge_frame_pointers(functions, 0), FramePointers::Frameless);
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
