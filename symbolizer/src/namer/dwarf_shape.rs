//! How much work a file's DWARF may give blazesym, checked before blazesym reads any of it.
//!
//! blazesym turns what it reads into structures many times the size of the bytes they come from,
//! and the file is the profiled process's:
//! - **Line programs.** The first lookup in a compilation unit runs its whole line program and
//!   keeps every row (24 bytes, up to 48 while its vector grows), and a row can take one byte: a
//!   program of 20 MB, run by an unprivileged user, took `record` to 510 MiB of RSS and held its
//!   recording loop for 0.28 s; a 64 MiB one that compresses to a few kilobytes would have taken
//!   1.5 GiB.
//! - **Abbreviation tables.** Each unit's table is parsed anew for the unit (blazesym keeps no
//!   cache of shared ones), at load for every unit without an address range table: one table
//!   shared by a hundred thousand units is parsed a hundred thousand times.
//! - **Units and entries.** blazesym keeps a record of every unit, made at load, and of every
//!   function of a unit at its first lookup there, with every range of the function's range list
//!   (100,000 functions naming one list of 4,000 ranges asked for 9.6 GB: abort); it walks
//!   inlined functions by recursion, a stack frame per level: 200,000 nested ones in 3.6 MB
//!   overflowed `record`'s stack (abort). So every unit's entries are walked here, without
//!   building them, their range lists counted: 100 ms for this workspace's 50 MB debug build,
//!   once.
//!
//! A file past any of the limits below is named from its symbol tables only (see `file_check`),
//! and `-v` says which limit. Each is seven times or more what the largest file we measured needs:
//! this workspace's debug build (2,868 units, the largest 0.98 MB and 87,727 entries with a 295 KB
//! line program, 0.86 MB of abbreviations in all), CPython 3.13's `libpython` (175 units, 0.6 MB,
//! 40,415 entries, 0.3 MB), a Go program built by golang-go, and Debian's libc6-dbg. What blazesym
//! holds of the units it does parse counts against `--max-parsed-size` (see `parsed_budget`).
//!
//! By hand because no crate bounds this for blazesym; gimli (the DWARF reader blazesym itself
//! uses) reads the unit headers and walks the entries.

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, Reader, RunTimeEndian, Section, SectionId};
use object::{CompressionFormat, Object, ObjectSection};

use crate::compressed::inflate_exactly;

/// The most compilation units a file may have: blazesym keeps a record of each.
pub const MAX_UNITS: u64 = 1 << 17;
/// The largest a unit's entries may be: blazesym parses them whole at its first lookup.
pub const MAX_UNIT_BYTES: u64 = 16 << 20;
/// The largest a unit's line program may be: every row of it is kept (see the module
/// documentation), some 25 bytes of heap per byte of program at worst.
pub const MAX_LINE_PROGRAM_BYTES: u64 = 2 << 20;
/// The deepest entries may nest in a unit: blazesym walks inlined functions by recursion, a frame
/// of its stack per level (a chain of 200,000 nested `DW_TAG_inlined_subroutine` entries, 3.6 MB of
/// `.debug_info`, overflowed `record`'s stack: "fatal runtime error: stack overflow, aborting").
pub const MAX_ENTRY_DEPTH: isize = 512;
/// The most entries a unit may have: blazesym builds a record of every function and inlined
/// function of a unit at its first lookup there, some 50 bytes from as little as one byte.
pub const MAX_UNIT_ENTRIES: u64 = 1 << 20;
/// The most address ranges the range lists of a unit's entries may hold, a list counted for each
/// entry that refers to it: blazesym expands them for each (16-32 bytes a range, from as little as
/// 3 bytes of list, or none for an entry that shares it).
pub const MAX_UNIT_RANGES: u64 = 1 << 20;
/// The same over all units of a file: what the check itself reads at most.
pub const MAX_FILE_RANGES: u64 = 16 << 20;
/// The largest one abbreviation table may be.
pub const MAX_ABBREVIATION_TABLE_BYTES: u64 = 1 << 20;
/// The most abbreviation bytes blazesym may parse over all units, a shared table counted for each
/// unit that uses it (it is parsed for each).
pub const MAX_ABBREVIATION_BYTES: u64 = 32 << 20;

