//! Capture: everything that needs the kernel. A source (`bpf/`: the BPF sampler's maps and ring
//! buffer; `perf/`: perf_event ring buffers, no privileges needed) decodes what the kernel hands
//! over into events; one collector unwinds, counts, symbolizes and builds them, whichever source
//! ran; the session drives both until the duration, a signal or the targets' end. `backend`
//! chooses the source, `launch` and `targets` start and watch what is profiled.

mod address_spaces;
pub mod backend;
pub mod bpf;
mod clock;
mod collector;
mod event;
mod identity;
mod launch;
pub mod perf;
mod python_report;
mod roots;
mod session;
pub mod setup;
mod source;
mod targets;
mod user_stack;

pub use collector::{Collector, CollectorReport, SNAPSHOT_WORK_PER_ITERATION};
pub use event::SampledEvent;
pub use identity::RunAs;
pub use launch::{ExitStatus, PausedCommand, RunningCommand};
pub use session::{record, Capture, StopConditions, StopReason};
pub use source::{Source, SourceReport};
pub use targets::{ProcessWatch, Target};
pub use user_stack::UnwindMode;
