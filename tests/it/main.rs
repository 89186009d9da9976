//! End-to-end tests: run the real `emberprof` binary, as a user would, against the workloads in
//! `examples/`, and check what comes out. Tests that sample need root (CI runs them as root); without
//! it they fail, saying how to run them, rather than pass silently.
//!
//! Tests of what both capture backends do are written once with `both_backends!` and run as
//! `NAME::bpf` and `NAME::perf` (`cargo test -p emberprof --test it -- NAME` runs both). Checks of
//! sample totals judge them against the CPU time the target used while sampled, so that they hold
//! on a busy machine; see `support/measure.rs`.

mod attacks;
mod attacks_blazesym;
mod attacks_budgets;
mod attacks_cfi;
mod attacks_defences;
mod attacks_files;
mod attacks_modules;
mod attacks_output;
mod attacks_profile;
mod attacks_report;
mod attacks_stall;
mod auto;
mod builtins_auto;
mod errors;
mod faults;
mod generate;
mod jit_exit;
mod mixed;
mod module_release;
mod names;
mod off_cpu;
mod off_cpu_adaptive;
mod off_cpu_perf;
mod off_cpu_targets;
mod parsed_budget;
mod perf_backend;
mod python;
mod real_programs;
mod real_world;
mod record;
mod record_bpf;
mod report;
mod report_memory;
mod short_lived;
mod stack_copy;
mod support;
mod symbols;
mod unwind;
