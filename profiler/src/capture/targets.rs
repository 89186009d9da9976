//! What to profile, and knowing when target processes have exited, through pidfds: a pidfd becomes
//! readable when its process terminates, and unlike a PID it cannot be recycled under us.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};

/// What to profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// These processes, all their threads, and (with `follow_children`) what they fork.
    Pids(Vec<u32>),
    /// Everything on every CPU.
    AllProcesses,
    /// A command launched by emberprof.
    Command(Vec<OsString>),
}

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
        // pidfd_open only takes a process: for a thread ID it fails with ENOENT, which reads as "No
        // such file or directory". Say what the ID is instead. Profiling the whole process behind
        // the user's back would be a guess at what they meant, so this is an error naming the PID.
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some((process, name)) = thread_of_other_process(&status, pid) {
                bail!(
                    "{pid} is a thread of process {process} ({name}), not a process: profile the \
                     process with -p {process}"
                );
            }
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

/// From `/proc/ID/status`: when `id` is a thread that is not its process's main thread, the process
/// ID (Tgid) and the thread's name (made printable: the process chose it).
fn thread_of_other_process(status: &str, id: u32) -> Option<(u32, String)> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .map(str::trim)
    };
    let tgid: u32 = field("Tgid:")?.parse().ok()?;
    if tgid == id {
        return None;
    }
    let name = crate::text::printable(field("Name:").unwrap_or("?")).into_owned();
    Some((tgid, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's status names its process; a process's own status does not.
    #[test]
    fn recognises_threads() {
        let status =
            "Name:\tworker\u{1b}\nUmask:\t0022\nState:\tR\nTgid:\t100\nNgid:\t0\nPid:\t101\n";
        assert_eq!(
            thread_of_other_process(status, 101),
            Some((100, "worker\u{FFFD}".to_owned()))
        );
        assert_eq!(thread_of_other_process(status, 100), None);
        assert_eq!(thread_of_other_process("Name:\tx\n", 5), None);
    }

    /// A real thread ID is refused with its process's PID.
    #[test]
    fn refuses_thread_ids() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            sender.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = wait.recv();
        });
        let tid = receiver.recv().unwrap();
        let error = ProcessWatch::open(tid).err().unwrap().to_string();
        done.send(()).unwrap();
        thread.join().unwrap();
        let pid = std::process::id();
        assert!(
            error.contains(&format!("{tid} is a thread of process {pid}"))
                && error.contains(&format!("-p {pid}")),
            "{error}"
        );
    }

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
