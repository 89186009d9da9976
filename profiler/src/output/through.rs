//! Writing *through* an existing FIFO or character device (`-o /dev/null`, `-o /tmp/pipe`), as a
//! shell's `>` does. Two things make that dangerous for a root emberprof, both closed here:
//! - In a sticky directory anyone can write to (`/tmp`), another user can plant a FIFO at the name
//!   root will write: it would receive the profile, and by never reading it, hold emberprof. As the
//!   kernel's `fs.protected_fifos` does for `O_CREAT` opens, such a node is only written when it
//!   belongs to us (or the user who ran sudo) or to the directory's owner.
//! - A reader that stops reading blocks the writer forever. Writes wait for the reader as long as
//!   it takes, but give up when a stop signal arrives meanwhile: Ctrl-C or SIGTERM always ends
//!   emberprof.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::node::{choose_write_mode, cstring, existing_kind, open_raw, sudo_ids, WriteMode};

/// How often a write that waits for its reader looks for a stop signal.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// An existing FIFO or character device, open for writing.
pub struct ThroughOutput {
    destination: PathBuf,
    file: File,
}

impl ThroughOutput {
    pub fn open(destination: PathBuf) -> Result<Self> {
        let cannot = || format!("cannot write output {}", destination.display());
        // O_NONBLOCK so that a FIFO without a reader fails now (ENXIO) instead of hanging before
        // sampling starts; writes then wait for the reader in `ThroughWriter`, watching signals.
        let fd = open_raw(
            libc::AT_FDCWD,
            &cstring(destination.as_os_str())?,
            libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0,
        )
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ENXIO) => anyhow::anyhow!(
                "cannot write output {}: the FIFO has no reader; start the reader first",
                destination.display()
            ),
            _ => anyhow::Error::new(error).context(cannot()),
        })?;
        let file = File::from(fd);
        // The node may have been swapped between the lstat and the open: judge what was opened.
        let metadata = file.metadata().with_context(cannot)?;
        if choose_write_mode(existing_kind(Some(&metadata)), &destination)? != WriteMode::Through {
            bail!(
                "output {} changed while it was being opened; try again",
                destination.display()
            );
        }
        refuse_planted(&destination, &metadata)?;
        Ok(ThroughOutput { destination, file })
    }

    /// Writes the content produced by `write` into the node.
    pub fn commit(self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        let cannot = || format!("cannot write {}", self.destination.display());
        let mut writer = BufWriter::new(ThroughWriter {
            file: &self.file,
            signals_before: crate::interrupt::stop_signals_seen(),
        });
        write(&mut writer).with_context(cannot)?;
        writer.flush().with_context(cannot)
    }
}

/// Refuses a FIFO or device that another user may have planted: in a sticky directory writable by
/// others, owned neither by us, nor by the user who ran sudo, nor by the directory's owner.
fn refuse_planted(destination: &Path, node: &std::fs::Metadata) -> Result<()> {
    let directory = match destination.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let directory_metadata = std::fs::metadata(directory)
        .with_context(|| format!("cannot write output {}", destination.display()))?;
    let mode = directory_metadata.mode();
    let shared = mode & libc::S_ISVTX != 0 && mode & 0o022 != 0;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let trusted = [
        Some(me),
        sudo_ids().map(|(uid, _)| uid),
        Some(directory_metadata.uid()),
    ];
    if !shared || trusted.contains(&Some(node.uid())) {
        return Ok(());
    }
    bail!(
        "output {} is a {} owned by another user (uid {}) in {}, a directory others can write to: \
         it may have been planted to read or hold the profile; remove it, or write the output to a \
         directory only you can write",
        destination.display(),
        if node.file_type().is_fifo() {
            "FIFO"
        } else {
            "device"
        },
        node.uid(),
        directory.display()
    )
}

/// Writes to a non-blocking descriptor, waiting for room as long as the reader needs, unless a
/// stop signal arrives while it waits.
struct ThroughWriter<'a> {
    file: &'a File,
    /// Stop signals seen before the output was written: one that ended the recording does not end
    /// the output.
    signals_before: usize,
}

impl Write for ThroughWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match (&*self.file).write(buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait_for_room()?
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ThroughWriter<'_> {
    fn wait_for_room(&self) -> std::io::Result<()> {
        let mut poll_fd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        loop {
            if crate::interrupt::stop_signals_seen() > self.signals_before {
                return Err(std::io::Error::other(
                    "its reader stopped reading, and emberprof was asked to stop: output abandoned",
                ));
            }
            // SAFETY: one valid pollfd; EINTR (a signal) just ends the wait early.
            let ready =
                unsafe { libc::poll(&mut poll_fd, 1, SIGNAL_CHECK.as_millis() as libc::c_int) };
            if ready > 0 {
                return Ok(());
            }
        }
    }
}
