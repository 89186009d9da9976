//! `--off-cpu` on the perf_event backend (issue 20), what only it does. As root (kernel access) a
//! `context-switches` sampling event takes each switch-out's own stacks, kernel frames down to the
//! scheduler and user frames by frame pointers or DWARF, and the summary names the event: the
//! sleeper, reader and mutex tests run on both backends, in `off_cpu`. As uid 65534 at `perf_event_paranoid` 2 the event cannot be
//! opened: the intervals go to each thread's last on-CPU sample, and the summary says so.
//!
//! What tells the two methods apart: the sleeper's last on-CPU sample before each nap is in its
//! burn, so only the exact stacks put the naps under nanosleep.

use crate::support::*;

/// The summary's words for the last-sample method.
const LAST_SAMPLE: &str = "on each thread's last on-CPU sample";

/// As uid 65534 at `perf_event_paranoid` 2 the context-switches event is refused: the run falls
/// back to the last-sample method and says so; the sleeper is still as wide as its 3 s, and no
/// kernel frame shows.
#[test]
fn unprivileged_falls_back_to_last_samples() {
    let _kernel = kernel_test();
    let _paranoid = Paranoid::set(2);
    let sandbox = Sandbox::new(&["waits"]);
    let out = sandbox.out("wall.folded");
    let args = RecordArgs::new()
        .args(&["--off-cpu", "--per-thread", "-v"])
        .frequency(999)
        .output(&out)
        .command(&[path_arg(&sandbox.bin("waits")), "sleep", "3"]);
    let stderr = expect_success(
        &sandbox.emberprof(&args.strs()),
        "unprivileged --off-cpu launch",
    );
    let stacks = read_folded(&out);
    let sleeper = thread_stacks(&stacks, "sleeper");
    let context = || format!("{stderr}\n{}", describe(&sleeper));
    assert!(
        stderr.contains("perf_event backend") && stderr.contains(LAST_SAMPLE),
        "{}",
        context()
    );
    assert!(!stderr.contains("context-switches event"), "{}", context());
    assert!(
        !stacks.iter().any(FoldedStack::has_kernel_frame),
        "kernel frames at paranoid 2\n{}",
        context()
    );
    let whole = assert_lived(
        &sleeper,
        2_700_000..=3_300_000,
        "the sleeper lived 3 s",
        &context,
    );
    assert!(
        total(&sleeper, is_off_cpu) * 2 > whole,
        "most of the sleeper's time is off CPU\n{}",
        context()
    );
}

/// Two threads handing a byte over pipes 100,000 times (hundreds of thousands of switch-outs a
/// second): the run completes, the `-v` summary counts the switch-outs with their own stacks and
/// those between samples, and each thread is still about as wide as the rounds took (every
/// interval is timed by the switch records; records lost to full rings only make it narrower, by
/// the share of the run they covered, and the band allows for that and for the thread's start and
/// end around the rounds), waiting in its pipe read or write.
#[test]
fn fast_hand_overs_keep_their_width() {
    let _kernel = kernel_test();
    let dir = scratch();
    let folded = out_path(&dir, "wall.folded");
    let path = emberprof_examples::path("pingpong");
    let args = Backend::Perf
        .record()
        .args(&["--off-cpu", "--per-thread", "-v"])
        .output(&folded)
        .command(&[path_arg(&path), "100000"]);
    let output = run_ok(&args.strs());
    let seconds = pingpong_seconds(&String::from_utf8_lossy(&output.stdout));
    let stderr = stderr_text(&output);
    let stacks = read_folded(&folded);
    assert!(stderr.contains(PERF_EXACT), "{stderr}");
    assert!(
        stderr.contains("on the stacks they switched out in"),
        "{stderr}"
    );
    // Where a ring was full its records are gone: the intervals it would have timed with them.
    let kept = 1.0 - lost_share(&stderr);
    for name in ["pingpong", "pong"] {
        let thread = thread_stacks(&stacks, name);
        let whole = all_samples(&thread) as f64 / 1e6;
        assert!(
            whole > seconds * 0.7 * kept && whole < seconds * 1.4,
            "{name} ran about {seconds:.3} s: on + off CPU is {whole:.3} s ({:.1} % of the \
             records lost)\n{stderr}\n{}",
            (1.0 - kept) * 100.0,
            describe(&thread)
        );
        // In its pipe read (or write, preempted as it wakes the other thread).
        let in_pipes = total(&thread, |s| {
            is_off_cpu(s) && (has_frame_with(s, "libc_read") || has_frame_with(s, "libc_write"))
        });
        let off = total(&thread, is_off_cpu);
        assert!(
            in_pipes as f64 >= 0.9 * off as f64,
            "{name}: {:.3} s of {:.3} s off CPU in its pipe read or write\n{stderr}\n{}",
            secs(in_pipes),
            secs(off),
            describe(&thread)
        );
    }
}

/// The share of a ping-pong capture's records that full rings lost, from its `-v` summary: the
/// records dropped against those and the two switch records of every switch-out seen. Rings fill in
/// bursts, so this is about the share of the run whose intervals went untimed.
fn lost_share(stderr: &str) -> f64 {
    let Some(dropped) = number_after(stderr, "the ring buffers were full (") else {
        return 0.0;
    };
    let seen = number_before(stderr, " switch-outs seen")
        .unwrap_or_else(|| panic!("the summary counts no switch-outs:\n{stderr}"));
    dropped as f64 / (dropped + 2 * seen) as f64
}

/// The number right after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    rest[..digits].parse().ok()
}

/// The number right before `marker` in `text`.
fn number_before(text: &str, marker: &str) -> Option<u64> {
    let before = &text[..text.find(marker)?];
    let digits = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    before[before.len() - digits..].parse().ok()
}
