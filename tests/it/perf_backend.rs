//! The perf_event backend: profiling one's own programs without privileges, chosen automatically,
//! and the same stacks as the BPF backend when both can run.
//!
//! Unprivileged runs use uid/gid 65534 without capabilities ([`Sandbox`]), with
//! `kernel.perf_event_paranoid` set by the test ([`Paranoid`], restored even on panic). The
//! behaviours both backends share are checked on both by the other modules' `both_backends!` tests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

/// Launches the example `name` for 4 s as uid 65534 at `kernel.perf_event_paranoid` 2 with the
/// sandbox's emberprof: its stacks and emberprof's stderr.
fn unprivileged_launch(name: &str) -> (Vec<FoldedStack>, String) {
    let _paranoid = Paranoid::set(2);
    let sandbox = Sandbox::new(&[name]);
    let out = sandbox.out("launch.folded");
    let args = RecordArgs::new()
        .frequency(999)
        .output(&out)
        .command(&[path_arg(&sandbox.bin(name)), "4"]);
    let stderr = expect_success(
        &sandbox.emberprof(&args.strs()),
        &format!("unprivileged launch of {name}"),
    );
    (read_folded(&out), stderr)
}

/// As a normal user at paranoid 2, a launched frame-pointer program gets the 3:1 ratio and
/// main..run..burn_* in 90 % of samples, through the perf backend.
#[test]
fn unprivileged_launch_gets_ratio_and_full_stacks() {
    let _kernel = kernel_test();
    let (stacks, stderr) = unprivileged_launch("burn");
    assert!(stderr.contains("perf_event backend"), "{stderr}");
    assert!(
        stacks.iter().all(|s| s.frames[0] == "burn"),
        "samples of other processes:\n{}",
        describe(&stacks)
    );
    // Kernel stacks are forbidden at paranoid 2: none may appear.
    assert!(
        !stacks.iter().any(FoldedStack::has_kernel_frame),
        "kernel frames at paranoid 2:\n{}",
        describe(&stacks)
    );
    assert_burn_profile(&stacks);
}

/// The frameless build, unprivileged: full chains through DWARF unwinding of the copied stacks.
#[test]
fn unprivileged_frameless_gets_full_chains() {
    let _kernel = kernel_test();
    let (stacks, stderr) = unprivileged_launch("burn-nofp");
    assert!(stderr.contains("by DWARF"), "{stderr}");
    assert_burn_profile(&stacks);
}

