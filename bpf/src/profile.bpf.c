// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * emberprof's sampler: runs on every cpu-clock tick of every CPU, keeps the ticks of the target
 * processes, and counts each distinct (thread, kernel stack, user stack) in the `counts` map, so the
 * per-sample cost is two stack walks and one hash update. Samples that cannot be counted in the maps
 * (stack-map collision, a full map) are streamed whole through the `records` ring buffer instead of
 * being dropped; every way out of the program bumps one counter in `stats` (see emberprof.h).
 */
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "emberprof.h"
#include "kernel_types.h"
#include "python.bpf.h"

/* Helpers such as bpf_probe_read_kernel and bpf_get_current_task are GPL-only. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";

const volatile struct config cfg = {};

/* Processes to sample when cfg.filter_tgids is set; filled by userspace before attaching. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* resized at load */
	__type(key, __u32);
	__type(value, __u8);
} target_tgids SEC(".maps");

/* Kernel and user stacks, deduplicated by the kernel, one map per generation. Never
 * BPF_F_REUSE_STACKID: on a hash collision that flag overwrites the bucket, so an id already counted
 * would silently name another stack. */
struct stack_map {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384); /* resized at load */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
};
struct stack_map stacks SEC(".maps");
struct stack_map stacks_1 SEC(".maps");

struct count_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized at load */
	__type(key, struct sample_key);
	__type(value, __u64);
};
struct count_map counts SEC(".maps");
struct count_map counts_1 SEC(".maps");

/* The generation new samples go to (0: `stacks`/`counts`, 1: `stacks_1`/`counts_1`); switched by
 * userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} generation SEC(".maps");

/* Process instances: the session-unique id of the program each TGID runs now. The first sample of a
 * TGID without one draws a new id and announces it; an exec or the exit of the thread-group leader
 * removes the entry, so the next sample of that TGID (a new program, or a recycled PID) gets a new
 * instance and a new snapshot. LRU: an evicted live process just gets a new instance. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} instances SEC(".maps");

/* The last instance id handed out. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} instance_counter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* bytes; resized at load */
} records SEC(".maps");

/* First-sample and instance-end notices, apart from `records`: when a busy reader lets stack copies
 * fill that one, the notices still get through, and the processes they announce are still named
 * (from their mapping records if they are gone by then). A few thousand notices. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} notices SEC(".maps");

/* --unwind auto: processes whose user stacks are all copied (their main executable is frameless). A
 * process in neither this map nor `frameless_ranges` has not been judged yet: its stacks are copied
 * too ("DWARF until judged"), so short-lived processes come out whole. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} dwarf_tgids SEC(".maps");

/* --unwind auto: the plan of every other judged process, its mappings with frameless code. A
 * frame-pointer walk that meets frameless code (at the sampled instruction or a return address) has
 * the stack copied. Values are 14 KiB: allocated per entry, not preallocated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct frameless_ranges);
} frameless_ranges SEC(".maps");

/* --unwind auto: frameless functions of frame-pointer modules, by module id (shared by every process
 * mapping the module). 128 KiB values, allocated per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct module_exceptions);
} module_exceptions SEC(".maps");

/* --unwind auto: frameless return addresses that end a process instance's frame-pointer chain and
 * whose outer frames userspace knows (see struct root_key). LRU: instances are never reused. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct root_key);
	__type(value, __u8);
} known_roots SEC(".maps");

/* Bytes of user stack to copy for a process instance whose stacks userspace found ending at the
 * edge of the copy (frames bigger than config.stack_copy_bytes, such as git's 15 KiB
 * cmd_pack_objects frame); other processes keep the cheap default. LRU: instances are never reused. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} stack_copy_sizes SEC(".maps");

/* Staging for stack copies, one slot per CPU (max_entries set to the CPU count at load). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_scratch);
} stack_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void stat_add(__u32 stat, __u64 n)
{
	__u64 *slot = bpf_map_lookup_elem(&stats, &stat);
	if (slot)
		*slot += n; /* per-CPU slot: no other writer */
}

static __always_inline void stat_inc(__u32 stat) { stat_add(stat, 1); }

/* Flags for a ring-buffer write: wake the reader only once enough has piled up, so a stream of stack
 * copies does not cost a wakeup each (the reader also polls on a timer). */
