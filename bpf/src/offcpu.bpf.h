// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * --off-cpu: where target threads wait. A BTF tracepoint on sched_switch times every interval a
 * target thread spends switched out and charges it to the stacks it switched out in, so that on-CPU
 * samples and off-CPU time together make each thread's wall-clock time.
 *
 * At a switch-out (the current task is `prev`), the stacks are taken as a CPU sample takes them:
 * the kernel stack and the frame-pointer user stack as ids in `offcpu_stacks`, or, where
 * --unwind auto says the code is frameless (nearly always: threads block inside libc), the user
 * registers and a copy of the stack, sent through the ring buffer at once (the stack cannot be read
 * at the switch-in: another task runs then). The start time and the stack ids go into the global
 * `offcpu_threads` map by thread id; global, not per CPU, because a thread is often switched in on
 * another CPU than the one it left; a mark in the task's own storage (`offcpu_tasks`) tells the
 * switch-in whether to look there at all. At the switch-in the elapsed time is added to the
 * stacks' count in `offcpu_counts` (of the current generation), or, for stacks in the ring
 * buffer, sent as a RECORD_OFF_CPU_END. Threads still switched out at the end are read from `offcpu_threads` and
 * counted up to then by userspace.
 *
 * `offcpu_stacks` has one generation and is never emptied while recording: a thread switched out
 * across a map switch still refers to its ids. When it fills (or collides), the stacks are streamed
 * inline instead. Nothing here exists without --off-cpu: it is included at the end of
 * profile.bpf.c only in the object built from profile_offcpu.bpf.c (its task storage map needs
 * Linux 5.11; the CPU-only object loads on 5.8), where it uses the sampler's maps (target filter,
 * instances, plans, the generation) and functions (process_instance, needs_stack_copy, the stack
 * copy).
 */

const volatile struct offcpu_config offcpu_cfg = {};

/* Kernel stacks taken here start in this program: its own frame and bpf_trace_run4 (the
 * tracepoint's caller, for tp_btf as for raw tracepoints) are skipped (the BPF_F_SKIP_FIELD_MASK
 * part of the flags), so they start at __schedule, where the thread waits. Checked on Linux 6.18 (tests/it/off_cpu.rs asserts it). */
#define OFF_CPU_KERNEL_SKIP 2

/* Target threads switched out now, by thread id. Resized at load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct offcpu_start);
} offcpu_threads SEC(".maps");

/* What the program keeps on each task it saw switch out (BPF-only: userspace never reads it). */
struct offcpu_task {
	/* 1 while the thread has an entry in `offcpu_threads`: the switch-in, which runs for every
	 * task the machine switches to, looks up that global hash only then (a followed switch-out is
	 * 1 in N, and most tasks are no target at all). */
	__u32 pending;
	/* The target filter's verdict on the task's process (OFFCPU_TARGET_*), 0 before the first
	 * look. It cannot change while the task lives: targets are set before the program is
	 * attached, and a followed child is added at its fork, before it first runs; a target whose
	 * process ends is deleted only as its last thread exits. */
	__u32 target;
	/* bpf_ktime_get_ns() at a switch-out that was not followed, 0 when none is open: its
	 * interval is timed all the same, and added to `carry_ns` at the switch-in. */
	__u64 out_ns;
	/* Time switched out in intervals not followed since the last followed one. The next followed
	 * interval takes it, on its own stacks: every interval is counted once, at its own length
	 * (a followed interval is not counted N times, which made one long preempted wait that
	 * happened to be followed count hundreds of times on a busy machine). */
	__u64 carry_ns;
	/* bpf_ktime_get_ns() at the task's last switch-out, followed or not; 0 before its first,
	 * which is so always followed: a thread that blocks once for the whole capture is drawn on
	 * its own stack. */
	__u64 last_out_ns;
};
/* A switch-out this long after the task's previous one is always followed: a thread that switches
 * at most a thousand times a second costs little to follow, and left out, its interval could be
 * the last before the capture ends, which no later followed one carries (a 60 ms sleep lost of a
 * 2 s capture, seen under --all on a busy machine). Only fast switchers are sampled. */
#define OFFCPU_SLOW_SWITCH_NS 1000000ULL
/* A switch-out is followed whatever the countdown says once the thread carries this much time of
 * intervals not followed: it bounds the time drawn on a later stack than the one it was spent in
 * (a thread that sleeps 60 ms at a time has every other switch-out followed), and what is left
 * uncounted when the capture ends. A ping-pong's threads carry ~3 ms between followed ones. */
