//! The frame walk, done from userspace: every Python thread of a process and its frames, read
//! through [`Memory`]. It is the reference the BPF walker follows (same layout fields, same order,
//! same bounds), and what tests use to read real interpreters from outside.
//!
//! The thread list and frame chains are the process's own pointers, so both walks are bounded
//! ([`MAX_THREADS`], [`MAX_FRAMES`]): a cycle costs the bound and is reported as truncation, not a
//! hang.

use super::layout::{frame_model, Layout};
use super::memory::Memory;
use super::PythonRuntime;

/// Most threads followed through `tstate->next`.
pub const MAX_THREADS: usize = 1024;

/// Most frames followed per thread (the BPF walker's bound).
pub const MAX_FRAMES: usize = 128;

/// One Python frame as the walker records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The code object (`f_code` / `f_executable`).
    pub code: u64,
    /// The value at [`Layout::frame_instr`], zero-extended (see [`super::CodeReader::frame`]).
    pub instruction: u64,
    /// The first frame its native `_PyEval_EvalFrameDefault` call ran: walking outwards, the last
    /// Python frame of that native frame.
    pub entry: bool,
}

/// One thread's frames, innermost first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadFrames {
    /// `tstate->thread_id` (`pthread_self()`).
    pub thread_id: u64,
    /// `tstate->native_thread_id` (3.11+).
    pub native_thread_id: Option<u64>,
    pub frames: Vec<RawFrame>,
    /// The walk stopped at [`MAX_FRAMES`] or at an unreadable frame, not at the outermost frame.
    pub truncated: bool,
}

fn at(base: u64, offset: u32) -> Option<u64> {
    base.checked_add(u64::from(offset))
}

/// Every thread of the main interpreter with its frames; empty when the interpreter is not set up
/// (yet) or its list cannot be read.
pub fn threads(memory: &dyn Memory, runtime: &PythonRuntime) -> Vec<ThreadFrames> {
    let layout = &runtime.layout;
    let mut threads = Vec::new();
    let Some(interp) = at(runtime.runtime_address, layout.runtime_interpreters_head)
        .and_then(|a| memory.read_u64(a))
        .filter(|&a| a != 0)
    else {
        return threads;
    };
    let mut tstate = at(interp, layout.interp_threads_head)
        .and_then(|a| memory.read_u64(a))
        .unwrap_or(0);
    while tstate != 0 && threads.len() < MAX_THREADS {
        let read = |offset: u32| at(tstate, offset).and_then(|a| memory.read_u64(a));
        let native_thread_id = Layout::has(layout.tstate_native_thread_id)
            .then(|| read(layout.tstate_native_thread_id))
            .flatten();
        let (frames, truncated) = frames(memory, layout, tstate);
        threads.push(ThreadFrames {
            thread_id: read(layout.tstate_thread_id).unwrap_or(0),
            native_thread_id,
            frames,
            truncated,
        });
        tstate = read(layout.tstate_next).unwrap_or(0);
    }
    threads
}

/// The frames of thread state `tstate`, innermost first, and whether the walk was cut short.
pub fn frames(memory: &dyn Memory, layout: &Layout, tstate: u64) -> (Vec<RawFrame>, bool) {
    let mut frames = Vec::new();
    let first = at(tstate, layout.tstate_frame).and_then(|a| memory.read_u64(a));
    let first = if layout.frame_model == frame_model::CFRAME {
        first
            .filter(|&cframe| cframe != 0)
            .and_then(|cframe| at(cframe, layout.cframe_current_frame))
            .and_then(|a| memory.read_u64(a))
    } else {
        first
    };
    let Some(mut frame) = first else {
        return (frames, true);
    };
    // Frames visited, shims included: the bound is on work, not on frames kept.
    let mut visited = 0;
    while frame != 0 {
        if visited == MAX_FRAMES {
            return (frames, true);
        }
        visited += 1;
        let Some(read) = read_frame(memory, layout, frame) else {
            return (frames, true);
        };
        match read {
            Read::Shim => {
                if let Some(last) = frames.last_mut() {
                    last.entry = true;
                }
            }
            Read::Python(raw) => frames.push(raw),
        }
        match at(frame, layout.frame_previous).and_then(|a| memory.read_u64(a)) {
            Some(previous) => frame = previous,
            None => return (frames, true),
        }
    }
    // The outermost frame is the first its native call ran.
    if let Some(last) = frames.last_mut() {
        last.entry = true;
    }
    (frames, false)
}

enum Read {
    Python(RawFrame),
    /// 3.12+: the C stack's shim frame below each native eval call's Python frames.
    Shim,
}

fn read_frame(memory: &dyn Memory, layout: &Layout, frame: u64) -> Option<Read> {
    let byte = |offset: u32| -> Option<u8> {
        let mut b = [0u8; 1];
        memory.read(at(frame, offset)?, &mut b).then_some(b[0])
    };
    if Layout::has(layout.owner_cstack)
        && u32::from(byte(layout.frame_owner)?) == layout.owner_cstack
    {
        return Some(Read::Shim);
    }
    let code = memory.read_u64(at(frame, layout.frame_code)?)?;
    let instruction = if layout.frame_instr_size == 4 {
        u64::from(memory.read_u32(at(frame, layout.frame_instr)?)?)
    } else {
        memory.read_u64(at(frame, layout.frame_instr)?)?
    };
    let entry = match layout.frame_model {
        frame_model::FRAME_OBJECT => true,
        _ if Layout::has(layout.frame_is_entry) => byte(layout.frame_is_entry)? != 0,
        _ => false,
    };
    Some(Read::Python(RawFrame {
        code,
        instruction,
        entry,
    }))
}
