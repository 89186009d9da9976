/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The one source of truth for everything the BPF programs share with userspace: limits, the
 * load-time configuration, the keys of the count map, the ring-buffer records and the counters.
 * bpf/src/lib.rs mirrors every type here as #[repr(C)] with compile-time size checks; change both
 * together. Shared structs have no bool and no implicit padding (explicit _pad fields instead), so the
 * two sides cannot disagree on layout.
 */
#ifndef EMBERPROF_H
#define EMBERPROF_H

#include <linux/types.h>

/* Frames kept per stack. 127 is the kernel's default kernel.perf_event_max_stack, the most
 * bpf_get_stack{,id} will return without raising that sysctl. */
#define MAX_STACK_DEPTH 127
/* General-purpose registers sent with a copied user stack, indexed by their DWARF number on x86-64:
 * rax rdx rcx rbx rsi rdi rbp rsp r8 .. r15. CFI may compute a leaf's CFA from any of them. */
#define USER_GP_REGS 16

/* Length of task_struct::comm including the NUL (TASK_COMM_LEN). */
#define COMM_LEN 16

/* Most user-stack bytes one sample can copy for DWARF unwinding (a power of two: offsets into the
 * scratch buffer are masked with it to satisfy the verifier). */
#define MAX_STACK_COPY 65536
/* The x86-64 red zone: 128 bytes below sp that leaf code may use without moving sp. Hand-written
 * assembly keeps unwind state there (libcrypto's SHA-512 AVX2 code: CFA = *(rsp-8)+8), so a sample
 * also copies it, into user_stack_record.red_zone. */
#define RED_ZONE_BYTES 128

/* --unwind auto plans. A process's plan lists its mappings that hold frameless code; a mapping is
 * frameless whole (a frameless module such as Debian's libc) or through its module's list of
 * frameless functions, shared by every process that maps the module. A process with more such
 * mappings than MAX_PLAN_MAPPINGS is unwound with DWARF entirely; a module with more frameless
 * functions than MAX_MODULE_EXCEPTIONS counts as frameless whole. Both are powers of two: indexes
 * are masked with them for the verifier. */
#define MAX_PLAN_MAPPINGS 512
#define PLAN_SEARCH_STEPS 10 /* log2(MAX_PLAN_MAPPINGS) + 1 binary-search steps */
#define MAX_MODULE_EXCEPTIONS 8192
#define EXCEPTION_SEARCH_STEPS 14 /* log2(MAX_MODULE_EXCEPTIONS) + 1 */
/* frameless_ranges.module[i] of a mapping that is frameless whole. */
#define MODULE_FRAMELESS_WHOLE 0xffffffffu

/* The `counts` and `stacks` maps come in two generations, so userspace can empty them during a long
 * run without racing the program: it switches the `generation` map to the other one, waits for a
 * grace period (programs that read the old value have finished), then reads and clears the old one. */
#define GENERATIONS 2

/* Values of config.unwind_mode. */
#define UNWIND_FRAME_POINTERS 0 /* user stacks walked by the kernel via frame pointers */
#define UNWIND_DWARF 1          /* every user stack copied for DWARF unwinding in userspace */
#define UNWIND_AUTO 2           /* copied when a frame-pointer walk would meet frameless code */

/* Stack-id values that are not ids. */
#define STACK_ID_NONE (-1)      /* not captured: disabled by config, or there is no such stack */
#define STACK_ID_IN_RECORD (-2) /* the stack travels inline in a ring-buffer sample record */

/* Load-time configuration, a `const volatile` global set by the loader before the program is
 * verified, so disabled features cost nothing per sample (the verifier prunes dead branches). */