#define OFFCPU_CARRY_FOLLOW_NS 10000000ULL
#define OFFCPU_TARGET_YES 1
#define OFFCPU_TARGET_NO 2

/* Task-local storage, not per CPU: it goes with the task to whichever CPU switches it in, and is
 * freed with the task (or the map). A lookup here costs less than one in the global hashes (their
 * difference measured with kernel.bpf_stats_enabled, see docs/performance.md). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct offcpu_task);
} offcpu_tasks SEC(".maps");

/* Stacks threads switched out in; never BPF_F_REUSE_STACKID (see `stacks`). */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384); /* resized at load */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} offcpu_stacks SEC(".maps");

/* Nanoseconds switched out per (thread, stacks), one map per generation (see GENERATIONS). */
struct offcpu_count_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* resized at load */
	__type(key, struct sample_key);
	__type(value, __u64);
};
struct offcpu_count_map offcpu_counts SEC(".maps");
struct offcpu_count_map offcpu_counts_1 SEC(".maps");

/* The adaptive N (offcpu_config.sample_every 0): one switch-out in N is followed. Written by
 * userspace from the switch-out rate it reads in `offcpu_stats`; 0 (before its first write) counts
 * as 1. A map, not the const config, so that it can change while recording. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} offcpu_sample_every SEC(".maps");

/* Per CPU: switch-outs of target threads still to be left out before the next one followed (with
 * N > 1). A countdown, not a random number at each switch-out: one helper call less on the path
 * nearly every switch-out takes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} offcpu_skip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OFFCPU_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} offcpu_stats SEC(".maps");

static __always_inline void offcpu_stat_inc(__u32 stat)
{
	__u64 *slot = bpf_map_lookup_elem(&offcpu_stats, &stat);
	if (slot)
		*slot += 1; /* per-CPU slot: no other writer */
}

/* Ring-buffer wake-up for a record of a sampled switch-out (1 in `every`, every > 1). Waking the
 * reader there runs it on a CPU a ping-pong partner is about to need, lengthening just the
 * followed interval, which then counts `every` times (twice the ping-pong's true width, seen with
 * benches/off-cpu.sh). Userspace reads at least every 100 ms under --off-cpu (ADAPT_INTERVAL),
 * well within the buffer at the sampled rates; past half full, it is woken anyway. */
