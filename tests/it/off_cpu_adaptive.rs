//! `--off-cpu` at high context-switch rates (issue 20): by default the BPF backend follows one
//! switch-out in N, N set from the switch rate so that each CPU follows only a few hundred a
//! second, and counts each followed interval N times. A pipe ping-pong (`pingpong`, hundreds of
//! thousands of switch-outs) is sampled and each of its threads stays as wide as its lifetime; a
//! thread that sleeps is followed at every switch-out (the summary says nothing of sampling).

use crate::support::*;

/// `pingpong ROUNDS` under `--off-cpu --off-cpu-min 0 --per-thread -v`: the stacks, the seconds
/// the workload says its rounds took, and emberprof's stderr. Every interval is counted, however
/// short: on a quiet machine a hand-over waits tens of µs (the CPU idles between them: 200,000
/// rounds in 7-9 s), on a busy one a few (1.0-1.2 s), below the default `--off-cpu-min` of 5 µs.
/// The intervals that default rightly leaves out took a thread's on + off CPU time down to 0.44 of
/// its run with two busy loops beside it, and failed this test in about half of the CI runs.
fn pingpong(rounds: &str) -> (Vec<FoldedStack>, f64, String) {
    let dir = scratch();
    let folded = out_path(&dir, "wall.folded");
    let path = emberprof_examples::path("pingpong");
    let args = Backend::Bpf
        .record()
        .args(&["--off-cpu", "--off-cpu-min", "0", "--per-thread", "-v"])
        .output(&folded)
        .command(&[path_arg(&path), rounds]);
    let output = run_ok(&args.strs());
    let seconds = pingpong_seconds(&String::from_utf8_lossy(&output.stdout));
    (read_folded(&folded), seconds, stderr_text(&output))
}

/// Both threads hand a byte over hundreds of thousands of times: the switch-outs are sampled
/// (the summary says so), and each thread's on + off CPU time is still about the time it ran.
/// The band is wide because a rare long wait (a preemption on a busy machine) that is followed
/// counts N times (once in a dozen runs a thread came out at 1.6 times its run); timing a
/// followed interval from the switch-out instead of after its stack copy (the copy takes as long
/// as a hand-over) makes them 2.3-5 times too wide.
#[test]
fn fast_hand_overs_are_sampled_and_keep_their_width() {
    let _kernel = kernel_test();
    let (stacks, seconds, stderr) = pingpong("200000");
    assert!(
        stderr.contains("off-CPU stacks are sampled (adaptive"),
        "{stderr}"
    );
    for name in ["pingpong", "pong"] {
        let prefix = format!("{name}-");
        let thread = rooted(&stacks, |root| root.starts_with(&prefix));
        let whole = all_samples(&thread) as f64 / 1e6;
        assert!(
            whole > seconds * 0.5 && whole < seconds * 1.8,
            "{name} ran about {seconds:.3} s: on + off CPU is {whole:.3} s\n{stderr}\n{}",
            describe(&thread)
        );
    }
}

/// A thread that sleeps 60 ms at a time switches out a few times a second: every switch-out is
/// followed, nothing is scaled.
#[test]
fn slow_waits_are_not_sampled() {
    let _kernel = kernel_test();
    let path = emberprof_examples::path("waits");
    let args = Backend::Bpf
        .record()
        .args(&["--off-cpu", "-v"])
        .output_stdout()
        .command(&[path_arg(&path), "sleep", "1"]);
    let (stacks, stderr) = record_folded(&args.strs());
    assert!(!stacks.is_empty(), "{stderr}");
    assert!(
        stderr.contains("switch-outs of target threads seen"),
        "{stderr}"
    );
    assert!(!stderr.contains("is sampled"), "{stderr}");
}
