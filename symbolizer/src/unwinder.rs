//! The unwinder: rebuilds user stacks from registers and a stack copy, and says where a process's
//! code has no frame pointers (what `--unwind auto` plans from).
//!
//! It reads the processes' snapshots, modules and perf maps, given as arguments ([`Processes`]),
//! and keeps only what it derives from them: each module's unwind information, shared by all
//! processes, and a per-process plan placing those modules, rebuilt whenever the process's snapshot
//! is retaken. It does not own process lifecycle (framehop's `Unwinder` stands apart from module
//! discovery the same way): its holder drops a process's plan when the process ends
//! ([`Unwinder::forget`]).

use std::sync::Arc;

use crate::modules::ModuleId;
use crate::process::{ProcessKey, UserLocation};
use crate::processes::Processes;
use crate::unwind::{FramePointers, StackCopy, Unwinders, UnwoundStack, UserRegisters};

/// Unwind information per module (bounded by the modules), a plan per process instance (bounded by
/// the processes alive at once, given [`Unwinder::forget`] when each ends).
#[derive(Default)]
pub struct Unwinder {
    unwinders: Unwinders,
}

/// Where a process runs code without frame pointers, for `--unwind auto`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FramelessCode {
    /// Every module keeps frame pointers.
    None,
    /// These mappings (sorted, disjoint) hold frameless code.
    Mappings(Vec<FramelessMapping>),
    /// The main executable itself is frameless: unwind everything with DWARF.
    Everywhere,
}

/// One mapping of a process with frameless code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramelessMapping {
    pub range: std::ops::Range<u64>,
    /// An address minus `bias` is the module's own (file) address.
    pub bias: u64,
    /// `None`: the whole mapping is frameless. Otherwise only these functions of the module (its
    /// own addresses, sorted, disjoint), shared by every process mapping it.
    pub functions: Option<(ModuleId, Arc<[std::ops::Range<u64>]>)>,
}

impl FramelessMapping {
    pub fn contains(&self, address: u64) -> bool {
        if !self.range.contains(&address) {
            return false;
        }
        match &self.functions {
            None => true,
            Some((_, functions)) => {
                let svma = address.wrapping_sub(self.bias);
                let after = functions.partition_point(|f| f.start <= svma);
                after > 0 && functions[after - 1].contains(&svma)
            }
        }
    }
}

/// Whether `address` is in frameless code of these mappings (sorted, disjoint).
pub fn is_frameless(mappings: &[FramelessMapping], address: u64) -> bool {
    let after = mappings.partition_point(|m| m.range.start <= address);
    after > 0 && mappings[after - 1].contains(address)
}

impl Unwinder {
    /// Rebuilds a user stack of process `key` from its registers and a copy of its top, with the
    /// modules' unwind information (see the `unwind` module).
    pub fn unwind(
        &mut self,
        processes: &mut Processes,
        key: ProcessKey,
        registers: UserRegisters,
        stack: StackCopy<'_>,
    ) -> UnwoundStack {
        let view = processes.unwind_view(key, false);
        let unwound = self.unwinders.unwind(
            key,
            registers,
            stack,
            view.snapshots,
            view.modules,
            view.perf_map,
        );
        // A frame outside the snapshot and the perf map means code mapped since they were read (the
        // snapshot of a process seen while the dynamic loader ran has no libc yet; a JIT writes its
        // map as it compiles): without it the unwind may have gone wrong from there. Read both again
        // and unwind again.
        let view = processes.unwind_view(key, false);
        let outside_snapshot = match view.snapshots.get(key) {
            Some(snapshot) => {
                let mut jit = view.perf_map;
                unwound.frames.iter().any(|&a| {
                    snapshot.locate(a) == UserLocation::Unmapped
                        && jit.as_mut().is_none_or(|map| map.lookup(a).is_none())
                })
            }
            None => true,
        };
        if outside_snapshot && processes.refresh_snapshot(key) {
            let view = processes.unwind_view(key, true);
            return self.unwinders.unwind(
                key,
                registers,
                stack,
                view.snapshots,
                view.modules,
                view.perf_map,
            );
        }
        unwound
    }

