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
