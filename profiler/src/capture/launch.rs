//! Launch mode: the command is forked but held before `exec` until the sampler is attached and its PID
//! is a target, so its very first instructions are sampled.
//!
//! std's `Command::spawn` cannot do this: it returns only after the child has exec'd. The child here
//! waits on a pipe instead, and exec failures come back through a second, close-on-exec pipe.
//!
//! Until its exec the child runs emberprof's code, and its exec is sampled (a few samples in
//! `execve`, with emberprof's user stack). It renames itself [`PRE_EXEC_NAME`] while it waits, so
//! those samples can be told from the command's own and left out.
//!
//! Under sudo the child takes the invoking user's identity just before exec (see `identity`).

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::identity::{self, RunAs};
use crate::sample::StackSample;

/// The process name of the launched child until it execs the command (15 bytes at most, the
/// kernel's limit).
pub const PRE_EXEC_NAME: &std::ffi::CStr = c"emberprof-exec";

/// What failed in the child, sent with the errno through the error pipe.
const FAILED_EXEC: i32 = 0;
const FAILED_CREDENTIALS: i32 = 1;

/// A forked child waiting for [`PausedCommand::start`] before it execs the command.
pub struct PausedCommand {
    pid: libc::pid_t,
    display: String,
    go: OwnedFd,
    exec_error: OwnedFd,
    /// Cleared once started; until then, dropping kills the child.
    armed: bool,
}

/// A started command.
pub struct RunningCommand {
    pid: libc::pid_t,
    display: String,
    status: Option<ExitStatus>,
}

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The status a shell would report: the exit code, or 128 + the signal number.
    pub fn shell_code(self) -> u8 {
        match self {
            ExitStatus::Exited(code) => code as u8,
            ExitStatus::Signaled(signal) => (128 + signal) as u8,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signaled(signal) => write!(f, "was killed by signal {signal}"),
        }
    }
}

