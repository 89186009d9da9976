//! What blazesym may read of a module, checked before it is asked to: the module's files are the
//! profiled process's, and blazesym trusts them in four ways.
//!
//! - **Symbol tables.** blazesym's first lookup in a module sorts all of its symbol table and
//!   dynamic symbol table by address, on the recording loop, and keeps an 8-byte index per symbol
//!   for as long as the module's symbolizer lives: a 271 MB program with 8 million symbols, run by
//!   an unprivileged user, held `record` for 0.67 s and took its RSS to 276 MiB (a 1 GiB one:
//!   seconds, and 300 MiB kept). A module whose tables (module and debug file) hold more than
//!   [`MAX_SYMBOL_ENTRIES`] symbols is not handed to blazesym at all: its frames read
//!   `module+0xOFFSET`, and `-v` names it.
//! - **Compressed sections.** blazesym inflates a compressed (`SHF_COMPRESSED`) DWARF section
//!   whole into the heap the first time it reads it, into a vector of the size the section's own
//!   header claims. A profiled process's binary whose `.debug_info` claimed 64 TiB aborted
//!   emberprof ("memory allocation of 70368744177664 bytes failed", the profile lost), and a zlib
//!   stream that honestly inflates a thousandfold would take the heap there a few MiB of the
//!   attacker's disk at a time. So the compressed sections are inflated here first, into nothing,
//!   counting: when they claim or inflate to more than [`MAX_INFLATED_BYTES`] in all, inflate to
//!   another size than they claim, or use a format blazesym cannot read, the DWARF is not read.
//! - **Links to other files.** A file with a `.gnu_debuglink` makes blazesym look for the named
//!   debug file in the directory where the file really is (it resolves our `/proc/self/fd/N`
//!   handle), opening whatever is there: a FIFO an attacker put beside a root-owned binary in
//!   `/tmp` held `record` in `open` for good, past SIGINT. `debug_file` finds debug files under
//!   the rules of `untrusted` instead and hands them over by handle, so a file with a debug link
//!   is read from its symbol tables only (a stripped binary, the usual case, loses nothing). A
//!   `.gnu_debugaltlink` or `.debug_sup` (dwz's shared DWARF) is followed only to an absolute path
//!   under `/usr/lib/debug/`, which only root writes.
//!
//! - **How much work its DWARF gives.** See `dwarf_shape`: blazesym builds many times what it
//!   reads of line programs, abbreviation tables and units.
//!
//! A file whose DWARF is not read is named from its symbol tables (blazesym reads those without
//! inflating or following anything), and `-v` says why when it had DWARF of its own.
//!
//! By hand because no crate checks this for blazesym; `object` reads the headers, `flate2` (the
//! inflater blazesym itself uses) the streams.

use memmap2::Mmap;
use object::{CompressionFormat, Object, ObjectSection};

use super::dwarf_shape;
use crate::compressed::{inflate_exactly, InflateError};
use crate::modules::Module;
use crate::untrusted::StableFile;

/// The most a module's compressed sections (module and debug file together) may inflate to:
/// what blazesym would hold of them in the heap. The largest of Debian's libc6-dbg debug files
/// inflates to 9.6 MiB; a file past this is named from its symbol tables.
pub const MAX_INFLATED_BYTES: u64 = 64 << 20;

