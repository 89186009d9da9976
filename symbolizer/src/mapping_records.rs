//! Module knowledge from mapping records: the executable mappings the kernel reported as they were
//! made (perf's `PERF_RECORD_MMAP2`, with the file's build-id or device and inode), turned into the
//! same snapshot a read of `/proc/PID/maps` gives. A process that lives a few milliseconds is gone
//! long before a busy profiler reads its maps; its records are not, so its frames are still named.
//!
//! A record names a file by the path the process saw when it mapped it, which may lead elsewhere
//! by now (replaced, deleted, another mount namespace) and which the process chose: a file is used
//! only once it is shown to be the one mapped (same build-id, or same device and inode), opened
//! under the rules of `untrusted`, first through `/proc/PID/map_files` (the exact file, while the
//! process lives), then inside the process's root, then on the host. Everything kept is bounded
//! (see the constants), and every mapping left out is counted by reason for the summary.
//!
//! It must not decide when records apply to which process instance (the capture side orders them),
//! nor name anything: it only adds to snapshots.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::modules::{FileKey, ModuleId, ModuleTable};
#[cfg(test)]
use crate::process::merge_ranges;
pub use crate::process::MAX_RECORDED_PER_PROCESS;
use crate::process::{Mapping, ProcessKey, RecordedParts};
use crate::untrusted::{self, Follow};

/// How a mapping record identifies the file it maps, as the kernel saw it at the `mmap`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileIdentity {
    /// The file's GNU build-id (`PERF_RECORD_MISC_MMAP_BUILD_ID`, Linux 5.12+, when the kernel
    /// could read it).
    BuildId(Vec<u8>),
    /// Device (in `st_dev`'s encoding), inode, and the inode's generation (which tells a new file
    /// from a deleted one whose inode number it reuses; not every file system lets userspace read
    /// it back, so only the cache keys on it).
    Inode {
        dev: u64,
        inode: u64,
        generation: u64,
    },
}

/// One executable mapping as a record reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedMapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// As the kernel printed it: a path in the process's view, `//anon` for anonymous memory, or a
    /// pseudo-name such as `[vdso]`. Chosen by the process (any bytes): never trusted as more than
    /// a place to look.
    pub path: Arc<Path>,
    pub identity: Option<FileIdentity>,
    /// The program's own executable (the first file the kernel mapped at its exec).
    pub main_executable: bool,
}

impl RecordedMapping {
    /// Bytes this record holds, for the capture side's budget.
    pub fn cost(&self) -> usize {
        std::mem::size_of::<Self>() + self.path.as_os_str().len() + 32
    }
}

/// Files resolved through records, remembered so a program run a thousand times is opened once.
const MAX_RESOLVED: usize = 16384;
/// Bytes read from the start of a file to find its build-id note: the kernel itself only looks
/// that far (the notes follow the program headers).
const BUILD_ID_PREFIX_BYTES: u64 = 64 << 10;

/// Why the file of a recorded mapping was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unusable {
    /// No file at the path any more (deleted, or the process's mount namespace is gone).
    Gone,
    /// A file is at the path, but not the one mapped (replaced since, or another namespace's).
    Replaced,
    /// The file could not be opened or read.
    Unreadable,
    /// The record carried no build-id, device or inode to check the file against.
    NoIdentity,
}

impl Unusable {
    pub fn describe(self) -> &'static str {
        match self {
            Unusable::Gone => "file no longer at its path",
            Unusable::Replaced => "another file at its path now (replaced, or another namespace)",
            Unusable::Unreadable => "file could not be read",
            Unusable::NoIdentity => "record without build-id or inode to check the file",
        }
    }
}

/// Where a process instance's modules came from, for the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provenance {
    /// Its `/proc/PID/maps` was read (mapping records may have added to it).
    Proc,
    /// Only mapping records: the process was gone before its maps could be read.
    Records,
    /// Neither yet: gone before its maps were read, and no record named a usable file.
    None { had_records: bool },
}

/// How process instances got their modules, for the summary (`-v`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamingStats {
    /// Instances whose `/proc/PID/maps` was read while they lived.
    pub from_proc: u64,
    /// ... of which mapping records completed the snapshot (mappings made after it was read).
    pub completed_by_records: u64,
    /// Instances known only from mapping records (gone before their maps could be read).
    pub from_records: u64,
    /// Instances with neither: gone before their maps were read, and no mapping record of them
    /// (started before the recording, or their records were lost).
    pub unnamed_without_records: u64,
    /// Instances gone before their maps were read whose recorded files were all unusable.
    pub unnamed_files_unusable: u64,
    /// Recorded file mappings left out, by reason.
    pub unusable: Vec<(Unusable, u64)>,
    /// Recorded mappings past [`MAX_RECORDED_PER_PROCESS`].
    pub over_limit: u64,
}

