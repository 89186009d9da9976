//! Which executable mappings each process instance had, from the side-band records both backends
//! read (perf's MMAP2, COMM with exec, FORK, EXIT): the history of every PID's address spaces, so
//! that a process gone before its `/proc/PID/maps` could be read is still named.
//!
//! Records arrive before the instance they belong to exists: the kernel maps a program and its
//! libraries before its first sample, which is when a source gives it an instance. So each PID
//! keeps the address spaces it had, each from its start (fork or exec) to its end (exec or exit),
//! with the time of each; an instance is bound to the address space that held it at the time of
//! its first sample ([`AddressSpaces::process_seen`]), gets every mapping made in it so far, and
//! then every later one as it comes. Binding by time, not by arrival, keeps a shell child's samples
//! from taking the mappings of the compiler it exec'd next, whatever order a busy reader gets the
//! records in. Both backends stamp their records with CLOCK_MONOTONIC (perf's `use_clockid`, BPF's
//! `bpf_ktime_get_ns`), so their times compare.
//!
//! An address space that ended is kept until the end of the next round (see
//! [`AddressSpaces::end_round`]): a first sample taken before the end may still be on its way.
//! Everything is bounded: [`MAX_BYTES`] in all, [`MAX_SPACES_PER_PID`] address spaces per PID and
//! [`MAX_MAPPINGS_PER_SPACE`] mappings each; what does not fit is counted, never kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use emberprof_symbolizer::{FileIdentity, ProcessKey, RecordedMapping};

use super::source::{Event, EventSink};

/// Bytes all recorded mappings may hold: thousands of processes' worth of libraries.
const MAX_BYTES: usize = 64 << 20;
/// Address spaces kept per PID: the current one and the few before it whose first samples may
/// still be on their way (a shell child that exec'd, a PID reused at once).
const MAX_SPACES_PER_PID: usize = 4;
/// Mappings kept per address space (see `MAX_RECORDED_PER_PROCESS` in the symbolizer).
const MAX_MAPPINGS_PER_SPACE: usize = emberprof_symbolizer::MAX_RECORDED_PER_PROCESS;
/// What an address space costs besides its mappings, for the budget.
const SPACE_BYTES: usize = 128;

/// One address space of a PID: from a fork or exec to the next exec or the exit.
#[derive(Debug)]
struct Space {
    /// When it began; 0 for one that began before the recording.
    start: u64,
    end: Option<u64>,
    /// The round its end was seen in (see [`AddressSpaces::end_round`]).
    ended_round: u64,
    /// Begun by an exec: its first file mapping is the program's executable.
    expects_executable: bool,
    mappings: Vec<RecordedMapping>,
    instance: Option<ProcessKey>,
}

impl Space {
    fn new(start: u64) -> Space {
        Space {
            start,
            end: None,
            ended_round: 0,
            expects_executable: false,
            mappings: Vec::new(),
            instance: None,
        }
    }

    fn contains(&self, time: u64) -> bool {
        self.start <= time && self.end.is_none_or(|end| time < end)
    }

    fn bytes(&self) -> usize {
        SPACE_BYTES
            + self
                .mappings
                .iter()
                .map(RecordedMapping::cost)
                .sum::<usize>()
    }
}

/// What the records did not get into the history, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Mappings left out for [`MAX_BYTES`] or [`MAX_MAPPINGS_PER_SPACE`].
    pub dropped: u64,
    /// Process instances that got mappings from the history.
    pub bound: u64,
}

#[derive(Debug, Default)]
pub struct AddressSpaces {
    pids: HashMap<u32, Vec<Space>>,
    round: u64,
    bytes: usize,
    stats: HistoryStats,
}

impl AddressSpaces {
    /// `child` was forked by `parent` at `time`: it starts with a copy of the parent's mappings.
    /// A thread (same PID) changes nothing.
    pub fn fork(&mut self, parent: u32, child: u32, time: u64) {
        if parent == child {
            return;
        }
        let inherited: Vec<RecordedMapping> = self
            .space_at(parent, time)
            .map(|space| space.mappings.clone())
            .unwrap_or_default();
        let mut space = Space::new(time);
        let bytes = space.bytes() + inherited.iter().map(RecordedMapping::cost).sum::<usize>();
        if self.bytes + bytes <= MAX_BYTES {
            space.mappings = inherited;
        } else {
            self.stats.dropped += inherited.len() as u64;
        }
        self.begin(child, time, space);
    }

    /// `pid` exec'd a new program at `time`.
    pub fn exec(&mut self, pid: u32, time: u64) {
        let mut space = Space::new(time);
        space.expects_executable = true;
        self.begin(pid, time, space);
    }

    /// The process `pid` exited at `time` (a thread's exit is not given here).
    pub fn exit(&mut self, pid: u32, time: u64) {
        let round = self.round;
        if let Some(space) = self.pids.get_mut(&pid).and_then(|spaces| spaces.last_mut()) {
            if space.end.is_none() {
                space.end = Some(time.max(space.start));
                space.ended_round = round;
            }
        }
    }

