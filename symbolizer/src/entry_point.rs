//! The entry point of an executable, to name `_start` in stripped executables (Debian's are), whose
//! symbol tables are gone: the ELF header's entry point is where `_start` is, and without a name
//! there the outermost frame of every complete stack would read `sort+0x6580` and count as truncated
//! (see `stack_root`).

use std::ops::Range;

use object::read::elf::{FileHeader, ProgramHeader};
use object::Object;

use crate::untrusted::StableFile;
use crate::unwind::elf_info;

/// Bytes of code from the entry point taken to be the entry function. An unnamed address there is
/// the return address of `_start`'s call into the C library's start-up: glibc's x86-64 `_start` is
/// 34 bytes since 2.34 (47 before, when it also passed `__libc_csu_init`), musl's about 25; the
/// next function starts 16-byte aligned, at 48 bytes at the earliest.
const ENTRY_FUNCTION_BYTES: u64 = 48;

/// File-offset range of the entry function of an executable (a file with a program interpreter, or
/// a non-PIE executable); `None` for libraries and what cannot be read.
pub(crate) fn entry_function(file: &StableFile) -> Option<Range<u64>> {
    // A stable file: truncation by its owner cannot fault the map.
    let map = file.map().ok()?;
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&map[..]).ok()?;
    let endian = elf.endian();
    let header = elf.elf_header();
    let executable = header.e_type(endian) == object::elf::ET_EXEC
        || elf
            .elf_program_headers()
            .iter()
            .any(|segment| segment.p_type(endian) == object::elf::PT_INTERP);
    let entry = elf.entry();
    if !executable || entry == 0 {
        return None;
    }
    let file = object::File::Elf64(elf);
    let segment = elf_info::load_segments(&file)
        .into_iter()
        .find(|s| s.executable && entry >= s.vaddr && entry - s.vaddr < s.file_size)?;
    let start = segment.file_offset.checked_add(entry - segment.vaddr)?;
    let end = start
        .checked_add(ENTRY_FUNCTION_BYTES)?
        .min(segment.file_offset.checked_add(segment.file_size)?);
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary's entry point is its `_start`; a shared library has none.
    #[test]
    fn finds_the_entry_function() {
        let stable = |file: std::fs::File| StableFile::new(file).expect("stable file");
        let exe = stable(std::fs::File::open("/proc/self/exe").expect("own executable"));
        let range = entry_function(&exe).expect("an executable has an entry point");
        assert_eq!(range.end - range.start, ENTRY_FUNCTION_BYTES);
        let libc = [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
        ]
        .iter()
        .find_map(|path| std::fs::File::open(path).ok())
        .map(stable)
        .expect("libm");
        assert_eq!(entry_function(&libc), None);
    }
}
