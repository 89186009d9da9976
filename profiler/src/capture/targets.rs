//! Knowing when target processes have exited, through pidfds: a pidfd becomes readable when its
//! process terminates, and unlike a PID it cannot be recycled under us.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};

pub struct ProcessWatch {
    pidfd: OwnedFd,
    exited: bool,
}

impl ProcessWatch {
    /// Opens a watch on `pid`; fails with a clear message if there is no such process.
    pub fn open(pid: u32) -> Result<Self> {
        if pid == 0 {
            bail!("PID 0 is not a process");
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ESRCH) {
                bail!("no process with PID {pid}");
            }
            return Err(error).with_context(|| format!("cannot watch process {pid} (pidfd_open)"));
        }
        // SAFETY: a fresh fd we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(ProcessWatch {
            pidfd,
            exited: false,
        })
    }

    /// Whether the process has exited (checked without blocking).
    pub fn has_exited(&mut self) -> bool {
        if !self.exited {
            let mut poll_fd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            let ready = unsafe { libc::poll(&mut poll_fd, 1, 0) };
            self.exited = ready > 0 && poll_fd.revents & (libc::POLLIN | libc::POLLHUP) != 0;
        }
        self.exited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live process is not exited, a finished one is, a missing PID is a clear error.
    #[test]
    fn watches_process_lifetime() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let mut watch = ProcessWatch::open(child.id()).unwrap();
        assert!(!watch.has_exited());
        child.wait().unwrap();
        assert!(watch.has_exited());
        let error = ProcessWatch::open(i32::MAX as u32).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("no process with PID {}", i32::MAX)
        );
    }
}
