//! What unwinding needs from one module file: its unwind sections (memory-mapped once from the
//! module's [`StableFile`], so a truncated file cannot raise SIGBUS, and shared by every process that
//! maps the module; compressed ones decompressed within [`MAX_DECOMPRESSED_BYTES`]), its loadable
//! segments (to place it at a mapping's address), the index of its CFI, and which of its functions
//! keep frame pointers (for `--unwind auto`).

use std::ops::{Deref, Range};
use std::sync::Arc;

use memmap2::Mmap;
use object::{CompressionFormat, Object, ObjectSection, ObjectSegment};

use super::scan::{CfiProblem, FunctionFrame, ModuleCfi};
use super::UnwindFailure;
use crate::compressed::{inflate_exactly, InflateError};
use crate::untrusted::{byte_range, drop_resident_pages, drop_resident_range, StableFile};

/// Bytes of compressed sections decompressed per module, in all (Go links its `.debug_frame`
/// zlib-compressed; a section's header states its size, which the file controls). The decompressed
/// bytes stay in memory with the module. Go's largest programs have a few MiB of `.debug_frame`.
pub const MAX_DECOMPRESSED_BYTES: u64 = 64 << 20;

/// Frame pointers are a per-function property: a function keeps one when its CFI computes the CFA
/// from RBP somewhere in its body. A module counts as frame-pointer code when at least this share of
/// its FDE-covered bytes keeps one; its other functions are then listed as exceptions. Frame-pointer
/// builds are near 100 % (gcc's frameless leaves and C start-up code are the exceptions), Debian's
/// libc 17 %, a default Rust release build a mix of both (std with frame pointers, the crate without).
const FRAME_POINTER_SHARE: f64 = 0.5;

/// A frame-pointer module with more (merged) frameless ranges than this counts as frameless as a
/// whole: the BPF side holds a bounded number of them per module. Debian's node has 6913.
pub const MAX_MODULE_EXCEPTIONS: usize = 8192;

/// Bytes of a section: part of a memory-mapped module file, or decompressed. Cheap to clone, and
/// what framehop reads sections through.
#[derive(Clone)]
pub struct SectionBytes(Bytes);

#[derive(Clone)]
enum Bytes {
    Mapped { map: Arc<Mmap>, range: Range<usize> },
    Owned(Arc<[u8]>),
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Mapped { map, range } => &map[range.clone()],
            Bytes::Owned(bytes) => bytes,
        }
    }
}

impl SectionBytes {
    /// Drops the resident pages of the section's first `len` bytes, read once and not soon again
    /// (see [`drop_resident_range`]); nothing for bytes not mapped from the file.
    pub(crate) fn drop_pages_before(&self, len: usize) {
        if let Bytes::Mapped { map, range } = &self.0 {
            drop_resident_range(map, range.start..range.start + len.min(range.len()));
        }
    }

    /// Drops all of the section's resident pages (see [`drop_resident_range`]).
    pub(crate) fn drop_pages(&self) {
        self.drop_pages_before(usize::MAX);
    }