static __always_inline __u64 wakeup_flags(void)
{
	if (bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) >= cfg.wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* The instance of the current process, announcing a new one to userspace (which then reads the
 * process's memory map while it is alive). 0 if no id could be drawn. */
static __always_inline __u32 process_instance(__u32 tgid, const char *process_comm,
					       struct task_struct___emberprof *task)
{
	__u32 *existing = bpf_map_lookup_elem(&instances, &tgid);
	if (existing)
		return *existing;

	__u32 zero = 0;
	__u64 *counter = bpf_map_lookup_elem(&instance_counter, &zero);
	if (!counter)
		return 0;
	__u32 instance = __sync_fetch_and_add(counter, 1) + 1;
	if (bpf_map_update_elem(&instances, &tgid, &instance, BPF_NOEXIST) != 0) {
		/* Another CPU drew one for this TGID first: use that. */
		existing = bpf_map_lookup_elem(&instances, &tgid);
		return existing ? *existing : 0;
	}

	struct process_seen_record *rec = bpf_ringbuf_reserve(&notices, sizeof(*rec), 0);
	if (!rec) {
		/* Forget the instance so the next sample retries the notice. */
		bpf_map_delete_elem(&instances, &tgid);
		stat_inc(STAT_PROCESS_SEEN_LOST);
		return instance;
	}
	rec->kind = RECORD_PROCESS_SEEN;
	rec->tgid = tgid;
	rec->instance = instance;
	rec->_pad = 0;
	__builtin_memcpy(rec->process_comm, process_comm, COMM_LEN);
	rec->start_time = BPF_CORE_READ(task, group_leader, start_boottime);
	rec->time = bpf_ktime_get_ns();
	/* Wake the reader now: the process may be short-lived. */
	bpf_ringbuf_submit(rec, BPF_RB_FORCE_WAKEUP);
	return instance;
}

/* bpf_get_stackid, with the errors folded into what the sample does next. */
static __always_inline __s32 stack_id(struct bpf_perf_event_data *ctx, __u32 gen, __u64 flags,
				      __u32 error_stat, int *must_stream)
{
	long id;
	if (gen)
		id = bpf_get_stackid(ctx, &stacks_1, flags);
	else
		id = bpf_get_stackid(ctx, &stacks, flags);
	if (id >= 0)
		return id;
	if (id == -EEXIST) {
		stat_inc(STAT_STREAM_STACK_COLLISION);
		*must_stream = 1;
		return STACK_ID_IN_RECORD;
	}
	if (id == -ENOMEM) {
		stat_inc(STAT_STREAM_STACK_MAP_FULL);
		*must_stream = 1;
		return STACK_ID_IN_RECORD;
	}
	/* -EFAULT is the normal answer for the kernel stack of a sample taken in user mode. */
	if (id != -EFAULT)
		stat_inc(error_stat);
	return STACK_ID_NONE;
}

/* Send one sample through the ring buffer. Stacks marked STACK_ID_IN_RECORD are copied into the record
 * with bpf_get_stack; the others keep their map ids. */
static __always_inline void stream_sample(struct bpf_perf_event_data *ctx, const struct sample_key *key)
{
	struct sample_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec) {
		stat_inc(STAT_LOST_RINGBUF_FULL);
		return;
	}
	rec->kind = RECORD_SAMPLE;
	rec->kernel_len = 0;
	rec->user_len = 0;
	rec->_pad = 0;
	rec->key = *key;
	if (key->kernel_stack_id == STACK_ID_IN_RECORD) {
		long bytes = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips), 0);
		if (bytes > 0)
			rec->kernel_len = bytes / sizeof(__u64);
	}
	if (key->user_stack_id == STACK_ID_IN_RECORD) {
		long bytes = bpf_get_stack(ctx, rec->user_ips, sizeof(rec->user_ips), BPF_F_USER_STACK);
		if (bytes > 0)
			rec->user_len = bytes / sizeof(__u64);
	}
	bpf_ringbuf_submit(rec, wakeup_flags());
	stat_inc(STAT_STREAMED);
}

/* Tell userspace about a new key so it can symbolize the stacks while sampling goes on. Optional: a
 * key whose notice is lost is symbolized when the maps are read at the end. */
