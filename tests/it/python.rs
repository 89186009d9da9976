//! Python frames (issue 21): CPython's own call stack in place of its interpreter's native frames,
//! for every supported version as users run them (Debian's stripped `python3.11`, pyenv's 3.8 to
//! 3.13), with nothing asked of the process. The workloads (`examples/python/workload.py`) have
//! known call trees and run until they used their CPU time, so shares hold on a busy machine.

use std::path::Path;

use crate::support::*;

/// CPU seconds each workload burns.
const CPU_SECONDS: &str = "3";
/// Expected share of `outer > middle` among `outer`'s two subtrees (the rest is `sort_py`), and
/// the tolerance (±10 points).
const MIDDLE_SHARE: f64 = 0.75;
const SHARE_TOLERANCE: f64 = 0.10;

/// Records `python [python_args] workload.py MODE CPU_SECONDS` with `record` (the BPF backend,
/// unless `record` says otherwise); the stacks of the Python process (roots `python...`) and stderr.
fn record_python(
    record: RecordArgs,
    python: &Path,
    python_args: &[&str],
    mode: &str,
) -> (Vec<FoldedStack>, String) {
    let mut command = vec![path_arg(python)];
    command.extend(python_args);
    command.extend([PYTHON_WORKLOAD, mode, CPU_SECONDS]);
    let args = record.frequency(499).output_stdout().command(&command);
    let output = run_ok(&args.strs());
    let stacks = folded_stdout(&output);
    let stderr = stderr_text(&output);
    (rooted(&stacks, |root| root.starts_with("python")), stderr)
}

/// The Python frames of a stack, without their marker, outermost first.
fn python_frames(stack: &FoldedStack) -> Vec<&str> {
    stack
        .frames
        .iter()
        .filter(|f| is_python(f))
        .map(|f| f.trim_end_matches("_[p]"))
        .collect()
}

/// The name of a Python frame whose code object could not be read.
const UNKNOWN_PYTHON_FRAME: &str = "[python?]";

fn is_python(frame: &str) -> bool {
    frame.ends_with("_[p]")
}

/// Most samples have Python frames, and the summary names the version.
fn assert_python_frames(stacks: &[FoldedStack], stderr: &str, version: &str) {
    let all = all_samples(stacks);
    let with_python = total(stacks, |s| s.frames.iter().any(|f| is_python(f)));
    assert!(
        all >= 100 && with_python * 10 >= all * 9,
        "{with_python} of {all} samples have Python frames:\n{}\n{stderr}",
        describe(stacks)
    );
    assert!(
        stderr.contains(&format!("CPython {version}, ")),
        "the summary does not name CPython {version}:\n{stderr}"
    );
}

/// The call tree of `calltree`: 75 % under `outer > middle > inner`, 25 % under `outer > sort_py >
/// (native sorted) > key_py`, every Python chain whole and in order under the native entry.
fn assert_call_tree(python: &Path, python_args: &[&str], version: &str) {
    let _kernel = kernel_test();
    let (stacks, stderr) = record_python(Backend::Bpf.record(), python, python_args, "calltree");
    assert_python_frames(&stacks, &stderr, version);
    let shown = describe(&stacks);
    let middle = total(&stacks, |s| s.has_frame("middle_[p]"));
    let sort = total(&stacks, |s| s.has_frame("sort_py_[p]"));
    let share = middle as f64 / (middle + sort).max(1) as f64;
    assert!(
        (share - MIDDLE_SHARE).abs() <= SHARE_TOLERANCE,
        "outer > middle has {:.0} % of outer's samples ({middle} against {sort} under sort_py), \
         75 % expected:\n{shown}",
        share * 100.0
    );
    // The Python frames of each stack, native ones left out, are the whole chain in order (3.8
    // to 3.10 run each Python call in native calls of its own, which sit between them).
    for stack in &stacks {
        let python = python_frames(stack);
        let expected: &[&str] = if stack.has_frame("middle_[p]") {
            &["<module>", "main", "outer", "middle", "inner", "spin"]
        } else if stack.has_frame("sort_py_[p]") {
            &["<module>", "main", "outer", "sort_py", "key_py", "spin"]
        } else {
            continue;
        };
        // A code object that could not be read is a `[python?]` frame in its place, never
        // another name (rare: the walk caught a frame while the interpreter was changing it).
        let matches = python.len() >= 4
            && python.len() <= expected.len()
            && python
                .iter()
                .zip(expected)
                .all(|(f, e)| f == e || *f == UNKNOWN_PYTHON_FRAME);
        assert!(
            matches,
            "a broken chain: {}\n{shown}",
            stack.frames.join(";")
        );
    }
    // Under `outer` every code object lives as long as the program: its frames are all named. (A
    // module's top-level code run by an import at startup is freed once it has run, often before
    // its samples are read: those may stay `[python?]`.)
    let unknown = total(&stacks, |s| {
        s.has_frame("outer_[p]") && s.has_frame(&format!("{UNKNOWN_PYTHON_FRAME}_[p]"))
    });
    assert!(
        unknown * 100 <= all_samples(&stacks),
        "{unknown} samples with unreadable Python frames:\n{shown}"
    );
    // `sorted` is native code between two Python calls: it stays where it runs.
    let keys: Vec<&FoldedStack> = stacks
        .iter()
        .filter(|s| s.has_frame("key_py_[p]") && s.has_frame("outer_[p]"))
        .collect();
    assert!(!keys.is_empty(), "no sample in key_py:\n{shown}");
    for stack in keys {
        let at = |name: &str| stack.frames.iter().position(|f| f == name);
        let native_between = matches!((at("sort_py_[p]"), at("key_py_[p]")), (Some(s), Some(k))
            if s < k && stack.frames[s + 1..k].iter().any(|f| !is_python(f)));
        assert!(
            native_between,
            "no native frame (sorted) between sort_py and key_py: {}\n{shown}",
            stack.frames.join(";")
        );
    }
    // Native roots stay: the stacks reach the process entry, with the interpreter's frames above.
    let complete = complete_user_share(&stacks);
    assert!(
        complete >= 0.9,
        "{:.0} % of stacks reach _start:\n{shown}",
        complete * 100.0
    );
}

