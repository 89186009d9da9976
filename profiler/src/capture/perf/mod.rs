//! The perf_event backend: samples the targets with `perf_event_open` ring buffers read by
//! emberprof, which a user may do on their own processes without any privilege (at
//! `kernel.perf_event_paranoid` ≤ 2). Each sample carries the kernel's frame-pointer callchain and,
//! unless `--unwind fp`, the user registers and a copy of the top of the stack, unwound with DWARF
//! where the code is frameless. It produces the same [`crate::capture::Capture`] as the BPF
//! backend: nothing downstream knows which one ran.
//!
//! Roles: `events` opens the events, `ring` reads a ring buffer, `records` decodes what is in it,
//! `tasks` keeps thread names and process instances, `session` runs the recording.

mod events;
mod records;
mod ring;
mod session;
mod tasks;

pub use events::{EventConfig, EventTargets, Events};
pub use session::record;

/// Default data pages of each CPU's ring buffer: 2 MiB, about an eighth of a second of samples with
/// 16 KiB stack copies at 999 Hz, enough to ride out a symbolization round of the reader.
pub const DEFAULT_RING_PAGES: usize = 512;