    /// `pid` mapped code at `time`. Told to the instance bound to that address space, if any.
    pub fn mapped(
        &mut self,
        pid: u32,
        time: u64,
        mut mapping: RecordedMapping,
        sink: &mut dyn EventSink,
    ) {
        if !self.pids.contains_key(&pid) {
            // A process that began before the recording: its mappings from now on.
            self.begin(pid, 0, Space::new(0));
        }
        let cost = mapping.cost();
        let over_budget = self.bytes + cost > MAX_BYTES;
        let Some(space) = self
            .pids
            .get_mut(&pid)
            .and_then(|spaces| spaces.iter_mut().rev().find(|s| s.contains(time)))
        else {
            return;
        };
        if over_budget || space.mappings.len() >= MAX_MAPPINGS_PER_SPACE {
            self.stats.dropped += 1;
            return;
        }
        if space.expects_executable && is_file(&mapping.path) {
            space.expects_executable = false;
            mapping.main_executable = true;
        }
        self.bytes += cost;
        if let Some(process) = space.instance {
            sink.event(Event::Mappings {
                process,
                mappings: vec![mapping.clone()],
            });
        }
        space.mappings.push(mapping);
    }

    /// The first sample of `process` was taken at `time`: announces it to `sink`, with the
    /// mappings of the address space it ran in. If that address space has ended already (the
    /// process exec'd or exited since), its mappings go first, so that the collector does not read
    /// `/proc/PID/maps` of whatever runs under the PID now.
    pub fn process_seen(
        &mut self,
        process: ProcessKey,
        start_time: Option<u64>,
        time: u64,
        sink: &mut dyn EventSink,
    ) {
        let seen = Event::ProcessSeen {
            process,
            start_time,
        };
        if !self.pids.contains_key(&process.pid) {
            // Nothing recorded of it yet: later mappings are its own.
            self.begin(process.pid, 0, Space::new(0));
        }
        let Some(space) = self
            .pids
            .get_mut(&process.pid)
            .and_then(|spaces| spaces.iter_mut().rev().find(|s| s.contains(time)))
        else {
            sink.event(seen);
            return;
        };
        space.instance = Some(process);
        let mappings = space.mappings.clone();
        if mappings.is_empty() {
            sink.event(seen);
            return;
        }
        self.stats.bound += 1;
        let ended = space.end.is_some();
        let mappings = Event::Mappings { process, mappings };
        if ended {
            sink.event(mappings);
            sink.event(seen);
        } else {
            sink.event(seen);
            sink.event(mappings);
        }
    }

    /// The instance ended (exec or exit): its mappings are final.
    pub fn instance_ended(&mut self, process: ProcessKey) {
        if let Some(spaces) = self.pids.get_mut(&process.pid) {
            for space in spaces.iter_mut() {
                if space.instance == Some(process) {
                    space.instance = None;
                }
            }
        }
    }

