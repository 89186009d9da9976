//! Naming Python frames: a code object's qualified name, file and line table, read once from the
//! process's memory and cached by address.
//!
//! A code object is immutable once created, but it can be freed and its address reused by another,
//! so every lookup re-reads the object's header (one read of a few hundred bytes) and uses the cache
//! only if the pointers it holds (type, names, file, line table) and its first line are unchanged.
//! When the process is gone and nothing can be read, the cached entry is the best answer there is.
//!
//! All of it is hostile input: strings are capped at [`MAX_STRING_CHARS`] and must be compact
//! (ASCII, Latin-1, UCS-2 or UCS-4 code points that are valid characters), line tables at
//! [`MAX_LINE_TABLE_BYTES`], and the cache at [`MAX_CODE_OBJECTS`] entries and [`MAX_CACHED_BYTES`]
//! bytes (it is emptied when either is reached, so a process that churns code objects costs a
//! bounded amount, paid again, never more).

use std::collections::HashMap;
use std::io;
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

/// Longest name or file name read, in code points; a longer one is not believed.
pub const MAX_STRING_CHARS: u64 = 4096;

/// Longest line table read; a longer one gives frames without lines.
pub const MAX_LINE_TABLE_BYTES: u64 = 256 << 10;

/// Bytes of a code object's header read per lookup: past every member used in every version
/// (3.13's `co_code_adaptive` is at 200).
const HEADER_BYTES: usize = 256;

/// What the reader did, for `-v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeReaderStats {
    /// Lookups answered from the cache after the identity check.
    pub hits: u64,
    /// Code objects read.
    pub reads: u64,
    /// Cached entries found to belong to a freed code object (address reused), and read again.
    pub stale: u64,
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
    cache: HashMap<u64, Cached>,
    cached_bytes: usize,
    stats: CodeReaderStats,
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
    /// (3.8–3.10) or the instruction pointer (3.11+).
    pub fn frame(&mut self, code: u64, instruction: u64) -> PythonFrame {
        let layout = self.runtime.layout;
        let mut header = [0u8; HEADER_BYTES];
        let header = self.memory.read(code, &mut header).then_some(header);
        let identity = header.map(|header| identity(&layout, &header));
        let cached = match (self.cache.get(&code), identity) {
            (Some(cached), Some(identity)) if cached.identity == identity.0 => {
                self.stats.hits += 1;
                Some(cached)
            }
            // The process is gone (or the page unmapped): what was read before is all there is.
            (Some(cached), None) => {
                self.stats.hits += 1;
                Some(cached)
            }
            (Some(_), Some(_)) => {
                self.stats.stale += 1;
                None
            }
            (None, _) => None,
        };
        if let Some(cached) = cached {
            return self.named(cached, code, instruction);
        }
        let Some((identity, first_line)) = identity else {
            self.stats.unreadable += 1;
            return PythonFrame::unknown();
        };
        if self.runtime.code_type != 0 && identity[0] != self.runtime.code_type {
            self.stats.not_code += 1;
            return PythonFrame::unknown();
        }
        let Some(entry) = self.read_code(identity, first_line) else {
            self.stats.bad_string += 1;
            return PythonFrame::unknown();
        };
        self.stats.reads += 1;
        if self.cache.len() >= MAX_CODE_OBJECTS
            || self.cached_bytes + entry.bytes() > MAX_CACHED_BYTES
        {
            self.cache.clear();
            self.cached_bytes = 0;
            self.stats.resets += 1;
        }
        self.cached_bytes += entry.bytes();
        if let Some(old) = self.cache.insert(code, entry) {
            self.cached_bytes -= old.bytes();
        }
        let cached = &self.cache[&code];
        self.named(cached, code, instruction)
    }

    fn named(&self, cached: &Cached, code: u64, instruction: u64) -> PythonFrame {
        PythonFrame {
            qualname: cached.qualname.clone(),
            filename: cached.filename.clone(),
            line: line(&self.runtime.layout, cached, code, instruction),
        }
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

/// (type, name, qualname, filename, line table) pointers and the first line from a code object's
/// header.
fn identity(layout: &Layout, header: &[u8; HEADER_BYTES]) -> ([u64; 5], i32) {
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
    (
        [
            word(layout.object_type),
            word(layout.code_name),
            word(layout.code_qualname),
            word(layout.code_filename),
            word(layout.code_linetable),
        ],
        first_line,
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
