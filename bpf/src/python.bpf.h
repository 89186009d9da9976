/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The CPython frame walker, included by profile.bpf.c. For a sample of a process userspace found a
 * CPython runtime in (`python_processes`, by TGID), it finds the sampled thread's PyThreadState and
 * walks its Python frames, innermost first, storing (code object, instruction, check) per frame in a
 * `python_stacks` map under a hash of the frames, which goes into the sample key: identical Python
 * stacks merge in the count map like identical native stacks do. Userspace names the code objects
 * and puts the frames in place of the native interpreter frames that ran them.
 *
 * A process not in `python_processes` pays one hash lookup. Everything read here is the profiled
 * process's memory, so every read goes through bpf_probe_read_user, every loop is bounded, and a
 * garbage pointer costs a failed read (counted), never a wrong count of native frames.
 *
 * Finding the thread state: the thread lists of _PyRuntime's interpreters are walked for the one
 * whose thread_id (pthread_self()) equals the task's fsbase, which is what pthread_self() returns on
 * x86-64 glibc; that works on every version and for threads started at any time, without reading TLS
 * (whose layout differs per version and per libc). The answer is cached per thread and checked at
 * each sample (one read); the cache entry is dropped when the thread exits.
 */
#ifndef EMBERPROF_PYTHON_BPF_H
#define EMBERPROF_PYTHON_BPF_H

#include "python.h"

/* Processes with a CPython runtime, written by userspace when it first sees one. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct python_process);
} python_processes SEC(".maps");

/* The thread state of each sampled Python thread (by TID), checked before use. LRU: an evicted
 * thread is looked up again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} python_threads SEC(".maps");

/* Python stacks by the hash in sample_key.python_stack, one map per generation like `stacks`.
 * Values are 3 KiB: allocated per entry, not preallocated. */
struct python_stack_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized at load */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct python_stack);
};
struct python_stack_map python_stacks SEC(".maps");
struct python_stack_map python_stacks_1 SEC(".maps");

/* Per-CPU staging: the stack being walked, the walk's position and the frame read at once. */
struct python_scratch {
	struct python_stack stack;
	/* The next frame to visit, 0 at the end of the chain. */
	__u64 frame;
	__u8 window[PYTHON_FRAME_WINDOW];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct python_scratch);
} python_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PYTHON_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} python_stats SEC(".maps");