struct config {
	/* 1: only sample processes whose TGID is in the `target_tgids` map; 0: every process. */
	__u32 filter_tgids;
	/* 1: processes forked by a target become targets themselves (perf's inherit). */
	__u32 follow_children;
	/* 1: capture kernel stacks. */
	__u32 capture_kernel;
	/* 1: capture user stacks. */
	__u32 capture_user;
	/* 1: also sample kernel threads (no user memory), as system-wide perf does. */
	__u32 include_kernel_threads;
	/* UNWIND_* */
	__u32 unwind_mode;
	/* Bytes of user stack to copy per sample (at most MAX_STACK_COPY). */
	__u32 stack_copy_bytes;
	/* Wake the reader when this many bytes are waiting in the ring buffer (stack copies are not
	 * worth a wakeup each). */
	__u32 wakeup_bytes;
};

/* Value of the `frameless_ranges` map, the --unwind auto plan of one process: its mappings with
 * frameless code, [start, end) sorted by start and disjoint. count 0: all of the process's code
 * keeps frame pointers. */
struct frameless_ranges {
	__u32 count;
	__u32 _pad;
	__u64 start[MAX_PLAN_MAPPINGS];
	__u64 end[MAX_PLAN_MAPPINGS];
	/* address - bias = the module's own (file) address, as in its module_exceptions. */
	__u64 bias[MAX_PLAN_MAPPINGS];
	/* Key of the module's module_exceptions, or MODULE_FRAMELESS_WHOLE. */
	__u32 module[MAX_PLAN_MAPPINGS];
};

/* Value of the `module_exceptions` map: the frameless functions of a module that otherwise keeps
 * frame pointers, [start, end) in the module's own addresses, sorted and disjoint. */
struct module_exceptions {
	__u32 count;
	__u32 _pad;
	__u64 start[MAX_MODULE_EXCEPTIONS];
	__u64 end[MAX_MODULE_EXCEPTIONS];
};

/* Key of the `counts` map: one distinct (thread, stack pair). */
struct sample_key {
	__u32 tgid;
	__u32 tid;
	/* The process instance (see the `instances` map): which program the TGID was running, so that
	 * user addresses are symbolized against the right memory map across exec and PID reuse. 0 for
	 * kernel threads. */
	__u32 instance;
	/* Ids in the `stacks` map of this key's generation, or STACK_ID_NONE / STACK_ID_IN_RECORD. */
	__s32 kernel_stack_id;
	__s32 user_stack_id;
	/* Which generation of the `counts`/`stacks` maps the key and its stack ids belong to (see
	 * GENERATIONS). */
	__u32 generation;
	/* Name of the process (its thread-group leader) and of the sampled thread. */
	char process_comm[COMM_LEN];
	char thread_comm[COMM_LEN];
	/* Id of the sample's Python frames in the generation's `python_stacks` (see python.h), 0 when
	 * it has none. */
	__u64 python_stack;
};

/* Key of the `known_roots` map: a return address in frameless code that ends the frame-pointer
 * chain of a process instance (glibc's __libc_start_call_main, start_thread), whose outer frames
 * userspace has learned from a DWARF unwind and appends to frame-pointer stacks ending there. */
struct root_key {
	__u32 instance;
	__u32 _pad;
	__u64 address;
};

/* Ring-buffer records; each starts with its kind. PROCESS_SEEN and INSTANCE_END travel in the
 * `notices` ring buffer, the others in `records`. */
enum record_kind {
	/* The first sample of a process instance: userspace snapshots the process while it is alive. */
	RECORD_PROCESS_SEEN = 1,
	/* One sample that could not be counted in the maps (stack-map collision, count map full). */
	RECORD_SAMPLE = 2,
	/* A key was added to the `counts` map: userspace symbolizes its stacks while recording, so the
	 * output is ready soon after sampling stops. */
	RECORD_NEW_KEY = 3,
	/* One sample with a copy of the user stack and registers, for DWARF unwinding. */
	RECORD_USER_STACK = 4,
	/* A process instance ended: the process exec'd a new program, or its thread-group leader exited.
	 * Its snapshot stays (for the samples already taken), but it will not change again. */
	RECORD_INSTANCE_END = 5,
	/* --off-cpu: a thread switched out; its user stack copied (struct user_stack_record layout). Its
	 * time comes with the thread's next RECORD_OFF_CPU_END. */
	RECORD_OFF_CPU_STACK = 6,
	/* --off-cpu: a thread switched out whose stacks did not fit the off-CPU stack map; both inline
	 * (struct sample_record layout). Its time comes with the thread's next RECORD_OFF_CPU_END. */
	RECORD_OFF_CPU_SAMPLE = 7,
	/* --off-cpu: a thread whose stacks went through the ring buffer is switched in again. */
	RECORD_OFF_CPU_END = 8,
};

