//! What blazesym reads of files a profiled process controls: symbol tables (the kind of issue 19's
//! defect 1, a parse of untrusted data on the recording loop), compressed DWARF sections (the kind
//! of defect 8, in the files `record` reads) and links to other files (the kind of defect 6).
//! Compressed sections: blazesym inflates a compressed `.debug_info` whole into the heap, into a
//! vector of the size the section's header claims, and reads the stream to its end. The attacker
//! (uid 65534 through `setpriv`) runs two programs built with `-gz=zlib`, each patched after the
//! link: one's `.debug_info` header claims 64 TiB (emberprof, as root, aborted: "memory allocation
//! of 70368744177664 bytes failed", and the profile was lost), the other's claims 4 KiB and holds a
//! stream that inflates to 1 GiB of zeros from 1 MiB of file. A third, honest program checks that
//! compressed DWARF is still read. Line programs: blazesym keeps every row of a unit's program,
//! and a row can take one byte of it. Entries: blazesym recurses per nesting level of inlined
//! functions, and expands a range list for every function that names it.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Burns CPU for a second or so in `NAME` (set with `-D`), through a function only DWARF names
/// (inlined into it).
const VICTIM_C: &str = r#"
static volatile unsigned long sink;
static inline __attribute__((always_inline)) void inlined_into(unsigned long i) { sink += i * 3; }
__attribute__((noinline)) void NAME(void) {
    for (unsigned long i = 0; i < 2000000000UL; i++) inlined_into(i);
}
int main(void) { NAME(); return 0; }
"#;

/// Peak RSS allowed: a recording of three small programs peaks near 50 MiB; the bomb alone would
/// take 1 GiB.
const MAX_RSS_BYTES: u64 = 300 << 20;
/// What the bomb inflates to.
const BOMB_BYTES: usize = 1 << 30;
/// What the bomb's header claims.
const BOMB_CLAIM: u64 = 4096;

#[test]
fn hostile_compressed_dwarf_neither_aborts_nor_inflates() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let build = |name: &str| {
        let path = dir.path().join(format!("{name}.bin"));
        compile(
            &path,
            VICTIM_C,
            &["-O1", "-g", "-gz=zlib", &format!("-DNAME={name}")],
        );
        path
    };
    let claim = build("function_of_the_lying_claim");
    patch_debug_info(&claim, |elf, section| {
        // ch_size, after ch_type and ch_reserved.
        elf[section.offset + 8..section.offset + 16].copy_from_slice(&(1u64 << 46).to_le_bytes());
    });
    let bomb = build("function_of_the_bomb");
    patch_debug_info(&bomb, |elf, section| {
        // A new compression header and stream, at the end of the file.
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..BOMB_BYTES / zeros.len() {
            encoder.write_all(&zeros).expect("compress");
        }
        let stream = encoder.finish().expect("compress");
        let mut data = Vec::new();
        for field in [1u32, 0] {
            data.extend_from_slice(&field.to_le_bytes());
        }
        for field in [BOMB_CLAIM, 1] {
            data.extend_from_slice(&field.to_le_bytes());
        }
        data.extend_from_slice(&stream);
        replace_section_data(elf, &section, &data);
    });
    build("honest_function");

    // The attacker runs copies of its own (files it could rewrite at any time).
    let script = "for f in *.bin; do cp $f ${f%.bin}; done; ./function_of_the_lying_claim & \
                  ./function_of_the_bomb & ./honest_function; wait";
    let (out, args) = attack_args(dir.path(), 499, &["-v"], script);
    let recording = record_attack("hostile compressed DWARF", &args);
    assert_peak_below(&recording, MAX_RSS_BYTES);
    for reason in [
        "function_of_the_lying_claim: named from its symbol tables only, its DWARF is not \
         read: section .debug_info claims to inflate to 70368744177664 bytes",
        "function_of_the_bomb: named from its symbol tables only, its DWARF is not read: \
         section .debug_info does not inflate to the 4096 bytes it claims",
    ] {
        assert!(
            recording.stderr.contains(reason),
            "-v does not say \"{reason}\":\n{}",
            recording.stderr
        );
    }
    assert!(
        recording
            .stderr
            .contains("2 modules named from their symbol tables only"),
        "the summary does not count the two modules:\n{}",
        recording.stderr
    );
    // The symbol tables still name the hostile programs' functions; honest compressed DWARF is
    // read.
    assert_hostile_named_honest_inlined(
        &out,
        &["function_of_the_lying_claim", "function_of_the_bomb"],
    );
}

