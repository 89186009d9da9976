//! Workloads to profile, built from `c/` by `build.rs`: the tests spawn them, and `run-example`
//! starts them for the README demo. Each takes the seconds to run as its first argument.

use std::path::PathBuf;

/// Directory holding the built workloads.
pub const BIN_DIR: &str = env!("EXAMPLES_BIN_DIR");

/// Every workload, by name.
pub const NAMES: &[&str] = &["burn", "syscalls", "threads", "burn-nofp", "deep-nofp"];

/// Path of the workload `name` (one of [`NAMES`]).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(BIN_DIR).join(name)
}
