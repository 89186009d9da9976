//! The BPF backend's record of executable mappings as they are made: a dummy software event per
//! CPU (it never samples) asking for perf's side-band records — MMAP2 with build-ids, COMM with
//! execs, FORK, EXIT — read through the perf backend's ring and record code. This is how `perf
//! record` and samply know every mapping of processes that are gone by the time anyone looks, and
//! what lets the BPF sampler name a 3 ms process under a busy build (see `address_spaces`).
//!
//! The rings are emptied by the reader of the BPF ring buffer, before each first-sample notice and
//! each stack copy it hands over, so those are named and unwound with every mapping made before
//! them. Records the kernel could not fit are counted, never guessed.

use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use perf_event_open_sys::bindings;

use crate::capture::address_spaces::AddressSpaces;
use crate::capture::perf::records::{self, PerfRecord, SampleLayout};
use crate::capture::perf::ring::RingBuffer;
use crate::capture::perf::side_band;
use crate::capture::source::EventSink;

/// Data pages of each CPU's ring (a power of two): 512 KiB holds the mappings of a few thousand
/// process starts, more than a build makes between two reads of a reader that lags a second.
const RING_PAGES: usize = 128;

pub struct MappingEvents {
    rings: Vec<RingBuffer>,
    /// Records the kernel dropped because a ring was full.
    lost: u64,
    /// Records that did not decode, or ring bytes skipped.
    malformed: u64,
}

impl MappingEvents {
    /// One dummy event per online CPU, enabled at once, for every process (this needs what the BPF
    /// backend needs anyway: CAP_PERFMON).
    pub fn open() -> Result<Self> {
        let cpus = aya::util::online_cpus()
            .map_err(|(path, error)| anyhow!("cannot read {path}: {error}"))?;
        let mut rings = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let mut attr = bindings::perf_event_attr {
                size: std::mem::size_of::<bindings::perf_event_attr>() as u32,
                type_: bindings::PERF_TYPE_SOFTWARE,
                config: u64::from(bindings::PERF_COUNT_SW_DUMMY),
                ..Default::default()
            };
            side_band::ask_for_side_band(&mut attr);
            // Nobody waits on these rings: wake no one until half of one is full.
            attr.set_watermark(1);
            attr.__bindgen_anon_2.wakeup_watermark =
                (RING_PAGES * crate::capture::perf::ring::page_size() / 2) as u32;
            let fd = side_band::open(&mut attr, -1, cpu as i32).with_context(|| {
                format!("cannot open the dummy perf event for mapping records on CPU {cpu}")
            })?;
            log::trace!("mapping records of CPU {cpu} on fd {}", fd.as_raw_fd());
            rings.push(RingBuffer::map(fd, RING_PAGES)?);
        }
        Ok(MappingEvents {
            rings,
            lost: 0,
            malformed: 0,
        })
    }

    /// Empties every ring into the history, oldest record first; mappings of instances already
    /// seen go to `sink`.
    pub fn sync(&mut self, spaces: &mut AddressSpaces, sink: &mut dyn EventSink) {
        let mut raw = Vec::new();
        for ring in &mut self.rings {
            if ring.drain(&mut raw) > 0 {
                self.malformed += 1;
            }
        }
        if raw.is_empty() {
            return;
        }
        // Side band only: no samples, no identifiers.
        let layout = SampleLayout::default();
        let mut timed: Vec<(u64, Vec<u8>)> = raw
            .into_iter()
            .map(|record| (records::record_time(&record, layout).unwrap_or(0), record))
            .collect();
        timed.sort_by_key(|(time, _)| *time);
        for (time, record) in &timed {
            match records::parse(record, layout) {
                Some(PerfRecord::Lost { count }) => self.lost = self.lost.saturating_add(count),
                Some(record) => side_band::follow(spaces, &record, *time, sink),
                None => self.malformed += 1,
            }
        }
    }

    /// Lines for the summary: what was lost (some short-lived processes may then stay unnamed).
    pub fn notes(&self) -> Vec<(log::Level, String)> {
        let mut notes = Vec::new();
        if self.lost > 0 || self.malformed > 0 {
            notes.push((
                log::Level::Warn,
                format!(
                    "{} mapping records lost ({} malformed): the processes they were about may be \
                     unnamed if they ended before their memory maps were read",
                    self.lost, self.malformed
                ),
            ));
        }
        notes
    }
}