    /// Which code of a snapshotted process lacks frame pointers; `None` if there is no snapshot.
    pub fn frameless_code(
        &mut self,
        processes: &Processes,
        key: ProcessKey,
    ) -> Option<FramelessCode> {
        let snapshot = processes.snapshots().get(key)?;
        let executable = snapshot.executable();
        let mut mappings = Vec::new();
        for mapping in snapshot.mappings() {
            let Some(info) = self.unwinders.elf_info(mapping.module, processes.modules()) else {
                continue;
            };
            let functions = match &info.frame_pointers {
                FramePointers::Frameless if Some(mapping.module) == executable => {
                    return Some(FramelessCode::Everywhere);
                }
                FramePointers::Frameless => None,
                FramePointers::Kept { frameless } if frameless.is_empty() => continue,
                FramePointers::Kept { frameless } => Some((mapping.module, Arc::clone(frameless))),
            };
            let bias = info.base_address(mapping.start, mapping.offset);
            let Some(bias) = bias.or(functions.is_none().then_some(0)) else {
                continue;
            };
            mappings.push(FramelessMapping {
                range: mapping.start..mapping.end,
                bias,
                functions,
            });
        }
        mappings.sort_unstable_by_key(|m| m.range.start);
        Some(if mappings.is_empty() {
            FramelessCode::None
        } else {
            FramelessCode::Mappings(mappings)
        })
    }

    /// Drops what was read from modules released since (see [`crate::ModuleTable`]); a closed
    /// module's unwind information stays, it is the same file when reopened.
    pub fn forget_modules(&mut self, dropped: &[crate::modules::DroppedModule]) {
        self.unwinders
            .forget_modules(dropped.iter().filter(|m| m.released).map(|m| m.id));
    }

    /// Drops the file pages unwinding left resident: call now and then (each checkpoint).
    /// See [`crate::Symbolizer::shrink_tables`].
    pub fn shrink_tables(&mut self) {
        self.unwinders.shrink_tables();
    }

    pub fn drop_file_pages(&self) {
        self.unwinders.drop_file_pages();
    }

    /// Drops the plan of a process that ended (its snapshot is final; its stacks are unwound).
    pub fn forget(&mut self, key: ProcessKey) {
        self.unwinders.forget(key);
    }

    /// Entries per cache, for the debug log.
    pub fn cache_sizes(&self) -> String {
        self.unwinders.sizes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process's plan is built from its snapshot at its first stack, kept while the snapshot
    /// stands, rebuilt from the new one once the snapshot is retaken (a library may have been
    /// mapped since), and dropped when the process is forgotten.
    #[test]
    fn plan_follows_the_snapshot_it_was_built_from() {
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 1,
        };
        let mut processes = Processes::new(
            crate::jit::DEFAULT_MAX_PERF_MAP_BYTES,
            crate::jit::DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES,
        )
        .expect("processes");
        processes.process_seen(key).expect("own snapshot");
        let generation = |processes: &Processes| {
            let snapshot = processes.snapshots().get(key).expect("snapshot");
            snapshot.generation()
        };
        // This very function's code, which the snapshot maps: no reason to retake it.
        let registers = UserRegisters {
            ip: plan_follows_the_snapshot_it_was_built_from as fn() as usize as u64,
            sp: 0,
            bp: 0,
            general: None,
        };
        let mut unwinder = Unwinder::default();
        unwinder.unwind(
            &mut processes,
            key,
            registers,
            StackCopy {
                start: 0,
                bytes: &[],
            },
        );
        let first = generation(&processes);
        assert_eq!(unwinder.unwinders.built_from(key), Some(first));

        // Past the least time between two reads of a process's map, young or not.
        std::thread::sleep(crate::processes::REFRESH_INTERVAL);
        assert!(processes.refresh_snapshot(key), "snapshot not retaken");
        let second = generation(&processes);
        assert_ne!(second, first);
        unwinder.unwind(
            &mut processes,
            key,
            registers,
            StackCopy {
                start: 0,
                bytes: &[],
            },
        );
        assert_eq!(unwinder.unwinders.built_from(key), Some(second));

        unwinder.forget(key);
        assert_eq!(unwinder.unwinders.built_from(key), None);
    }
}
