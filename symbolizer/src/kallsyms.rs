//! Kernel symbols from kallsyms, read in one pass into a compact table: start addresses, names and
//! the module each symbol belongs to.
//!
//! Written here rather than taken from blazesym because its kallsyms resolver keeps one heap string
//! per symbol (5.9 MB for the 122,000 symbols of a Debian 6.x kernel) and does not report the
//! `[module]` column, so naming module code (`ext4_file_read_iter [ext4]`) and BPF programs
//! (`[bpf]`) meant reading `/proc/kallsyms` a second time (~20 ms of kernel time each). This table
//! holds the same symbols in one name arena (~4.5 MB) from a single read.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// Longest name kallsyms prints (the kernel's KSYM_NAME_LEN is 512); longer lines are malformed.
const MAX_NAME_LEN: usize = 512;

/// Longest line read: address, type, name and module fit well within it.
const MAX_LINE_LEN: u64 = 4096;

/// Kernel symbols sorted by start address. A kernel address belongs to the last symbol that
/// starts at or below it (kallsyms has no sizes), as in `perf` and blazesym.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    /// Sorted by start address.
    entries: Vec<Entry>,
    /// Every name, back to back; `Entry::name_offset` and `name_len` slice it.
    names: String,
    /// Module names; `Entry::module` is an index into this, plus one (0: the core kernel).
    modules: Vec<Arc<str>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    name_offset: u32,
    name_len: u16,
    module: u16,
}

/// The symbol an address falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSymbol<'a> {
    pub name: &'a str,
    pub start: u64,
    /// The loadable module or pseudo-module (`bpf`) the symbol belongs to; `None` for the core kernel.
    pub module: Option<&'a Arc<str>>,
}

impl KernelSymbols {
    /// Reads a kallsyms file; an unreadable one gives an empty table (kernel frames stay unnamed,
    /// which is not an error: without CAP_SYSLOG the addresses are hidden anyway).
    pub fn read(path: &Path) -> Self {
        match std::fs::File::open(path) {
            Ok(file) => Self::parse(BufReader::with_capacity(64 * 1024, file)),
            Err(error) => {
                log::debug!("cannot read {}: {error}", path.display());
                Self::default()
            }
        }
    }