/// A root-owned program with a `.gnu_debuglink` (built with `-g`, its DWARF moved to
/// `victim.debug` by objcopy, as distributions ship them) runs from a directory the attacker
/// writes, where the attacker replaced `victim.debug` with a FIFO nobody writes to. blazesym looked
/// for the debug file beside the program and opened the FIFO: `record` blocked in `open` for good,
/// past SIGINT and SIGTERM.
#[test]
fn a_fifo_named_by_a_debug_link_does_not_hang_recording() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let program = dir.path().join("victim");
    compile(
        &program,
        VICTIM_C,
        &["-O1", "-g", "-DNAME=function_beside_a_fifo"],
    );
    let debug = dir.path().join("victim.debug");
    run_build_tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&program)
            .arg(&debug),
        "apt-get install binutils",
    );
    run_build_tool(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&program),
        "apt-get install binutils",
    );
    std::fs::remove_file(&debug).expect("remove the debug file");
    let (out, args) = attack_args(dir.path(), 499, &[], "mkfifo victim.debug && ./victim");
    let recording = record_attack("FIFO named by a debug link", &args);
    // The program runs for a second or two: a recording that took far longer waited on the FIFO
    // (and was killed by `record_attack`'s hang bound before the fix).
    assert!(
        recording.wall < Duration::from_secs(30),
        "recording took {:.1?}",
        recording.wall
    );
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    assert!(
        total(&stacks, |s| s
            .frames
            .iter()
            .any(|f| f == "function_beside_a_fifo"))
            > 50,
        "the program's function is not named from its symbol table:\n{}",
        describe(&stacks)
    );
}

/// Symbols in the hostile symbol table: past emberprof's 2 Mi, 96 MB of `.symtab`.
const HOSTILE_SYMBOLS: usize = 4 << 20;

/// The attacker's program has a `.symtab` of [`HOSTILE_SYMBOLS`] functions at distinct addresses
/// (its own table replaced after the link). blazesym sorted all of them on the recording loop at
/// the first lookup, and kept 8 bytes of index for each: 8 million held `record` for 0.67 s and
/// took its RSS to 276 MiB. The module is now left unnamed, and `-v` says why.
#[test]
fn a_huge_symbol_table_is_not_sorted() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let program = dir.path().join("victim.bin");
    compile(
        &program,
        VICTIM_C,
        &["-O1", "-DNAME=function_of_the_huge_table"],
    );
    patch_section(&program, ".symtab", |elf, section| {
        let mut table = vec![0u8; HOSTILE_SYMBOLS * 24];
        let mut address: u64 = 0x1234_5678;
        for entry in table.chunks_exact_mut(24) {
            // st_name 0, st_info FUNC GLOBAL, st_other 0, st_shndx 1, st_value, st_size 16.
            address = address
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            entry[4] = 0x12;
            entry[6] = 1;
            entry[8..16].copy_from_slice(&(address >> 16).to_le_bytes());
            entry[16..24].copy_from_slice(&16u64.to_le_bytes());
        }
        replace_section_data(elf, &section, &table);
    });
    let (out, args) = attack_args(dir.path(), 499, &["-v"], "cp victim.bin victim && ./victim");
    let recording = record_attack("huge symbol table", &args);
    let said = |text: &str| recording.stderr.contains(text);
    assert!(
        said("victim: not named, its symbol tables hold ")
            && said("symbols, more than the 2097152 blazesym may sort"),
        "-v does not say why the program is not named:\n{}",
        recording.stderr
    );
    // The index alone was 32 MiB, and sorting read the 96 MB table through its mapping.
    assert_peak_below(&recording, MAX_RSS_BYTES_WITHOUT_BOMB);
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    let unnamed = total(&stacks, |s| {
        s.frames.first().is_some_and(|f| f == "victim")
            && s.frames.iter().any(|f| f.starts_with("victim+0x"))
    });
    assert!(
        unnamed > 50,
        "the program's frames are not left as victim+0xOFFSET:\n{}",
        describe(&stacks)
    );
}