static __always_inline void announce_key(const struct sample_key *key)
{
	struct new_key_record *rec = bpf_ringbuf_reserve(&records, sizeof(*rec), 0);
	if (!rec) {
		stat_inc(STAT_NEW_KEY_LOST);
		return;
	}
	rec->kind = RECORD_NEW_KEY;
	rec->_pad = 0;
	rec->key = *key;
	bpf_ringbuf_submit(rec, wakeup_flags());
}

/* The user registers of the current task: the interrupted ones for a sample taken in user mode,
 * otherwise the ones the kernel saved when the task entered it. */
static __always_inline void user_registers(struct bpf_perf_event_data *ctx, __u64 *ip, __u64 *sp, __u64 *bp)
{
	if ((ctx->regs.cs & 3) == 3) {
		__u64 user_ip = ctx->regs.rip, user_sp = ctx->regs.rsp, user_bp = ctx->regs.rbp;
		/* Keep the loads in this branch: merged with the other branch, clang would load through a
		 * ctx pointer with an offset, which the verifier rejects. */
		asm volatile("" : "+r"(user_ip), "+r"(user_sp), "+r"(user_bp));
		*ip = user_ip;
		*sp = user_sp;
		*bp = user_bp;
		return;
	}
	struct pt_regs___emberprof *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	*ip = regs->ip;
	*sp = regs->sp;
	*bp = regs->bp;
}

/* All general-purpose user registers, by DWARF number (see USER_GP_REGS), from the same place as
 * user_registers takes ip/sp/bp: CFI in hand-written assembly computes CFAs from any of them. */
static __always_inline void user_gp_registers(struct bpf_perf_event_data *ctx, __u64 *gp)
{
	if ((ctx->regs.cs & 3) == 3) {
		/* Eight-byte loads from ctx at constant offsets, one per field: the verifier rejects
		 * anything else on the perf-event context. */
		gp[0] = ctx->regs.rax;
		gp[1] = ctx->regs.rdx;
		gp[2] = ctx->regs.rcx;
		gp[3] = ctx->regs.rbx;
		gp[4] = ctx->regs.rsi;
		gp[5] = ctx->regs.rdi;
		gp[6] = ctx->regs.rbp;
		gp[7] = ctx->regs.rsp;
		gp[8] = ctx->regs.r8;
		gp[9] = ctx->regs.r9;
		gp[10] = ctx->regs.r10;
		gp[11] = ctx->regs.r11;
		gp[12] = ctx->regs.r12;
		gp[13] = ctx->regs.r13;
		gp[14] = ctx->regs.r14;
		gp[15] = ctx->regs.r15;
		/* Keeps clang from merging these loads with the other branch's (see user_registers). */
		asm volatile("" ::: "memory");
		return;
	}
	struct pt_regs___emberprof *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	gp[0] = regs->ax;
	gp[1] = regs->dx;
	gp[2] = regs->cx;
	gp[3] = regs->bx;
	gp[4] = regs->si;
	gp[5] = regs->di;
	gp[6] = regs->bp;
	gp[7] = regs->sp;
	gp[8] = regs->r8;
	gp[9] = regs->r9;
	gp[10] = regs->r10;
	gp[11] = regs->r11;
	gp[12] = regs->r12;
	gp[13] = regs->r13;
	gp[14] = regs->r14;
	gp[15] = regs->r15;
}

/* A binary search over sorted, disjoint [start, end) ranges, one bpf_loop step at a time: the
 * verifier checks one step once, instead of every path through an unrolled search (a search's
 * bounds are precise scalars that differ on every path, so its states never prune; unrolled, the
 * two searches below cost ~0.3 s of kernel time at every start of an `auto` capture). */
struct range_search {
	const __u64 *start;
	const __u64 *end;
	__u64 addr;
	__u32 low;
	__u32 high;
	__u32 found;
};

#define NOT_FOUND 0xffffffffu

/* One step of the search over arrays of `length` (a power of two) elements; the constant mask keeps
 * every index in bounds (a mask read from the state would lose its bounds as the loop converges). */
