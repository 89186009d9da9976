//! Naming Python frames: a code object's qualified name, file and line table, read once from the
//! process's memory and cached by address.
//!
//! A code object is immutable once created, but it can be freed and its address reused by another,
//! so every lookup re-reads the object's header (one read of a few hundred bytes) and uses the cache
//! only if the pointers it holds (type, names, file, line table) and its first line are unchanged.
//! When the process is gone and nothing can be read, the cached entry is the best answer there is.
//!
//! The object can also be replaced between the sample and its naming: a module's top-level code
//! runs once at import and is freed, and the next function of its size takes its address (a
//! startup import chain named `sort_py` that way). So the walker takes a check of the object with
//! each frame ([`code_check`] of three pointers no code object changes), and a frame is named only
//! from an object with the same check: cached by (address, check), or read now; none is
//! `[python?]`, never another function's name.
//!
//! All of it is hostile input: strings are capped at [`MAX_STRING_CHARS`] and must be compact
//! (ASCII, Latin-1, UCS-2 or UCS-4 code points that are valid characters), line tables at
//! [`MAX_LINE_TABLE_BYTES`], and the cache at [`MAX_CODE_OBJECTS`] entries and [`MAX_CACHED_BYTES`]
//! bytes (it is emptied when either is reached, so a process that churns code objects costs a
//! bounded amount, paid again, never more).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::layout::{frame_model, line_table, Layout};
use super::lines::line_at;
use super::memory::{Memory, ProcessMemory};
use super::{PythonFrame, PythonRuntime};

/// Most code objects cached per process (a large application has tens of thousands of functions;
/// the ones sampled are far fewer).
pub const MAX_CODE_OBJECTS: usize = 16 * 1024;

/// Most bytes of names, file names and line tables cached per process.
pub const MAX_CACHED_BYTES: usize = 16 << 20;

/// Most bytes cached by all code readers of the session together: the per-process bound times the
/// processes alive at once could otherwise add up (a machine running many Python processes, or
/// hostile ones with the longest line tables). A reader that would pass it empties its own cache;
/// if that is not enough, it names frames without caching them (counted in `uncached`).
pub const MAX_TOTAL_CACHED_BYTES: usize = 256 << 20;

/// Bytes cached by every reader now.
static TOTAL_CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// A share of a byte budget: what a reader holds, given back when it drops or empties its cache.
struct Budget {
    held: &'static AtomicUsize,
    limit: usize,
}

