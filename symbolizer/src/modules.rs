//! The files that processes map executable code from, shared between processes.
//!
//! A module is opened through the first process seen mapping it, and its handle kept while some
//! snapshot maps it: the file stays readable when the process exits, when the file is deleted or
//! replaced on disk, and when it lives only inside the process's mount namespace. Symbolization
//! reads it as `/proc/self/fd/N`. Modules are keyed by [`FileKey`] so one libc serves every process,
//! and a file that only reuses a freed inode number is never taken for the module that had it.
//!
//! What the table holds follows what is live: a module no snapshot maps any more is released (see
//! [`ModuleTable::release_unused`]; snapshots last until their process's samples are symbolized),
//! and the open ones hold at most a budget of descriptors (see `module_budget`): past it the least
//! recently used module is closed, and reopened by path, with its identity checked, when an address
//! is found in it again. Module ids are never reused, so what others derived from a module (names,
//! unwind tables) can be dropped when told ([`ModuleTable::take_dropped`]) and is never mistaken
//! for another module's.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::module_budget::{default_max_descriptors, descriptors_of, ModuleStats, OpenModules};
use crate::untrusted::{self, Follow, StableFile};
use crate::unwind::elf_info::{self, LoadSegment};
use crate::Error;

/// Which file a module was read from, in a way that cannot repeat within a session: (device, inode)
/// alone does not, because a deleted file's inode number is given to the next file created (at once
/// on tmpfs and ext4), and a rebuild-and-rerun loop or an attacker would then get the old binary's
/// names. The change time is set by the kernel's clock on creation and on every change (its owner
/// cannot set it, unlike the modification time), so a new file under an old inode number differs in
/// it; size and modification time are kept too, as cheap extra evidence. The build-id is not part of
/// the key: reading it needs the file opened (a copy made for a hostile file) before the lookup that
/// is meant to avoid opening it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: u64,
}

impl FileKey {
    pub fn of(meta: &Metadata) -> Self {
        FileKey {
            dev: meta.dev(),
            inode: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            size: meta.size(),
        }
    }
}

pub use crate::module_id::ModuleId;

/// Where a process maps a module: what reopens it after it was closed for the budget.
#[derive(Clone, Debug)]
struct MappedAt {
    pid: u32,
    start: u64,
    end: u64,
    inode: u64,
}

#[derive(Debug)]
pub struct Module {
    /// Path as the process named it in its memory map (in its own mount namespace).
    pub mapped_path: PathBuf,
    /// Basename, as shown for frames that have no symbol: `libc.so.6+0x1234`.
    pub display_name: Arc<str>,
    /// Open handle (a private copy if the file's owner could truncate it); keeps the file alive and
    /// reachable. `None` while closed for the descriptor budget.
    file: Option<StableFile>,
    /// Separate debug information (see `debug_file`), found while the process was alive.
    debug_file: Option<StableFile>,
    /// The module's PT_LOAD segments, to turn file offsets into the virtual offsets a debug file is
    /// addressed by. Only read with a debug file.
    segments: Vec<LoadSegment>,
    /// The file's identity; `None` for the vDSO image, which is never closed or released.
    key: Option<FileKey>,
    /// Snapshots that map the module.
    users: u32,
    /// The last mapping of it seen in a snapshot, to reopen it by.
    mapped_at: Option<MappedAt>,
    /// Stamp of last use (see `module_budget`).
    last_use: u64,
}

impl Module {
    /// A path any code in this process can open to read the module, while it is open; `None`
    /// while it is closed for the descriptor budget.
    pub fn readable_path(&self) -> Option<PathBuf> {
        Some(self.file.as_ref()?.readable_path())
    }

    /// The open file; `None` while the module is closed for the descriptor budget.
    pub fn file(&self) -> Option<&StableFile> {
        self.file.as_ref()
    }

    /// The separate debug file, if there is one.
    pub(crate) fn debug_file(&self) -> Option<&StableFile> {
        self.debug_file.as_ref()
    }

    /// Size of the separate debug file, 0 without one (see `namer::parsed_budget`).
    pub(crate) fn debug_file_bytes(&self) -> u64 {
        self.debug_file.as_ref().map_or(0, StableFile::size)
    }

    /// Device and inode of the open files (module, debug file), as `/proc/self/maps` shows them
    /// for mappings of those files (see `namer::file_pages`).
    pub(crate) fn open_file_identities(&self) -> Vec<(u64, u64)> {
        [&self.file, &self.debug_file]
            .into_iter()
            .filter_map(|file| file.as_ref()?.identity())
            .collect()
    }

