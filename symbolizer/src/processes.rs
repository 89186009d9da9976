//! The profiled processes: their lifecycle, snapshots and runtimes, and where their addresses lie.
//!
//! The capture side reports each process instance when it is first sampled, when it ends (exec or
//! exit) and when all its samples are symbolized ([`Processes::release`]); this type takes and
//! retakes the instance's [`ProcessSnapshot`] while it is alive (opening the modules it maps into the
//! shared [`ModuleTable`], which only this type adds to), keeps its runtimes (see `runtimes`), and
//! turns its addresses into (module, file offset) locations. It names nothing itself, but code that
//! only a runtime of the process can name (JIT code), and it does not unwind: the namer and the
//! unwinder read what it holds.
//!
//! A PID is only trusted for the instance it was sampled as: an instance that ended is never
//! snapshotted again, a released one is never read again, and a start time given by the BPF side is
//! checked before each snapshot.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameKind, Symbol, UnknownReason};
use crate::jit::JitStats;
use crate::mapping_records::{
    MappingRecords, NamingStats, RecordedMapping, MAX_RECORDED_PER_PROCESS,
};
use crate::modules::ModuleTable;
use crate::perf_map::PerfMap;
use crate::process::{ProcessKey, ProcessSnapshot, ProcessTable, UserLocation};
use crate::released::ReleasedInstances;
use crate::runtimes::Runtimes;
use crate::snapshot_budget::{SnapshotBudget, SnapshotBudgetStats};
use crate::tables::ShrinkSparse;
use crate::Error;

/// Least time between two reads of one process's memory map: short while the process is young (its
/// loader is still mapping libraries), long after (only dlopen or JIT code remains to be found).
const YOUNG_REFRESH_INTERVAL: Duration = Duration::from_millis(5);
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// How long after its first snapshot a process counts as young.
const YOUNG_PROCESS: Duration = Duration::from_secs(1);

/// Per-process state lives from a process's first sample until [`Processes::release`], so it is
/// bounded by the processes alive at once (and released ones by [`ReleasedInstances`]); modules by
/// the distinct executable files those processes map (shared, and released with the last snapshot
/// that maps them), their descriptors by a budget (see [`ModuleTable`]).
pub struct Processes {
    /// Every module a live snapshot maps, shared by file identity.
    modules: ModuleTable,
    snapshots: ProcessTable,
    /// When each process's memory map was first and last read. An address outside the snapshot (a
    /// library loaded after the first sample) triggers a re-read, rate-limited (see
    /// [`REFRESH_INTERVAL`]) so a truly unmapped address (JIT code) does not cost one per sample.
    snapshot_taken: HashMap<ProcessKey, (Instant, Instant)>,
    /// Processes snapshotted (first time or again) since the last [`Processes::take_changed`].
    changed: Vec<ProcessKey>,
    /// Instances that exec'd or exited: their snapshots are final. Until released.
    ended: HashSet<ProcessKey>,
    /// Instances released: gone, and never to be snapshotted again (their PID may belong to
    /// another process by now).
    released: ReleasedInstances,
    /// Start times (`/proc/PID/stat` ticks) the BPF side saw for instances, checked before each
    /// snapshot so a reused PID is not mistaken for the sampled process.
    start_ticks: HashMap<ProcessKey, u64>,
    runtimes: Runtimes,
    /// Modules known from mapping records, and where each instance's modules came from.
    recorded: MappingRecords,
    /// How much of a round snapshots may take (see `snapshot_budget`).
    budget: SnapshotBudget,
    /// Live instances whose snapshots have postponed mappings.
    postponed: HashSet<ProcessKey>,
    /// Mapping records that came past the round's budget, by instance, in arrival order (at most
    /// [`MAX_RECORDED_PER_PROCESS`] each): merged in later rounds.
    records_waiting: HashMap<ProcessKey, Vec<RecordedMapping>>,
}