    /// After a round of reading: forgets the address spaces whose end was seen in an earlier
    /// round. A first sample taken before an end was handed to the source before the end's record
    /// was read, or at the latest in the round after (the source reads its samples before its
    /// side-band records), so nothing can be bound to those any more.
    pub fn end_round(&mut self) {
        let round = self.round;
        let mut freed = 0;
        self.pids.retain(|_, spaces| {
            spaces.retain(|space| {
                let keep = space.end.is_none() || space.ended_round >= round;
                if !keep {
                    freed += space.bytes();
                }
                keep
            });
            !spaces.is_empty()
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.round += 1;
    }

    /// Lines for the summary (`-v`): how many instances got recorded mappings, what was left out.
    pub fn notes(&self) -> Vec<(log::Level, String)> {
        let HistoryStats { dropped, bound } = self.stats;
        let mut notes = vec![(
            log::Level::Info,
            format!("{bound} process instances got executable mappings from mapping records"),
        )];
        if dropped > 0 {
            notes.push((
                log::Level::Info,
                format!(
                    "{dropped} mapping records not kept: over {MAX_MAPPINGS_PER_SPACE} mappings                      in one process, or {} MiB in all",
                    MAX_BYTES >> 20
                ),
            ));
        }
        notes
    }

    #[cfg(test)]
    fn stats(&self) -> HistoryStats {
        self.stats
    }

    /// Starts a new address space of `pid` at `time`, ending the one before.
    fn begin(&mut self, pid: u32, time: u64, space: Space) {
        let round = self.round;
        let bytes = space.bytes();
        let spaces = self.pids.entry(pid).or_default();
        if let Some(last) = spaces.last_mut() {
            if last.end.is_none() {
                last.end = Some(time.max(last.start));
                last.ended_round = round;
            }
        }
        spaces.push(space);
        self.bytes += bytes;
        if spaces.len() > MAX_SPACES_PER_PID {
            let oldest = spaces.remove(0);
            self.bytes = self.bytes.saturating_sub(oldest.bytes());
        }
    }

    fn space_at(&self, pid: u32, time: u64) -> Option<&Space> {
        self.pids
            .get(&pid)?
            .iter()
            .rev()
            .find(|space| space.contains(time))
    }
}

/// A file, not anonymous memory or a pseudo-mapping such as `[vdso]`.
fn is_file(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    bytes.starts_with(b"/") && bytes != b"//anon"
}

/// A recorded mapping from the fields of an MMAP2 (or MMAP) record.
pub fn recorded_mapping(
    address: u64,
    length: u64,
    pgoff: u64,
    filename: &[u8],
    identity: Option<FileIdentity>,
) -> RecordedMapping {
    use std::os::unix::ffi::OsStrExt;
    RecordedMapping {
        start: address,
        end: address.saturating_add(length),
        offset: pgoff,
        path: Arc::from(Path::new(std::ffi::OsStr::from_bytes(filename))),
        identity,
        main_executable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Events(Vec<String>);

    impl EventSink for Events {
        fn event(&mut self, event: Event<'_>) {
            self.0.push(match event {
                Event::ProcessSeen { process, .. } => format!("seen {}", process.instance),
                Event::Mappings { process, mappings } => format!(
                    "{}: {}",
                    process.instance,
                    mappings
                        .iter()
                        .map(|m| format!(
                            "{}{}",
                            m.path.display(),
                            if m.main_executable { "*" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => format!("{other:?}"),
            });
        }
    }

    fn file(path: &str) -> RecordedMapping {
        recorded_mapping(0x1000, 0x1000, 0, path.as_bytes(), None)
    }

    fn key(pid: u32, instance: u32) -> ProcessKey {
        ProcessKey { pid, instance }
    }

    /// A shell child sampled before it exec'd a compiler gets the shell's mappings, the compiler
    /// its own, whatever order the records and first samples are read in.
    #[test]
    fn instances_bind_to_the_address_space_of_their_first_sample() {
        let mut spaces = AddressSpaces::default();
        let mut events = Events::default();
        spaces.exec(10, 100);
        spaces.mapped(10, 110, file("/bin/sh"), &mut events);
        spaces.mapped(10, 120, file("/lib/libc.so.6"), &mut events);
        spaces.fork(10, 11, 200);
        spaces.exec(11, 300);
        spaces.mapped(11, 310, file("/usr/lib/cc1"), &mut events);
        spaces.mapped(11, 320, file("/lib/libc.so.6"), &mut events);
        assert!(events.0.is_empty());
        // Read late: the child's first sample (as the shell) after its exec's records.
        spaces.process_seen(key(11, 1), None, 250, &mut events);
        spaces.process_seen(key(11, 2), None, 330, &mut events);
        spaces.mapped(11, 340, file("/lib/libm.so.6"), &mut events);
        assert_eq!(
            events.0,
            [
                "1: /bin/sh* /lib/libc.so.6",
                "seen 1",
                "seen 2",
                "2: /usr/lib/cc1* /lib/libc.so.6",
                "2: /lib/libm.so.6",
            ]
        );
    }

    /// A process that began before the recording has no history: announced alone, then told of
    /// what it maps from then on; once its instance ended, nothing more goes to it.
    #[test]
    fn processes_from_before_the_recording() {
        let mut spaces = AddressSpaces::default();
        let mut events = Events::default();
        spaces.process_seen(key(7, 1), None, 50, &mut events);
        spaces.mapped(7, 60, file("/lib/plugin.so"), &mut events);
        spaces.instance_ended(key(7, 1));
        spaces.mapped(7, 70, file("/lib/other.so"), &mut events);
        assert_eq!(events.0, ["seen 1", "1: /lib/plugin.so"]);
    }

    /// An ended address space stays for the round after the one its end was seen in, then goes;
    /// the budget gets its bytes back.
    #[test]
    fn ended_spaces_are_forgotten_a_round_later() {
        let mut spaces = AddressSpaces::default();
        let mut events = Events::default();
        spaces.exec(5, 10);
        spaces.mapped(5, 20, file("/bin/true"), &mut events);
        spaces.exit(5, 30);
        spaces.end_round();
        spaces.process_seen(key(5, 1), None, 25, &mut events);
        assert_eq!(events.0, ["1: /bin/true*", "seen 1"]);
        spaces.end_round();
        assert!(spaces.pids.is_empty());
        assert_eq!(spaces.bytes, 0);
    }

    /// Mappings past the per-space limit are counted, not kept; so are old address spaces of a
    /// PID past the per-PID limit.
    #[test]
    fn history_is_bounded() {
        let mut spaces = AddressSpaces::default();
        let mut events = Events::default();
        spaces.exec(3, 1);
        for i in 0..MAX_MAPPINGS_PER_SPACE + 5 {
            spaces.mapped(3, 2 + i as u64, file("/lib/x.so"), &mut events);
        }
        assert_eq!(spaces.stats().dropped, 5);
        for time in 0..10 {
            spaces.exec(3, 1_000_000 + time);
        }
        assert_eq!(spaces.pids[&3].len(), MAX_SPACES_PER_PID);
        let expected: usize = spaces.pids[&3].iter().map(Space::bytes).sum();
        assert_eq!(spaces.bytes, expected);
    }
}
