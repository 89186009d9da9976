//! Snapshots of processes' executable mappings, taken while each process is alive.

use std::collections::HashMap;

use crate::maps::{parse_maps, MapsEntry};
use crate::modules::{open_mapped_file, ModuleId, ModuleTable};
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
    /// (device, inode) of `/proc/PID/exe` when the snapshot was taken: a later read of the maps is
    /// only valid for this instance while the process still runs this program.
    executable_file: Option<(u64, u64)>,
    /// Mappings whose file could not be opened, by display name, so their frames still say where they are.
    unreadable: Vec<(u64, u64, u64, std::sync::Arc<str>)>,
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
        let index = self.mappings.partition_point(|m| m.start <= address);
        if let Some(mapping) = index.checked_sub(1).map(|i| &self.mappings[i]) {
            if address < mapping.end {
                return UserLocation::Module {
                    module: mapping.module,
                    file_offset: address - mapping.start + mapping.offset,
                };
            }
        }
        for (start, end, offset, name) in &self.unreadable {
            if (*start..*end).contains(&address) {
                return UserLocation::UnreadableModule {
                    name: name.clone(),
                    file_offset: address - start + offset,
                };
            }
        }
        UserLocation::Unmapped
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub fn executable(&self) -> Option<ModuleId> {
        self.executable
    }

    /// Whether `pid` still runs the program this snapshot was taken of.
    pub fn same_program(&self, pid: u32) -> bool {
        self.executable_file.is_some() && executable_file(pid) == self.executable_file
    }
}

/// (device, inode) of the process's main executable.
fn executable_file(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Snapshots by process instance.
#[derive(Debug, Default)]
pub struct ProcessTable {
    processes: HashMap<ProcessKey, ProcessSnapshot>,
    vdso: Option<ModuleId>,
}

impl ProcessTable {
    pub fn new(vdso: Option<ModuleId>) -> Self {
        ProcessTable {
            processes: HashMap::new(),
            vdso,
        }
    }

    pub fn get(&self, key: ProcessKey) -> Option<&ProcessSnapshot> {
        self.processes.get(&key)
    }

    pub fn contains(&self, key: ProcessKey) -> bool {
        self.processes.contains_key(&key)
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
    pub fn snapshot(
        &mut self,
        key: ProcessKey,
        modules: &mut ModuleTable,
    ) -> Result<&ProcessSnapshot, Error> {
        let pid = key.pid;
        let path = format!("/proc/{pid}/maps");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadMaps {
            pid,
            path: path.into(),
            source,
        })?;
        let mut snapshot = self.snapshot_from_entries(pid, parse_maps(&text), modules);
        snapshot.executable_file = executable_file(pid);
        snapshot.executable = snapshot.executable_file.and_then(|file| modules.find(file));
        self.processes.insert(key, snapshot);
        Ok(&self.processes[&key])
    }

    fn snapshot_from_entries(
        &self,
        pid: u32,
        entries: Vec<MapsEntry>,
        modules: &mut ModuleTable,
    ) -> ProcessSnapshot {
        let mut snapshot = ProcessSnapshot::default();
        for entry in entries.into_iter().filter(|e| e.executable) {
            if entry.path == "[vdso]" {
                if let Some(module) = self.vdso {
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
                continue; // anonymous executable memory: JIT code, trampolines
            }
            let opened = modules.get_or_open(entry.dev, entry.inode, &entry.path, pid, || {
                open_mapped_file(pid, entry.start, entry.end, &entry.path, entry.inode)
            });
            match opened {
                Ok(module) => snapshot.mappings.push(Mapping {
                    start: entry.start,
                    end: entry.end,
                    offset: entry.offset,
                    module,
                }),
                Err(error) => {
                    log::debug!("{}", crate::error::chain(&error));
                    let name = std::path::Path::new(&entry.path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| entry.path.clone());
                    snapshot
                        .unreadable
                        .push((entry.start, entry.end, entry.offset, name.into()));
                }
            }
        }
        snapshot.mappings.sort_by_key(|m| m.start);
        snapshot
    }
}