/// What the unwinder reads of one process at once: its snapshot among the others, the modules, and
/// its perf map (code ranges, and Python's trampolines) if it has one.
pub(crate) struct UnwindView<'a> {
    pub snapshots: &'a ProcessTable,
    pub modules: &'a ModuleTable,
    pub perf_map: Option<&'a mut PerfMap>,
}

impl Processes {
    /// No process yet; the vDSO (the same in every process) is read now. `max_perf_map_bytes`
    /// bounds what is read of each process's perf map.
    pub fn new(max_perf_map_bytes: u64, max_perf_maps_total_bytes: u64) -> Result<Self, Error> {
        Self::with_module_budget(
            max_perf_map_bytes,
            max_perf_maps_total_bytes,
            crate::module_budget::default_max_descriptors(),
        )
    }

    /// Like [`Processes::new`], with open modules holding at most `max_module_descriptors`.
    pub fn with_module_budget(
        max_perf_map_bytes: u64,
        max_perf_maps_total_bytes: u64,
        max_module_descriptors: usize,
    ) -> Result<Self, Error> {
        let mut modules = ModuleTable::new(max_module_descriptors);
        let vdso = crate::vdso::extract_vdso()?.map(|file| modules.insert("[vdso]", file));
        Ok(Processes {
            modules,
            snapshots: ProcessTable::new(vdso),
            snapshot_taken: HashMap::new(),
            changed: Vec::new(),
            ended: HashSet::new(),
            released: ReleasedInstances::default(),
            start_ticks: HashMap::new(),
            runtimes: Runtimes::new(max_perf_map_bytes, max_perf_maps_total_bytes),
            recorded: MappingRecords::default(),
            budget: SnapshotBudget::default(),
            postponed: HashSet::new(),
            records_waiting: HashMap::new(),
        })
    }

    /// Called when a process instance is first sampled: snapshots its mappings while it is alive.
    /// Later calls for the same instance keep the snapshot; a released instance is never snapshotted.
    pub fn process_seen(&mut self, key: ProcessKey) -> Result<(), Error> {
        if self.snapshots.contains(key) || self.is_released(key) {
            return Ok(());
        }
        let taken = self.take_snapshot(key);
        self.recorded.proc_snapshot(key, taken.is_ok());
        taken
    }

    /// Executable mappings of instance `key` that mapping records reported (see
    /// `mapping_records`): added to its snapshot, or made its snapshot if the process was gone
    /// before its maps could be read. Not for a released instance.
    /// Past the round's budget they wait for a later round (see `snapshot_budget`): a process
    /// mapping 20,000 files while recorded sends as many records, each of which may open a file.
    pub fn mappings_recorded(&mut self, key: ProcessKey, mappings: &[RecordedMapping]) {
        if self.is_released(key) || mappings.is_empty() {
            return;
        }
        if self.budget.spent() || self.records_waiting.contains_key(&key) {
            // Made now, as the merge would: a snapshot of `key` must exist from here on, so that
            // its /proc/PID/maps (maybe another process's by now) is not read in its place.
            if !self.snapshots.contains(key) {
                self.snapshots
                    .merge_recorded(key, crate::process::RecordedParts::default());
            }
            let waiting = self.records_waiting.entry(key).or_default();
            let room = MAX_RECORDED_PER_PROCESS.saturating_sub(waiting.len());
            let kept = mappings.len().min(room);
            waiting.extend_from_slice(&mappings[..kept]);
            self.budget.stats.records_postponed += kept as u64;
            self.budget.stats.records_dropped += (mappings.len() - kept) as u64;
            return;
        }
        self.merge_records(key, mappings);
    }

