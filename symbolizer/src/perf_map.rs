//! Parsing of JIT perf map files, `/tmp/perf-PID.map`.
//!
//! Code that a JIT compiler emits at run time (Node.js with `--perf-basic-prof`, Python 3.12+ with
//! `-X perf`, a JVM with a perf-map agent) lives in anonymous memory: there is no ELF file behind it,
//! so the ELF/DWARF path of this crate cannot name its frames. Runtimes that want those frames named
//! follow the convention started by `perf`: they append one line per compiled function to
//! `/tmp/perf-PID.map`, `START SIZE NAME`, with START and SIZE in hexadecimal.
//!
//! This module only turns that text into an address lookup. It does not open or read files and it
//! does not decide whether a map may be trusted: `/tmp` is world-writable, so the caller must check
//! that the file is owned by the profiled process's user (and is not a symlink) before feeding its
//! text here. Lines are accepted in chunks because the runtime keeps appending to the file while it
//! runs, and the caller reads whatever has been written so far.

use std::collections::BTreeMap;

/// Lines longer than this are counted as malformed and not kept. The map is written by the profiled
/// process, so without a bound a file that never writes a newline would make the partial-line buffer
/// grow without limit. Real names (even JVM signatures) are far shorter.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Entries kept per map; valid lines past it are counted ([`PerfMap::dropped`]) and not kept. Each
/// entry costs about 100 bytes with its share of the index, so this bounds a hostile map at ~100 MiB;
/// a large Node.js application writes on the order of 100 000 lines.
pub const MAX_ENTRIES: usize = 1 << 20;

/// One line of a perf map: the code at `[start, start + size)` is the function `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfMapEntry {
    pub start: u64,
    /// Never 0, and `start + size` never overflows, for entries that came out of [`parse_line`].
    pub size: u64,
    /// As the runtime wrote it, e.g. `LazyCompile:*hotLoop /tmp/x.js:3` or `py::main:/app/run.py`.
    pub name: String,
}

impl PerfMapEntry {
    fn end(&self) -> u64 {
        // Saturating, not `+`: the fields are public, so an entry built by hand may overflow.
        self.start.saturating_add(self.size)
    }
}

/// Parses one line, `START SIZE NAME`, without its `'\n'`; a trailing `'\r'` is ignored.
///
/// START and SIZE are hexadecimal, with or without `0x`; NAME is the rest of the line and may
/// contain spaces. Returns `None` for a line with a missing field, a number that is not plain hex
/// (no sign, no empty digits) or does not fit in 64 bits, a size of 0, a range that runs past the end
/// of the address space, or a name that is empty or only whitespace.
pub fn parse_line(line: &str) -> Option<PerfMapEntry> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let start = parse_hex(start)?;
    let size = parse_hex(size)?;
    if size == 0 || name.trim().is_empty() {
        return None;
    }
    start.checked_add(size)?;
    Some(PerfMapEntry {
        start,
        size,
        name: name.to_owned(),
    })
}