/// Inflates every compressed section of the ELF file `data` into nothing, and returns the bytes
/// they inflate to, at most `allowed`; the reason to leave the file's DWARF out otherwise. A file
/// that is not ELF, or whose sections cannot be read, is left to blazesym (which then fails on it
/// as it would have: nothing is inflated).
pub(crate) fn inflated_bytes(data: &[u8], allowed: u64) -> Result<u64, String> {
    let Ok(file) = object::File::parse(data) else {
        return Ok(0);
    };
    let mut total: u64 = 0;
    for section in file.sections() {
        let name = section.name().unwrap_or("?");
        // `.zdebug_*` sections (GNU's older scheme) are compressed too, but blazesym never reads
        // them: only `SHF_COMPRESSED` ones are inflated.
        if name.starts_with(".zdebug") {
            continue;
        }
        let range = section
            .compressed_file_range()
            .map_err(|_| format!("section {name}: bad compression header"))?;
        if range.format == CompressionFormat::None {
            continue;
        }
        if range.format != CompressionFormat::Zlib {
            // blazesym is built with zlib alone: it would fail on the module's DWARF, and name
            // nothing of it, where its symbol tables still name functions.
            return Err(format!(
                "section {name} is compressed in a format other than zlib"
            ));
        }
        if range.uncompressed_size > allowed - total {
            return Err(format!(
                "section {name} claims to inflate to {} bytes, past the {} MiB allowed",
                range.uncompressed_size,
                MAX_INFLATED_BYTES >> 20
            ));
        }
        let stream = range
            .data(data)
            .map_err(|_| format!("section {name}: compressed bytes outside the file"))?
            .data;
        match inflate_exactly(
            range.format,
            stream,
            range.uncompressed_size,
            &mut std::io::sink(),
        ) {
            Ok(()) => total += range.uncompressed_size,
            Err(InflateError::UnknownFormat | InflateError::BadStream) => {
                return Err(format!(
                    "section {name} does not inflate to the {} bytes it claims",
                    range.uncompressed_size
                ))
            }
        }
    }
    Ok(total)
}

/// The most symbols a module's symbol tables (`.symtab` and `.dynsym`, of the module and its debug
/// file) may hold for blazesym to sort them: 16 MiB of index, some 0.15 s of sorting. rustc's
/// `librustc_driver` has 165,000; a Chromium build with full symbols about a million.
pub const MAX_SYMBOL_ENTRIES: u64 = 2 << 20;

/// The symbols in the tables blazesym sorts (`.symtab` and `.dynsym`, found by name as blazesym
/// finds them) of the ELF file `data`.
pub(crate) fn symbol_entries(data: &[u8]) -> u64 {
    let Ok(file) = object::File::parse(data) else {
        return 0;
    };
    [".symtab", ".dynsym"]
        .into_iter()
        .filter_map(|name| file.section_by_name(name))
        .map(|section| section.size() / SYMBOL_ENTRY_BYTES)
        .sum()
}

/// An ELF64 symbol table entry (`Elf64_Sym`).
const SYMBOL_ENTRY_BYTES: u64 = 24;

/// Where the only links blazesym may follow lead: a directory only root writes.
const TRUSTED_LINK_DIR: &str = "/usr/lib/debug/";

/// Why blazesym must not read the DWARF of the ELF file `data` for the links it holds (see the
/// module documentation), if it must not.
pub(crate) fn followed_link(data: &[u8]) -> Option<String> {
    let file = object::File::parse(data).ok()?;
    if file.section_by_name(".gnu_debuglink").is_some() {
        return Some("it has a .gnu_debuglink, which blazesym would look for beside it".into());
    }
    let link_path = |section: &str, skip: usize| {
        let bytes = file.section_by_name(section)?.data().ok()?;
        let path = bytes.get(skip..)?;
        Some(String::from_utf8_lossy(&path[..path.iter().position(|&b| b == 0)?]).into_owned())
    };
    // `.debug_sup`: a 2-byte version and a flag byte before the path.
    for (section, skip) in [(".gnu_debugaltlink", 0), (".debug_sup", 3)] {
        if file.section_by_name(section).is_none() {
            continue;
        }
        let trusted = link_path(section, skip).is_some_and(|path| {
            path.starts_with(TRUSTED_LINK_DIR) && !path.split('/').any(|part| part == "..")
        });
        if !trusted {
            return Some(format!("its {section} leads outside {TRUSTED_LINK_DIR}"));
        }
    }
    None
}

/// What blazesym may read of a module: anything at all, the DWARF of its file and of its debug
/// file, and what their compressed sections inflate to.
#[derive(Clone, Copy, Debug)]
pub(super) struct FileCheck {
    /// Symbols in the tables of the module and its debug file, if more than
    /// [`MAX_SYMBOL_ENTRIES`]: blazesym reads nothing of the module (for `-v`).
    pub too_many_symbols: Option<u64>,
    pub module_file: bool,
    pub debug_file: bool,
    /// Bytes blazesym holds once it has inflated them (only of files whose DWARF it reads).
    pub inflated: u64,
    /// Whether DWARF was left out of a file that had some (for the summary).
    pub refused: bool,
}