static __always_inline __u64 offcpu_wakeup_flags(__u32 every)
{
	if (every <= 1)
		return wakeup_flags();
	if (bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= 4 * (__u64)cfg.wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* The switched-out task's user registers (it is always in the kernel at a switch). */
static __always_inline struct pt_regs___emberprof *offcpu_user_regs(void)
{
	return (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* Sends the registers and a copy of the top of the user stack, with the kernel stack, as a
 * RECORD_OFF_CPU_STACK (the sampler's send_user_stack, with registers from the task). 0 if sent. */
static __always_inline int offcpu_send_copy(void *ctx, const struct sample_key *key,
					    struct pt_regs___emberprof *regs, __u32 every)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct stack_scratch *scratch = bpf_map_lookup_elem(&stack_scratch, &cpu);
	if (!scratch)
		return -1;
	struct user_stack_record *rec = &scratch->record;
	__u64 sp = regs->sp;
	rec->kind = RECORD_OFF_CPU_STACK;
	copy_red_zone(rec, sp);
	rec->key = *key;
	rec->key.user_stack_id = STACK_ID_IN_RECORD;
	rec->ip = regs->ip;
	rec->sp = sp;
	rec->bp = regs->bp;
	rec->gp_regs[0] = regs->ax;
	rec->gp_regs[1] = regs->dx;
	rec->gp_regs[2] = regs->cx;
	rec->gp_regs[3] = regs->bx;
	rec->gp_regs[4] = regs->si;
	rec->gp_regs[5] = regs->di;
	rec->gp_regs[6] = regs->bp;
	rec->gp_regs[7] = sp;
	rec->gp_regs[8] = regs->r8;
	rec->gp_regs[9] = regs->r9;
	rec->gp_regs[10] = regs->r10;
	rec->gp_regs[11] = regs->r11;
	rec->gp_regs[12] = regs->r12;
	rec->gp_regs[13] = regs->r13;
	rec->gp_regs[14] = regs->r14;
	rec->gp_regs[15] = regs->r15;
	rec->kernel_len = 0;
	if (cfg.capture_kernel) {
		rec->key.kernel_stack_id = STACK_ID_IN_RECORD;
		long bytes = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips),
					   OFF_CPU_KERNEL_SKIP);
		if (bytes > 0)
			rec->kernel_len = bytes / sizeof(__u64);
	}
	/* Constant limits, as in send_user_stack (the verifier prunes each copy of the loop). */
	__u32 copied;
	__u32 *raised = bpf_map_lookup_elem(&stack_copy_sizes, &key->instance);
	if (raised && *raised >= MAX_STACK_COPY)
		copied = copy_user_stack(scratch, sp, MAX_STACK_COPY);
	else if (raised && *raised >= MAX_STACK_COPY / 2)
		copied = copy_user_stack(scratch, sp, MAX_STACK_COPY / 2);
	else
		copied = copy_user_stack(scratch, sp, cfg.stack_copy_bytes);
	rec->stack_len = copied;
	__u64 size = sizeof(struct user_stack_record) + copied;
	if (size > sizeof(struct stack_scratch))
		return -1;
	return bpf_ringbuf_output(&records, scratch, size, offcpu_wakeup_flags(every)) == 0 ? 0 : -1;
}

/* Sends both stacks inline as a RECORD_OFF_CPU_SAMPLE (they did not fit `offcpu_stacks`). */
static __always_inline int offcpu_send_stacks(void *ctx, const struct sample_key *key, int user,
					      __u32 every)
{
	struct sample_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec)
		return -1;
	rec->kind = RECORD_OFF_CPU_SAMPLE;
	rec->kernel_len = 0;
	rec->user_len = 0;
	rec->_pad = 0;
	rec->key = *key;
	rec->key.kernel_stack_id = STACK_ID_NONE;
	rec->key.user_stack_id = STACK_ID_NONE;
	if (cfg.capture_kernel) {
		rec->key.kernel_stack_id = STACK_ID_IN_RECORD;
		long bytes = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips),
					   OFF_CPU_KERNEL_SKIP);
		if (bytes > 0)
			rec->kernel_len = bytes / sizeof(__u64);
	}
	if (user) {
		rec->key.user_stack_id = STACK_ID_IN_RECORD;
		long bytes = bpf_get_stack(ctx, rec->user_ips, sizeof(rec->user_ips), BPF_F_USER_STACK);
		if (bytes > 0)
			rec->user_len = bytes / sizeof(__u64);
	}
	bpf_ringbuf_submit(rec, offcpu_wakeup_flags(every));
	return 0;
}

/* A stack id in `offcpu_stacks`; *full set when the stack did not fit (collision, map full). */
static __always_inline __s32 offcpu_stack_id(void *ctx, __u64 flags, int *full)
{
	long id = bpf_get_stackid(ctx, &offcpu_stacks, flags);
	if (id >= 0)
		return id;
	if (id == -EEXIST || id == -ENOMEM)
		*full = 1;
	/* -EFAULT: no such stack (a task without user memory). */
	return STACK_ID_NONE;
}

/* The time now, read once per context switch: both sides of a ping-pong's switch (one thread
 * out, not followed; the other in) need it, and in a VM the clock is a good part of the cost. */
static __always_inline __u64 offcpu_now(__u64 *now)
{
	if (!*now)
		*now = bpf_ktime_get_ns();
	return *now;
}

