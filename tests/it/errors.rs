//! Bad input and a hostile environment: one clear line on stderr and a non-zero exit, before any
//! sampling where possible.

use std::time::{Duration, Instant};

use crate::support::*;

/// Runs `command` (emberprof, perhaps behind setpriv), asserting a clean one-line failure.
fn error_line_of(command: &mut std::process::Command) -> String {
    let output = command.output().expect("run emberprof");
    expect_error_line(&output, &format!("{command:?}"))
}

/// Runs emberprof with `args`, asserting a usage error: clap's exit status 2, with the usage.
fn usage_error_of(args: &[&str]) -> String {
    let output = emberprof().args(args).output().expect("run emberprof");
    let stderr = stderr_text(&output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "usage error expected for {args:?}:\n{stderr}"
    );
    assert!(stderr.contains("Usage:"), "no usage in:\n{stderr}");
    stderr
}

/// A PID that does not exist is named in the error.
#[test]
fn unknown_pid() {
    let _kernel = kernel_test();
    let stderr = run_error_line(&["record", "-p", "999999999", "-d", "1", "-o", "-"]);
    assert!(stderr.contains("no process with PID 999999999"), "{stderr}");
}

/// Without CAP_BPF and CAP_PERFMON the error names them and says how to grant them.
#[test]
fn missing_capabilities() {
    let _kernel = kernel_test();
    // setpriv (util-linux) drops the capabilities from the bounding set, so even root lacks them.
    let stderr = error_line_of(std::process::Command::new("setpriv").args([
        "--bounding-set=-bpf,-perfmon,-sys_admin",
        env!("CARGO_BIN_EXE_emberprof"),
        "record",
        "--all",
        "-d",
        "1",
        "-o",
        "-",
    ]));
    assert!(
        stderr.contains("missing CAP_BPF and CAP_PERFMON"),
        "{stderr}"
    );
    assert!(stderr.contains("setcap cap_bpf,cap_perfmon"), "{stderr}");
    // Issue 8: never advise cap_sys_admin for a binary any user can run; restrict it to a group.
    assert!(!stderr.contains("cap_sys_admin"), "{stderr}");
    assert!(stderr.contains("chgrp profilers"), "{stderr}");
}

/// An unwritable output fails before sampling starts, not after the duration.
#[test]
fn unwritable_output_fails_before_sampling() {
    let _kernel = kernel_test();
    let started = Instant::now();
    let stderr = run_error_line(&["record", "--all", "-d", "30", "-o", "/sys/flame.svg"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed only after sampling"
    );
    assert!(
        stderr.contains("cannot write output /sys/flame.svg"),
        "{stderr}"
    );
    let stderr = run_error_line(&[
        "record",
        "--all",
        "-d",
        "30",
        "-o",
        "/no/such/dir/flame.svg",
    ]);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

/// Kernel BTF that cannot be read is reported with the path.
#[test]
fn missing_btf() {
    let _kernel = kernel_test();
    let stderr = run_error_line(&[
        "record",
        "--all",
        "-d",
        "1",
        "--btf",
        "/no/such/vmlinux",
        "-o",
        "-",
    ]);
    assert!(
        stderr.contains("cannot read kernel BTF from /no/such/vmlinux"),
        "{stderr}"
    );
}

/// Zero or two target kinds are usage errors that list the choices.
#[test]
fn target_usage_errors() {
    let stderr = usage_error_of(&["record", "-d", "1"]);
    assert!(
        stderr.contains("--pid") && stderr.contains("--all") && stderr.contains("COMMAND"),
        "{stderr}"
    );
    let stderr = usage_error_of(&["record", "--all", "-p", "1"]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

/// A command that cannot be run is an error, not an empty profile.
#[test]
fn command_not_found() {
    let _kernel = kernel_test();
    let stderr = run_error_line(&["record", "-o", "-", "--", "no-such-program-emberprof"]);
    assert!(
        stderr.contains("command not found in PATH: no-such-program-emberprof"),
        "{stderr}"
    );
}

/// A frequency above the kernel's limit is refused up front.
#[test]
fn frequency_above_kernel_limit() {
    let _kernel = kernel_test();
    let stderr = run_error_line(&["record", "--all", "-F", "100000000", "-d", "1", "-o", "-"]);
    assert!(stderr.contains("perf_event_max_sample_rate"), "{stderr}");
}