#define RANGE_SEARCH_STEP(name, length)                                                            \
	static long name(__u32 index, void *data)                                                  \
	{                                                                                          \
		struct range_search *search = data;                                                \
		if (search->low >= search->high)                                                   \
			return 1;                                                                  \
		__u32 mid = ((search->low + search->high) / 2) & ((length) - 1);                   \
		if (search->addr < search->start[mid]) {                                           \
			search->high = mid;                                                        \
		} else if (search->addr >= search->end[mid]) {                                     \
			search->low = mid + 1;                                                     \
		} else {                                                                           \
			search->found = mid;                                                       \
			return 1;                                                                  \
		}                                                                                  \
		return 0;                                                                          \
	}

RANGE_SEARCH_STEP(plan_search_step, MAX_PLAN_MAPPINGS)
RANGE_SEARCH_STEP(exception_search_step, MAX_MODULE_EXCEPTIONS)

/* Whether addr lies in frameless code of the process: a binary search over its plan's mappings,
 * then, for a frame-pointer module, over the module's frameless functions. A global function, so
 * the verifier checks it once rather than at each of the walk's frames. */
__noinline int frameless_address(__u32 tgid, __u64 addr)
{
	struct frameless_ranges *plan = bpf_map_lookup_elem(&frameless_ranges, &tgid);
	if (!plan)
		return 0;
	struct range_search search = {
		.start = plan->start,
		.end = plan->end,
		.addr = addr,
		.high = plan->count < MAX_PLAN_MAPPINGS ? plan->count : MAX_PLAN_MAPPINGS,
		.found = NOT_FOUND,
	};
	bpf_loop(PLAN_SEARCH_STEPS, plan_search_step, &search, 0);
	if (search.found >= MAX_PLAN_MAPPINGS)
		return 0;
	__u32 found = search.found;
	__u32 module = plan->module[found];
	if (module == MODULE_FRAMELESS_WHOLE)
		return 1;
	struct module_exceptions *functions = bpf_map_lookup_elem(&module_exceptions, &module);
	if (!functions)
		return 1; /* cannot tell: copy, which is always right */
	struct range_search within = {
		.start = functions->start,
		.end = functions->end,
		.addr = addr - plan->bias[found],
		.high = functions->count < MAX_MODULE_EXCEPTIONS ? functions->count : MAX_MODULE_EXCEPTIONS,
		.found = NOT_FOUND,
	};
	bpf_loop(EXCEPTION_SEARCH_STEPS, exception_search_step, &within, 0);
	return within.found != NOT_FOUND;
}

/* The state of needs_stack_copy's frame-pointer walk, handed to each bpf_loop step. */
struct chain_walk {
	__u32 tgid;
	__u32 instance;
	__u64 fp;
	int verdict; /* WALK_* */
};

#define WALK_GOING 0
#define WALK_FP_OK 1
#define WALK_COPY 2

/* One frame of the walk. A bpf_loop callback, so the verifier checks one frame once instead of
 * unrolling MAX_STACK_DEPTH of them along every path (that cost ~0.4 s of kernel time at every
 * start of an `auto` capture). */
static long walk_one_frame(__u32 index, void *data)
{
	struct chain_walk *walk = data;
	__u64 frame[2];
	if (walk->fp == 0 || bpf_probe_read_user(frame, sizeof(frame), (void *)walk->fp) != 0) {
		walk->verdict = WALK_FP_OK; /* the chain ended in frame-pointer code */
		return 1;
	}
	__u64 next = frame[0], return_address = frame[1];
	if (!frameless_address(walk->tgid, return_address)) {
		walk->fp = next;
		return 0;
	}
	__u64 outer[2];
	if (next != 0 && bpf_probe_read_user(outer, sizeof(outer), (void *)next) == 0) {
		stat_inc(STAT_COPY_FRAMELESS_CALLER);
		walk->verdict = WALK_COPY;
		return 1;
	}
	struct root_key root = {.instance = walk->instance, .address = return_address};
	if (bpf_map_lookup_elem(&known_roots, &root)) {
		stat_inc(STAT_FP_KNOWN_ROOT);
		walk->verdict = WALK_FP_OK;
		return 1;
	}
	stat_inc(STAT_COPY_UNKNOWN_ROOT);
	walk->verdict = WALK_COPY;
	return 1;
}

