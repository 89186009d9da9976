//! Temporary output files left behind by runs that were killed (SIGKILL, a crash, a power cut).
//!
//! Each run names its temporary file `.NAME.emberprof-PID-START-RANDOM.tmp`, with its own PID and
//! start time (clock ticks since boot, field 22 of `/proc/PID/stat`), so a later run writing NAME in
//! the same directory can tell whether the writer is gone: no such process, or a different process
//! with a recycled PID. Such a file is removed only if it is a regular file owned by this user; a file
//! whose writer still runs (another emberprof writing the same output) is left alone.
//!
//! The directory may be writable by other users (`/tmp`), so everything goes through the directory
//! descriptor the output is created in: `fstatat` without following symlinks, then `unlinkat`, which
//! removes a name and never follows one. In a sticky directory nobody else can rename over a file of
//! ours between the two calls.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The part of a temporary file's name that identifies this run, after `.NAME.`.
pub fn writer_tag() -> String {
    let pid = std::process::id();
    format!("emberprof-{pid}-{}-", start_time(pid).unwrap_or(0))
}

/// Removes the temporary files whose name starts with `.{shown_name}.emberprof-` in `directory`
/// whose writer is gone; returns how many.
pub fn remove_stale_temp_files(directory: &OwnedFd, shown_name: &[u8]) -> usize {
    // An O_PATH descriptor cannot be listed; its /proc/self/fd link names the same directory.
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", directory.as_raw_fd())) else {
        return 0;
    };
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(shown_name);
    prefix.extend_from_slice(b".emberprof-");
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(writer) = name
            .as_bytes()
            .strip_prefix(prefix.as_slice())
            .and_then(|n| n.strip_suffix(b".tmp"))
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(parse_writer)
        else {
            continue;
        };
        if writer_alive(writer) {
            continue;
        }
        let Ok(c_name) = CString::new(name.as_bytes()) else {
            continue;
        };
        // A planted symlink or a file of another user is not ours: left alone.
        if !is_own_regular_file(directory, &c_name, uid) {
            continue;
        }
        // SAFETY: a NUL-terminated name relative to a directory descriptor we own.
        if unsafe { libc::unlinkat(directory.as_raw_fd(), c_name.as_ptr(), 0) } == 0 {
            log::info!(
                "removed {}, left by an earlier run (PID {}) that was killed",
                shown(&name),
                writer.0
            );
            removed += 1;
        } else {
            log::warn!(
                "cannot remove {}, left by a killed run: {}",
                shown(&name),
                std::io::Error::last_os_error()
            );
        }
    }
    removed
}

fn shown(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

fn is_own_regular_file(directory: &OwnedFd, name: &CString, uid: libc::uid_t) -> bool {
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
    ret == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFREG && stat.st_uid == uid
}

/// (PID, start time) from `PID-START-RANDOM`.
fn parse_writer(tag: &str) -> Option<(u32, u64)> {
    let mut parts = tag.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

fn writer_alive((pid, start): (u32, u64)) -> bool {
    // A start time that could not be read when the file was made (0) cannot be checked: assume alive.
    start == 0 || start_time(pid) == Some(start)
}

/// A process's start time in clock ticks since boot, `None` if there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')': split after the last.
    let (_, after_name) = stat.rsplit_once(')')?;
    // Fields from 3 on; the start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: open with a NUL-terminated path; the descriptor is new and ours.
        let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// Files of a gone writer are removed; a live writer's, a foreign name and a symlink are kept.
    #[test]
    fn removes_only_files_of_gone_writers() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = writer_tag();
        let files = [
            format!(".out.svg.emberprof-{dead}-12345-abc123.tmp"),
            format!(".out.svg.{live}xyz789.tmp"),
            ".out.svg.other-123-1-x.tmp".to_owned(),
            format!(".other.svg.emberprof-{dead}-12345-abc123.tmp"),
        ];
        for name in &files {
            std::fs::write(dir.path().join(name), "partial").unwrap();
        }
        let link = format!(".out.svg.emberprof-{dead}-999-link00.tmp");
        std::os::unix::fs::symlink(dir.path().join(&files[2]), dir.path().join(&link)).unwrap();

        let fd = open_dir(dir.path());
        assert_eq!(remove_stale_temp_files(&fd, b"out.svg"), 1);
        let exists = |name: &str| dir.path().join(name).symlink_metadata().is_ok();
        assert!(!exists(&files[0]), "stale file kept");
        assert!(exists(&files[1]), "live writer's file removed");
        assert!(
            exists(&files[2]) && exists(&files[3]),
            "foreign file removed"
        );
        assert!(exists(&link), "symlink removed");
    }

    /// Our own start time is read, and the tag parses back to our PID and start time.
    #[test]
    fn tag_round_trips() {
        let name = format!("{}abc123", writer_tag());
        let tag = name.strip_prefix("emberprof-").unwrap();
        let (pid, start) = parse_writer(tag).unwrap();
        assert_eq!(pid, std::process::id());
        assert!(start > 0);
        assert!(writer_alive((pid, start)));
    }
}
