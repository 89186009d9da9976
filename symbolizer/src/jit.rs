//! Names for JIT code from the perf map files runtimes write (`/tmp/perf-PID.map`: Node.js
//! `--perf-basic-prof`, Python 3.12 `-X perf`, JVM agents).
//!
//! The file is looked up in the process's own mount namespace (`/proc/PID/root/tmp/`, named with the
//! PID the process has in its own PID namespace) and opened while the process is alive; the handle is
//! kept and read from where the last read stopped, since the runtime appends as it compiles. A map is
//! trusted only if it is a regular file owned by the process's user (anyone can write into /tmp); a
//! map that fails that check, or has malformed lines, gets one warning. Runtimes do not remove their
//! maps when they exit, so a map last written before its process started was left by an earlier
//! process with the same PID: it is not read (a fork-heavy machine reuses every PID within a minute,
//! and each short-lived process that got one of these PIDs had its stale map parsed, names from
//! another program included).
//!
//! The map is written by the profiled process, so reading it is bounded: it is opened under the rules
//! of `untrusted` (a FIFO is refused instead of blocking), read at most [`READ_CHUNK`] bytes at a time
//! (a lookup reads further only while its address is not found yet), and at most `max_bytes` in all
//! (`--max-perf-map-size`); what lies past that is skipped with one warning and counted.
//!
//! All maps together share one [`PerfMapBudget`] (bytes read and entries kept): many processes can
//! each write a map just under the per-map limit (32 hard links of one 60 MiB file took 4,976 MiB).
//! When a read would pass the budget, the least recently used other map is dropped whole; its
//! process's JIT frames are unnamed from then on, for a counted reason
//! ([`crate::UnknownReason::PerfMapEvicted`]), and it is not read again (reading it back would let
//! two hostile maps evict each other forever).
//! Some runtimes write their map only as they exit (a JVM's `-XX:+DumpPerfMapAtExit`), when
//! `/proc/PID/root` no longer leads to it. So for a process with anonymous executable memory, a
//! handle on its `/tmp` is kept while it lives (one descriptor per live JIT process), and once the
//! instance has ended the map is looked for there once more, under the same rules plus one: a map
//! written well after the instance ended belongs to a later process with the PID.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::perf_map::PerfMap;
use crate::process::ProcessKey;
use crate::untrusted::{self, Follow};

/// Bytes read from a perf map file at a time: what one lookup costs at most when its address is
/// already known (about 10 ms of parsing), so appending runtimes are followed without stalling the
/// reader of the ring buffer.
const READ_CHUNK: u64 = 4 << 20;

/// Default of [`crate::SymbolizerOptions::max_perf_map_bytes`].
pub const DEFAULT_MAX_PERF_MAP_BYTES: u64 = 64 << 20;

/// Default of [`crate::SymbolizerOptions::max_perf_maps_total_bytes`]: four maps at the per-map
/// limit; a machine's real JIT maps are a few MiB each (a large Node.js application: ~10 MiB).
pub const DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES: u64 = 256 << 20;

/// Most entries kept over all perf maps: two maps at the per-map cap
/// ([`crate::perf_map::MAX_ENTRIES`]), ~100 bytes each in memory with their index.
pub const MAX_PERF_MAPS_TOTAL_ENTRIES: u64 = 2 << 20;

/// What all perf maps of the session have read and kept, against their shared limits.
#[derive(Debug)]
pub(crate) struct PerfMapBudget {
    max_bytes: u64,
    max_entries: u64,
    bytes: u64,
    entries: u64,
    /// A read was refused for want of room since the last [`PerfMapBudget::take_exhausted`].
    exhausted: bool,
}

impl PerfMapBudget {
    pub fn new(max_bytes: u64, max_entries: u64) -> Self {
        PerfMapBudget {
            max_bytes,
            max_entries,
            bytes: 0,
            entries: 0,
            exhausted: false,
        }
    }

    /// Bytes a map may read now (0 when full, which is remembered for the caller to make room).
    fn room(&mut self) -> u64 {
        let room = if self.entries >= self.max_entries {
            0
        } else {
            self.max_bytes.saturating_sub(self.bytes)
        };
        self.exhausted |= room == 0;
        room
    }

