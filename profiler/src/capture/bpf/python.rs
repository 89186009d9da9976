//! The BPF side of Python frames: a process's CPython layout (found by the symbolizer's `python`
//! module) turned into what the walker in `bpf/src/python.bpf.h` reads, the stacks it stored turned
//! back into plain frames, and its counters into summary lines.

use anyhow::{bail, Result};
use emberprof_bpf::{
    PythonLayout, PythonProcess, PythonStack, PythonStat, PYTHON_EVERY_FRAME_ENTRY,
    PYTHON_FRAME_WINDOW, PYTHON_OFFSET_NONE, PYTHON_STACK_READ_FAILED, PYTHON_STACK_TRUNCATED,
};
use emberprof_symbolizer::python::{check_offset, layout::frame_model, PythonRuntime, ABSENT};
use emberprof_symbolizer::{RawPythonFrame, RawPythonStack};

/// The walker's view of a runtime found in process instance `instance`. Fails for a layout the
/// walker cannot use (a field it needs is absent, or a frame field lies past the bytes it reads of
/// each frame): the process then keeps its native frames only.
pub fn process_value(instance: u32, runtime: &PythonRuntime) -> Result<PythonProcess> {
    let l = &runtime.layout;
    let required = [
        ("interpreters.head", l.runtime_interpreters_head),
        ("the thread list", l.interp_threads_head),
        ("PyThreadState.next", l.tstate_next),
        ("PyThreadState.thread_id", l.tstate_thread_id),
        ("the thread's frame", l.tstate_frame),
        ("the caller frame", l.frame_previous),
        ("the code object", l.frame_code),
        ("the instruction", l.frame_instr),
    ];
    if let Some((what, _)) = required.iter().find(|(_, offset)| *offset == ABSENT) {
        bail!(
            "the CPython {}.{} layout has no offset of {what}",
            runtime.version.0,
            runtime.version.1
        );
    }
    let in_window =
        |offset: u32, size: u32| offset == ABSENT || offset + size <= PYTHON_FRAME_WINDOW;
    let instr_size = l.frame_instr_size;
    if !matches!(instr_size, 4 | 8)
        || !in_window(l.frame_previous, 8)
        || !in_window(l.frame_code, 8)
        || !in_window(l.frame_instr, instr_size)
        || !in_window(l.frame_is_entry, 1)
        || !in_window(l.frame_owner, 1)
    {
        bail!(
            "the CPython {}.{} frame layout does not fit the {PYTHON_FRAME_WINDOW} bytes the \
             walker reads of a frame",
            runtime.version.0,
            runtime.version.1
        );
    }
    let none = |offset: u32| {
        if offset == ABSENT {
            PYTHON_OFFSET_NONE
        } else {
            offset
        }
    };
    // The owner is only worth reading where a value means "C-stack shim" (3.12+).
    let owner_cstack =
        (l.owner_cstack != ABSENT && l.owner_cstack <= 0xff).then_some(l.owner_cstack);
    let cframe = l.frame_model == frame_model::CFRAME;
    Ok(PythonProcess {
        instance,
        _pad: 0,
        runtime: runtime.runtime_address,
        layout: PythonLayout {
            runtime_interpreters_head: l.runtime_interpreters_head,
            interp_threads_head: l.interp_threads_head,
            interp_next: none(l.interp_next),
            tstate_next: l.tstate_next,
            tstate_thread_id: l.tstate_thread_id,
            tstate_frame: l.tstate_frame,
            cframe_current_frame: if cframe {
                none(l.cframe_current_frame)
            } else {
                PYTHON_OFFSET_NONE
            },
            frame_previous: l.frame_previous,
            frame_code: l.frame_code,
            frame_instr: l.frame_instr,
            instr_size,
            frame_is_entry: none(l.frame_is_entry),
            frame_owner: if owner_cstack.is_some() {
                none(l.frame_owner)
            } else {
                PYTHON_OFFSET_NONE
            },
            owner_cstack: owner_cstack.unwrap_or(PYTHON_OFFSET_NONE),
            flags: if l.frame_model == frame_model::FRAME_OBJECT {
                PYTHON_EVERY_FRAME_ENTRY
            } else {
                0
            },
            code_check: check_offset(l).unwrap_or(PYTHON_OFFSET_NONE),
        },
    })
}

/// The frames of a stored stack, innermost first.
pub fn raw_stack(stack: &PythonStack) -> RawPythonStack {
    RawPythonStack {
        frames: stack
            .frames()
            .map(|(frame, entry)| RawPythonFrame {
                code: frame.code,
                instruction: frame.instr,
                check: frame.check,
                entry,
            })
            .collect(),
        truncated: stack.flags & (PYTHON_STACK_TRUNCATED | PYTHON_STACK_READ_FAILED) != 0,
    }
}

/// What the walker's counters say, for the summary (`-v`).
pub fn notes(stats: &[u64; PythonStat::COUNT as usize]) -> Vec<(log::Level, String)> {
    let get = |stat: PythonStat| stats[stat as usize];
    let samples = get(PythonStat::Samples);
    if samples == 0 {
        return Vec::new();
    }
    let mut notes = vec![(
        log::Level::Info,
        format!(
            "Python frame walks: {} of {samples} samples of Python processes had Python frames; \
             without: {} in threads with no Python thread state, {} with no Python frame running, \
             {} unreadable, {} with the Python stack map full, {} of another program under the \
             PID; {} deeper than {} frames (marked), {} thread lists longer than the walk's bound",
            get(PythonStat::Walked),
            get(PythonStat::NoThreadState),
            get(PythonStat::NoFrame),
            get(PythonStat::ReadFailed),
            get(PythonStat::StackMapFull),
            get(PythonStat::OtherInstance),
            get(PythonStat::Truncated),
            emberprof_bpf::MAX_PYTHON_FRAMES,
            get(PythonStat::ThreadsExhausted),
        ),
    )];
    if get(PythonStat::StackMapFull) > 0 {
        notes.push((
            log::Level::Warn,
            format!(
                "{} samples kept only their native frames: the Python stack map was full",
                get(PythonStat::StackMapFull)
            ),
        ));
    }
    notes
}