/// `reused`: each `alpha` and `beta` is a new code object, freed when it returns, and the next one
/// often takes its address before the samples taken in it are named. Those samples are named after
/// the object they were taken in, or `[python?]`: never `call_alpha > beta` or `call_beta > alpha`.
/// `-v` says why frames stayed `[python?]`.
fn assert_no_borrowed_names(python: &Path, version: &str) {
    let _kernel = kernel_test();
    let record = Backend::Bpf.record().args(&["-v"]);
    let (stacks, stderr) = record_python(record, python, &[], "reused");
    assert_python_frames(&stacks, &stderr, version);
    let shown = describe(&stacks);
    let borrowed = total(&stacks, |s| {
        python_frames(s)
            .windows(2)
            .any(|pair| matches!(pair, ["call_alpha", "beta"] | ["call_beta", "alpha"]))
    });
    assert_eq!(
        borrowed, 0,
        "samples named after a code object that took the address of theirs:\n{shown}"
    );
    // The check does not blank the names of objects read while they lived (beta lives four times
    // as long as alpha; the names of long-lived code are checked by `assert_call_tree`).
    let alpha = total(&stacks, |s| s.has_frame("alpha_[p]"));
    let beta = total(&stacks, |s| s.has_frame("beta_[p]"));
    let calls = total(&stacks, |s| s.has_frame("call_beta_[p]"));
    assert!(
        calls > 0 && beta * 10 >= calls,
        "{alpha} samples in alpha, {beta} of {calls} under call_beta in beta:\n{shown}"
    );
    // Most `alpha` objects are gone before anything reads them: -v must say why those frames are
    // `[python?]`.
    let unknown = total(&stacks, |s| {
        s.has_frame(&format!("{UNKNOWN_PYTHON_FRAME}_[p]"))
    });
    let replaced = "whose code object was freed and its address taken by another";
    assert!(
        unknown > 0
            && stderr
                .lines()
                .any(|l| l.contains("Python code objects:") && l.contains(replaced)),
        "{unknown} samples with [python?] frames; -v should count frames whose code object was \
         replaced:\n{stderr}"
    );
}

#[test]
fn freed_code_objects_do_not_lend_names_debian_python_3_11() {
    assert_no_borrowed_names(&debian_python(), "3.11");
}

/// 3.8 checks other members (the file name, the name and the line table).
#[test]
fn freed_code_objects_do_not_lend_names_python_3_8() {
    assert_no_borrowed_names(&python_interpreter("3.8"), "3.8");
}

/// Debian's stripped, static `python3.11`.
#[test]
fn call_tree_debian_python_3_11() {
    assert_call_tree(&debian_python(), &[], "3.11");
}

/// pyenv's 3.8 (`f_back` chains, one native call per frame).
#[test]
fn call_tree_python_3_8() {
    assert_call_tree(&python_interpreter("3.8"), &[], "3.8");
}

