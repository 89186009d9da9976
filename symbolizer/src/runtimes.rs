//! The language runtimes inside each profiled process: what names the code a process made itself,
//! which no mapped module holds.
//!
//! Today that is the perf map a JIT writes (see `jit`); an interpreter's frame reader (Python's)
//! belongs next to it in [`ProcessRuntimes`]. Everything here is kept per process instance, with the
//! process (see `processes`), and dropped in one piece when the instance is released, so a runtime
//! added later inherits the same bound: the processes alive at once. This module only reads what
//! a process wrote; when it may read (the instance is not released, its PID is still its own) is
//! decided by `processes`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::jit::{self, JitStats, PerfMapBudget, ProcessPerfMap};
use crate::modules::ModuleTable;
use crate::perf_map::PerfMap;
use crate::process::{Mapping, ProcessKey};
use crate::python::{CodeReaderStats, PythonRuntime};
use crate::python_runtime::{ProcessPython, PythonStatus};
use crate::python_stack::{PythonStack, RawPythonStack};
use crate::tables::ShrinkSparse;

/// What runs inside one process instance besides its modules.
#[derive(Default)]
pub(crate) struct ProcessRuntimes {
    /// The perf map of a JIT (Node.js, Python `-X perf`, JVM agents), if the process writes one.
    perf_map: ProcessPerfMap,
    /// Its CPython interpreter, if it runs one.
    python: ProcessPython,
}

/// The runtimes of every process instance not yet released.
pub(crate) struct Runtimes {
    /// Most bytes read from one process's perf map (`--max-perf-map-size`).
    max_perf_map_bytes: u64,
    processes: HashMap<ProcessKey, ProcessRuntimes>,
    /// What all perf maps together may read and keep (see `jit`).
    budget: PerfMapBudget,
    /// What the perf maps of forgotten instances did not use, for [`Runtimes::jit_stats`].
    forgotten: JitStats,
    /// What the Python readers of forgotten instances did, for [`Runtimes::python_stats`].
    forgotten_python: CodeReaderStats,
}

impl Runtimes {
    pub fn new(max_perf_map_bytes: u64, max_perf_maps_total_bytes: u64) -> Self {
        Runtimes {
            max_perf_map_bytes,
            processes: HashMap::new(),
            budget: PerfMapBudget::new(max_perf_maps_total_bytes, jit::MAX_PERF_MAPS_TOTAL_ENTRIES),
            forgotten: JitStats::default(),
            forgotten_python: CodeReaderStats::default(),
        }
    }

    /// See [`crate::Symbolizer::shrink_tables`].
    pub fn shrink_tables(&mut self) {
        self.processes.shrink_if_sparse();
    }

    fn of(&mut self, key: ProcessKey) -> &mut ProcessRuntimes {
        self.processes.entry(key).or_default()
    }

    /// The process was just snapshotted (it is alive, and `start_ticks` says it is the sampled
    /// one when known): finds the runtimes it has started so far. `jit_code`: the snapshot has
    /// anonymous executable memory.
    pub fn snapshotted(&mut self, key: ProcessKey, start_ticks: Option<u64>, jit_code: bool) {
        self.of(key).perf_map.open(key, start_ticks, jit_code);
    }

    /// The process was snapshotted with these mappings: looks for its CPython runtime until found.
    /// Returns whether it was found now.
    pub fn python_snapshotted(
        &mut self,
        key: ProcessKey,
        mappings: &[Mapping],
        modules: &ModuleTable,
    ) -> bool {
        self.of(key).python.snapshotted(key, mappings, modules)
    }

    /// Whether process `key`'s runtime is worth looking for again (see `python_runtime`).
    pub fn python_retry_due(&self, key: ProcessKey) -> bool {
        self.processes
            .get(&key)
            .is_some_and(|runtimes| runtimes.python.retry_due())
    }

    /// The CPython runtime of process `key`, if it has one that can be read.
    pub fn python_runtime(&self, key: ProcessKey) -> Option<&PythonRuntime> {
        self.processes.get(&key)?.python.runtime()
    }

