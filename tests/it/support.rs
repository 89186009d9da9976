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

/// Whether `wanted` occurs in `frames` in order, not necessarily adjacent: for checks that a chain is
/// absent; a chain that must be present is checked whole with [`has_chain`].
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

/// Whether `chain` occurs in `frames` as consecutive frames: `main;run;burn_a` must not match a
/// stack where another frame sits between two of them.
pub fn has_chain(frames: &[String], chain: &[&str]) -> bool {
    !chain.is_empty()
        && frames
            .windows(chain.len())
            .any(|window| window.iter().zip(chain).all(|(frame, want)| frame == want))
}

/// Samples in stacks whose root (process or thread name) satisfies `root`.
pub fn samples_of(stacks: &[FoldedStack], root: impl Fn(&str) -> bool) -> u64 {
    total(stacks, |s| root(&s.frames[0]))
}

/// CPU time (user + system, seconds) process `pid` has used so far, from `/proc/PID/stat`: the
/// target's own account of how much there was to sample. Works on zombies too, so a workload that
/// exited but is not yet reaped still answers.
pub fn cpu_seconds(pid: u32) -> f64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    // The command name (field 2) may contain spaces: fields are counted after its closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = fields
        .get(11..13)
        .unwrap_or_else(|| panic!("short {path}: {stat}"))
        .iter()
        .map(|f| {
            f.parse::<u64>()
                .unwrap_or_else(|_| panic!("bad {path}: {stat}"))
        })
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    ticks as f64 / per_second as f64
}

/// Tolerance of [`assert_samples_match_cpu`]: the cpu-clock event fires `hz` times per second of
/// CPU time, so a target's sample count is its CPU time times the frequency, give or take this.
pub const SAMPLE_TOTAL_TOLERANCE: f64 = 0.15;

/// Below this much CPU time a comparison with the sample total says nothing: the machine was too
/// busy for the target to run.
const MIN_MEASURED_CPU_SECONDS: f64 = 0.3;

/// Checks that `samples` of a target match the CPU time it used while sampled, `cpu_seconds`, at
/// `hz` samples per second, within [`SAMPLE_TOTAL_TOLERANCE`]. This is what catches samples the BPF
/// program drops without counting them: the product's own counters cannot.
pub fn assert_samples_match_cpu(
    what: &str,
    samples: u64,
    cpu_seconds: f64,
    hz: u64,
    stacks: &[FoldedStack],
) {
    assert!(
        cpu_seconds >= MIN_MEASURED_CPU_SECONDS,
        "{what}: the target used only {cpu_seconds:.2} s of CPU while sampled, too little to compare \
         (is the machine overloaded?)"
    );
    let expected = cpu_seconds * hz as f64;
    let deviation = (samples as f64 - expected) / expected;
    assert!(
        deviation.abs() <= SAMPLE_TOTAL_TOLERANCE,
        "{what}: {samples} samples for {cpu_seconds:.2} s of CPU at {hz} Hz (expected {expected:.0}, \
         {:+.1} %):\n{}",
        deviation * 100.0,
        describe(stacks)
    );
}

/// Online CPUs, from `/sys/devices/system/cpu/online` ("0-3,5").
fn online_cpus() -> usize {
    let path = "/sys/devices/system/cpu/online";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.trim()
        .split(',')
        .map(|range| {
            let bounds: Vec<usize> = range
                .split('-')
                .map(|n| n.parse().unwrap_or_else(|_| panic!("bad {path}: {text}")))
                .collect();
            match bounds[..] {
                [_] => 1,
                [first, last] => last - first + 1,
                _ => panic!("bad {path}: {text}"),
            }
        })
        .sum()
}

/// BPF links of type `perf` (a BPF program attached to a perf event) that `pid` holds, from the
/// `link_type` line of each `anon_inode:bpf_link` descriptor's fdinfo.
fn perf_links(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf_link")
        })
        .filter(|fd| {
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            std::fs::read_to_string(info).is_ok_and(|text| {
                text.lines()
                    .any(|line| line.split_whitespace().eq(["link_type:", "perf"]))
            })
        })
        .count()
}

/// emberprof samples through one cpu-clock event per online CPU, each attached through a BPF link.
fn sampling_links() -> usize {
    online_cpus()
}