/// Why blazesym must not read the DWARF of the ELF file `data` (see the module documentation), if
/// it must not. Compressed sections are read inflated, none past `max_inflated` bytes (`file_check`
/// has bounded what they inflate to in all); a file that is not ELF or has no `.debug_info` passes.
pub(crate) fn too_much_work(data: &[u8], max_inflated: u64) -> Option<String> {
    let file = object::File::parse(data).ok()?;
    file.section_by_name(".debug_info")?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    // Only what the check reads: inflating the rest (strings, locations) would be wasted.
    let sections = gimli::DwarfSections::load(|id: SectionId| {
        Ok::<_, ()>(match id {
            SectionId::DebugInfo
            | SectionId::DebugAbbrev
            | SectionId::DebugLine
            | SectionId::DebugRanges
            | SectionId::DebugRngLists => section_bytes(&file, data, id.name(), max_inflated),
            _ => Cow::Borrowed(&[][..]),
        })
    })
    .ok()?;
    let dwarf = sections.borrow(|section| EndianSlice::new(section, endian));
    check_units(&dwarf).err()
}

/// The bytes of the section `name` of `file` (whose bytes are `data`), inflated if compressed;
/// none if it is missing, does not inflate, or would inflate past `max_inflated`.
fn section_bytes<'data>(
    file: &object::File<'data>,
    data: &'data [u8],
    name: &str,
    max_inflated: u64,
) -> Cow<'data, [u8]> {
    let empty = Cow::Borrowed(&[][..]);
    let Some(section) = file.section_by_name(name) else {
        return empty;
    };
    let Ok(range) = section.compressed_file_range() else {
        return empty;
    };
    if range.format == CompressionFormat::None {
        return section.data().map_or(empty, Cow::Borrowed);
    }
    if range.uncompressed_size > max_inflated {
        return empty;
    }
    let Ok(stream) = range.data(data) else {
        return empty;
    };
    let mut inflated = Vec::with_capacity(range.uncompressed_size as usize + 1);
    match inflate_exactly(
        range.format,
        stream.data,
        range.uncompressed_size,
        &mut inflated,
    ) {
        Ok(()) => Cow::Owned(inflated),
        Err(_) => empty,
    }
}

fn check_units(dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>) -> Result<(), String> {
    let mut units: u64 = 0;
    let mut abbreviation_bytes: u64 = 0;
    let mut most_entries: u64 = 0;
    let mut ranges = RangeCount::default();
    // By table offset: a table shared by many units is measured once, counted for each.
    let mut tables: HashMap<u64, u64> = HashMap::new();
    let mut headers = dwarf.units();
    // A malformed header ends the walk where blazesym's own ends.
    while let Ok(Some(header)) = headers.next() {
        units += 1;
        if units > MAX_UNITS {
            return Err(format!("it has more than {MAX_UNITS} compilation units"));
        }
        let size = header.length_including_self() as u64;
        if size > MAX_UNIT_BYTES {
            return Err(format!(
                "a compilation unit of {size} bytes, past the {} MiB allowed",
                MAX_UNIT_BYTES >> 20
            ));
        }
        let table_offset = header.debug_abbrev_offset().0 as u64;
        let table = match tables.get(&table_offset) {
            Some(&bytes) => bytes,
            None => {
                let bytes = abbreviation_table_bytes(&dwarf.debug_abbrev, table_offset)?;
                tables.insert(table_offset, bytes);
                bytes
            }
        };
        abbreviation_bytes += table;
        if abbreviation_bytes > MAX_ABBREVIATION_BYTES {
            return Err(format!(
                "its units' abbreviation tables take more than {} MiB to parse",
                MAX_ABBREVIATION_BYTES >> 20
            ));
        }
        // Parsed once for the unit: its line program's offset, the unit and the walk need them.
        let Ok(abbreviations) = dwarf.abbreviations(&header) else {
            continue;
        };
        let root = root_attributes(&header, &abbreviations);
        if let Some(program) = root.line_program {
            let size = line_program_bytes(&dwarf.debug_line, program);
            if size > MAX_LINE_PROGRAM_BYTES {
                return Err(format!(
                    "a line program of {size} bytes, past the {} MiB allowed",
                    MAX_LINE_PROGRAM_BYTES >> 20
                ));
            }
        }
        let walked = walk_entries(
            dwarf,
            &header,
            &abbreviations,
            root.range_lists,
            &mut ranges,
        )?;
        most_entries = most_entries.max(walked);
    }
    log::trace!(
        "{units} units, at most {most_entries} entries in one, {} ranges",
        ranges.file
    );
    Ok(())
}