    /// Merges mapping records of `key` into its snapshot now.
    fn merge_records(&mut self, key: ProcessKey, mappings: &[RecordedMapping]) {
        let vdso = self.snapshots.vdso();
        let parts = self
            .recorded
            .resolve(key, mappings, &mut self.modules, vdso);
        let (added, over) = self.snapshots.merge_recorded(key, parts.clone());
        // Its recorded modules are in use while it lives, as its /proc snapshot's are.
        self.snapshots.hold_modules(key, &mut self.modules);
        self.recorded.merged(key, &parts, added, over);
        // A recorded mapping may be the libpython a launched interpreter loads after its first
        // snapshot: with it in the snapshot, no stack leads outside it to have it retaken, so the
        // runtime is looked for here too.
        if added > 0 {
            if let Some(snapshot) = self.snapshots.get(key) {
                self.runtimes
                    .python_snapshotted(key, snapshot.mappings(), &self.modules);
            }
        }
        self.changed.push(key);
    }

    /// How process instances got their modules (from `/proc`, from mapping records, or not).
    pub fn naming_stats(&self) -> NamingStats {
        self.recorded.stats()
    }

    /// Like [`Processes::process_seen`], with the start time the sampled process had
    /// (`start_boottime` in nanoseconds since boot, as the BPF side reads it): the process under this
    /// PID is snapshotted only if it is that one, now and when the snapshot is retaken.
    pub fn process_seen_started(
        &mut self,
        key: ProcessKey,
        start_boottime_ns: u64,
    ) -> Result<(), Error> {
        self.start_ticks
            .insert(key, crate::process::start_ticks_from_ns(start_boottime_ns));
        self.process_seen(key)
    }

    /// The instance exec'd or exited: its snapshot stays, for the samples it already has, but is
    /// never retaken, and its runtimes are not looked for again.
    pub fn instance_ended(&mut self, key: ProcessKey) {
        self.ended.insert(key);
        self.drop_postponed(key);
        self.runtimes.instance_ended(key);
    }

    /// Forgets an ended instance whose samples have all been symbolized: its snapshot (and so its
    /// place among the module table's users), runtimes, start time and timers.
    pub fn release(&mut self, key: ProcessKey) {
        self.drop_postponed(key);
        if let Some(waiting) = self.records_waiting.remove(&key) {
            self.budget.stats.records_dropped += waiting.len() as u64;
        }
        self.snapshots.remove(key, &mut self.modules);
        self.modules.release_unused();
        self.snapshot_taken.remove(&key);
        self.ended.remove(&key);
        self.start_ticks.remove(&key);
        self.runtimes.forget(key);
        self.recorded.release(key);
        self.released.insert(key.instance);
    }

    /// A round of the caller's loop begins: snapshots may take `work` of the thread's CPU time
    /// from now, and what they do not reach is postponed (see `snapshot_budget`).
    pub fn start_round(&mut self, work: Duration) {
        self.budget.start_round(work);
    }

    /// Opens, within the round's budget, mappings that snapshots postponed: smallest remainders
    /// first, so that an ordinary process caught behind a hostile one is completed first. Returns
    /// whether some are still postponed (call again soon).
    pub fn open_postponed(&mut self) -> bool {
        self.merge_waiting_records();
        let mut keys: Vec<(usize, ProcessKey)> = self
            .postponed
            .iter()
            .map(|&key| (self.snapshots.get(key).map_or(0, |s| s.postponed()), key))
            .collect();
        keys.sort_unstable();
        for (_, key) in keys {
            if self.budget.spent() {
                break;
            }
            // Opened by PID: only while the PID still runs the program the snapshot was taken of.
            let same_program = self
                .snapshots
                .get(key)
                .is_some_and(|s| s.same_program(key.pid));
            if !same_program {
                self.drop_postponed(key);
                continue;
            }
            let opened =
                self.snapshots
                    .open_postponed(key, &[], &mut self.modules, &mut self.budget);
            if opened > 0 {
                self.changed.push(key);
            }
            if self.snapshots.get(key).is_none_or(|s| s.postponed() == 0) {
                self.postponed.remove(&key);
            }
        }
        !self.postponed.is_empty() || !self.records_waiting.is_empty()
    }

