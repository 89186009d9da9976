//! Helpers shared by the end-to-end tests: running emberprof, starting workloads, and (in the
//! submodules) reading folded stacks, measuring what a target had to sample, building `record`
//! command lines per backend, and running things as an unprivileged user.

mod attack;
mod backend;
mod burn;
mod child;
mod compile;
mod flood;
mod folded;
mod measure;
mod protobuf;
mod python;
mod sandbox;
mod source;
mod stop;
mod wall;

pub use attack::*;
pub use backend::*;
pub use burn::*;
pub use child::*;
pub use compile::*;
pub use flood::*;
pub use folded::*;
pub use measure::*;
pub use protobuf::*;
pub use python::*;
pub use sandbox::*;
pub use source::*;
pub use stop::*;
pub use wall::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The emberprof binary Cargo built for these tests.
pub fn emberprof() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_emberprof"));
    command.env_remove("SUDO_UID").env_remove("SUDO_GID");
    command
}

/// Held by every test that samples, and by every test that keeps both CPUs busy for seconds: two
/// of them at once would share two CPUs and skew each other's counts.
static SAMPLING: Mutex<()> = Mutex::new(());

/// Tests that sample take this lock (see [`SAMPLING`]). The guard also checks for root, failing
/// with instructions when the test cannot run.
pub fn kernel_test() -> MutexGuard<'static, ()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test loads BPF programs into the kernel and must run as root: \
             `sudo -E env PATH=$PATH cargo test --workspace` (CI runs `bash .ci/run` as root)"
        );
    }
    cpu_heavy_test()
}

/// A test that needs no root but keeps the CPUs busy for seconds takes this guard, so that no
/// sampling test runs beside it. (`report` of 8 MiB in a debug build beside `--all` made the
/// recorder symbolize that binary's 140 MB of DWARF in one loop iteration of 1.4 s, and short-lived
/// programs ended unnamed meanwhile.)
pub fn cpu_heavy_test() -> MutexGuard<'static, ()> {
    SAMPLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process killed and reaped when dropped, so that a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The duration (seconds) to give a workload a test stops itself: it must outlast recordings that
/// run until the target has had its CPU time, which on a busy machine take many times as long.
pub const UNTIL_KILLED: &str = "600";

/// A running example workload, killed when dropped.
pub struct Workload {
    child: KillOnDrop,
}

impl Workload {
    pub fn start(name: &str, args: &[&str]) -> Workload {
        let child = Command::new(emberprof_examples::path(name))
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        // Let it get past the loader and into its loop.
        std::thread::sleep(Duration::from_millis(100));
        Workload {
            child: KillOnDrop(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills the workload now but leaves it unreaped, so that its `/proc/PID/stat` (and CPU time)
    /// can still be read.
    pub fn kill_leaving_zombie(&self) {
        // SAFETY: signalling our own child, which is not reaped before the workload is dropped.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGKILL) };
    }
}

pub fn example(name: &str) -> String {
    emberprof_examples::path(name).display().to_string()
}

/// A scratch directory for output files.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// A path as an argument (the temporary directories are UTF-8).
pub fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The standard error of a finished command, as text.
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `output` (of `what`) succeeded; returns its stderr.
pub fn expect_success(output: &Output, what: &str) -> String {
    let stderr = stderr_text(output);
    assert!(
        output.status.success(),
        "{what} failed with {}:\n{stderr}",
        output.status
    );
    stderr
}

/// Asserts that `output` (of `what`) is a clean failure: exit status 1 (an error `main` reported,
/// not a panic, a signal or a usage error) with one line on stderr, which it returns.
pub fn expect_error_line(output: &Output, what: &str) -> String {
    let stderr = stderr_text(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: expected a clean failure (exit 1, not a panic or a signal):\n{stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{what}: one-line error expected:\n{stderr}"
    );
    stderr
}

/// Runs emberprof with `args`, asserting success, and returns its output.
pub fn run_ok(args: &[&str]) -> Output {
    let output = emberprof().args(args).output().expect("run emberprof");
    expect_success(&output, &format!("emberprof {args:?}"));
    output
}

/// Runs emberprof with `args`, asserting a clean one-line failure ([`expect_error_line`]): its
/// stderr.
pub fn run_error_line(args: &[&str]) -> String {
    let output = emberprof().args(args).output().expect("run emberprof");
    expect_error_line(&output, &format!("emberprof {args:?}"))
}

/// Runs emberprof with `args` (writing folded stacks to stdout), asserting success: the stacks and
/// the stderr text.
pub fn record_folded(args: &[&str]) -> (Vec<FoldedStack>, String) {
    let output = run_ok(args);
    (folded_stdout(&output), stderr_text(&output))
}

/// Removes, when dropped, the perf maps (`/tmp/perf-PID.map`) left by JIT runtimes a test started
/// (node and Python never remove theirs): those that appeared since the guard was made, of processes
/// gone by then. Left in /tmp, each is a stale map waiting for the next process given its PID.
pub struct PerfMapCleanup {
    before: Vec<PathBuf>,
}

impl PerfMapCleanup {
    pub fn new() -> PerfMapCleanup {
        PerfMapCleanup {
            before: perf_maps(),
        }
    }
}

impl Drop for PerfMapCleanup {
    fn drop(&mut self) {
        for (path, pid) in perf_maps().into_iter().filter_map(|path| {
            let pid = path
                .file_name()?
                .to_str()?
                .strip_prefix("perf-")?
                .strip_suffix(".map")?
                .parse::<i32>()
                .ok()?;
            Some((path, pid))
        }) {
            // SAFETY: signal 0 only checks that the process exists.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone && !self.before.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The perf maps in /tmp.
fn perf_maps() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("perf-") && name.ends_with(".map"))
        })
        .collect()
}

/// Fails, saying how to install it, unless Node.js runs.
pub fn assert_node_installed() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "this test needs Node.js: `apt-get install nodejs` (.ci/run installs it)"
    );
}

/// Where `program` is on PATH, as a shell would find it.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// The ELF entry point (`e_entry`) of an executable: where `_start` is in a stripped binary.
pub fn entry_point(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let field: [u8; 8] = bytes
        .get(24..32)
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("{} is not an ELF file", path.display()));
    u64::from_le_bytes(field)
}

/// Debian's openssl, resolved (so its stripped `_start` can be found from its entry point).
pub fn debian_openssl() -> PathBuf {
    let path = find_in_path("openssl").expect(
        "this test needs Debian's openssl: `apt-get install openssl` (.ci/run installs it)",
    );
    std::fs::canonicalize(&path).expect("resolve openssl")
}
