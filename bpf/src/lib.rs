//! emberprof's BPF programs, compiled from `src/*.bpf.c` by `build.rs`, and the Rust mirrors of the
//! types they share with userspace.
//!
//! `include/emberprof.h` is the source of truth for those types; every struct here is `#[repr(C)]`
//! with the same fields in the same order, and the size checks below fail the build when the two
//! drift apart. Only the capture side of the profiler uses this crate.

mod python;

pub use python::*;

/// The sampling object: `sample_cpu` (perf_event) and `follow_fork` (tp_btf/sched_process_fork).
pub static PROFILE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profile.bpf.o"));

/// The same with `--off-cpu`'s sched_switch program and maps (`profile_offcpu.bpf.c`): apart,
/// because its task storage map needs Linux 5.11 and an object's maps are all created at load.
pub static PROFILE_OFF_CPU_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profile_offcpu.bpf.o"));

/// Frames kept per stack (`MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;
/// General-purpose registers in a user stack record, by DWARF number (`USER_GP_REGS`).
pub const USER_GP_REGS: usize = 16;
/// `COMM_LEN`: task name length including the NUL.
pub const COMM_LEN: usize = 16;
/// `MAX_STACK_COPY`: most user-stack bytes copied per sample.
pub const MAX_STACK_COPY: usize = 65536;
/// `RED_ZONE_BYTES`: the x86-64 red zone below sp, copied with every stack.
pub const RED_ZONE_BYTES: usize = 128;
/// `MAX_PLAN_MAPPINGS`: mappings with frameless code per process in `frameless_ranges`.
pub const MAX_PLAN_MAPPINGS: usize = 512;
/// `MAX_MODULE_EXCEPTIONS`: frameless functions per module in `module_exceptions`.
pub const MAX_MODULE_EXCEPTIONS: usize = 8192;
/// `MODULE_FRAMELESS_WHOLE`: [`FramelessRanges::module`] of a mapping that is frameless whole.
pub const MODULE_FRAMELESS_WHOLE: u32 = u32::MAX;
/// `UNWIND_*`: values of [`Config::unwind_mode`].
pub const UNWIND_FRAME_POINTERS: u32 = 0;
pub const UNWIND_DWARF: u32 = 1;
pub const UNWIND_AUTO: u32 = 2;
/// `GENERATIONS`: the `counts` and `stacks` maps come in two generations, swapped during a run.
pub const GENERATIONS: u32 = 2;
/// `STACK_ID_NONE`: the stack was not captured.
pub const STACK_ID_NONE: i32 = -1;
/// `STACK_ID_IN_RECORD`: the stack is inline in a [`SampleRecord`].
pub const STACK_ID_IN_RECORD: i32 = -2;

/// Names of the programs and maps in [`PROFILE_OBJECT`].
pub mod names {
    pub const SAMPLE_PROGRAM: &str = "sample_cpu";
    pub const FORK_PROGRAM: &str = "follow_fork";
    pub const FORK_TRACEPOINT: &str = "sched_process_fork";
    pub const EXEC_PROGRAM: &str = "notice_exec";
    pub const EXEC_TRACEPOINT: &str = "sched_process_exec";
    pub const EXIT_PROGRAM: &str = "notice_exit";
    pub const EXIT_TRACEPOINT: &str = "sched_process_exit";
    /// The raw tracepoint programs and their tracepoints, fork first (attached in this order).
    pub const LIFECYCLE_PROGRAMS: [(&str, &str); 3] = [
        (FORK_PROGRAM, FORK_TRACEPOINT),
        (EXEC_PROGRAM, EXEC_TRACEPOINT),
        (EXIT_PROGRAM, EXIT_TRACEPOINT),
    ];
    pub const CONFIG_GLOBAL: &str = "cfg";
    pub const TARGET_TGIDS: &str = "target_tgids";
    pub const DWARF_TGIDS: &str = "dwarf_tgids";
    pub const FRAMELESS_RANGES: &str = "frameless_ranges";
    pub const KNOWN_ROOTS: &str = "known_roots";
    pub const STACK_COPY_SIZES: &str = "stack_copy_sizes";
    pub const MODULE_EXCEPTIONS: &str = "module_exceptions";
    pub const STACK_SCRATCH: &str = "stack_scratch";
    /// Generation 0 and 1 of the stack and count maps (see [`super::GENERATIONS`]).
    pub const STACKS: [&str; 2] = ["stacks", "stacks_1"];
    pub const COUNTS: [&str; 2] = ["counts", "counts_1"];
    pub const GENERATION: &str = "generation";
    pub const RECORDS: &str = "records";
    /// First-sample and instance-end notices, apart from the records stack copies may fill.
    pub const NOTICES: &str = "notices";
    pub const STATS: &str = "stats";
    /// `--off-cpu` (`offcpu.bpf.h`): its program (tp_btf: loaded against the tracepoint's BTF
    /// type), tracepoint, configuration and maps (`offcpu_tasks`, task storage, and `offcpu_skip`
    /// are BPF-only and not named here).
    pub const OFF_CPU_PROGRAM: &str = "offcpu_switch";
    pub const OFF_CPU_TRACEPOINT: &str = "sched_switch";
    pub const OFF_CPU_CONFIG_GLOBAL: &str = "offcpu_cfg";
    pub const OFF_CPU_THREADS: &str = "offcpu_threads";
    pub const OFF_CPU_STACKS: &str = "offcpu_stacks";
    pub const OFF_CPU_COUNTS: [&str; 2] = ["offcpu_counts", "offcpu_counts_1"];
    pub const OFF_CPU_STATS: &str = "offcpu_stats";
    /// The adaptive N (`OffCpuConfig::sample_every` 0): one `u32` at key 0.
    pub const OFF_CPU_SAMPLE_EVERY: &str = "offcpu_sample_every";
}