    /// Merges waiting mapping records, a batch at a time, while the round's budget lasts.
    fn merge_waiting_records(&mut self) {
        /// Records merged between two looks at the budget: one sort of the snapshot each.
        const BATCH: usize = 64;
        let keys: Vec<ProcessKey> = self.records_waiting.keys().copied().collect();
        for key in keys {
            while !self.budget.spent() {
                let Some(waiting) = self.records_waiting.get_mut(&key) else {
                    break;
                };
                let batch: Vec<RecordedMapping> =
                    waiting.drain(..BATCH.min(waiting.len())).collect();
                if waiting.is_empty() {
                    self.records_waiting.remove(&key);
                }
                if batch.is_empty() {
                    break;
                }
                self.budget.stats.records_merged_later += batch.len() as u64;
                self.merge_records(key, &batch);
            }
        }
    }

    /// What the snapshot budget did so far, for the summary.
    pub fn snapshot_budget_stats(&self) -> SnapshotBudgetStats {
        self.budget.stats
    }

    /// The instance will not be read again: what its snapshot postponed stays unopened.
    fn drop_postponed(&mut self, key: ProcessKey) {
        if self.postponed.remove(&key) {
            let left = self.snapshots.get(key).map_or(0, |s| s.postponed());
            self.budget.stats.dropped += left as u64;
        }
    }

    fn is_released(&self, key: ProcessKey) -> bool {
        self.released.contains(key.instance)
    }

    /// Processes whose snapshot was taken or retaken since the last call.
    pub fn take_changed(&mut self) -> Vec<ProcessKey> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Retakes the snapshots of young processes taken while the dynamic loader was still mapping
    /// their libraries (only the executable and `ld-linux` mapped): a process's first sample often
    /// comes from the loader, and a short-lived one may be gone by the time a stack copy needing
    /// libc's CFI is unwound. Returns whether any such snapshot is still waiting (call again soon).
    pub fn retake_loader_snapshots(&mut self) -> bool {
        let loading: Vec<ProcessKey> = self
            .snapshot_taken
            .iter()
            .filter(|(key, (first, _))| {
                first.elapsed() < YOUNG_PROCESS
                    && !self.ended.contains(key)
                    && self
                        .snapshots
                        .get(**key)
                        .is_some_and(|snapshot| self.only_loader_mapped(snapshot))
            })
            .map(|(key, _)| *key)
            .collect();
        let mut waiting = false;
        for key in loading {
            self.refresh_snapshot(key);
            waiting |= self
                .snapshots
                .get(key)
                .is_some_and(|snapshot| self.only_loader_mapped(snapshot));
        }
        waiting
    }

    fn take_snapshot(&mut self, key: ProcessKey) -> Result<(), Error> {
        let now = Instant::now();
        self.snapshot_taken
            .entry(key)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        let start_ticks = self.start_ticks.get(&key).copied();
        self.snapshots
            .snapshot_within(key, start_ticks, &mut self.modules, &mut self.budget)?;
        if self.snapshots.get(key).is_some_and(|s| s.postponed() > 0) {
            self.postponed.insert(key);
        } else {
            self.postponed.remove(&key);
        }
        let jit_code = self
            .snapshots
            .get(key)
            .is_some_and(|snapshot| !snapshot.anonymous_code().is_empty());
        self.runtimes.snapshotted(key, start_ticks, jit_code);
        if let Some(snapshot) = self.snapshots.get(key) {
            self.runtimes
                .python_snapshotted(key, snapshot.mappings(), &self.modules);
        }
        self.changed.push(key);
        Ok(())
    }

    /// Whether a snapshot holds nothing but the executable and the dynamic loader (and the vDSO).
    fn only_loader_mapped(&self, snapshot: &ProcessSnapshot) -> bool {
        let mut has_loader = false;
        for mapping in snapshot.mappings() {
            if Some(mapping.module) == snapshot.executable() {
                continue;
            }
            let name = &self.modules.get(mapping.module).display_name;
            if name.starts_with("ld-linux") || name.starts_with("ld-musl") {
                has_loader = true;
            } else if &**name != "[vdso]" {
                return false;
            }
        }
        has_loader
    }

