//! `--off-cpu` on the perf_event backend (issue 20), at each privilege level. As root (kernel
//! access) a `context-switches` sampling event takes each switch-out's own stacks, kernel frames
//! down to the scheduler and user frames by frame pointers or DWARF (`waits` and `waits-nofp`),
//! and the summary names the event. As uid 65534 at `perf_event_paranoid` 2 the event cannot be
//! opened: the intervals go to each thread's last on-CPU sample, and the summary says so.
//!
//! What tells the two methods apart: the sleeper's last on-CPU sample before each nap is in its
//! burn, so only the exact stacks put the naps under nanosleep.

use crate::support::*;

/// The summary's words for each method.
const EXACT: &str = "on the stacks threads switched out in (context-switches event)";
const LAST_SAMPLE: &str = "on each thread's last on-CPU sample";

/// Every off-CPU stack is switched out in the kernel's scheduler: the frame above `[off-cpu]` is a
/// kernel frame of it (`schedule`, `preempt_schedule_*`, `__cond_resched`: the sample is taken in
/// `__schedule`, whose caller's address starts the kernel callchain).
fn assert_scheduler_leaves(stacks: &[FoldedStack], context: &dyn Fn() -> String) {
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

/// The sleeper (20 ms burn, 60 ms nanosleep, in a loop) waits in its nanosleep, down to
/// do_nanosleep in the kernel: about 3 parts in 4 of its burning and sleeping (81.7 % measured
/// with bpftrace on a quiet machine); it is as wide as its 3 s, and none of its waiting but its
/// start's and exit's is outside its thread entry. The last-sample method puts the naps under the burn instead.
#[test]
fn sleeper_waits_in_its_nanosleep() {
    let _kernel = kernel_test();
    for example in ["waits", "waits-nofp"] {
        let (stacks, stderr) = waits_wall_profile(Backend::Perf, example, "sleep", "3", &[]);
        let sleeper = thread_stacks(&stacks, "sleeper");
        let context = || format!("{example}: {stderr}\n{}", describe(&sleeper));
        assert!(stderr.contains(EXACT), "{}", context());
        assert_scheduler_leaves(&sleeper, &context);
        let nap = total(&sleeper, |s| {
            is_off_cpu(s)
                && has_frame_with(s, "sleeper_nap")
                && has_frame_with(s, "nanosleep")
                && s.has_frame("do_nanosleep_[k]")
        });
        let burn = total(&sleeper, |s| {
            !is_off_cpu(s) && has_frame_with(s, "burn_cpu")
        });
        let share = nap as f64 / (nap + burn).max(1) as f64;
        assert!(
            (0.65..=0.9).contains(&share),
            "nanosleep {:.3} s of {:.3} s burning and sleeping ({:.0} %; want 65-90)\n{}",
            secs(nap),
            secs(nap + burn),
            share * 100.0,
            context()
        );
        let whole = all_samples(&sleeper);
        assert!(
            (2_700_000..=3_300_000).contains(&whole),
            "the sleeper lived 3 s: on + off CPU is {:.3} s\n{}",
            secs(whole),
            context()
        );
        // Only what it waited while starting or exiting (a page fault in __libc_thread_freeres:
        // 17 µs seen), far less than one 60 ms nap charged to its last on-CPU sample.
        let outside = total(&sleeper, |s| {
            is_off_cpu(s) && !has_frame_with(s, "sleeper_main")
        });
        assert!(
            outside <= whole / 300,
            "{:.3} s off CPU outside the thread's entry\n{}",
            secs(outside),
            context()
        );
    }
}

/// A reader blocked on a pipe for the whole capture waits in its read, down to pipe_read in the
/// kernel, all of its 2 s (it is still switched out at the end: counted up to it).
#[test]
fn blocked_reader_waits_in_its_read() {
    let _kernel = kernel_test();
    for example in ["waits", "waits-nofp"] {
        let (stacks, stderr) =
            waits_wall_profile(Backend::Perf, example, "pipe", "60", &["-d", "2"]);
        let reader = thread_stacks(&stacks, "reader");
        let context = || format!("{example}: {stderr}\n{}", describe(&stacks));
        assert!(stderr.contains(EXACT), "{}", context());
        assert_scheduler_leaves(&reader, &context);
        let whole = all_samples(&reader);
        let in_read = total(&reader, |s| {
            is_off_cpu(s)
                && has_frame_with(s, "reader_main")
                && has_frame_with(s, "libc_read")
                && has_frame_with(s, "pipe_read_[k]")
        });
        assert!(
            in_read as f64 >= 0.97 * whole as f64,
            "reader: {:.3} s in its read of {:.3} s\n{}",
            secs(in_read),
            secs(whole),
            context()
        );
        assert!(
            (1_800_000..=2_200_000).contains(&whole),
            "the capture lasted 2 s: the reader's on + off CPU is {:.3} s\n{}",
            secs(whole),
            context()
        );
    }
}

/// A mutex handed between two threads: the waiter waits in pthread_mutex_lock, down to
/// futex_wait in the kernel, most of its time; the holder, whose waiting is in its own stacks and
/// not the waiter's, burns while it holds the lock; each is as wide as the 2 s it ran.
#[test]
fn mutex_waiter_waits_in_the_lock() {
    let _kernel = kernel_test();
    for example in ["waits", "waits-nofp"] {
        let (stacks, stderr) = waits_wall_profile(Backend::Perf, example, "mutex", "2", &[]);
        let waiter = thread_stacks(&stacks, "waiter");
        let holder = thread_stacks(&stacks, "holder");
        let context = || format!("{example}: {stderr}\n{}", describe(&stacks));
        assert!(stderr.contains(EXACT), "{}", context());
        assert_scheduler_leaves(&stacks, &context);
        let whole = all_samples(&waiter);
        let in_lock = total(&waiter, |s| {
            is_off_cpu(s)
                && has_frame_with(s, "waiter_main")
                && has_frame_with(s, "pthread_mutex_lock")
                && s.has_frame("futex_wait_[k]")
        });
        assert!(
            in_lock as f64 >= 0.6 * whole as f64,
            "waiter: {:.3} s waiting in pthread_mutex_lock of {:.3} s\n{}",
            secs(in_lock),
            secs(whole),
            context()
        );
        let burning = total(&holder, |s| !is_off_cpu(s) && has_frame_with(s, "burn_cpu"));
        assert!(burning > 0, "the holder never burned\n{}", context());
        let holder_waits_as_waiter =
            total(&holder, |s| is_off_cpu(s) && has_frame_with(s, "waiter_"));
        assert_eq!(
            holder_waits_as_waiter,
            0,
            "the waiter's stacks in the holder\n{}",
            context()
        );
        for (name, thread) in [("waiter", &waiter), ("holder", &holder)] {
            let whole = all_samples(thread);
            assert!(
                (1_700_000..=2_400_000).contains(&whole),
                "the {name} ran about 2 s: on + off CPU is {:.3} s\n{}",
                secs(whole),
                context()
            );
        }
    }
}

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
    let whole = all_samples(&sleeper);
    assert!(
        (2_700_000..=3_300_000).contains(&whole),
        "the sleeper lived 3 s: on + off CPU is {:.3} s\n{}",
        secs(whole),
        context()
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
/// interval is timed by the switch records; records lost to full rings only make it narrower,
/// and the band allows for that and for the thread's start and end around the rounds), waiting in
/// its pipe read or write.
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
    assert!(stderr.contains(EXACT), "{stderr}");
    assert!(
        stderr.contains("on the stacks they switched out in"),
        "{stderr}"
    );
    for name in ["pingpong", "pong"] {
        let thread = thread_stacks(&stacks, name);
        let whole = all_samples(&thread) as f64 / 1e6;
        assert!(
            whole > seconds * 0.7 && whole < seconds * 1.4,
            "{name} ran about {seconds:.3} s: on + off CPU is {whole:.3} s\n{stderr}\n{}",
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