/// `struct config`: load-time settings (a `const volatile` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub filter_tgids: u32,
    pub follow_children: u32,
    pub capture_kernel: u32,
    pub capture_user: u32,
    pub include_kernel_threads: u32,
    pub unwind_mode: u32,
    pub stack_copy_bytes: u32,
    pub wakeup_bytes: u32,
}

/// `struct offcpu_config`: the off-CPU program's settings (a `const volatile` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuConfig {
    pub min_ns: u64,
    pub self_tgid: u32,
    /// One switch-out in this many is followed, its time counted this many times; 0: adaptive,
    /// from the [`names::OFF_CPU_SAMPLE_EVERY`] map.
    pub sample_every: u32,
}

/// `struct offcpu_start`: value of the `offcpu_threads` map, a thread switched out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuStart {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the switch-out.
    pub start_ns: u64,
    /// Stack ids in `offcpu_stacks`.
    pub key: SampleKey,
    /// 1: the stacks went through the ring buffer; the time comes with an end record.
    pub streamed: u32,
    /// The N this switch-out was followed at (1 in N), for the wake-up policy.
    pub sample_every: u32,
    /// Time switched out in the thread's intervals not followed since its last followed one,
    /// counted with this interval on its stacks.
    pub carry_ns: u64,
}

/// `struct offcpu_end_record`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuEndRecord {
    pub kind: u32,
    pub tid: u32,
    pub nanos: u64,
}

/// `enum offcpu_stat`: slots of the per-CPU `offcpu_stats` map, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum OffCpuStat {
    SwitchOuts = 0,
    SwitchIns,
    BelowMin,
    Counted,
    Ended,
    Streamed,
    LostThreadsFull,
    LostCountsFull,
    LostRingbufOut,
    LostRingbufEnd,
    CopyFallback,
    NotSampled,
}

impl OffCpuStat {
    /// Number of slots (`OFFCPU_STAT_COUNT`).
    pub const COUNT: u32 = 12;
    pub const ALL: [OffCpuStat; Self::COUNT as usize] = [
        OffCpuStat::SwitchOuts,
        OffCpuStat::SwitchIns,
        OffCpuStat::BelowMin,
        OffCpuStat::Counted,
        OffCpuStat::Ended,
        OffCpuStat::Streamed,
        OffCpuStat::LostThreadsFull,
        OffCpuStat::LostCountsFull,
        OffCpuStat::LostRingbufOut,
        OffCpuStat::LostRingbufEnd,
        OffCpuStat::CopyFallback,
        OffCpuStat::NotSampled,
    ];
}

/// `struct frameless_ranges`: value of the `frameless_ranges` map, a process's plan (14 KiB: keep
/// it boxed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramelessRanges {
    pub count: u32,
    pub _pad: u32,
    pub start: [u64; MAX_PLAN_MAPPINGS],
    pub end: [u64; MAX_PLAN_MAPPINGS],
    pub bias: [u64; MAX_PLAN_MAPPINGS],
    pub module: [u32; MAX_PLAN_MAPPINGS],
}