    /// Whether less than a chunk is left: the caller evicts until there is one.
    pub fn wants_room(&self) -> bool {
        self.entries >= self.max_entries || self.bytes.saturating_add(READ_CHUNK) > self.max_bytes
    }

    /// Bytes read by the maps held now.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn take_exhausted(&mut self) -> bool {
        std::mem::take(&mut self.exhausted)
    }
}

struct JitMap {
    file: File,
    path: String,
    map: PerfMap,
    /// The start of a UTF-8 sequence cut by the end of the last read.
    partial_utf8: Vec<u8>,
    malformed_warned: bool,
    /// Bytes read so far (the file is read sequentially, so also the read position).
    bytes_read: u64,
    /// The size limit was reached (warned once).
    full: bool,
    /// When the file was last read.
    last_read: Instant,
}

/// What perf maps cost that was not used, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Bytes of perf maps past the size limit, not read.
    pub bytes_skipped: u64,
    /// Valid lines not kept because a map held the most entries it may.
    pub entries_dropped: u64,
    /// Maps dropped to keep all maps within their shared budget (`--max-perf-maps-size`).
    pub maps_evicted: u64,
    /// Processes with JIT code (anonymous executable memory) that wrote no perf map that could be
    /// read, not even at their exit: their JIT frames are unnamed.
    pub without_map: u64,
}

impl JitStats {
    /// Adds another map's counts (the summary totals every process's).
    pub fn add(&mut self, other: &JitStats) {
        let JitStats {
            bytes_skipped,
            entries_dropped,
            maps_evicted,
            without_map,
        } = other;
        for (total, one) in [
            (&mut self.bytes_skipped, bytes_skipped),
            (&mut self.entries_dropped, entries_dropped),
            (&mut self.maps_evicted, maps_evicted),
            (&mut self.without_map, without_map),
        ] {
            *total = total.saturating_add(*one);
        }
    }
}

/// The perf map of one process instance, kept with the process (see `runtimes`) from its first
/// sample until it is forgotten (released after it ended and its samples were symbolized).
#[derive(Default)]
pub(crate) struct ProcessPerfMap {
    /// The map, once found and trusted.
    open: Option<JitMap>,
    /// The map was rejected (warned once).
    rejected: bool,
    /// When opening was last tried while there was no map: a runtime creates its map some time
    /// after it starts, so a missing one is looked for again, but not at every lookup.
    last_attempt: Option<Instant>,
    /// The instance exec'd or exited.
    ended: bool,
    /// The map was dropped for the shared budget: never read again.
    evicted: bool,
    /// What the map had not used when it was dropped.
    evicted_stats: JitStats,
    /// When the map was last looked up, to evict the least recently used.
    last_used: Option<Instant>,
    /// When the end was reported: a map written well after it is not this instance's.
    ended_at: Option<SystemTime>,
    /// Where the map will be if the runtime writes it only as it exits; kept while the process
    /// has JIT code and no map.
    late: Option<LateMap>,
    /// The map was looked for once more after the instance ended.
    looked_after_end: bool,
    /// The process was seen with JIT code (see [`ProcessPerfMap::open`]).
    jit_code: bool,
}

/// The `/tmp` of a live process with JIT code, to find a map written at its exit.
struct LateMap {
    /// `/proc/PID/root/tmp`, opened while the process was alive (an `O_PATH` handle).
    dir: File,
    /// `perf-NSPID.map`.
    name: String,
    shown: String,
    pid: u32,
    uid: u32,
    start_ticks: Option<u64>,
}

/// Least time between two attempts to open a process's perf map.
const OPEN_RETRY: Duration = Duration::from_millis(200);

/// Least time between two reads of a perf map for unwinding: stacks come at sampling rate, and a
/// map that grew since is read again when a stack meets code it does not know yet.
const UNWIND_REREAD: Duration = Duration::from_millis(100);

impl ProcessPerfMap {
    /// The instance ended: its PID may be reused, so its perf map is never opened again by PID (the
    /// map already open stays, for the samples it has).
    pub fn instance_ended(&mut self) {
        self.ended = true;
        self.ended_at.get_or_insert_with(SystemTime::now);
    }

    /// Whether names of this instance's JIT code may still come: it has JIT code, no map yet, and
    /// its map may be written at its exit (see [`ProcessPerfMap::open`]).
    pub fn awaited(&self) -> bool {
        self.open.is_none() && !self.rejected && !self.looked_after_end && self.late.is_some()
    }