    /// Like [`Module::readable_path`], for the separate debug file if there is one.
    pub fn debug_readable_path(&self) -> Option<PathBuf> {
        Some(self.debug_file.as_ref()?.readable_path())
    }

    /// The module's GNU build-id (`.note.gnu.build-id`), read from the open file; `None` when it has
    /// none, cannot be parsed or is closed. Read on demand: only outputs that carry it (pprof) ask.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        use object::Object;
        // A stable file (see `untrusted`): its owner cannot truncate it under the map.
        let map = self.file.as_ref()?.map().ok()?;
        let elf = object::File::parse(&map[..]).ok()?;
        elf.build_id().ok().flatten().map(<[u8]>::to_vec)
    }

    /// The virtual address (in the module's own address space) of a file offset.
    pub fn virtual_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| {
                (s.file_offset..s.file_offset.saturating_add(s.file_size)).contains(&file_offset)
            })
            .and_then(|s| s.vaddr.checked_add(file_offset - s.file_offset))
    }

    /// Device and inode of the file it was read from (`None` for the vDSO image).
    pub(crate) fn dev_inode(&self) -> Option<(u64, u64)> {
        self.key.map(|key| (key.dev, key.inode))
    }

    fn files(&self) -> usize {
        usize::from(self.file.is_some()) + usize::from(self.debug_file.is_some())
    }
}

fn load_segments(file: &StableFile) -> Vec<LoadSegment> {
    let Ok(map) = file.map() else {
        return Vec::new();
    };
    object::File::parse(&map[..])
        .map(|elf| elf_info::load_segments(&elf))
        .unwrap_or_default()
}

/// A module that others must stop using: closed for the budget (what was read from it stays
/// valid), or released (gone for good).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DroppedModule {
    pub id: ModuleId,
    pub released: bool,
}

/// The modules the live snapshots map (see the module docs): bounded by the distinct executable
/// files mapped by processes alive or not yet symbolized, and their descriptors by a budget.
#[derive(Debug)]
pub struct ModuleTable {
    modules: HashMap<ModuleId, Module>,
    by_file: HashMap<FileKey, ModuleId>,
    /// The next module's id: ids are never reused.
    next: u32,
    open: OpenModules,
    /// Modules whose last user went away: released at the next [`ModuleTable::release_unused`]
    /// unless a snapshot maps them again by then.
    unused: Vec<ModuleId>,
    /// Closed or released since the last [`ModuleTable::take_dropped`].
    dropped: Vec<DroppedModule>,
}

impl Default for ModuleTable {
    fn default() -> Self {
        ModuleTable::new(default_max_descriptors())
    }
}

