//! Frameless code: user stacks copied by BPF and unwound with DWARF CFI (`--unwind dwarf|auto`).

use crate::record::{assert_burn_profile, is_burn};
use crate::support::*;

/// Share of deep-chain samples that must carry the whole 60-level chain.
const MIN_WHOLE_CHAIN_SHARE: f64 = 0.80;

/// The burn workload built -O2 -fomit-frame-pointer: with DWARF unwinding (forced, or chosen by auto)
/// the stacks are whole and the 3:1 ratio holds; the summary says how stacks were unwound.
#[test]
fn frameless_burn_unwinds_with_dwarf_and_auto() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn-nofp", &["20"]);
    let pid = workload.pid().to_string();
    for mode in ["dwarf", "auto"] {
        let (stacks, stderr, cpu) = record_pid_folded(
            &[
                "record", "-p", &pid, "-d", "4", "-F", "999", "--unwind", mode, "-o", "-",
            ],
            workload.pid(),
        );
        assert!(
            stacks.iter().all(|s| s.frames[0] == "burn-nofp"),
            "{mode}:\n{}",
            describe(&stacks)
        );
        // Stack copies travel through the ring buffer: none may go missing on the way.
        assert_samples_match_cpu(mode, total(&stacks, |_| true), cpu, 999, &stacks);
        assert_burn_profile(&stacks);
        assert!(
            stderr.contains("by DWARF ("),
            "{mode}: summary lacks the unwinding counts:\n{stderr}"
        );
        let dwarf: u64 = stderr
            .split("user stacks: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{mode}: no DWARF count in:\n{stderr}"));
        let burn = total(&stacks, is_burn);
        assert!(
            dwarf >= burn,
            "{mode}: only {dwarf} DWARF-unwound stacks for {burn} burn samples\n{stderr}"
        );
    }
}

/// Frame pointers alone cannot walk the frameless build: the comparison that makes the tests above
/// meaningful (if this starts passing, the workload has frame pointers again).
#[test]
fn frameless_burn_defeats_frame_pointers() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn-nofp", &["20"]);
    let (stacks, _, cpu) = record_pid_folded(
        &[
            "record",
            "-p",
            &workload.pid().to_string(),
            "-d",
            "2",
            "-F",
            "499",
            "--unwind",
            "fp",
            "-o",
            "-",
        ],
        workload.pid(),
    );
    let all = total(&stacks, |_| true);
    assert_samples_match_cpu("fp", all, cpu, 499, &stacks);
    let whole = total(&stacks, |s| {
        has_subsequence(&s.frames, &["main", "run"]) && is_burn(s)
    });
    assert!(
        whole * 2 < all,
        "frame pointers unexpectedly walked {whole}/{all}:\n{}",
        describe(&stacks)
    );
}

/// 60 nested frameless calls come back whole from DWARF unwinding, in order, under main and run.
#[test]
fn deep_frameless_chain_is_recovered_whole() {
    let _kernel = kernel_test();
    let workload = Workload::start("deep-nofp", &["20"]);
    let pid = workload.pid().to_string();
    let chain: Vec<String> = ["main".to_owned(), "run".to_owned()]
        .into_iter()
        .chain((1..=60).map(|i| format!("level_{i:02}")))
        .chain(["spin".to_owned()])
        .collect();
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    for mode in ["dwarf", "auto"] {
        let (stacks, _, cpu) = record_pid_folded(
            &[
                "record", "-p", &pid, "-d", "3", "-F", "999", "--unwind", mode, "-o", "-",
            ],
            workload.pid(),
        );
        let all = total(&stacks, |_| true);
        assert_samples_match_cpu(mode, all, cpu, 999, &stacks);
        let in_spin = total(&stacks, |s| s.frames.iter().any(|f| f == "spin"));
        let whole = total(&stacks, |s| has_chain(&s.frames, &chain));
        assert!(
            in_spin * 10 >= all * 9,
            "{mode}: only {in_spin}/{all} samples in spin:\n{}",
            describe(&stacks)
        );
        let share = whole as f64 / in_spin as f64;
        assert!(
            share >= MIN_WHOLE_CHAIN_SHARE,
            "{mode}: only {whole}/{in_spin} samples carry the whole chain:\n{}",
            describe(&stacks)
        );
    }
}

/// The syscall loop spends its time in Debian's frameless libc: auto copies those samples, so the
/// caller of read() (read_zero), which a frame-pointer walk skips, is present.
#[test]
fn auto_recovers_caller_of_frameless_libc_leaf() {
    let _kernel = kernel_test();
    let workload = Workload::start("syscalls", &["20"]);
    let pid = workload.pid().to_string();
    let (stacks, _, cpu) = record_pid_folded(
        &["record", "-p", &pid, "-d", "2", "-F", "499", "-o", "-"],
        workload.pid(),
    );
    let all = total(&stacks, |_| true);
    assert_samples_match_cpu("syscalls", all, cpu, 499, &stacks);
    let with_caller = total(&stacks, |s| {
        has_chain(&s.frames, &["main", "run", "read_zero"])
    });
    assert!(
        with_caller * 10 >= all * 8,
        "only {with_caller}/{all} samples have main;run;read_zero:\n{}",
        describe(&stacks)
    );
}

/// A too-small --stack-size cuts deep stacks short, and the summary counts them as ended early.
#[test]
fn small_stack_copy_is_reported() {
    let _kernel = kernel_test();
    let workload = Workload::start("deep-nofp", &["20"]);
    let (stacks, stderr, cpu) = record_pid_folded(
        &[
            "-v",
            "record",
            "-p",
            &workload.pid().to_string(),
            "-d",
            "2",
            "-F",
            "499",
            "--unwind",
            "dwarf",
            "--stack-size",
            "256",
            "-o",
            "-",
        ],
        workload.pid(),
    );
    let all = total(&stacks, |_| true);
    assert_samples_match_cpu("deep-nofp", all, cpu, 499, &stacks);
    let at_copy_end: u64 = stderr
        .split("DWARF unwinds that ended early: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ended-early report in:\n{stderr}"));
    // 256 bytes hold a few of the 60 frames: nearly every stack ends at the end of its copy.
    assert!(
        at_copy_end * 10 >= all * 8,
        "only {at_copy_end}/{all} stacks reported as ended early:\n{stderr}"
    );
}
