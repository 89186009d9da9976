//! The one place that opens and reads files a profiled process controls: its executables and
//! libraries, the debug files they name, its perf map.
//!
//! emberprof runs as root, and every one of those files may be hostile. The rules, kept here so no
//! caller can forget one:
//! - Opening never blocks and never follows a planted link: `O_NONBLOCK` (a FIFO would block `open`
//!   forever), `O_NOCTTY`, `O_CLOEXEC`, `O_NOFOLLOW` where the last component must not be a symlink,
//!   and paths inside a process's filesystem view are resolved *inside* its root
//!   (`openat2(RESOLVE_IN_ROOT)`), so an absolute symlink cannot point at the host's files. The
//!   descriptor is then `fstat`ed: only regular files are accepted (no FIFO, device, socket).
//! - A file is memory-mapped only as a [`StableFile`], whose size cannot change under the mapping:
//!   truncating a mapped file makes every later access raise SIGBUS, which would kill the profiler
//!   (a `MAP_PRIVATE` mapping does not help). Files only root can modify are mapped in place; any
//!   other is copied into a sealed `memfd` (bounded by [`MAX_COPY_BYTES`]) and the copy is mapped.
//!   blazesym reads the same stable file through `/proc/self/fd/N`, so it is covered too.
//! - Sizes and offsets read from a file go through [`byte_range`], never `offset + size` unchecked.
//!
//! It must not decide *which* files to read (that is `modules`, `debug_file`, `jit`), only how.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use object::{Object, ObjectSection};

/// Largest file copied into memory to make it stable. The copy lives in RAM (a `memfd` is shmem) for
/// the whole session, so this bounds what one hostile file can cost; it is above the largest real
/// binaries with their DWARF (a Chromium or LLVM build with debug info: several hundred MiB). A larger
/// file that the profiled user can modify gets no names, with a warning.
pub const MAX_COPY_BYTES: u64 = 1 << 30;

/// Most bytes held in all copies at once, for the session. Copies are shared memory: they escape
/// RSS-based limits and the OOM killer's view of emberprof (8 sparse 1,000 MiB files, 4 KB of the
/// attacker's disk, pinned 8,000 MiB). A file that does not fit gets no copy and no names, with a
/// warning and a count ([`copies_refused`]); a copy's bytes are given back when it is dropped.
pub const MAX_TOTAL_COPY_BYTES: u64 = 512 << 20;

/// Bytes held in copies now, and copies refused for the budget so far (process-wide: the budget
/// is the machine's shared memory, whoever in this process holds the copies).
static COPY_BYTES_HELD: AtomicU64 = AtomicU64::new(0);
static COPIES_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Files that got no private copy (so no names) because [`MAX_TOTAL_COPY_BYTES`] was held.
pub fn copies_refused() -> u64 {
    COPIES_REFUSED.load(Ordering::Relaxed)
}

/// Takes `size` bytes of the copy budget, or says why not.
fn reserve_copy(size: u64) -> io::Result<()> {
    let reserved = COPY_BYTES_HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        held.checked_add(size)
            .filter(|&total| total <= MAX_TOTAL_COPY_BYTES)
    });
    match reserved {
        Ok(_) => Ok(()),
        Err(held) => {
            if COPIES_REFUSED.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!(
                    "a file of {size} bytes its owner can modify gets no private copy, so no names: \
                     copies already hold {held} bytes of the {MAX_TOTAL_COPY_BYTES} budget (counted in -v)"
                );
            }
            Err(io::Error::other(format!(
                "{size} bytes to copy, past the {MAX_TOTAL_COPY_BYTES}-byte budget for copies of files \
                 their owners can modify ({held} held)"
            )))
        }
    }
}

fn release_copy(size: u64) {
    let _ = COPY_BYTES_HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        Some(held.saturating_sub(size))
    });
}

/// Whether the last path component may be a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Follow it (`/proc/PID/map_files/*` are magic links; distributions' build-id trees are symlinks).
    Yes,
    /// Refuse it (`O_NOFOLLOW`): a name from a hostile source must be a file itself.
    No,
}

fn open_flags(follow: Follow) -> i32 {
    let nofollow = if follow == Follow::No {
        libc::O_NOFOLLOW
    } else {
        0
    };
    libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC | nofollow
}

/// Opens `path` read-only under the rules above; an error for anything but a regular file.
pub(crate) fn open(path: &Path, follow: Follow) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(open_flags(follow))
        .open(path)?;
    regular_only(file)
}

