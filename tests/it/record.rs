//! Recording real workloads and checking the stacks, names and ratios that come out.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::support::*;

/// Share of burn samples whose stack must read main -> run -> burn_*.
const MIN_FULL_STACK_SHARE: f64 = 0.90;

pub fn is_burn(stack: &FoldedStack) -> bool {
    stack.frames.iter().any(|f| f == "burn_a" || f == "burn_b")
}

/// Checks the burn workload's stacks: the 3:1 ratio and main..run..burn_* order.
pub fn assert_burn_profile(stacks: &[FoldedStack]) {
    let a = total(stacks, |s| s.frames.iter().any(|f| f == "burn_a"));
    let b = total(stacks, |s| s.frames.iter().any(|f| f == "burn_b"));
    assert!(b > 0 && a > 0, "no burn samples:\n{}", describe(stacks));
    let ratio = a as f64 / b as f64;
    assert!(
        (ratio - 3.0).abs() <= 3.0 * 0.15,
        "burn_a/burn_b = {a}/{b} = {ratio:.2}, want 3 ± 15 %:\n{}",
        describe(stacks)
    );

    let burn = total(stacks, is_burn);
    let full = total(stacks, |s| {
        has_subsequence(&s.frames, &["main", "run", "burn_a"])
            || has_subsequence(&s.frames, &["main", "run", "burn_b"])
    });
    let share = full as f64 / burn as f64;
    assert!(
        share >= MIN_FULL_STACK_SHARE,
        "only {full}/{burn} burn samples have main..run..burn_*:\n{}",
        describe(stacks)
    );
}

/// --pid with --unwind fp on a frame-pointer build: burn_a gets 3x burn_b's samples and stacks are
/// complete.
#[test]
fn pid_mode_gets_ratio_and_full_stacks() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["10"]);
    let dir = scratch();
    let out = out_path(&dir, "burn.folded");
    let pid = workload.pid().to_string();
    run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "3",
        "-F",
        "999",
        "--unwind",
        "fp",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stacks = read_folded(&out);
    assert!(
        stacks.iter().all(|s| s.frames[0] == "burn"),
        "root is the process name:\n{}",
        describe(&stacks)
    );
    assert_burn_profile(&stacks);
}

/// Launch mode profiles the command from its start, ends when it exits, and exits with its status.
#[test]
fn launch_mode_profiles_command_and_returns_its_status() {
    let _kernel = kernel_test();
    let dir = scratch();
    let out = out_path(&dir, "launch.folded");
    let started = Instant::now();
    let output = emberprof()
        .args([
            "record",
            "-F",
            "999",
            "-o",
            out.to_str().unwrap(),
            "--",
            &example("burn"),
            "2",
            "7",
        ])
        .output()
        .expect("run emberprof");
    assert_eq!(
        output.status.code(),
        Some(7),
        "exit status of the command:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "capture did not end with the command"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exited with status 7"), "{stderr}");
    assert!(!stderr.contains("unaccounted"), "{stderr}");
    assert_burn_profile(&read_folded(&out));
}

/// Processes a launched command forks are followed.
#[test]
fn launch_mode_follows_children() {
    let _kernel = kernel_test();
    let script = format!("{} 1; true", example("burn"));
    let output = run_ok(&["record", "-F", "499", "-o", "-", "--", "sh", "-c", &script]);
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    let burn = total(&stacks, |s| s.frames[0] == "burn" && is_burn(s));
    assert!(
        burn > 200,
        "the forked burn child was not sampled ({burn} samples):\n{}",
        describe(&stacks)
    );
}

/// A syscall-heavy loop shows kernel frames, marked _[k], below its user frames.
#[test]
fn syscall_loop_shows_kernel_frames() {
    let _kernel = kernel_test();
    let workload = Workload::start("syscalls", &["10"]);
    let output = run_ok(&[
        "record",
        "-p",
        &workload.pid().to_string(),
        "-d",
        "2",
        "-F",
        "499",
        "-o",
        "-",
    ]);
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    let all = total(&stacks, |_| true);
    let in_kernel = total(&stacks, |s| s.frames.iter().any(|f| f.ends_with("_[k]")));
    assert!(
        in_kernel * 4 >= all,
        "only {in_kernel}/{all} samples have kernel frames:\n{}",
        describe(&stacks)
    );
    // Kernel frames come after (below) the user frames, and name the read path.
    let read_path = total(&stacks, |s| {
        let first_kernel = s.frames.iter().position(|f| f.ends_with("_[k]"));
        first_kernel.is_some_and(|k| {
            s.frames[..k].iter().any(|f| f == "run")
                && s.frames[k..].iter().all(|f| f.ends_with("_[k]"))
        }) && s.frames.iter().any(|f| f.contains("read"))
    });
    assert!(
        read_path * 2 >= in_kernel,
        "kernel read path not under run:\n{}",
        describe(&stacks)
    );
}

/// --no-kernel drops kernel frames, --no-user drops user frames.
#[test]
fn no_kernel_and_no_user_drop_frames() {
    let _kernel = kernel_test();
    let workload = Workload::start("syscalls", &["10"]);
    let pid = workload.pid().to_string();
    let output = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "1",
        "-F",
        "499",
        "--no-kernel",
        "-o",
        "-",
    ]);
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    assert!(!stacks.is_empty());
    assert!(
        stacks
            .iter()
            .all(|s| s.frames.iter().all(|f| !f.ends_with("_[k]"))),
        "{}",
        describe(&stacks)
    );

    let output = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "1",
        "-F",
        "499",
        "--no-user",
        "-o",
        "-",
    ]);
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    assert!(stacks.iter().any(|s| s.frames.len() > 1));
    assert!(
        stacks
            .iter()
            .all(|s| s.frames[1..].iter().all(|f| f.ends_with("_[k]"))),
        "{}",
        describe(&stacks)
    );
}

