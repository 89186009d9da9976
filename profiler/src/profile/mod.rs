//! The symbolized profile: what a capture is once every address has a name, and what every output
//! (folded stacks, SVG, pprof) is rendered from. `record` builds it from a capture (`build`);
//! `report` and `diff` read it back from pprof or folded files (`crate::input`).
//!
//! Each sample's values are typed by the profile (`values`: samples, CPU and off-CPU time), and a
//! location is a native address or an interpreter's frame (`MappingKind::Interpreted`).
//!
//! Plain data only: no symbolizer, no inferno, no protobuf here. Stacks are paths of indices into
//! `locations` in one tree of calls (`stacks`), so a location (one address of one module) and its
//! names are stored once however many samples pass through it, and a stack once however many
//! samples have it.

mod build;
pub mod filter;
mod intern;
mod merge;
pub mod policy;
mod python;
mod stacks;
#[cfg(test)]
pub mod testdata;
pub mod truncation;
pub mod values;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use emberprof_symbolizer::UnknownReason;
pub use emberprof_symbolizer::{Frame, FrameKind};

pub use build::{build, split_by_process, JIT_MAPPING, KERNEL_MAPPING};
pub use merge::{EndedLabels, MergedProfile, LABELLED_PROCESSES};
pub use stacks::{StackId, Stacks, EMPTY_STACK};
pub use truncation::Truncation;
pub use values::{ValueChoice, ValueType, ValueTypes, Values};

/// The frame put right under the process (or thread) root of a user stack that does not reach a
/// process or thread entry (see `truncation`).
pub const TRUNCATED_FRAME: &str = "[truncated]";
/// The frame that ends a stack cut at `--max-profile-size`: what ran below it is not kept (see
/// `intern::Interner::set_limit`).
pub const OVER_BUDGET_FRAME: &str = "[over budget]";
/// The leaf frame of every stack a thread spent time switched out in (`--off-cpu`): Ctrl-F in the
/// SVG finds all waiting, which has its own colour there.
pub const OFF_CPU_FRAME: &str = "[off-cpu]";

/// Index of a [`Location`] in [`Profile::locations`]. 32 bits: a long recording holds tens of
/// thousands of distinct stacks of tens of frames each, and every frame is one of these.
pub type LocationId = u32;
/// Index of a [`Mapping`] in [`Profile::mappings`].
pub type MappingId = usize;

/// `index` as a [`LocationId`]. Locations come from a capture (bounded by the code it sampled) or
/// from an input file of at most `input::MAX_INPUT_BYTES` (1 GiB, a few bytes per location): far
/// fewer than 2^32.
pub fn location_id(index: usize) -> LocationId {
    LocationId::try_from(index).expect("fewer than 2^32 locations")
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub metadata: Metadata,
    /// What each sample's values measure, the counting value first.
    pub value_types: ValueTypes,
    pub mappings: Vec<Mapping>,
    pub locations: Vec<Location>,
    /// The stacks samples refer to.
    pub stacks: Stacks,
    pub samples: Vec<Sample>,
}

/// What is known about the capture as a whole. Fields a reader cannot know are `None`/empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// When sampling started.
    pub start_time: Option<SystemTime>,
    /// How long sampling ran.
    pub duration: Option<Duration>,
    /// Samples per second per CPU (`-F`): each sample stands for 1/frequency s of CPU time.
    pub frequency_hz: Option<u64>,
    /// Samples the kernel side lost (ring buffer full, undecodable records).
    pub lost_samples: u64,
    /// Truncated user stacks, by unwinding path and reason (only for a capture made here).
    pub truncation: Truncation,
    /// Samples per reason for frames that could not be named (a sample counts once per such frame).
    pub unknown_frames: BTreeMap<UnknownReason, u64>,
    /// Processes whose samples were merged by name without their pid and tid (past the first
    /// `policy::LABELLED_PROCESSES`).
    pub unlabelled_processes: u64,
    /// Samples whose stack was cut, or whose pid and tid were dropped, to keep the profile within
    /// `--max-profile-size`.
    pub over_budget_samples: u64,
    /// How user stacks were unwound (`auto`, `dwarf`, `fp`).
    pub unwinding: Option<String>,
    /// The command line that made the capture.
    pub command_line: Option<String>,
    /// Whether frames carry source lines that `--lines` can show.
    pub has_lines: bool,
    /// Other free-form notes (pprof comments of another tool).
    pub comments: Vec<String>,
}

