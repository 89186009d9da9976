//! Capture: everything that needs the kernel. Loads and attaches the BPF sampler, launches or watches
//! the targets, runs the recording loop, and hands back plain [`crate::sample::StackSample`]s.
//! `perf/` is the other backend, on perf_event ring buffers (no privileges needed).

mod event;
mod identity;
mod launch;
pub mod perf;
mod roots;
mod sampler;
mod session;
mod stats;
mod targets;

pub use event::SampledEvent;
pub use identity::RunAs;
pub use launch::{ExitStatus, PausedCommand, RunningCommand};
pub use sampler::{
    online_cpu_count, ring_buffer_bytes, MapSizes, Sampler, SamplerConfig, UnwindMode,
};
pub use session::{record, Capture, StopConditions, StopReason};
pub use targets::ProcessWatch;