/// Checks `module`'s file and debug file (see the module documentation); says why at `-v` when
/// a module is left unnamed, or DWARF of a file that has some is left out.
pub(super) fn check_module(module: &Module, file: &StableFile) -> FileCheck {
    // A file that cannot be mapped is one blazesym cannot read either.
    let maps: Vec<(Mmap, bool)> = [(Some(file), false), (module.debug_file(), true)]
        .into_iter()
        .filter_map(|(file, is_debug_file)| Some((file?.map().ok()?, is_debug_file)))
        .collect();
    let symbols: u64 = maps.iter().map(|(map, _)| symbol_entries(map)).sum();
    if symbols > MAX_SYMBOL_ENTRIES {
        log::info!(
            "{}: not named, its symbol tables hold {symbols} symbols, more than the {} blazesym \
             may sort",
            module.display_name,
            MAX_SYMBOL_ENTRIES
        );
        return FileCheck {
            too_many_symbols: Some(symbols),
            module_file: false,
            debug_file: false,
            inflated: 0,
            refused: false,
        };
    }
    let mut check = FileCheck {
        too_many_symbols: None,
        module_file: false,
        debug_file: false,
        inflated: 0,
        refused: false,
    };
    for (map, is_debug_file) in &maps {
        let verdict = match followed_link(map) {
            Some(reason) => Err(reason),
            None => inflated_bytes(map, MAX_INFLATED_BYTES - check.inflated).and_then(|bytes| {
                // After the inflation check: it reads compressed sections inflated.
                match dwarf_shape::too_much_work(map, MAX_INFLATED_BYTES) {
                    Some(reason) => Err(reason),
                    None => Ok(bytes),
                }
            }),
        };
        match verdict {
            Ok(bytes) => {
                check.inflated += bytes;
                *(if *is_debug_file {
                    &mut check.debug_file
                } else {
                    &mut check.module_file
                }) = true;
            }
            Err(reason) if has_dwarf(map) => {
                check.refused = true;
                log::info!(
                    "{}{}: named from its symbol tables only, its DWARF is not read: {reason}",
                    module.display_name,
                    if *is_debug_file {
                        " (its debug file)"
                    } else {
                        ""
                    }
                );
            }
            Err(_) => {}
        }
    }
    check
}