    /// Re-reads the memory map of a process that has code outside its snapshot, unless that was done
    /// too recently, the instance has ended, or the process has exec'd another program since (the
    /// notice may still be on its way). Returns whether a new snapshot was taken.
    pub(crate) fn refresh_snapshot(&mut self, key: ProcessKey) -> bool {
        if self.ended.contains(&key) || self.is_released(key) {
            return false;
        }
        let recent = self.snapshot_taken.get(&key).is_some_and(|(first, last)| {
            let interval = if first.elapsed() < YOUNG_PROCESS {
                YOUNG_REFRESH_INTERVAL
            } else {
                REFRESH_INTERVAL
            };
            last.elapsed() < interval
        });
        // A snapshot of the loader at work is retaken at once: the libraries are on their way.
        let recent = recent
            && !self
                .snapshots
                .get(key)
                .is_some_and(|snapshot| self.only_loader_mapped(snapshot));
        let other_program = self
            .snapshots
            .get(key)
            .is_some_and(|s| !s.same_program(key.pid));
        !recent && !other_program && self.take_snapshot(key).is_ok()
    }

    /// Where `address` lies in process `key`: the snapshot is read again first if the address is
    /// outside it (the process may have mapped it since, or never been snapshotted).
    /// A module found is opened again if it was closed for the descriptor budget (see
    /// [`ModuleTable`]); if it cannot be, the namer says so for its addresses.
    pub fn locate(&mut self, key: ProcessKey, address: u64) -> UserLocation {
        let mut location = match self.snapshots.get(key) {
            Some(snapshot) => snapshot.locate(address),
            None => UserLocation::Unmapped,
        };
        if location == UserLocation::Unmapped && self.refresh_snapshot(key) {
            location = match self.snapshots.get(key) {
                Some(snapshot) => snapshot.locate(address),
                None => UserLocation::Unmapped,
            };
        }
        let postponed = !self.ended.contains(&key)
            && self
                .snapshots
                .get(key)
                .is_some_and(|s| s.is_postponed_at(address) && s.same_program(key.pid));
        if postponed
            && self
                .snapshots
                .open_postponed(key, &[address], &mut self.modules, &mut self.budget)
                > 0
        {
            // A sample's address: its module is opened now, within the round's budget.
            self.changed.push(key);
            if let Some(snapshot) = self.snapshots.get(key) {
                location = snapshot.locate(address);
            }
        }
        if let UserLocation::Module { module, .. } = location {
            // Through this process's own mapping first: it maps the module, and may still run.
            let via = self
                .snapshots
                .get(key)
                .and_then(|snapshot| snapshot.mapping_at(address))
                .map(|mapping| (key.pid, mapping.start, mapping.end));
            self.modules.ensure_open(module, via);
        }
        location
    }

    /// Modules closed or released since the last call (see [`ModuleTable::take_dropped`]): a
    /// caller that holds its own [`crate::Namer`] and [`crate::Unwinder`] hands them these.
    pub fn take_dropped_modules(&mut self) -> Vec<crate::modules::DroppedModule> {
        self.modules.take_dropped()
    }

    /// What the module table did so far, for the summary.
    pub fn module_stats(&self) -> crate::ModuleStats {
        self.modules.stats()
    }

    /// Names an address that [`Processes::locate`] found in no module: JIT code a runtime of the
    /// process names, or unknown with the reason.
    pub fn name_unmapped(&mut self, key: ProcessKey, address: u64) -> Symbol {
        let start_ticks = self.start_ticks.get(&key).copied();
        // A released instance's PID may be another process's now: its runtimes are not read.
        let jit = if self.is_released(key) {
            None
        } else {
            self.runtimes.name(key, start_ticks, address)
        };
        if let Some(name) = jit {
            return Symbol::Named(vec![Frame::new(name, FrameKind::Jit)]);
        }
        let reason = if self.runtimes.perf_map_evicted(key) {
            UnknownReason::PerfMapEvicted
        } else if self.snapshots.contains(key) {
            UnknownReason::NotInModule
        } else {
            UnknownReason::ProcessNotSnapshotted
        };
        Symbol::Unknown {
            module: None,
            offset: address,
            reason,
        }
    }