impl FramelessRanges {
    /// No mappings, on the heap.
    pub fn boxed_empty() -> Box<FramelessRanges> {
        // SAFETY: a POD struct of integers: all zeroes is a valid value.
        unsafe { Box::<FramelessRanges>::new_zeroed().assume_init() }
    }
}

/// `struct module_exceptions`: value of the `module_exceptions` map (128 KiB: keep it boxed).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleExceptions {
    pub count: u32,
    pub _pad: u32,
    pub start: [u64; MAX_MODULE_EXCEPTIONS],
    pub end: [u64; MAX_MODULE_EXCEPTIONS],
}

impl ModuleExceptions {
    /// No functions, on the heap.
    pub fn boxed_empty() -> Box<ModuleExceptions> {
        // SAFETY: a POD struct of integers: all zeroes is a valid value.
        unsafe { Box::<ModuleExceptions>::new_zeroed().assume_init() }
    }
}

/// `struct root_key`: key of the `known_roots` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RootKey {
    pub instance: u32,
    pub _pad: u32,
    pub address: u64,
}

/// `struct sample_key`: the key of the `counts` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub tgid: u32,
    pub tid: u32,
    pub instance: u32,
    pub kernel_stack_id: i32,
    pub user_stack_id: i32,
    /// Generation of the `counts`/`stacks` maps the key belongs to (0 or 1, see [`GENERATIONS`]).
    pub generation: u32,
    pub process_comm: [u8; COMM_LEN],
    pub thread_comm: [u8; COMM_LEN],
    /// Id of the sample's Python frames in the generation's `python_stacks`, 0 for none.
    pub python_stack: u64,
}

/// `enum record_kind`.
pub const RECORD_PROCESS_SEEN: u32 = 1;
pub const RECORD_SAMPLE: u32 = 2;
pub const RECORD_NEW_KEY: u32 = 3;
pub const RECORD_USER_STACK: u32 = 4;
pub const RECORD_INSTANCE_END: u32 = 5;
pub const RECORD_OFF_CPU_STACK: u32 = 6;
pub const RECORD_OFF_CPU_SAMPLE: u32 = 7;
pub const RECORD_OFF_CPU_END: u32 = 8;

/// `struct user_stack_record`; the stack bytes follow it in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStackRecord {
    pub kind: u32,
    pub kernel_len: u32,
    pub stack_len: u32,
    /// Valid bytes at the end of `red_zone`: `[sp - red_zone_len, sp)`.
    pub red_zone_len: u32,
    pub key: SampleKey,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// All general-purpose registers by DWARF number (`USER_GP_REGS`).
    pub gp_regs: [u64; USER_GP_REGS],
    pub kernel_ips: [u64; MAX_STACK_DEPTH],
    pub red_zone: [u8; RED_ZONE_BYTES],
}

impl UserStackRecord {
    /// Address of the first byte of the stack copy [`Record::UserStack`] carries: the red zone's
    /// copied part, below sp.
    pub fn stack_start(&self) -> u64 {
        self.sp.wrapping_sub(u64::from(self.red_zone_len))
    }
}

/// `struct new_key_record`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NewKeyRecord {
    pub kind: u32,
    pub _pad: u32,
    pub key: SampleKey,
}

/// `struct process_seen_record`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessSeenRecord {
    pub kind: u32,
    pub tgid: u32,
    pub instance: u32,
    pub _pad: u32,
    pub process_comm: [u8; COMM_LEN],
    /// The process leader's `start_boottime`, in nanoseconds since boot.
    pub start_time: u64,
    /// When the first sample was taken (CLOCK_MONOTONIC nanoseconds, `bpf_ktime_get_ns`).
    pub time: u64,
}

/// `struct instance_end_record`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InstanceEndRecord {
    pub kind: u32,
    pub tgid: u32,
    pub instance: u32,
    pub _pad: u32,
}

/// `struct sample_record`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleRecord {
    pub kind: u32,
    pub kernel_len: u32,
    pub user_len: u32,
    pub _pad: u32,
    pub key: SampleKey,
    pub kernel_ips: [u64; MAX_STACK_DEPTH],
    pub user_ips: [u64; MAX_STACK_DEPTH],
}