/* --unwind auto: would the kernel's frame-pointer walk of this sample go wrong? It does as soon as
 * one frame on the way is frameless: the sampled instruction (its caller is skipped), or a return
 * address (the frame above it is not linked through RBP). So walk the chain as the kernel does
 * ([rbp] = caller's rbp, [rbp + 8] = return address) and check each address. One exception: a
 * frameless return address where the chain ends (glibc's __libc_start_call_main and start_thread
 * hold no frame of their own) is a root; once userspace has learned its outer frames from a DWARF
 * unwind (known_roots), the cheap walk is kept and userspace appends them. A global function: its
 * verdicts join into one unknown result, rather than each return path being checked again through
 * the rest of the sampler. */
__noinline int needs_stack_copy(__u32 tgid, __u32 instance, __u64 ip, __u64 bp)
{
	if (bpf_map_lookup_elem(&dwarf_tgids, &tgid))
		return 1;
	struct frameless_ranges *ranges = bpf_map_lookup_elem(&frameless_ranges, &tgid);
	if (!ranges) {
		stat_inc(STAT_COPY_UNJUDGED);
		return 1;
	}
	if (ranges->count == 0)
		return 0;
	if (frameless_address(tgid, ip)) {
		stat_inc(STAT_COPY_FRAMELESS_IP);
		return 1;
	}
	struct chain_walk walk = {.tgid = tgid, .instance = instance, .fp = bp, .verdict = WALK_GOING};
	bpf_loop(MAX_STACK_DEPTH, walk_one_frame, &walk, 0);
	if (walk.verdict == WALK_GOING) {
		stat_inc(STAT_FP_WALK_TOO_DEEP);
		return 0;
	}
	return walk.verdict == WALK_COPY;
}

/* Copies the red zone below sp into rec->red_zone (right-aligned). It is on sp's page or the page
 * below, which is mapped unless sp is at the bottom of the stack mapping: then only the part on sp's
 * own page is copied. */
static __always_inline void copy_red_zone(struct user_stack_record *rec, __u64 sp)
{
	rec->red_zone_len = 0;
	if (sp < RED_ZONE_BYTES)
		return;
	if (bpf_probe_read_user(rec->red_zone, RED_ZONE_BYTES, (void *)(sp - RED_ZONE_BYTES)) == 0) {
		rec->red_zone_len = RED_ZONE_BYTES;
		return;
	}
	__u32 on_page = sp & 4095;
	if (on_page == 0 || on_page >= RED_ZONE_BYTES)
		return;
	if (bpf_probe_read_user(&rec->red_zone[RED_ZONE_BYTES - on_page], on_page, (void *)(sp - on_page)) == 0)
		rec->red_zone_len = on_page;
}

/* Copies up to `limit` bytes of user stack from sp into scratch->stack, page by page; returns the
 * bytes copied. `limit` must be a constant at each call (see send_user_stack). */
static __always_inline __u32 copy_user_stack(struct stack_scratch *scratch, __u64 sp, __u32 limit)
{
	if (limit > MAX_STACK_COPY)
		limit = MAX_STACK_COPY;
	__u32 copied = 0;
	/* The first chunk runs to the end of sp's page, every other one is a whole page. */
	__u32 chunk = 4096 - (sp & 4095);
	for (int i = 0; i < MAX_STACK_COPY / 4096 + 1; i++) {
		if (copied >= limit || copied > MAX_STACK_COPY - 4096)
			break;
		if (chunk > limit - copied)
			chunk = limit - copied;
		if (chunk == 0 || chunk > 4096)
			break;
		if (bpf_probe_read_user(&scratch->stack[copied & (MAX_STACK_COPY - 1)], chunk,
					(void *)(sp + copied)) != 0)
			break;
		copied += chunk;
		chunk = 4096;
	}
	return copied;
}

/* Sends the sample with a copy of the top of the user stack, for DWARF unwinding in userspace.
 * bpf_probe_read_user cannot fault pages in and one read fails as a whole, so the copy goes page by
 * page and stops at the first page that cannot be read (the end of the stack mapping). Returns 0 if
 * sent. */
