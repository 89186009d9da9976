//! Faults and signals: every way a run can end early or badly still ends cleanly — the output written
//! or, when that is impossible, a one-line error and no temporary file; nothing left in the kernel.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Names of the files in `dir` ending in `.tmp`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Waits until `child` samples, then a little longer: a first round of samples, so that the output
/// is not empty.
fn wait_for_samples(child: &mut Child) {
    wait_until_sampling(child);
    std::thread::sleep(Duration::from_millis(700));
}

/// Starts an open-ended `emberprof record -p PID -o OUT` on `backend` with stderr captured.
fn start_recording(backend: Backend, pid: u32, out: &Path) -> Child {
    emberprof()
        .args(backend.record().pid(pid).frequency(499).output(out).strs())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emberprof")
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
}

both_backends! {
    /// SIGHUP (a dropped SSH session) ends the capture like Ctrl-C: the output is written, exit 0.
    fn hangup_writes_output(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        let dir = scratch();
        let out = out_path(&dir, "hangup.folded");
        let mut child = start_recording(backend, workload.pid(), &out);
        let watch = CpuWatch::start(&mut child, &[workload.pid()]);
        // Samples to keep: the signal must not come before there are any.
        wait_for_cpu(workload.pid(), 0.5, &mut child);
        signal(&child, libc::SIGHUP);
        let output = child.wait_with_output().expect("wait");
        let cpu = watch.used(&stderr_text(&output))[0];
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{:?} (signal {:?}):\n{stderr}",
            output.status,
            output.status.signal()
        );
        assert!(stderr.contains("(interrupted)"), "{stderr}");
        let stacks = read_folded(&out);
        // Every sample taken before the signal is in the output.
        let all = all_samples(&stacks);
        assert_samples_match_cpu("SIGHUP", all, cpu, 499, &stacks);
        assert!(total(&stacks, is_burn) * 10 >= all * 9, "{}", describe(&stacks));
        assert!(temp_files(dir.path()).is_empty());
    }
}

/// A second Ctrl-C while the first is being handled stops at once: exit 130, no output, no
/// temporary file.
#[test]
fn second_interrupt_aborts_and_removes_temp_file() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    let dir = scratch();
    let out = out_path(&dir, "aborted.svg");
    let mut child = start_recording(Backend::Bpf, workload.pid(), &out);
    wait_for_samples(&mut child);
    assert_eq!(temp_files(dir.path()).len(), 1, "temporary file reserved");
    // Two SIGINTs that cannot merge into one: with the process stopped, one waits in the process's
    // pending set (kill) and one in its main thread's (tgkill); both are delivered on SIGCONT.
    let pid = child.id() as i32;
    // SAFETY: signalling our own child and its main thread.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
        libc::kill(pid, libc::SIGINT);
        libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGINT);
    }
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGCONT);
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted twice"), "{stderr}");
    assert!(!out.exists(), "output written despite the abort");
    assert!(
        temp_files(dir.path()).is_empty(),
        "temporary file left: {:?}",
        temp_files(dir.path())
    );
}