/// Address ranges the range lists of a file's entries hold, counted once for each entry that
/// refers to one: blazesym expands an entry's list for each entry (a function, an inlined
/// function, a unit at load), and many entries can share one list.
#[derive(Default)]
struct RangeCount {
    /// In the unit being walked.
    unit: u64,
    /// In the file.
    file: u64,
}

/// The bytes of the abbreviation table at `offset`, read without building it; past
/// [`MAX_ABBREVIATION_TABLE_BYTES`], why not. A table cut short ends where it is cut (gimli fails
/// there as well).
fn abbreviation_table_bytes(
    debug_abbrev: &gimli::DebugAbbrev<EndianSlice<'_, RunTimeEndian>>,
    offset: u64,
) -> Result<u64, String> {
    let section: EndianSlice<'_, RunTimeEndian> = *debug_abbrev.reader();
    let Some(table) = section.slice().get(offset as usize..) else {
        return Ok(0);
    };
    // One byte more than allowed is read at most: running out of it means the table is longer.
    let limit = table.len().min(MAX_ABBREVIATION_TABLE_BYTES as usize + 1);
    let cut = limit < table.len();
    let mut input = EndianSlice::new(&table[..limit], section.endian());
    loop {
        match abbreviation(&mut input) {
            Ok(true) => {}
            Ok(false) => return Ok((limit - input.len()) as u64),
            Err(_) if cut && input.is_empty() => {
                return Err(format!(
                    "an abbreviation table past the {} KiB allowed",
                    MAX_ABBREVIATION_TABLE_BYTES >> 10
                ))
            }
            Err(_) => return Ok((limit - input.len()) as u64),
        }
    }
}

/// Reads one abbreviation declaration: code, tag, children flag, then (name, form) pairs ended by
/// (0, 0), an implicit constant after its form. `false` at the table's end (code 0).
fn abbreviation(input: &mut EndianSlice<'_, RunTimeEndian>) -> gimli::Result<bool> {
    if input.read_uleb128()? == 0 {
        return Ok(false);
    }
    input.read_uleb128()?;
    input.read_u8()?;
    loop {
        let name = input.read_uleb128()?;
        let form = input.read_uleb128()?;
        if form == u64::from(gimli::DW_FORM_implicit_const.0) {
            input.read_sleb128()?;
        }
        if name == 0 && form == 0 {
            return Ok(true);
        }
    }
}

