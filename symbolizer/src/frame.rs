//! The plain types a symbolization produces.

use std::sync::Arc;

/// An address taken from a stack, with what kind of address it is: the first frame of a stack is the
/// interrupted instruction, every other frame a return address, which points *after* the call. Return
/// addresses are looked up one byte earlier, or a call at the very end of a function is attributed to
/// the next function (or the next line or inline scope).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameAddress {
    InstructionPointer(u64),
    ReturnAddress(u64),
}

impl FrameAddress {
    /// Classifies the `index`-th address of a stack listed innermost first.
    pub fn from_stack_index(index: usize, address: u64) -> Self {
        if index == 0 {
            FrameAddress::InstructionPointer(address)
        } else {
            FrameAddress::ReturnAddress(address)
        }
    }

    /// The address to look up: inside the call instruction for a return address.
    pub fn lookup_address(self) -> u64 {
        match self {
            FrameAddress::InstructionPointer(address) => address,
            FrameAddress::ReturnAddress(address) => address.saturating_sub(1),
        }
    }
}

/// Where a frame runs; folded output marks kernel frames `_[k]`, inlined ones `_[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    User,
    Kernel,
    /// A function inlined into its caller (which is the frame before it).
    Inlined,
    /// JIT-compiled code, named from the runtime's perf map.
    Jit,
}

/// One named frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled function name, without its source location.
    pub name: Arc<str>,
    pub kind: FrameKind,
    /// The name as the module's symbol table or DWARF spells it (mangled), when it differs from `name`.
    pub system_name: Option<Arc<str>>,
    /// The source file the frame is at (as the debug info names it), when known.
    pub file: Option<Arc<str>>,
    /// The source line the frame is at: for a caller, its call into the next frame.
    pub line: Option<u32>,
}

impl Frame {
    /// A frame known only by its name.
    pub fn new(name: impl Into<Arc<str>>, kind: FrameKind) -> Self {
        Frame {
            name: name.into(),
            kind,
            system_name: None,
            file: None,
            line: None,
        }
    }
}

/// Why an address has no name. Counted for the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnknownReason {
    /// The process was gone before its memory map could be read.
    ProcessNotSnapshotted,
    /// The address is in no file-backed executable mapping of the process (anonymous or JIT code).
    NotInModule,
    /// The module is known but has no symbol covering the address (stripped, or padding).
    NoSymbol,
    /// The module could not be opened or parsed.
    ModuleUnreadable,
    /// A kernel address outside every kallsyms symbol.
    UnknownKernelAddress,
    /// JIT code of a process whose perf map was dropped to keep all perf maps within their budget.
    PerfMapEvicted,
    /// The module was closed to keep the modules' descriptors within their budget, and could not
    /// be opened again (no live process maps it any more).
    ModuleClosed,
    /// The module's symbol tables hold more symbols than blazesym may sort (see the namer's
    /// `file_check`): hostile, or far larger than any real program's.
    SymbolTablesTooLarge,
}

impl UnknownReason {
    pub fn describe(self) -> &'static str {
        match self {
            UnknownReason::ProcessNotSnapshotted => "process exited before its memory map was read",
            UnknownReason::NotInModule => {
                "address not in a file-backed mapping (anonymous or JIT code)"
            }
            UnknownReason::NoSymbol => "no symbol covers the address (stripped module?)",
            UnknownReason::ModuleUnreadable => "module could not be read",
            UnknownReason::UnknownKernelAddress => "kernel address not in kallsyms",
            UnknownReason::PerfMapEvicted => {
                "JIT code whose perf map was dropped to keep all perf maps within \
                 --max-perf-maps-size"
            }
            UnknownReason::SymbolTablesTooLarge => {
                "module whose symbol tables hold more symbols than are sorted for naming (-v names \
                 it)"
            }
            UnknownReason::ModuleClosed => {
                "module closed to keep open modules within --max-module-fds, and no live process \
                 maps it to reopen it"
            }
        }
    }
}

/// What one address symbolizes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Symbol {
    /// The function, then the functions inlined into it at this address, outermost first.
    Named(Vec<Frame>),
    /// No name; `module` is the basename of the containing module when known, `offset` the file offset
    /// within it (or the address itself when there is no module).
    Unknown {
        module: Option<Arc<str>>,
        offset: u64,
        reason: UnknownReason,
    },
}