    /// What this map did not use (over the size or entry limits, or evicted).
    pub fn stats(&self) -> JitStats {
        match &self.open {
            Some(jit) => JitStats {
                bytes_skipped: jit.bytes_skipped(),
                entries_dropped: jit.map.dropped() as u64,
                maps_evicted: 0,
                without_map: 0,
            },
            // It had a map: evicted, not missing.
            None if self.evicted => self.evicted_stats,
            None => JitStats {
                without_map: u64::from(self.jit_code && !self.rejected),
                ..JitStats::default()
            },
        }
    }

    /// Whether the map was dropped for the shared budget.
    pub fn is_evicted(&self) -> bool {
        self.evicted
    }

    /// When the open map was last used (`None` when none is open).
    pub fn last_used(&self) -> Option<Instant> {
        self.open
            .as_ref()
            .map(|_| self.last_used.unwrap_or_else(Instant::now))
    }

    /// Gives the open map's bytes and entries back to `budget` (the instance is forgotten).
    pub fn release(&mut self, budget: &mut PerfMapBudget) {
        if let Some(jit) = self.open.take() {
            budget.bytes = budget.bytes.saturating_sub(jit.bytes_read);
            budget.entries = budget.entries.saturating_sub(jit.map.len() as u64);
        }
    }

    /// Drops the open map to make room in `budget`; it is never read again.
    pub fn evict(&mut self, budget: &mut PerfMapBudget) {
        let mut stats = self.stats();
        if let Some(jit) = &self.open {
            log::warn!(
                "{}: dropped to keep all perf maps within their budget ({} bytes, {} entries: \
                 --max-perf-maps-size); its functions are unnamed from now on",
                jit.path,
                budget.max_bytes,
                budget.max_entries
            );
            stats.maps_evicted = 1;
        }
        self.release(budget);
        self.evicted_stats = stats;
        self.evicted = true;
    }

