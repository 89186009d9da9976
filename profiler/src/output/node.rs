//! What exists at an output path and how it is therefore written (replaced atomically, written
//! through, or refused), and the raw `openat` both writers use. Shared by `file` (the atomic
//! writer) and `through` (FIFOs and devices).

use std::ffi::{CString, OsStr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// What exists at the output path, which decides how it is written. Kept separate from the system
/// calls so the choice is tested on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingKind {
    Missing,
    Regular,
    Directory,
    Symlink,
    CharDevice,
    Fifo,
    BlockDevice,
    Socket,
}

/// How an output path is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Temporary file + rename.
    Atomic,
    /// Open the existing node and write into it.
    Through,
}

/// The write mode for what exists at the destination, or why it is refused.
pub fn choose_write_mode(kind: ExistingKind, destination: &Path) -> Result<WriteMode> {
    let shown = destination.display();
    match kind {
        ExistingKind::Missing | ExistingKind::Regular => Ok(WriteMode::Atomic),
        ExistingKind::CharDevice | ExistingKind::Fifo => Ok(WriteMode::Through),
        ExistingKind::Directory => bail!(
            "output {shown} is a directory; give a file name such as {shown}/flamegraph.svg"
        ),
        ExistingKind::Symlink => bail!(
            "output {shown} is a symbolic link: emberprof neither follows nor replaces it (another user \
             could have pointed it anywhere); name the file it points to, or remove the link (for \
             standard output, use -o -)"
        ),
        ExistingKind::BlockDevice => bail!("output {shown} is a block device; refusing to write to it"),
        ExistingKind::Socket => bail!("output {shown} is a socket; refusing to write to it"),
    }
}

pub fn existing_kind(metadata: Option<&std::fs::Metadata>) -> ExistingKind {
    let Some(metadata) = metadata else {
        return ExistingKind::Missing;
    };
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        ExistingKind::Symlink
    } else if file_type.is_dir() {
        ExistingKind::Directory
    } else if file_type.is_char_device() {
        ExistingKind::CharDevice
    } else if file_type.is_fifo() {
        ExistingKind::Fifo
    } else if file_type.is_block_device() {
        ExistingKind::BlockDevice
    } else if file_type.is_socket() {
        ExistingKind::Socket
    } else {
        ExistingKind::Regular
    }
}

/// The user who ran `sudo`, from SUDO_UID/SUDO_GID.
pub fn sudo_ids() -> Option<(u32, u32)> {
    let id = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

pub fn cstring(text: &OsStr) -> Result<CString> {
    CString::new(text.as_bytes())
        .with_context(|| format!("{:?} contains a NUL byte", text.to_string_lossy()))
}

pub fn open_raw(
    directory: libc::c_int,
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    // SAFETY: openat with a NUL-terminated name; the returned fd is new and ours.
    let fd = unsafe { libc::openat(directory, name.as_ptr(), flags, libc::c_uint::from(mode)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
