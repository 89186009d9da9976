//! CPython, read from outside: where a process's interpreter keeps its threads and frames
//! ([`find_runtime`], [`Layout`]) and what a frame's code object says (its qualified name, file and
//! line: [`CodeReader`]).
//!
//! The BPF side walks the frames with the [`Layout`] offsets and records (code object address,
//! instruction) pairs; [`CodeReader`] names them afterwards from the process's memory. [`walk`] does
//! the same walk from userspace: the reference for the BPF walker, and what the tests read real
//! interpreters with. Nothing here asks anything of the process: no `-X perf`, no debug info, no
//! ptrace stop.
//!
//! Parts: `runtime` (finding the interpreter and its version), [`layout`] (per-version offsets,
//! tied to the pyenv builds' DWARF by `dwarf_check`), `debug_offsets` (3.13's own offsets), `code`
//! and `lines` (naming frames), [`memory`] (reading the process), `live_tests` (pyenv 3.8–3.13 and
//! Debian's 3.11, read from outside).
//!
//! Process memory is hostile input (see [`memory`]): every read is bounded, every length capped,
//! strings validated; what does not check out is a [`PythonFrame::unknown`] frame or a
//! [`NotPython`], never a hang or a large allocation. This module must not decide when a process may
//! be read (that is `processes`) nor touch BPF.

mod code;
mod debug_offsets;
pub mod layout;
mod lines;
pub mod memory;
mod runtime;
pub mod walk;

#[cfg(test)]
mod dwarf_check;
#[cfg(test)]
mod live_tests;

use std::sync::Arc;

pub use code::{
    check_offset, CodeReader, CodeReaderStats, MAX_CACHED_BYTES, MAX_CODE_OBJECTS,
    MAX_TOTAL_CACHED_BYTES,
};
pub use layout::{Layout, ABSENT};
pub use memory::{Memory, ProcessMemory};
pub use runtime::{find_runtime, runtime_from_symbols, RuntimeSymbols};

/// One process's CPython interpreter, as the BPF walker and [`CodeReader`] need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonRuntime {
    /// (major, minor), e.g. (3, 11).
    pub version: (u8, u8),
    /// Absolute address of `_PyRuntime` in the process.
    pub runtime_address: u64,
    /// Member offsets for this version (3.13: from the process's own `_Py_DebugOffsets`).
    pub layout: Layout,
    /// Absolute address of `PyCode_Type`, the type every code object points to (`ob_type`), or 0 if
    /// the module does not export it. Lets a reader tell a code object from anything else
    /// (3.13's `f_executable` may be another object).
    pub code_type: u64,
    /// Absolute addresses of `_PyEval_EvalFrameDefault`, the native frame that runs Python frames,
    /// if its size is known from the module's symbols.
    pub eval_frame: Option<std::ops::Range<u64>>,
}

/// Why a process that maps a CPython interpreter gets no Python frames (for the summary).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotPython {
    #[error("CPython {}.{} is not supported (3.8 to 3.13 are)", .version.0, .version.1)]
    UnsupportedVersion { version: (u8, u8) },
    #[error("free-threaded CPython {}.{} is not supported", .version.0, .version.1)]
    FreeThreaded { version: (u8, u8) },
    #[error("cannot tell the CPython version of {module}")]
    UnknownVersion { module: String },
    #[error("cannot read {what} of CPython in {module}")]
    Unreadable { module: String, what: &'static str },
    #[error("CPython {}.{}'s _Py_DebugOffsets are invalid: {reason}", .version.0, .version.1)]
    BadDebugOffsets { version: (u8, u8), reason: String },
    /// The process's structures do not fit the layout of its version (a patched or debug build).
    #[error("CPython {}.{} in {module} is not laid out as emberprof expects: {reason}", .version.0, .version.1)]
    LayoutMismatch {
        version: (u8, u8),
        module: String,
        reason: String,
    },
}

/// A Python frame, named.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PythonFrame {
    /// `co_qualname` (`Class.method`) on 3.11+, `co_name` before; [`UNKNOWN_NAME`] when the code
    /// object could not be read or did not check out.
    pub qualname: Arc<str>,
    /// `co_filename`; empty when unknown.
    pub filename: Arc<str>,
    /// The line being run, from the instruction offset and the line table.
    pub line: Option<u32>,
}

/// The name of a Python frame whose code object could not be read.
pub const UNKNOWN_NAME: &str = "[python?]";

impl PythonFrame {
    /// A frame whose code object could not be read or did not check out.
    pub fn unknown() -> Self {
        PythonFrame {
            qualname: Arc::from(UNKNOWN_NAME),
            filename: Arc::from(""),
            line: None,
        }
    }

    pub fn is_unknown(&self) -> bool {
        &*self.qualname == UNKNOWN_NAME
    }
}