impl Budget {
    fn reserve(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

/// Longest name or file name read, in code points; a longer one is not believed.
pub const MAX_STRING_CHARS: u64 = 4096;

/// Longest line table read; a longer one gives frames without lines.
pub const MAX_LINE_TABLE_BYTES: u64 = 256 << 10;

/// Most bytes of a code object's header read per lookup (3.13's `co_code_adaptive` is at 200).
const HEADER_BYTES: usize = 256;

/// Bytes of a code object's header to read: up to the end of the last member used, and no further,
/// so a small object at the end of a mapping is still read whole.
fn header_len(layout: &Layout) -> usize {
    let ends = [
        layout.object_type,
        layout.code_name,
        layout.code_qualname,
        layout.code_filename,
        layout.code_linetable,
    ]
    .into_iter()
    .filter(|&offset| Layout::has(offset))
    .map(|offset| offset as usize + 8)
    .chain([layout.code_firstlineno as usize + 4])
    .chain(check_offset(layout).map(|offset| offset as usize + 8 * CHECKED_WORDS));
    ends.max().unwrap_or(HEADER_BYTES).min(HEADER_BYTES)
}

/// Pointers at [`check_offset`] that a frame's check covers.
pub const CHECKED_WORDS: usize = 3;

/// Where in a code object the [`CHECKED_WORDS`] pointers a frame's check covers start: at
/// `co_filename`, when the two members after it are ones a code object never changes (3.8–3.10:
/// `co_name` and the line table; 3.11+: `co_name` and `co_qualname`). `None`: frames carry no
/// check, and are named from whatever lives at their address.
pub fn check_offset(layout: &Layout) -> Option<u32> {
    let start = layout.code_filename;
    let fixed = [
        layout.code_name,
        layout.code_qualname,
        layout.code_linetable,
    ];
    let checked = (1..CHECKED_WORDS as u32).all(|word| {
        start
            .checked_add(8 * word)
            .is_some_and(|offset| fixed.contains(&offset))
    });
    (Layout::has(start) && checked).then_some(start)
}

/// A frame's check of its code object, from the words at [`check_offset`]. The BPF walker computes
/// the same when it samples the frame (`python_code_check` in `bpf/src/python.bpf.h`). Never 0,
/// which means "no check".
pub fn code_check(words: [u64; CHECKED_WORDS]) -> u64 {
    let check = words[0] ^ words[1].rotate_left(21) ^ words[2].rotate_left(42);
    check.max(1)
}

/// What the reader did, for `-v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeReaderStats {
    /// Lookups answered from the cache after the identity check.
    pub hits: u64,
    /// Code objects read.
    pub reads: u64,
    /// Cached entries found to belong to a freed code object (address reused), and read again
    /// (frames without a check).
    pub stale: u64,
    /// Frames left unknown: their code object was freed after the sample and its address now
    /// holds another (their checks differ), and it was not cached.
    pub replaced: u64,
    /// Times the cache was emptied because it was full.
    pub resets: u64,
    /// Frames left unknown: the code object could not be read (the process is gone and it was
    /// never cached, or the address is not mapped).
    pub unreadable: u64,
    /// Frames left unknown: the object is not a code object (wrong type).
    pub not_code: u64,
    /// Frames left unknown: a name or file name was not a string this reader believes.
    pub bad_string: u64,
    /// Line tables too long or unreadable (the frames keep their names, without lines).
    pub no_line_table: u64,
    /// Code objects named but not cached: every reader's caches together held
    /// [`MAX_TOTAL_CACHED_BYTES`].
    pub uncached: u64,
}

impl CodeReaderStats {
    /// Adds another reader's counts (the summary totals every process's).
    pub fn add(&mut self, other: &CodeReaderStats) {
        let CodeReaderStats {
            hits,
            reads,
            stale,
            replaced,
            resets,
            unreadable,
            not_code,
            bad_string,
            no_line_table,
            uncached,
        } = other;
        for (total, one) in [
            (&mut self.hits, hits),
            (&mut self.reads, reads),
            (&mut self.stale, stale),
            (&mut self.replaced, replaced),
            (&mut self.resets, resets),
            (&mut self.unreadable, unreadable),
            (&mut self.not_code, not_code),
            (&mut self.bad_string, bad_string),
            (&mut self.no_line_table, no_line_table),
            (&mut self.uncached, uncached),
        ] {
            *total = total.saturating_add(*one);
        }
    }

    /// Frames this reader left `[python?]`.
    pub fn unknown_frames(&self) -> u64 {
        self.replaced
            .saturating_add(self.unreadable)
            .saturating_add(self.not_code)
            .saturating_add(self.bad_string)
    }
}

struct Cached {
    /// The header fields that identify the object (see the module documentation).
    identity: [u64; 5],
    first_line: i32,
    qualname: Arc<str>,
    filename: Arc<str>,
    /// Empty when unreadable or too long.
    line_table: Box<[u8]>,
}

impl Cached {
    fn bytes(&self) -> usize {
        self.qualname.len() + self.filename.len() + self.line_table.len() + 64
    }
}

/// Names the Python frames of one process.
pub struct CodeReader {
    memory: Box<dyn Memory + Send>,
    runtime: PythonRuntime,
    /// By (address, check): with checks, objects that took turns at one address (a function
    /// made again and again) each keep their entry; without (check 0), one per address.
    cache: HashMap<(u64, u64), Cached>,
    cached_bytes: usize,
    /// [`MAX_CODE_OBJECTS`] and [`MAX_CACHED_BYTES`] (smaller in tests).
    limits: (usize, usize),
    /// The session's share of [`MAX_TOTAL_CACHED_BYTES`] (another in tests).
    budget: Budget,
    stats: CodeReaderStats,
}

impl Drop for CodeReader {
    fn drop(&mut self) {
        self.budget.release(self.cached_bytes);
    }
}

impl CodeReader {
    /// A reader of process `pid`'s memory (`/proc/PID/mem`, opened now: see [`ProcessMemory`]).
    pub fn new(pid: u32, runtime: &PythonRuntime) -> io::Result<Self> {
        Ok(Self::with_memory(
            Box::new(ProcessMemory::open(pid)?),
            runtime,
        ))
    }