/// Opens `path` (absolute, as the process names it) as seen by process `pid`: resolved inside
/// `/proc/PID/root`, with `..` and absolute symlinks kept inside that root (`RESOLVE_IN_ROOT`), and
/// no magic links (`/proc/self/fd/...` inside the process's view).
pub(crate) fn open_in_root(pid: u32, path: &Path, follow: Follow) -> io::Result<File> {
    let root = File::open(format!("/proc/{pid}/root"))?;
    let relative = path.strip_prefix("/").unwrap_or(path);
    let c_path = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    /// `struct open_how` of openat2(2) (libc's is non-exhaustive, so it cannot be built here).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_RDONLY | open_flags(follow)) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid NUL-terminated path and `open_how` of the size passed; the returned descriptor is
    // owned by the File below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from openat2, owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    regular_only(file)
}

/// A handle on directory `path` (`O_PATH`: nothing is read through it), to open files in it later
/// with [`open_in`] even once the path no longer leads there (`/proc/PID/root/tmp` of a process that
/// exited).
pub(crate) fn open_directory(path: &Path) -> io::Result<File> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens `name` (one path component, not a symlink) in directory `dir` read-only under the rules
/// above; an error for anything but a regular file.
pub(crate) fn open_in(dir: &File, name: &str) -> io::Result<File> {
    if name.contains('/') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the descriptor is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            libc::O_RDONLY | open_flags(Follow::No),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    regular_only(unsafe { File::from_raw_fd(fd) })
}

fn regular_only(file: File) -> io::Result<File> {
    if file.metadata()?.file_type().is_file() {
        Ok(file)
    } else {
        Err(io::Error::other("not a regular file"))
    }
}

/// Whether only root can change the file's contents or size: owned by root, not writable by group
/// or others, and not on a FUSE file system (whose server, any user, decides what reads return).
fn only_root_can_modify(file: &File) -> io::Result<bool> {
    let meta = file.metadata()?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Ok(false);
    }
    // SAFETY: statfs is plain data, filled by fstatfs on a descriptor we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    const FUSE_SUPER_MAGIC: i64 = 0x6573_7546;
    Ok(fs.f_type as i64 != FUSE_SUPER_MAGIC)
}

/// A regular file whose size cannot change while it is open, so mapping it is safe; see the module
/// documentation.
#[derive(Debug)]
pub struct StableFile {
    file: File,
    /// Whether this is a private copy (the original could be modified by a non-root user).
    copied: bool,
    /// Bytes of the copy budget this copy holds, given back on drop.
    reserved: u64,
}

impl Drop for StableFile {
    fn drop(&mut self) {
        release_copy(self.reserved);
    }
}

impl StableFile {
    /// Makes `file` stable: the file itself when only root can modify it, else a sealed private copy
    /// of at most [`MAX_COPY_BYTES`]. Links to other debug files in a copy are removed (see
    /// [`unlink_debug_files`]).
    pub(crate) fn new(file: File) -> io::Result<Self> {
        if only_root_can_modify(&file)? {
            return Ok(StableFile {
                file,
                copied: false,
                reserved: 0,
            });
        }
        let size = file.metadata()?.len();
        if size > MAX_COPY_BYTES {
            return Err(io::Error::other(format!(
                "{size} bytes, more than the {MAX_COPY_BYTES} emberprof copies of a file its owner can modify"
            )));
        }
        reserve_copy(size)?;
        // Given back by its drop if anything below fails.
        let mut stable = StableFile {
            file: memfd()?,
            copied: true,
            reserved: size,
        };
        let copy = &stable.file;
        // Bounded by the cap even if the file grows while it is copied; a file that shrinks just
        // gives a shorter copy (read(2) returns less, it does not fault).
        let copied = io::copy(&mut io::Read::take(&file, size), &mut &*copy)?;
        if copied == 0 {
            return Err(io::Error::other("empty file"));
        }
        unlink_debug_files(copy);
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        stable.reserved = copied.min(size);
        release_copy(size - stable.reserved);
        Ok(stable)
    }

