//! Workloads to profile, built from `c/`, `cpp/` and `rust/` by `build.rs`: the tests spawn them, and
//! `run-example` starts them for the README demo. Most take the seconds to run as their first
//! argument; `short-lived` and `tiny-spin` take milliseconds and `spawner` a count (see each source's header).
//!
//! `burn-debuglink` is `burn` stripped of all symbols and DWARF: they are in `burn-debuglink.debug`
//! in the same directory (`path("burn-debuglink").with_extension("debug")`), named by the binary's
//! `.gnu_debuglink` section.
//!
//! `rust-release*` come from the cargo project in `rust-release/` (default release profile, so no
//! frame pointers in its own code): `main -> rust_release::drive -> rust_release::stage ->
//! rust_release::hot`; `rust-release-threads` runs that chain under `worker` in two threads, and
//! `rust-release-lto` is the single-threaded one built with `lto = "fat"`.
//!
//! `nofp-calls-fplib` and `fp-calls-nofplib` load `libmix-fplib.so` and `libmix-nofplib.so` from
//! their own directory (rpath `$ORIGIN`); the libraries are not workloads of their own.

use std::path::PathBuf;

/// Directory holding the built workloads.
pub const BIN_DIR: &str = env!("EXAMPLES_BIN_DIR");

/// Every workload, by name.
pub const NAMES: &[&str] = &[
    "burn",
    "syscalls",
    "threads",
    "burn-nofp",
    // Threads that wait (`waits sleep|pipe|mutex [SECONDS]`), for --off-cpu.
    "waits",
    "waits-nofp",
    // Two threads ping-ponging over pipes, or a thread pool (`pingpong ROUNDS [pool]`).
    "pingpong",
    "deep-nofp",
    "short-lived",
    "tiny-spin",
    "spawner",
    "exec-before",
    "exec-after",
    "burn-debuglink",
    "cpp-work",
    "rust-inline",
    "rust-inline-v0",
    // --unwind auto on mixed and default-built code (issue 7).
    "burn-gcc",
    "qsort-fp",
    "rust-release",
    "rust-release-threads",
    "rust-release-lto",
    "cpp-o2",
    "nofp-calls-fplib",
    "fp-calls-nofplib",
];

/// Path of the workload `name` (one of [`NAMES`]).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(BIN_DIR).join(name)
}