/// `enum stat`: slots of the per-CPU `stats` map, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stat {
    Samples = 0,
    Idle,
    Filtered,
    Counted,
    Streamed,
    LostRingbufFull,
    StreamStackCollision,
    StreamStackMapFull,
    StreamCountsFull,
    KernelStackError,
    UserStackError,
    ProcessSeenLost,
    ChildFollowed,
    ChildNotFollowed,
    NewKeyLost,
    StackCopied,
    StackCopyFallback,
    InstanceEndLost,
    CopyUnjudged,
    CopyFramelessIp,
    CopyFramelessCaller,
    CopyUnknownRoot,
    FpKnownRoot,
    FpWalkTooDeep,
}

impl Stat {
    /// Number of slots (`STAT_COUNT`).
    pub const COUNT: u32 = 24;
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Samples,
        Stat::Idle,
        Stat::Filtered,
        Stat::Counted,
        Stat::Streamed,
        Stat::LostRingbufFull,
        Stat::StreamStackCollision,
        Stat::StreamStackMapFull,
        Stat::StreamCountsFull,
        Stat::KernelStackError,
        Stat::UserStackError,
        Stat::ProcessSeenLost,
        Stat::ChildFollowed,
        Stat::ChildNotFollowed,
        Stat::NewKeyLost,
        Stat::StackCopied,
        Stat::StackCopyFallback,
        Stat::InstanceEndLost,
        Stat::CopyUnjudged,
        Stat::CopyFramelessIp,
        Stat::CopyFramelessCaller,
        Stat::CopyUnknownRoot,
        Stat::FpKnownRoot,
        Stat::FpWalkTooDeep,
    ];
}

// SAFETY: plain-old-data mirrors of C structs: every bit pattern is valid and there is no padding.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for SampleKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FramelessRanges {}
// SAFETY: as above.
unsafe impl aya::Pod for RootKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ModuleExceptions {}
// SAFETY: as above.
unsafe impl aya::Pod for OffCpuConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for OffCpuStart {}

const _: () = {
    assert!(size_of::<Config>() == 32);
    assert!(size_of::<RootKey>() == 16);
    assert!(size_of::<FramelessRanges>() == 8 + 28 * MAX_PLAN_MAPPINGS);
    assert!(size_of::<ModuleExceptions>() == 8 + 16 * MAX_MODULE_EXCEPTIONS);
    assert!(
        size_of::<UserStackRecord>()
            == 16 + 64 + 24 + 8 * USER_GP_REGS + 8 * MAX_STACK_DEPTH + RED_ZONE_BYTES
    );
    assert!(size_of::<SampleKey>() == 64);
    assert!(size_of::<InstanceEndRecord>() == 16);
    assert!(size_of::<ProcessSeenRecord>() == 48);
    assert!(size_of::<SampleRecord>() == 16 + 64 + 2 * 8 * MAX_STACK_DEPTH);
    assert!(size_of::<NewKeyRecord>() == 72);
    assert!(Stat::ALL.len() == Stat::FpWalkTooDeep as usize + 1);
    assert!(size_of::<OffCpuConfig>() == 16);
    assert!(size_of::<OffCpuStart>() == 88);
    assert!(size_of::<OffCpuEndRecord>() == 16);
    assert!(OffCpuStat::ALL.len() == OffCpuStat::NotSampled as usize + 1);
};