    /// A file this process created itself (the vDSO image), which nobody else can modify.
    pub(crate) fn own(file: File) -> Self {
        StableFile {
            file,
            copied: false,
            reserved: 0,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn is_copy(&self) -> bool {
        self.copied
    }

    /// The file's size in bytes (0 if it cannot be read).
    pub fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    /// Device and inode of the open file (of the copy, for a copy): what `/proc/self/maps` shows
    /// for mappings of it.
    pub(crate) fn identity(&self) -> Option<(u64, u64)> {
        let meta = self.file.metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// A path any code in this process (blazesym) can open to read the file, while `self` lives.
    pub fn readable_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Maps the whole file read-only.
    pub(crate) fn map(&self) -> io::Result<Mmap> {
        let _creating = mapping_lock();
        // SAFETY: the file's size cannot change (see StableFile), so no access faults, and nothing
        // writes to it while mapped: a sealed copy cannot be written, and an original only root can
        // write is a binary in use, which root replaces by renaming, not in place.
        unsafe { Mmap::map(&self.file) }
    }
}

/// Held while this process creates a shared mapping of a module file: by [`StableFile::map`], and
/// by the namer around blazesym's first lookups in a module, so that the mappings of a file that
/// appear meanwhile are blazesym's (see `namer::file_pages`), whatever other threads do.
static MAPPING: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn mapping_lock() -> std::sync::MutexGuard<'static, ()> {
    // Guards no data: a panic while it was held leaves nothing inconsistent.
    MAPPING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops the pages of `map` from this process's RSS. A read-only shared mapping of a stable file
/// has nothing of its own to lose: a later access faults the same bytes in again from the page
/// cache (where the programs that use the file keep them anyway). For sections read in full once
/// (an index is built from them) and rarely after.
pub(crate) fn drop_resident_pages(map: &Mmap) {
    drop_resident_range(map, 0..map.len());
}

/// [`drop_resident_pages`] for the bytes `range` of `map` (widened to whole pages: the pages around
/// it fault in again too when read).
pub(crate) fn drop_resident_range(map: &Mmap, range: Range<usize>) {
    if range.is_empty() {
        return;
    }
    // SAFETY: `map` is a read-only `MAP_SHARED` mapping of a file whose contents and size cannot
    // change (see `StableFile::map`), and `range` lies within it (callers pass a range of its
    // bytes): MADV_DONTNEED only unmaps its pages, and every later read sees the same bytes. No
    // reference into it is invalidated.
    let result = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len())
    };
    if let Err(error) = result {
        log::debug!("madvise(MADV_DONTNEED) on part of a module mapping: {error}");
    }
}

fn memfd() -> io::Result<File> {
    let name = c"emberprof-module";
    // SAFETY: valid NUL-terminated name; the descriptor is owned by the File below.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Sections through which blazesym would follow a path the file names: `.gnu_debuglink` (a name
/// that blazesym joins to directories — an absolute one replaces them, so `/dev/zero` or a FIFO
/// would be opened), `.gnu_debugaltlink` and `.debug_sup` (paths). emberprof finds debug files itself
/// (see `debug_file`), under its own rules, so in a private copy these sections lose their names and
/// blazesym no longer finds them.
const LINK_SECTIONS: [&str; 3] = [".gnu_debuglink", ".gnu_debugaltlink", ".debug_sup"];

/// Clears `sh_name` of the link sections in a (not yet sealed) copy of an ELF file. A file that does
/// not parse is left alone: blazesym will not parse it either.
fn unlink_debug_files(copy: &File) {
    // SAFETY: our own memfd, not yet shared with anyone; only read here, and written through
    // `write_at` after the map is dropped.
    let Ok(map) = (unsafe { Mmap::map(copy) }) else {
        return;
    };
    let Ok(elf) = object::read::elf::ElfFile64::<object::Endianness>::parse(&map[..]) else {
        return;
    };
    let header = elf.elf_header();
    let endian = elf.endian();
    let (shoff, shentsize) = (
        header.e_shoff.get(endian),
        u64::from(header.e_shentsize.get(endian)),
    );
    let offsets: Vec<u64> = elf
        .sections()
        .filter(|s| s.name().is_ok_and(|name| LINK_SECTIONS.contains(&name)))
        .filter_map(|s| shoff.checked_add((s.index().0 as u64).checked_mul(shentsize)?))
        .collect();
    drop(map);
    for offset in offsets {
        // sh_name is the first field of a section header: 0 is the empty name.
        let _ = copy.write_at(&[0; 4], offset);
    }
}

/// How many pages of the address range `start..end` are mapped into this process now (its share of
/// RSS), from the present bit in `/proc/self/pagemap` (`mincore` would say which are in the page
/// cache: as root, all of a file that others read too).
pub(crate) fn resident_pages(range: Range<usize>) -> std::io::Result<usize> {
    const PAGE: usize = 4096;
    let first = range.start / PAGE;
    let pages = range.end.div_ceil(PAGE) - first;
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut entries = vec![0u8; pages * 8];
    pagemap.read_exact_at(&mut entries, (first * 8) as u64)?;
    Ok(entries
        .chunks_exact(8)
        .filter(|entry| entry[7] & 0x80 != 0)
        .count())
}

/// `offset..offset + size` as a range of a buffer of `len` bytes, or `None` if it does not fit (or
/// overflows: values read from a file can be anything).
pub fn byte_range(offset: u64, size: u64, len: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    (end <= len).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A range is returned only if it lies inside the buffer, whatever the offset and size.
        #[test]
        fn byte_range_is_inside(offset in any::<u64>(), size in any::<u64>(), len in 0usize..1 << 20) {
            if let Some(range) = byte_range(offset, size, len) {
                prop_assert!(range.start <= range.end && range.end <= len);
                prop_assert_eq!((range.end - range.start) as u64, size);
            } else {
                prop_assert!(offset.checked_add(size).is_none_or(|end| end > len as u64));
            }
        }
    }

    /// Every reader of module files, on a real ELF file (the `burn` example) whose ELF header,
    /// program headers and section headers get random values written over them: no panic, whatever
    /// the offsets and sizes say.
    #[test]
    fn readers_survive_mutated_headers() {
        use std::io::Write;
        let original = std::fs::read(emberprof_examples::path("burn")).expect("example binary");
        let u64_at = |o: usize| u64::from_le_bytes(original[o..o + 8].try_into().expect("8"));
        let u16_at = |o: usize| u16::from_le_bytes([original[o], original[o + 1]]) as usize;
        let (phoff, shoff) = (u64_at(0x20) as usize, u64_at(0x28) as usize);
        let program_headers = phoff..phoff + 56 * u16_at(0x38);
        let section_headers = shoff..shoff + 64 * u16_at(0x3c);
        let regions = [0..64, program_headers, section_headers];
        let strategy = proptest::collection::vec(
            (
                0..regions.len(),
                any::<prop::sample::Index>(),
                any::<u64>(),
                any::<bool>(),
            ),
            1..12,
        );
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
        runner
            .run(&strategy, |mutations| {
                let mut bytes = original.clone();
                for (region, index, value, whole_word) in mutations {
                    let region = &regions[region];
                    let at = region.start + index.index(region.len().max(1));
                    if whole_word {
                        let at = at & !7;
                        let end = (at + 8).min(bytes.len());
                        bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
                    } else if let Some(byte) = bytes.get_mut(at) {
                        *byte = value as u8;
                    }
                }
                let mut file = tempfile::tempfile().expect("temp file");
                file.write_all(&bytes).expect("write");
                let stable = StableFile::own(file);
                let _ = crate::unwind::ElfUnwindInfo::read(&stable);
                let _ = crate::plt::PltStubs::read(&stable).name_at(0x1000);
                let _ = crate::debug_file::find_debug_file(
                    std::process::id(),
                    Path::new("/nonexistent/burn"),
                    &stable,
                );
                Ok(())
            })
            .expect("no reader panics");
    }

    /// A FIFO is refused at once instead of blocking the caller in open(2).
    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let c_path = CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) }, 0);
        assert!(open(&fifo, Follow::No).is_err());
        assert!(
            open(Path::new("/dev/zero"), Follow::Yes).is_err(),
            "devices are refused"
        );
    }

    /// A symlink is refused with Follow::No.
    #[test]
    fn symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).expect("symlink");
        assert!(open(&link, Follow::No).is_err());
        assert!(open(&link, Follow::Yes).is_ok());
    }

    /// A file a user could truncate is copied, and the copy cannot shrink: truncating the original
    /// afterwards leaves the mapping readable (it would raise SIGBUS otherwise).
    #[test]
    fn copy_survives_truncation_of_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("module");
        std::fs::write(&path, vec![7u8; 3 * 4096]).expect("write");
        // Writable by others: not trusted even though root owns it.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        let stable = StableFile::new(open(&path, Follow::No).expect("open")).expect("stable");
        assert!(stable.is_copy());
        let map = stable.map().expect("map");
        std::fs::File::create(&path).expect("truncate");
        assert_eq!(map[3 * 4096 - 1], 7);
        assert!(stable.file().set_len(0).is_err(), "the copy is sealed");
    }

    /// A copy has no debug link left for blazesym to follow (a hostile one could name a FIFO or
    /// /dev/zero); the rest of the file is intact.
    #[test]
    fn copy_loses_its_debug_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("burn-debuglink");
        std::fs::copy(emberprof_examples::path("burn-debuglink"), &path).expect("copy");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        let original = std::fs::read(&path).expect("read");
        let has_link = |bytes: &[u8]| {
            let elf = object::File::parse(bytes).expect("ELF");
            elf.section_by_name(".gnu_debuglink").is_some()
        };
        assert!(has_link(&original), "the example has a debug link");
        let stable = StableFile::new(open(&path, Follow::No).expect("open")).expect("stable");
        let map = stable.map().expect("map");
        assert!(!has_link(&map), "the copy still links to a debug file");
        assert_eq!(map.len(), original.len());
        let elf = object::File::parse(&map[..]).expect("ELF");
        assert!(elf.section_by_name(".text").is_some());
    }

    /// A root-owned file nobody else can write is used in place.
    #[test]
    fn root_owned_file_is_used_in_place() {
        let libc = Path::new("/usr/bin/true");
        let stable = StableFile::new(open(libc, Follow::Yes).expect("open")).expect("stable");
        assert!(!stable.is_copy());
    }
}