/// The mapping records' side of the symbolizer: resolved files and per-instance provenance.
#[derive(Default)]
pub(crate) struct MappingRecords {
    resolved: HashMap<(Arc<Path>, FileIdentity), ModuleId>,
    provenance: HashMap<ProcessKey, (Provenance, bool)>,
    /// Counts of instances already released, and of mappings left out.
    totals: NamingStats,
    unusable: HashMap<Unusable, u64>,
}

impl MappingRecords {
    /// A `/proc` snapshot of `key` was taken (`true`) or could not be (`false`).
    pub fn proc_snapshot(&mut self, key: ProcessKey, taken: bool) {
        let entry = self
            .provenance
            .entry(key)
            .or_insert((Provenance::None { had_records: false }, false));
        if taken {
            entry.0 = Provenance::Proc;
        }
    }

    /// Turns `records` of instance `key` (alive or not: `pid` is only a hint where to look) into
    /// snapshot parts, opening new files into `modules`. `has_snapshot`: the instance already has a
    /// snapshot those parts complete.
    pub fn resolve(
        &mut self,
        key: ProcessKey,
        records: &[RecordedMapping],
        modules: &mut ModuleTable,
        vdso: Option<ModuleId>,
    ) -> RecordedParts {
        let mut parts = RecordedParts::default();
        for record in records {
            let path = record.path.as_os_str().as_encoded_bytes();
            if path == b"[vdso]" {
                if let Some(module) = vdso {
                    parts.mappings.push(mapping(record, module));
                }
            } else if path.is_empty() || path == b"//anon" || path.starts_with(b"[anon:") {
                parts.anonymous.push(record.start..record.end);
            } else if path.starts_with(b"/") {
                match self.module_of(key.pid, record, modules) {
                    Ok(module) => {
                        if record.main_executable {
                            parts.executable = Some(module);
                        }
                        parts.mappings.push(mapping(record, module));
                    }
                    Err(why) => {
                        *self.unusable.entry(why).or_default() += 1;
                        log::debug!(
                            "recorded mapping {} of process {} not used: {}",
                            record.path.display(),
                            key.pid,
                            why.describe()
                        );
                        parts.unreadable.push((
                            record.start..record.end,
                            record.offset,
                            display_name(record),
                        ));
                    }
                }
            }
            // Other pseudo-mappings (`[vsyscall]`, `[uprobes]`) hold no code of the process's own.
        }
        parts
    }

    /// `parts` of `key` were merged into its snapshot; `added` file mappings were new to it.
    pub fn merged(&mut self, key: ProcessKey, parts: &RecordedParts, added: usize, over: usize) {
        self.totals.over_limit += over as u64;
        let entry = self
            .provenance
            .entry(key)
            .or_insert((Provenance::None { had_records: false }, false));
        match entry.0 {
            Provenance::Proc => entry.1 |= added > 0,
            _ if !parts.mappings.is_empty() => entry.0 = Provenance::Records,
            Provenance::None { .. } => entry.0 = Provenance::None { had_records: true },
            Provenance::Records => {}
        }
    }

    /// The instance is released: its provenance goes into the totals.
    pub fn release(&mut self, key: ProcessKey) {
        if let Some(provenance) = self.provenance.remove(&key) {
            count(&mut self.totals, provenance);
        }
    }

    pub fn stats(&self) -> NamingStats {
        let mut stats = self.totals.clone();
        for &provenance in self.provenance.values() {
            count(&mut stats, provenance);
        }
        let mut unusable: Vec<(Unusable, u64)> =
            self.unusable.iter().map(|(k, v)| (*k, *v)).collect();
        unusable.sort();
        stats.unusable = unusable;
        stats
    }

    /// The module of a recorded file mapping, if a file shown to be the mapped one can be opened.
    fn module_of(
        &mut self,
        pid: u32,
        record: &RecordedMapping,
        modules: &mut ModuleTable,
    ) -> Result<ModuleId, Unusable> {
        let Some(identity) = &record.identity else {
            return Err(Unusable::NoIdentity);
        };
        let cache_key = (Arc::clone(&record.path), identity.clone());
        // A cached module may have been released since (no live process mapped it): open again.
        if let Some(&module) = self.resolved.get(&cache_key) {
            if modules.contains(module) {
                return Ok(module);
            }
        }
        let (file, opened) = open_recorded(pid, record, identity)?;
        let meta = file.metadata().map_err(|_| Unusable::Unreadable)?;
        let mapped_path = record.path.to_string_lossy();
        let module = modules
            .get_or_open(
                Some(FileKey::of(&meta)),
                &mapped_path,
                pid,
                (record.start, record.end, meta.ino()),
                || Ok((file, opened)),
            )
            .map_err(|error| {
                log::debug!("{}", crate::error::chain(&error));
                Unusable::Unreadable
            })?;
        if self.resolved.len() >= MAX_RESOLVED {
            self.resolved.clear();
        }
        self.resolved.insert(cache_key, module);
        Ok(module)
    }
}