/// Waits until the emberprof process `profiler` is sampling.
pub fn wait_until_sampling(profiler: &mut Child) {
    let wanted = sampling_links();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if perf_links(profiler.id()) >= wanted {
            return;
        }
        if let Ok(Some(status)) = profiler.try_wait() {
            panic!("emberprof exited ({status}) before it attached");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "emberprof did not attach its {wanted} cpu-clock events within 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the emberprof process `profiler` has stopped sampling (detached its cpu-clock events,
/// or exited): the targets' CPU time after this moment was not sampled, however long emberprof then
/// takes to write its output. emberprof must not block on a full stdout pipe before it detaches,
/// which holds: it writes its output after sampling.
pub fn wait_until_sampling_stopped(profiler: &mut Child) {
    let wanted = sampling_links();
    loop {
        if perf_links(profiler.id()) < wanted || !matches!(profiler.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs emberprof with `args`, which sample the processes `pids` (with `-p` or `--all`), asserting
/// success: its output, and the CPU seconds each of `pids` used while sampled.
pub fn record_measuring(args: &[&str], pids: &[u32]) -> (Output, Vec<f64>) {
    let mut profiler = emberprof()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emberprof");
    wait_until_sampling(&mut profiler);
    let before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    wait_until_sampling_stopped(&mut profiler);
    let after: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let output = profiler.wait_with_output().expect("wait for emberprof");
    assert!(
        output.status.success(),
        "emberprof {args:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let used = after
        .iter()
        .zip(before)
        .map(|(after, before)| after - before)
        .collect();
    (output, used)
}

/// [`record_measuring`] for one process writing folded stacks to stdout: stacks, stderr, and the
/// CPU seconds the process used while sampled.
pub fn record_pid_folded(args: &[&str], pid: u32) -> (Vec<FoldedStack>, String, f64) {
    let (output, cpu) = record_measuring(args, &[pid]);
    (
        parse_folded(&String::from_utf8_lossy(&output.stdout)),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        cpu[0],
    )
}

/// Runs `emberprof <options> -- COMMAND..` through bash, which reports (with `times`) the CPU time
/// of the command it waited for: emberprof holds the command until sampling is attached, so that is
/// exactly the CPU time it had to sample. Returns stacks, stderr and those CPU seconds; bash's own
/// samples are under the root `bash`, which callers filter out by root.
pub fn record_command_measuring(
    options: &[&str],
    command: &[&str],
) -> (Vec<FoldedStack>, String, f64) {
    record_command_measuring_in(None, options, command)
}

/// [`record_command_measuring`] in the working directory `cwd` (the test's own if `None`).
pub fn record_command_measuring_in(
    cwd: Option<&Path>,
    options: &[&str],
    command: &[&str],
) -> (Vec<FoldedStack>, String, f64) {
    let dir = scratch();
    let times = out_path(&dir, "times");
    let mut args: Vec<&str> = options.to_vec();
    args.extend([
        "--",
        "bash",
        "-c",
        r#"out=$1; shift; "$@"; status=$?; times > "$out"; exit $status"#,
        "bash",
        times.to_str().expect("UTF-8 temp path"),
    ]);
    args.extend(command);
    let mut profiler = emberprof();
    profiler.args(&args);
    if let Some(cwd) = cwd {
        profiler.current_dir(cwd);
    }
    let output = profiler.output().expect("run emberprof");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "emberprof {args:?} failed with {}:\n{stderr}",
        output.status
    );
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    let text = std::fs::read_to_string(&times)
        .unwrap_or_else(|e| panic!("bash wrote no `times` report ({e}):\n{stderr}"));
    // Second line: user and system time of the shell's children, as `0m1.234s 0m0.010s`.
    let children = text
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("bad `times` output {text:?}"));
    let cpu = children
        .split_whitespace()
        .map(|t| {
            let (minutes, seconds) = t
                .strip_suffix('s')
                .and_then(|t| t.split_once('m'))
                .unwrap_or_else(|| panic!("bad `times` output {text:?}"));
            let minutes: f64 = minutes
                .parse()
                .unwrap_or_else(|_| panic!("bad `times` {text:?}"));
            let seconds: f64 = seconds
                .parse()
                .unwrap_or_else(|_| panic!("bad `times` {text:?}"));
            minutes * 60.0 + seconds
        })
        .sum();
    (stacks, stderr, cpu)
}

/// Waits for the child `child` (reaping it) and returns its wait status and the CPU seconds it and
/// every descendant it reaped used, from `wait4`'s resource usage.
pub fn wait_with_cpu_seconds(child: Child) -> (i32, f64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; status and usage point to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (status, seconds(usage.ru_utime) + seconds(usage.ru_stime))
}
