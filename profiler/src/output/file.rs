//! Writing the output where the user asked, safely as root.
//!
//! A regular file (or a name that does not exist yet) is written atomically: to a temporary file in
//! the destination directory, renamed over the destination only when complete, so an interrupted or
//! failed write never leaves a half-written file. The temporary file is created up front, which also
//! proves the destination is writable before any sampling starts.
//!
//! The destination directory may be writable by other users (`/tmp`), who can plant or swap names in
//! it while we run. So the temporary file is created with `O_EXCL | O_NOFOLLOW` relative to a
//! directory descriptor, and after that it is only touched through its descriptor (`fchmod`,
//! `fchown`): no call here follows a name another user could have replaced. The final `renameat`
//! does not follow symlinks either, and what it moved is checked to be our file.
//!
//! An existing character device or FIFO is written *through*, as a shell's `> /dev/null` does: it is
//! never replaced. An existing symlink is refused rather than followed or replaced.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::node::{
    choose_write_mode, cstring, existing_kind, open_raw, sudo_ids, ExistingKind, WriteMode,
};
use super::through::ThroughOutput;
use super::OutputTarget;

/// The longest file name Linux file systems accept (NAME_MAX).
const NAME_MAX: usize = 255;
/// How much of the destination's name the temporary file's name repeats, so the user can tell what
/// a leftover temporary file was; short enough that the temporary name always fits in NAME_MAX.
const TEMP_NAME_PREFIX_BYTES: usize = 64;

/// Mode of a new output file: as readable as any file the user creates.
const OUTPUT_MODE: libc::mode_t = 0o644;

pub enum OutputFile {
    Stdout,
    /// Written to a temporary file, renamed over the destination on commit.
    Atomic(AtomicOutput),
    /// An existing character device or FIFO, opened for writing and written through.
    Through(ThroughOutput),
}

impl OutputFile {
    /// Reserves the output: for a file, checks the destination and creates the temporary file next to
    /// it; for a device or FIFO, opens it.
    pub fn create(target: &OutputTarget) -> Result<Self> {
        let destination = match target {
            OutputTarget::Stdout => return Ok(OutputFile::Stdout),
            OutputTarget::File(path) => path.clone(),
        };
        let metadata = match std::fs::symlink_metadata(&destination) {
            Ok(metadata) => Some(metadata),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) if error.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                bail!("{}", name_too_long(&destination))
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot write output {}", destination.display()))
            }
        };
        // A trailing slash names a directory even when nothing exists there.
        if destination.as_os_str().as_bytes().ends_with(b"/") {
            choose_write_mode(ExistingKind::Directory, &destination)?;
        }
        match choose_write_mode(existing_kind(metadata.as_ref()), &destination)? {
            WriteMode::Through => Ok(OutputFile::Through(ThroughOutput::open(destination)?)),
            WriteMode::Atomic => Self::create_atomic(destination),
        }
    }

    fn create_atomic(destination: PathBuf) -> Result<Self> {
        let directory_path = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(file_name) = destination.file_name() else {
            bail!(
                "output {} does not name a file; give a name such as flamegraph.svg",
                destination.display()
            );
        };
        if file_name.len() > NAME_MAX {
            bail!("{}", name_too_long(&destination));
        }
        if !directory_path.is_dir() {
            bail!(
                "cannot write output {}: directory {} does not exist",
                destination.display(),
                directory_path.display()
            );
        }
        let directory = open_raw(
            libc::AT_FDCWD,
            &cstring(directory_path.as_os_str())?,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
        .with_context(|| format!("cannot open directory {}", directory_path.display()))?;
        let unwritable = |error: std::io::Error| {
            anyhow::anyhow!(
                "cannot write output {}: directory {} is not writable ({error})",
                destination.display(),
                directory_path.display()
            )
        };
        super::stale::remove_stale_temp_files(
            &directory,
            truncate_bytes(file_name.as_bytes(), TEMP_NAME_PREFIX_BYTES),
        );
        let (temp_name, temp) = create_temp_file(&directory, file_name).map_err(unwritable)?;
        Ok(OutputFile::Atomic(AtomicOutput {
            destination_name: cstring(file_name)?,
            destination,
            directory,
            temp_name,
            temp,
            renamed: false,
        }))
    }

    /// Writes the content produced by `write`, then moves the file into place.
    pub fn commit(self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        match self {
            OutputFile::Stdout => {
                let stdout = std::io::stdout();
                let mut writer = BufWriter::new(stdout.lock());
                write(&mut writer)?;
                writer.flush().context("cannot write to stdout")?;
                Ok(())
            }
            OutputFile::Through(through) => through.commit(write),
            OutputFile::Atomic(mut atomic) => atomic.commit(write),
        }
    }

    /// The temporary file (directory descriptor, name in it) a second Ctrl-C removes, if any. The
    /// descriptor stays valid as long as this output.
    pub fn temp_location(&self) -> Option<(RawFd, CString)> {
        match self {
            OutputFile::Atomic(atomic) => {
                Some((atomic.directory.as_raw_fd(), atomic.temp_name.clone()))
            }
            OutputFile::Stdout | OutputFile::Through(_) => None,
        }
    }
}

