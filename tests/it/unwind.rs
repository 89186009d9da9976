//! Frameless code: user stacks copied (by BPF, or by the kernel into perf samples) and unwound with
//! DWARF CFI (`--unwind dwarf|auto`), on both backends.

use crate::support::*;

/// Share of deep-chain samples that must carry the whole 60-level chain.
const MIN_WHOLE_CHAIN_SHARE: f64 = 0.80;

/// An open-ended `record -p PID -F HZ --unwind MODE -o -` command line.
fn pid_args(backend: Backend, pid: u32, hz: u64, mode: &str) -> RecordArgs {
    backend
        .record()
        .pid(pid)
        .frequency(hz)
        .unwind(mode)
        .output_stdout()
}

both_backends! {
    /// The burn workload built -O2 -fomit-frame-pointer: with DWARF unwinding (forced, or chosen by
    /// auto) the stacks are whole and the 3:1 ratio holds; the summary says how stacks were
    /// unwound.
    fn frameless_burn_unwinds_with_dwarf_and_auto(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn-nofp", &[UNTIL_KILLED]);
        for mode in ["dwarf", "auto"] {
            let args = pid_args(backend, workload.pid(), 999, mode);
            let (stacks, stderr, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 3.0);
            assert!(
                stacks.iter().all(|s| s.frames[0] == "burn-nofp"),
                "{mode}:\n{}",
                describe(&stacks)
            );
            // Stack copies travel through ring buffers: none may go missing on the way.
            assert_samples_match_cpu(mode, all_samples(&stacks), cpu, 999, &stacks);
            assert_burn_profile(&stacks);
            let dwarf: u64 = summary_line(&stderr)
                .split("user stacks: ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{mode}: no DWARF count in the summary:\n{stderr}"));
            let burn = total(&stacks, is_burn);
            assert!(
                dwarf >= burn,
                "{mode}: only {dwarf} DWARF-unwound stacks for {burn} burn samples\n{stderr}"
            );
        }
    }
}

both_backends! {
    /// Frame pointers alone cannot walk the frameless build: the comparison that makes the tests
    /// above meaningful (if this starts passing, the workload has frame pointers again).
    fn frameless_burn_defeats_frame_pointers(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn-nofp", &[UNTIL_KILLED]);
        let args = pid_args(backend, workload.pid(), 499, "fp");
        let (stacks, _, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 1.0);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("fp", all, cpu, 499, &stacks);
        let whole = total(&stacks, |s| has_in_order(&s.frames, &["main", "run"]) && is_burn(s));
        assert!(
            whole * 2 < all,
            "frame pointers unexpectedly walked {whole}/{all}:\n{}",
            describe(&stacks)
        );
    }
}

both_backends! {
    /// 60 nested frameless calls come back whole from DWARF unwinding, in order, under main and
    /// run.
    fn deep_frameless_chain_is_recovered_whole(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("deep-nofp", &[UNTIL_KILLED]);
        let chain: Vec<String> = ["main".to_owned(), "run".to_owned()]
            .into_iter()
            .chain((1..=60).map(|i| format!("level_{i:02}")))
            .chain(["spin".to_owned()])
            .collect();
        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
        for mode in ["dwarf", "auto"] {
            let args = pid_args(backend, workload.pid(), 999, mode);
            let (stacks, _, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 1.5);
            let all = all_samples(&stacks);
            assert_samples_match_cpu(mode, all, cpu, 999, &stacks);
            let in_spin = total(&stacks, |s| s.has_frame("spin"));
            let whole = total(&stacks, |s| has_consecutive(&s.frames, &chain));
            assert!(
                in_spin * 10 >= all * 9,
                "{mode}: only {in_spin}/{all} samples in spin:\n{}",
                describe(&stacks)
            );
            assert!(
                whole as f64 >= in_spin as f64 * MIN_WHOLE_CHAIN_SHARE,
                "{mode}: only {whole}/{in_spin} samples carry the whole chain:\n{}",
                describe(&stacks)
            );
        }
    }
}

both_backends! {
    /// The syscall loop spends its time in Debian's frameless libc: auto unwinds those samples with
    /// DWARF, so the caller of read() (read_zero), which a frame-pointer walk skips, is present.
    fn auto_recovers_caller_of_frameless_libc_leaf(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("syscalls", &[UNTIL_KILLED]);
        let args = pid_args(backend, workload.pid(), 499, "auto");
        let (stacks, _, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 1.0);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("syscalls", all, cpu, 499, &stacks);
        let with_caller = total(&stacks, |s| has_consecutive(&s.frames, &["main", "run", "read_zero"]));
        assert!(
            with_caller * 10 >= all * 8,
            "only {with_caller}/{all} samples have main;run;read_zero:\n{}",
            describe(&stacks)
        );
    }
}

both_backends! {
    /// A too-small --stack-size cuts deep stacks short, and the summary counts them as ended early.
    fn small_stack_copy_is_reported(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("deep-nofp", &[UNTIL_KILLED]);
        let args = pid_args(backend, workload.pid(), 499, "dwarf")
            .args(&["-v", "--stack-size", "256"]);
        let (stacks, stderr, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 1.0);
        let all = all_samples(&stacks);
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
}