struct process_seen_record {
	__u32 kind; /* RECORD_PROCESS_SEEN */
	__u32 tgid;
	__u32 instance;
	__u32 _pad;
	char process_comm[COMM_LEN];
	/* When the process started (its leader's start_boottime, ns since boot): userspace checks it
	 * against /proc/PID/stat before trusting /proc/PID, in case the PID was reused since. */
	__u64 start_time;
	/* When this first sample was taken (bpf_ktime_get_ns, CLOCK_MONOTONIC): userspace binds the
	 * instance to the address space the process had then, from perf's mapping records. */
	__u64 time;
};

struct instance_end_record {
	__u32 kind; /* RECORD_INSTANCE_END */
	__u32 tgid;
	__u32 instance;
	__u32 _pad;
};

struct new_key_record {
	__u32 kind; /* RECORD_NEW_KEY */
	__u32 _pad;
	struct sample_key key;
};

struct user_stack_record {
	__u32 kind; /* RECORD_USER_STACK */
	__u32 kernel_len; /* valid entries of kernel_ips */
	__u32 stack_len;  /* bytes of stack that follow the record */
	/* Bytes of red_zone copied: the last red_zone_len bytes of red_zone are [sp - red_zone_len, sp).
	 * Less than RED_ZONE_BYTES only when the page below sp's page is not mapped. */
	__u32 red_zone_len;
	/* Both stack ids are STACK_ID_IN_RECORD (or NONE when not captured). */
	struct sample_key key;
	/* User registers at the sample (the task's saved user registers when it was in the kernel). */
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u64 gp_regs[USER_GP_REGS]; /* all of them, by DWARF number (see USER_GP_REGS) */
	__u64 kernel_ips[MAX_STACK_DEPTH];
	/* The red zone below sp, right-aligned (see red_zone_len). */
	__u8 red_zone[RED_ZONE_BYTES];
	/* followed by stack_len bytes copied from sp upwards */
};

/* Per-CPU staging area for a user_stack_record and its stack bytes: too big for the 512-byte BPF
 * stack and for a PERCPU_ARRAY value (32 KiB cap), so a plain ARRAY indexed by CPU. */
struct stack_scratch {
	struct user_stack_record record;
	__u8 stack[MAX_STACK_COPY];
};

struct sample_record {
	__u32 kind; /* RECORD_SAMPLE */
	/* Number of valid entries in kernel_ips / user_ips when the matching stack id in `key` is
	 * STACK_ID_IN_RECORD; otherwise 0 and the ids refer to the `stacks` map. */
	__u32 kernel_len;
	__u32 user_len;
	__u32 _pad;
	struct sample_key key;
	__u64 kernel_ips[MAX_STACK_DEPTH];
	__u64 user_ips[MAX_STACK_DEPTH];
};

/*
 * Per-CPU counters in the `stats` map, one slot each. Every early exit of the sampling program bumps
 * exactly one of them, so userspace can account for every invocation:
 *   SAMPLES = IDLE + FILTERED + COUNTED + STREAMED + LOST_*
 */
