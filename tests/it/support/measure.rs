//! How much a target had to sample: its own CPU time while emberprof sampled it, so that a test
//! judges the samples against those it could have had (CPU seconds × frequency), not against a
//! count fixed for a quiet machine. On a busy machine a target gets less CPU and fewer samples, and
//! both sides of the comparison shrink together.

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use super::folded::{describe, folded_stdout, FoldedStack};
use super::{emberprof, expect_success, path_arg, scratch, stderr_text};

/// CPU time (user + system, seconds) process `pid` has used so far, from `/proc/PID/stat`: the
/// target's own account of how much there was to sample. Works on zombies too, so a workload that
/// exited but is not yet reaped still answers.
pub fn cpu_seconds_used(pid: u32) -> f64 {
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

/// Waits for the child `child` (reaping it) and returns its wait status and the CPU seconds it and
/// every descendant it reaped used, from `wait4`'s resource usage.
pub fn reap_with_cpu_seconds(child: Child) -> (i32, f64) {
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

/// Tolerance of [`assert_samples_match_cpu`] when samples are plenty: the cpu-clock event fires
/// `hz` times per second of CPU time, so a target's sample count is its CPU time times the
/// frequency, give or take this.
pub const SAMPLE_TOTAL_TOLERANCE: f64 = 0.15;

/// Below this many expected samples a comparison with the sample total says nothing: the machine
/// was too busy for the target to run.
const MIN_EXPECTED_SAMPLES: f64 = 60.0;

/// With few samples the tolerance widens to this many over the square root of the expected count
/// (four standard deviations, were the samples a Poisson count): the ends of the sampled window are
/// known to a few milliseconds, which weigh more in a short one, and the check must hold on a
/// machine busy enough to give a target a tenth of a CPU.
const SAMPLE_TOTAL_SIGMAS: f64 = 4.0;

/// Checks that `samples` of a target match the CPU time it used while sampled, `cpu_seconds`, at
/// `hz` samples per second, within [`SAMPLE_TOTAL_TOLERANCE`] (wider for small counts). This is
/// what catches samples a backend drops without counting them: the product's own counters cannot.
pub fn assert_samples_match_cpu(
    what: &str,
    samples: u64,
    cpu_seconds: f64,
    hz: u64,
    stacks: &[FoldedStack],
) {
    let expected = cpu_seconds * hz as f64;
    assert!(
        expected >= MIN_EXPECTED_SAMPLES,
        "{what}: the target used only {cpu_seconds:.2} s of CPU while sampled ({expected:.0} \
         samples at {hz} Hz), too little to compare (is the machine overloaded?)"
    );
    let tolerance = SAMPLE_TOTAL_TOLERANCE.max(SAMPLE_TOTAL_SIGMAS / expected.sqrt());
    let deviation = (samples as f64 - expected) / expected;
    assert!(
        deviation.abs() <= tolerance,
        "{what}: {samples} samples for {cpu_seconds:.2} s of CPU at {hz} Hz (expected {expected:.0}, \
         {:+.1} %, tolerance {:.1} %):\n{}",
        deviation * 100.0,
        tolerance * 100.0,
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

/// What a profiler process holds while it samples, per backend: the BPF backend one BPF link of
/// type `perf` per CPU (aya attaches through links and keeps no perf event descriptor), the perf
/// backend one perf event descriptor per CPU and target thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SamplingHandles {
    bpf_perf_links: usize,
    perf_events: usize,
}

impl SamplingHandles {
    fn of(pid: u32) -> SamplingHandles {
        let mut handles = SamplingHandles::default();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return handles;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if target.as_os_str() == "anon_inode:[perf_event]" {
                handles.perf_events += 1;
            } else if target.as_os_str() == "anon_inode:bpf_link" {
                let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
                // The `link_type` line of the link's fdinfo: `perf` is a program on a perf event.
                if std::fs::read_to_string(info).is_ok_and(|text| {
                    text.lines()
                        .any(|line| line.split_whitespace().eq(["link_type:", "perf"]))
                }) {
                    handles.bpf_perf_links += 1;
                }
            }
        }
        handles
    }

    /// Whether either backend has its sampling events open on every CPU.
    fn sampling(self, cpus: usize) -> bool {
        self.bpf_perf_links >= cpus || self.perf_events >= cpus
    }
}

/// Waits until the emberprof process `profiler` is sampling, with either backend.
pub fn wait_until_sampling(profiler: &mut Child) {
    let cpus = online_cpus();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if SamplingHandles::of(profiler.id()).sampling(cpus) {
            return;
        }
        if let Ok(Some(status)) = profiler.try_wait() {
            panic!("emberprof exited ({status}) before it attached");
        }
        assert!(
            Instant::now() < deadline,
            "emberprof did not open its {cpus} sampling events within 30 s"
        );
        std::thread::sleep(POLL);
    }
}

/// How often a [`CpuWatch`] reads the targets' CPU time: the error it leaves on each end of the
/// sampled window.
const POLL: Duration = Duration::from_millis(5);

/// The CPU time of some processes, read every [`POLL`] for as long as an emberprof process holds
/// its sampling events, in a thread of its own (so that the test can signal emberprof meanwhile).
///
/// The sampled window is taken to be the summary's duration, ending when the events were closed.
/// Neither end can be seen exactly from outside: the perf backend opens its events some time
/// before it enables them (it loads the kernel's symbols in between) and closes them some time
/// after it disables them (it drains their buffers first), both longer on a busy machine and in
/// a debug build. A window of the right length a little late holds as much of a steadily busy
/// target's CPU time as the true one. The summary rounds to 0.1 s: ±2.5 % of a 2 s window.
pub struct CpuWatch {
    watcher: std::thread::JoinHandle<Vec<(Instant, Vec<f64>)>>,
}

impl CpuWatch {
    /// Waits until `profiler` samples (failing if it ends first), then watches `pids`.
    pub fn start(profiler: &mut Child, pids: &[u32]) -> CpuWatch {
        wait_until_sampling(profiler);
        let profiler = profiler.id();
        let pids = pids.to_vec();
        let cpus = online_cpus();
        let watcher = std::thread::spawn(move || {
            let read = || -> Vec<f64> { pids.iter().map(|&pid| cpu_seconds_used(pid)).collect() };
            let mut points = vec![(Instant::now(), read())];
            // A profiler that has exited holds no descriptors: this ends with it too.
            while SamplingHandles::of(profiler).sampling(cpus) {
                std::thread::sleep(POLL);
                points.push((Instant::now(), read()));
            }
            points.push((Instant::now(), read()));
            points
        });
        CpuWatch { watcher }
    }

    /// Once the profiler has written `stderr` (its summary) and exited: the CPU seconds each
    /// process used while it sampled.
    pub fn used(self, stderr: &str) -> Vec<f64> {
        let points = self
            .watcher
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (end, at_end) = points.last().expect("at least two readings");
        let sampled = Duration::from_secs_f64(summary_seconds(stderr));
        let start = end.checked_sub(sampled).unwrap_or(points[0].0);
        let (_, at_start) = points
            .iter()
            .find(|(time, _)| *time >= start)
            .unwrap_or(&points[0]);
        at_end
            .iter()
            .zip(at_start)
            .map(|(end, start)| end - start)
            .collect()
    }
}

/// Most wall-clock time [`record_for_cpu`] waits for its target to use its CPU time: past it the
/// machine is too busy for the test to say anything.
const MAX_WAIT_FOR_CPU: Duration = Duration::from_secs(120);

/// Runs emberprof with `args` (an open-ended recording: no `-d`) until the process `pids[0]` has
/// used `cpu_seconds` of CPU time while sampled, then stops it as Ctrl-C does. A recording of a
/// fixed duration gives a target on a busy machine a fraction of its CPU time and its samples: this
/// one gives every test the samples its checks need, however busy the machine. Asserts success;
/// returns the output and the CPU seconds each of `pids` used while sampled.
pub fn record_for_cpu(args: &[&str], pids: &[u32], cpu_seconds: f64) -> (Output, Vec<f64>) {
    let mut profiler = emberprof()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emberprof");
    let watch = CpuWatch::start(&mut profiler, pids);
    wait_for_cpu(pids[0], cpu_seconds, &mut profiler);
    // SAFETY: signalling our own child (at worst one that has exited and is not yet reaped).
    unsafe { libc::kill(profiler.id() as libc::pid_t, libc::SIGINT) };
    let output = profiler.wait_with_output().expect("wait for emberprof");
    let stderr = expect_success(&output, &format!("emberprof {args:?}"));
    (output, watch.used(&stderr))
}

/// Waits until process `pid` has used `cpu_seconds` more CPU time, or `profiler` has ended: the
/// moment a test that stops a recording itself has samples enough, however busy the machine.
pub fn wait_for_cpu(pid: u32, cpu_seconds: f64, profiler: &mut Child) {
    let from = cpu_seconds_used(pid);
    let started = Instant::now();
    let mut used = 0.0;
    while used < cpu_seconds && matches!(profiler.try_wait(), Ok(None)) {
        if started.elapsed() > MAX_WAIT_FOR_CPU {
            let _ = profiler.kill();
            panic!(
                "the target used only {used:.2} s of CPU in {MAX_WAIT_FOR_CPU:?} of sampling, \
                 {cpu_seconds} s were wanted: the machine is too busy"
            );
        }
        std::thread::sleep(POLL);
        used = cpu_seconds_used(pid) - from;
    }
}

/// [`record_for_cpu`] for one process writing folded stacks to stdout: stacks, stderr, and the CPU
/// seconds the process used while sampled.
pub fn record_pid_for_cpu(
    args: &[&str],
    pid: u32,
    cpu_seconds: f64,
) -> (Vec<FoldedStack>, String, f64) {
    let (output, cpu) = record_for_cpu(args, &[pid], cpu_seconds);
    (folded_stdout(&output), stderr_text(&output), cpu[0])
}

/// Runs `emberprof <options> -- COMMAND..` through bash, which reports (with `times`) the CPU time
/// of the command it waited for: emberprof holds the command until sampling is attached, so that is
/// exactly the CPU time it had to sample. Returns stacks, stderr and those CPU seconds; bash's own
/// samples are under the root `bash`, which callers filter out by root.
pub fn record_command_measuring(
    options: &[&str],
    command: &[&str],
) -> (Vec<FoldedStack>, String, f64) {
    let (output, cpu) = launch_measuring(None, options, command);
    (folded_stdout(&output), stderr_text(&output), cpu)
}

/// [`record_command_measuring`] in the working directory `cwd` (the test's own if `None`), for
/// any output: emberprof's output (asserted successful), and the command's CPU seconds.
pub fn launch_measuring(cwd: Option<&Path>, options: &[&str], command: &[&str]) -> (Output, f64) {
    let dir = scratch();
    let times = dir.path().join("times");
    let mut args: Vec<&str> = options.to_vec();
    args.extend([
        "--",
        "bash",
        "-c",
        r#"out=$1; shift; "$@"; status=$?; times > "$out"; exit $status"#,
        "bash",
        path_arg(&times),
    ]);
    args.extend(command);
    let mut profiler = emberprof();
    profiler.args(&args);
    if let Some(cwd) = cwd {
        profiler.current_dir(cwd);
    }
    let output = profiler.output().expect("run emberprof");
    let stderr = expect_success(&output, &format!("emberprof {args:?}"));
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
    (output, cpu)
}

/// emberprof's summary line (`emberprof: N samples (...) ...`) in `stderr`.
pub fn summary_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("emberprof: ") && l.contains(" samples ("))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"))
}

/// The number just before `marker` in the summary line (`(0 lost, 12 truncated)` and the like).
pub fn summary_count(stderr: &str, marker: &str) -> u64 {
    let summary = summary_line(stderr);
    let before = summary
        .split(marker)
        .next()
        .filter(|before| before.len() < summary.len())
        .unwrap_or_else(|| panic!("no {marker:?} in the summary: {summary}"));
    before
        .rsplit([' ', '('])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {marker:?} in: {summary}"))
}

/// The samples the summary line counts.
pub fn summary_samples(stderr: &str) -> u64 {
    summary_count(stderr, " samples (")
}

/// How long the summary line says sampling ran, in seconds (`..., 4.0 s, ...`): whether a capture
/// ended when its target did, judged by emberprof's own clock rather than the test's.
pub fn summary_seconds(stderr: &str) -> f64 {
    let summary = summary_line(stderr);
    summary
        .split(", ")
        .find_map(|part| part.split_once(" s").and_then(|(n, _)| n.parse().ok()))
        .unwrap_or_else(|| panic!("no duration in the summary: {summary}"))
}
