//! Wall-clock (`--off-cpu`) profiles of the `waits` example, and the questions the tests ask of
//! them: which thread, which stacks are off CPU, in which frames.

use super::{path_arg, record_folded, rooted, Backend, FoldedStack};

/// The off-CPU leaf.
pub const OFF_CPU: &str = "[off-cpu]";

/// A wall-clock capture of `waits MODE SECONDS` (built as `example`: `waits` or `waits-nofp`) on
/// `backend` as folded stacks per thread, sampled at 999 Hz, with `extra` options; and
/// emberprof's stderr (`-v`).
pub fn waits_wall_profile(
    backend: Backend,
    example: &str,
    mode: &str,
    seconds: &str,
    extra: &[&str],
) -> (Vec<FoldedStack>, String) {
    let path = emberprof_examples::path(example);
    let args = backend
        .record()
        .args(&["--off-cpu", "--per-thread", "-v"])
        .args(extra)
        .frequency(999)
        .output_stdout()
        .command(&[path_arg(&path), mode, seconds]);
    record_folded(&args.strs())
}

/// The stacks of the thread named `name` (roots are `NAME-PID/TID` with --per-thread).
pub fn thread_stacks(stacks: &[FoldedStack], name: &str) -> Vec<FoldedStack> {
    let prefix = format!("{name}-");
    rooted(stacks, |root| root.starts_with(&prefix))
}

/// Whether the stack is time switched out (ends in `[off-cpu]`).
pub fn is_off_cpu(stack: &FoldedStack) -> bool {
    stack.frames.last().is_some_and(|leaf| leaf == OFF_CPU)
}

/// Whether a frame of `stack` contains `text`.
pub fn has_frame_with(stack: &FoldedStack, text: &str) -> bool {
    stack.frames.iter().any(|frame| frame.contains(text))
}

/// Microseconds as seconds, for messages.
pub fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// The seconds `pingpong ROUNDS` says its rounds took ("pingpong ROUNDS rounds in S s: ...").
pub fn pingpong_seconds(stdout: &str) -> f64 {
    stdout
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("pingpong printed no time: {stdout:?}"))
}

/// The perf backend's summary words for its exact method (the `context-switches` event, as root).
pub const PERF_EXACT: &str = "on the stacks threads switched out in (context-switches event)";

/// Checks what `backend`'s exact method promises, on a wall-clock capture's `stderr` and its
/// off-CPU `stacks`: the summary says the waiting is on the stacks threads switched out in (the
/// perf backend names its event), and each off-CPU stack ends where that backend's stacks start
/// (see [`assert_off_cpu_leaves`] and [`assert_scheduler_leaves`]).
pub fn assert_exact_off_cpu(
    backend: Backend,
    stderr: &str,
    stacks: &[FoldedStack],
    context: &dyn Fn() -> String,
) {
    let summary = match backend {
        Backend::Bpf => "on the stacks threads switched out in",
        Backend::Perf => PERF_EXACT,
    };
    assert!(stderr.contains(summary), "{}", context());
    match backend {
        Backend::Bpf => assert_off_cpu_leaves(stacks),
        Backend::Perf => assert_scheduler_leaves(stacks, context),
    }
}

/// BPF: every off-CPU stack ends in `[off-cpu]` right under the scheduler (the BPF program's own
/// frames are not in the stack), and only the off-CPU ones do.
pub fn assert_off_cpu_leaves(stacks: &[FoldedStack]) {
    for stack in stacks.iter().filter(|s| is_off_cpu(s)) {
        let frames = &stack.frames;
        assert!(
            !frames
                .iter()
                .any(|f| f.contains("bpf_prog") || f.contains("bpf_trace_run")),
            "the off-CPU program's own frames in {frames:?}"
        );
        if frames.len() >= 2 && frames[frames.len() - 2].ends_with("_[k]") {
            assert_eq!(
                frames[frames.len() - 2],
                "__schedule_[k]",
                "an off-CPU kernel stack must start at __schedule: {frames:?}"
            );
        }
    }
}

/// perf (as root): every off-CPU stack is switched out in the kernel's scheduler: the frame above
/// `[off-cpu]` is a kernel frame of it (`schedule`, `preempt_schedule_*`, `__cond_resched`: the
/// sample is taken in `__schedule`, whose caller's address starts the kernel callchain).
pub fn assert_scheduler_leaves(stacks: &[FoldedStack], context: &dyn Fn() -> String) {
    for stack in stacks.iter().filter(|s| is_off_cpu(s)) {
        let above = stack.frames.iter().rev().nth(1).map_or("", String::as_str);
        assert!(
            above.ends_with("_[k]") && above.contains("sched"),
            "an off-CPU stack not in the scheduler: {:?}\n{}",
            stack.frames,
            context()
        );
    }
}

/// Asserts that a thread is as wide as the time it lived: its on + off CPU time (µs, all of
/// `thread`'s stacks) is within `band`; `what` says how long it lived, for the message. Returns
/// that time.
pub fn assert_lived(
    thread: &[FoldedStack],
    band: std::ops::RangeInclusive<u64>,
    what: &str,
    context: &dyn Fn() -> String,
) -> u64 {
    let whole = super::all_samples(thread);
    assert!(
        band.contains(&whole),
        "{what}: on + off CPU is {:.3} s (want {:.3} to {:.3} s)\n{}",
        secs(whole),
        secs(*band.start()),
        secs(*band.end()),
        context()
    );
    whole
}
