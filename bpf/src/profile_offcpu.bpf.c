// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * The sampling object with the --off-cpu sched_switch program (offcpu.bpf.h) in it, loaded only
 * with --off-cpu. A separate object, not a program left unloaded in profile.bpf.c's, because every
 * map of an object is created at load: the off-CPU program's task storage map (Linux 5.11) would
 * keep the CPU-only profiler from loading on 5.8-5.10.
 */
#define EMBERPROF_OFF_CPU 1
#include "profile.bpf.c"