/// Rows in the line program blazesym must not build (20 MB of one-byte rows took `record` to 510
/// MiB of RSS; this one is held in the test's memory while it is written).
const LONG_PROGRAM_ROWS: usize = 8_000_000;
/// Rows in the compressed one: what 64 MiB of inflated sections allow, from a few KiB of file.
const PACKED_PROGRAM_ROWS: usize = 60_000_000;
/// Rows of a program just within emberprof's limit on one unit's line program (2 MiB): its parse
/// takes some 60 MiB of heap, past the `--max-parsed-size` the test sets.
const PROGRAM_ROWS_AT_THE_LIMIT: usize = (2 << 20) - 64;
/// `--max-parsed-size` for [`hostile_dwarf_is_not_built_past_its_limits`].
const PARSED_BUDGET: u64 = 32 << 20;
/// Peak RSS allowed: the program at the limit takes some 60 MiB while it is parsed; before, the
/// long program alone took 510 MiB, the packed one 1.5 GiB.
const MAX_RSS_BYTES_FOR_DWARF: u64 = 200 << 20;

/// blazesym runs a unit's whole line program at its first lookup there and keeps every row (24
/// bytes, from one byte of program), so the attacker's programs (their `.debug_line` replaced
/// after the link) hold one long program: 20 MB of it, and 60 MB of it compressed into the file
/// (within the 64 MiB a module's sections may inflate to). Each is now refused before blazesym
/// reads it (`dwarf_shape`). A third program's is just within that limit, and the test's
/// `--max-parsed-size` is below what its parse takes: the heap measured around its lookups is
/// counted, and its DWARF is left out after the first round. An honest program keeps its DWARF.
#[test]
fn hostile_dwarf_is_not_built_past_its_limits() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let build = |name: &str, rows: Option<usize>, compressed: bool| {
        let path = dir.path().join(format!("{name}.bin"));
        compile(
            &path,
            VICTIM_C,
            &["-O1", "-g", "-gdwarf-4", &format!("-DNAME={name}")],
        );
        if let Some(rows) = rows {
            patch_section(&path, ".debug_line", |elf, section| {
                if !compressed {
                    let mut program = Vec::new();
                    write_line_program(rows, &mut program);
                    return replace_section_data(elf, &section, &program);
                }
                let flags = u64::from_le_bytes(field(elf, section.header + 8)) | 0x800;
                elf[section.header + 8..section.header + 16].copy_from_slice(&flags.to_le_bytes());
                let mut data = Vec::new();
                data.extend_from_slice(&1u32.to_le_bytes()); // ELFCOMPRESS_ZLIB
                data.extend_from_slice(&0u32.to_le_bytes());
                data.extend_from_slice(&((rows + LINE_PROGRAM_EXTRA) as u64).to_le_bytes());
                data.extend_from_slice(&1u64.to_le_bytes());
                // Compressed as it is written: 60 MB never held in the test's memory.
                let mut encoder =
                    flate2::write::ZlibEncoder::new(data, flate2::Compression::best());
                write_line_program(rows, &mut encoder);
                replace_section_data(elf, &section, &encoder.finish().expect("compress"));
            });
        }
    };
    build("function_of_the_long_lines", Some(LONG_PROGRAM_ROWS), false);
    build(
        "function_of_the_packed_lines",
        Some(PACKED_PROGRAM_ROWS),
        true,
    );
    build(
        "function_at_the_limit",
        Some(PROGRAM_ROWS_AT_THE_LIMIT),
        false,
    );
    build("honest_function", None, false);

    let script = "for f in *.bin; do cp $f ${f%.bin}; done; ./function_of_the_long_lines & \
                  ./function_of_the_packed_lines & ./function_at_the_limit & ./honest_function; \
                  wait";
    let budget = PARSED_BUDGET.to_string();
    let (out, args) = attack_args(
        dir.path(),
        499,
        &["-v", "--max-parsed-size", &budget],
        script,
    );
    let recording = record_attack("hostile DWARF line programs", &args);
    assert_peak_below(&recording, MAX_RSS_BYTES_FOR_DWARF);
    for reason in [
        format!(
            "function_of_the_long_lines: named from its symbol tables only, its DWARF is not \
             read: a line program of {} bytes, past the 2 MiB allowed",
            LONG_PROGRAM_ROWS + LINE_PROGRAM_EXTRA
        ),
        format!(
            "function_of_the_packed_lines: named from its symbol tables only, its DWARF is not \
             read: a line program of {} bytes, past the 2 MiB allowed",
            PACKED_PROGRAM_ROWS + LINE_PROGRAM_EXTRA
        ),
        format!(
            "function_at_the_limit: named from its symbol tables only from now on: parsing its \
             DWARF took more heap than --max-parsed-size ({} MiB)",
            PARSED_BUDGET >> 20
        ),
    ] {
        assert!(
            recording.stderr.contains(&reason),
            "-v does not say \"{reason}\":\n{}",
            recording.stderr
        );
    }
    assert_hostile_named_honest_inlined(
        &out,
        &[
            "function_of_the_long_lines",
            "function_of_the_packed_lines",
            "function_at_the_limit",
        ],
    );
}