    /// Opens the perf map of live process `key` if it has one and it is not open yet. `start_ticks`,
    /// when known, is the sampled process's start time: another process under a reused PID is skipped.
    /// `jit_code`: the process has anonymous executable memory, so a handle on its `/tmp` is kept
    /// while it has no map, for a map written at its exit. Once the instance has ended (or is gone),
    /// that handle is where the map is looked for, once. A map evicted for the shared budget is
    /// never read again.
    pub fn open(&mut self, key: ProcessKey, start_ticks: Option<u64>, jit_code: bool) {
        if self.open.is_some() || self.rejected || self.evicted {
            return;
        }
        if self.ended {
            self.look_after_end();
            return;
        }
        self.last_attempt = Some(Instant::now());
        let Some((uid, namespace_pid)) = process_ids(key.pid) else {
            // Gone: what it wrote as it exited is all there will be.
            self.look_after_end();
            return;
        };
        let started = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", key.pid)).ok();
            stat.as_deref().and_then(crate::process::parse_start_ticks)
        };
        if let Some(expected) = start_ticks {
            if started() != Some(expected) {
                return;
            }
        }
        let shown = format!("/tmp/perf-{namespace_pid}.map of process {}", key.pid);
        self.jit_code |= jit_code;
        if jit_code && self.late.is_none() {
            self.late = late_map(key.pid, start_ticks, uid, namespace_pid, shown.clone());
        }
        let path = format!("/proc/{}/root/tmp/perf-{namespace_pid}.map", key.pid);
        // Follow::No: a symlink planted in /tmp must not make us read another file; and a FIFO or a
        // device is refused by `untrusted::open` instead of blocking or reading forever.
        let file = match untrusted::open(Path::new(&path), Follow::No) {
            Ok(file) => file,
            Err(_) => return, // no JIT, or not started writing yet
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() && meta.uid() == uid => {
                let started = start_ticks.or_else(started);
                if started.is_some_and(|ticks| written_before_start(&meta, ticks)) {
                    // Looked for again later (`OPEN_RETRY`): the runtime may not have written yet.
                    log::debug!("ignoring {shown}: last written before the process started");
                    return;
                }
            }
            Ok(meta) => {
                log::warn!(
                    "ignoring {shown}: owned by uid {} but the process runs as uid {uid}",
                    meta.uid()
                );
                self.rejected = true;
                return;
            }
            Err(_) => return,
        }
        self.open = Some(JitMap::new(file, shown));
        self.late = None;
    }

    /// Looks for the map of an instance that ended in the `/tmp` kept while it lived, once, under
    /// the rules of [`ProcessPerfMap::open`], and only if the map was written before the end (with
    /// [`START_MARGIN`]) and the instance exited rather than exec'd (its PID would still run, with
    /// its start time, and may write a map of the new program under the same name).
    fn look_after_end(&mut self) {
        if self.looked_after_end {
            return;
        }
        self.looked_after_end = true;
        let Some(late) = self.late.take() else {
            return;
        };
        if self.open.is_some() || self.rejected || exec_d(late.pid, late.start_ticks) {
            return;
        }
        let Ok(file) = untrusted::open_in(&late.dir, &late.name) else {
            log::debug!("{}: no map after the process ended", late.shown);
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        if meta.uid() != late.uid {
            log::warn!(
                "ignoring {}: owned by uid {} but the process ran as uid {}",
                late.shown,
                meta.uid(),
                late.uid
            );
            self.rejected = true;
            return;
        }
        if late
            .start_ticks
            .is_some_and(|ticks| written_before_start(&meta, ticks))
        {
            log::debug!(
                "ignoring {}: last written before the process started",
                late.shown
            );
            return;
        }
        let written_after_end = match (meta.modified(), self.ended_at) {
            (Ok(modified), Some(ended)) => modified > ended + START_MARGIN,
            _ => false,
        };
        if written_after_end {
            log::debug!("ignoring {}: written after the process ended", late.shown);
            return;
        }
        log::debug!("{}: read after the process ended", late.shown);
        self.open = Some(JitMap::new(file, late.shown));
    }

    /// Opens the perf map of process `key` unless that was tried less than [`OPEN_RETRY`] ago.
    fn open_if_due(&mut self, key: ProcessKey, start_ticks: Option<u64>) {
        let due = self
            .last_attempt
            .is_none_or(|last| last.elapsed() >= OPEN_RETRY);
        if due || (self.ended && !self.looked_after_end) {
            self.open(key, start_ticks, false);
        }
    }

    /// The JIT symbol covering `address` in process `key`, reading what the runtime appended since the
    /// last lookup first, within `max_bytes` read from the map in all.
    pub fn lookup(
        &mut self,
        key: ProcessKey,
        start_ticks: Option<u64>,
        address: u64,
        max_bytes: u64,
        budget: &mut PerfMapBudget,
    ) -> Option<Arc<str>> {
        self.open_if_due(key, start_ticks);
        let jit = self.open.as_mut()?;
        self.last_used = Some(Instant::now());
        // One chunk of what the runtime appended, then more only while the address is not named:
        // the total is bounded by `max_bytes` per map and by the budget of all maps.
        let mut more = jit.read_chunk(max_bytes, budget);
        loop {
            if let Some(entry) = jit.map.lookup(address) {
                return Some(Arc::from(entry.name.as_str()));
            }
            if !more {
                return None;
            }
            more = jit.read_chunk(max_bytes, budget);
        }
    }

    /// The perf map of process `key` for the unwinder (which needs its code ranges, and Python's
    /// trampolines), read further only if `refresh` or if the last read is old; like a lookup, within
    /// `max_bytes`.
    pub fn for_unwinding(
        &mut self,
        key: ProcessKey,
        start_ticks: Option<u64>,
        refresh: bool,
        max_bytes: u64,
        budget: &mut PerfMapBudget,
    ) -> Option<&mut PerfMap> {
        self.open_if_due(key, start_ticks);
        let jit = self.open.as_mut()?;
        self.last_used = Some(Instant::now());
        if refresh || jit.last_read.elapsed() >= UNWIND_REREAD {
            while jit.read_chunk(max_bytes, budget) && refresh {}
        }
        Some(&mut jit.map)
    }
}

/// Entries over these perf maps, for the debug log.
pub(crate) fn sizes<'a>(maps: impl Iterator<Item = &'a ProcessPerfMap>) -> String {
    let (mut open, mut rejected, mut attempts, mut ended) = (0, 0, 0, 0);
    for map in maps {
        open += usize::from(map.open.is_some());
        rejected += usize::from(map.rejected);
        attempts += usize::from(map.last_attempt.is_some());
        ended += usize::from(map.ended);
    }
    format!("{open} maps, {rejected} rejected, {attempts} attempts, {ended} ended")
}

