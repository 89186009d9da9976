//! Snapshots of processes' executable mappings, taken while each process is alive.
//!
//! A PID names whichever process holds it now: the one that was sampled may have exited and its PID
//! been given to another by the time its notice is handled. When the BPF side reported the sampled
//! process's start time, a snapshot is taken only if `/proc/PID/stat` shows the same one, and
//! `/proc/PID/maps` is read through the same `/proc/PID` directory handle, which stops working (rather
//! than switching to the new process) once that process is gone.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};

use crate::maps::{parse_maps, MapsEntry};
use crate::modules::{mapped_file_key, open_mapped_file, FileKey, ModuleId, ModuleTable};
use crate::snapshot_budget::{display_name, postponed_at, Postponed, SnapshotBudget};
use crate::tables::ShrinkSparse;
use crate::Error;

/// One run of one program in one process: a PID, and the instance id the BPF side gave it (a new one
/// after each exec, and for a recycled PID). Snapshots are per instance, so samples taken before an
/// exec are symbolized against the program that ran then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    pub instance: u32,
}

/// One executable mapping of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start` within the module.
    pub offset: u64,
    pub module: ModuleId,
}

/// The executable, file-backed mappings of one process (plus its vDSO), sorted by address.
#[derive(Clone, Debug, Default)]
pub struct ProcessSnapshot {
    mappings: Vec<Mapping>,
    /// The module of the main executable (`/proc/PID/exe`), if it is mapped.
    executable: Option<ModuleId>,
    /// Identity of `/proc/PID/exe` when the snapshot was taken: a later read of the maps is only
    /// valid for this instance while the process still runs this program.
    executable_file: Option<FileKey>,
    /// Mappings whose file could not be opened, by display name, so their frames still say where they are.
    unreadable: Vec<(u64, u64, u64, std::sync::Arc<str>)>,
    /// Anonymous executable mappings (JIT code, trampolines), sorted: code no module holds, which a
    /// runtime may name later (its perf map can be written as late as its exit) and which unwinding
    /// may return into.
    anonymous_code: Vec<std::ops::Range<u64>>,
    /// Which of the table's snapshots this is (see [`ProcessSnapshot::generation`]).
    generation: u64,
    /// File mappings added from mapping records (see `mapping_records`), bounded.
    recorded: usize,
    /// The modules this snapshot is counted as a user of (sorted): what
    /// [`ProcessTable::hold_modules`] last counted, and what [`ProcessTable::remove`] uncounts,
    /// whatever changed the mappings since.
    counted: Vec<ModuleId>,
    /// File mappings not opened yet for the snapshot budget (see `snapshot_budget`), sorted.
    postponed: Vec<Postponed>,
}

/// What mapping records add to a snapshot (see `mapping_records`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RecordedParts {
    pub mappings: Vec<Mapping>,
    /// Mappings whose file could not be shown to be the mapped one, by display name.
    pub unreadable: Vec<(std::ops::Range<u64>, u64, std::sync::Arc<str>)>,
    pub anonymous: Vec<std::ops::Range<u64>>,
    /// The program's own executable, if a record said which it is.
    pub executable: Option<ModuleId>,
}

/// Where a user address lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserLocation {
    /// In a module at a file offset.
    Module { module: ModuleId, file_offset: u64 },
    /// In a mapped file that could not be opened (named for display).
    UnreadableModule {
        name: std::sync::Arc<str>,
        file_offset: u64,
    },
    /// In no file-backed mapping of the snapshot.
    Unmapped,
}

impl ProcessSnapshot {
    pub fn locate(&self, address: u64) -> UserLocation {
        if let Some(mapping) = self.mapping_at(address) {
            return UserLocation::Module {
                module: mapping.module,
                file_offset: address - mapping.start + mapping.offset,
            };
        }
        for (start, end, offset, name) in &self.unreadable {
            if (*start..*end).contains(&address) {
                return UserLocation::UnreadableModule {
                    name: name.clone(),
                    file_offset: address - start + offset,
                };
            }
        }
        // Mapped, not opened yet: shown by name, and not taken for code mapped since (which
        // would have the snapshot retaken).
        if let Some(index) = postponed_at(&self.postponed, address) {
            let postponed = &self.postponed[index];
            return UserLocation::UnreadableModule {
                name: postponed.name.clone(),
                file_offset: address - postponed.start + postponed.offset,
            };
        }
        UserLocation::Unmapped
    }