/// In the folded output `out`: each of the `hostile` functions is named (from its symbol table),
/// and `honest_function`'s inlined callee too, which only its DWARF names.
fn assert_hostile_named_honest_inlined(out: &Path, hostile: &[&str]) {
    let stacks = parse_folded(&std::fs::read_to_string(out).expect("read folded output"));
    let samples_in = |function: &str| total(&stacks, |s| s.frames.iter().any(|f| f == function));
    for function in hostile {
        assert!(
            samples_in(function) > 50,
            "{function} is not named:\n{}",
            describe(&stacks)
        );
    }
    let honest_inlined = total(&stacks, |s| {
        s.frames
            .windows(2)
            .any(|pair| pair[0] == "honest_function" && pair[1].starts_with("inlined_into"))
    });
    assert!(
        honest_inlined > 50,
        "honest_function's inlined callee (from its DWARF) is not named:\n{}",
        describe(&stacks)
    );
}

/// Inlined functions nested in the attacker's DWARF: 3.6 MB of `.debug_info`.
const NESTED_INLINED_FUNCTIONS: usize = 200_000;

/// The attacker's program's DWARF (its `.debug_info` and `.debug_abbrev` replaced after the link)
/// is one compile unit and one function covering `.text`, and inside the function
/// [`NESTED_INLINED_FUNCTIONS`] inlined functions, each inside the one before. blazesym walks
/// inlined functions by recursion, a stack frame per level: `record`, as root, overflowed its stack
/// ("fatal runtime error: stack overflow, aborting"), the profile lost. The nesting is now measured
/// first (`dwarf_shape`), and the program named from its symbol table.
#[test]
fn deeply_nested_dwarf_does_not_overflow_the_stack() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let abbreviations = [
        // 2: function, with children: name (string), low_pc, high_pc.
        &[2, 0x2e, 1, 0x03, 0x08, 0x11, 0x01, 0x12, 0x07, 0, 0][..],
        // 3: inlined function, with children: low_pc, high_pc.
        &[3, 0x1d, 1, 0x11, 0x01, 0x12, 0x07, 0, 0],
    ]
    .concat();
    build_hostile_dwarf(
        &dir,
        "function_of_the_deep_dwarf",
        &abbreviations,
        |range| {
            let mut entries = vec![2];
            entries.extend_from_slice(b"function_of_the_deep_dwarf\0");
            entries.extend_from_slice(range);
            for _ in 0..NESTED_INLINED_FUNCTIONS {
                entries.push(3);
                entries.extend_from_slice(range);
            }
            // Each inlined function's list of children, then the function's, then the unit's.
            entries.resize(entries.len() + NESTED_INLINED_FUNCTIONS + 2, 0);
            entries
        },
    );
    record_named_from_symbols(
        &dir,
        "deeply nested DWARF",
        "function_of_the_deep_dwarf",
        "its entries nest deeper than the 512 levels allowed",
    );
}

/// Functions in the attacker's DWARF that share one range list, and the ranges in that list: blazesym
/// would expand 400 million ranges (9.6 GB) from 0.6 MB of `.debug_info` and 64 KB of
/// `.debug_ranges`.
const FUNCTIONS_SHARING_A_LIST: usize = 100_000;
const RANGES_IN_THE_LIST: usize = 4_000;

/// The attacker's program's DWARF (its `.debug_info`, `.debug_abbrev` and `.debug_ranges` replaced
/// after the link) is one compile unit covering `.text` whose [`FUNCTIONS_SHARING_A_LIST`]
/// functions all name one list of [`RANGES_IN_THE_LIST`] ranges. blazesym expands a function's
/// list for each function of a unit at its first lookup there: `record`, as root, took the
/// allocation past the tests' 3 GiB address space and aborted. The ranges are now counted first
/// (`dwarf_shape`), a list for each entry that names it.
#[test]
fn a_range_list_shared_by_many_functions_is_not_expanded_for_each() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    // 2: function, no children: ranges (sec_offset).
    let abbreviations = [2, 0x2e, 0, 0x55, 0x17, 0, 0];
    let program = build_hostile_dwarf(
        &dir,
        "function_of_the_shared_ranges",
        &abbreviations,
        |_| {
            let mut entries = [2, 0, 0, 0, 0].repeat(FUNCTIONS_SHARING_A_LIST);
            entries.push(0);
            entries
        },
    );
    let text = text_section(&program);
    patch_section(&program, ".debug_ranges", |elf, section| {
        let mut list = Vec::new();
        for range in 0..RANGES_IN_THE_LIST as u64 {
            list.extend_from_slice(&(text.0 + range).to_le_bytes());
            list.extend_from_slice(&(text.0 + range + 1).to_le_bytes());
        }
        list.resize(list.len() + 16, 0);
        replace_section_data(elf, &section, &list);
    });
    let recording = record_named_from_symbols(
        &dir,
        "range list shared by many functions",
        "function_of_the_shared_ranges",
        "a compilation unit whose entries' range lists hold more than 1048576 ranges",
    );
    assert_peak_below(&recording, MAX_RSS_BYTES_WITHOUT_BOMB);
}