/// --all sees every busy process: two different workloads appear as two roots.
#[test]
fn all_mode_sees_separate_processes() {
    let _kernel = kernel_test();
    let _burn = Workload::start("burn", &["10"]);
    let _syscalls = Workload::start("syscalls", &["10"]);
    let dir = scratch();
    let out = out_path(&dir, "system.folded");
    run_ok(&["record", "--all", "-d", "2", "-o", out.to_str().unwrap()]);
    let stacks = read_folded(&out);
    for (root, function) in [("burn", "burn_a"), ("syscalls", "run")] {
        let samples = total(&stacks, |s| {
            s.frames[0] == root && s.frames.iter().any(|f| f == function)
        });
        assert!(
            samples >= 20,
            "{root} has {samples} samples with {function}:\n{}",
            describe(&stacks)
        );
    }
}

/// --per-thread roots each thread at name-PID/TID, so the two named threads are separate towers.
#[test]
fn per_thread_separates_named_threads() {
    let _kernel = kernel_test();
    let workload = Workload::start("threads", &["10"]);
    let pid = workload.pid();
    let output = run_ok(&[
        "record",
        "-p",
        &pid.to_string(),
        "-d",
        "2",
        "--per-thread",
        "-o",
        "-",
    ]);
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    for (thread, function) in [("worker-alpha", "alpha_work"), ("worker-beta", "beta_work")] {
        let prefix = format!("{thread}-{pid}/");
        let samples = total(&stacks, |s| {
            s.frames[0].starts_with(&prefix) && s.frames.iter().any(|f| f == function)
        });
        assert!(
            samples >= 50,
            "{thread}: {samples} samples in {function}:\n{}",
            describe(&stacks)
        );
    }
    // Without --per-thread both are under the process name.
    let output = run_ok(&["record", "-p", &pid.to_string(), "-d", "1", "-o", "-"]);
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    assert!(
        stacks.iter().all(|s| s.frames[0] == "threads"),
        "{}",
        describe(&stacks)
    );
}

/// The SVG is well-formed XML and names the sampled functions.
#[test]
fn svg_is_xml_with_function_names() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["10"]);
    let dir = scratch();
    let out = out_path(&dir, "flame.svg");
    run_ok(&[
        "record",
        "-p",
        &workload.pid().to_string(),
        "-d",
        "1",
        "--title",
        "burn test",
        "-o",
        out.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&out).expect("read svg");
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => elements += 1,
            Ok(_) => {}
            Err(e) => panic!("invalid XML at {}: {e}", reader.buffer_position()),
        }
    }
    assert!(elements > 10);
    for name in ["burn_a", "burn_b", "main", "run", "burn test"] {
        assert!(svg.contains(name), "{name} missing from the SVG");
    }
}

/// Ctrl-C (SIGINT) or SIGTERM stop an open-ended recording and the output is still written.
#[test]
fn signals_stop_recording_and_write_output() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["20"]);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let dir = scratch();
        let out = out_path(&dir, "interrupted.folded");
        let child = emberprof()
            .args([
                "record",
                "-p",
                &workload.pid().to_string(),
                "-o",
                out.to_str().unwrap(),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start emberprof");
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "signal {signal}: {:?} {:?}",
            output.status,
            output.status.signal()
        );
        let stacks = read_folded(&out);
        assert!(
            total(&stacks, is_burn) > 50,
            "signal {signal}: {}",
            describe(&stacks)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("(interrupted)"), "{stderr}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

/// A target that never runs gives a valid, empty output and says so.
#[test]
fn empty_capture_writes_valid_output() {
    let _kernel = kernel_test();
    let mut idle = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let pid = idle.id().to_string();
    let dir = scratch();
    let svg = out_path(&dir, "empty.svg");
    let output = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "0.5",
        "-o",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no samples were collected"), "{stderr}");
    let text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        text.contains("<svg") && text.contains("No samples"),
        "{text}"
    );
    let folded = out_path(&dir, "empty.folded");
    run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "0.5",
        "-o",
        folded.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&folded).expect("folded written"),
        ""
    );
    let _ = idle.kill();
    let _ = idle.wait();
}

/// With maps far too small for the workload, samples go through the ring buffer instead of being
/// lost: the profile is as right as with roomy maps, and the BPF counters account for every sample.
#[test]
fn tiny_maps_stream_samples_instead_of_losing_them() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["10"]);
    let pid = workload.pid().to_string();
    let output = run_ok(&[
        "-v",
        "record",
        "-p",
        &pid,
        "-d",
        "3",
        "-F",
        "999",
        "--stack-map-entries",
        "2",
        "--count-map-entries",
        "2",
        "-o",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("went through the ring buffer"), "{stderr}");
    assert!(stderr.contains("(0 lost, "), "{stderr}");
    assert!(!stderr.contains("unaccounted"), "{stderr}");
    assert_burn_profile(&parse_folded(&String::from_utf8_lossy(&output.stdout)));
}

/// A target that exits ends the capture early, keeping its samples.
#[test]
fn exiting_target_ends_capture_early() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["3"]);
    let started = Instant::now();
    let output = run_ok(&[
        "record",
        "-p",
        &workload.pid().to_string(),
        "-d",
        "30",
        "-o",
        "-",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "capture ran on after the target exited"
    );
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    assert!(total(&stacks, is_burn) > 40, "{}", describe(&stacks));
    assert!(String::from_utf8_lossy(&output.stderr).contains("(targets exited)"));
}