both_backends! {
    /// `-o -` into a pipe whose reader has gone: exit 0 and no error line, in both formats.
    fn closed_stdout_pipe_ends_quietly(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        for format in ["folded", "svg"] {
            let args = backend
                .record()
                .pid(workload.pid())
                .duration("1")
                .args(&["--format", format])
                .output_stdout();
            let mut child = emberprof()
                .args(args.strs())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start emberprof");
            drop(child.stdout.take());
            let output = child.wait_with_output().expect("wait");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "{format}: {:?}\n{stderr}",
                output.status
            );
            assert!(
                !stderr.contains("cannot") && !stderr.to_lowercase().contains("broken pipe"),
                "{format}: error printed:\n{stderr}"
            );
        }
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = scratch();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount (util-linux)");
        assert!(status.success(), "cannot mount a tmpfs: {status}");
        SmallTmpfs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A disk that fills while the output is written: one clear error line, non-zero exit, and neither
/// the output nor the temporary file left behind.
#[test]
fn disk_full_is_one_error_line_and_leaves_nothing() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    // One page: the temporary file is created, but a flame graph does not fit.
    let disk = SmallTmpfs::mount("4k");
    let out = disk.path("full.svg");
    let output = emberprof()
        .args([
            "record",
            "-p",
            &workload.pid().to_string(),
            "-d",
            "1",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .expect("run emberprof");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line expected:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot write {}", out.display()))
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(disk.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "files left on the full disk: {left:?}");
}

/// A run killed with SIGKILL leaves its temporary file; the next run writing the same output removes
/// it, but not the temporary file of a run still going.
#[test]
fn next_run_removes_temp_file_of_killed_run() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    let dir = scratch();
    let out = out_path(&dir, "shared.folded");

    let mut killed = start_recording(Backend::Bpf, workload.pid(), &out);
    wait_for_samples(&mut killed);
    let stale = temp_files(dir.path());
    assert_eq!(stale.len(), 1, "{stale:?}");
    killed.kill().expect("SIGKILL");
    killed.wait().expect("wait");
    assert_eq!(temp_files(dir.path()), stale, "SIGKILL leaves the file");

    let mut running = start_recording(Backend::Bpf, workload.pid(), &out);
    wait_for_samples(&mut running);
    let live: Vec<String> = temp_files(dir.path())
        .into_iter()
        .filter(|n| !stale.contains(n))
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");

    run_ok(&[
        "record",
        "-p",
        &workload.pid().to_string(),
        "-d",
        "0.5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        temp_files(dir.path()),
        live,
        "the killed run's file must go, the running one's stay"
    );
    assert!(total(&read_folded(&out), is_burn) > 0);

    signal(&running, libc::SIGINT);
    let output = running.wait_with_output().expect("wait");
    assert!(output.status.success(), "{:?}", output.status);
    assert!(temp_files(dir.path()).is_empty());
    assert!(total(&read_folded(&out), is_burn) > 100);
}

/// Two emberprof runs at once, one on a PID and one on the whole system, each see the whole burn
/// profile: their maps, filters and ring buffers are their own.
#[test]
fn side_by_side_instances_get_complete_results() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    let pid = workload.pid().to_string();
    let dir = scratch();
    let by_pid = out_path(&dir, "pid.folded");
    let all = out_path(&dir, "all.folded");
    let run = |target: &[&str], out: &Path| {
        // --per-thread roots stacks at `burn-PID/TID`: other burn processes may run on the machine.
        let mut args = vec![
            "record",
            "-d",
            "4",
            "-F",
            "999",
            "--unwind",
            "fp",
            "--per-thread",
        ];
        args.extend_from_slice(target);
        args.extend_from_slice(&["-o", out.to_str().unwrap()]);
        emberprof()
            .args(&args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start emberprof")
    };
    let mut runs = [run(&["-p", &pid], &by_pid), run(&["--all"], &all)];
    // Each run's own window, watched at once: the burn thread's CPU time while that run sampled.
    let watches: Vec<CpuWatch> = runs
        .iter_mut()
        .map(|child| CpuWatch::start(child, &[workload.pid()]))
        .collect();
    for ((child, out), watch) in runs.into_iter().zip([&by_pid, &all]).zip(watches) {
        let output = child.wait_with_output().expect("wait");
        let stderr = expect_success(&output, &out.display().to_string());
        let cpu = watch.used(&stderr)[0];
        assert!(stderr.contains("(0 lost,"), "{}: {stderr}", out.display());
        let burn = rooted(&read_folded(out), |root| {
            root.starts_with(&format!("burn-{pid}/"))
        });
        assert_samples_match_cpu(
            &out.display().to_string(),
            all_samples(&burn),
            cpu,
            999,
            &burn,
        );
        assert_burn_profile(&burn);
    }
}

/// The BPF object ids (`prog_id`, `map_id`, `link_id`) of the file descriptors `pid` holds.
fn bpf_ids(pid: u32, field: &str) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = fds
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .filter_map(|v| v.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// SIGKILL of emberprof leaves none of its BPF programs, maps or links (and so no perf event) in the
/// kernel. Only the ids this run held are checked: other profilers may be running on the machine.
#[test]
fn sigkill_leaves_no_bpf_objects() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    let dir = scratch();
    let mut child = start_recording(
        Backend::Bpf,
        workload.pid(),
        &out_path(&dir, "killed.folded"),
    );
    wait_for_samples(&mut child);
    let held: Vec<(&str, &str, Vec<u32>)> =
        [("prog", "prog_id"), ("map", "map_id"), ("link", "link_id")]
            .into_iter()
            .map(|(kind, field)| (kind, field, bpf_ids(child.id(), field)))
            .collect();
    for (kind, _, ids) in &held {
        assert!(
            !ids.is_empty(),
            "no BPF {kind} found in emberprof's descriptors"
        );
        assert!(
            bpftool_has(kind, ids[0]),
            "bpftool does not list {kind} {}",
            ids[0]
        );
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    // The kernel frees them once the last reference goes, after an RCU grace period.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = held
            .iter()
            .flat_map(|(kind, _, ids)| {
                ids.iter()
                    .filter(|&&id| bpftool_has(kind, id))
                    .map(move |id| format!("{kind} {id}"))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in the kernel 10 s after SIGKILL: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `bpftool KIND show id ID` finds the object.
fn bpftool_has(kind: &str, id: u32) -> bool {
    let output = std::process::Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .expect("run bpftool (Debian: bpftool)");
    output.status.success()
}

/// Maps and a ring buffer far too small for the load: samples are lost, the loss is counted and
/// printed without -v, and the output is still valid folded stacks of what was kept.
#[test]
fn tiny_maps_and_ring_buffer_report_losses() {
    let _kernel = kernel_test();
    let workload = Workload::start("threads", &[UNTIL_KILLED]);
    let output = run_ok(&[
        "record",
        "-p",
        &workload.pid().to_string(),
        "-d",
        "2",
        "-F",
        "999",
        "--unwind",
        "fp",
        "--stack-map-entries",
        "1",
        "--count-map-entries",
        "1",
        "--ring-buffer-bytes",
        "4096",
        "-o",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lost: u64 = stderr
        .split_once(" samples (")
        .and_then(|(_, rest)| rest.split_once(" lost"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no loss count in the summary:\n{stderr}"));
    assert!(lost > 0, "a one-page ring buffer lost nothing?\n{stderr}");
    assert!(
        stderr.contains("samples lost"),
        "no warning about the loss:\n{stderr}"
    );
    assert!(!stderr.contains("unaccounted"), "{stderr}");
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    assert!(
        total(&stacks, |s| s.frames[0] == "threads") > 0,
        "nothing kept:\n{}",
        describe(&stacks)
    );
}