/* `prev` (the current task) is switched out. */
static __always_inline void offcpu_switch_out(void *ctx, struct task_struct___emberprof *prev,
					      __u32 prev_state, __u64 *now)
{
	/* Cheapest first: the fields are direct loads (a BTF-typed argument), then the task's own
	 * storage, which also keeps the target filter's verdict: the global hash of targets is looked
	 * up once per task, not at each of its switches. The idle task (tid 0, half the switches of
	 * a ping-pong across CPUs) is left after one load. */
	__u32 tid = prev->pid;
	if (tid == 0 || (prev_state & OFF_CPU_TASK_DEAD))
		return;
	__u32 tgid = prev->tgid;
	if (tgid == offcpu_cfg.self_tgid)
		return;
	/* Kernel threads wait by design; idle CPUs run swapper (tid 0). */
	if (prev->mm == NULL)
		return;
	struct offcpu_task *task = bpf_task_storage_get(&offcpu_tasks, (struct task_struct *)prev, 0,
							BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (cfg.filter_tgids) {
		__u32 target = task ? task->target : 0;
		if (target == 0) {
			target = bpf_map_lookup_elem(&target_tgids, &tgid) ? OFFCPU_TARGET_YES
									   : OFFCPU_TARGET_NO;
			if (task)
				task->target = target;
		}
		if (target != OFFCPU_TARGET_YES)
			return;
	}
	/* Sampling is decided here, right after the filters: a switch-out left out costs a per-CPU
	 * countdown and a per-CPU counter (the rate userspace adapts N from), nothing more. */
	__u32 every = offcpu_cfg.sample_every;
	__u32 zero = 0;
	if (every == 0) {
		__u32 *adaptive = bpf_map_lookup_elem(&offcpu_sample_every, &zero);
		every = adaptive && *adaptive > 1 ? *adaptive : 1;
	}
	int forced = !task || task->carry_ns >= OFFCPU_CARRY_FOLLOW_NS;
	if (task) {
		__u64 at = offcpu_now(now);
		if (at - task->last_out_ns >= OFFCPU_SLOW_SWITCH_NS)
			forced = 1;
		task->last_out_ns = at;
	}
	if (every > 1 && !forced) {
		__u64 gaps = 2 * (__u64)every - 1;
		__u32 *left = bpf_map_lookup_elem(&offcpu_skip, &zero);
		if (left && *left > 0 && *left < gaps) {
			*left -= 1;
			offcpu_stat_inc(OFFCPU_NOT_SAMPLED);
			/* Timed all the same: its length goes to the next followed interval. */
			if (task)
				task->out_ns = offcpu_now(now);
			return;
		}
		/* Followed (also when N fell below the countdown): the next one after 0..2N-2 left
		 * out, drawn at random (N-1 on average: 1 in N followed), so that switches in a
		 * pattern, a ping-pong's two threads taking turns, are followed in every phase. */
		if (left)
			*left = bpf_get_prandom_u32() % gaps;
	}
	offcpu_stat_inc(OFFCPU_SWITCH_OUTS);
	if (!task) {
		/* No memory for the task's mark: the switch-in would not look for the interval. */
		offcpu_stat_inc(OFFCPU_LOST_THREADS_FULL);
		return;
	}

	struct offcpu_start start = {};
	start.sample_every = every;
	start.carry_ns = task->carry_ns;
	task->carry_ns = 0;
	task->out_ns = 0;
	struct sample_key *key = &start.key;
	key->tgid = tgid;
	key->tid = tid;
	BPF_CORE_READ_STR_INTO(&key->thread_comm, prev, comm);
	BPF_CORE_READ_STR_INTO(&key->process_comm, prev, group_leader, comm);
	key->instance = process_instance(tgid, key->process_comm, prev);
	key->kernel_stack_id = STACK_ID_NONE;
	key->user_stack_id = STACK_ID_NONE;

	if (cfg.capture_user && cfg.unwind_mode != UNWIND_FRAME_POINTERS) {
		struct pt_regs___emberprof *regs = offcpu_user_regs();
		if (cfg.unwind_mode == UNWIND_DWARF ||
		    needs_stack_copy(tgid, key->instance, regs->ip, regs->bp)) {
			if (offcpu_send_copy(ctx, key, regs, every) == 0) {
				offcpu_stat_inc(OFFCPU_STREAMED);
				start.streamed = 1;
				goto store;
			}
			offcpu_stat_inc(OFFCPU_COPY_FALLBACK);
		}
	}
	int full = 0;
	if (cfg.capture_kernel)
		key->kernel_stack_id = offcpu_stack_id(ctx, OFF_CPU_KERNEL_SKIP, &full);
	if (cfg.capture_user)
		key->user_stack_id = offcpu_stack_id(ctx, BPF_F_USER_STACK, &full);
	if (full) {
		if (offcpu_send_stacks(ctx, key, cfg.capture_user, every) != 0) {
			offcpu_stat_inc(OFFCPU_LOST_RINGBUF_OUT);
			return;
		}
		offcpu_stat_inc(OFFCPU_STREAMED);
		start.streamed = 1;
	}
store:
	/* The interval starts once the stacks are taken, not at the switch-out: a copy takes
	 * microseconds, as long as a fast hand-over's whole wait, and only followed switch-outs pay
	 * it; counted N times it would inflate sampled time several-fold (seen on the pipe
	 * ping-pong of benches/off-cpu.sh). */
	start.start_ns = bpf_ktime_get_ns();
	*now = start.start_ns;
	if (bpf_map_update_elem(&offcpu_threads, &tid, &start, BPF_ANY) != 0) {
		offcpu_stat_inc(OFFCPU_LOST_THREADS_FULL);
		return;
	}
	task->pending = 1;
}

/* Adds `nanos` to the key's count in the current generation (the race of two CPUs inserting the same
 * key is settled as in count_sample). */
static __always_inline int offcpu_count(struct sample_key *key, __u64 nanos)
{
	__u32 zero = 0;
	__u32 *current = bpf_map_lookup_elem(&generation, &zero);
	key->generation = current && *current ? 1 : 0;
	void *map = key->generation ? (void *)&offcpu_counts_1 : (void *)&offcpu_counts;
	__u64 *count = bpf_map_lookup_elem(map, key);
	if (count) {
		__sync_fetch_and_add(count, nanos);
		return 0;
	}
	long err = bpf_map_update_elem(map, key, &nanos, BPF_NOEXIST);
	if (err == 0)
		return 0;
	if (err == -EEXIST) {
		count = bpf_map_lookup_elem(map, key);
		if (count) {
			__sync_fetch_and_add(count, nanos);
			return 0;
		}
	}
	return -1;
}

/* `next` is switched in: the interval it spent switched out ends. */
static __always_inline void offcpu_switch_in(struct task_struct___emberprof *next, __u64 *now)
{
	__u32 tid = next->pid;
	/* The idle task is never switched out here: no lookup. */
	if (tid == 0)
		return;
	struct offcpu_task *task = bpf_task_storage_get(&offcpu_tasks, (struct task_struct *)next, 0, 0);
	if (!task)
		return;
	if (task->out_ns) {
		/* A switch-out that was not followed: timed into the carry (see `carry_ns`). */
		__u64 waited = offcpu_now(now) - task->out_ns;
		task->out_ns = 0;
		if (waited >= offcpu_cfg.min_ns)
			task->carry_ns += waited;
		return;
	}
	if (!task->pending)
		return;
	task->pending = 0;
	struct offcpu_start *found = bpf_map_lookup_elem(&offcpu_threads, &tid);
	if (!found)
		return;
	struct offcpu_start start = *found;
	bpf_map_delete_elem(&offcpu_threads, &tid);
	offcpu_stat_inc(OFFCPU_SWITCH_INS);
	__u64 nanos = offcpu_now(now) - start.start_ns;
	if (nanos < offcpu_cfg.min_ns) {
		offcpu_stat_inc(OFFCPU_BELOW_MIN);
		nanos = 0;
	}
	/* With the time of the intervals not followed before it (see `carry_ns`). */
	nanos += start.carry_ns;
	if (nanos == 0)
		return;
	if (start.streamed) {
		struct offcpu_end_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
		if (!rec) {
			offcpu_stat_inc(OFFCPU_LOST_RINGBUF_END);
			return;
		}
		rec->kind = RECORD_OFF_CPU_END;
		rec->tid = tid;
		rec->nanos = nanos;
		bpf_ringbuf_submit(rec, offcpu_wakeup_flags(start.sample_every));
		offcpu_stat_inc(OFFCPU_ENDED);
		return;
	}
	if (offcpu_count(&start.key, nanos) == 0)
		offcpu_stat_inc(OFFCPU_COUNTED);
	else
		offcpu_stat_inc(OFFCPU_LOST_COUNTS_FULL);
}

/* A BTF-typed tracepoint (tp_btf), not a raw one as the lifecycle programs: it runs on every
 * context switch of the machine, and its task pointers are typed, so their fields are plain loads
 * rather than a bpf_probe_read_kernel call each (measured with kernel.bpf_stats_enabled on the
 * ping-pong of benches/off-cpu.sh, see docs/performance.md). The price, a second parse of the
 * kernel's BTF at load to find the tracepoint's type (~30 ms), is paid only with --off-cpu. Its
 * prev_state argument is there since Linux 5.18. */
SEC("tp_btf/sched_switch")
int BPF_PROG(offcpu_switch, int preempt, struct task_struct___emberprof *prev,
	     struct task_struct___emberprof *next, unsigned int prev_state)
{
	__u64 now = 0;
	offcpu_switch_out(ctx, prev, prev_state, &now);
	offcpu_switch_in(next, &now);
	return 0;
}