static __always_inline int send_user_stack(struct bpf_perf_event_data *ctx, const struct sample_key *key,
					   __u64 ip, __u64 sp, __u64 bp)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct stack_scratch *scratch = bpf_map_lookup_elem(&stack_scratch, &cpu);
	if (!scratch)
		return -1;
	struct user_stack_record *rec = &scratch->record;
	rec->kind = RECORD_USER_STACK;
	copy_red_zone(rec, sp);
	rec->key = *key;
	rec->key.user_stack_id = STACK_ID_IN_RECORD;
	rec->ip = ip;
	rec->sp = sp;
	rec->bp = bp;
	user_gp_registers(ctx, rec->gp_regs);
	rec->kernel_len = 0;
	if (cfg.capture_kernel) {
		rec->key.kernel_stack_id = STACK_ID_IN_RECORD;
		long bytes = bpf_get_stack(ctx, rec->kernel_ips, sizeof(rec->kernel_ips), 0);
		if (bytes > 0)
			rec->kernel_len = bytes / sizeof(__u64);
	}

	/* Each call passes a constant limit: with a limit read from a map the verifier explores every
	 * iteration's branches for every possible value (measured: loading took 0.3 s more CPU on a
	 * loaded machine); with constants each copy of the loop is pruned early. Userspace only ever
	 * doubles the default (see Sampler::stack_copy_exhausted), so two raised sizes cover it. */
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
	return bpf_ringbuf_output(&records, scratch, size, wakeup_flags()) == 0 ? 0 : -1;
}

/* Add one to the key's count. Two CPUs can insert the same new key at once: the loser of the
 * BPF_NOEXIST race sees -EEXIST and adds to the winner's slot, so no increment is lost. */
static __always_inline int count_sample(const struct sample_key *key)
{
	void *map = key->generation ? (void *)&counts_1 : (void *)&counts;
	__u64 *count = bpf_map_lookup_elem(map, key);
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	__u64 one = 1;
	long err = bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
	if (err == 0) {
		announce_key(key);
		return 0;
	}
	if (err == -EEXIST) {
		count = bpf_map_lookup_elem(map, key);
		if (count) {
			__sync_fetch_and_add(count, 1);
			return 0;
		}
	}
	return -1;
}

SEC("perf_event")
int sample_cpu(struct bpf_perf_event_data *ctx)
{
	stat_inc(STAT_SAMPLES);

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 tid = (__u32)pid_tgid;
	if (tid == 0) {
		stat_inc(STAT_IDLE);
		return 0;
	}
	if (cfg.filter_tgids && !bpf_map_lookup_elem(&target_tgids, &tgid)) {
		stat_inc(STAT_FILTERED);
		return 0;
	}
	/* bpf_get_current_task (not _btf) and CO-RE reads keep the program loadable on 5.8+. */
	struct task_struct___emberprof *task = (void *)bpf_get_current_task();
	int has_user_memory = BPF_CORE_READ(task, mm) != NULL;
	if (!has_user_memory && !cfg.include_kernel_threads) {
		stat_inc(STAT_FILTERED);
		return 0;
	}

	struct sample_key key = {};
	key.tgid = tgid;
	key.tid = tid;
	bpf_get_current_comm(key.thread_comm, sizeof(key.thread_comm));
	BPF_CORE_READ_STR_INTO(&key.process_comm, task, group_leader, comm);

	if (has_user_memory)
		key.instance = process_instance(tgid, key.process_comm, task);

	/* Read once: the key, its stacks and its count all go to this generation. Read before any path
	 * is chosen: the Python stack goes to this generation's map whichever path the sample takes. */
	__u32 zero = 0;
	__u32 *current = bpf_map_lookup_elem(&generation, &zero);
	key.generation = current && *current ? 1 : 0;
	if (cfg.capture_user && has_user_memory)
		key.python_stack = python_sample_stack(tgid, tid, key.instance, key.generation);

	key.kernel_stack_id = STACK_ID_NONE;
	key.user_stack_id = STACK_ID_NONE;
	if (cfg.capture_user && has_user_memory && cfg.unwind_mode != UNWIND_FRAME_POINTERS) {
		__u64 ip, sp, bp;
		user_registers(ctx, &ip, &sp, &bp);
		if (cfg.unwind_mode == UNWIND_DWARF || needs_stack_copy(tgid, key.instance, ip, bp)) {
			if (send_user_stack(ctx, &key, ip, sp, bp) == 0) {
				stat_inc(STAT_STACK_COPIED);
				stat_inc(STAT_STREAMED);
				return 0;
			}
			stat_inc(STAT_STACK_COPY_FALLBACK);
		}
	}

	int must_stream = 0;
	if (cfg.capture_kernel)
		key.kernel_stack_id =
			stack_id(ctx, key.generation, 0, STAT_KERNEL_STACK_ERROR, &must_stream);
	if (cfg.capture_user && has_user_memory)
		key.user_stack_id = stack_id(ctx, key.generation, BPF_F_USER_STACK,
					     STAT_USER_STACK_ERROR, &must_stream);

	if (!must_stream) {
		if (count_sample(&key) == 0) {
			stat_inc(STAT_COUNTED);
			return 0;
		}
		stat_inc(STAT_STREAM_COUNTS_FULL);
	}
	stream_sample(ctx, &key);
	return 0;
}