/// Builds the attacker's program `victim.bin` in `dir`, burning CPU in `function`, its DWARF then
/// replaced by one compile unit covering `.text` (the range of which, as low_pc and size,
/// `entries` is given) whose root has the children `entries` returns, in the declarations
/// `abbreviations` (from code 2: 1 is the root's).
fn build_hostile_dwarf(
    dir: &tempfile::TempDir,
    function: &str,
    abbreviations: &[u8],
    entries: impl FnOnce(&[u8]) -> Vec<u8>,
) -> std::path::PathBuf {
    let program = dir.path().join("victim.bin");
    compile(
        &program,
        VICTIM_C,
        &["-O1", "-g", "-gdwarf-4", &format!("-DNAME={function}")],
    );
    let (start, size) = text_section(&program);
    let range = [start.to_le_bytes(), size.to_le_bytes()].concat();
    patch_section(&program, ".debug_abbrev", |elf, section| {
        // 1: compile unit, with children: low_pc (addr), high_pc (data8), stmt_list.
        let root = [1, 0x11, 1, 0x11, 0x01, 0x12, 0x07, 0x10, 0x17, 0, 0];
        replace_section_data(elf, &section, &[&root[..], abbreviations, &[0]].concat());
    });
    patch_section(&program, ".debug_info", |elf, section| {
        // Version 4, abbreviations at 0, 8-byte addresses; the root: abbreviation 1, its range,
        // and the line program the compiler wrote.
        let mut body = vec![4, 0, 0, 0, 0, 0, 8, 1];
        body.extend_from_slice(&range);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend(entries(&range));
        let unit = [&(body.len() as u32).to_le_bytes()[..], &body].concat();
        replace_section_data(elf, &section, &unit);
    });
    program
}

/// Records the attacker running a copy of `victim.bin` from `dir`, and requires `-v` to say its
/// DWARF was not read for `reason`, and its `function` to be named from its symbol table.
fn record_named_from_symbols(
    dir: &tempfile::TempDir,
    name: &str,
    function: &str,
    reason: &str,
) -> Finished {
    let (out, args) = attack_args(dir.path(), 499, &["-v"], "cp victim.bin victim && ./victim");
    // Fails on an abort: record_attack requires a clean exit.
    let recording = record_attack(name, &args);
    let said =
        format!("victim: named from its symbol tables only, its DWARF is not read: {reason}");
    assert!(
        recording.stderr.contains(&said),
        "-v does not say \"{said}\":\n{}",
        recording.stderr
    );
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    let named = total(&stacks, |s| s.frames.iter().any(|f| f == function));
    assert!(
        named > 50,
        "{function} is not named:\n{}",
        describe(&stacks)
    );
    recording
}

/// The address and size of the ELF file's `.text`.
fn text_section(program: &Path) -> (u64, u64) {
    let mut text = (0, 0);
    patch_section(program, ".text", |elf, section| {
        text = (
            u64::from_le_bytes(field(elf, section.header + 0x10)),
            u64::from_le_bytes(field(elf, section.header + 0x20)),
        );
    });
    text
}

/// Bytes of a line program of [`write_line_program`] besides its rows.
const LINE_PROGRAM_EXTRA: usize = 56;