    pub fn with_memory(memory: Box<dyn Memory + Send>, runtime: &PythonRuntime) -> Self {
        CodeReader {
            memory,
            runtime: runtime.clone(),
            cache: HashMap::new(),
            cached_bytes: 0,
            limits: (MAX_CODE_OBJECTS, MAX_CACHED_BYTES),
            budget: Budget {
                held: &TOTAL_CACHED_BYTES,
                limit: MAX_TOTAL_CACHED_BYTES,
            },
            stats: CodeReaderStats::default(),
        }
    }

    pub fn stats(&self) -> CodeReaderStats {
        self.stats
    }

    /// Entries and bytes cached now.
    pub fn cache_size(&self) -> (usize, usize) {
        (self.cache.len(), self.cached_bytes)
    }

    /// The frame running code object `code` at `instruction`, the value the walker read at
    /// [`Layout::frame_instr`] ([`Layout::frame_instr_size`] bytes, zero-extended): `f_lasti`
    /// (3.8–3.10) or the instruction pointer (3.11+). `check` is the object's [`code_check`] when
    /// it was sampled, or 0 if the walker took none.
    pub fn frame(&mut self, code: u64, instruction: u64, check: u64) -> PythonFrame {
        let layout = self.runtime.layout;
        let key = (code, check);
        if check != 0 {
            // The object sampled is the one cached, whatever lives at its address now.
            if let Some(cached) = self.cache.get(&key) {
                self.stats.hits += 1;
                return named(&self.runtime, cached, code, instruction);
            }
        }
        let mut header = [0u8; HEADER_BYTES];
        let header = self
            .memory
            .read(code, &mut header[..header_len(&layout)])
            .then_some(header);
        let now = header.map(|header| identity(&layout, &header));
        if check == 0 {
            let cached = match (self.cache.get(&key), now) {
                (Some(cached), Some((identity, first_line, _)))
                    if cached.identity == identity && cached.first_line == first_line =>
                {
                    Some(cached)
                }
                // The process is gone (or the page unmapped): what was read before is all there
                // is.
                (Some(cached), None) => Some(cached),
                (Some(_), Some(_)) => {
                    self.stats.stale += 1;
                    None
                }
                (None, _) => None,
            };
            if let Some(cached) = cached {
                self.stats.hits += 1;
                return named(&self.runtime, cached, code, instruction);
            }
        }
        let Some((identity, first_line, check_now)) = now else {
            self.stats.unreadable += 1;
            return PythonFrame::unknown();
        };
        if check != 0 && check_now != check {
            self.stats.replaced += 1;
            return PythonFrame::unknown();
        }
        if self.runtime.code_type != 0 && identity[0] != self.runtime.code_type {
            self.stats.not_code += 1;
            return PythonFrame::unknown();
        }
        let Some(entry) = self.read_code(identity, first_line) else {
            self.stats.bad_string += 1;
            return PythonFrame::unknown();
        };
        self.stats.reads += 1;
        if let Some(old) = self.cache.remove(&key) {
            self.cached_bytes -= old.bytes();
            self.budget.release(old.bytes());
        }
        let bytes = entry.bytes();
        let (max_entries, max_bytes) = self.limits;
        if self.cache.len() >= max_entries || self.cached_bytes + bytes > max_bytes {
            self.clear();
        }
        if !self.budget.reserve(bytes) {
            // Other readers hold the budget: what this one holds goes first.
            self.clear();
            if !self.budget.reserve(bytes) {
                self.stats.uncached += 1;
                return self.named(&entry, code, instruction);
            }
        }
        self.cached_bytes += bytes;
        let cached = self.cache.entry(key).or_insert(entry);
        let (cached, runtime) = (&*cached, &self.runtime);
        named(runtime, cached, code, instruction)
    }