impl ModuleTable {
    /// A table whose open modules hold at most `max_descriptors` descriptors.
    pub fn new(max_descriptors: usize) -> Self {
        ModuleTable {
            modules: HashMap::new(),
            by_file: HashMap::new(),
            next: 0,
            open: OpenModules::new(max_descriptors),
            unused: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// The module `id`. Every module a live snapshot maps is in the table; an id kept past its
    /// module's release (a bug) gets a closed placeholder, whose frames are unnamed, rather than a
    /// panic in the middle of a recording.
    pub fn get(&self, id: ModuleId) -> &Module {
        self.modules.get(&id).unwrap_or_else(|| {
            log::debug!("module {id:?} was released while still in use");
            released_module()
        })
    }

    /// Whether module `id` is still in the table (not released): what a cache of module ids
    /// kept elsewhere checks before using one.
    pub fn contains(&self, id: ModuleId) -> bool {
        self.modules.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// What the table did so far, for the summary.
    pub fn stats(&self) -> ModuleStats {
        self.open.stats
    }

    /// Descriptors the open modules hold now, and the budget, for the debug log.
    pub fn descriptors(&self) -> (usize, usize) {
        (self.open.descriptors(), self.open.max_descriptors())
    }

    /// The module of the file a process maps at `start..end`, opening it if it is new, and looking
    /// for its separate debug information in the view of process `pid`. `key` is the file's
    /// identity when it could be read without opening the file (`stat`); `open` gives the file and
    /// its identity otherwise, or when no module has that identity yet. A file that turns out to be
    /// a known module once open is dropped before it is copied (see [`StableFile`]). A known
    /// module, open or closed, is not opened again here: only an address found in it does that
    /// ([`ModuleTable::ensure_open`]).
    pub(crate) fn get_or_open(
        &mut self,
        key: Option<FileKey>,
        mapped_path: &str,
        pid: u32,
        (start, end, inode): (u64, u64, u64),
        open: impl FnOnce() -> Result<(File, PathBuf), Error>,
    ) -> Result<ModuleId, Error> {
        let mapped_at = MappedAt {
            pid,
            start,
            end,
            inode,
        };
        if let Some(id) = key.and_then(|key| self.find(key)) {
            self.seen_at(id, mapped_at);
            return Ok(id);
        }
        let (file, opened_path) = open()?;
        let open_error = |source| Error::OpenModule {
            pid,
            path: opened_path.clone(),
            source,
        };
        let key = FileKey::of(&file.metadata().map_err(open_error)?);
        if let Some(id) = self.find(key) {
            self.seen_at(id, mapped_at);
            return Ok(id);
        }
        self.make_room().map_err(open_error)?;
        let file = StableFile::new(file).map_err(open_error)?;
        let id = self.add(mapped_path, file, Some(key));
        let module = self.modules.get_mut(&id).expect("just added");
        module.mapped_at = Some(mapped_at);
        module.debug_file =
            crate::debug_file::find_debug_file(pid, &module.mapped_path, file_of(module));
        if module.debug_file.is_some() {
            module.segments = load_segments(file_of(module));
        }
        let descriptors = descriptors_of(module.files());
        module.last_use = self.open.opened(id, descriptors, true);
        self.by_file.insert(key, id);
        Ok(id)
    }

    /// The module of file `key`, if it is in the table.
    pub fn find(&self, key: FileKey) -> Option<ModuleId> {
        self.by_file.get(&key).copied()
    }

    /// Adds a module that is not keyed by a mapped file (the vDSO image): never closed or released.
    pub fn insert(&mut self, mapped_path: &str, file: StableFile) -> ModuleId {
        let id = self.add(mapped_path, file, None);
        let module = self.modules.get_mut(&id).expect("just added");
        module.users = 1;
        self.open.opened(id, descriptors_of(1), false);
        id
    }

    fn add(&mut self, mapped_path: &str, file: StableFile, key: Option<FileKey>) -> ModuleId {
        let id = ModuleId(self.next);
        self.next += 1;
        if key.is_some() {
            // Released unless a snapshot maps it by the next release (a snapshot that failed
            // after opening it never will).
            self.unused.push(id);
        }
        let mapped_path = PathBuf::from(mapped_path.trim_end_matches(" (deleted)"));
        let display_name = display_name(&mapped_path);
        self.modules.insert(
            id,
            Module {
                mapped_path,
                display_name,
                file: Some(file),
                debug_file: None,
                segments: Vec::new(),
                key,
                users: 0,
                mapped_at: None,
                last_use: 0,
            },
        );
        id
    }

    fn seen_at(&mut self, id: ModuleId, mapped_at: MappedAt) {
        if let Some(module) = self.modules.get_mut(&id) {
            module.mapped_at = Some(mapped_at);
        }
    }

    /// Closes least recently used modules until a new module (a file and a debug file) fits in
    /// the budget, or says why it cannot.
    fn make_room(&mut self) -> std::io::Result<()> {
        let needed = descriptors_of(2);
        while let Some(id) = self.open.over_budget(needed) {
            self.close(id);
        }
        if self.open.fits(needed) {
            return Ok(());
        }
        Err(std::io::Error::other(format!(
            "the modules' descriptor budget ({}, --max-module-fds) is taken by modules that are \
             never closed",
            self.open.max_descriptors()
        )))
    }

    fn close(&mut self, id: ModuleId) {
        let Some(module) = self.modules.get_mut(&id) else {
            return;
        };
        let descriptors = descriptors_of(module.files());
        module.file = None;
        module.debug_file = None;
        self.open.closed(module.last_use, descriptors);
        self.open.stats.closed += 1;
        self.dropped.push(DroppedModule {
            id,
            released: false,
        });
        log::debug!(
            "closed {} for the modules' descriptor budget",
            module.mapped_path.display()
        );
    }

    /// Makes sure module `id` is open, for an address found in it: marks it used, or reopens it,
    /// through `via` (the process whose address it is: `(pid, start, end)` of its mapping) or else
    /// the last mapping of it seen; it must still be the same file. Returns whether it is open.
    pub(crate) fn ensure_open(&mut self, id: ModuleId, via: Option<(u32, u64, u64)>) -> bool {
        let Some(module) = self.modules.get_mut(&id) else {
            return false;
        };
        if module.file.is_some() {
            module.last_use = self.open.touch(id, module.last_use);
            return true;
        }
        let inode = module.key.map_or(0, |key| key.inode);
        let candidates = via
            .map(|(pid, start, end)| MappedAt {
                pid,
                start,
                end,
                inode,
            })
            .into_iter()
            .chain(module.mapped_at.clone());
        let mut error = None;
        for at in candidates {
            match self.reopen(id, &at) {
                Ok(()) => {
                    self.open.stats.reopened += 1;
                    if let Some(module) = self.modules.get_mut(&id) {
                        module.mapped_at = Some(at);
                    }
                    return true;
                }
                Err(failed) => error = Some(failed),
            }
        }
        self.open.stats.not_reopened += 1;
        if let Some(error) = error {
            log::debug!("{}", crate::error::chain(&error));
        }
        false
    }

    fn reopen(&mut self, id: ModuleId, at: &MappedAt) -> Result<(), Error> {
        let module = &self.modules[&id];
        let Some(key) = module.key else {
            return Err(Error::OpenModule {
                pid: at.pid,
                path: module.mapped_path.clone(),
                source: std::io::Error::other("the vDSO image is never closed"),
            });
        };
        let mapped_path = module.mapped_path.to_string_lossy().into_owned();
        let (file, opened_path) =
            open_mapped_file(at.pid, at.start, at.end, &mapped_path, at.inode)?;
        let open_error = |source| Error::OpenModule {
            pid: at.pid,
            path: opened_path.clone(),
            source,
        };
        let found = FileKey::of(&file.metadata().map_err(open_error)?);
        if found != key {
            return Err(open_error(std::io::Error::other(
                "not the file the module was read from: it was replaced since",
            )));
        }
        self.make_room().map_err(open_error)?;
        let file = StableFile::new(file).map_err(open_error)?;
        let module = self.modules.get_mut(&id).expect("checked above");
        module.debug_file = crate::debug_file::find_debug_file(at.pid, &module.mapped_path, &file);
        module.file = Some(file);
        let descriptors = descriptors_of(module.files());
        module.last_use = self.open.opened(id, descriptors, true);
        Ok(())
    }

    /// One more snapshot maps module `id`.
    pub(crate) fn add_user(&mut self, id: ModuleId) {
        if let Some(module) = self.modules.get_mut(&id) {
            module.users += 1;
        }
    }

    /// One snapshot less maps module `id`; the last one leaves it to [`ModuleTable::release_unused`].
    pub(crate) fn remove_user(&mut self, id: ModuleId) {
        if let Some(module) = self.modules.get_mut(&id) {
            module.users = module.users.saturating_sub(1);
            if module.users == 0 {
                self.unused.push(id);
            }
        }
    }

    /// Releases the modules no snapshot maps any more: their descriptors, copies and everything
    /// derived from them (see [`ModuleTable::take_dropped`]). Called when a process is released,
    /// that is when its samples are all symbolized: a module no live snapshot maps has no sample
    /// left to name. Returns how many were released.
    pub(crate) fn release_unused(&mut self) -> usize {
        let mut released = 0;
        for id in std::mem::take(&mut self.unused) {
            let Some(module) = self.modules.get(&id) else {
                continue;
            };
            if module.users > 0 || module.key.is_none() {
                continue;
            }
            let module = self.modules.remove(&id).expect("checked above");
            log::debug!(
                "module {} released: no live process maps it",
                module.display_name
            );
            self.open
                .closed(module.last_use, descriptors_of(module.files()));
            if let Some(key) = module.key {
                self.by_file.remove(&key);
            }
            self.dropped.push(DroppedModule { id, released: true });
            released += 1;
        }
        self.open.stats.released += released as u64;
        released
    }

    /// Modules closed or released since the last call: what was built from them must go (all of
    /// it for a released module; open descriptors, such as blazesym's, for a closed one).
    pub(crate) fn take_dropped(&mut self) -> Vec<DroppedModule> {
        std::mem::take(&mut self.dropped)
    }
}

/// What [`ModuleTable::get`] gives for a released module: closed, never reopened.
fn released_module() -> &'static Module {
    static RELEASED: std::sync::OnceLock<Module> = std::sync::OnceLock::new();
    RELEASED.get_or_init(|| Module {
        mapped_path: PathBuf::from("[released]"),
        display_name: Arc::from("[released]"),
        file: None,
        debug_file: None,
        segments: Vec::new(),
        key: None,
        users: 0,
        mapped_at: None,
        last_use: 0,
    })
}

fn file_of(module: &Module) -> &StableFile {
    module.file.as_ref().expect("a module is open when added")
}

fn display_name(path: &Path) -> Arc<str> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_else(|| path.to_string_lossy());
    Arc::from(name.as_ref())
}

/// The identity of the file `pid` maps at `start..end`, read without opening it: `stat` of
/// `/proc/PID/map_files/` (the exact file, but it needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE).
/// `None` without that privilege: the caller then opens the file to learn it.
pub(crate) fn mapped_file_key(pid: u32, start: u64, end: u64) -> Option<FileKey> {
    let map_file = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    let meta = std::fs::metadata(map_file).ok()?;
    meta.file_type().is_file().then(|| FileKey::of(&meta))
}

/// Opens the file `pid` maps at `start..end` from `mapped_path`, with the path it was opened by (for
/// errors); the caller makes it a [`StableFile`] (a private copy when the process's user could
/// truncate it under us) if it is a new module.
///
/// `/proc/PID/map_files/` is the exact file the mapping came from, even when deleted or in another
/// mount namespace, but needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE); without it, the path is opened
/// inside the process's root directory and accepted only if it is still the same inode.
pub(crate) fn open_mapped_file(
    pid: u32,
    start: u64,
    end: u64,
    mapped_path: &str,
    inode: u64,
) -> Result<(File, PathBuf), Error> {
    let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
    // map_files entries are magic links: they must be followed.
    if let Ok(file) = untrusted::open(&map_file, Follow::Yes) {
        return Ok((file, map_file));
    }
    let in_root = PathBuf::from(format!("/proc/{pid}/root{mapped_path}"));
    let file =
        untrusted::open_in_root(pid, Path::new(mapped_path), Follow::Yes).map_err(|source| {
            Error::OpenModule {
                pid,
                path: in_root.clone(),
                source,
            }
        })?;
    let same_inode = file.metadata().map(|m| m.ino() == inode).unwrap_or(false);
    if !same_inode {
        return Err(Error::OpenModule {
            pid,
            path: in_root,
            source: std::io::Error::other(
                "the file on disk was replaced since the process mapped it",
            ),
        });
    }
    Ok((file, in_root))
}

#[cfg(test)]
mod tests {
    use crate::jit::{DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES, DEFAULT_MAX_PERF_MAP_BYTES};
    use crate::module_budget::MIN_DESCRIPTORS;
    use crate::process::{ProcessKey, UserLocation};
    use crate::Processes;