fn count(stats: &mut NamingStats, (provenance, completed): (Provenance, bool)) {
    match provenance {
        Provenance::Proc => {
            stats.from_proc += 1;
            stats.completed_by_records += u64::from(completed);
        }
        Provenance::Records => stats.from_records += 1,
        Provenance::None { had_records: false } => stats.unnamed_without_records += 1,
        Provenance::None { had_records: true } => stats.unnamed_files_unusable += 1,
    }
}

fn mapping(record: &RecordedMapping, module: ModuleId) -> Mapping {
    Mapping {
        start: record.start,
        end: record.end,
        offset: record.offset,
        module,
    }
}

fn display_name(record: &RecordedMapping) -> Arc<str> {
    let name = record
        .path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_else(|| record.path.to_string_lossy());
    Arc::from(name.as_ref())
}

/// Opens the file a record names, trying where it is most likely the mapped one first; returns it
/// with the path it was opened by, or why none would do.
fn open_recorded(
    pid: u32,
    record: &RecordedMapping,
    identity: &FileIdentity,
) -> Result<(File, PathBuf), Unusable> {
    let relative = record.path.strip_prefix("/").unwrap_or(&record.path);
    // In order: a magic link to the exact file while the process lives (its PID may be another
    // process's by now: the identity check catches that), the path inside the process's root, the
    // path on the host (the process and its namespace may be gone).
    let open = |place: usize| -> (PathBuf, std::io::Result<File>) {
        match place {
            0 => {
                let map_file = PathBuf::from(format!(
                    "/proc/{pid}/map_files/{:x}-{:x}",
                    record.start, record.end
                ));
                let file = untrusted::open(&map_file, Follow::Yes);
                (map_file, file)
            }
            1 => (
                PathBuf::from(format!("/proc/{pid}/root")).join(relative),
                untrusted::open_in_root(pid, &record.path, Follow::No),
            ),
            _ => (
                record.path.to_path_buf(),
                untrusted::open(&record.path, Follow::No),
            ),
        }
    };
    let mut why = Unusable::Gone;
    for place in 0..3 {
        let (path, opened) = open(place);
        match opened {
            Ok(file) => match same_file(&file, identity) {
                Ok(true) => return Ok((file, path)),
                Ok(false) => why = why.max(Unusable::Replaced),
                Err(_) => why = why.max(Unusable::Unreadable),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            // No such process any more, or not allowed to look.
            Err(_) => {}
        }
    }
    Err(why)
}

/// Whether `file` is the file the record identifies.
fn same_file(file: &File, identity: &FileIdentity) -> std::io::Result<bool> {
    match identity {
        FileIdentity::Inode { dev, inode, .. } => {
            let meta = file.metadata()?;
            Ok(meta.dev() == *dev && meta.ino() == *inode)
        }
        FileIdentity::BuildId(expected) => Ok(build_id(file)?.as_deref() == Some(&expected[..])),
    }
}

/// The GNU build-id of an ELF file, from the notes of its program headers within the first
/// [`BUILD_ID_PREFIX_BYTES`] (a bounded read: the file is the profiled process's to choose).
fn build_id(file: &File) -> std::io::Result<Option<Vec<u8>>> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let mut prefix = Vec::new();
    file.take(BUILD_ID_PREFIX_BYTES).read_to_end(&mut prefix)?;
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(&prefix[..]) else {
        return Ok(None);
    };
    let Ok(endian) = header.endian() else {
        return Ok(None);
    };
    let Ok(segments) = header.program_headers(endian, &prefix[..]) else {
        return Ok(None);
    };
    for segment in segments {
        let Ok(Some(mut notes)) = segment.notes(endian, &prefix[..]) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == object::elf::ELF_NOTE_GNU
                && note.n_type(endian) == object::elf::NT_GNU_BUILD_ID
            {
                return Ok(Some(note.desc().to_vec()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, identity: Option<FileIdentity>) -> RecordedMapping {
        RecordedMapping {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            path: Arc::from(Path::new(path)),
            identity,
            main_executable: true,
        }
    }

    fn own_exe() -> (PathBuf, std::fs::Metadata) {
        let path = std::fs::canonicalize("/proc/self/exe").expect("own executable");
        let meta = std::fs::metadata(&path).expect("stat own executable");
        (path, meta)
    }

    /// A file at the recorded path with the recorded device and inode (or build-id) is used; a
    /// file whose identity differs is not, and is counted as replaced; a missing one as gone.
    #[test]
    fn files_are_checked_against_the_record() {
        let (path, meta) = own_exe();
        let path = path.to_str().expect("UTF-8 path");
        let inode = |inode| {
            Some(FileIdentity::Inode {
                dev: meta.dev(),
                inode,
                generation: 0,
            })
        };
        let key = ProcessKey {
            pid: u32::MAX,
            instance: 1,
        };
        let mut modules = ModuleTable::default();
        let mut records = MappingRecords::default();
        let parts = records.resolve(key, &[record(path, inode(meta.ino()))], &mut modules, None);
        assert_eq!(parts.mappings.len(), 1, "{:?}", records.stats());
        assert_eq!(parts.executable, Some(parts.mappings[0].module));

        let parts = records.resolve(
            key,
            &[record(path, inode(meta.ino() + 1))],
            &mut modules,
            None,
        );
        assert!(parts.mappings.is_empty());
        assert_eq!(parts.unreadable.len(), 1);
        let missing = record("/nonexistent/emberprof-test", inode(1));
        let no_identity = record(path, None);
        records.resolve(key, &[missing, no_identity], &mut modules, None);
        assert_eq!(
            records.stats().unusable,
            [
                (Unusable::Gone, 1),
                (Unusable::Replaced, 1),
                (Unusable::NoIdentity, 1)
            ]
        );

        let own_id = build_id(&File::open(path).expect("open own executable"))
            .expect("read own executable")
            .expect("test binaries have a build-id");
        let parts = records.resolve(
            key,
            &[record(path, Some(FileIdentity::BuildId(own_id)))],
            &mut modules,
            None,
        );
        assert_eq!(parts.mappings.len(), 1);
        let parts = records.resolve(
            key,
            &[record(path, Some(FileIdentity::BuildId(vec![1; 20])))],
            &mut modules,
            None,
        );
        assert!(parts.mappings.is_empty());
    }

    /// Anonymous memory and the vDSO are told apart from files; other pseudo-mappings are skipped.
    #[test]
    fn anonymous_and_pseudo_mappings() {
        let key = ProcessKey {
            pid: 1,
            instance: 1,
        };
        let mut modules = ModuleTable::default();
        let mut records = MappingRecords::default();
        let parts = records.resolve(
            key,
            &[
                record("//anon", None),
                record("[anon:v8]", None),
                record("[vsyscall]", None),
                record("[vdso]", None),
            ],
            &mut modules,
            Some(ModuleId(7)),
        );
        assert_eq!(parts.anonymous.len(), 2);
        assert_eq!(parts.mappings.len(), 1);
        assert_eq!(parts.mappings[0].module, ModuleId(7));
        assert_eq!(records.stats().unusable, []);
    }

    /// Instances are counted by where their modules came from, released or not.
    #[test]
    fn provenance_is_counted() {
        let mut records = MappingRecords::default();
        let key = |instance| ProcessKey { pid: 1, instance };
        let with_mapping = RecordedParts {
            mappings: vec![Mapping {
                start: 0,
                end: 1,
                offset: 0,
                module: ModuleId(0),
            }],
            ..Default::default()
        };
        records.proc_snapshot(key(1), true);
        records.merged(key(1), &with_mapping, 1, 0);
        records.proc_snapshot(key(2), false);
        records.merged(key(2), &with_mapping, 1, 3);
        records.proc_snapshot(key(3), false);
        records.merged(key(3), &RecordedParts::default(), 0, 0);
        records.proc_snapshot(key(4), false);
        records.release(key(1));
        let stats = records.stats();
        assert_eq!(
            (
                stats.from_proc,
                stats.completed_by_records,
                stats.from_records,
                stats.unnamed_files_unusable,
                stats.unnamed_without_records,
                stats.over_limit
            ),
            (1, 1, 1, 1, 1, 3)
        );
    }

    /// Overlapping and adjacent ranges become one.
    #[test]
    fn ranges_merge() {
        let mut ranges = vec![10..20, 0..5, 5..8, 15..30, 40..50];
        merge_ranges(&mut ranges);
        assert_eq!(ranges, [0..8, 10..30, 40..50]);
    }
}
