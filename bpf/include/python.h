/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * What the CPython frame walker (src/python.bpf.h) shares with userspace: the per-process layout
 * userspace finds (symbolizer's `python` module) and writes into `python_processes`, the Python
 * stacks the walker stores in `python_stacks`, and its counters. Kept apart from emberprof.h so the
 * walker can change without touching the sampler's types; bpf/src/python.rs mirrors every type here
 * (same rules: #[repr(C)], no bool, no implicit padding, size checks on both sides).
 */
#ifndef EMBERPROF_PYTHON_H
#define EMBERPROF_PYTHON_H

#include <linux/types.h>

/* Python frames kept per sample; a deeper stack keeps its innermost ones and is marked
 * PYTHON_STACK_TRUNCATED. A multiple of 64 (see python_stack.entry). */
#define MAX_PYTHON_FRAMES 128
/* Frames visited per sample: Python frames plus the C-stack shim frames 3.12+ pushes at each entry
 * into the interpreter, which are skipped, not kept. */
#define MAX_PYTHON_FRAME_VISITS 192
/* Thread states visited per interpreter to find the sampled thread's (once per thread: the
 * result is cached until the thread exits or its thread state changes), and interpreters visited. */
#define MAX_PYTHON_THREADS 256
#define MAX_PYTHON_INTERPRETERS 16
/* Bytes of a frame read at once; every frame offset userspace sends lies below
 * PYTHON_FRAME_WINDOW - 8 (checked on both sides). A power of two. */
#define PYTHON_FRAME_WINDOW 128
/* An offset the version does not have. */
#define PYTHON_OFFSET_NONE 0xffffffffu

/* python_layout.flags */
/* 3.8-3.10: every Python frame is run by a native call of its own (_PyEval_EvalFrameDefault). */
#define PYTHON_EVERY_FRAME_ENTRY 1u

/* Where the walker finds what it needs in one CPython version, as byte offsets. */
struct python_layout {
	/* _PyRuntime.interpreters.head */
	__u32 runtime_interpreters_head;
	/* PyInterpreterState's list of thread states (tstate_head; threads.head on 3.11+), and the next
	 * interpreter (interpreters.head is the newest: the main one is last) */
	__u32 interp_threads_head;
	__u32 interp_next;
	/* PyThreadState.next and .thread_id (pthread_self(): the thread's fsbase on x86-64 glibc) */
	__u32 tstate_next;
	__u32 tstate_thread_id;
	/* PyThreadState.frame (3.8-3.10), .cframe (3.11, 3.12) or .current_frame (3.13) */
	__u32 tstate_frame;
	/* _PyCFrame.current_frame (3.11, 3.12), else PYTHON_OFFSET_NONE */
	__u32 cframe_current_frame;
	/* In a frame (PyFrameObject before 3.11, _PyInterpreterFrame since): the caller's frame
	 * (f_back / previous), the code object (f_code / f_executable), the instruction (f_lasti, an
	 * int; prev_instr / instr_ptr, a pointer) and its size in bytes (4 or 8). */
	__u32 frame_previous;
	__u32 frame_code;
	__u32 frame_instr;
	__u32 instr_size;
	/* _PyInterpreterFrame.is_entry (3.11), else PYTHON_OFFSET_NONE */
	__u32 frame_is_entry;
	/* _PyInterpreterFrame.owner (3.12+), else PYTHON_OFFSET_NONE, and the value of a C-stack
	 * shim frame (FRAME_OWNED_BY_CSTACK) */
	__u32 frame_owner;
	__u32 owner_cstack;
	/* PYTHON_* flags */
	__u32 flags;
	/* In a code object: the three pointers a frame's check covers (co_filename and the two
	 * members after it, which no code object changes), or PYTHON_OFFSET_NONE: no check. */
	__u32 code_check;
};

/* Value of the `python_processes` map, by TGID: a process with a CPython runtime. */
struct python_process {
	/* The process instance the layout was found in: another program under the TGID is not walked. */
	__u32 instance;
	__u32 _pad;
	/* Address of _PyRuntime in the process. */
	__u64 runtime;
	struct python_layout layout;
};

struct python_frame {
	/* Address of the code object. */
	__u64 code;
	/* f_lasti (3.8-3.10, zero-extended int) or the instruction pointer (3.11+). */
	__u64 instr;
	/* The code object's check as sampled (python_code_check), 0 if none was taken: userspace
	 * names the frame only from an object with the same check, since by the time it reads the
	 * object it may have been freed and its address given to another. */
	__u64 check;
};

/* python_stack.flags */
/* The stack had more than MAX_PYTHON_FRAMES frames (or visits): the outermost are missing. */
#define PYTHON_STACK_TRUNCATED 1u
/* A read of the interpreter's memory failed midway: the outermost frames are missing. */
#define PYTHON_STACK_READ_FAILED 2u

/* Value of the `python_stacks` maps: one sample's Python frames, innermost first. */
struct python_stack {
	__u32 len;
	__u32 flags;
	/* Bit i: frame i is the first its native interpreter call ran (an "entry" frame): the frames
	 * from the previous entry (exclusive) up to it replace one native _PyEval_EvalFrameDefault. */
	__u64 entry[MAX_PYTHON_FRAMES / 64];
	struct python_frame frames[MAX_PYTHON_FRAMES];
};

/* Per-CPU counters in `python_stats`. Each sample of a process in `python_processes` bumps SAMPLES
 * and exactly one outcome:
 *   SAMPLES = WALKED + NO_THREAD_STATE + NO_FRAME + READ_FAILED + STACK_MAP_FULL + OTHER_INSTANCE */
enum python_stat {
	PYTHON_STAT_SAMPLES = 0,      /* samples of Python processes */
	PYTHON_STAT_WALKED,           /* Python frames found and stored */
	PYTHON_STAT_NO_THREAD_STATE,  /* the thread has no thread state (not a Python thread) */
	PYTHON_STAT_NO_FRAME,         /* its thread state holds no frame (not running Python code) */
	PYTHON_STAT_READ_FAILED,      /* the runtime's memory could not be read */
	PYTHON_STAT_STACK_MAP_FULL,   /* the python_stacks map was full: native frames only */
	PYTHON_STAT_OTHER_INSTANCE,   /* the TGID runs another program than the layout's */
	/* Informational. */
	PYTHON_STAT_TRUNCATED,        /* walked, but deeper than the bound (marked) */
	PYTHON_STAT_THREADS_EXHAUSTED, /* the thread list was longer than MAX_PYTHON_THREADS */
	PYTHON_STAT_THREAD_CACHED,    /* the thread state came from the per-thread cache */
	PYTHON_STAT_COUNT,
};

_Static_assert(sizeof(struct python_layout) == 64, "struct python_layout layout");
_Static_assert(sizeof(struct python_process) == 80, "struct python_process layout");
_Static_assert(sizeof(struct python_stack) == 8 + 8 * (MAX_PYTHON_FRAMES / 64) + 24 * MAX_PYTHON_FRAMES,
	       "struct python_stack layout");
_Static_assert(PYTHON_STAT_COUNT == 10, "enum python_stat: update PythonStat in bpf/src/python.rs");

#endif /* EMBERPROF_PYTHON_H */