    /// Bytes not from a file, for unit tests that generate sections.
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(SectionBytes(Bytes::Owned(Arc::from(bytes))))
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
    /// Which code keeps a frame pointer in RBP. Modules without usable CFI count as keeping one:
    /// DWARF unwinding could not do better for them.
    pub frame_pointers: FramePointers,
    /// The index of the CFI (`.eh_frame`, or `.debug_frame` without it), or why it is not used.
    pub cfi: ModuleCfi,
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
        let mut decompressed = 0u64;
        let mut section = |name: &str| -> Result<Option<Section>, CfiProblem> {
            let Some(section) = elf.section_by_name(name) else {
                return Ok(None);
            };
            let Some(svma) = section
                .address()
                .checked_add(section.size())
                .map(|end| section.address()..end)
            else {
                return Ok(None);
            };
            let bytes = match section.compressed_file_range() {
                Ok(range) if range.format == CompressionFormat::None => {
                    let Some((offset, size)) = section.file_range() else {
                        return Ok(None);
                    };
                    let Some(range) = byte_range(offset, size, map.len()) else {
                        return Ok(None);
                    };
                    SectionBytes(Bytes::Mapped {
                        map: Arc::clone(&map),
                        range,
                    })
                }
                Ok(range) => {
                    let bytes = decompress(&map, name, range, &mut decompressed)?;
                    SectionBytes(Bytes::Owned(bytes))
                }
                // A compression header that does not parse: the section is unusable, not absent.
                Err(_) => return Err(unusable(format!("{name}: bad compression header"))),
            };
            Ok(Some(Section { svma, bytes }))
        };
        let mut problem = None;
        let mut usable = |result: Result<Option<Section>, CfiProblem>| match result {
            Ok(section) => section,
            Err(found) => {
                problem.get_or_insert(found);
                None
            }
        };
        let eh_frame = usable(section(".eh_frame"));
        let eh_frame_hdr = usable(section(".eh_frame_hdr"));
        // framehop and the scan read `.debug_frame` only when there is no `.eh_frame`: not
        // decompressed otherwise.
        let debug_frame = match eh_frame {
            None => usable(section(".debug_frame")),
            Some(_) => None,
        };
        // Only framehop's instruction analysis would read `.text`, which no ELF toolchain compresses:
        // a compressed one is left out rather than inflated.
        let text = elf
            .section_by_name(".text")
            .filter(|s| {
                s.compressed_file_range()
                    .is_ok_and(|r| r.format == CompressionFormat::None)
            })
            .and_then(|s| {
                let (offset, size) = s.file_range()?;
                Some(Section {
                    svma: s.address()..s.address().checked_add(s.size())?,
                    bytes: SectionBytes(Bytes::Mapped {
                        map: Arc::clone(&map),
                        range: byte_range(offset, size, map.len())?,
                    }),
                })
            });
        let mut info = ElfUnwindInfo {
            eh_frame_hdr,
            debug_frame,
            got_svma: elf
                .section_by_name(".got")
                .and_then(|s| Some(s.address()..s.address().checked_add(s.size())?)),
            text,
            eh_frame,
            load_segments: load_segments(&elf),
            frame_pointers: FramePointers::Kept {
                frameless: Arc::from([]),
            },
            cfi: ModuleCfi::default(),
        };
        match problem {
            // The CFI section is there but cannot be used: nothing of it is handed to framehop,
            // which would otherwise apply the frame-pointer rule as if there were no CFI.
            Some(problem) => {
                info.eh_frame = None;
                info.eh_frame_hdr = None;
                info.debug_frame = None;
                info.cfi = ModuleCfi::unusable(problem);
            }
            None => info.index_cfi(elf.entry()),
        }
        // The scan read all of the CFI, once; from now on unwinding reads a few entries of it per
        // sample (and a little `.text`). Without this the whole `.eh_frame` stayed in emberprof's
        // RSS for as long as the module lives (librustc_driver's: 6 MiB, LLVM's: 7.5 MiB).
        drop(elf);
        drop_resident_pages(&map);
        Some(info)
    }

    /// Drops the pages unwinding left resident. Each unwind reads a few CFI entries and a little
    /// `.text`, but over a build those add up to most of a large library's sections: clang-14
    /// left 5 MiB of `libLLVM-14.so.1` and 4 MiB of `libclang-cpp.so.14` in emberprof's RSS for as
    /// long as they were mapped. Dropped now and then, only what recent samples read is resident.
    pub(crate) fn drop_resident_pages(&self) {
        let sections = [
            &self.text,
            &self.eh_frame,
            &self.eh_frame_hdr,
            &self.debug_frame,
        ];
        for section in sections.into_iter().flatten() {
            section.bytes.drop_pages();
        }
    }

    /// The base addresses pointer encodings in the module's CFI are relative to.
    pub(crate) fn bases(&self) -> gimli::BaseAddresses {
        let mut bases = gimli::BaseAddresses::default();
        if let Some(eh_frame) = &self.eh_frame {
            bases = bases.set_eh_frame(eh_frame.svma.start);
        }
        if let Some(hdr) = &self.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr.svma.start);
        }
        if let Some(text) = &self.text {
            bases = bases.set_text(text.svma.start);
        }
        if let Some(got) = &self.got_svma {
            bases = bases.set_got(got.start);
        }
        bases
    }

    /// Scans the CFI (within its caps) and judges the frame pointers from it. CFI over the caps is
    /// dropped like an unusable section.
    pub(crate) fn index_cfi(&mut self, entry: u64) {
        // The section scanned is read once, front to back: its pages are dropped as the scan goes
        // (what is left, after it).
        let scanned = self.eh_frame.as_ref().or(self.debug_frame.as_ref());
        let (cfi, functions) = ModuleCfi::scan(
            self.eh_frame.as_ref().map(|s| &*s.bytes),
            self.debug_frame.as_ref().map(|s| &*s.bytes),
            &self.bases(),
            &mut |offset| {
                if let Some(section) = scanned {
                    section.bytes.drop_pages_before(offset);
                }
            },
        );
        if cfi.problem().is_some() {
            self.eh_frame = None;
            self.eh_frame_hdr = None;
            self.debug_frame = None;
        }
        // Without usable CFI the module counts as keeping frame pointers (see `frame_pointers`).
        let uncovered = match (&self.text, cfi.problem()) {
            (Some(text), None) => uncovered_code(text.svma.clone(), &functions, entry),
            _ => Vec::new(),
        };
        self.frame_pointers = judge_frame_pointers(functions, entry, uncovered);
        self.cfi = cfi;
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

fn unusable(detail: String) -> CfiProblem {
    CfiProblem {
        reason: UnwindFailure::UnusableCfiSection,
        detail,
    }
}

/// The bytes of a compressed section, counted against the module's [`MAX_DECOMPRESSED_BYTES`]
/// (`decompressed` so far). The size in the header is checked before anything is allocated, and the
/// stream is read no further than that size: a header that lies cannot make it grow.
fn decompress(
    file: &[u8],
    name: &str,
    range: object::CompressedFileRange,
    decompressed: &mut u64,
) -> Result<Arc<[u8]>, CfiProblem> {
    let size = range.uncompressed_size;
    let total = decompressed.saturating_add(size);
    if total > MAX_DECOMPRESSED_BYTES {
        return Err(unusable(format!(
            "{name}: {size} bytes once decompressed, over the cap of {MAX_DECOMPRESSED_BYTES} per module"
        )));
    }
    let data = range
        .data(file)
        .map_err(|_| unusable(format!("{name}: compressed bytes outside the file")))?
        .data;
    let mut bytes = Vec::with_capacity(size as usize);
    match inflate_exactly(range.format, data, size, &mut bytes) {
        Ok(()) => {}
        Err(InflateError::UnknownFormat) => {
            return Err(unusable(format!("{name}: unknown compression format")))
        }
        Err(InflateError::BadStream) => {
            return Err(unusable(format!(
                "{name}: the compressed stream is corrupt or not of the size its header states"
            )))
        }
    }
    *decompressed = total;
    Ok(Arc::from(bytes))
}

/// Least size of a stretch of `.text` without CFI that counts as code of its own (see
/// [`uncovered_code`]): smaller gaps between FDEs are alignment padding, or the few bytes of crt
/// helpers, which no sample needs.
const MIN_UNCOVERED: u64 = 256;

/// The stretches of `text` (at least [`MIN_UNCOVERED`] bytes, not the entry's) that no function's
/// CFI covers, in a module whose CFI covers code elsewhere: hand-written or generated code with no
/// unwind information (V8's builtins embedded in node's `.text`). Nothing says whether such code
/// keeps a frame pointer, and walking frame pointers through it loses the caller of a frameless
/// leaf, so `--unwind auto` must copy stacks there rather than trust the walk.
fn uncovered_code(text: Range<u64>, functions: &[FunctionFrame], entry: u64) -> Vec<Range<u64>> {
    if functions.is_empty() {
        return Vec::new();
    }
    let mut covered: Vec<Range<u64>> = functions.iter().map(|f| f.range.clone()).collect();
    covered.sort_unstable_by_key(|range| range.start);
    let mut uncovered = Vec::new();
    let mut at = text.start;
    let mut push = |gap: Range<u64>| {
        if gap.end.saturating_sub(gap.start) >= MIN_UNCOVERED && !gap.contains(&entry) {
            uncovered.push(gap);
        }
    };
    for range in covered {
        if range.start > at {
            push(at..range.start.min(text.end));
        }
        at = at.max(range.end);
        if at >= text.end {
            break;
        }
    }
    if at < text.end {
        push(at..text.end);
    }
    uncovered
}

/// The module's verdict from its functions' CFI. The ELF entry (`_start`) is exempt: it is only ever
/// the outermost frame, which a frame-pointer walk never needs to leave. Consecutive frameless
/// functions (no frame-pointer function between them) form one range. `uncovered` code (see
/// [`uncovered_code`]) is treated as frameless, but is no evidence either way in the verdict's share.
fn judge_frame_pointers(
    functions: Vec<FunctionFrame>,
    entry: u64,
    uncovered: Vec<Range<u64>>,
) -> FramePointers {
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
    if !uncovered.is_empty() {
        frameless.extend(uncovered);
        frameless.sort_unstable_by_key(|range| range.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(frameless.len());
        for range in frameless {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        frameless = merged;
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
    use crate::compressed::test_files::{elf_with_compressed_sections, zlib};
    use crate::untrusted::StableFile;

    fn info(load_segments: Vec<LoadSegment>) -> ElfUnwindInfo {
        ElfUnwindInfo {
            text: None,
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            got_svma: None,
            load_segments,
            frame_pointers: FramePointers::Frameless,
            cfi: ModuleCfi::default(),
        }
    }

    fn function(range: Range<u64>, keeps_frame_pointer: bool) -> FunctionFrame {
        FunctionFrame {
            range,
            keeps_frame_pointer,
        }
    }

    /// Where the generated `.debug_frame`'s one function lies.
    const GO_FUNCTION: u64 = 0x40_1000;

    /// A `.debug_frame` as Go writes it: a CIE (CFA = rsp + 8, return address at CFA − 8) and one
    /// FDE whose CFA moves to rsp + 0x58 (Go's frames are on RSP, never on RBP).
    fn debug_frame() -> Vec<u8> {
        use gimli::write::{
            Address, CallFrameInstruction as Cfi, CommonInformationEntry, DebugFrame, EndianVec,
            FrameDescriptionEntry, FrameTable,
        };
        use gimli::X86_64;
        let encoding = gimli::Encoding {
            format: gimli::Format::Dwarf32,
            version: 3,
            address_size: 8,
        };
        let mut cie = CommonInformationEntry::new(encoding, 1, -8, X86_64::RA);
        cie.add_instruction(Cfi::Cfa(X86_64::RSP, 8));
        cie.add_instruction(Cfi::Offset(X86_64::RA, -8));
        let mut table = FrameTable::default();
        let cie = table.add_cie(cie);
        let mut fde = FrameDescriptionEntry::new(Address::Constant(GO_FUNCTION), 0x200);
        fde.add_instruction(8, Cfi::CfaOffset(0x58));
        table.add_fde(cie, fde);
        let mut section = DebugFrame(EndianVec::new(gimli::LittleEndian));
        table
            .write_debug_frame(&mut section)
            .expect("write .debug_frame");
        section.0.into_vec()
    }

    /// An ELF file with one `.debug_frame` section, `SHF_COMPRESSED` with `ch_type` and
    /// `ch_size` as given.
    fn elf_with_compressed_debug_frame(ch_type: u32, ch_size: u64, stream: &[u8]) -> StableFile {
        let bytes = elf_with_compressed_sections(&[(".debug_frame", ch_type, ch_size, stream)]);
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, &bytes).expect("write temp file");
        StableFile::own(file)
    }

    /// Issue 18, item 3: Go links `.debug_frame` zlib-compressed. It is decompressed, indexed, and
    /// judged: Go's CFA is never on RBP, so `--unwind auto` sees the code as frameless (Go's
    /// `crypto/sha256.block` uses RBP as a general register). Before, the compressed bytes were
    /// handed on raw, nothing was indexed, and framehop silently used frame pointers.
    #[test]
    fn zlib_compressed_debug_frame_is_used() {
        let original = debug_frame();
        let file = elf_with_compressed_debug_frame(
            object::elf::ELFCOMPRESS_ZLIB.0,
            original.len() as u64,
            &zlib(&original),
        );
        let info = ElfUnwindInfo::read(&file).expect("an ELF file");
        assert_eq!(info.cfi.problem(), None);
        assert_eq!(
            info.debug_frame.as_ref().map(|s| s.bytes.to_vec()),
            Some(original)
        );
        assert_eq!(
            info.cfi.kind(),
            Some(super::super::scan::CfiKind::DebugFrame)
        );
        assert!(info.cfi.covers(GO_FUNCTION + 0x100));
        assert_eq!(info.frame_pointers, FramePointers::Frameless);
    }

    /// The pages the CFI scan read are dropped from the RSS once it is done, and the section reads
    /// back the same bytes after (they fault in again from the file).
    #[test]
    fn scanned_cfi_leaves_no_pages_resident() {
        let path = emberprof_examples::path("burn");
        let file = StableFile::own(std::fs::File::open(&path).expect("example binary"));
        let info = ElfUnwindInfo::read(&file).expect("an ELF file");
        assert_eq!(info.cfi.problem(), None);
        let eh_frame = info.eh_frame.as_ref().expect("an .eh_frame");
        let bytes: &[u8] = &eh_frame.bytes;
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        assert_eq!(
            crate::untrusted::resident_pages(range.clone()).expect("own pagemap"),
            0,
            "pages of the scanned .eh_frame ({} bytes) still resident",
            bytes.len()
        );
        let Bytes::Mapped { range: in_file, .. } = &eh_frame.bytes.0 else {
            panic!(".eh_frame not mapped");
        };
        let original = std::fs::read(&path).expect("read example");
        assert!(bytes == &original[in_file.clone()]);
        assert!(crate::untrusted::resident_pages(range).expect("own pagemap") > 0);
    }

    /// What unwinding reads after the scan (the CFI sections and `.text`) is dropped again by
    /// [`ElfUnwindInfo::drop_resident_pages`], which the recorder calls at every checkpoint.
    #[test]
    fn pages_unwinding_read_are_dropped() {
        let file = StableFile::own(std::fs::File::open("/proc/self/exe").expect("own executable"));
        let info = ElfUnwindInfo::read(&file).expect("an ELF file");
        let sections: Vec<&[u8]> = [&info.text, &info.eh_frame, &info.eh_frame_hdr]
            .into_iter()
            .map(|section| {
                &*section
                    .as_ref()
                    .expect("text, .eh_frame and its header")
                    .bytes
            })
            .collect();
        let resident = || -> usize {
            sections
                .iter()
                .map(|bytes| {
                    let start = bytes.as_ptr() as usize;
                    crate::untrusted::resident_pages(start..start + bytes.len())
                        .expect("own pagemap")
                })
                .sum()
        };
        // As unwinding would, over time: a byte of every page.
        let read: usize = sections
            .iter()
            .map(|bytes| {
                bytes
                    .iter()
                    .step_by(4096)
                    .map(|&b| usize::from(b))
                    .sum::<usize>()
            })
            .sum();
        std::hint::black_box(read);
        let before = resident();
        assert!(
            before > 64,
            "{before} pages resident after reading them all"
        );
        info.drop_resident_pages();
        let after = resident();
        assert_eq!(after, 0, "{after} of {before} pages still resident");
    }

    /// The scan drops the pages it has read as it goes: however large the section, about a step
    /// of it is resident at a time (the whole of it was, until the scan ended).
    #[test]
    fn the_scan_drops_pages_as_it_goes() {
        use super::super::scan::SCANNED_STEP;
        let file = StableFile::own(std::fs::File::open("/proc/self/exe").expect("own executable"));
        let info = ElfUnwindInfo::read(&file).expect("an ELF file");
        let eh_frame = info.eh_frame.as_ref().expect("an .eh_frame");
        let bytes: &[u8] = &eh_frame.bytes;
        assert!(bytes.len() > 5 * SCANNED_STEP, "{} bytes", bytes.len());
        let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
        let mut most_resident = 0;
        let mut steps = 0;
        let (cfi, _) = ModuleCfi::scan(Some(bytes), None, &info.bases(), &mut |offset| {
            let resident = crate::untrusted::resident_pages(range.clone()).expect("own pagemap");
            most_resident = most_resident.max(resident * 4096);
            eh_frame.bytes.drop_pages_before(offset);
            steps += 1;
        });
        assert_eq!(cfi.problem(), None);
        assert!(steps >= 4, "{steps} steps");
        assert!(
            most_resident <= 4 * SCANNED_STEP,
            "{most_resident} bytes of {} resident during the scan",
            bytes.len()
        );
    }

    /// zstd (`gcc -gz=zstd`), through ruzstd.
    #[test]
    fn zstd_compressed_debug_frame_is_used() {
        let original = debug_frame();
        let stream = ruzstd::encoding::compress_to_vec(
            &original[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let file = elf_with_compressed_debug_frame(
            object::elf::ELFCOMPRESS_ZSTD.0,
            original.len() as u64,
            &stream,
        );
        let info = ElfUnwindInfo::read(&file).expect("an ELF file");
        assert_eq!(info.cfi.problem(), None);
        assert!(info.cfi.covers(GO_FUNCTION + 0x100));
    }

    /// Hostile headers: a size over the cap (nothing is allocated for it), a size the stream does not
    /// have, a corrupt stream, an unknown format. Each is reported with the reason unwinds will
    /// end with, and nothing of the section is handed on.
    #[test]
    fn unusable_compressed_sections_are_reported() {
        let original = debug_frame();
        let stream = zlib(&original);
        let size = original.len() as u64;
        let mut corrupt = stream.clone();
        corrupt[4] ^= 0xff;
        for (case, ch_type, ch_size, stream) in [
            (
                "over the cap",
                object::elf::ELFCOMPRESS_ZLIB.0,
                1 << 40,
                &stream,
            ),
            (
                "longer than stated",
                object::elf::ELFCOMPRESS_ZLIB.0,
                size - 1,
                &stream,
            ),
            (
                "shorter than stated",
                object::elf::ELFCOMPRESS_ZLIB.0,
                size + 1,
                &stream,
            ),
            ("corrupt", object::elf::ELFCOMPRESS_ZLIB.0, size, &corrupt),
            ("unknown format", 77, size, &stream),
        ] {
            let file = elf_with_compressed_debug_frame(ch_type, ch_size, stream);
            let info = ElfUnwindInfo::read(&file).expect("an ELF file");
            let problem = info.cfi.problem().unwrap_or_else(|| panic!("{case}: used"));
            assert_eq!(problem.reason, UnwindFailure::UnusableCfiSection, "{case}");
            assert!(info.debug_frame.is_none(), "{case}: handed on");
            assert!(!info.cfi.covers(GO_FUNCTION + 0x100), "{case}");
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
            judge_frame_pointers(functions, 0x1000, Vec::new()),
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
        assert_eq!(
            judge_frame_pointers(functions, 0, Vec::new()),
            FramePointers::Frameless
        );
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
        assert_eq!(
            judge_frame_pointers(functions, 0, Vec::new()),
            FramePointers::Frameless
        );
    }

    /// Stretches of `.text` without CFI (at least `MIN_UNCOVERED` bytes, not the entry's) count as
    /// frameless, merged with frameless neighbours, without swaying the module's verdict.
    #[test]
    fn code_without_cfi_in_a_module_with_cfi_is_frameless() {
        let function = |range: Range<u64>, keeps_frame_pointer| FunctionFrame {
            range,
            keeps_frame_pointer,
        };
        let functions = vec![
            function(0x1000..0x1100, true),
            // Padding, then a stretch without CFI (builtins), then one frameless function after it.
            function(0x1110..0x1200, true),
            function(0x1600..0x1640, false),
            function(0x1640..0x8000, true),
        ];
        let uncovered = uncovered_code(0x1000..0x9000, &functions, 0x8800);
        assert_eq!(uncovered, vec![0x1200..0x1600]);
        let frameless: Arc<[Range<u64>]> = std::iter::once(0x1200..0x1640).collect();
        assert_eq!(
            judge_frame_pointers(functions, 0x8800, uncovered),
            FramePointers::Kept { frameless }
        );
        assert!(uncovered_code(0x1000..0x9000, &[], 0).is_empty());
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