/// Writes a DWARF 4 line program of `rows` rows, one byte each (a special opcode: address + 1).
fn write_line_program(rows: usize, out: &mut impl Write) {
    // minimum_instruction_length, maximum_operations_per_instruction, default_is_stmt,
    // line_base -5, line_range 14, opcode_base 13, the standard opcodes' lengths, no include
    // directories, one file.
    let mut header = vec![1, 1, 1, (-5i8) as u8, 14, 13];
    header.extend_from_slice(&[0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1]);
    header.push(0);
    header.extend_from_slice(b"victim.c\0\0\0\0\0");
    let length = 2 + 4 + header.len() + 11 + rows + 3;
    assert_eq!(4 + length, rows + LINE_PROGRAM_EXTRA);
    let mut start = (length as u32).to_le_bytes().to_vec();
    start.extend_from_slice(&4u16.to_le_bytes());
    start.extend_from_slice(&(header.len() as u32).to_le_bytes());
    start.extend_from_slice(&header);
    start.extend_from_slice(&[0, 9, 2]); // DW_LNE_set_address 0
    start.extend_from_slice(&0u64.to_le_bytes());
    out.write_all(&start).expect("write the program");
    // Special opcode 32: (32 - 13) = 1 * 14 + (0 - -5): address + 1, line + 0, a row.
    let rows_chunk = [32u8; 1 << 16];
    for written in (0..rows).step_by(rows_chunk.len()) {
        let chunk = rows_chunk.len().min(rows - written);
        out.write_all(&rows_chunk[..chunk])
            .expect("write the program");
    }
    out.write_all(&[0, 1, 1]).expect("write the program"); // DW_LNE_end_sequence
}

/// Peak RSS allowed where nothing is inflated: a short recording of one program peaks near 40 MiB.
const MAX_RSS_BYTES_WITHOUT_BOMB: u64 = 100 << 20;

/// Where a section is: its header's offset in the file, and its data's.
struct Section {
    header: usize,
    offset: usize,
}

/// Applies `patch` to the ELF file at `path` with its section `name`. By hand: a few fields of the
/// section header table.
fn patch_section(path: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>, Section)) {
    let mut elf = std::fs::read(path).expect("read the victim");
    let u16_at = |elf: &[u8], at: usize| u16::from_le_bytes(field(elf, at));
    let u64_at = |elf: &[u8], at: usize| u64::from_le_bytes(field(elf, at));
    let table = u64_at(&elf, 0x28) as usize;
    let (entry_size, count, names) = (
        usize::from(u16_at(&elf, 0x3a)),
        usize::from(u16_at(&elf, 0x3c)),
        usize::from(u16_at(&elf, 0x3e)),
    );
    let names_offset = u64_at(&elf, table + names * entry_size + 0x18) as usize;
    let wanted = [name.as_bytes(), &[0]].concat();
    let header = (0..count)
        .map(|index| table + index * entry_size)
        .find(|&header| {
            let name = u32::from_le_bytes(field(&elf, header)) as usize;
            elf[names_offset + name..].starts_with(&wanted)
        })
        .unwrap_or_else(|| panic!("the victim has no {name}"));
    let offset = u64_at(&elf, header + 0x18) as usize;
    patch(&mut elf, Section { header, offset });
    std::fs::write(path, elf).expect("write the victim");
}

/// [`patch_section`] on `.debug_info`, which must be compressed (`SHF_COMPRESSED`).
fn patch_debug_info(path: &Path, patch: impl FnOnce(&mut Vec<u8>, Section)) {
    patch_section(path, ".debug_info", |elf, section| {
        let flags = u64::from_le_bytes(field(elf, section.header + 8));
        assert_ne!(
            flags & 0x800,
            0,
            "cc -gz=zlib left .debug_info uncompressed (the linker needs zlib support)"
        );
        patch(elf, section)
    });
}

/// Points the section at `data`, appended to the file.
fn replace_section_data(elf: &mut Vec<u8>, section: &Section, data: &[u8]) {
    let start = elf.len();
    elf.extend_from_slice(data);
    let (offset, size) = (start as u64, data.len() as u64);
    elf[section.header + 0x18..section.header + 0x20].copy_from_slice(&offset.to_le_bytes());
    elf[section.header + 0x20..section.header + 0x28].copy_from_slice(&size.to_le_bytes());
}

/// The `N` bytes of a header field at `at`.
fn field<const N: usize>(elf: &[u8], at: usize) -> [u8; N] {
    elf[at..at + N].try_into().expect("a field inside the file")
}

/// Requires emberprof's peak RSS in `recording` to be below `bound` bytes.
fn assert_peak_below(recording: &Finished, bound: u64) {
    assert!(
        recording.peak_rss_bytes < bound,
        "emberprof peaked at {} MiB (at most {} MiB):\n{}",
        recording.peak_rss_bytes >> 20,
        bound >> 20,
        recording.stderr
    );
}
