//! `--max-parsed-size`: what blazesym keeps parsed is bounded in total (issue 19, state that follows
//! what is live). A budget smaller than any module drops each module's parsed symbols as soon as
//! another is named; every frame must still be named (the module is parsed again), and the summary
//! must say the budget was at work.

use std::time::Duration;

use crate::support::*;

both_backends! {
    /// qsort-fp: the program's `main;run` calls libc's qsort, which calls back into the program's
    /// `cmp;spin`, so every stack needs both modules' symbols. With a one-byte budget they are
    /// parsed in turn, and the chain must be as whole as without a budget.
    fn a_tiny_parsed_budget_costs_no_names(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("qsort-fp", &[UNTIL_KILLED]);
        std::thread::sleep(Duration::from_millis(200));
        let args = backend
            .record()
            .pid(workload.pid())
            .frequency(499)
            .args(&["--max-parsed-size", "1", "-v"])
            .output_stdout();
        let (stacks, stderr, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 1.0);
        assert_samples_match_cpu("qsort-fp", all_samples(&stacks), cpu, 499, &stacks);
        let all = all_samples(&stacks);
        let chained = total(&stacks, |s| {
            has_consecutive_runs(&s.frames, &[&["main", "run"], &["cmp", "spin"]])
        });
        let in_libc = total(&stacks, |s| s.frames.iter().any(|f| f.contains("qsort")));
        assert!(
            chained * 10 >= all * 8 && in_libc * 10 >= all * 8,
            "{chained} of {all} samples keep main;run..cmp;spin, {in_libc} name libc's qsort:\n{}\n{stderr}",
            describe(&stacks)
        );
        assert!(
            stderr.contains("parsed symbols were dropped to keep them within --max-parsed-size"),
            "the summary does not say the budget dropped parsed symbols:\n{stderr}"
        );
    }
}
