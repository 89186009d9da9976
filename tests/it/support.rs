//! Helpers shared by the end-to-end tests.

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

/// Tests that sample take this lock: two of them at once would share two CPUs and skew each other's
/// counts. The guard also checks for root, failing with instructions when the test cannot run.
pub fn kernel_test() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test loads BPF programs into the kernel and must run as root: \
             `sudo -E env PATH=$PATH cargo test --workspace` (CI runs `bash .ci/run` as root)"
        );
    }
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running example workload, killed when dropped.
pub struct Workload {
    child: Child,
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
        Workload { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn example(name: &str) -> String {
    emberprof_examples::path(name).display().to_string()
}

/// A scratch directory for output files.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Runs emberprof with `args`, asserting success, and returns its output.
pub fn run_ok(args: &[&str]) -> Output {
    let output = emberprof().args(args).output().expect("run emberprof");
    assert!(
        output.status.success(),
        "emberprof {args:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs emberprof with `args` (writing folded stacks to stdout), asserting success: the stacks and
/// the stderr text.
pub fn record_folded(args: &[&str]) -> (Vec<FoldedStack>, String) {
    let output = run_ok(args);
    (
        parse_folded(&String::from_utf8_lossy(&output.stdout)),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One folded line: frames root first, and its count.
#[derive(Clone, Debug)]
pub struct FoldedStack {
    pub frames: Vec<String>,
    pub count: u64,
}

pub fn parse_folded(text: &str) -> Vec<FoldedStack> {
    text.lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count in folded line {line:?}"));
            FoldedStack {
                frames: stack.split(';').map(str::to_owned).collect(),
                count: count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad count in folded line {line:?}")),
            }
        })
        .collect()
}

pub fn read_folded(path: &Path) -> Vec<FoldedStack> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_folded(&text)
}

/// Whether `wanted` occurs in `frames` in order, not necessarily adjacent.
pub fn has_subsequence(frames: &[String], wanted: &[&str]) -> bool {
    let mut wanted = wanted.iter().peekable();
    for frame in frames {
        if wanted.peek().is_some_and(|w| frame == *w) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}

/// Every stack, one per line, for failure messages.
pub fn describe(stacks: &[FoldedStack]) -> String {
    stacks
        .iter()
        .map(|s| format!("  {} {}", s.frames.join(";"), s.count))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn total(stacks: &[FoldedStack], filter: impl Fn(&FoldedStack) -> bool) -> u64 {
    stacks.iter().filter(|s| filter(s)).map(|s| s.count).sum()
}

pub fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