/// -p on one's own running process works unprivileged; --all and another user's process fail
/// with one line naming what is missing.
#[test]
fn unprivileged_pid_mode_and_refusals() {
    let _kernel = kernel_test();
    let _paranoid = Paranoid::set(2);
    let sandbox = Sandbox::new(&["burn"]);
    let workload = KillOnDrop(
        sandbox
            .unprivileged(&sandbox.bin("burn"))
            .arg("20")
            .stdout(Stdio::null())
            .spawn()
            .expect("start burn as uid 65534"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let pid = workload.0.id().to_string();
    let out = sandbox.out("pid.folded");
    expect_success(
        &sandbox.emberprof(&[
            "record",
            "-p",
            &pid,
            "-d",
            "4",
            "-F",
            "999",
            "-o",
            &out.display().to_string(),
        ]),
        "unprivileged -p",
    );
    assert_burn_profile(&read_folded(&out));

    let stderr = expect_error_line(
        &sandbox.emberprof(&["record", "--all", "-d", "1", "-o", "-"]),
        "--all as a user",
    );
    assert!(
        stderr.contains("--all samples every process")
            && stderr.contains("missing CAP_BPF and CAP_PERFMON")
            && stderr.contains("sudo"),
        "{stderr}"
    );
    let stderr = expect_error_line(
        &sandbox.emberprof(&["record", "-p", "1", "-d", "1", "-o", "-"]),
        "another user's process",
    );
    assert!(
        stderr.contains("process 1 belongs to another user")
            && stderr.contains("missing CAP_BPF and CAP_PERFMON"),
        "{stderr}"
    );
}

/// At paranoid 3 (Debian's default) the error names the sysctl and the value that allows it.
#[test]
fn paranoid_three_names_the_sysctl() {
    let _kernel = kernel_test();
    let _paranoid = Paranoid::set(3);
    let sandbox = Sandbox::new(&["burn"]);
    let burn = sandbox.bin("burn");
    let stderr = expect_error_line(
        &sandbox.emberprof(&["record", "-o", "-", "--", &burn.display().to_string(), "1"]),
        "a user at paranoid 3",
    );
    assert!(
        stderr.contains("kernel.perf_event_paranoid is 3")
            && stderr.contains("sysctl kernel.perf_event_paranoid=2"),
        "{stderr}"
    );
}

/// A hardware event: on a machine without a PMU (this VM, most cloud VMs) both backends say so and
/// suggest cpu-clock; with a PMU, it samples.
#[test]
fn hardware_event_needs_a_pmu() {
    let _kernel = kernel_test();
    let has_pmu = ["cpu", "cpu_core", "cpu_atom"].iter().any(|name| {
        Path::new("/sys/bus/event_source/devices")
            .join(name)
            .exists()
    });
    for backend in ["bpf", "perf"] {
        let output = emberprof()
            .args([
                "record",
                "--backend",
                backend,
                "-e",
                "cycles",
                "-o",
                "-",
                "--",
            ])
            .arg(example("burn"))
            .arg("1")
            .output()
            .expect("run emberprof");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if has_pmu {
            assert!(output.status.success(), "{backend}: {stderr}");
        } else {
            assert!(!output.status.success(), "{backend}: sampled without a PMU");
            assert!(
                stderr.contains("no hardware PMU") && stderr.contains("-e cpu-clock"),
                "{backend}: {stderr}"
            );
        }
    }
}

/// User-space stacks from `main` down (kernel frames left out) with their share of the process's
/// samples. Above `main` the start-up frames are in Debian's frameless libc, which a frame-pointer
/// walk (the BPF backend's path for frame-pointer programs) crosses by skipping `_start`, while the
/// perf backend unwinds it with DWARF: the program's own frames are what must agree.
fn user_stack_shares(stacks: &[FoldedStack]) -> Vec<(String, f64)> {
    let burn_total = total(stacks, is_burn) as f64;
    let mut shares: std::collections::BTreeMap<String, u64> = Default::default();
    for stack in stacks.iter().filter(|s| is_burn(s)) {
        let user: Vec<&str> = stack
            .frames
            .iter()
            .filter(|f| !f.ends_with("_[k]"))
            .skip_while(|f| *f != "main")
            .map(String::as_str)
            .collect();
        *shares.entry(user.join(";")).or_default() += stack.count;
    }
    shares
        .into_iter()
        .map(|(stack, count)| (stack, count as f64 / burn_total))
        .collect()
}

/// As root, `--backend perf` and `--backend bpf`, recording the same processes at the same time,
/// give the same user stacks (every stack above 5 % in one is in the other) and ratios within
/// 15 % (of the expected 3:1) of each other, on frame-pointer and frameless code.
#[test]
fn perf_backend_matches_bpf() {
    let _kernel = kernel_test();
    for name in ["burn", "burn-nofp"] {
        let workload = Workload::start(name, &[UNTIL_KILLED]);
        let pid = workload.pid().to_string();
        let dir = scratch();
        let spawn = |backend: &str| {
            let out = out_path(&dir, &format!("{backend}.folded"));
            let child = emberprof()
                .args([
                    "record",
                    "--backend",
                    backend,
                    "-p",
                    &pid,
                    "-d",
                    "6",
                    "-F",
                    "997", // not 499: its 2 ms period aliases with burn's loop
                    "-o",
                ])
                .arg(&out)
                .stderr(Stdio::piped())
                .spawn()
                .expect("run emberprof");
            (child, out)
        };
        let runs = [spawn("bpf"), spawn("perf")];
        let mut results = Vec::new();
        for (child, out) in runs {
            let output = child.wait_with_output().expect("wait for emberprof");
            expect_success(&output, &format!("{name}: {}", out.display()));
            results.push(read_folded(&out));
        }
        let (bpf, perf) = (&results[0], &results[1]);
        assert_burn_profile(bpf);
        assert_burn_profile(perf);
        let (bpf_ratio, perf_ratio) = (burn_ratio(bpf), burn_ratio(perf));
        // Within 15 % of the expected 3:1 of each other (each is within 15 % of 3 already).
        assert!(
            (perf_ratio - bpf_ratio).abs() <= 3.0 * 0.15,
            "{name}: burn_a/burn_b {perf_ratio:.2} (perf) vs {bpf_ratio:.2} (bpf)"
        );
        let (bpf_shares, perf_shares) = (user_stack_shares(bpf), user_stack_shares(perf));
        for (one, other, label) in [
            (&bpf_shares, &perf_shares, "bpf"),
            (&perf_shares, &bpf_shares, "perf"),
        ] {
            for (stack, share) in one.iter().filter(|(_, share)| *share >= 0.05) {
                assert!(
                    other.iter().any(|(s, _)| s == stack),
                    "{name}: {stack} ({:.0} % with {label}) missing from the other backend:\nbpf:\n{}\nperf:\n{}",
                    share * 100.0,
                    describe(bpf),
                    describe(perf)
                );
            }
        }
    }
}
