//! The frame walk, done from userspace: every Python thread of a process and its frames, read
//! through [`Memory`]. It is the reference the BPF walker follows (same layout fields, same order,
//! same bounds), and what tests use to read real interpreters from outside.
//!
//! The thread list and frame chains are the process's own pointers, so both walks are bounded
//! ([`MAX_THREADS`], [`MAX_FRAMES`]): a cycle costs the bound and is reported as truncation, not a
//! hang.

use super::code::{check_offset, code_check, CHECKED_WORDS};
use super::layout::{frame_model, Layout};
use super::memory::Memory;
use super::PythonRuntime;

/// Most threads followed through `tstate->next`, over all interpreters.
pub const MAX_THREADS: usize = 1024;

/// Most interpreters followed through `interp->next`.
pub const MAX_INTERPRETERS: usize = 16;

/// Most frames followed per thread (the BPF walker's bound).
pub const MAX_FRAMES: usize = 128;

/// One Python frame as the walker records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The code object (`f_code` / `f_executable`).
    pub code: u64,
    /// The value at [`Layout::frame_instr`], zero-extended (see [`super::CodeReader::frame`]).
    pub instruction: u64,
    /// The code object's [`code_check`], 0 if it has no [`check_offset`] or was unreadable.
    pub check: u64,
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

