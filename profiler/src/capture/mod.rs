//! Capture: everything that needs the kernel. Loads and attaches the BPF sampler, launches or watches
//! the targets, runs the recording loop, and hands back plain [`crate::sample::StackSample`]s.

mod identity;
mod launch;
mod roots;
mod sampler;
mod session;
mod stats;
mod targets;

pub use identity::RunAs;
pub use launch::{ExitStatus, PausedCommand, RunningCommand};
pub use sampler::{MapSizes, Sampler, SamplerConfig, UnwindMode};
pub use session::{record, Capture, StopConditions, StopReason};
pub use targets::ProcessWatch;