fn parse_hex(field: &str) -> Option<u64> {
    let digits = field
        .strip_prefix("0x")
        .or_else(|| field.strip_prefix("0X"))
        .unwrap_or(field);
    // `from_str_radix` alone would also take a leading `+`, which no runtime writes: a line with one
    // is corrupt, and accepting it would hide that.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// A piece of the address space that, after all overlaps are resolved, belongs to one entry.
#[derive(Clone, Copy, Debug)]
struct Segment {
    end: u64,
    entry: usize,
}

/// The symbols of one process's perf map, fed incrementally as the file grows.
///
/// A JIT reuses memory: when it frees code and compiles new code at the same address, it appends a
/// new line without retracting the old one. So ranges may overlap, and the line written last
/// describes what is there now; [`lookup`](Self::lookup) follows that rule.
#[derive(Clone, Debug, Default)]
pub struct PerfMap {
    /// Every valid entry, in the order its line appeared.
    entries: Vec<PerfMapEntry>,
    /// The start of a line whose `'\n'` has not arrived yet.
    pending: String,
    /// The pending line already exceeded [`MAX_LINE_BYTES`]: its bytes are dropped, and it is counted
    /// as malformed when its `'\n'` arrives.
    pending_overlong: bool,
    /// Non-overlapping segments keyed by start, each owned by the newest entry covering it. Built from
    /// `entries[..indexed]` only; the rest is folded in by the next lookup, so a burst of appended
    /// lines costs nothing until an address is actually asked for.
    index: BTreeMap<u64, Segment>,
    indexed: usize,
    /// Valid lines not kept because the map already held [`MAX_ENTRIES`].
    dropped: usize,
}

impl PerfMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the complete lines of `text` and returns how many of them were malformed (and skipped).
    ///
    /// `text` may end in the middle of a line, as a read of a file that is still being written does:
    /// that partial line is kept and completed by the next call, so feeding a file in any chunks
    /// gives the same entries and the same total count as feeding it whole. A partial line that is
    /// never completed never becomes an entry.
    pub fn extend_from_text(&mut self, text: &str) -> usize {
        let mut malformed = 0;
        let mut rest = text;
        if !self.pending.is_empty() || self.pending_overlong {
            let Some(newline) = rest.find('\n') else {
                self.buffer_partial(rest);
                return 0;
            };
            self.buffer_partial(&rest[..newline]);
            rest = &rest[newline + 1..];
            let line = std::mem::take(&mut self.pending);
            let overlong = std::mem::replace(&mut self.pending_overlong, false);
            if overlong || !self.add_line(&line) {
                malformed += 1;
            }
        }
        while let Some(newline) = rest.find('\n') {
            if !self.add_line(&rest[..newline]) {
                malformed += 1;
            }
            rest = &rest[newline + 1..];
        }
        self.buffer_partial(rest);
        malformed
    }

    fn buffer_partial(&mut self, part: &str) {
        if self.pending_overlong {
            return;
        }
        if self.pending.len().saturating_add(part.len()) > MAX_LINE_BYTES {
            // A fresh String, not `clear`: the point is to give the memory back.
            self.pending = String::new();
            self.pending_overlong = true;
        } else {
            self.pending.push_str(part);
        }
    }

    /// Returns whether the line was valid.
    fn add_line(&mut self, line: &str) -> bool {
        // The same bound as for a partial line, so that chunking cannot change the verdict.
        if line.len() > MAX_LINE_BYTES {
            return false;
        }
        match parse_line(line) {
            Some(_) if self.entries.len() >= MAX_ENTRIES => {
                self.dropped = self.dropped.saturating_add(1);
                true
            }
            Some(entry) => {
                self.entries.push(entry);
                true
            }
            None => false,
        }
    }

    /// The entry whose `[start, start + size)` contains `address`; where entries overlap, the one
    /// added last.
    ///
    /// Takes `&mut self` because it first folds entries added since the previous lookup into the
    /// index (amortized O(log n) per entry); a lookup itself is O(log n). `&mut` rather than a
    /// `RefCell` keeps the map `Sync`, and the symbolizer that owns it is used through `&mut` anyway.
    pub fn lookup(&mut self, address: u64) -> Option<&PerfMapEntry> {
        self.update_index();
        let (_, segment) = self.index.range(..=address).next_back()?;
        if address < segment.end {
            self.entries.get(segment.entry)
        } else {
            None
        }
    }

    /// Sweeps the new entries into the index in insertion order, each one taking over whatever parts
    /// of older segments it covers; that is what makes the newest entry win without lookups having to
    /// compare candidates.
    fn update_index(&mut self) {
        while self.indexed < self.entries.len() {
            let entry = self.indexed;
            let (start, end) = match self.entries.get(entry) {
                Some(e) => (e.start, e.end()),
                None => break,
            };
            self.indexed += 1;
            if start >= end {
                continue;
            }
            self.carve(start, end);
            self.index.insert(start, Segment { end, entry });
        }
    }

    /// Removes `[start, end)` from the index, trimming or splitting the segments that straddle it.
    fn carve(&mut self, start: u64, end: u64) {
        // A segment starting before `start` keeps its head, and its tail past `end` if it has one.
        if let Some((&seg_start, &seg)) = self.index.range(..start).next_back() {
            if seg.end > start {
                self.index.insert(
                    seg_start,
                    Segment {
                        end: start,
                        entry: seg.entry,
                    },
                );
                if seg.end > end {
                    self.index.insert(end, seg);
                }
            }
        }
        // Segments starting inside are removed; the last of them may keep a tail past `end`. Each
        // segment is removed at most once, which is what keeps the sweep amortized O(log n).
        let inside: Vec<(u64, Segment)> = self
            .index
            .range(start..end)
            .map(|(&s, &seg)| (s, seg))
            .collect();
        for (seg_start, seg) in inside {
            self.index.remove(&seg_start);
            if seg.end > end {
                self.index.insert(end, seg);
            }
        }
    }

    /// All valid entries, in the order their lines appeared (including ones newer entries shadow).
    pub fn entries(&self) -> &[PerfMapEntry] {
        &self.entries
    }

    /// How many valid entries have been added, including ones that newer entries shadow.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Valid lines that were not kept because the map was full ([`MAX_ENTRIES`]).
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(start: u64, size: u64, name: &str) -> PerfMapEntry {
        PerfMapEntry {
            start,
            size,
            name: name.to_owned(),
        }
    }

    fn name_at(map: &mut PerfMap, address: u64) -> Option<String> {
        map.lookup(address).map(|e| e.name.clone())
    }

    fn map_of(text: &str) -> PerfMap {
        let mut map = PerfMap::new();
        assert_eq!(
            map.extend_from_text(text),
            0,
            "unexpected malformed line in {text:?}"
        );
        map
    }

    /// A line that never ends costs at most MAX_LINE_BYTES, however much of it arrives.
    #[test]
    fn endless_line_is_bounded() {
        let mut map = PerfMap::new();
        let chunk = "1".repeat(1 << 16);
        for _ in 0..64 {
            assert_eq!(map.extend_from_text(&chunk), 0);
            assert!(map.pending.capacity() <= 2 * MAX_LINE_BYTES);
        }
        assert_eq!(map.extend_from_text("\n"), 1);
    }

    /// Past MAX_ENTRIES, valid lines are counted, not kept: memory stays bounded.
    #[test]
    fn entries_are_capped() {
        let mut map = PerfMap::new();
        let text: String = (0..MAX_ENTRIES as u64 + 10)
            .map(|i| format!("{:x} 1 f\n", i * 2))
            .collect();
        assert_eq!(map.extend_from_text(&text), 0);
        assert_eq!(map.len(), MAX_ENTRIES);
        assert_eq!(map.dropped(), 10);
        assert_eq!(
            name_at(&mut map, 2 * (MAX_ENTRIES as u64 - 1)).as_deref(),
            Some("f")
        );
        assert_eq!(name_at(&mut map, 2 * MAX_ENTRIES as u64), None);
    }

    /// A Node.js `--perf-basic-prof` line: bare hex, and a name with a space and a path.
    #[test]
    fn parses_node_line() {
        assert_eq!(
            parse_line("3a5e1f04c0e0 9c LazyCompile:*hotLoop /tmp/x.js:3"),
            Some(entry(
                0x3a5e1f04c0e0,
                0x9c,
                "LazyCompile:*hotLoop /tmp/x.js:3"
            ))
        );
    }

    /// A Python 3.12 `-X perf` trampoline line.
    #[test]
    fn parses_python_line() {
        assert_eq!(
            parse_line("7f1e2c3d4000 b py::main:/app/run.py"),
            Some(entry(0x7f1e2c3d4000, 0xb, "py::main:/app/run.py"))
        );
    }

    /// `0x`/`0X` prefixes and upper-case digits are accepted on either number.
    #[test]
    fn accepts_0x_prefixes_and_upper_case() {
        assert_eq!(parse_line("0x1000 0x20 f"), Some(entry(0x1000, 0x20, "f")));
        assert_eq!(parse_line("0X10AB 20 f"), Some(entry(0x10ab, 0x20, "f")));
        assert_eq!(parse_line("10ab 0XfF f"), Some(entry(0x10ab, 0xff, "f")));
    }

    /// The name is everything after the second space, inner and repeated spaces included; only a
    /// trailing `'\r'` is dropped.
    #[test]
    fn name_is_rest_of_line() {
        assert_eq!(
            parse_line("10 4 Interpreted:  a  b \r"),
            Some(entry(0x10, 4, "Interpreted:  a  b "))
        );
        assert_eq!(
            parse_line("10 4 void Foo.bar(int, java.lang.String)"),
            Some(entry(0x10, 4, "void Foo.bar(int, java.lang.String)"))
        );
    }

    /// Each malformed shape is rejected by `parse_line`.
    #[test]
    fn rejects_malformed_lines() {
        let end_of_space = format!("{:x} 1 last", u64::MAX);
        for line in [
            "",
            "   ",
            "1000",
            "1000 20",
            "1000 20 ",
            "1000 20    ",
            "1000 20 \r",
            "1000  20 name",
            " 1000 20 name",
            "1000\t20 name",
            "xyz 20 name",
            "1000 2g name",
            "+1000 20 name",
            "1000 -20 name",
            "0x 20 name",
            "1000 0x name",
            "1000 0 name",
            "1000 0x0 name",
            "10000000000000000 1 name",
            "ffffffffffffffff 2 name",
            end_of_space.as_str(),
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    /// A range ending exactly at the top of the address space is valid; its last byte can be looked up.
    #[test]
    fn range_may_end_at_top_of_address_space() {
        let mut map = map_of("fffffffffffffff0 f top\n");
        assert_eq!(
            name_at(&mut map, 0xffff_ffff_ffff_fffe).as_deref(),
            Some("top")
        );
        assert_eq!(name_at(&mut map, u64::MAX), None);
    }

    /// Long runs of leading zeros are fine as long as the value fits in 64 bits.
    #[test]
    fn leading_zeros_are_fine() {
        let line = format!("{}1000 {}8 z", "0".repeat(100), "0".repeat(50));
        assert_eq!(parse_line(&line), Some(entry(0x1000, 8, "z")));
    }

    /// `extend_from_text` keeps valid lines in order and counts every malformed one, blank lines
    /// included, without letting a bad line disturb its neighbours.
    #[test]
    fn extend_counts_and_skips_malformed_lines() {
        let mut map = PerfMap::new();
        let text = "1000 10 a\nnot a line\n\n2000 0 zero-size\n3000 10 c\r\n4000 zz d\n";
        assert_eq!(map.extend_from_text(text), 4);
        assert_eq!(
            map.entries(),
            &[entry(0x1000, 0x10, "a"), entry(0x3000, 0x10, "c")]
        );
        assert_eq!(map.len(), 2);
        assert_eq!(name_at(&mut map, 0x3005).as_deref(), Some("c"));
        assert_eq!(name_at(&mut map, 0x2000), None);
    }

    /// Splitting the text at every possible byte, mid-line included, gives the same entries and count.
    #[test]
    fn chunked_input_split_mid_line() {
        let text = "1000 10 LazyCompile:*a /x.js:1\nbad\n2000 20 py::b:/y.py\n3000 30 c";
        let mut whole = PerfMap::new();
        let whole_bad = whole.extend_from_text(text);
        assert_eq!(whole_bad, 1);
        for split in 0..=text.len() {
            let mut map = PerfMap::new();
            let bad = map.extend_from_text(&text[..split]) + map.extend_from_text(&text[split..]);
            assert_eq!(bad, whole_bad, "split at {split}");
            assert_eq!(map.entries(), whole.entries(), "split at {split}");
        }
        // The last line has no '\n' yet: it is held back until one arrives.
        assert_eq!(whole.len(), 2);
        assert_eq!(name_at(&mut whole, 0x3000), None);
        assert_eq!(whole.extend_from_text("\n"), 0);
        assert_eq!(name_at(&mut whole, 0x3000).as_deref(), Some("c"));
    }

    /// A `"\r\n"` split between two chunks still has its `'\r'` dropped.
    #[test]
    fn crlf_split_across_chunks() {
        let mut map = PerfMap::new();
        assert_eq!(map.extend_from_text("1000 10 a\r"), 0);
        assert_eq!(map.extend_from_text("\n"), 0);
        assert_eq!(map.entries(), &[entry(0x1000, 0x10, "a")]);
    }

    /// A line over the length bound is malformed whether it arrives whole or dribbled in chunks, and
    /// the lines around it are unaffected.
    #[test]
    fn overlong_line_is_malformed_however_chunked() {
        let long_name = "n".repeat(MAX_LINE_BYTES);
        let text = format!("1000 10 a\n2000 10 {long_name}\n3000 10 c\n");
        let mut whole = PerfMap::new();
        assert_eq!(whole.extend_from_text(&text), 1);
        let mut chunked = PerfMap::new();
        let bad: usize = text
            .as_bytes()
            .chunks(1000)
            .map(|c| chunked.extend_from_text(std::str::from_utf8(c).unwrap_or("")))
            .sum();
        assert_eq!(bad, 1);
        assert_eq!(chunked.entries(), whole.entries());
        assert_eq!(
            whole.entries(),
            &[entry(0x1000, 0x10, "a"), entry(0x3000, 0x10, "c")]
        );
        assert!(chunked.pending.is_empty() && !chunked.pending_overlong);
    }

    /// Start is inclusive, end exclusive; gaps and addresses outside every entry find nothing.
    #[test]
    fn lookup_boundaries() {
        let mut map = map_of("1000 10 a\n1010 10 b\n1030 10 c\n");
        assert_eq!(name_at(&mut map, 0x0fff), None);
        assert_eq!(name_at(&mut map, 0x1000).as_deref(), Some("a"));
        assert_eq!(name_at(&mut map, 0x100f).as_deref(), Some("a"));
        assert_eq!(name_at(&mut map, 0x1010).as_deref(), Some("b"));
        assert_eq!(name_at(&mut map, 0x101f).as_deref(), Some("b"));
        assert_eq!(name_at(&mut map, 0x1020), None);
        assert_eq!(name_at(&mut map, 0x1030).as_deref(), Some("c"));
        assert_eq!(name_at(&mut map, 0x1040), None);
        assert_eq!(name_at(&mut map, u64::MAX), None);
        assert_eq!(name_at(&mut map, 0), None);
    }

    /// An empty map finds nothing and says it is empty.
    #[test]
    fn empty_map() {
        let mut map = PerfMap::default();
        assert!(map.is_empty());
        assert_eq!(map.len(), 0);
        assert_eq!(map.lookup(0x1000), None);
    }

    /// Identical and fully covering re-definitions: the entry added last wins.
    #[test]
    fn overlap_later_wins() {
        let mut map = map_of("1000 100 old\n1000 100 new\n");
        assert_eq!(name_at(&mut map, 0x1000).as_deref(), Some("new"));
        assert_eq!(name_at(&mut map, 0x10ff).as_deref(), Some("new"));

        // A newer, larger range swallows two older ones entirely.
        let mut map = map_of("1010 10 a\n1030 10 b\n1000 100 big\n");
        for address in [0x1000, 0x1010, 0x1035, 0x10ff] {
            assert_eq!(name_at(&mut map, address).as_deref(), Some("big"));
        }
        assert_eq!(map.len(), 3);
    }

    /// A newer range inside an older one splits it: the older entry still owns both remaining sides.
    #[test]
    fn partial_overlap_splits_older_entry() {
        let mut map = map_of("1000 100 old\n1040 40 new\n");
        assert_eq!(name_at(&mut map, 0x1000).as_deref(), Some("old"));
        assert_eq!(name_at(&mut map, 0x103f).as_deref(), Some("old"));
        assert_eq!(name_at(&mut map, 0x1040).as_deref(), Some("new"));
        assert_eq!(name_at(&mut map, 0x107f).as_deref(), Some("new"));
        assert_eq!(name_at(&mut map, 0x1080).as_deref(), Some("old"));
        assert_eq!(name_at(&mut map, 0x10ff).as_deref(), Some("old"));
        assert_eq!(name_at(&mut map, 0x1100), None);
    }

    /// Newer ranges overlapping only the head or only the tail of older ones trim them.
    #[test]
    fn partial_overlap_at_edges() {
        let mut map = map_of("1000 100 mid\n0f80 100 left\n10c0 80 right\n");
        assert_eq!(name_at(&mut map, 0x0f80).as_deref(), Some("left"));
        assert_eq!(name_at(&mut map, 0x107f).as_deref(), Some("left"));
        assert_eq!(name_at(&mut map, 0x1080).as_deref(), Some("mid"));
        assert_eq!(name_at(&mut map, 0x10bf).as_deref(), Some("mid"));
        assert_eq!(name_at(&mut map, 0x10c0).as_deref(), Some("right"));
        assert_eq!(name_at(&mut map, 0x113f).as_deref(), Some("right"));
        assert_eq!(name_at(&mut map, 0x1140), None);
    }

    /// Entries added after the index was built (a growing file between lookups) still override it.
    #[test]
    fn lines_added_after_a_lookup_are_indexed() {
        let mut map = map_of("1000 100 first\n");
        assert_eq!(name_at(&mut map, 0x1050).as_deref(), Some("first"));
        assert_eq!(map.extend_from_text("1040 20 second\n2000 10 other\n"), 0);
        assert_eq!(name_at(&mut map, 0x1050).as_deref(), Some("second"));
        assert_eq!(name_at(&mut map, 0x1060).as_deref(), Some("first"));
        assert_eq!(name_at(&mut map, 0x2000).as_deref(), Some("other"));
    }

    // Property tests.

    /// The naive model: scan every entry, newest first.
    fn naive_lookup(entries: &[PerfMapEntry], address: u64) -> Option<usize> {
        entries
            .iter()
            .rposition(|e| e.start <= address && address < e.start + e.size)
    }

    /// Which of the map's own entries `lookup` returned, by identity, so duplicates are told apart.
    fn lookup_index(map: &mut PerfMap, address: u64) -> Option<usize> {
        let found = map.lookup(address).map(|e| e as *const PerfMapEntry)?;
        map.entries().iter().position(|e| std::ptr::eq(e, found))
    }

    /// Cuts `text` at the given fractions of its length, moved back to char boundaries.
    fn split_text(text: &str, cuts: &[usize]) -> Vec<String> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|&c| {
                let mut p = c % (text.len() + 1);
                while !text.is_char_boundary(p) {
                    p -= 1;
                }
                p
            })
            .collect();
        points.push(0);
        points.push(text.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|w| text[w[0]..w[1]].to_owned())
            .collect()
    }

    /// Valid entries, mostly crowded into a small window so that overlaps are common, some anywhere
    /// in the address space (up to its very end).
    fn valid_entry() -> impl Strategy<Value = PerfMapEntry> {
        let name = "[A-Za-z_*:][A-Za-z0-9_*:./ éλ]{0,16}";
        let crowded = (0x1000u64..0x1400, 1u64..0x100, name)
            .prop_map(|(start, size, name)| PerfMapEntry { start, size, name });
        let anywhere = (any::<u64>(), any::<u64>(), name).prop_map(|(start, size, name)| {
            let room = u64::MAX - start;
            let start = if room == 0 { start - 1 } else { start };
            let size = 1 + size % (u64::MAX - start);
            PerfMapEntry { start, size, name }
        });
        prop_oneof![4 => crowded, 1 => anywhere]
    }

    /// Writes an entry the way different runtimes do: bare or `0x`, lower or upper case, `\n` or
    /// `\r\n`.
    fn write_entry(e: &PerfMapEntry, style: u8) -> String {
        let (start, size) = match style % 3 {
            0 => (format!("{:x}", e.start), format!("{:x}", e.size)),
            1 => (format!("0x{:x}", e.start), format!("0x{:x}", e.size)),
            _ => (format!("{:X}", e.start), format!("0X{:X}", e.size)),
        };
        let eol = if style >= 3 { "\r\n" } else { "\n" };
        format!("{start} {size} {}{eol}", e.name)
    }

    /// Lines that stress the parser: arbitrary text, near-valid shapes, long hex, bare spaces.
    fn nasty_line() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9a-fA-Fx \r\t+-]{0,40}",
            "(0x)?[0-9a-f]{1,300} (0x)?[0-9a-f]{1,300} [^\n]{0,20}",
            " {0,50}",
            "\\PC{0,60}",
            (valid_entry(), 0u8..6).prop_map(|(e, s)| write_entry(&e, s)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// `parse_line` and `extend_from_text` never panic, whatever the text and however it is cut,
        /// and lookups afterwards do not either.
        #[test]
        fn never_panics(
            lines in prop::collection::vec(nasty_line(), 0..12),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
            probes in prop::collection::vec(any::<u64>(), 0..4),
        ) {
            for line in &lines {
                let _ = parse_line(line);
            }
            let text = lines.join("\n");
            let mut map = PerfMap::new();
            let mut bad = 0;
            for chunk in split_text(&text, &cuts) {
                bad += map.extend_from_text(&chunk);
            }
            // Every completed line is either an entry or counted as malformed, none both or neither.
            prop_assert_eq!(bad + map.len(), text.matches('\n').count());
            // Bounded memory: the partial line never outgrows its cap, whatever the input.
            prop_assert!(map.pending.len() <= MAX_LINE_BYTES);
            prop_assert!(map.len() <= MAX_ENTRIES);
            for probe in probes {
                let _ = map.lookup(probe);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Fed in arbitrary chunks with lookups in between, the map keeps every valid entry, and each
        /// entry's first and last byte, its end and random addresses look up to the newest entry
        /// covering them, as a reverse scan of all entries says.
        #[test]
        fn lookup_matches_naive_model(
            entries in prop::collection::vec((valid_entry(), 0u8..6), 0..40),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            probes in prop::collection::vec(0x0f00u64..0x1600, 0..16),
        ) {
            let text: String = entries.iter().map(|(e, s)| write_entry(e, *s)).collect();
            let mut map = PerfMap::new();
            for chunk in split_text(&text, &cuts) {
                prop_assert_eq!(map.extend_from_text(&chunk), 0);
                // Interleaved lookups exercise folding new entries into an existing index.
                for &probe in &probes {
                    let expected = naive_lookup(map.entries(), probe);
                    prop_assert_eq!(lookup_index(&mut map, probe), expected);
                }
            }
            let expected: Vec<PerfMapEntry> = entries.iter().map(|(e, _)| e.clone()).collect();
            prop_assert_eq!(map.entries(), expected.as_slice());
            for e in &expected {
                for address in [e.start, e.start + e.size - 1, e.start + e.size] {
                    let want = naive_lookup(&expected, address);
                    prop_assert_eq!(lookup_index(&mut map, address), want, "address {:#x}", address);
                }
            }
            for &probe in &probes {
                prop_assert_eq!(lookup_index(&mut map, probe), naive_lookup(&expected, probe));
            }
        }

        /// Cutting the text into chunks changes neither the entries, nor the malformed count, nor the
        /// held-back partial line, nor any lookup, compared with feeding it whole.
        #[test]
        fn chunking_does_not_change_result(
            lines in prop::collection::vec(nasty_line(), 0..16),
            trailing_newline in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
            probes in prop::collection::vec(0x0f00u64..0x1600, 0..8),
        ) {
            let mut text = lines.join("\n");
            if trailing_newline {
                text.push('\n');
            }
            let mut whole = PerfMap::new();
            let whole_bad = whole.extend_from_text(&text);
            let mut chunked = PerfMap::new();
            let mut chunked_bad = 0;
            for chunk in split_text(&text, &cuts) {
                chunked_bad += chunked.extend_from_text(&chunk);
            }
            prop_assert_eq!(chunked_bad, whole_bad);
            prop_assert_eq!(chunked.entries(), whole.entries());
            prop_assert_eq!(&chunked.pending, &whole.pending);
            // Completing the held-back line must also agree.
            prop_assert_eq!(chunked.extend_from_text("\n"), whole.extend_from_text("\n"));
            prop_assert_eq!(chunked.entries(), whole.entries());
            let starts: Vec<u64> = whole.entries().iter().map(|e| e.start).collect();
            for address in starts.into_iter().chain(probes) {
                prop_assert_eq!(lookup_index(&mut chunked, address), lookup_index(&mut whole, address));
            }
        }
    }
}