/// Decodes a ring-buffer record. Records are written by our own BPF program, so a short or unknown one
/// means a version mismatch or a bug; the caller counts it rather than failing the capture.
#[derive(Debug)]
pub enum Record<'a> {
    ProcessSeen(ProcessSeenRecord),
    Sample(&'a SampleRecord),
    NewKey(SampleKey),
    /// A sample with its user registers and the copied top of its user stack.
    UserStack(&'a UserStackRecord, &'a [u8]),
    /// A process instance ended (exec or exit of the thread-group leader).
    InstanceEnd(InstanceEndRecord),
    /// `--off-cpu`: a thread switched out, its user stack copied; its time comes with its next
    /// [`Record::OffCpuEnd`].
    OffCpuStack(&'a UserStackRecord, &'a [u8]),
    /// `--off-cpu`: a thread switched out, its stacks inline; its time comes likewise.
    OffCpuSample(&'a SampleRecord),
    /// `--off-cpu`: a thread whose stacks came by the ring buffer was switched in again.
    OffCpuEnd(OffCpuEndRecord),
}

impl<'a> Record<'a> {
    pub fn parse(bytes: &'a [u8]) -> Option<Record<'a>> {
        let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
        match kind {
            RECORD_PROCESS_SEEN if bytes.len() >= size_of::<ProcessSeenRecord>() => {
                // SAFETY: length checked; read_unaligned copes with any alignment; POD type.
                let record = unsafe { bytes.as_ptr().cast::<ProcessSeenRecord>().read_unaligned() };
                Some(Record::ProcessSeen(record))
            }
            RECORD_NEW_KEY if bytes.len() >= size_of::<NewKeyRecord>() => {
                // SAFETY: length checked; read_unaligned copes with any alignment; POD type.
                let record = unsafe { bytes.as_ptr().cast::<NewKeyRecord>().read_unaligned() };
                Some(Record::NewKey(record.key))
            }
            RECORD_INSTANCE_END if bytes.len() >= size_of::<InstanceEndRecord>() => {
                // SAFETY: length checked; read_unaligned copes with any alignment; POD type.
                let record = unsafe { bytes.as_ptr().cast::<InstanceEndRecord>().read_unaligned() };
                Some(Record::InstanceEnd(record))
            }
            RECORD_OFF_CPU_END if bytes.len() >= size_of::<OffCpuEndRecord>() => {
                // SAFETY: length checked; read_unaligned copes with any alignment; POD type.
                let record = unsafe { bytes.as_ptr().cast::<OffCpuEndRecord>().read_unaligned() };
                Some(Record::OffCpuEnd(record))
            }
            RECORD_USER_STACK | RECORD_OFF_CPU_STACK
                if bytes.len() >= size_of::<UserStackRecord>() =>
            {
                let ptr = bytes.as_ptr().cast::<UserStackRecord>();
                if !ptr.is_aligned() {
                    return None;
                }
                // SAFETY: length and alignment checked; POD type; borrows `bytes`.
                let record = unsafe { &*ptr };
                // `red_zone` ends the record, so the red zone's copied part and the stack above
                // sp are contiguous: one slice from `stack_start()` up.
                let red_zone = (record.red_zone_len as usize).min(RED_ZONE_BYTES);
                let start = size_of::<UserStackRecord>() - red_zone;
                let end = size_of::<UserStackRecord>().checked_add(record.stack_len as usize)?;
                let stack = bytes.get(start..end)?;
                Some(if kind == RECORD_OFF_CPU_STACK {
                    Record::OffCpuStack(record, stack)
                } else {
                    Record::UserStack(record, stack)
                })
            }
            RECORD_SAMPLE | RECORD_OFF_CPU_SAMPLE if bytes.len() >= size_of::<SampleRecord>() => {
                let ptr = bytes.as_ptr().cast::<SampleRecord>();
                // Ring-buffer records are 8-byte aligned by the kernel; check rather than assume.
                if !ptr.is_aligned() {
                    return None;
                }
                // SAFETY: length and alignment checked; POD type; borrows `bytes`.
                let record = unsafe { &*ptr };
                Some(if kind == RECORD_OFF_CPU_SAMPLE {
                    Record::OffCpuSample(record)
                } else {
                    Record::Sample(record)
                })
            }
            _ => None,
        }
    }
}

/// The bytes of a `comm` array up to the first NUL, as text.
pub fn comm_to_string(comm: &[u8; COMM_LEN]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(object: &[u8], name: &str) -> bool {
        object.windows(name.len()).any(|w| w == name.as_bytes())
    }

    /// Every map of an object is created at load: the CPU-only object must hold none of the
    /// off-CPU program's (its task storage needs Linux 5.11, the CPU-only profiler runs on 5.8),
    /// and the off-CPU object all of them. Names are looked for in the objects' string tables.
    #[test]
    fn off_cpu_maps_are_only_in_the_off_cpu_object() {
        for name in [
            "offcpu_tasks",
            names::OFF_CPU_THREADS,
            names::OFF_CPU_PROGRAM,
        ] {
            assert!(
                !holds(PROFILE_OBJECT, name),
                "{name} in the CPU-only object"
            );
            assert!(
                holds(PROFILE_OFF_CPU_OBJECT, name),
                "{name} missing from the off-CPU object"
            );
        }
        assert!(holds(PROFILE_OBJECT, names::SAMPLE_PROGRAM));
    }
}
