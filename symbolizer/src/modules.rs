//! The files that processes map executable code from, shared between processes.
//!
//! A module is opened once, through the first process seen mapping it, and the handle is kept for the
//! whole session: the file stays readable when the process exits, when the file is deleted or replaced
//! on disk, and when it lives only inside the process's mount namespace. Symbolization reads it as
//! `/proc/self/fd/N`. Modules are keyed by [`FileKey`] so one libc serves every process, and a
//! file that only reuses a freed inode number is never taken for the module that had it.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Index of a module in its [`ModuleTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);

#[derive(Debug)]
pub struct Module {
    /// Path as the process named it in its memory map (in its own mount namespace).
    pub mapped_path: PathBuf,
    /// Basename, as shown for frames that have no symbol: `libc.so.6+0x1234`.
    pub display_name: Arc<str>,
    /// Open handle (a private copy if the file's owner could truncate it); keeps the file alive and
    /// reachable.
    file: StableFile,
    /// Separate debug information (see `debug_file`), found while the process was alive.
    debug_file: Option<StableFile>,
    /// The module's PT_LOAD segments, to turn file offsets into the virtual offsets a debug file is
    /// addressed by. Only read with a debug file.
    segments: Vec<LoadSegment>,
}

impl Module {
    /// A path any code in this process can open to read the module, as long as the table lives.
    pub fn readable_path(&self) -> PathBuf {
        self.file.readable_path()
    }

    pub fn file(&self) -> &StableFile {
        &self.file
    }

    /// Like [`Module::readable_path`], for the separate debug file if there is one.
    pub fn debug_readable_path(&self) -> Option<PathBuf> {
        Some(self.debug_file.as_ref()?.readable_path())
    }

    /// The module's GNU build-id (`.note.gnu.build-id`), read from the open file; `None` when it has
    /// none or cannot be parsed. Read on demand: only outputs that carry it (pprof) ask.
    pub fn build_id(&self) -> Option<Vec<u8>> {
        use object::Object;
        // A stable file (see `untrusted`): its owner cannot truncate it under the map.
        let map = self.file.map().ok()?;
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
}

fn load_segments(file: &StableFile) -> Vec<LoadSegment> {
    let Ok(map) = file.map() else {
        return Vec::new();
    };
    object::File::parse(&map[..])
        .map(|elf| elf_info::load_segments(&elf))
        .unwrap_or_default()
}

/// Every module seen in this session. Bounded by the number of distinct executable files mapped by the
/// profiled processes (a few hundred on a busy machine); each costs one file descriptor.
#[derive(Debug, Default)]
pub struct ModuleTable {
    modules: Vec<Module>,
    by_file: HashMap<FileKey, ModuleId>,
}

impl ModuleTable {
    pub fn get(&self, id: ModuleId) -> &Module {
        &self.modules[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The module of the file a process maps, opening it if it is new, and looking for its separate
    /// debug information in the view of process `pid`. `key` is the file's identity when it could be
    /// read without opening the file (`stat`); `open` gives the file and its identity otherwise, or
    /// when no module has that identity yet. A file that turns out to be a known module once open is
    /// dropped before it is copied (see [`StableFile`]).
    pub(crate) fn get_or_open(
        &mut self,
        key: Option<FileKey>,
        mapped_path: &str,
        pid: u32,
        open: impl FnOnce() -> Result<(File, PathBuf), Error>,
    ) -> Result<ModuleId, Error> {
        if let Some(id) = key.and_then(|key| self.find(key)) {
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
            return Ok(id);
        }
        let file = StableFile::new(file).map_err(open_error)?;
        let id = self.insert(mapped_path, file);
        let path = self.modules[id.0 as usize].mapped_path.clone();
        let module = &mut self.modules[id.0 as usize];
        module.debug_file = crate::debug_file::find_debug_file(pid, &path, &module.file);
        if module.debug_file.is_some() {
            module.segments = load_segments(&module.file);
        }
        self.by_file.insert(key, id);
        Ok(id)
    }

    /// The module of file `key`, if it was opened.
    pub fn find(&self, key: FileKey) -> Option<ModuleId> {
        self.by_file.get(&key).copied()
    }

    /// Adds a module that is not keyed by a mapped file (the vDSO image).
    pub fn insert(&mut self, mapped_path: &str, file: StableFile) -> ModuleId {
        let id = ModuleId(self.modules.len() as u32);
        let mapped_path = PathBuf::from(mapped_path.trim_end_matches(" (deleted)"));
        let display_name = display_name(&mapped_path);
        self.modules.push(Module {
            mapped_path,
            display_name,
            file,
            debug_file: None,
            segments: Vec::new(),
        });
        id
    }
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
