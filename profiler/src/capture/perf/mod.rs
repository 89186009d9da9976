//! The perf_event backend: samples the targets with `perf_event_open` ring buffers read by
//! emberprof, which a user may do on their own processes without any privilege (at
//! `kernel.perf_event_paranoid` ≤ 2). Each sample carries the kernel's frame-pointer callchain and,
//! unless `--unwind fp`, the user registers and a copy of the top of the stack, unwound with DWARF
//! where the code is frameless. It is a capture source like the BPF backend: the same collector
//! does the rest, and nothing downstream knows which one ran.
//!
//! Roles: `events` opens the events, `ring` reads a ring buffer, `reader` empties the rings on a
//! thread of its own, `records` decodes what is in it, `side_band` asks for and follows the
//! records of mappings, execs, forks and exits (the BPF backend's too), `tasks` keeps thread names
//! and process instances, `source` turns records into events.

mod events;
mod order;
mod reader;
pub(super) mod records;
pub(super) mod ring;
pub(super) mod side_band;
mod source;
mod switches;
mod tasks;

pub use events::{EventConfig, EventTargets, Events};
pub use source::PerfSource;

/// Data pages of each CPU's ring buffer when `--mmap-pages` is not given. Root is not bound by
/// the memory a user may lock for perf buffers and gets 2 MiB per CPU; a user gets what
/// `kernel.perf_event_mlock_kb` allows per CPU (516 KiB by default: 128 pages), which the reader
/// thread keeps from filling up.
pub fn default_ring_pages() -> usize {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return 512;
    }
    let allowed_kib = std::fs::read_to_string("/proc/sys/kernel/perf_event_mlock_kb")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(516);
    // One page of the allowance is the ring's metadata page.
    let pages = (allowed_kib * 1024 / ring::page_size()).saturating_sub(1);
    match pages.checked_ilog2() {
        Some(log) => 1 << log,
        None => 1,
    }
}