    /// The module mapping that holds `address`.
    pub(crate) fn mapping_at(&self, address: u64) -> Option<&Mapping> {
        let index = self.mappings.partition_point(|m| m.start <= address);
        let mapping = &self.mappings[index.checked_sub(1)?];
        (address < mapping.end).then_some(mapping)
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// Each module mapped, once.
    fn distinct_modules(&self) -> Vec<ModuleId> {
        let mut modules: Vec<ModuleId> = self.mappings.iter().map(|m| m.module).collect();
        modules.sort_unstable();
        modules.dedup();
        modules
    }

    pub fn executable(&self) -> Option<ModuleId> {
        self.executable
    }

    /// The anonymous executable mappings (JIT code), sorted.
    pub fn anonymous_code(&self) -> &[std::ops::Range<u64>] {
        &self.anonymous_code
    }

    /// File mappings not opened yet for the snapshot budget.
    pub fn postponed(&self) -> usize {
        self.postponed.len()
    }

    /// Whether `address` lies in a mapping not opened yet for the snapshot budget.
    pub(crate) fn is_postponed_at(&self, address: u64) -> bool {
        postponed_at(&self.postponed, address).is_some()
    }

    /// Differs from that of every other snapshot the table took: what was built from a snapshot
    /// (a process's unwinder) is rebuilt once the process's snapshot is retaken.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `pid` still runs the program this snapshot was taken of.
    pub fn same_program(&self, pid: u32) -> bool {
        self.executable_file.is_some() && executable_file(pid) == self.executable_file
    }
}

/// Identity of the process's main executable.
fn executable_file(pid: u32) -> Option<FileKey> {
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some(FileKey::of(&meta))
}

/// Nanoseconds per clock tick of `/proc/PID/stat` times: USER_HZ is 100 on every Linux architecture.
const NS_PER_USER_TICK: u64 = 10_000_000;

/// A process's start time as `/proc/PID/stat` shows it (clock ticks since boot), from the
/// `start_boottime` in nanoseconds that the BPF side reads.
pub fn start_ticks_from_ns(start_boottime_ns: u64) -> u64 {
    start_boottime_ns / NS_PER_USER_TICK
}

/// Field 22 (`starttime`) of the text of `/proc/PID/stat`. The name (field 2) is in parentheses and
/// may itself contain spaces and `)`, so fields are counted after the *last* `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Reads `name` inside the `/proc/PID` directory `dir` (at most 64 MiB: a maps file of a process
/// with a million mappings).
fn read_in(dir: &File, name: &std::ffi::CStr) -> std::io::Result<String> {
    // SAFETY: valid directory descriptor and NUL-terminated name; the descriptor is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut text = String::new();
    file.take(64 << 20).read_to_string(&mut text)?;
    Ok(text)
}

/// Snapshots by process instance.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<ProcessKey, ProcessSnapshot>,
    vdso: Option<ModuleId>,
    /// Snapshots taken so far: the next one's generation.
    taken: u64,
}

impl ProcessTable {
    pub fn new(vdso: Option<ModuleId>) -> Self {
        ProcessTable {
            processes: HashMap::new(),
            vdso,
            taken: 0,
        }
    }

    pub fn get(&self, key: ProcessKey) -> Option<&ProcessSnapshot> {
        self.processes.get(&key)
    }

    /// See [`crate::Symbolizer::shrink_tables`].
    pub(crate) fn shrink_tables(&mut self) {
        self.processes.shrink_if_sparse();
    }

    /// The vDSO's module, the same in every process.
    pub(crate) fn vdso(&self) -> Option<ModuleId> {
        self.vdso
    }

    pub fn contains(&self, key: ProcessKey) -> bool {
        self.processes.contains_key(&key)
    }

    /// Drops the snapshot of an instance that is gone, and its place among the users of the
    /// modules it maps.
    pub fn remove(&mut self, key: ProcessKey, modules: &mut ModuleTable) {
        if let Some(snapshot) = self.processes.remove(&key) {
            for module in snapshot.counted {
                modules.remove_user(module);
            }
        }
    }