impl JitMap {
    fn new(file: File, path: String) -> JitMap {
        JitMap {
            file,
            path,
            map: PerfMap::new(),
            partial_utf8: Vec::new(),
            malformed_warned: false,
            bytes_read: 0,
            full: false,
            last_read: Instant::now(),
        }
    }

    /// Bytes of the file past the limit, when it was reached.
    fn bytes_skipped(&self) -> u64 {
        if !self.full {
            return 0;
        }
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        size.saturating_sub(self.bytes_read)
    }

    /// Reads and parses at most [`READ_CHUNK`] new bytes, within this map's `max_bytes` and what
    /// `budget` has left; returns whether any were read.
    fn read_chunk(&mut self, max_bytes: u64, budget: &mut PerfMapBudget) -> bool {
        self.last_read = Instant::now();
        let allowed = max_bytes.saturating_sub(self.bytes_read).min(READ_CHUNK);
        if allowed > 0 && budget.room() == 0 {
            return false; // the caller evicts another map, and the next lookup reads on
        }
        let allowed = allowed.min(budget.max_bytes.saturating_sub(budget.bytes));
        if allowed == 0 {
            if !self.full && self.bytes_skipped_if_full() > 0 {
                self.full = true;
                log::warn!(
                    "{}: larger than the {max_bytes} bytes read of a perf map (--max-perf-map-size); \
                     the rest is not read, its functions are unnamed",
                    self.path
                );
            }
            return false;
        }
        let mut bytes = std::mem::take(&mut self.partial_utf8);
        let before = bytes.len();
        let mut reader = std::io::Read::by_ref(&mut self.file).take(allowed);
        let result = reader.read_to_end(&mut bytes);
        let read = (bytes.len() - before) as u64;
        self.bytes_read = self.bytes_read.saturating_add(read);
        budget.bytes = budget.bytes.saturating_add(read);
        if result.is_err() || read == 0 {
            self.partial_utf8 = bytes;
            return false;
        }
        // The parser keeps a partial last line for the next read; a UTF-8 sequence cut by the end of
        // this read is kept back here the same way, so names are never mangled at the cut.
        let complete = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            Err(_) => bytes.len(),
        };
        self.partial_utf8 = bytes.split_off(complete);
        let text = String::from_utf8_lossy(&bytes);
        let dropped_before = self.map.dropped();
        let entries_before = self.map.len();
        let malformed = self.map.extend_from_text(&text);
        budget.entries = budget
            .entries
            .saturating_add((self.map.len() - entries_before) as u64);
        if dropped_before == 0 && self.map.dropped() > 0 {
            log::warn!(
                "{}: more than {} functions; the rest are unnamed",
                self.path,
                crate::perf_map::MAX_ENTRIES
            );
        }
        if malformed > 0 && !self.malformed_warned {
            log::warn!("{}: {malformed} malformed lines ignored", self.path);
            self.malformed_warned = true;
        }
        true
    }

    /// Bytes of the file not read yet (only asked once the limit is reached).
    fn bytes_skipped_if_full(&self) -> u64 {
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        size.saturating_sub(self.bytes_read)
    }
}

/// How much earlier than its process's start a perf map may have been written and still be the
/// process's own: the start time is read in clock ticks since boot, the file's time is wall-clock
/// time, and the two clocks can drift apart (NTP) by some milliseconds.
const START_MARGIN: Duration = Duration::from_secs(1);

/// Whether a file with `meta` was last modified before a process that started `start_ticks` clock
/// ticks after boot (with [`START_MARGIN`]). `false` when a time cannot be read.
fn written_before_start(meta: &std::fs::Metadata, start_ticks: u64) -> bool {
    let (Ok(modified), Some(boot)) = (meta.modified(), boot_time()) else {
        return false;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let Some(ticks_per_second) = u64::try_from(ticks_per_second).ok().filter(|&t| t > 0) else {
        return false;
    };
    let since_boot = Duration::from_millis(start_ticks.saturating_mul(1000) / ticks_per_second);
    modified + START_MARGIN < boot + since_boot
}

/// When the machine booted, in wall-clock time: now, minus the time since boot (the clock
/// `/proc/PID/stat` start times count from).
fn boot_time() -> Option<std::time::SystemTime> {
    let mut since_boot = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut since_boot) } != 0 {
        return None;
    }
    let since_boot = Duration::new(
        u64::try_from(since_boot.tv_sec).ok()?,
        u32::try_from(since_boot.tv_nsec).ok()?,
    );
    std::time::SystemTime::now().checked_sub(since_boot)
}