/// Where the code of a location lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MappingKind {
    /// A file mapped by a process (executable, library, vDSO).
    User,
    /// The kernel image and its modules: addresses are kernel addresses.
    Kernel,
    /// JIT-compiled code, named from a perf map: addresses are the process's own.
    Jit,
    /// Frames of an interpreter's own call stack (a Python function), in the pseudo-mapping of
    /// their runtime: no native address, their frame says what ran (see [`Location::interpreted`]).
    Interpreted(Runtime),
}

/// An interpreter whose frames a profile can hold in place of its native interpreter frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// CPython: a frame is a code object's qualified name, its file and line.
    Python,
}

impl Runtime {
    /// Every runtime, for readers that recognise them by name or marker.
    pub const ALL: [Runtime; 1] = [Runtime::Python];

    /// The path of the runtime's pseudo-mapping, in pprof and in the profile.
    pub fn mapping_name(self) -> &'static str {
        match self {
            Runtime::Python => "[python]",
        }
    }

    /// The suffix of its frames in folded stacks, in the spirit of `_[k]` and `_[j]`, so that
    /// other tools (and Ctrl-F in the SVG, before rendering) can tell them.
    pub fn marker(self) -> &'static str {
        match self {
            Runtime::Python => "_[p]",
        }
    }

    /// The pseudo-mapping its frames are placed in.
    pub fn mapping(self) -> Mapping {
        Mapping {
            path: Arc::from(self.mapping_name()),
            display_name: Arc::from(self.mapping_name()),
            build_id: None,
            kind: MappingKind::Interpreted(self),
        }
    }
}

/// A module: a file (or pseudo-file) that code runs from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The path the process mapped it from (in its mount namespace), or a name like `[kernel.kallsyms]`.
    pub path: Arc<str>,
    /// What frames without a symbol show: `libc.so.6+0x1234`.
    pub display_name: Arc<str>,
    /// The GNU build-id, as lowercase hex.
    pub build_id: Option<String>,
    pub kind: MappingKind,
}

/// One code address and what runs there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub mapping: Option<MappingId>,
    /// The address looked up (a return address minus one): the file offset in a user mapping, the
    /// address itself in the kernel, JIT code or no mapping at all; 0 for an interpreted frame.
    pub address: u64,
    /// The function at the address, then the functions inlined into it, outermost first. Empty when
    /// nothing names the address: it shows as `module+0xOFFSET` or `[unknown]`.
    pub frames: Vec<Frame>,
    /// Kernel code (`_[k]` in folded stacks).
    pub in_kernel: bool,
}

/// A distinct stack of one thread and its values (how many samples hit it, how long it ran).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Locations in [`Profile::stacks`], outermost first: user frames, then kernel frames. Shared:
    /// in a long recording many samples (other threads, other processes of the same program) have
    /// the same stack.
    pub stack: StackId,
    /// In the order of [`Profile::value_types`].
    pub values: Values,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    /// Name of the process (its main thread), unsanitized: as the kernel reported it. Shared:
    /// thousands of samples have the same few names.
    pub process_name: Option<Arc<str>>,
    pub thread_name: Option<Arc<str>>,
    /// The user stack does not reach a process or thread entry: callers are missing.
    pub truncated: bool,
}

// A long recording holds tens of thousands of samples: their values stay a fixed array, not a
// `Vec` per sample (64 bytes with one count, 80 with three values).
const _: () = assert!(std::mem::size_of::<Sample>() <= 80);

impl Location {
    /// A frame of `mapping`, the pseudo-mapping of a runtime ([`Runtime::mapping`]). Its address
    /// is 0: what identifies an interpreter frame in its process (a code object's address and an
    /// instruction offset) means nothing outside it, and locations are shared across processes;
    /// the frame's name, file and line say what ran.
    pub fn interpreted(mapping: MappingId, frame: Frame) -> Location {
        Location {
            mapping: Some(mapping),
            address: 0,
            frames: vec![frame],
            in_kernel: false,
        }
    }
}

impl Profile {
    /// The runtime whose frame `location` is, if it is an interpreter's.
    pub fn runtime(&self, location: &Location) -> Option<Runtime> {
        match self.mappings.get(location.mapping?)?.kind {
            MappingKind::Interpreted(runtime) => Some(runtime),
            _ => None,
        }
    }

    /// The sum of the counting value (samples, for a CPU profile).
    pub fn total_samples(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |total, s| total.saturating_add(s.values.get(0)))
    }

    /// The text a location shows when nothing names it: `module+0xOFFSET` or `[unknown]`.
    pub fn unnamed(&self, location: &Location) -> String {
        match location.mapping.map(|m| &self.mappings[m]) {
            Some(mapping) if mapping.kind == MappingKind::User => {
                format!("{}+{:#x}", mapping.display_name, location.address)
            }
            _ => "[unknown]".to_owned(),
        }
    }
}