    /// Counts the snapshot of `key` as a user of exactly the modules it maps now (see
    /// [`ModuleTable::release_unused`]): a module it no longer maps loses it, one it maps since
    /// gains it. Whatever changes a snapshot's mappings calls this after.
    pub(crate) fn hold_modules(&mut self, key: ProcessKey, modules: &mut ModuleTable) {
        let Some(snapshot) = self.processes.get_mut(&key) else {
            return;
        };
        let now = snapshot.distinct_modules();
        // Gains first: a module both map never looks unused.
        for module in &now {
            if snapshot.counted.binary_search(module).is_err() {
                modules.add_user(*module);
            }
        }
        for module in &snapshot.counted {
            if now.binary_search(module).is_err() {
                modules.remove_user(*module);
            }
        }
        snapshot.counted = now;
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Reads `/proc/PID/maps` now and opens every module not yet in `modules`; replaces an earlier
    /// snapshot of `key`. Modules that cannot be opened are logged and left unreadable; only a process
    /// that cannot be read at all (it has exited) is an error.
    ///
    /// `start_ticks`, when known, is the start time (`/proc/PID/stat` field 22) of the process that
    /// was sampled: a process with another start time under this PID is not snapshotted.
    pub fn snapshot(
        &mut self,
        key: ProcessKey,
        start_ticks: Option<u64>,
        modules: &mut ModuleTable,
    ) -> Result<&ProcessSnapshot, Error> {
        self.snapshot_within(key, start_ticks, modules, &mut SnapshotBudget::default())
    }

    /// [`ProcessTable::snapshot`] within a round's `budget`: the file mappings it does not reach
    /// are postponed (see `snapshot_budget`).
    pub(crate) fn snapshot_within(
        &mut self,
        key: ProcessKey,
        start_ticks: Option<u64>,
        modules: &mut ModuleTable,
        budget: &mut SnapshotBudget,
    ) -> Result<&ProcessSnapshot, Error> {
        let pid = key.pid;
        let path = format!("/proc/{pid}");
        let read_error = |source| Error::ReadMaps {
            pid,
            path: path.clone().into(),
            source,
        };
        let dir = File::open(&path).map_err(read_error)?;
        let same_process = |dir: &File| -> Result<(), Error> {
            let Some(expected) = start_ticks else {
                return Ok(());
            };
            let stat = read_in(dir, c"stat").map_err(read_error)?;
            match parse_start_ticks(&stat) {
                Some(found) if found == expected => Ok(()),
                found => Err(Error::PidReused {
                    pid,
                    expected,
                    found,
                }),
            }
        };
        same_process(&dir)?;
        let text = read_in(&dir, c"maps").map_err(read_error)?;
        let old = self.processes.get(&key);
        let first = executable_file(pid).map(|file| (file.dev, file.inode));
        let mut snapshot = snapshot_from_entries(
            (pid, first),
            self.vdso,
            parse_maps(&text),
            modules,
            old,
            budget,
        );
        if !snapshot.postponed.is_empty() {
            budget.stats.snapshots_postponed += 1;
            budget.stats.postponed += snapshot.postponed.len() as u64;
        }
        // The modules were opened by PID: if the process ended meanwhile, they may belong to a new
        // process that got its PID. Still readable through `dir` means it was alive all along.
        if start_ticks.is_some() && read_in(&dir, c"stat").is_err() {
            let reopened = File::open(&path).map_err(read_error);
            if let Ok(dir) = reopened {
                same_process(&dir)?;
            }
        }
        snapshot.executable_file = executable_file(pid);
        snapshot.executable = snapshot.executable_file.and_then(|file| modules.find(file));
        snapshot.generation = self.taken;
        self.taken += 1;
        // The new snapshot takes over the old one's place among the modules' users.
        if let Some(old) = self.processes.get_mut(&key) {
            snapshot.counted = std::mem::take(&mut old.counted);
        }
        self.processes.insert(key, snapshot);
        self.hold_modules(key, modules);
        Ok(&self.processes[&key])
    }

    /// Adds what mapping records say of `key` to its snapshot, making one if it has none (the process
    /// was gone before its maps could be read). A snapshot read from `/proc` is the truth at the
    /// time it was read, so a record that overlaps one of its mappings is left out; among records,
    /// the later wins (code unmapped and other code mapped at its place). Returns the file mappings
    /// added and those left out past [`MAX_RECORDED_PER_PROCESS`].
    pub(crate) fn merge_recorded(
        &mut self,
        key: ProcessKey,
        parts: RecordedParts,
    ) -> (usize, usize) {
        let snapshot = self.processes.entry(key).or_default();
        let from_proc = snapshot.executable_file.is_some();
        let (mut added, mut over) = (0, 0);
        for mapping in parts.mappings {
            let overlaps = |m: &Mapping| m.start < mapping.end && mapping.start < m.end;
            if snapshot.mappings.contains(&mapping)
                || (from_proc && snapshot.mappings.iter().any(overlaps))
            {
                continue;
            }
            if snapshot.recorded >= MAX_RECORDED_PER_PROCESS {
                over += 1;
                continue;
            }
            snapshot.mappings.retain(|m| !overlaps(m));
            snapshot.mappings.push(mapping);
            snapshot.recorded += 1;
            added += 1;
        }
        snapshot.mappings.sort_by_key(|m| m.start);
        for (range, offset, name) in parts.unreadable {
            let covered = snapshot
                .mappings
                .iter()
                .any(|m| m.start < range.end && range.start < m.end);
            if !covered && snapshot.unreadable.len() < MAX_RECORDED_PER_PROCESS {
                snapshot
                    .unreadable
                    .push((range.start, range.end, offset, name));
            }
        }
        snapshot.anonymous_code.extend(parts.anonymous);
        merge_ranges(&mut snapshot.anonymous_code);
        snapshot.anonymous_code.truncate(MAX_RECORDED_PER_PROCESS);
        if snapshot.executable.is_none() {
            snapshot.executable = parts.executable;
        }
        // What was built from the snapshot before (the process's unwinder) is rebuilt.
        snapshot.generation = self.taken;
        self.taken += 1;
        (added, over)
    }

    /// Opens up to the budget allows of the mappings `key`'s snapshot postponed: all that
    /// hold one of `addresses` first, then the rest. Returns how many were opened.
    pub(crate) fn open_postponed(
        &mut self,
        key: ProcessKey,
        addresses: &[u64],
        modules: &mut ModuleTable,
        budget: &mut SnapshotBudget,
    ) -> usize {
        let Some(snapshot) = self.processes.get_mut(&key) else {
            return 0;
        };
        let mut opened = 0;
        let mut same_file = HashMap::new();
        for &address in addresses {
            if budget.spent() {
                break;
            }
            if let Some(index) = postponed_at(&snapshot.postponed, address) {
                let postponed = snapshot.postponed.remove(index);
                open_into(snapshot, key.pid, &postponed, modules, &mut same_file);
                opened += 1;
            }
        }
        if addresses.is_empty() {
            // In the order snapshots take files (see `snapshot_from_entries`): the program's own
            // executable, then from the top of the address space down.
            let program = snapshot.executable_file.and_then(|file| {
                snapshot
                    .postponed
                    .iter()
                    .position(|p| p.inode == file.inode)
            });
            if let Some(index) = program.filter(|_| !budget.spent()) {
                let postponed = snapshot.postponed.remove(index);
                open_into(snapshot, key.pid, &postponed, modules, &mut same_file);
                opened += 1;
            }
            while !budget.spent() {
                let Some(postponed) = snapshot.postponed.pop() else {
                    break;
                };
                open_into(snapshot, key.pid, &postponed, modules, &mut same_file);
                opened += 1;
            }
        }
        if opened > 0 {
            snapshot.mappings.sort_by_key(|m| m.start);
            snapshot.unreadable.sort_by_key(|u| u.0);
            snapshot.generation = self.taken;
            self.taken += 1;
            budget.stats.opened_later += opened as u64;
            self.hold_modules(key, modules);
        }
        opened
    }
}

/// Reads a snapshot from the lines of `/proc/PID/maps`, opening the modules of its executable
/// file mappings within `budget` (see `snapshot_budget`). A file mapped many times is looked up
/// once: within one read of the maps, the same device and inode are the same file (a mapped inode
/// cannot be freed and its number reused). A mapping `old` (the snapshot this one replaces) had at
/// the same place, from the same device and inode, keeps its module without being looked up again,
/// so that retaking a hostile process's snapshot does not start over.
///
/// The budget may not reach every file, so they are taken in the order that names most: the
/// program's own executable (`executable`: its device and inode), then from the top of the
/// address space down, where the loader maps the libraries before anything the program maps
/// itself (mmap places mappings top-down).
fn snapshot_from_entries(
    (pid, executable): (u32, Option<(u64, u64)>),
    vdso: Option<ModuleId>,
    entries: Vec<MapsEntry>,
    modules: &mut ModuleTable,
    old: Option<&ProcessSnapshot>,
    budget: &mut SnapshotBudget,
) -> ProcessSnapshot {
    let mut opened = 0;
    let mut same_file: HashMap<(u64, u64), Option<ModuleId>> = HashMap::new();
    let kept: HashMap<(u64, u64, u64), ModuleId> = old
        .map(|old| {
            old.mappings
                .iter()
                .map(|m| ((m.start, m.end, m.offset), m.module))
                .collect()
        })
        .unwrap_or_default();
    let mut snapshot = ProcessSnapshot::default();
    let mut files = Vec::new();
    for entry in entries.into_iter().filter(|e| e.executable) {
        if entry.path == "[vdso]" {
            if let Some(module) = vdso {
                snapshot.mappings.push(Mapping {
                    start: entry.start,
                    end: entry.end,
                    offset: 0,
                    module,
                });
            }
            continue;
        }
        if entry.inode == 0 || !entry.path.starts_with('/') {
            // Anonymous executable memory: JIT code, trampolines (maybe named with
            // PR_SET_VMA_ANON_NAME); not the kernel's pseudo-mappings such as `[vsyscall]`.
            if entry.path.is_empty() || entry.path.starts_with("[anon:") {
                snapshot.anonymous_code.push(entry.start..entry.end);
            }
            continue;
        }
        files.push(entry);
    }
    files.sort_by_key(|e| {
        let program = Some((e.dev, e.inode)) == executable;
        (!program, std::cmp::Reverse(e.start))
    });
    for entry in files {
        let file = (entry.dev, entry.inode);
        let known = same_file.get(&file).copied().or_else(|| {
            let module = *kept.get(&(entry.start, entry.end, entry.offset))?;
            let same = modules.contains(module) && modules.get(module).dev_inode() == Some(file);
            same.then_some(Some(module))
        });
        let module = match known {
            Some(module) => module,
            None if budget.may_open(opened) => {
                opened += 1;
                let module = open_entry(pid, &entry, modules);
                same_file.insert(file, module);
                module
            }
            None => {
                snapshot.postponed.push(Postponed::of(&entry));
                continue;
            }
        };
        let name = || display_name(&entry.path).into();
        push_mapping(
            &mut snapshot,
            (entry.start, entry.end, entry.offset),
            name,
            module,
        );
    }
    snapshot.mappings.sort_by_key(|m| m.start);
    snapshot.anonymous_code.sort_by_key(|range| range.start);
    snapshot.postponed.sort_by_key(|p| p.start);
    snapshot
}

/// Opens the module of a file mapping, or says why it could not be (logged).
fn open_entry(pid: u32, entry: &MapsEntry, modules: &mut ModuleTable) -> Option<ModuleId> {
    let key = mapped_file_key(pid, entry.start, entry.end)
        .filter(|key| (key.dev, key.inode) == (entry.dev, entry.inode));
    let at = (entry.start, entry.end, entry.inode);
    let opened = modules.get_or_open(key, &entry.path, pid, at, || {
        open_mapped_file(pid, entry.start, entry.end, &entry.path, entry.inode)
    });
    match opened {
        Ok(module) => Some(module),
        Err(error) => {
            log::debug!("{}", crate::error::chain(&error));
            None
        }
    }
}

/// Opens a postponed mapping into `snapshot` (unsorted: the caller sorts). `same_file` remembers
/// the modules of the files opened in this call by their identity.
fn open_into(
    snapshot: &mut ProcessSnapshot,
    pid: u32,
    postponed: &Postponed,
    modules: &mut ModuleTable,
    same_file: &mut HashMap<(u64, u64), Option<ModuleId>>,
) {
    let key = mapped_file_key(pid, postponed.start, postponed.end)
        .filter(|key| key.inode == postponed.inode);
    let module = match key.map(|key| (key.dev, key.inode)) {
        Some(file) if same_file.contains_key(&file) => same_file[&file],
        file => {
            let at = (postponed.start, postponed.end, postponed.inode);
            let opened = modules.get_or_open(key, &postponed.path, pid, at, || {
                open_mapped_file(
                    pid,
                    postponed.start,
                    postponed.end,
                    &postponed.path,
                    postponed.inode,
                )
            });
            let module = opened
                .map_err(|error| log::debug!("{}", crate::error::chain(&error)))
                .ok();
            if let Some(file) = file {
                same_file.insert(file, module);
            }
            module
        }
    };
    let at = (postponed.start, postponed.end, postponed.offset);
    push_mapping(snapshot, at, || postponed.name.clone(), module);
}

/// Adds the file mapping `(start, end, offset)` to `snapshot`: in `module`, or unreadable (shown
/// by `name`) without one.
fn push_mapping(
    snapshot: &mut ProcessSnapshot,
    (start, end, offset): (u64, u64, u64),
    name: impl FnOnce() -> std::sync::Arc<str>,
    module: Option<ModuleId>,
) {
    match module {
        Some(module) => snapshot.mappings.push(Mapping {
            start,
            end,
            offset,
            module,
        }),
        None => snapshot.unreadable.push((start, end, offset, name())),
    }
}

/// Most mappings added from records to one process instance: a program with its libraries maps a
/// few dozen, a JIT runtime a few thousand code regions (merged when adjacent).
pub const MAX_RECORDED_PER_PROCESS: usize = 8192;

/// Merges anonymous code ranges: sorted, adjacent and overlapping ones joined.
pub(crate) fn merge_ranges(ranges: &mut Vec<std::ops::Range<u64>>) {
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<std::ops::Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    *ranges = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The start time of this very process, read the way snapshots read it, matches what `ps`-style
    /// parsing of a name with spaces and parentheses gives.
    #[test]
    fn parses_start_time() {
        let stat =
            "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("1234 (x) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        assert!(parse_start_ticks(&own).is_some(), "{own}");
    }

    /// A snapshot asked for with the start time of another process (what a reused PID looks like)
    /// is refused; with the right one it is taken.
    #[test]
    fn reused_pid_is_refused() {
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        let start = parse_start_ticks(&own).expect("start time");
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 1,
        };
        let mut modules = ModuleTable::default();
        let mut table = ProcessTable::new(None);
        let error = table
            .snapshot(key, Some(start + 1), &mut modules)
            .expect_err("another process's start time");
        assert!(matches!(error, Error::PidReused { .. }), "{error}");
        assert!(table.get(key).is_none());
        let snapshot = table
            .snapshot(key, Some(start), &mut modules)
            .expect("same process");
        assert!(!snapshot.mappings().is_empty());
    }

