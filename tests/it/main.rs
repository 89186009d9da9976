//! End-to-end tests: run the real `emberprof` binary, as a user would, against the workloads in
//! `examples/`, and check what comes out. Tests that sample need root (CI runs them as root); without
//! it they fail, saying how to run them, rather than pass silently.

mod attacks;
mod attacks_cfi;
mod attacks_files;
mod auto;
mod builtins_auto;
mod errors;
mod faults;
mod generate;
mod jit_exit;
mod mixed;
mod names;
mod perf_backend;
mod real_programs;
mod real_world;
mod record;
mod report;
mod support;
mod symbols;
mod unwind;