#[test]
fn call_tree_python_3_10() {
    assert_call_tree(&python_interpreter("3.10"), &[], "3.10");
}

/// pyenv's 3.11 (shared libpython; `cframe->current_frame`, entry frames marked).
#[test]
fn call_tree_python_3_11() {
    assert_call_tree(&python_interpreter("3.11"), &[], "3.11");
}

/// 3.12: shim frames of the C stack end each native call's frames.
#[test]
fn call_tree_python_3_12() {
    assert_call_tree(&python_interpreter("3.12"), &[], "3.12");
}

/// 3.13: the layout comes from the process's own `_Py_DebugOffsets`.
#[test]
fn call_tree_python_3_13() {
    assert_call_tree(&python_interpreter("3.13"), &[], "3.13");
}

/// `-X perf` (3.12): the perf map's `py::` trampolines name the same Python calls again; they go,
/// and the chains are those without the flag.
#[test]
fn perf_trampolines_are_not_duplicated() {
    let _maps = PerfMapCleanup::new();
    assert_call_tree(&python_interpreter("3.12"), &["-X", "perf"], "3.12");
    let _kernel = kernel_test();
    let (stacks, _) = record_python(
        Backend::Bpf.record(),
        &python_interpreter("3.12"),
        &["-X", "perf"],
        "calltree",
    );
    let duplicated = total(&stacks, |s| {
        python_frames(s).len() > 1 && s.frames.iter().any(|f| f.starts_with("py::"))
    });
    assert_eq!(
        duplicated,
        0,
        "py:: trampolines next to Python frames:\n{}",
        describe(&stacks)
    );
}

/// Two threads, each in its own function: every stack of a thread holds its own chain, under its
/// own thread, and both threads get their share.
#[test]
fn threads_each_have_their_chain() {
    let _kernel = kernel_test();
    let record = Backend::Bpf.record().args(&["--per-thread"]);
    let (stacks, stderr) = record_python(record, &debian_python(), &[], "threads");
    assert_python_frames(&stacks, &stderr, "3.11");
    let shown = describe(&stacks);
    let mut roots = std::collections::BTreeMap::new();
    for (name, other) in [("thread_a", "thread_b"), ("thread_b", "thread_a")] {
        let own = format!("{name}_[p]");
        let mine: Vec<&FoldedStack> = stacks.iter().filter(|s| s.has_frame(&own)).collect();
        let samples: u64 = mine.iter().map(|s| s.count).sum();
        assert!(
            samples * 4 >= all_samples(&stacks),
            "{name} has {samples} samples:\n{shown}"
        );
        let spin = format!("spin_{}", &name[name.len() - 1..]);
        for stack in &mine {
            let python = python_frames(stack);
            assert!(
                python.starts_with(&[
                    "Thread._bootstrap",
                    "Thread._bootstrap_inner",
                    "Thread.run",
                    name
                ]) && python.get(4).is_none_or(|f| *f == spin)
                    && !stack.frames.iter().any(|f| f.starts_with(other)),
                "{name}'s stack: {}\n{shown}",
                stack.frames.join(";")
            );
            roots
                .entry(name)
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(stack.frames[0].clone());
        }
    }
    let (a, b) = (&roots["thread_a"], &roots["thread_b"]);
    assert!(
        a.len() == 1 && b.len() == 1 && a != b,
        "each thread's function must run in one thread of its own: {roots:?}"
    );
}