    pub fn python_status(&self, key: ProcessKey) -> PythonStatus {
        self.processes
            .get(&key)
            .map_or(PythonStatus::NotPython, |runtimes| runtimes.python.status())
    }

    /// Names the Python frames a sample of process `key` walked.
    pub fn python_stack(&mut self, key: ProcessKey, raw: &RawPythonStack) -> PythonStack {
        self.of(key).python.name(raw)
    }

    /// Whether names of process `key`'s JIT code may still come from a perf map it has not written
    /// yet (see [`ProcessPerfMap::awaited`]).
    pub fn awaits_perf_map(&self, key: ProcessKey) -> bool {
        self.processes
            .get(&key)
            .is_some_and(|runtimes| runtimes.perf_map.awaited())
    }

    /// The instance exec'd or exited: what it wrote stays readable, nothing is opened again by PID.
    pub fn instance_ended(&mut self, key: ProcessKey) {
        self.of(key).perf_map.instance_ended();
    }

    /// Drops everything about a released instance but its counters (what its perf map did not use,
    /// what its Python reader did).
    pub fn forget(&mut self, key: ProcessKey) {
        if let Some(mut runtimes) = self.processes.remove(&key) {
            self.forgotten.add(&runtimes.perf_map.stats());
            self.forgotten_python.add(&runtimes.python.stats());
            runtimes.perf_map.release(&mut self.budget);
        }
    }

    /// Whether process `key`'s perf map was dropped for the shared budget.
    pub fn perf_map_evicted(&self, key: ProcessKey) -> bool {
        self.processes
            .get(&key)
            .is_some_and(|r| r.perf_map.is_evicted())
    }

    /// After a read of `key`'s map was refused for want of room: drops the least recently used
    /// other maps until a chunk fits again. Returns whether any was dropped (so reading may go on).
    fn make_room(&mut self, key: ProcessKey) -> bool {
        if !self.budget.take_exhausted() {
            return false;
        }
        let mut evicted = false;
        while self.budget.wants_room() {
            let oldest = self
                .processes
                .iter()
                .filter(|(other, _)| **other != key)
                .filter_map(|(other, r)| Some((r.perf_map.last_used()?, *other)))
                .min();
            let Some((_, oldest)) = oldest else {
                break;
            };
            if let Some(runtimes) = self.processes.get_mut(&oldest) {
                runtimes.perf_map.evict(&mut self.budget);
                evicted = true;
            }
        }
        evicted
    }

    /// The name a runtime gives `address` in process `key`, if any.
    pub fn name(
        &mut self,
        key: ProcessKey,
        start_ticks: Option<u64>,
        address: u64,
    ) -> Option<Arc<str>> {
        let max_bytes = self.max_perf_map_bytes;
        let runtimes = self.processes.entry(key).or_default();
        let found =
            (runtimes.perf_map).lookup(key, start_ticks, address, max_bytes, &mut self.budget);
        if found.is_some() || !self.make_room(key) {
            return found;
        }
        let runtimes = self.processes.entry(key).or_default();
        (runtimes.perf_map).lookup(key, start_ticks, address, max_bytes, &mut self.budget)
    }

    /// The perf map of process `key` for the unwinder (see [`ProcessPerfMap::for_unwinding`]).
    pub fn perf_map_for_unwinding(
        &mut self,
        key: ProcessKey,
        start_ticks: Option<u64>,
        refresh: bool,
    ) -> Option<&mut PerfMap> {
        let max_bytes = self.max_perf_map_bytes;
        let runtimes = self.processes.entry(key).or_default();
        // Read (and refused room) first; the map is handed out after any eviction.
        (runtimes.perf_map).for_unwinding(key, start_ticks, refresh, max_bytes, &mut self.budget);
        if self.make_room(key) {
            let runtimes = self.processes.entry(key).or_default();
            (runtimes.perf_map).for_unwinding(
                key,
                start_ticks,
                refresh,
                max_bytes,
                &mut self.budget,
            );
        }
        let runtimes = self.processes.entry(key).or_default();
        (runtimes.perf_map).for_unwinding(key, start_ticks, false, max_bytes, &mut self.budget)
    }