    /// What the unwinder reads of process `key`; its perf map is read further if `refresh` (see
    /// [`Runtimes::perf_map_for_unwinding`]), and not at all once the instance is released (its
    /// PID may be another process's now).
    pub(crate) fn unwind_view(&mut self, key: ProcessKey, refresh: bool) -> UnwindView<'_> {
        let start_ticks = self.start_ticks.get(&key).copied();
        let released = self.is_released(key);
        UnwindView {
            snapshots: &self.snapshots,
            modules: &self.modules,
            perf_map: (!released)
                .then(|| {
                    self.runtimes
                        .perf_map_for_unwinding(key, start_ticks, refresh)
                })
                .flatten(),
        }
    }

    /// Whether process `key` has JIT code that its runtime may still name, in a perf map written at
    /// its exit: its samples are worth building only once it ended.
    /// Looks again for the CPython runtime of a live process whose runtime could not be read for
    /// a reason that may pass (an interpreter caught starting up), at most every so often.
    /// Returns whether it was found now.
    pub fn retry_python(&mut self, key: ProcessKey) -> bool {
        if self.ended.contains(&key) || !self.runtimes.python_retry_due(key) {
            return false;
        }
        match self.snapshots.get(key) {
            Some(snapshot) => {
                self.runtimes
                    .python_snapshotted(key, snapshot.mappings(), &self.modules)
            }
            None => false,
        }
    }

    /// The CPython runtime of process `key`, if it has one that can be read.
    pub fn python_runtime(&self, key: ProcessKey) -> Option<&crate::python::PythonRuntime> {
        self.runtimes.python_runtime(key)
    }

    pub fn python_status(&self, key: ProcessKey) -> crate::PythonStatus {
        self.runtimes.python_status(key)
    }

    /// Names the Python frames a sample of process `key` walked (see `python_runtime`).
    pub fn python_stack(
        &mut self,
        key: ProcessKey,
        raw: &crate::RawPythonStack,
    ) -> crate::PythonStack {
        self.runtimes.python_stack(key, raw)
    }

    pub fn awaits_perf_map(&self, key: ProcessKey) -> bool {
        !self.is_released(key) && self.runtimes.awaits_perf_map(key)
    }

    pub fn modules(&self) -> &ModuleTable {
        &self.modules
    }

    pub fn snapshots(&self) -> &ProcessTable {
        &self.snapshots
    }

    /// What perf maps cost that was not used (over the size or entry limits).
    pub fn jit_stats(&self) -> JitStats {
        self.runtimes.jit_stats()
    }

    /// What the readers of Python code objects did, for `-v`.
    pub fn python_stats(&self) -> crate::CodeReaderStats {
        self.runtimes.python_stats()
    }

    /// How many entries each cache holds, for the debug log of long runs.
    pub fn cache_sizes(&self) -> String {
        format!(
            "{} modules ({} of {} descriptors), {} process snapshots, {} ended, {} ranges of released instances, {} start times, \
             {} snapshot times",
            self.modules.len(),
            self.modules.descriptors().0,
            self.modules.descriptors().1,
            self.snapshots.len(),
            self.ended.len(),
            self.released.ranges(),
            self.start_ticks.len(),
            self.snapshot_taken.len(),
        )
    }

    /// Entries kept for the processes' runtimes, for the debug log.
    pub fn runtime_sizes(&self) -> String {
        self.runtimes.sizes()
    }

    /// See [`crate::Symbolizer::shrink_tables`].
    pub fn shrink_tables(&mut self) {
        self.snapshots.shrink_tables();
        self.runtimes.shrink_tables();
        self.snapshot_taken.shrink_if_sparse();
        self.changed.shrink_if_sparse();
        self.ended.shrink_if_sparse();
        self.start_ticks.shrink_if_sparse();
        self.postponed.shrink_if_sparse();
        self.records_waiting.shrink_if_sparse();
    }
}