/// Every thread of every interpreter with its frames; empty when the interpreter is not set up
/// (yet) or its list cannot be read.
pub fn threads(memory: &dyn Memory, runtime: &PythonRuntime) -> Vec<ThreadFrames> {
    let layout = &runtime.layout;
    let mut threads = Vec::new();
    let mut interp = at(runtime.runtime_address, layout.runtime_interpreters_head)
        .and_then(|a| memory.read_u64(a))
        .unwrap_or(0);
    let mut interpreters = 0;
    while interp != 0 && interpreters < MAX_INTERPRETERS {
        interpreters += 1;
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
        interp = at(interp, layout.interp_next)
            .and_then(|a| memory.read_u64(a))
            .unwrap_or(0);
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
    // As the BPF walker, one read: a code object it cannot read gets no check, not the end of the
    // walk.
    let check = check_offset(layout)
        .and_then(|start| {
            let mut bytes = [0u8; 8 * CHECKED_WORDS];
            memory.read(at(code, start)?, &mut bytes).then(|| {
                code_check(std::array::from_fn(|index| {
                    let word = &bytes[8 * index..8 * index + 8];
                    u64::from_le_bytes(word.try_into().expect("8 bytes"))
                }))
            })
        })
        .unwrap_or(0);
    Some(Read::Python(RawFrame {
        code,
        instruction,
        check,
        entry,
    }))
}

#[cfg(test)]
mod tests {
    //! Made-up interpreters in made-up memory (3.12 and 3.8 layouts): cycles and garbage cost the
    //! bound, never a hang.
    use super::*;
    use crate::python::layout;
    use crate::python::memory::FakeMemory;

    const RUNTIME: u64 = 0x1_0000;
    const INTERP: u64 = 0x2_0000;
    const TSTATE: u64 = 0x3_0000;
    const CFRAME: u64 = 0x4_0000;
    const FRAMES: u64 = 0x5_0000;

    fn word(region: &mut [u8], at: u32, value: u64) {
        region[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn runtime(minor: u8) -> PythonRuntime {
        PythonRuntime {
            version: (3, minor),
            runtime_address: RUNTIME,
            layout: layout::table((3, minor)).expect("table"),
            code_type: 0,
            eval_frame: None,
        }
    }

    /// An interpreter with one thread whose frames are `previous[i]` chained, 0x100 bytes apart,
    /// (frame i's `previous` is FRAMES + previous[i] * 0x100, or null for None); `shims` are owned by
    /// the C stack.
    fn interpreter(layout: &Layout, previous: &[Option<u64>], shims: &[usize]) -> FakeMemory {
        let mut runtime = vec![0u8; 0x1000];
        word(&mut runtime, layout.runtime_interpreters_head, INTERP);
        let mut interp = vec![0u8; 0x100];
        word(&mut interp, layout.interp_threads_head, TSTATE);
        let mut tstate = vec![0u8; 0x200];
        let mut cframe = vec![0u8; 0x100];
        if layout.frame_model == frame_model::CFRAME {
            word(&mut tstate, layout.tstate_frame, CFRAME);
            word(&mut cframe, layout.cframe_current_frame, FRAMES);
        } else {
            word(&mut tstate, layout.tstate_frame, FRAMES);
        }
        word(&mut tstate, layout.tstate_thread_id, 0x7f00_0000);
        let mut frames = vec![0u8; 0x100 * previous.len()];
        for (index, previous) in previous.iter().enumerate() {
            let frame = &mut frames[index * 0x100..(index + 1) * 0x100];
            word(frame, layout.frame_code, 0xc0de_0000 + index as u64);
            word(
                frame,
                layout.frame_previous,
                previous.map_or(0, |p| FRAMES + p * 0x100),
            );
            if shims.contains(&index) {
                frame[layout.frame_owner as usize] = layout.owner_cstack as u8;
            }
        }
        FakeMemory::default()
            .with(RUNTIME, runtime)
            .with(INTERP, interp)
            .with(TSTATE, tstate)
            .with(CFRAME, cframe)
            .with(FRAMES, frames)
    }

    /// A chain of frames with shims: Python frames in order, shims skipped and marking entries.
    #[test]
    fn python_walk_splits_at_shims() {
        let runtime = runtime(12);
        let memory = interpreter(
            &runtime.layout,
            &[Some(1), Some(2), Some(3), Some(4), None],
            &[2, 4],
        );
        let threads = threads(&memory, &runtime);
        assert_eq!(threads.len(), 1);
        let codes: Vec<(u64, bool)> = threads[0]
            .frames
            .iter()
            .map(|f| (f.code - 0xc0de_0000, f.entry))
            .collect();
        assert_eq!(codes, [(0, false), (1, true), (3, true)]);
        assert!(!threads[0].truncated);
        assert_eq!(threads[0].thread_id, 0x7f00_0000);
    }

    /// Defence: a frame list that loops back costs MAX_FRAMES reads and is marked truncated.
    #[test]
    fn python_walk_stops_on_cyclic_frames() {
        for minor in [8, 12] {
            let runtime = runtime(minor);
            let memory = interpreter(&runtime.layout, &[Some(1), Some(0)], &[]);
            let threads = threads(&memory, &runtime);
            assert_eq!(threads[0].frames.len(), MAX_FRAMES, "3.{minor}");
            assert!(threads[0].truncated);
        }
        // Only shims, looping: nothing kept, still bounded.
        let runtime = runtime(12);
        let memory = interpreter(&runtime.layout, &[Some(0)], &[0]);
        let threads = threads(&memory, &runtime);
        assert!(threads[0].frames.is_empty() && threads[0].truncated);
        assert!(memory.reads.get() < 4 * MAX_FRAMES + 16);
    }

    /// Defence: a thread list that loops back is followed MAX_THREADS times at most.
    #[test]
    fn python_walk_stops_on_cyclic_threads() {
        let runtime = runtime(12);
        let mut memory = interpreter(&runtime.layout, &[None], &[]);
        let mut next = [0u8; 8];
        next.copy_from_slice(&TSTATE.to_le_bytes());
        memory.put(TSTATE + u64::from(runtime.layout.tstate_next), &next);
        assert_eq!(threads(&memory, &runtime).len(), MAX_THREADS);
    }

    /// Threads of every interpreter are found; a cyclic interpreter list is followed a bounded
    /// number of times.
    #[test]
    fn python_walk_follows_every_interpreter() {
        let runtime = runtime(12);
        let layout = runtime.layout;
        let mut memory = interpreter(&layout, &[None], &[]);
        // A second interpreter (the main one, older) after the first, with its own thread.
        let (main, main_thread) = (0x6_0000u64, 0x7_0000u64);
        memory = memory
            .with(main, vec![0; 0x100])
            .with(main_thread, vec![0; 0x200]);
        memory.put(INTERP + u64::from(layout.interp_next), &main.to_le_bytes());
        memory.put(
            main + u64::from(layout.interp_threads_head),
            &main_thread.to_le_bytes(),
        );
        memory.put(
            main_thread + u64::from(layout.tstate_thread_id),
            &7u64.to_le_bytes(),
        );
        let found: Vec<u64> = threads(&memory, &runtime)
            .iter()
            .map(|t| t.thread_id)
            .collect();
        assert_eq!(found, [0x7f00_0000, 7]);
        // The main interpreter's next pointing back to the first: a cycle.
        memory.put(main + u64::from(layout.interp_next), &INTERP.to_le_bytes());
        assert_eq!(threads(&memory, &runtime).len(), MAX_INTERPRETERS);
    }

    /// Defence: garbage pointers (a fake `_PyRuntime`, a frame pointing nowhere) end the walk.
    #[test]
    fn python_walk_survives_garbage() {
        let runtime = runtime(11);
        assert!(threads(&FakeMemory::default(), &runtime).is_empty());
        let memory = interpreter(&runtime.layout, &[Some(0x4000_0000)], &[]);
        let threads = threads(&memory, &runtime);
        assert_eq!(threads[0].frames.len(), 1);
        assert!(threads[0].truncated, "the second frame is unreadable");
    }
}