/* Ends the instance of a TGID: forgets what was decided about its program and tells userspace. */
static __always_inline void end_instance(__u32 tgid)
{
	__u32 *instance = bpf_map_lookup_elem(&instances, &tgid);
	if (!instance)
		return;
	__u32 ended = *instance;
	bpf_map_delete_elem(&instances, &tgid);
	bpf_map_delete_elem(&dwarf_tgids, &tgid);
	bpf_map_delete_elem(&frameless_ranges, &tgid);
	python_instance_ended(tgid);
	struct instance_end_record *rec = bpf_ringbuf_reserve(&notices, sizeof(*rec), 0);
	if (!rec) {
		stat_inc(STAT_INSTANCE_END_LOST);
		return;
	}
	rec->kind = RECORD_INSTANCE_END;
	rec->tgid = tgid;
	rec->instance = ended;
	rec->_pad = 0;
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
}

/* The three process-lifecycle programs are raw tracepoints, not tp_btf: attaching a tp_btf program
 * needs the kernel BTF's type id of its tracepoint, which costs userspace a second parse of the whole
 * vmlinux BTF (~15 MB, ~30 ms) after the loader's. Their arguments are the same task pointers, read
 * through CO-RE probe reads instead of direct loads. */

/* A new program replaces the process's memory map. */
SEC("raw_tp/sched_process_exec")
int BPF_PROG(notice_exec, struct task_struct___emberprof *task)
{
	end_instance(BPF_CORE_READ(task, tgid));
	return 0;
}

/* The thread-group leader exits: the process is ending (or a recycled PID could come next). */
SEC("raw_tp/sched_process_exit")
int BPF_PROG(notice_exit, struct task_struct___emberprof *task)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	__u32 tgid = BPF_CORE_READ(task, tgid);
	if (pid == tgid)
		end_instance(tgid);
	python_thread_exited(pid);
	/* The last thread of a target process: the TGID stops being a target, or once the PID is reused
	 * an unrelated process would be sampled (and on a long run the map would fill with dead PIDs). */
	if (cfg.filter_tgids && BPF_CORE_READ(task, signal, live.counter) == 0)
		bpf_map_delete_elem(&target_tgids, &tgid);
	return 0;
}

/* Children forked by a target are targets too, from their first instruction (perf's inherit). New
 * threads need nothing: they share the parent's TGID. */
SEC("raw_tp/sched_process_fork")
int BPF_PROG(follow_fork, struct task_struct___emberprof *parent, struct task_struct___emberprof *child)
{
	if (!cfg.filter_tgids || !cfg.follow_children)
		return 0;
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	if (child_tgid == parent_tgid || !bpf_map_lookup_elem(&target_tgids, &parent_tgid))
		return 0;
	__u8 one = 1;
	if (bpf_map_update_elem(&target_tgids, &child_tgid, &one, BPF_ANY) == 0)
		stat_inc(STAT_CHILD_FOLLOWED);
	else
		stat_inc(STAT_CHILD_NOT_FOLLOWED);
	return 0;
}

/* --off-cpu: the sched_switch program (uses the sampler's maps and functions above), only in the
 * object built from profile_offcpu.bpf.c: its task storage map needs Linux 5.11, and every map of
 * an object is created at load, so the CPU-only object (5.8) leaves it out. */
#ifdef EMBERPROF_OFF_CPU
#include "offcpu.bpf.h"
#endif
