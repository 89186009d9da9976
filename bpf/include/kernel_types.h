/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The few kernel-internal types the BPF programs read, declared by hand instead of vendoring a 2.8 MB
 * vmlinux.h. Every struct is marked preserve_access_index, so each field access is a CO-RE relocation
 * that the loader (aya) resolves against the running kernel's BTF (/sys/kernel/btf/vmlinux): only the
 * field *names and types* must match the kernel, never the offsets or the order. The `___emberprof`
 * suffix is a CO-RE "flavor": ignored when matching, it keeps these names apart from the UAPI
 * `struct pt_regs` that <linux/bpf_perf_event.h> pulls in.
 *
 * To add a field, look it up with:
 *   bpftool btf dump file /sys/kernel/btf/vmlinux format c | grep -n '^struct task_struct {'
 */
#ifndef EMBERPROF_KERNEL_TYPES_H
#define EMBERPROF_KERNEL_TYPES_H

#include <linux/types.h>

struct mm_struct___emberprof {
	unsigned long start_stack;
} __attribute__((preserve_access_index));

struct atomic___emberprof {
	int counter;
} __attribute__((preserve_access_index));

struct signal_struct___emberprof {
	/* Threads of the group not yet exiting; do_exit() decrements it before sched_process_exit. */
	struct atomic___emberprof live;
} __attribute__((preserve_access_index));

struct task_struct___emberprof {
	int pid;  /* thread id */
	int tgid; /* process id */
	char comm[16];
	struct mm_struct___emberprof *mm; /* NULL for kernel threads */
	struct task_struct___emberprof *group_leader;
	__u64 start_boottime; /* ns since boot, what /proc/PID/stat field 22 shows in clock ticks (5.5+) */
	struct signal_struct___emberprof *signal;
} __attribute__((preserve_access_index));

/* The registers the kernel saved at entry from user mode (bpf_task_pt_regs). */
struct pt_regs___emberprof {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long ip;
	unsigned long sp;
} __attribute__((preserve_access_index));

#endif /* EMBERPROF_KERNEL_TYPES_H */