    /// Totals over every perf map, forgotten ones included.
    pub fn jit_stats(&self) -> JitStats {
        let mut stats = self.forgotten;
        for runtimes in self.processes.values() {
            stats.add(&runtimes.perf_map.stats());
        }
        stats
    }

    /// What every process's Python reader did, released ones included.
    pub fn python_stats(&self) -> CodeReaderStats {
        let mut stats = self.forgotten_python;
        for runtimes in self.processes.values() {
            stats.add(&runtimes.python.stats());
        }
        stats
    }

    /// Entries per cache, for the debug log.
    pub fn sizes(&self) -> String {
        let code_objects: usize = self.processes.values().map(|r| r.python.cached()).sum();
        format!(
            "{}, {code_objects} Python code objects",
            jit::sizes(self.processes.values().map(|r| &r.perf_map))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::tests::OwnPerfMap;

    /// A released instance's runtimes are dropped whole, and what its perf map did not use stays
    /// counted for the summary.
    #[test]
    fn forgetting_drops_the_runtimes_and_keeps_their_stats() {
        let lines: String = (0..1000u64)
            .map(|i| format!("{:x} 10 f{i}\n", 0x1000 + i * 16))
            .collect();
        let _map = OwnPerfMap::write(&lines);
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 6,
        };
        let mut runtimes = Runtimes::new(4096, u64::MAX);
        assert_eq!(runtimes.name(key, None, 0x1000).as_deref(), Some("f0"));
        assert_eq!(runtimes.name(key, None, 0x1000 + 999 * 16), None);
        let skipped = lines.len() as u64 - 4096;
        assert_eq!(runtimes.jit_stats().bytes_skipped, skipped);
        assert_eq!(
            runtimes.sizes(),
            "1 maps, 0 rejected, 1 attempts, 0 ended, 0 Python code objects"
        );

        runtimes.forget(key);
        assert_eq!(
            runtimes.sizes(),
            "0 maps, 0 rejected, 0 attempts, 0 ended, 0 Python code objects"
        );
        assert_eq!(runtimes.jit_stats().bytes_skipped, skipped);
    }

    /// Eight instances (this process under eight keys) each read a perf map of 1 MiB under a
    /// shared budget of 3 MiB: the least recently used maps are dropped (counted, and their
    /// addresses then say why they are unnamed), never more than the budget is held, and the
    /// instance used last keeps its names. A released instance gives its bytes back.
    #[test]
    fn all_perf_maps_share_one_budget() {
        let lines: String = (0..25_000u64)
            .map(|i| {
                format!(
                    "{:x} 10 function_{i:08}_padded_to_fifty_bytes_\n",
                    0x1000 + i * 16
                )
            })
            .collect();
        assert!(lines.len() > 1 << 20);
        let _map = OwnPerfMap::write(&lines);
        let last = 0x1000 + 24_999 * 16;
        let key = |instance| ProcessKey {
            pid: std::process::id(),
            instance,
        };
        // Room for a chunk of reading plus about one and a half maps.
        let budget = 3 * (lines.len() as u64) / 2 + (4 << 20);
        let mut runtimes = Runtimes::new(u64::MAX, budget);
        for instance in 0..8 {
            assert_eq!(
                runtimes.name(key(instance), None, last).as_deref(),
                Some("function_00024999_padded_to_fifty_bytes_"),
                "instance {instance}"
            );
            assert!(runtimes.budget.bytes() <= budget, "{:?}", runtimes.budget);
        }
        let evicted = runtimes.jit_stats().maps_evicted;
        assert!((4..8).contains(&evicted), "{evicted} maps evicted");
        assert!(runtimes.perf_map_evicted(key(0)));
        assert!(!runtimes.perf_map_evicted(key(7)));
        assert_eq!(
            runtimes.name(key(0), None, last),
            None,
            "an evicted map is not read again"
        );
        let held = runtimes.budget.bytes();
        runtimes.forget(key(7));
        assert!(
            runtimes.budget.bytes() < held,
            "a released map gives its bytes back"
        );
        assert_eq!(runtimes.jit_stats().maps_evicted, evicted);
    }
}