/// A handle on the `/tmp` of live process `pid`, checked to be the sampled one (`start_ticks`)
/// after it was opened, so a map it writes at its exit can be found after `/proc/PID` is gone.
fn late_map(
    pid: u32,
    start_ticks: Option<u64>,
    uid: u32,
    namespace_pid: u32,
    shown: String,
) -> Option<LateMap> {
    let dir = untrusted::open_directory(Path::new(&format!("/proc/{pid}/root/tmp"))).ok()?;
    let started = read_start_ticks(pid)?;
    if start_ticks.is_some_and(|expected| expected != started) {
        return None;
    }
    Some(LateMap {
        dir,
        name: format!("perf-{namespace_pid}.map"),
        shown,
        pid,
        uid,
        start_ticks: Some(started),
    })
}

fn read_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::process::parse_start_ticks(&stat)
}

/// Whether the instance of `pid` that started at `start_ticks` still runs (it ended by exec): not
/// a zombie, and the same start time (exec keeps it).
fn exec_d(pid: u32, start_ticks: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    let running = !matches!(state, Some("Z" | "X" | "x"));
    running && start_ticks.is_some() && crate::process::parse_start_ticks(&stat) == start_ticks
}

/// The process's effective uid and its PID inside its own PID namespace (the number it writes into
/// the perf map's name), from `/proc/PID/status`.
fn process_ids(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let uid = field("Uid:")?.nth(1)?.parse().ok()?;
    let namespace_pid = field("NSpid:")?.last()?.parse().ok()?;
    Some((uid, namespace_pid))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// This test process's own perf map, removed on drop; one test at a time uses it.
    pub(crate) struct OwnPerfMap(
        String,
        #[allow(dead_code)] std::sync::MutexGuard<'static, ()>,
    );

    impl OwnPerfMap {
        pub(crate) fn write(text: &str) -> OwnPerfMap {
            static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let path = format!("/tmp/perf-{}.map", std::process::id());
            std::fs::write(&path, text).expect("write perf map");
            OwnPerfMap(path, guard)
        }
    }

    impl Drop for OwnPerfMap {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn budget() -> PerfMapBudget {
        PerfMapBudget::new(u64::MAX, u64::MAX)
    }

    fn own_start_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        crate::process::parse_start_ticks(&stat).expect("start time")
    }

    /// The perf map is opened for the process that was sampled; not for an instance that ended (its
    /// PID may be another process's by now), nor when the PID's start time is not the sampled one.
    #[test]
    fn perf_map_is_opened_only_for_the_sampled_process() {
        let _map = OwnPerfMap::write("1000 10 jitted_function\n");
        let pid = std::process::id();
        let start = own_start_ticks();

        const MAX: u64 = DEFAULT_MAX_PERF_MAP_BYTES;

        let live = ProcessKey { pid, instance: 1 };
        assert_eq!(
            ProcessPerfMap::default()
                .lookup(live, Some(start), 0x1004, MAX, &mut budget())
                .as_deref(),
            Some("jitted_function")
        );

        let mut map = ProcessPerfMap::default();
        let ended = ProcessKey { pid, instance: 2 };
        map.instance_ended();
        assert_eq!(
            map.lookup(ended, Some(start), 0x1004, MAX, &mut budget()),
            None
        );

        let reused = ProcessKey { pid, instance: 3 };
        let mut map = ProcessPerfMap::default();
        assert_eq!(
            map.lookup(reused, Some(start + 1), 0x1004, MAX, &mut budget()),
            None
        );
    }

    /// A map last written before the process started is another process's (an earlier one with
    /// its PID): not read until it is written again.
    #[test]
    fn a_map_older_than_its_process_is_not_read() {
        let map = OwnPerfMap::write("1000 10 jitted_function\n");
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 5,
        };
        let file = std::fs::File::options()
            .write(true)
            .open(&map.0)
            .expect("open own map");
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        file.set_modified(an_hour_ago).expect("set mtime");
        const MAX: u64 = DEFAULT_MAX_PERF_MAP_BYTES;
        let mut map = ProcessPerfMap::default();
        assert_eq!(
            map.lookup(key, Some(own_start_ticks()), 0x1004, MAX, &mut budget()),
            None
        );
        assert_eq!(map.lookup(key, None, 0x1004, MAX, &mut budget()), None);

        file.set_modified(std::time::SystemTime::now())
            .expect("set mtime");
        std::thread::sleep(OPEN_RETRY);
        assert_eq!(
            map.lookup(key, Some(own_start_ticks()), 0x1004, MAX, &mut budget())
                .as_deref(),
            Some("jitted_function")
        );
    }

    /// A `sh` that writes its perf map (one function, `name`) once its stdin closes, then exits.
    fn writes_map_at_exit(name: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args([
                "-c",
                &format!("read _; echo '1000 10 {name}' > /tmp/perf-$$.map"),
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run sh")
    }

    /// Closes the child's stdin and waits for it: its map is written, and it has exited.
    fn let_exit(child: &mut std::process::Child) -> String {
        drop(child.stdin.take());
        child.wait().expect("wait for sh");
        format!("/tmp/perf-{}.map", child.id())
    }

    /// A map written as its process exits, when `/proc/PID` no longer leads to it, is read from the
    /// `/tmp` kept while the process lived; only processes with JIT code keep one.
    #[test]
    fn a_map_written_at_exit_is_read_after_the_process_ended() {
        const MAX: u64 = DEFAULT_MAX_PERF_MAP_BYTES;
        let mut jit = writes_map_at_exit("written_at_exit");
        let mut plain = writes_map_at_exit("not_looked_for");
        let jit_key = ProcessKey {
            pid: jit.id(),
            instance: 8,
        };
        let plain_key = ProcessKey {
            pid: plain.id(),
            instance: 9,
        };
        let mut jit_map = ProcessPerfMap::default();
        let mut plain_map = ProcessPerfMap::default();
        jit_map.open(jit_key, None, true);
        plain_map.open(plain_key, None, false);
        assert!(jit_map.awaited() && !plain_map.awaited());
        let paths = [let_exit(&mut jit), let_exit(&mut plain)];
        jit_map.instance_ended();
        plain_map.instance_ended();
        let named = jit_map.lookup(jit_key, None, 0x1004, MAX, &mut budget());
        let unnamed = plain_map.lookup(plain_key, None, 0x1004, MAX, &mut budget());
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
        assert_eq!(named.as_deref(), Some("written_at_exit"));
        assert_eq!(unnamed, None, "no handle kept without JIT code");
        assert!(!jit_map.awaited());
    }

    /// A map written well after the instance ended is a later process's under the same PID.
    #[test]
    fn a_map_written_after_the_end_is_not_read() {
        let mut child = writes_map_at_exit("later_process");
        let key = ProcessKey {
            pid: child.id(),
            instance: 10,
        };
        let mut map = ProcessPerfMap::default();
        map.open(key, None, true);
        let path = let_exit(&mut child);
        map.instance_ended();
        let later = SystemTime::now() + Duration::from_secs(60);
        let file = std::fs::File::options().write(true).open(&path);
        let set = file.and_then(|file| file.set_modified(later));
        let found = map.lookup(key, None, 0x1004, DEFAULT_MAX_PERF_MAP_BYTES, &mut budget());
        let _ = std::fs::remove_file(&path);
        set.expect("set the map's mtime");
        assert_eq!(found, None);
    }

    /// At most `max_bytes` of a map are read; the rest is counted as skipped.
    #[test]
    fn reading_stops_at_the_size_limit() {
        let lines: String = (0..1000u64)
            .map(|i| format!("{:x} 10 f{i}\n", 0x1000 + i * 16))
            .collect();
        let _map = OwnPerfMap::write(&lines);
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 4,
        };
        let mut map = ProcessPerfMap::default();
        assert_eq!(
            map.lookup(key, None, 0x1000, 4096, &mut budget())
                .as_deref(),
            Some("f0")
        );
        assert_eq!(
            map.lookup(key, None, 0x1000 + 999 * 16, 4096, &mut budget()),
            None,
            "past the limit"
        );
        let stats = map.stats();
        assert_eq!(stats.bytes_skipped, lines.len() as u64 - 4096);
    }
}