    /// Empties the cache, giving its bytes back to the budget.
    fn clear(&mut self) {
        self.budget.release(self.cached_bytes);
        self.cache.clear();
        self.cached_bytes = 0;
        self.stats.resets += 1;
    }

    fn named(&self, cached: &Cached, code: u64, instruction: u64) -> PythonFrame {
        named(&self.runtime, cached, code, instruction)
    }

    /// Reads a code object's strings and line table, given its identity fields.
    fn read_code(&mut self, identity: [u64; 5], first_line: i32) -> Option<Cached> {
        let layout = self.runtime.layout;
        let [_, name, qualname, filename, table] = identity;
        let qualname = if Layout::has(layout.code_qualname) {
            qualname
        } else {
            name
        };
        let qualname = read_string(&*self.memory, &layout, qualname)?;
        let filename = read_string(&*self.memory, &layout, filename)?;
        let line_table = read_bytes(&*self.memory, &layout, table, MAX_LINE_TABLE_BYTES);
        if line_table.is_none() {
            self.stats.no_line_table += 1;
        }
        Some(Cached {
            identity,
            first_line,
            qualname,
            filename,
            line_table: line_table.unwrap_or_default(),
        })
    }
}

fn named(runtime: &PythonRuntime, cached: &Cached, code: u64, instruction: u64) -> PythonFrame {
    PythonFrame {
        qualname: cached.qualname.clone(),
        filename: cached.filename.clone(),
        line: line(&runtime.layout, cached, code, instruction),
    }
}

/// (type, name, qualname, filename, line table) pointers, the first line and the [`code_check`] (0
/// without a [`check_offset`]) from a code object's header.
fn identity(layout: &Layout, header: &[u8; HEADER_BYTES]) -> ([u64; 5], i32, u64) {
    let word = |offset: u32| -> u64 {
        let at = offset as usize;
        header.get(at..at.saturating_add(8)).map_or(0, |bytes| {
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        })
    };
    let first_line = header
        .get(layout.code_firstlineno as usize..)
        .and_then(|rest| rest.get(..4))
        .map_or(0, |bytes| {
            i32::from_le_bytes(bytes.try_into().expect("4 bytes"))
        });
    let check = check_offset(layout).map_or(0, |start| {
        code_check(std::array::from_fn(|index| word(start + 8 * index as u32)))
    });
    (
        [
            word(layout.object_type),
            word(layout.code_name),
            word(layout.code_qualname),
            word(layout.code_filename),
            word(layout.code_linetable),
        ],
        first_line,
        check,
    )
}

/// The line of `instruction` in `cached`, per the layout's frame model (see [`CodeReader::frame`]).
fn line(layout: &Layout, cached: &Cached, code: u64, instruction: u64) -> Option<u32> {
    let byte_offset = if layout.frame_model == frame_model::FRAME_OBJECT {
        // f_lasti, an int: -1 before the first instruction.
        let lasti = instruction as u32 as i32;
        if lasti < 0 {
            return u32::try_from(cached.first_line).ok().filter(|&l| l > 0);
        }
        let unit = if layout.line_table == line_table::LINETABLE_310 {
            2
        } else {
            1
        };
        lasti as u64 * unit
    } else {
        let bytecode = code.checked_add(u64::from(layout.code_code_adaptive))?;
        match instruction.checked_sub(bytecode) {
            Some(offset) => offset,
            // Before the first instruction: a frame still being set up.
            None => return u32::try_from(cached.first_line).ok().filter(|&l| l > 0),
        }
    };
    line_at(
        layout.line_table,
        &cached.line_table,
        cached.first_line,
        byte_offset,
    )
}

/// A `bytes` object's contents, if it is at most `cap` bytes long.
fn read_bytes(memory: &dyn Memory, layout: &Layout, address: u64, cap: u64) -> Option<Box<[u8]>> {
    let size = memory.read_u64(address.checked_add(u64::from(layout.bytes_size))?)?;
    if size > cap {
        return None;
    }
    let mut bytes = vec![0u8; size as usize];
    memory
        .read(
            address.checked_add(u64::from(layout.bytes_data))?,
            &mut bytes,
        )
        .then(|| bytes.into_boxed_slice())
}

/// A compact `str` object's text (see the module documentation), with control characters replaced
/// so the name cannot break the folded or SVG output.
fn read_string(memory: &dyn Memory, layout: &Layout, address: u64) -> Option<Arc<str>> {
    let state = memory.read_u32(address.checked_add(u64::from(layout.unicode_state))?)?;
    let length = memory.read_u64(address.checked_add(u64::from(layout.unicode_length))?)?;
    if length > MAX_STRING_CHARS {
        return None;
    }
    let kind = (state >> layout.unicode_kind_shift) & 7;
    let compact = state >> layout.unicode_compact_bit & 1 == 1;
    let ascii = state >> layout.unicode_ascii_bit & 1 == 1;
    if !compact || !matches!(kind, 1 | 2 | 4) || (ascii && kind != 1) {
        return None;
    }
    let data = if ascii {
        layout.unicode_ascii_data
    } else {
        layout.unicode_compact_data
    };
    let mut bytes = vec![0u8; length as usize * kind as usize];
    if !memory.read(address.checked_add(u64::from(data))?, &mut bytes) {
        return None;
    }
    let text: Option<String> = match kind {
        1 if ascii => bytes
            .iter()
            .map(|&b| b.is_ascii().then_some(b as char))
            .collect(),
        1 => Some(bytes.iter().map(|&b| b as char).collect()),
        2 => bytes
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    let text: String = text?
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    Some(Arc::from(text))
}

#[cfg(test)]
mod tests {
    //! Made-up code objects in made-up memory, laid out as 3.12 lays them out, one test per
    //! defence.
    use super::*;
    use crate::python::layout;
    use crate::python::memory::FakeMemory;

    const CODE: u64 = 0x10_000;
    const NAME: u64 = 0x20_000;
    const QUALNAME: u64 = 0x30_000;
    const FILENAME: u64 = 0x40_000;
    const TABLE: u64 = 0x50_000;
    const CODE_TYPE: u64 = 0x7777_0000;
    const FIRST_LINE: i32 = 40;

    fn layout() -> Layout {
        layout::table((3, 12)).expect("3.12")
    }

    fn runtime() -> PythonRuntime {
        PythonRuntime {
            version: (3, 12),
            runtime_address: 0,
            layout: layout(),
            code_type: CODE_TYPE,
            eval_frame: None,
        }
    }

    fn put_u64(bytes: &mut [u8], at: u32, value: u64) {
        bytes[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// A compact string object: `kind` bytes per code point, ASCII if `ascii`.
    fn string(code_points: &[u32], kind: u32, ascii: bool, length: u64) -> Vec<u8> {
        let l = layout();
        let data = if ascii {
            l.unicode_ascii_data
        } else {
            l.unicode_compact_data
        };
        let mut bytes = vec![0u8; data as usize];
        put_u64(&mut bytes, l.unicode_length, length);
        let state = kind << l.unicode_kind_shift
            | 1 << l.unicode_compact_bit
            | u32::from(ascii) << l.unicode_ascii_bit;
        bytes[l.unicode_state as usize..l.unicode_state as usize + 4]
            .copy_from_slice(&state.to_le_bytes());
        for &c in code_points {
            bytes.extend_from_slice(&c.to_le_bytes()[..kind as usize]);
        }
        bytes.extend_from_slice(&[0; 4]);
        bytes
    }

    fn ascii(text: &str) -> Vec<u8> {
        let points: Vec<u32> = text.bytes().map(u32::from).collect();
        string(&points, 1, true, points.len() as u64)
    }

    fn bytes_object(data: &[u8], size: u64) -> Vec<u8> {
        let l = layout();
        let mut bytes = vec![0u8; l.bytes_data as usize];
        put_u64(&mut bytes, l.bytes_size, size);
        bytes.extend_from_slice(data);
        bytes
    }

    fn code_object(name: u64, code_type: u64) -> Vec<u8> {
        let l = layout();
        let mut bytes = vec![0u8; HEADER_BYTES + 64];
        put_u64(&mut bytes, l.object_type, code_type);
        put_u64(&mut bytes, l.code_name, name);
        put_u64(&mut bytes, l.code_qualname, QUALNAME);
        put_u64(&mut bytes, l.code_filename, FILENAME);
        put_u64(&mut bytes, l.code_linetable, TABLE);
        let at = l.code_firstlineno as usize;
        bytes[at..at + 4].copy_from_slice(&FIRST_LINE.to_le_bytes());
        bytes
    }

    /// 8 code units on line FIRST_LINE + 2.
    fn line_table() -> Vec<u8> {
        bytes_object(&[0x80 | 13 << 3 | 7, 4], 2)
    }

    fn memory() -> FakeMemory {
        memory_with(ascii("Klass.inner"))
    }

    /// The code object with `qualname` as the bytes of its qualified name.
    fn memory_with(qualname: Vec<u8>) -> FakeMemory {
        FakeMemory::default()
            .with(CODE, code_object(NAME, CODE_TYPE))
            .with(NAME, ascii("inner"))
            .with(QUALNAME, qualname)
            .with(FILENAME, ascii("/app/main.py"))
            .with(TABLE, line_table())
    }

    fn reader(memory: FakeMemory) -> CodeReader {
        CodeReader::with_memory(Box::new(memory), &runtime())
    }

    /// Unit 2 of the bytecode.
    fn instruction() -> u64 {
        CODE + u64::from(layout().code_code_adaptive) + 4
    }

    /// The check the walker took of the code object in [`memory`] (3.12: file, name, qualname).
    fn sampled() -> u64 {
        code_check([FILENAME, NAME, QUALNAME])
    }

    /// The memory of [`memory`] with another code object at `CODE`, named `other`, and its check.
    fn replaced() -> (FakeMemory, u64) {
        let other_name = 0x60_000;
        let mut memory = memory().with(other_name, ascii("other"));
        let mut header = code_object(other_name, CODE_TYPE);
        put_u64(&mut header, layout().code_qualname, other_name);
        memory.put(CODE, &header);
        (memory, code_check([FILENAME, other_name, other_name]))
    }

    /// A well-formed code object is named, with its line; the second lookup is a cache hit.
    #[test]
    fn python_code_object_is_named_and_cached() {
        let mut reader = reader(memory());
        let frame = reader.frame(CODE, instruction(), sampled());
        assert_eq!(&*frame.qualname, "Klass.inner");
        assert_eq!(&*frame.filename, "/app/main.py");
        assert_eq!(frame.line, Some(FIRST_LINE as u32 + 2));
        assert_eq!(reader.frame(CODE, instruction(), sampled()), frame);
        let stats = reader.stats();
        assert_eq!((stats.reads, stats.hits), (1, 1));
        // Before the first instruction (a frame being set up): the first line.
        assert_eq!(reader.frame(CODE, CODE, 0).line, Some(FIRST_LINE as u32));
    }

    /// Defence: a freed code object whose address now holds another one is read again, not taken
    /// from the cache.
    #[test]
    fn python_reused_code_address_is_read_again() {
        let (memory, other) = replaced();
        let mut reader = reader(self::memory());
        assert_eq!(
            &*reader.frame(CODE, instruction(), sampled()).qualname,
            "Klass.inner"
        );
        reader.memory = Box::new(memory);
        assert_eq!(&*reader.frame(CODE, instruction(), other).qualname, "other");
        // Both are cached now, by their checks.
        assert_eq!(
            &*reader.frame(CODE, instruction(), sampled()).qualname,
            "Klass.inner"
        );
        assert_eq!(reader.stats().reads, 2);
        // Without checks (a walker that took none), by what the header says now.
        let mut unchecked = self::reader(self::memory());
        unchecked.frame(CODE, instruction(), 0);
        unchecked.memory = Box::new(replaced().0);
        assert_eq!(&*unchecked.frame(CODE, instruction(), 0).qualname, "other");
        assert_eq!(unchecked.stats().stale, 1);
    }

    /// Defence: a frame whose code object was freed after the sample, its address taken by
    /// another function's, is not named after that function: from the cache if the object
    /// sampled was read before, else `[python?]`.
    #[test]
    fn python_code_object_replaced_since_the_sample_keeps_its_name_or_none() {
        let (memory, other) = replaced();
        let mut fresh = reader(memory);
        assert!(fresh.frame(CODE, instruction(), sampled()).is_unknown());
        assert_eq!(fresh.stats().replaced, 1);
        assert_eq!(&*fresh.frame(CODE, instruction(), other).qualname, "other");

        let mut reader = reader(self::memory());
        reader.frame(CODE, instruction(), sampled());
        reader.memory = Box::new(replaced().0);
        let frame = reader.frame(CODE, instruction(), sampled());
        assert_eq!(&*frame.qualname, "Klass.inner");
        assert_eq!(frame.line, Some(FIRST_LINE as u32 + 2));
    }

    #[test]
    fn python_exited_process_keeps_cached_names() {
        let mut reader = reader(memory());
        reader.frame(CODE, instruction(), 0);
        reader.memory = Box::new(FakeMemory::default());
        assert_eq!(
            &*reader.frame(CODE, instruction(), 0).qualname,
            "Klass.inner"
        );
        assert!(reader.frame(CODE + 0x1000, 0, 0).is_unknown());
        assert_eq!(reader.stats().unreadable, 1);
    }

    /// Defence: an object that is not a code object (wrong type) is not read as one.
    #[test]
    fn python_wrong_type_is_unknown() {
        let mut memory = memory();
        memory.put(CODE, &code_object(NAME, 0x1234));
        let mut reader = reader(memory);
        assert!(reader.frame(CODE, instruction(), 0).is_unknown());
        assert_eq!(reader.stats().not_code, 1);
    }

    /// Defence: absurd string lengths are refused before anything of that size is allocated or
    /// read.
    #[test]
    fn python_absurd_string_length_is_unknown() {
        for length in [MAX_STRING_CHARS + 1, 1 << 40, u64::MAX] {
            let mut reader = reader(memory_with(string(&[65], 1, true, length)));
            assert!(
                reader.frame(CODE, instruction(), 0).is_unknown(),
                "{length}"
            );
            assert_eq!(reader.stats().bad_string, 1);
        }
    }

    /// Defence: only compact strings of a valid kind, with valid code points, are believed.
    #[test]
    fn python_malformed_strings_are_unknown() {
        let mut not_compact = ascii("inner");
        not_compact[layout().unicode_state as usize] &= !(1 << layout().unicode_compact_bit);
        let cases = [
            ("kind 3", string(&[65, 66], 3, false, 2)),
            ("ASCII above 127", string(&[65, 200], 1, true, 2)),
            ("ASCII of kind 2", string(&[65, 66], 2, true, 2)),
            ("surrogate", string(&[65, 0xd800], 4, false, 2)),
            ("past U+10FFFF", string(&[0x11_0000], 4, false, 1)),
            ("not compact", not_compact),
            ("length past the data", string(&[65], 1, true, 100)),
        ];
        for (case, bytes) in cases {
            let mut reader = reader(memory_with(bytes));
            assert!(reader.frame(CODE, instruction(), 0).is_unknown(), "{case}");
        }
    }

    /// Latin-1, UCS-2 and UCS-4 names are decoded; control characters are replaced.
    #[test]
    fn python_non_ascii_names_are_decoded() {
        let mut name: Vec<u32> = "naïve_ƒ_🐍".chars().map(u32::from).collect();
        name.push(0x0a);
        let ucs2: Vec<u32> = "ƒ_x".chars().map(u32::from).collect();
        let mut memory = memory_with(string(&name, 4, false, name.len() as u64));
        memory = memory.with(0x70_000, string(&ucs2, 2, false, 3));
        let mut header = code_object(NAME, CODE_TYPE);
        put_u64(&mut header, layout().code_filename, 0x70_000);
        memory.put(CODE, &header);
        let frame = reader(memory).frame(CODE, instruction(), 0);
        assert_eq!(&*frame.qualname, "naïve_ƒ_🐍\u{fffd}");
        assert_eq!(&*frame.filename, "ƒ_x");
        let latin1 = memory_with(string(&[0x63, 0xe9], 1, false, 2));
        assert_eq!(&*reader(latin1).frame(CODE, 0, 0).qualname, "cé");
    }

    /// Defence: an absurd line table size keeps the name but gives no line.
    #[test]
    fn python_absurd_line_table_gives_no_line() {
        let mut memory = memory();
        memory.put(TABLE, &bytes_object(&[], u64::MAX));
        let mut reader = reader(memory);
        let frame = reader.frame(CODE, instruction(), 0);
        assert_eq!((&*frame.qualname, frame.line), ("Klass.inner", None));
        assert_eq!(reader.stats().no_line_table, 1);
    }

    /// A code object at the very end of readable memory is read: only the header members used are.
    #[test]
    fn python_code_object_at_the_end_of_a_mapping_is_read() {
        let mut code = code_object(NAME, CODE_TYPE);
        code.truncate(header_len(&layout()));
        assert!(code.len() < HEADER_BYTES);
        let memory = FakeMemory::default()
            .with(CODE, code)
            .with(QUALNAME, ascii("Klass.inner"))
            .with(FILENAME, ascii("/app/main.py"))
            .with(TABLE, line_table());
        assert_eq!(&*reader(memory).frame(CODE, 0, 0).qualname, "Klass.inner");
    }

    /// Defence: all readers together hold at most their shared budget; a reader past it empties its
    /// own cache, then names without caching; dropping a reader gives its bytes back.
    #[test]
    fn python_readers_share_one_budget() {
        let held: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let make = |limit| {
            let mut reader = reader(memory());
            reader.budget = Budget { held, limit };
            reader
        };
        let mut first = make(1000);
        first.frame(CODE, instruction(), 0);
        let one = first.cache_size().1;
        assert_eq!(held.load(Ordering::Relaxed), one);
        // A second reader whose entry does not fit beside the first one's: named, not cached.
        let mut second = make(one + one / 2);
        assert_eq!(
            &*second.frame(CODE, instruction(), 0).qualname,
            "Klass.inner"
        );
        assert_eq!(second.stats().uncached, 1);
        assert_eq!(held.load(Ordering::Relaxed), one);
        drop(first);
        assert_eq!(held.load(Ordering::Relaxed), 0);
        second.frame(CODE, instruction(), 0);
        assert_eq!(second.cache_size().1, one, "cached once the budget is free");
        drop(second);
        assert_eq!(held.load(Ordering::Relaxed), 0);
    }

    /// Defence: the cache never holds more than its bounds; it is emptied and refilled.
    #[test]
    fn python_code_cache_is_bounded() {
        let mut memory = memory();
        for index in 1..=10u64 {
            memory = memory.with(CODE + index * 0x1000, code_object(NAME, CODE_TYPE));
        }
        let mut reader = reader(memory);
        reader.limits = (4, MAX_CACHED_BYTES);
        for index in 0..=10u64 {
            assert!(!reader.frame(CODE + index * 0x1000, 0, 0).is_unknown());
            assert!(reader.cache_size().0 <= 4);
        }
        assert!(reader.stats().resets >= 2);
        reader.limits = (MAX_CODE_OBJECTS, 200);
        for index in 0..=10u64 {
            reader.frame(CODE + index * 0x1000, 0, 0);
            assert!(reader.cache_size().1 <= 200);
        }
    }
}