/// `-p` on an interpreter that has run for seconds before emberprof started: its threads' states
/// and code objects are found as they are, with nothing asked of it.
#[test]
fn attaches_to_a_running_interpreter() {
    let _kernel = kernel_test();
    let child = std::process::Command::new(python_interpreter("3.10"))
        .args([PYTHON_WORKLOAD, "sleepy", UNTIL_KILLED])
        .spawn()
        .expect("start python3.10");
    let child = KillOnDrop(child);
    // Asleep for a second, then busy: attach once it has burnt CPU for a while.
    let started = std::time::Instant::now();
    while cpu_seconds_used(child.pid()) < 1.0 {
        assert!(started.elapsed().as_secs() < 60, "python3.10 does not run");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let args = Backend::Bpf
        .record()
        .frequency(499)
        .output_stdout()
        .pid(child.pid());
    let (stacks, stderr, _) = record_pid_for_cpu(&args.strs(), child.pid(), 2.0);
    assert_python_frames(&stacks, &stderr, "3.10");
    let chains = total(&stacks, |s| {
        python_frames(s).starts_with(&["<module>", "main", "outer", "middle", "inner"])
    });
    assert!(
        chains * 2 >= all_samples(&stacks),
        "only {chains} samples under outer > middle > inner:\n{}",
        describe(&stacks)
    );
}

/// A generator and an async coroutine run in their own native calls (3.11) or inline (3.12): the
/// Python chain is whole either way.
#[test]
fn generators_and_coroutines_keep_their_callers() {
    let _kernel = kernel_test();
    for python in [debian_python(), python_interpreter("3.12")] {
        for (mode, chain) in [
            ("generator", ["consume", "produce", "spin"]),
            ("coroutine", ["main_async", "compute", "spin"]),
        ] {
            let (stacks, _) = record_python(Backend::Bpf.record(), &python, &[], mode);
            let under = total(&stacks, |s| {
                has_in_order(
                    &python_frames(s)
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>(),
                    &chain,
                )
            });
            assert!(
                under * 10 >= all_samples(&stacks) * 8,
                "{}: only {under} samples under {chain:?}:\n{}",
                python.display(),
                describe(&stacks)
            );
        }
    }
}

/// A recursion deeper than the walker's bound keeps its innermost frames, marked where the outer
/// ones are missing, rather than passing them off as the whole stack.
#[test]
fn recursion_past_the_bound_is_marked() {
    let _kernel = kernel_test();
    for python in [
        debian_python(),
        python_interpreter("3.8"),
        python_interpreter("3.12"),
    ] {
        let (stacks, stderr) = record_python(Backend::Bpf.record(), &python, &[], "recursion");
        let shown = describe(&stacks);
        let deep = total(&stacks, |s| s.has_frame("bottom_[p]"));
        let marked = total(&stacks, |s| {
            let python = python_frames(s);
            s.has_frame("bottom_[p]")
                && python.first() == Some(&"[python: outer frames not walked]")
                && python.len() <= 129
                && python[1..]
                    .iter()
                    .all(|f| ["recurse", "bottom", "spin"].contains(f))
        });
        assert!(
            deep * 2 >= all_samples(&stacks) && marked * 10 >= deep * 9,
            "{}: {marked} of {deep} samples in bottom marked as cut:\n{shown}\n{stderr}",
            python.display()
        );
    }
}

/// The perf backend cannot see Python frames (they are not on the native stack): the summary says
/// so rather than leaving the user with `_PyEval_EvalFrameDefault`.
#[test]
fn perf_backend_says_python_frames_need_bpf() {
    let _kernel = kernel_test();
    let (stacks, stderr) = record_python(Backend::Perf.record(), &debian_python(), &[], "calltree");
    assert!(!stacks.is_empty());
    assert!(
        stderr.contains("CPython 3.11, no Python frames: they need the BPF backend"),
        "{stderr}"
    );
}

/// `--all`: a Python process started after sampling began is found when it is first sampled, and
/// gets its Python frames from then on (its first samples, taken before its runtime was found, may
/// have none: the summary counts them).
#[test]
fn all_finds_python_processes_that_start_later() {
    let _kernel = kernel_test();
    let mut profiler = emberprof()
        .args([
            "record",
            "--backend",
            "bpf",
            "-a",
            "--per-thread",
            "-F",
            "499",
            "-o",
            "-",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start emberprof");
    wait_until_sampling(&mut profiler);
    // Other Python processes may run on the machine: this one is told by its pid.
    let mut python = std::process::Command::new(debian_python())
        .args([PYTHON_WORKLOAD, "calltree", CPU_SECONDS])
        .spawn()
        .expect("run python3.11");
    let root = format!("python3.11-{}/{}", python.id(), python.id());
    let status = python.wait().expect("wait for python3.11");
    assert!(status.success(), "python3.11 failed: {status}");
    // SAFETY: signalling our own child, as Ctrl-C does.
    unsafe { libc::kill(profiler.id() as libc::pid_t, libc::SIGINT) };
    let output = profiler.wait_with_output().expect("wait for emberprof");
    let stderr = expect_success(&output, "emberprof record -a");
    let stacks = rooted(&folded_stdout(&output), |r| r == root);
    let all = all_samples(&stacks);
    let chains = total(&stacks, |s| {
        python_frames(s).starts_with(&["<module>", "main", "outer"])
    });
    assert!(
        all >= 100 && chains * 2 >= all,
        "{chains} of {all} samples of the late {root} under <module> > main > outer:\n{}\n{stderr}",
        describe(&stacks)
    );
    assert!(stderr.contains("CPython 3.11, "), "{stderr}");
}
