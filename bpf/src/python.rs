//! Rust mirrors of `include/python.h`: what the CPython frame walker (`src/python.bpf.h`) shares with
//! userspace. Same rules as the rest of this crate: `#[repr(C)]`, the fields of the C struct in its
//! order, size checks that fail the build when the two drift apart.

/// `MAX_PYTHON_FRAMES`: Python frames kept per sample.
pub const MAX_PYTHON_FRAMES: usize = 128;
/// `PYTHON_FRAME_WINDOW`: bytes of a frame the walker reads at once; every frame offset lies below
/// `PYTHON_FRAME_WINDOW - 8`.
pub const PYTHON_FRAME_WINDOW: u32 = 128;
/// `PYTHON_OFFSET_NONE`: an offset the version does not have.
pub const PYTHON_OFFSET_NONE: u32 = u32::MAX;
/// `PYTHON_EVERY_FRAME_ENTRY`: [`PythonLayout::flags`] of 3.8-3.10, where each Python frame is run
/// by a native interpreter call of its own.
pub const PYTHON_EVERY_FRAME_ENTRY: u32 = 1;
/// `PYTHON_STACK_TRUNCATED`: [`PythonStack::flags`] of a stack deeper than the bound.
pub const PYTHON_STACK_TRUNCATED: u32 = 1;
/// `PYTHON_STACK_READ_FAILED`: a read failed midway through the walk.
pub const PYTHON_STACK_READ_FAILED: u32 = 2;

/// Names of the walker's maps in [`crate::PROFILE_OBJECT`].
pub mod python_names {
    pub const PYTHON_PROCESSES: &str = "python_processes";
    /// Generation 0 and 1, as `stacks` (see [`crate::GENERATIONS`]).
    pub const PYTHON_STACKS: [&str; 2] = ["python_stacks", "python_stacks_1"];
    pub const PYTHON_STATS: &str = "python_stats";
}

/// `struct python_layout`: byte offsets of what the walker reads in one CPython version.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PythonLayout {
    pub runtime_interpreters_head: u32,
    pub interp_threads_head: u32,
    pub interp_next: u32,
    pub tstate_next: u32,
    pub tstate_thread_id: u32,
    pub tstate_frame: u32,
    pub cframe_current_frame: u32,
    pub frame_previous: u32,
    pub frame_code: u32,
    pub frame_instr: u32,
    pub instr_size: u32,
    pub frame_is_entry: u32,
    pub frame_owner: u32,
    pub owner_cstack: u32,
    pub flags: u32,
    /// Where the pointers a frame's check covers start in a code object, or
    /// [`PYTHON_OFFSET_NONE`].
    pub code_check: u32,
}

/// `struct python_process`: value of `python_processes`, by TGID.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PythonProcess {
    pub instance: u32,
    pub _pad: u32,
    /// Address of `_PyRuntime`.
    pub runtime: u64,
    pub layout: PythonLayout,
}

/// `struct python_frame`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PythonFrame {
    /// Address of the code object.
    pub code: u64,
    /// `f_lasti` (3.8-3.10) or the instruction pointer (3.11+).
    pub instr: u64,
    /// The code object's check as sampled, 0 if none was taken.
    pub check: u64,
}

/// `struct python_stack`: value of `python_stacks`, one sample's frames, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PythonStack {
    pub len: u32,
    pub flags: u32,
    /// Bit i: frame i is the first its native interpreter call ran.
    pub entry: [u64; MAX_PYTHON_FRAMES / 64],
    pub frames: [PythonFrame; MAX_PYTHON_FRAMES],
}

impl PythonStack {
    /// The valid frames, innermost first, each with whether it is an entry frame.
    pub fn frames(&self) -> impl Iterator<Item = (PythonFrame, bool)> + '_ {
        let len = (self.len as usize).min(MAX_PYTHON_FRAMES);
        self.frames[..len]
            .iter()
            .enumerate()
            .map(|(i, frame)| (*frame, self.entry[i / 64] & (1 << (i % 64)) != 0))
    }
}

/// `enum python_stat`: slots of the per-CPU `python_stats` map, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PythonStat {
    Samples = 0,
    Walked,
    NoThreadState,
    NoFrame,
    ReadFailed,
    StackMapFull,
    OtherInstance,
    Truncated,
    ThreadsExhausted,
    ThreadCached,
}

impl PythonStat {
    /// Number of slots (`PYTHON_STAT_COUNT`).
    pub const COUNT: u32 = 10;
    pub const ALL: [PythonStat; Self::COUNT as usize] = [
        PythonStat::Samples,
        PythonStat::Walked,
        PythonStat::NoThreadState,
        PythonStat::NoFrame,
        PythonStat::ReadFailed,
        PythonStat::StackMapFull,
        PythonStat::OtherInstance,
        PythonStat::Truncated,
        PythonStat::ThreadsExhausted,
        PythonStat::ThreadCached,
    ];
}

// SAFETY: plain-old-data mirrors of C structs: every bit pattern is valid and there is no padding.
unsafe impl aya::Pod for PythonProcess {}
// SAFETY: as above.
unsafe impl aya::Pod for PythonStack {}

const _: () = {
    assert!(size_of::<PythonLayout>() == 64);
    assert!(size_of::<PythonProcess>() == 80);
    assert!(size_of::<PythonStack>() == 8 + 8 * (MAX_PYTHON_FRAMES / 64) + 24 * MAX_PYTHON_FRAMES);
    assert!(PythonStat::ALL.len() == PythonStat::ThreadCached as usize + 1);
};