    /// With the budget used up, a snapshot of this process opens nothing: its file mappings are
    /// postponed and shown by file name; a sample's address opens its mapping, the rest are opened
    /// later; a snapshot retaken with the budget used up keeps what was opened.
    #[test]
    fn postponed_mappings_are_named_then_opened() {
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 1,
        };
        let mut modules = ModuleTable::default();
        let mut table = ProcessTable::new(None);
        let mut used_up = SnapshotBudget::used_up();
        let address = postponed_mappings_are_named_then_opened as *const () as u64;
        let snapshot = table
            .snapshot_within(key, None, &mut modules, &mut used_up)
            .expect("own snapshot");
        assert!(snapshot.mappings().is_empty(), "{:?}", snapshot.mappings());
        assert!(snapshot.postponed() > 1);
        let own_name = std::env::current_exe().expect("own path");
        let own_name = own_name.file_name().expect("file name").to_string_lossy();
        match snapshot.locate(address) {
            UserLocation::UnreadableModule { name, .. } => assert_eq!(&*name, &*own_name),
            other => panic!("{other:?}"),
        }
        assert_eq!(used_up.stats.snapshots_postponed, 1);
        assert_eq!(used_up.stats.postponed, snapshot.postponed() as u64);
        let mut unlimited = SnapshotBudget::default();
        assert_eq!(
            table.open_postponed(key, &[address], &mut modules, &mut unlimited),
            1
        );
        let snapshot = table.get(key).expect("snapshot");
        assert!(matches!(
            snapshot.locate(address),
            UserLocation::Module { .. }
        ));
        let left = snapshot.postponed();
        assert_eq!(
            table.open_postponed(key, &[], &mut modules, &mut unlimited),
            left
        );
        let opened = table.get(key).expect("snapshot").mappings().len();
        let snapshot = table
            .snapshot_within(key, None, &mut modules, &mut SnapshotBudget::used_up())
            .expect("retaken");
        assert_eq!(snapshot.postponed(), 0);
        assert_eq!(snapshot.mappings().len(), opened);
    }

    /// The BPF side's nanoseconds and /proc's ticks agree for this process (within the second that
    /// passes between reading one and the other, they are the same value).
    #[test]
    fn ticks_from_ns() {
        assert_eq!(start_ticks_from_ns(12_345_678_901), 1234);
    }

    proptest! {
        /// Any text: no panic; any comm: the right field.
        #[test]
        fn stat_parser_never_panics(text in ".{0,300}", comm in "[^\\n]{0,16}", start in any::<u64>()) {
            let _ = parse_start_ticks(&text);
            let stat = format!("7 ({comm}) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 1 1");
            prop_assert_eq!(parse_start_ticks(&stat), Some(start));
        }
    }
}