    /// With the smallest budget, snapshotting this test process (its executable, libc, the loader)
    /// closes the least recently used modules; an address in a closed one opens it again (the
    /// process is alive) within the budget, and releasing the process releases every module but
    /// the vDSO image.
    #[test]
    fn modules_follow_the_budget_and_the_live_snapshots() {
        let key = ProcessKey {
            pid: std::process::id(),
            instance: 1,
        };
        let mut processes = Processes::with_module_budget(
            DEFAULT_MAX_PERF_MAP_BYTES,
            DEFAULT_MAX_PERF_MAPS_TOTAL_BYTES,
            MIN_DESCRIPTORS,
        )
        .expect("processes");
        let before = processes.modules().len();
        processes.process_seen(key).expect("own snapshot");
        let snapshot = processes.snapshots().get(key).expect("snapshot").clone();
        let mut mapped: Vec<_> = snapshot.mappings().to_vec();
        mapped.sort_by_key(|m| m.module);
        mapped.dedup_by_key(|m| m.module);
        let opened = processes.modules().len() - before;
        assert!(opened >= 3, "this process maps {opened} modules");
        assert!(
            processes.module_stats().closed > 0,
            "{:?}",
            processes.module_stats()
        );
        for mapping in &mapped {
            let location = processes.locate(key, mapping.start);
            assert!(
                matches!(location, UserLocation::Module { module, .. } if module == mapping.module),
                "{location:?}"
            );
            let module = processes.modules().get(mapping.module);
            assert!(
                module.file().is_some(),
                "{} not reopened",
                module.mapped_path.display()
            );
            let (held, max) = processes.modules().descriptors();
            assert!(held <= max, "{held} descriptors held, budget {max}");
        }
        let stats = processes.module_stats();
        assert!(stats.reopened > 0 && stats.not_reopened == 0, "{stats:?}");

        processes.instance_ended(key);
        processes.release(key);
        assert_eq!(
            processes.modules().len(),
            before,
            "modules kept after release"
        );
        assert_eq!(processes.module_stats().released, opened as u64);
        let dropped = processes.take_dropped_modules();
        assert_eq!(dropped.iter().filter(|m| m.released).count(), opened);
        // An id kept past the release gets a closed placeholder, not a panic.
        let released = dropped
            .iter()
            .find(|m| m.released)
            .expect("a released module");
        let placeholder = processes.modules().get(released.id);
        assert!(placeholder.file().is_none() && &*placeholder.display_name == "[released]");
    }
}