/// Walks the unit's entries without building them: how many there are; why not, past
/// [`MAX_ENTRY_DEPTH`], [`MAX_UNIT_ENTRIES`] or the ranges allowed. A malformed entry ends the walk
/// where blazesym's own ends.
fn walk_entries(
    dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>,
    header: &gimli::UnitHeader<EndianSlice<'_, RunTimeEndian>>,
    abbreviations: &gimli::Abbreviations,
    range_lists: gimli::DebugRngListsBase,
    ranges: &mut RangeCount,
) -> Result<u64, String> {
    let Ok(mut entries) = header.entries_raw(abbreviations, None) else {
        return Ok(0);
    };
    ranges.unit = 0;
    let mut count: u64 = 0;
    while !entries.is_empty() {
        if entries.next_depth() > MAX_ENTRY_DEPTH {
            return Err(format!(
                "its entries nest deeper than the {MAX_ENTRY_DEPTH} levels allowed"
            ));
        }
        let abbreviation = match entries.read_abbreviation() {
            Ok(Some(abbreviation)) => abbreviation,
            Ok(None) => continue,
            Err(_) => break,
        };
        count += 1;
        if count > MAX_UNIT_ENTRIES {
            return Err(format!(
                "a compilation unit of more than {MAX_UNIT_ENTRIES} entries"
            ));
        }
        let specs = abbreviation.attributes();
        if !specs.iter().any(|spec| spec.name() == gimli::DW_AT_ranges) {
            if entries.skip_attributes(specs).is_err() {
                return Ok(count);
            }
            continue;
        }
        for spec in specs {
            if spec.name() != gimli::DW_AT_ranges {
                if entries.skip_attributes(std::slice::from_ref(spec)).is_err() {
                    return Ok(count);
                }
                continue;
            }
            let Ok(attribute) = entries.read_attribute(*spec) else {
                return Ok(count);
            };
            let offset = match attribute.value() {
                AttributeValue::RangeListsRef(offset) => Some(gimli::RangeListsOffset(offset.0)),
                AttributeValue::DebugRngListsIndex(index) => dwarf
                    .ranges
                    .get_offset(header.encoding(), range_lists, index)
                    .ok(),
                _ => None,
            };
            if let Some(offset) = offset {
                count_ranges(dwarf, header.encoding(), offset, ranges)?;
            }
        }
    }
    Ok(count)
}

/// Adds the entries of the range list at `offset` to `ranges`, reading no further than the limits.
fn count_ranges(
    dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>,
    encoding: gimli::Encoding,
    offset: gimli::RangeListsOffset,
    ranges: &mut RangeCount,
) -> Result<(), String> {
    let Ok(mut list) = dwarf.ranges.raw_ranges(offset, encoding) else {
        return Ok(());
    };
    while let Ok(Some(_)) = list.next() {
        ranges.unit += 1;
        ranges.file += 1;
        if ranges.unit > MAX_UNIT_RANGES {
            return Err(format!(
                "a compilation unit whose entries' range lists hold more than {MAX_UNIT_RANGES} \
                 ranges"
            ));
        }
        if ranges.file > MAX_FILE_RANGES {
            return Err(format!(
                "its entries' range lists hold more than {MAX_FILE_RANGES} ranges"
            ));
        }
    }
    Ok(())
}

/// What a unit's first entry says of where its other data is.
struct RootAttributes {
    /// `DW_AT_stmt_list`: its line program's offset.
    line_program: Option<u64>,
    /// `DW_AT_rnglists_base`: what its range list indices count from.
    range_lists: gimli::DebugRngListsBase,
}

/// Reads the unit's first entry's attributes (gimli builds its `Unit` from them too, and blazesym
/// with it).
fn root_attributes(
    header: &gimli::UnitHeader<EndianSlice<'_, RunTimeEndian>>,
    abbreviations: &gimli::Abbreviations,
) -> RootAttributes {
    let mut root = RootAttributes {
        line_program: None,
        range_lists: gimli::DebugRngListsBase(0),
    };
    let Ok(mut entries) = header.entries_raw(abbreviations, None) else {
        return root;
    };
    let Ok(Some(abbreviation)) = entries.read_abbreviation() else {
        return root;
    };
    for spec in abbreviation.attributes() {
        let Ok(attribute) = entries.read_attribute(*spec) else {
            break;
        };
        match attribute.value() {
            AttributeValue::DebugLineRef(offset) => root.line_program = Some(offset.0 as u64),
            AttributeValue::DebugRngListsBase(base) => root.range_lists = base,
            _ => {}
        }
    }
    root
}