enum stat {
	STAT_SAMPLES = 0,          /* program invocations */
	STAT_IDLE,                 /* the CPU was idle (pid 0): not a sample of anything */
	STAT_FILTERED,             /* not a target process, or a kernel thread when not wanted */
	STAT_COUNTED,              /* counted in the `counts` map */
	STAT_STREAMED,             /* sent whole through the ring buffer (see the STREAM_* causes) */
	STAT_LOST_RINGBUF_FULL,    /* had to be streamed but the ring buffer was full: lost */
	/* Causes of streaming, counted in addition to STAT_STREAMED. */
	STAT_STREAM_STACK_COLLISION, /* bpf_get_stackid: -EEXIST (another stack owns the bucket) */
	STAT_STREAM_STACK_MAP_FULL,  /* bpf_get_stackid: -ENOMEM (no free stack entry) */
	STAT_STREAM_COUNTS_FULL,     /* the `counts` map had no room for a new key */
	/* Informational. */
	STAT_KERNEL_STACK_ERROR,   /* kernel stack unavailable for another reason (kept, without it) */
	STAT_USER_STACK_ERROR,     /* user stack unavailable for another reason (kept, without it) */
	STAT_PROCESS_SEEN_LOST,    /* a first-sample notice did not fit the ring buffer */
	STAT_CHILD_FOLLOWED,       /* a forked child of a target became a target */
	STAT_CHILD_NOT_FOLLOWED,   /* ... but `target_tgids` was full */
	STAT_NEW_KEY_LOST,         /* a new-key notice did not fit the ring buffer (symbolized at the end) */
	STAT_STACK_COPIED,         /* user stack copied for DWARF unwinding (a kind of STREAMED) */
	STAT_STACK_COPY_FALLBACK,  /* a copy did not fit the ring buffer: frame pointers used instead */
	STAT_INSTANCE_END_LOST,    /* an exec/exit notice did not fit the ring buffer */
	/* --unwind auto: why a user stack was copied (each also a STACK_COPIED attempt), or why the
	 * frame-pointer walk was kept. */
	STAT_COPY_UNJUDGED,        /* the process has no plan yet (or the plan map was full) */
	STAT_COPY_FRAMELESS_IP,    /* the sampled instruction is in frameless code */
	STAT_COPY_FRAMELESS_CALLER, /* a return address on the frame-pointer chain is in frameless code */
	STAT_COPY_UNKNOWN_ROOT,    /* the chain ends in frameless code not yet learned as a root */
	STAT_FP_KNOWN_ROOT,        /* the chain ends at a known root: frame pointers, suffix appended */
	STAT_FP_WALK_TOO_DEEP,     /* the walk met no frameless code within MAX_STACK_DEPTH frames */
	STAT_COUNT,
};

/*
 * --off-cpu (src/offcpu.bpf.h): a sched_switch program times every interval a target thread spends
 * switched out and charges it to the stacks it switched out in.
 */

/* TASK_DEAD in sched_switch's prev_state: the task's last switch-out, no switch-in follows. */
#define OFF_CPU_TASK_DEAD 0x80

/* Load-time configuration of the off-CPU program (`const volatile offcpu_cfg`), apart from struct
 * config so the sampler's layout does not change with it. */
struct offcpu_config {
	/* Intervals shorter than this are not counted (--off-cpu-min). */
	__u64 min_ns;
	/* emberprof's own process: never counted (it runs under --all too). */
	__u32 self_tgid;
	/* --off-cpu-sample N: one switch-out in N (at random) is followed, its time counted N times;
	 * the others cost a random number. 1: every one. 0: adaptive, N is read from the
	 * `offcpu_sample_every` map, which userspace sets from the switch-out rate it observes. */
	__u32 sample_every;
};

/* Value of the `offcpu_threads` map, by thread id: a target thread switched out, until it is
 * switched in again. */
struct offcpu_start {
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at the switch-out. */
	__u64 start_ns;
	/* Stack ids in the `offcpu_stacks` map (generation unused), or STACK_ID_NONE. */
	struct sample_key key;
	/* 1: the stacks went through the ring buffer (RECORD_OFF_CPU_STACK or _SAMPLE): the switch-in
	 * sends a RECORD_OFF_CPU_END instead of counting in `offcpu_counts`. */
	__u32 streamed;
	/* The N this switch-out was followed at (1 in N), for the ring buffer's wake-up policy. */
	__u32 sample_every;
	/* Time the thread spent switched out in intervals not followed since its last followed one
	 * (their stacks were not taken): counted with this interval, on its stacks. */
	__u64 carry_ns;
};