/// Whether the ELF file `data` has DWARF of its own.
fn has_dwarf(data: &[u8]) -> bool {
    object::File::parse(data).is_ok_and(|file| {
        file.section_by_name(".debug_info")
            .is_some_and(|section| section.size() > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compressed::test_files::{elf_with_compressed_sections, elf_with_sections, zlib};

    const ZLIB: u32 = object::elf::ELFCOMPRESS_ZLIB.0;

    /// An ELF file with `.debug_info` holding `inflated` zero bytes, its header claiming `claimed`.
    fn debug_info(inflated: usize, claimed: u64) -> Vec<u8> {
        elf_with_compressed_sections(&[(".debug_info", ZLIB, claimed, &zlib(&vec![0; inflated]))])
    }

    #[test]
    fn honest_sections_are_counted_at_the_size_they_inflate_to() {
        assert_eq!(
            inflated_bytes(&debug_info(100_000, 100_000), MAX_INFLATED_BYTES),
            Ok(100_000)
        );
    }

    #[test]
    fn a_claim_past_the_budget_is_refused_before_anything_is_inflated() {
        let refused = inflated_bytes(&debug_info(1000, 1 << 46), MAX_INFLATED_BYTES).unwrap_err();
        assert!(
            refused.contains("claims to inflate to 70368744177664 bytes"),
            "{refused}"
        );
    }

    #[test]
    fn a_stream_longer_or_shorter_than_its_claim_is_refused() {
        for claimed in [4096, (1 << 20) + 1] {
            let refused = inflated_bytes(&debug_info(1 << 20, claimed), MAX_INFLATED_BYTES);
            assert!(
                refused.unwrap_err().contains("does not inflate to"),
                "claimed {claimed}"
            );
        }
    }

    #[test]
    fn sections_are_counted_together_against_the_budget() {
        let stream = zlib(&vec![7; 600_000]);
        let elf = elf_with_compressed_sections(&[
            (".debug_info", ZLIB, 600_000, &stream),
            (".debug_line", ZLIB, 600_000, &stream),
        ]);
        assert_eq!(inflated_bytes(&elf, 2_000_000), Ok(1_200_000));
        let refused = inflated_bytes(&elf, 1_000_000).unwrap_err();
        assert!(refused.contains(".debug_line"), "{refused}");
    }

    #[test]
    fn formats_blazesym_cannot_inflate_are_refused() {
        let zstd = object::elf::ELFCOMPRESS_ZSTD.0;
        let elf = elf_with_compressed_sections(&[(".debug_info", zstd, 10, b"not read")]);
        let refused = inflated_bytes(&elf, MAX_INFLATED_BYTES).unwrap_err();
        assert!(refused.contains("other than zlib"), "{refused}");
    }

    #[test]
    fn a_file_that_is_not_elf_is_left_to_blazesym() {
        assert_eq!(
            inflated_bytes(b"not an ELF file", MAX_INFLATED_BYTES),
            Ok(0)
        );
    }

    /// (`.gnu_debugaltlink` contents: the path, a NUL, then the build-id.)
    fn altlink(path: &str) -> Vec<u8> {
        [path.as_bytes(), &[0], &[0xab; 20]].concat()
    }

    #[test]
    fn a_debug_link_is_never_followed_by_blazesym() {
        let elf = elf_with_sections(&[(
            ".gnu_debuglink",
            false,
            b"victim.debug\0\0\0\0\x12\x34\x56\x78".to_vec(),
        )]);
        let reason = followed_link(&elf).expect("refused");
        assert!(reason.contains(".gnu_debuglink"), "{reason}");
    }

    #[test]
    fn shared_dwarf_is_followed_only_under_usr_lib_debug() {
        let allowed = elf_with_sections(&[(
            ".gnu_debugaltlink",
            false,
            altlink("/usr/lib/debug/.dwz/x86_64-linux-gnu/libc6.debug"),
        )]);
        assert_eq!(followed_link(&allowed), None);
        for path in [
            "/tmp/fifo",
            "../../tmp/fifo",
            "/usr/lib/debug/../../../tmp/fifo",
            ".dwz/x.debug",
        ] {
            let elf = elf_with_sections(&[(".gnu_debugaltlink", false, altlink(path))]);
            let reason = followed_link(&elf).unwrap_or_else(|| panic!("{path} followed"));
            assert!(
                reason.contains("leads outside /usr/lib/debug/"),
                "{path}: {reason}"
            );
        }
        let unterminated =
            elf_with_sections(&[(".gnu_debugaltlink", false, b"/usr/lib/debug/x".to_vec())]);
        assert!(followed_link(&unterminated).is_some());
        // `.debug_sup`: version 5, not supplementary, then the path.
        let sup = |path: &str| [&[5, 0, 0][..], path.as_bytes(), &[0, 0]].concat();
        let allowed =
            elf_with_sections(&[(".debug_sup", false, sup("/usr/lib/debug/.dwz/x.debug"))]);
        assert_eq!(followed_link(&allowed), None);
        let refused = elf_with_sections(&[(".debug_sup", false, sup("/home/attacker/fifo"))]);
        assert!(followed_link(&refused).is_some());
    }

    #[test]
    fn a_file_without_links_is_read() {
        assert_eq!(
            followed_link(&elf_with_sections(&[(".debug_info", false, vec![0; 16])])),
            None
        );
        assert_eq!(followed_link(b"not an ELF file"), None);
    }

    #[test]
    fn symbols_are_counted_in_both_tables_blazesym_sorts() {
        let exe = std::fs::read(std::env::current_exe().expect("test binary")).expect("read it");
        let file = object::File::parse(&*exe).expect("an ELF file");
        let table = |symbols: usize| if symbols > 0 { symbols as u64 + 1 } else { 0 };
        // object leaves out each table's null entry.
        let expected = table(file.symbols().count()) + table(file.dynamic_symbols().count());
        assert!(expected > 1000, "the test binary has its symbol table");
        assert_eq!(symbol_entries(&exe), expected);
        let tables = elf_with_sections(&[(".dynsym", false, vec![0; 24 * 1000])]);
        assert!((1000..1010).contains(&symbol_entries(&tables)));
    }
}