/// The bytes of the line program at `offset`, header included, as its length field says (what
/// gimli and blazesym read); 0 where there is none.
fn line_program_bytes(
    debug_line: &gimli::DebugLine<EndianSlice<'_, RunTimeEndian>>,
    offset: u64,
) -> u64 {
    let section: EndianSlice<'_, RunTimeEndian> = *debug_line.reader();
    let Some(program) = section.slice().get(offset as usize..) else {
        return 0;
    };
    let mut input = EndianSlice::new(program, section.endian());
    match input.read_initial_length() {
        Ok((length, format)) => length as u64 + u64::from(format.initial_length_size()),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compressed::test_files::{elf_with_compressed_sections, elf_with_sections, zlib};

    /// [`super::too_much_work`] with `file_check`'s inflation limit (64 MiB).
    fn too_much_work(data: &[u8]) -> Option<String> {
        super::too_much_work(data, 64 << 20)
    }

    /// An abbreviation table of one declaration: a compile unit with `DW_AT_stmt_list`, padded with
    /// `padding` more attributes (`DW_AT_name`, `DW_FORM_flag_present`: no bytes in the entry).
    fn abbreviations(padding: usize) -> Vec<u8> {
        let mut table = vec![1, 0x11, 0, 0x10, 0x17];
        for _ in 0..padding {
            table.extend_from_slice(&[0x03, 0x19]);
        }
        table.extend_from_slice(&[0, 0, 0]);
        table
    }

    /// A DWARF 4 compile unit whose one entry points at the line program at `line_offset`, with
    /// `padding` more bytes of entries, its abbreviations at `abbrev_offset`.
    fn unit(abbrev_offset: u32, line_offset: u32, padding: usize) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&4u16.to_le_bytes());
        body.extend_from_slice(&abbrev_offset.to_le_bytes());
        body.push(8);
        body.push(1);
        body.extend_from_slice(&line_offset.to_le_bytes());
        body.resize(body.len() + padding, 0);
        [&(body.len() as u32).to_le_bytes()[..], &body].concat()
    }

    /// A line program `bytes` long in all, its length field saying so (its contents are not read).
    fn line_program(bytes: usize) -> Vec<u8> {
        let mut program = ((bytes - 4) as u32).to_le_bytes().to_vec();
        program.resize(bytes, 1);
        program
    }

    fn dwarf_file(info: Vec<u8>, abbrev: Vec<u8>, line: Vec<u8>) -> Vec<u8> {
        elf_with_sections(&[
            (".debug_info", false, info),
            (".debug_abbrev", false, abbrev),
            (".debug_line", false, line),
        ])
    }

    #[test]
    fn units_within_every_limit_pass() {
        let info = [unit(0, 0, 100), unit(0, 1000, 100)].concat();
        let line = [line_program(1000), line_program(2000)].concat();
        assert_eq!(
            too_much_work(&dwarf_file(info, abbreviations(10), line)),
            None
        );
        assert_eq!(too_much_work(b"not an ELF file"), None);
        assert_eq!(too_much_work(&elf_with_sections(&[])), None, "no DWARF");
    }

    #[test]
    fn a_line_program_past_the_limit_is_refused() {
        let at_limit = MAX_LINE_PROGRAM_BYTES as usize;
        let file = |bytes| dwarf_file(unit(0, 0, 0), abbreviations(0), line_program(bytes));
        assert_eq!(too_much_work(&file(at_limit)), None);
        let refused = too_much_work(&file(at_limit + 1)).expect("refused");
        let expected = format!("a line program of {} bytes", at_limit + 1);
        assert!(refused.contains(&expected), "{refused}");
    }

    /// A unit may point into the middle of another's program, at bytes that read as a longer
    /// length: what is checked is what the unit points at, not the section's chain of programs.
    #[test]
    fn the_program_checked_is_the_one_each_unit_points_at() {
        // A 64-byte program, bytes 16..20 of which read as the length of a far longer one.
        let mut line = line_program(64);
        let inner = (MAX_LINE_PROGRAM_BYTES * 2) as u32;
        line[16..20].copy_from_slice(&inner.to_le_bytes());
        line.resize(inner as usize + 20, 1);
        let file = |offset| dwarf_file(unit(0, offset, 0), abbreviations(0), line.clone());
        assert_eq!(too_much_work(&file(0)), None);
        let refused = too_much_work(&file(16)).expect("refused");
        let expected = format!("a line program of {} bytes", inner + 4);
        assert!(refused.contains(&expected), "{refused}");
    }

    #[test]
    fn compressed_sections_are_checked_inflated() {
        let line = line_program(MAX_LINE_PROGRAM_BYTES as usize + 1);
        let zlib_line = zlib(&line);
        let zlib_info = zlib(&unit(0, 0, 0));
        let zlib_abbrev = zlib(&abbreviations(0));
        const ZLIB: u32 = object::elf::ELFCOMPRESS_ZLIB.0;
        let file = elf_with_compressed_sections(&[
            (".debug_info", ZLIB, unit(0, 0, 0).len() as u64, &zlib_info),
            (
                ".debug_abbrev",
                ZLIB,
                abbreviations(0).len() as u64,
                &zlib_abbrev,
            ),
            (".debug_line", ZLIB, line.len() as u64, &zlib_line),
        ]);
        assert!(zlib_line.len() < 64 << 10, "a few KiB on disk");
        let refused = too_much_work(&file).expect("refused");
        assert!(refused.contains("line program"), "{refused}");
    }

    #[test]
    fn too_many_units_are_refused() {
        let one = unit(0, 0, 0);
        let file = |units: u64| {
            let info = one.repeat(units as usize);
            dwarf_file(info, abbreviations(0), line_program(100))
        };
        assert_eq!(too_much_work(&file(MAX_UNITS)), None);
        let refused = too_much_work(&file(MAX_UNITS + 1)).expect("refused");
        assert!(refused.contains("compilation units"), "{refused}");
    }

    #[test]
    fn a_unit_past_the_limit_is_refused() {
        // The unit's own header and entry take 16 bytes.
        let file = |padding| dwarf_file(unit(0, 0, padding), abbreviations(0), line_program(100));
        let at_limit = MAX_UNIT_BYTES as usize - 16;
        assert_eq!(too_much_work(&file(at_limit)), None);
        let refused = too_much_work(&file(at_limit + 1)).expect("refused");
        assert!(refused.contains("a compilation unit of"), "{refused}");
    }

    /// blazesym parses a unit's table for each unit: one table shared by many is counted for each.
    #[test]
    fn a_shared_abbreviation_table_counts_for_every_unit_that_uses_it() {
        let table = abbreviations(256 << 10); // 512 KiB
        let units = |count: usize| unit(0, 0, 0).repeat(count);
        let fits = (MAX_ABBREVIATION_BYTES as usize) / table.len();
        let file = |count| dwarf_file(units(count), table.clone(), line_program(100));
        assert_eq!(too_much_work(&file(fits)), None);
        let refused = too_much_work(&file(fits + 1)).expect("refused");
        assert!(
            refused.contains("abbreviation tables take more than"),
            "{refused}"
        );
    }

    #[test]
    fn an_abbreviation_table_past_the_limit_is_refused() {
        let pairs = (MAX_ABBREVIATION_TABLE_BYTES as usize) / 2;
        let file = |pairs| dwarf_file(unit(0, 0, 0), abbreviations(pairs), line_program(100));
        // 5 bytes of declaration and 3 of ends around the pairs.
        assert_eq!(too_much_work(&file(pairs - 4)), None);
        let refused = too_much_work(&file(pairs)).expect("refused");
        assert!(refused.contains("an abbreviation table past"), "{refused}");
    }

    /// A unit whose root has `count` children, each nesting in the one before (`nested`) or all
    /// side by side: `DW_TAG_inlined_subroutine` entries without attributes, a byte each.
    fn unit_of_entries(count: usize, nested: bool) -> Vec<u8> {
        let table = [
            &[1, 0x11, 1, 0x10, 0x17, 0, 0][..],
            &[2, 0x1d, u8::from(nested), 0, 0],
            &[0],
        ]
        .concat();
        let mut body = vec![4, 0, 0, 0, 0, 0, 8, 1, 0, 0, 0, 0];
        body.resize(body.len() + count, 2);
        body.resize(body.len() + if nested { count + 1 } else { 1 }, 0);
        let info = [&(body.len() as u32).to_le_bytes()[..], &body].concat();
        dwarf_file(info, table, line_program(100))
    }

    #[test]
    fn entries_nested_past_the_limit_are_refused() {
        let depth = MAX_ENTRY_DEPTH as usize;
        // The root is at depth 0, and each entry says it has children: the null entry that ends
        // the deepest one's (empty) list is a level below it.
        assert_eq!(too_much_work(&unit_of_entries(depth - 1, true)), None);
        let refused = too_much_work(&unit_of_entries(depth, true)).expect("refused");
        assert!(
            refused.contains("nest deeper than the 512 levels"),
            "{refused}"
        );
    }

    #[test]
    fn a_unit_of_too_many_entries_is_refused() {
        let most = MAX_UNIT_ENTRIES as usize;
        // The root counts as one.
        assert_eq!(too_much_work(&unit_of_entries(most - 1, false)), None);
        let refused = too_much_work(&unit_of_entries(most, false)).expect("refused");
        assert!(refused.contains("more than 1048576 entries"), "{refused}");
    }

    /// A unit whose root has `entries` functions, each with `DW_AT_ranges` naming the one list
    /// of `ranges` ranges in `.debug_ranges`.
    fn shared_range_list(entries: usize, ranges: usize) -> Vec<u8> {
        let table = [
            &[1, 0x11, 1, 0x10, 0x17, 0, 0][..],
            &[2, 0x2e, 0, 0x55, 0x17, 0, 0],
            &[0],
        ]
        .concat();
        let mut body = vec![4, 0, 0, 0, 0, 0, 8, 1, 0, 0, 0, 0];
        for _ in 0..entries {
            body.extend_from_slice(&[2, 0, 0, 0, 0]);
        }
        body.push(0);
        let info = [&(body.len() as u32).to_le_bytes()[..], &body].concat();
        let mut list = Vec::new();
        for range in 0..ranges as u64 {
            list.extend_from_slice(&(range * 16).to_le_bytes());
            list.extend_from_slice(&(range * 16 + 8).to_le_bytes());
        }
        list.resize(list.len() + 16, 0);
        elf_with_sections(&[
            (".debug_info", false, info),
            (".debug_abbrev", false, table),
            (".debug_line", false, line_program(100)),
            (".debug_ranges", false, list),
        ])
    }

    /// blazesym expands a range list for each entry that names it: a list shared by many counts
    /// for each.
    #[test]
    fn a_shared_range_list_counts_for_every_entry_that_names_it() {
        let per_list = 1024;
        let entries = MAX_UNIT_RANGES as usize / per_list;
        assert_eq!(too_much_work(&shared_range_list(entries, per_list)), None);
        let refused = too_much_work(&shared_range_list(entries + 1, per_list)).expect("refused");
        assert!(
            refused.contains("hold more than 1048576 ranges"),
            "{refused}"
        );
    }
}