struct offcpu_end_record {
	__u32 kind; /* RECORD_OFF_CPU_END */
	__u32 tid;
	__u64 nanos; /* switched out for this long */
};

/* Per-CPU counters of the off-CPU program (`offcpu_stats`):
 *   SWITCH_OUTS = SWITCH_INS + still switched out + LOST_THREADS_FULL + LOST_RINGBUF_OUT
 *   SWITCH_INS = BELOW_MIN + COUNTED + ENDED + LOST_COUNTS_FULL + LOST_RINGBUF_END */
enum offcpu_stat {
	OFFCPU_SWITCH_OUTS = 0,       /* target threads switched out */
	OFFCPU_SWITCH_INS,            /* ... and switched in again */
	OFFCPU_BELOW_MIN,             /* shorter than offcpu_config.min_ns: not counted */
	OFFCPU_COUNTED,               /* added to `offcpu_counts` */
	OFFCPU_ENDED,                 /* RECORD_OFF_CPU_END sent for stacks in the ring buffer */
	OFFCPU_STREAMED,              /* stacks sent at a switch-out (copies and collisions) */
	OFFCPU_LOST_THREADS_FULL,     /* `offcpu_threads` full: interval lost */
	OFFCPU_LOST_COUNTS_FULL,      /* `offcpu_counts` full: interval lost */
	OFFCPU_LOST_RINGBUF_OUT,      /* stacks did not fit the ring buffer: interval lost */
	OFFCPU_LOST_RINGBUF_END,      /* the end record did not fit the ring buffer: interval lost */
	OFFCPU_COPY_FALLBACK,         /* a copy did not fit: frame pointers used instead */
	OFFCPU_NOT_SAMPLED,           /* sampling (adaptive or --off-cpu-sample): a switch-out left out (not in SWITCH_OUTS) */
	OFFCPU_STAT_COUNT,
};

/* Layout checks, mirrored by the size asserts in bpf/src/lib.rs. */
_Static_assert(sizeof(struct config) == 32, "struct config layout");
_Static_assert(sizeof(struct frameless_ranges) == 8 + 28 * MAX_PLAN_MAPPINGS, "struct frameless_ranges layout");
_Static_assert(sizeof(struct module_exceptions) == 8 + 16 * MAX_MODULE_EXCEPTIONS, "struct module_exceptions layout");
_Static_assert(sizeof(struct user_stack_record) == 16 + 64 + 24 + 8 * USER_GP_REGS + 8 * MAX_STACK_DEPTH + RED_ZONE_BYTES, "struct user_stack_record layout");
_Static_assert(sizeof(struct sample_key) == 64, "struct sample_key layout");
_Static_assert(sizeof(struct process_seen_record) == 48, "struct process_seen_record layout");
_Static_assert(sizeof(struct instance_end_record) == 16, "struct instance_end_record layout");
_Static_assert(sizeof(struct sample_record) == 16 + 64 + 2 * 8 * MAX_STACK_DEPTH, "struct sample_record layout");
_Static_assert(sizeof(struct new_key_record) == 72, "struct new_key_record layout");
_Static_assert(sizeof(struct root_key) == 16, "struct root_key layout");
_Static_assert(STAT_COUNT == 24, "enum stat: update Stat in bpf/src/lib.rs");
_Static_assert(sizeof(struct offcpu_config) == 16, "struct offcpu_config layout");
_Static_assert(sizeof(struct offcpu_start) == 88, "struct offcpu_start layout");
_Static_assert(sizeof(struct offcpu_end_record) == 16, "struct offcpu_end_record layout");
_Static_assert(OFFCPU_STAT_COUNT == 12, "enum offcpu_stat: update OffCpuStat in bpf/src/lib.rs");

#endif /* EMBERPROF_H */
