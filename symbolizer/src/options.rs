//! What the symbolizer puts in frames, shared by its roles.

use crate::demangle::NameStyle;

/// What to put in frames. Defaults: inlined functions as their own frames, no source lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolizerOptions {
    /// Report functions inlined at an address as frames of their own (kind [`crate::FrameKind::Inlined`]).
    pub inlined_functions: bool,
    /// Look up source locations (`Frame::file`, `Frame::line`) even without inlined functions: for a
    /// function, the line it is at (the call into the next frame, inlined or not); for an inlined
    /// function, likewise within it. Outputs show them with `--lines`.
    pub source_lines: bool,
    /// How much of C++ names to keep (default: no return type, parameters or clone suffixes).
    pub name_style: NameStyle,
    /// Most bytes read from one process's perf map (`/tmp/perf-PID.map`), which the process writes
    /// and could make arbitrarily large; the rest is skipped with a warning. Default 64 MiB.
    pub max_perf_map_bytes: u64,
    /// Most bytes read from all perf maps together (with at most
    /// [`crate::jit::MAX_PERF_MAPS_TOTAL_ENTRIES`] entries kept); past it, the least recently used
    /// map is dropped, with a warning. Default 256 MiB.
    pub max_perf_maps_total_bytes: u64,
    /// Most file descriptors the open modules hold (each module's file and separate debug file,
    /// and blazesym's handle of each); past it the least recently used module is closed, and
    /// opened again when an address is found in it. `None` (the default): half the soft
    /// open-file limit when the symbolizer is made.
    pub max_module_descriptors: Option<usize>,
    /// Most bytes of module files (and their debug files) whose symbols and debug info blazesym
    /// keeps parsed at once; past it the least recently used module's parsed state is dropped and
    /// parsed again when it is next needed (see `namer::parsed_budget`). Default 1 GiB.
    pub max_parsed_bytes: u64,
}

/// Default `max_parsed_bytes`: files of 1 GiB in all, twice what a busy build machine kept live (a
/// budget below the hot modules makes them parsed again and again: CPU and lost samples).
pub const DEFAULT_MAX_PARSED_BYTES: u64 = 1 << 30;

impl Default for SymbolizerOptions {
    fn default() -> Self {
        SymbolizerOptions {
            inlined_functions: true,
            source_lines: false,
            name_style: NameStyle::Short,
            max_perf_map_bytes: crate::jit::DEFAULT_MAX_PERF_MAP_BYTES,
            max_perf_maps_total_bytes: crate::jit::DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES,
            max_module_descriptors: None,
            max_parsed_bytes: DEFAULT_MAX_PARSED_BYTES,
        }
    }
}