    /// Parses kallsyms text (`ffffffff81000000 T _stext`, `... t name\t[module]`). Data symbols,
    /// zero addresses (hidden by kptr_restrict) and malformed lines are left out.
    pub fn parse(mut reader: impl BufRead) -> Self {
        let mut table = KernelSymbols::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader
                .by_ref()
                .take(MAX_LINE_LEN)
                .read_until(b'\n', &mut line)
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    log::debug!("kallsyms read stopped: {error}");
                    break;
                }
            }
            if !line.ends_with(b"\n") && line.len() as u64 == MAX_LINE_LEN {
                // Longer than any kallsyms line: skipped whole, without buffering the rest.
                if let Err(error) = reader.skip_until(b'\n') {
                    log::debug!("kallsyms read stopped: {error}");
                    break;
                }
                continue;
            }
            let Ok(text) = std::str::from_utf8(&line) else {
                continue;
            };
            if let Some(entry) = table.parse_line(text) {
                table.entries.push(entry);
            }
        }
        // Stable: of symbols at one address, the first listed names it.
        table.entries.sort_by_key(|entry| entry.start);
        table.entries.shrink_to_fit();
        table.names.shrink_to_fit();
        table
    }

    fn parse_line(&mut self, line: &str) -> Option<Entry> {
        let mut fields = line.split_ascii_whitespace();
        let start = u64::from_str_radix(fields.next()?, 16).ok()?;
        let kind = fields.next()?;
        let name = fields.next()?;
        let module = fields.next();
        let text = matches!(kind, "t" | "T" | "w" | "W");
        if start == 0 || !text || name.len() > MAX_NAME_LEN || fields.next().is_some() {
            return None;
        }
        let module = match module {
            None => 0,
            Some(column) => {
                let module = column.strip_prefix('[')?.strip_suffix(']')?;
                self.module_index(module)?
            }
        };
        let name_offset = u32::try_from(self.names.len()).ok()?;
        self.names.push_str(name);
        Some(Entry {
            start,
            name_offset,
            name_len: name.len() as u16,
            module,
        })
    }

    /// One plus the index of the module's name, added if new; `None` past 65,535 modules.
    fn module_index(&mut self, module: &str) -> Option<u16> {
        // Symbols of one module are listed together: the last one added is almost always it.
        let index = match self.modules.iter().rposition(|m| &**m == module) {
            Some(index) => index,
            None => {
                self.modules.push(Arc::from(module));
                self.modules.len() - 1
            }
        };
        u16::try_from(index + 1).ok()
    }

    /// The symbol `address` falls in, if any starts at or below it.
    pub fn lookup(&self, address: u64) -> Option<KernelSymbol<'_>> {
        let mut index = self
            .entries
            .partition_point(|entry| entry.start <= address)
            .checked_sub(1)?;
        let start = self.entries[index].start;
        while index > 0 && self.entries[index - 1].start == start {
            index -= 1;
        }
        let entry = self.entries[index];
        let offset = entry.name_offset as usize;
        Some(KernelSymbol {
            name: self.names.get(offset..offset + entry.name_len as usize)?,
            start,
            module: (entry.module as usize)
                .checked_sub(1)
                .and_then(|index| self.modules.get(index)),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> KernelSymbols {
        KernelSymbols::parse(text.as_bytes())
    }

    /// Addresses belong to the symbol below them, in whatever order kallsyms lists them; module and
    /// BPF symbols carry their bracketed names, core kernel symbols none.
    #[test]
    fn names_addresses_with_their_modules() {
        let symbols = table(
            "ffffffffc0a01000 t ext4_file_read_iter\t[ext4]\n\
             ffffffff81000000 T _stext\n\
             ffffffff81000100 T do_syscall_64\n\
             ffffffffa0001234 t bpf_prog_6deef7357e7b4530_sample_cpu\t[bpf]\n\
             ffffffffc0a02000 t ext4_file_write_iter\t[ext4]\n",
        );
        assert_eq!(symbols.len(), 5);
        let at = |address| {
            symbols
                .lookup(address)
                .map(|s| (s.name, s.module.map(|m| &**m)))
        };
        assert_eq!(at(0xffffffff81000000), Some(("_stext", None)));
        assert_eq!(at(0xffffffff810000ff), Some(("_stext", None)));
        assert_eq!(at(0xffffffff81000123), Some(("do_syscall_64", None)));
        assert_eq!(
            at(0xffffffffc0a01010),
            Some(("ext4_file_read_iter", Some("ext4")))
        );
        assert_eq!(
            at(0xffffffffc0a02001),
            Some(("ext4_file_write_iter", Some("ext4")))
        );
        assert_eq!(
            at(0xffffffffa0001240),
            Some(("bpf_prog_6deef7357e7b4530_sample_cpu", Some("bpf")))
        );
        assert_eq!(at(0xffffffff80ffffff), None);
        assert_eq!(
            symbols.lookup(0xffffffff81000123).map(|s| s.start),
            Some(0xffffffff81000100)
        );
    }

    /// Of aliases at one address the first listed wins; data symbols, hidden (zero) addresses and
    /// malformed lines are skipped without disturbing the rest.
    #[test]
    fn skips_what_names_no_code() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let symbols = table(&format!(
            "ffffffff81000000 T __x64_sys_read\n\
             ffffffff81000000 T __ia32_sys_read\n\
             ffffffff81000800 D jiffies\n\
             0000000000000000 T hidden_by_kptr_restrict\n\
             ffffffff81001000 T {long}\n\
             zzzz T not_hex\n\
             ffffffff81002000 T\n\
             ffffffff81003000 t in_module\t[unclosed\n\
             ffffffff81004000 t \u{20ac}_fine\n"
        ));
        let at = |address| symbols.lookup(address).map(|s| s.name);
        assert_eq!(at(0xffffffff81000000), Some("__x64_sys_read"));
        assert_eq!(at(0xffffffff81003fff), Some("__x64_sys_read"));
        assert_eq!(at(0xffffffff81004000), Some("\u{20ac}_fine"));
        assert_eq!(symbols.len(), 3);
        assert!(table("0000000000000000 T _stext\n").is_empty());
    }

    /// A line longer than any kallsyms line (a file that is not kallsyms) is skipped whole: its
    /// tail is not taken for a symbol, and the lines after it still are.
    #[test]
    fn overlong_lines_are_skipped() {
        let mut text = "f".repeat(1 << 20);
        text.push_str(" ffffffff82000000 T tail_of_an_overlong_line\n");
        text.push_str("ffffffff81000000 T _stext\n");
        let symbols = table(&text);
        assert_eq!(symbols.len(), 1);
        assert_eq!(
            symbols.lookup(0xffffffff82000001).map(|s| s.name),
            Some("_stext")
        );
    }

    /// The running kernel's kallsyms: symbols, each found at its own start.
    #[test]
    fn reads_the_running_kernel() {
        let symbols = KernelSymbols::read(Path::new("/proc/kallsyms"));
        assert!(
            symbols.len() > 1000,
            "{} kernel symbols in /proc/kallsyms: run the tests as root (the addresses are hidden \
             from other users)",
            symbols.len()
        );
        for index in [0, symbols.len() / 2, symbols.len() - 1] {
            let start = symbols.entries[index].start;
            assert_eq!(symbols.lookup(start).map(|s| s.start), Some(start));
        }
    }
}
