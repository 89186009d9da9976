//! Tests of the symbolizer crate on real processes: the example workloads are started, their user
//! stacks snapshotted with ptrace (what the BPF program sends: registers plus the top of the stack),
//! and unwound and symbolized offline. No root needed: a process may trace its own children.

mod capture;
mod kernel;
mod unwind;