/// Bytes buffered before each write to an output file.
const WRITE_BUFFER: usize = 256 * 1024;

/// A temporary file in the destination's directory, removed unless it was renamed into place.
pub struct AtomicOutput {
    destination: PathBuf,
    directory: OwnedFd,
    destination_name: CString,
    temp_name: CString,
    temp: File,
    renamed: bool,
}

impl AtomicOutput {
    fn commit(&mut self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        let destination = self.destination.display().to_string();
        let cannot_write = || format!("cannot write {destination}");
        {
            // Outputs of long recordings reach 100+ MB (folded lines of deep stacks): a larger
            // buffer than the default 8 KiB makes 32 times fewer write calls into the filesystem.
            let mut writer = BufWriter::with_capacity(WRITE_BUFFER, &self.temp);
            // A full disk shows up here, inside the renderer: one line naming the file.
            write(&mut writer).with_context(cannot_write)?;
            writer.flush().with_context(cannot_write)?;
        }
        set_mode(&self.temp).with_context(cannot_write)?;
        // No fsync before the rename: the rename alone is what keeps a half-written file from ever
        // appearing, whichever way emberprof ends (a full disk fails the write above, before it).
        // What an fsync would add is durability across a crash of the whole machine, which a
        // profile does not need (ext4's auto_da_alloc flushes a file renamed over an old one anyway),
        // and it cost 1-10 ms on an idle VM disk, most of the time from the end of sampling to the
        // output, and seconds behind a busy disk's queue.
        // SAFETY: both names are NUL-terminated and relative to a directory fd we own.
        let renamed = unsafe {
            libc::renameat(
                self.directory.as_raw_fd(),
                self.temp_name.as_ptr(),
                self.directory.as_raw_fd(),
                self.destination_name.as_ptr(),
            )
        };
        if renamed != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot move the output into place at {destination}"));
        }
        self.renamed = true;
        // Given away only once in place: before the rename, a temporary file owned by the sudo user
        // could be unlinked or swapped by that user even in a sticky directory.
        give_to_sudo_user(&self.temp);
        // Someone who can write the directory could have swapped the temporary name for their own
        // file before the rename; then what now sits at the destination is theirs, not our output.
        // Nothing was followed or chowned, but the user must know.
        let placed = fstatat_nofollow(&self.directory, &self.destination_name);
        let ours = self.temp.metadata().ok();
        let same =
            matches!((&placed, &ours), (Some(p), Some(o)) if p.0 == o.dev() && p.1 == o.ino());
        if !same {
            bail!(
                "the output at {destination} was replaced by another file while emberprof wrote it \
                 (another user can write to that directory): write the output to a directory only \
                 you can write"
            );
        }
        Ok(())
    }
}