struct thread_struct___python {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct___python {
	struct thread_struct___python thread;
} __attribute__((preserve_access_index));

static __always_inline void python_stat(__u32 stat)
{
	__u64 *slot = bpf_map_lookup_elem(&python_stats, &stat);
	if (slot)
		*slot += 1; /* per-CPU slot: no other writer */
}

static __always_inline int python_read_u64(__u64 address, __u64 *value)
{
	return bpf_probe_read_user(value, sizeof(*value), (void *)address);
}

/* A field of the frame window; offsets past the window read as 0 (userspace never sends them). */
static __always_inline __u64 window_u64(const __u8 *window, __u32 offset)
{
	if (offset > PYTHON_FRAME_WINDOW - 8)
		return 0;
	return *(const __u64 *)(window + offset);
}

static __always_inline __u32 window_u32(const __u8 *window, __u32 offset)
{
	if (offset > PYTHON_FRAME_WINDOW - 4)
		return 0;
	return *(const __u32 *)(window + offset);
}

static __always_inline __u8 window_u8(const __u8 *window, __u32 offset)
{
	if (offset > PYTHON_FRAME_WINDOW - 1)
		return 0;
	return window[offset];
}

/* The thread state of `interpreter` whose thread_id is `fsbase`, 0 if none. */
__noinline __u64 python_interpreter_thread(const struct python_layout *layout, __u64 interpreter, __u64 fsbase)
{
	if (!layout)
		return 0;
	__u64 tstate, thread_id;
	if (python_read_u64(interpreter + layout->interp_threads_head, &tstate) != 0)
		return 0;
	for (int i = 0; i < MAX_PYTHON_THREADS; i++) {
		if (tstate == 0)
			return 0;
		if (python_read_u64(tstate + layout->tstate_thread_id, &thread_id) != 0)
			return 0;
		if (thread_id == fsbase)
			return tstate;
		if (python_read_u64(tstate + layout->tstate_next, &tstate) != 0)
			return 0;
	}
	python_stat(PYTHON_STAT_THREADS_EXHAUSTED);
	return 0;
}

/* The sampled thread's PyThreadState, 0 if it has none (a thread that never ran Python code). A
 * global function, like the two below: the verifier checks it once, on its own, instead of once per
 * path through its caller (walked inline, the loops made the sampling program too large to verify).
 * Pointer arguments of global functions may be NULL as far as the verifier knows. */
__noinline __u64 python_thread_state(const struct python_process *process, __u32 tid)
{
	if (!process)
		return 0;
	const struct python_layout *layout = &process->layout;
	struct task_struct___python *task = (void *)bpf_get_current_task();
	__u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
	__u64 thread_id;

	__u64 *cached = bpf_map_lookup_elem(&python_threads, &tid);
	if (cached) {
		__u64 tstate = *cached;
		if (python_read_u64(tstate + layout->tstate_thread_id, &thread_id) == 0 && thread_id == fsbase) {
			python_stat(PYTHON_STAT_THREAD_CACHED);
			return tstate;
		}
		bpf_map_delete_elem(&python_threads, &tid);
	}

	/* Every interpreter's threads in turn, newest interpreter first (the main one is last). */
	__u64 interpreter;
	if (python_read_u64(process->runtime + layout->runtime_interpreters_head, &interpreter) != 0)
		return 0;
	for (int i = 0; i < MAX_PYTHON_INTERPRETERS; i++) {
		if (interpreter == 0)
			return 0;
		__u64 tstate = python_interpreter_thread(layout, interpreter, fsbase);
		if (tstate != 0) {
			bpf_map_update_elem(&python_threads, &tid, &tstate, BPF_ANY);
			return tstate;
		}
		if (layout->interp_next == PYTHON_OFFSET_NONE ||
		    python_read_u64(interpreter + layout->interp_next, &interpreter) != 0)
			return 0;
	}
	return 0;
}

/* A frame's check of its code object: the three pointers at layout->code_check, mixed as the
 * symbolizer's `code_check` (python/code.rs) mixes them. Never 0, which means "no check". */
static __always_inline __u64 python_code_check(const __u64 *words)
{
	__u64 check = words[0] ^ ((words[1] << 21) | (words[1] >> 43)) ^ ((words[2] << 42) | (words[2] >> 22));
	return check ? check : 1;
}

/* Visits the frame at scratch->frame: keeps it in scratch->stack (or, for a 3.12+ shim, marks the
 * frame kept before it as an entry) and moves scratch->frame to its caller. Returns 1 when the walk
 * is over (end of the chain, the bound, a failed read), else 0. */
__noinline int python_step(struct python_scratch *scratch, const struct python_layout *layout)
{
	if (!scratch || !layout)
		return 1;
	struct python_stack *stack = &scratch->stack;
	__u64 frame = scratch->frame;
	__u32 len = stack->len;
	if (frame == 0)
		return 1;
	if (len >= MAX_PYTHON_FRAMES) {
		stack->flags |= PYTHON_STACK_TRUNCATED;
		return 1;
	}
	if (bpf_probe_read_user(scratch->window, PYTHON_FRAME_WINDOW, (void *)frame) != 0) {
		stack->flags |= PYTHON_STACK_READ_FAILED;
		return 1;
	}
	scratch->frame = window_u64(scratch->window, layout->frame_previous);
	if (layout->frame_owner != PYTHON_OFFSET_NONE &&
	    window_u8(scratch->window, layout->frame_owner) == layout->owner_cstack) {
		/* 3.12+: the shim an interpreter call pushes first; the frame kept before it was the first
		 * that call ran. */
		if (len > 0) {
			__u32 last = (len - 1) & (MAX_PYTHON_FRAMES - 1);
			stack->entry[last / 64] |= 1ull << (last % 64);
		}
		return 0;
	}
	__u32 index = len & (MAX_PYTHON_FRAMES - 1);
	stack->frames[index].code = window_u64(scratch->window, layout->frame_code);
	stack->frames[index].instr = layout->instr_size == 4 ? window_u32(scratch->window, layout->frame_instr)
							     : window_u64(scratch->window, layout->frame_instr);
	/* One more read per frame: the code object, which a later read from userspace may find
	 * freed and replaced. Unreadable now, it gets no check (as before checks were taken). */
	stack->frames[index].check = 0;
	if (layout->code_check != PYTHON_OFFSET_NONE) {
		__u64 words[3];
		__u64 at = stack->frames[index].code + layout->code_check;
		if (bpf_probe_read_user(words, sizeof(words), (void *)at) == 0)
			stack->frames[index].check = python_code_check(words);
	}
	if ((layout->flags & PYTHON_EVERY_FRAME_ENTRY) ||
	    (layout->frame_is_entry != PYTHON_OFFSET_NONE && window_u8(scratch->window, layout->frame_is_entry) != 0))
		stack->entry[index / 64] |= 1ull << (index % 64);
	stack->len = len + 1;
	return 0;
}

/* A hash of the walked stack: its id in `python_stacks`. Never 0, which means "no Python stack".
 * Identical stacks get the same id, which is the point; different stacks with the same 64-bit hash
 * would share one entry (odds of about n^2 / 2^65 for n distinct stacks per generation). */
__noinline __u64 python_stack_hash(const struct python_stack *stack)
{
	if (!stack)
		return 1;
	__u32 len = stack->len;
	__u64 hash = 0x9e3779b97f4a7c15ull ^ ((__u64)len << 32 | stack->flags);
	hash = (hash ^ stack->entry[0]) * 0xff51afd7ed558ccdull;
	hash = (hash ^ stack->entry[1]) * 0xff51afd7ed558ccdull;
	for (int i = 0; i < MAX_PYTHON_FRAMES; i++) {
		if (i >= len)
			break;
		hash = (hash ^ stack->frames[i].code) * 0xff51afd7ed558ccdull;
		hash ^= hash >> 29;
		hash = (hash ^ stack->frames[i].instr) * 0xc4ceb9fe1a85ec53ull;
		hash ^= hash >> 32;
		hash = (hash ^ stack->frames[i].check) * 0xff51afd7ed558ccdull;
		hash ^= hash >> 29;
	}
	return hash ? hash : 1;
}

/* The Python stack of the current sample: its id in the generation's `python_stacks`, or 0 when
 * the sample has none. */
__noinline __u64 python_sample_stack(__u32 tgid, __u32 tid, __u32 instance, __u32 generation)
{
	struct python_process *process = bpf_map_lookup_elem(&python_processes, &tgid);
	if (!process)
		return 0;
	python_stat(PYTHON_STAT_SAMPLES);
	if (process->instance != instance) {
		python_stat(PYTHON_STAT_OTHER_INSTANCE);
		return 0;
	}
	__u64 tstate = python_thread_state(process, tid);
	if (tstate == 0) {
		python_stat(PYTHON_STAT_NO_THREAD_STATE);
		return 0;
	}
	__u32 zero = 0;
	struct python_scratch *scratch = bpf_map_lookup_elem(&python_scratch, &zero);
	if (!scratch)
		return 0;
	const struct python_layout *layout = &process->layout;
	struct python_stack *stack = &scratch->stack;
	stack->len = 0;
	stack->flags = 0;
	stack->entry[0] = 0;
	stack->entry[1] = 0;

	__u64 frame;
	if (python_read_u64(tstate + layout->tstate_frame, &frame) != 0 ||
	    (layout->cframe_current_frame != PYTHON_OFFSET_NONE && frame != 0 &&
	     python_read_u64(frame + layout->cframe_current_frame, &frame) != 0)) {
		python_stat(PYTHON_STAT_READ_FAILED);
		return 0;
	}
	if (frame == 0) {
		python_stat(PYTHON_STAT_NO_FRAME);
		return 0;
	}
	scratch->frame = frame;
	for (int i = 0; i < MAX_PYTHON_FRAME_VISITS; i++) {
		if (python_step(scratch, layout))
			break;
	}
	if (scratch->frame != 0 && !(stack->flags & PYTHON_STACK_READ_FAILED))
		stack->flags |= PYTHON_STACK_TRUNCATED;
	if (stack->len == 0) {
		python_stat((stack->flags & PYTHON_STACK_READ_FAILED) ? PYTHON_STAT_READ_FAILED : PYTHON_STAT_NO_FRAME);
		return 0;
	}
	if (stack->flags & PYTHON_STACK_TRUNCATED)
		python_stat(PYTHON_STAT_TRUNCATED);
	__u64 id = python_stack_hash(stack);
	void *stacks = generation ? (void *)&python_stacks_1 : (void *)&python_stacks;
	long err = bpf_map_update_elem(stacks, &id, stack, BPF_NOEXIST);
	if (err != 0 && err != -EEXIST) {
		python_stat(PYTHON_STAT_STACK_MAP_FULL);
		return 0;
	}
	python_stat(PYTHON_STAT_WALKED);
	return id;
}

/* The process instance ended (exec or exit): its layout no longer applies. */
static __always_inline void python_instance_ended(__u32 tgid)
{
	bpf_map_delete_elem(&python_processes, &tgid);
}

/* A thread exited: its TID may come back with another thread state. */
static __always_inline void python_thread_exited(__u32 tid)
{
	bpf_map_delete_elem(&python_threads, &tid);
}

#endif /* EMBERPROF_PYTHON_BPF_H */