impl PausedCommand {
    /// Forks a child that will exec `argv` (looked up in PATH like a shell does) once started, as the
    /// user `run_as` resolves to.
    pub fn spawn(argv: &[OsString], run_as: &RunAs) -> Result<Self> {
        let Some(program) = argv.first() else {
            bail!("no command given after --")
        };
        let display = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let path = resolve_in_path(program)
            .with_context(|| format!("cannot run {:?}", program.to_string_lossy()))?;
        // Everything the child needs is allocated before fork: between fork and exec only
        // async-signal-safe calls are allowed.
        let path = cstring(path.as_os_str())?;
        let args: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let credentials = identity::resolve(run_as)?;
        let environment: Vec<CString> = match &credentials {
            Some(credentials) => identity::environment_with(&credentials.environment)
                .iter()
                .map(|entry| cstring(entry))
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let mut env_ptrs: Vec<*const libc::c_char> =
            environment.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        if let Some(credentials) = &credentials {
            log::info!(
                "running {display} as user {} (group {})",
                credentials.uid,
                credentials.gid
            );
        }

        let (go_read, go_write) = pipe()?;
        let (error_read, error_write) = pipe()?;
        // SAFETY: fork in a process that has not started other threads yet; the child only calls
        // async-signal-safe functions (read, setgroups, setresgid, setresuid, execv(e), write,
        // _exit) on memory prepared above.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork failed");
        }
        if pid == 0 {
            // Child.
            // SAFETY: see above.
            unsafe {
                // Our copies of the parent's ends: without closing them, a dead parent would
                // never give the read below its EOF.
                libc::close(go_write.as_raw_fd());
                libc::close(error_read.as_raw_fd());
                libc::prctl(libc::PR_SET_NAME, PRE_EXEC_NAME.as_ptr(), 0, 0, 0);
                let mut byte = 0u8;
                if libc::read(go_read.as_raw_fd(), (&raw mut byte).cast(), 1) != 1 {
                    libc::_exit(127); // the profiler died before starting us
                }
                let report = |stage: i32| {
                    let failure = [stage, *libc::__errno_location()];
                    libc::write(
                        error_write.as_raw_fd(),
                        failure.as_ptr().cast(),
                        size_of_val(&failure),
                    );
                    libc::_exit(127);
                };
                if let Some(credentials) = &credentials {
                    // Groups first, then the group ID, then the user ID: after setresuid we could no
                    // longer change the others. setres* also set the saved IDs, so nothing can
                    // switch back to root.
                    if libc::setgroups(credentials.groups.len(), credentials.groups.as_ptr()) != 0
                        || libc::setresgid(credentials.gid, credentials.gid, credentials.gid) != 0
                        || libc::setresuid(credentials.uid, credentials.uid, credentials.uid) != 0
                    {
                        report(FAILED_CREDENTIALS);
                    }
                    libc::execve(path.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
                } else {
                    libc::execv(path.as_ptr(), arg_ptrs.as_ptr());
                }
                report(FAILED_EXEC);
            }
        }
        drop(go_read);
        drop(error_write);
        Ok(PausedCommand {
            pid,
            display,
            go: go_write,
            exec_error: error_read,
            armed: true,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the child exec, and reports whether the exec worked.
    pub fn start(mut self) -> Result<RunningCommand> {
        self.armed = false;
        // SAFETY: writing one byte from a valid buffer to an fd we own.
        let written = unsafe { libc::write(self.go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        let mut running = RunningCommand {
            pid: self.pid,
            display: std::mem::take(&mut self.display),
            status: None,
        };
        if written != 1 {
            running.wait()?;
            bail!(
                "cannot start {}: the child process is gone",
                running.display
            );
        }
        let mut failure = [0i32; 2];
        // SAFETY: reading into a local array. EOF (0) means exec closed the close-on-exec pipe:
        // success.
        let read = unsafe {
            libc::read(
                self.exec_error.as_raw_fd(),
                failure.as_mut_ptr().cast(),
                size_of_val(&failure),
            )
        };
        if read == size_of_val(&failure) as isize {
            running.wait()?;
            let [stage, errno] = failure;
            let error = std::io::Error::from_raw_os_error(errno);
            if stage == FAILED_CREDENTIALS {
                bail!(
                    "cannot run {} as the requested user: {error} (pass --run-as-root to keep root)",
                    running.display
                );
            }
            bail!("cannot run {}: {error}", running.display);
        }
        Ok(running)
    }
}

impl Drop for PausedCommand {
    /// A paused child that is never started (setup failed) is killed and reaped.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

impl RunningCommand {
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The exit status if the command has ended, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Blocks until the command ends.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_with(0)? {
                return Ok(status);
            }
        }
    }

    /// Sends `signal` if the command is still running.
    pub fn signal(&mut self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: signalling our own unreaped child (its PID cannot have been reused).
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    fn wait_with(&mut self, flags: i32) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        // SAFETY: waiting for our own child.
        let ret = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
        if ret < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(error).context("waitpid failed");
        }
        if ret == 0 {
            return Ok(None);
        }
        let status = if libc::WIFSIGNALED(raw) {
            ExitStatus::Signaled(libc::WTERMSIG(raw))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(raw))
        };
        self.status = Some(status);
        Ok(Some(status))
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2 failed");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(text: &OsStr) -> Result<CString> {
    CString::new(text.as_bytes())
        .with_context(|| format!("{:?} contains a NUL byte", text.to_string_lossy()))
}

/// Finds `program` the way execvp does: a name with a slash is a path, anything else is searched in PATH.
fn resolve_in_path(program: &OsStr) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        return Ok(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .with_context(|| format!("command not found in PATH: {}", program.to_string_lossy()))
}

/// Removes the samples of the launched child `pid` from before it exec'd the command, and returns
/// how many stacks that removed: those of the program instance that was named [`PRE_EXEC_NAME`]
/// (the kernel renames the process midway through `execve`, and the instance ends with it).
pub fn remove_pre_exec_samples(pid: u32, samples: &mut Vec<StackSample>) -> usize {
    let pre_exec: std::collections::HashSet<u32> = samples
        .iter()
        .filter(|s| s.pid == pid && PRE_EXEC_NAME.to_str() == Ok(s.process_name.as_str()))
        .map(|s| s.instance)
        .collect();
    let before = samples.len();
    samples.retain(|s| s.pid != pid || !pre_exec.contains(&s.instance));
    before - samples.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command runs only once started, and its exit status comes back.
    #[test]
    fn paused_command_runs_after_start() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = format!("touch {}; exit 7", marker.display());
        let paused =
            PausedCommand::spawn(&["sh".into(), "-c".into(), script.into()], &RunAs::Root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!marker.exists(), "ran before start");
        // Named so that its samples before the exec can be left out.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", paused.pid())).unwrap();
        assert_eq!(comm.trim_end(), PRE_EXEC_NAME.to_str().unwrap());
        let mut running = paused.start().unwrap();
        assert_eq!(running.wait().unwrap(), ExitStatus::Exited(7));
        assert!(marker.exists());
    }

    /// A command that does not exist fails before fork; one that cannot be exec'd fails at start.
    #[test]
    fn bad_commands_fail_clearly() {
        let error = PausedCommand::spawn(&["no-such-command-emberprof".into()], &RunAs::Root)
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").contains("command not found"),
            "{error:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_executable = dir.path().join("data");
        std::fs::write(&not_executable, "x").unwrap();
        let error = PausedCommand::spawn(&[not_executable.into()], &RunAs::Root)
            .unwrap()
            .start()
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").contains("Permission denied"),
            "{error:#}"
        );
    }

    /// The child's samples from before its exec go, whole instance included (its samples after
    /// the kernel renamed it); the command's, and other processes', stay.
    #[test]
    fn removes_pre_exec_samples() {
        let sample = |pid, instance, name: &str| StackSample {
            pid,
            tid: pid,
            instance,
            process_name: name.into(),
            thread_name: name.into(),
            kernel_ips: vec![1],
            user_ips: vec![],
            user_stack: crate::sample::UserStackSource::None,
            python: None,
            count: 1,
            off_cpu: false,
        };
        let mut samples = vec![
            sample(40, 1, "emberprof-exec"),
            sample(40, 1, "burn"),
            sample(40, 2, "burn"),
            sample(41, 1, "emberprof-exec"),
        ];
        assert_eq!(remove_pre_exec_samples(40, &mut samples), 2);
        assert_eq!(
            samples,
            [sample(40, 2, "burn"), sample(41, 1, "emberprof-exec")]
        );
    }

    /// `--user nobody`: the command runs with nobody's user, group and HOME (needs root).
    #[test]
    fn runs_as_another_user() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test changes user IDs and must run as root (sudo cargo test)"
        );
        // The child's output is not captured: it checks its identity itself and exits 0 or 1.
        let script = r#"[ "$(id -u) $(id -g) $(id -G) $USER $LOGNAME" = "65534 65534 65534 nobody nobody" ] && [ "$HOME" != /root ]"#;
        let paused = PausedCommand::spawn(
            &["sh".into(), "-c".into(), script.into()],
            &RunAs::User("nobody".into()),
        )
        .unwrap();
        let mut running = paused.start().unwrap();
        assert_eq!(running.wait().unwrap(), ExitStatus::Exited(0));
    }

    /// Signal deaths map to 128 + signal, like a shell.
    #[test]
    fn shell_codes() {
        assert_eq!(ExitStatus::Exited(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signaled(9).shell_code(), 137);
    }
}