impl Drop for AtomicOutput {
    /// An output never committed (a failed run) leaves no temporary file behind.
    fn drop(&mut self) {
        if !self.renamed {
            // A name swapped by another user is only unlinked, never followed.
            // SAFETY: a NUL-terminated name relative to a directory fd we own.
            unsafe { libc::unlinkat(self.directory.as_raw_fd(), self.temp_name.as_ptr(), 0) };
        }
    }
}

/// Device and inode of `name` in `directory`, without following a symlink.
fn fstatat_nofollow(directory: &OwnedFd, name: &CString) -> Option<(u64, u64)> {
    // SAFETY: fstatat fills a zeroed stat struct for a NUL-terminated name.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let ret = unsafe {
        libc::fstatat(
            directory.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    (ret == 0).then_some((stat.st_dev, stat.st_ino))
}

fn name_too_long(destination: &Path) -> String {
    let length = destination.file_name().map_or(0, OsStr::len);
    format!(
        "cannot write output {}: the file name is too long ({length} bytes; file systems allow {NAME_MAX})",
        destination.display()
    )
}

/// Creates `.NAME.emberprof-PID-START-RANDOM.tmp` in `directory` (see `stale.rs` for why the
/// writer is named), refusing to follow or reuse anything already there.
fn create_temp_file(directory: &OwnedFd, file_name: &OsStr) -> std::io::Result<(CString, File)> {
    let shown_name = truncate_bytes(file_name.as_bytes(), TEMP_NAME_PREFIX_BYTES);
    let writer = super::stale::writer_tag();
    for attempt in 0u32..100 {
        let mut name = Vec::with_capacity(shown_name.len() + writer.len() + 24);
        name.push(b'.');
        name.extend_from_slice(shown_name);
        name.push(b'.');
        name.extend_from_slice(writer.as_bytes());
        name.extend_from_slice(format!("{:016x}.tmp", random_suffix(attempt)).as_bytes());
        let name = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // 0600 until the content is complete: nobody else reads a half-written profile.
        match open_raw(
            directory.as_raw_fd(),
            &name,
            libc::O_WRONLY
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_NOFOLLOW
                | libc::O_NOCTTY
                | libc::O_CLOEXEC,
            0o600,
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::ErrorKind::AlreadyExists.into())
}

/// An unpredictable suffix, so another user cannot pre-create the name (O_EXCL would then make us
/// retry, not follow, but a predictable name would let them make us retry forever).
fn random_suffix(attempt: u32) -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom fills at most bytes.len() bytes of a local buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    // getrandom cannot really fail for 8 bytes; fall back to something still hard to guess.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ u64::from(attempt)
}

fn truncate_bytes(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// Mode 0644, through the descriptor.
fn set_mode(file: &File) -> std::io::Result<()> {
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(file.as_raw_fd(), OUTPUT_MODE) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Under sudo, makes the invoking user the owner (so they can delete or overwrite the output without
/// root), through the descriptor. A failed chown leaves the file owned by root, which is still
/// usable: logged, not fatal.
fn give_to_sudo_user(file: &File) {
    if let Some((uid, gid)) = sudo_ids() {
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(file.as_raw_fd(), uid, gid) } != 0 {
            log::debug!(
                "cannot give the output to {uid}:{gid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::PermissionsExt;

    fn temp_files_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    /// A committed file holds the content and no temporary file is left behind.
    #[test]
    fn commit_writes_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.folded");
        let output = OutputFile::create(&OutputTarget::File(path.clone())).unwrap();
        assert_eq!(
            temp_files_in(dir.path()).len(),
            1,
            "temp file reserved up front"
        );
        assert!(!path.exists(), "destination untouched until commit");
        output.commit(|w| Ok(w.write_all(b"a;b 1\n")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a;b 1\n");
        assert!(temp_files_in(dir.path()).is_empty());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    /// A write that fails half way leaves the old destination intact and no temporary file.
    #[test]
    fn failed_write_leaves_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.svg");
        std::fs::write(&path, "old").unwrap();
        let output = OutputFile::create(&OutputTarget::File(path.clone())).unwrap();
        let result = output.commit(|w| {
            w.write_all(b"partial")?;
            bail!("renderer failed")
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert!(temp_files_in(dir.path()).is_empty());
    }

    /// An output that is never committed leaves no temporary file.
    #[test]
    fn dropped_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = OutputFile::create(&OutputTarget::File(dir.path().join("x.svg"))).unwrap();
        drop(output);
        assert!(temp_files_in(dir.path()).is_empty());
    }

    /// A missing directory, or a directory as destination, is refused at creation time.
    #[test]
    fn unwritable_destination_fails_early() {
        let error = OutputFile::create(&OutputTarget::File("/nonexistent/dir/x.svg".into()))
            .err()
            .unwrap();
        assert!(format!("{error:#}").contains("does not exist"), "{error:#}");
        // sysfs refuses new files even to root.
        let error = OutputFile::create(&OutputTarget::File("/sys/x.svg".into()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("not writable"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let error = OutputFile::create(&OutputTarget::File(dir.path().into()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("is a directory"), "{error}");
    }

    /// Regular files and new names are replaced atomically; devices and FIFOs written through;
    /// symlinks, block devices and sockets refused.
    #[test]
    fn write_mode_follows_what_exists() {
        let path = Path::new("out.svg");
        let mode = |kind| choose_write_mode(kind, path);
        assert_eq!(mode(ExistingKind::Missing).unwrap(), WriteMode::Atomic);
        assert_eq!(mode(ExistingKind::Regular).unwrap(), WriteMode::Atomic);
        assert_eq!(mode(ExistingKind::CharDevice).unwrap(), WriteMode::Through);
        assert_eq!(mode(ExistingKind::Fifo).unwrap(), WriteMode::Through);
        let symlink = mode(ExistingKind::Symlink).unwrap_err().to_string();
        assert!(symlink.contains("symbolic link"), "{symlink}");
        assert!(mode(ExistingKind::Directory).is_err());
        assert!(mode(ExistingKind::BlockDevice).is_err());
        assert!(mode(ExistingKind::Socket).is_err());
    }

    /// The kind of a real path is read without following links.
    #[test]
    fn classifies_real_paths() {
        let kind = |p: &Path| existing_kind(std::fs::symlink_metadata(p).ok().as_ref());
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert_eq!(kind(&link), ExistingKind::Symlink);
        assert_eq!(kind(Path::new("/dev/null")), ExistingKind::CharDevice);
        assert_eq!(kind(dir.path()), ExistingKind::Directory);
        assert_eq!(kind(&dir.path().join("none")), ExistingKind::Missing);
    }

    /// /dev/null is written through and stays a character device; a symlink is refused untouched.
    #[test]
    fn device_written_through_and_symlink_refused() {
        let output = OutputFile::create(&OutputTarget::File("/dev/null".into())).unwrap();
        output.commit(|w| Ok(w.write_all(b"x 1\n")?)).unwrap();
        let file_type = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert!(file_type.is_char_device());

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("out.svg");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = OutputFile::create(&OutputTarget::File(link.clone()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    /// A FIFO without a reader fails at once (before sampling) with a hint, instead of hanging.
    #[test]
    fn fifo_without_reader_fails_early() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = OutputFile::create(&OutputTarget::File(fifo.clone()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("no reader"), "{error}");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }

    /// Names up to NAME_MAX bytes work (the temporary name stays short enough); longer ones are
    /// refused as too long, not as an unwritable directory.
    #[test]
    fn long_names() {
        let dir = tempfile::tempdir().unwrap();
        let longest = format!("{}.folded", "a".repeat(NAME_MAX - 7));
        let path = dir.path().join(&longest);
        let output = OutputFile::create(&OutputTarget::File(path.clone())).unwrap();
        output.commit(|w| Ok(w.write_all(b"x 1\n")?)).unwrap();
        assert!(path.exists());
        let too_long = dir.path().join(format!("{}.svg", "b".repeat(NAME_MAX)));
        let error = OutputFile::create(&OutputTarget::File(too_long))
            .err()
            .unwrap();
        assert!(error.to_string().contains("too long"), "{error}");
    }
}
