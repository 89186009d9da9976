//! What frames say: truncated stacks marked and counted, exact source lines for frames with inlined
//! calls, short C++ names, and nothing of emberprof's own in launch mode.

use crate::support::*;

/// Samples of stacks marked truncated (`[truncated]` right under the root).
fn truncated(stacks: &[FoldedStack]) -> u64 {
    total(stacks, |s| {
        s.frames.get(1).is_some_and(|f| f == "[truncated]")
    })
}

/// The number just before `marker` in the summary line (`(0 lost, 12 truncated)` and the like).
fn summary_count(stderr: &str, marker: &str) -> u64 {
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("emberprof: ") && l.contains(" samples ("))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let before = summary
        .split(marker)
        .next()
        .filter(|before| before.len() < summary.len())
        .unwrap_or_else(|| panic!("no {marker:?} in the summary: {summary}"));
    before
        .rsplit([' ', '('])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {marker:?} in: {summary}"))
}

/// The frameless burn walked through frame pointers cannot reach `main`, let alone `_start`: its
/// stacks are marked `[truncated]` and counted in the summary, and `-v` says they stop in
/// `burn-nofp`. Unwound with DWARF they reach `_start`: (almost) none is truncated, and the
/// summary's "ended early" count is exactly the truncated stacks in the output.
#[test]
fn truncated_stacks_are_marked_and_counted() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn-nofp", &["20"]);
    let pid = workload.pid().to_string();

    let (stacks, stderr) = record_folded(&[
        "-v", "record", "-p", &pid, "-d", "1", "-F", "499", "--unwind", "fp", "-o", "-",
    ]);
    let all = total(&stacks, |_| true);
    let marked = truncated(&stacks);
    assert!(
        all >= 50 && marked * 10 >= all * 9,
        "--unwind fp: only {marked}/{all} samples marked [truncated]:\n{}",
        describe(&stacks)
    );
    assert_eq!(
        summary_count(&stderr, " truncated)"),
        marked,
        "the summary's truncated count is not what the output shows:\n{stderr}"
    );
    assert!(
        stderr.contains("stop in: burn-nofp ("),
        "-v does not name the module where the stacks stop:\n{stderr}"
    );

    let (stacks, stderr) = record_folded(&[
        "record", "-p", &pid, "-d", "1", "-F", "499", "--unwind", "dwarf", "-o", "-",
    ]);
    let all = total(&stacks, |_| true);
    let marked = truncated(&stacks);
    assert!(
        all >= 50 && marked * 50 <= all,
        "--unwind dwarf: {marked}/{all} samples truncated:\n{}",
        describe(&stacks)
    );
    let complete = total(&stacks, |s| s.frames.get(1).is_some_and(|f| f == "_start"));
    assert!(
        complete * 10 >= all * 9,
        "--unwind dwarf: only {complete}/{all} stacks start at _start:\n{}",
        describe(&stacks)
    );
    assert_eq!(
        summary_count(&stderr, " ended early)"),
        marked,
        "DWARF stacks that ended early per the summary vs truncated in the output:\n{stderr}"
    );
}

/// The 1-based number of the only line of `source` containing `marker`.
fn line_of(source: &str, marker: &str) -> usize {
    let lines: Vec<usize> = source
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(marker))
        .map(|(index, _)| index + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{marker:?} must occur once in the source");
    lines[0]
}

/// `--lines` on the Rust example: `hot_loop`, whose callees are inlined, carries the line it is at
/// (its call to `mix_step`, or its `for` loop with the inlined `Range::next`), `run` the line of its
/// call to `hot_loop`, and the inlined `mix_step` a line of its own body (lines found in the source
/// by their text).
#[test]
fn lines_are_exact_for_frames_with_inlined_calls() {
    let _kernel = kernel_test();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rust/inline.rs");
    let source =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let hot_loop_calls = line_of(&source, "state = mix_step(state, round);");
    let hot_loop_loops = line_of(&source, "for round in 0..rounds");
    let run_calls = line_of(&source, "state = hot_loop(black_box(state)");
    let mix_step_body =
        line_of(&source, "fn mix_step(") + 1..=line_of(&source, "x.rotate_left((round");

    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "--lines",
        "-o",
        "-",
        "--",
        &example("rust-inline"),
        "1",
    ]);
    let in_hot_loop = |s: &FoldedStack| {
        s.frames
            .iter()
            .any(|f| f.starts_with("rust_inline::hot_loop"))
    };
    let run = format!("rust_inline::run (inline.rs:{run_calls})");
    let calling = format!("rust_inline::hot_loop (inline.rs:{hot_loop_calls})");
    let looping = format!("rust_inline::hot_loop (inline.rs:{hot_loop_loops})");
    let in_mix_step = |frame: &str| {
        frame
            .strip_prefix("mix_step (inline.rs:")
            .and_then(|f| f.strip_suffix(")_[i]"))
            .and_then(|line| line.parse::<usize>().ok())
            .is_some_and(|line| mix_step_body.contains(&line))
    };
    let in_range_next =
        |frame: &str| frame.starts_with("next<u64> (") && frame.contains("range.rs:");
    // (hot_loop frame, its inlined callee) after `run` at its exact line.
    let shape = |s: &FoldedStack| -> Option<(String, String)> {
        let at = s.frames.iter().position(|f| *f == run)?;
        Some((s.frames.get(at + 1)?.clone(), s.frames.get(at + 2)?.clone()))
    };
    let hot = total(&stacks, in_hot_loop);
    let calls = total(&stacks, |s| {
        shape(s).is_some_and(|(hot_loop, callee)| hot_loop == calling && in_mix_step(&callee))
    });
    let loops = total(&stacks, |s| {
        shape(s).is_some_and(|(hot_loop, callee)| hot_loop == looping && in_range_next(&callee))
    });
    assert!(
        hot >= 100 && (calls + loops) * 10 >= hot * 9 && calls * 3 >= hot,
        "of {hot} hot_loop samples, {calls} read `{run};{calling};mix_step (inline.rs:{mix_step_body:?})_[i]` \
         and {loops} `{run};{looping};next<u64> (..range.rs:N)_[i]`:\n{}",
        describe(&stacks)
    );
}

/// Frames whose name still has a C++ parameter list or clone suffix.
fn long_cpp_names(stacks: &[FoldedStack]) -> Vec<&str> {
    let mut names: Vec<&str> = stacks
        .iter()
        .flat_map(|s| &s.frames)
        .map(String::as_str)
        .filter(|f| f.contains("::") && !f.ends_with("_[k]") && !f.ends_with("_[j]"))
        .filter(|f| f.contains("[clone") || (f.ends_with(')') && !f.ends_with("operator()")))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// C++ names default to the qualified name with template arguments, without return type,
/// parameters or clone suffixes; `--full-names` keeps them. Checked on the example and on node, a
/// large real C++ program.
#[test]
fn cpp_names_are_short_unless_asked() {
    let _kernel = kernel_test();
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "-o",
        "-",
        "--",
        &example("cpp-work"),
        "1",
    ]);
    let all = total(&stacks, |_| true);
    let short = total(&stacks, |s| {
        s.frames
            .windows(2)
            .any(|w| w[0] == "run" && w[1] == "emberprof_demo::Churner<unsigned long>::churn")
    });
    assert!(
        all >= 100 && short * 10 >= all * 8,
        "only {short}/{all} samples in run;emberprof_demo::Churner<unsigned long>::churn:\n{}",
        describe(&stacks)
    );
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "--full-names",
        "-o",
        "-",
        "--",
        &example("cpp-work"),
        "1",
    ]);
    let full = total(&stacks, |s| {
        s.frames
            .iter()
            .any(|f| f == "emberprof_demo::Churner<unsigned long>::churn(unsigned long)")
    });
    assert!(full >= 100, "--full-names:\n{}", describe(&stacks));

    let script = "function work() { let n = 0; for (let i = 0; i < 20000; i++) \
                  n += JSON.parse('{\"a\":[1,2,3],\"b\":\"' + i + '\"}').a.length; return n; } \
                  const end = Date.now() + 1500; let t = 0; while (Date.now() < end) t += work(); \
                  console.log(t);";
    // To a file: node's own output goes to stdout.
    let dir = scratch();
    let out = out_path(&dir, "node.folded");
    run_ok(&[
        "record",
        "-F",
        "999",
        "-o",
        out.to_str().expect("UTF-8 temp path"),
        "--",
        "node",
        "-e",
        script,
    ]);
    let stacks = read_folded(&out);
    let v8 = total(&stacks, |s| {
        s.frames.iter().any(|f| f.starts_with("v8::internal::"))
    });
    assert!(
        v8 >= 50,
        "node: no v8::internal:: frames:\n{}",
        describe(&stacks)
    );
    let long = long_cpp_names(&stacks);
    assert!(
        long.is_empty(),
        "node: C++ names with parameters or clone suffixes:\n{}",
        long.join("\n")
    );
}

/// Launch mode samples only the command: the forked child is emberprof until its exec (a few
/// samples in `execve` each run), and none of that shows as a process of emberprof's.
#[test]
fn launch_mode_shows_no_profiler_process() {
    let _kernel = kernel_test();
    let mut all = Vec::new();
    for _ in 0..8 {
        let (stacks, _) = record_folded(&[
            "record",
            "-F",
            "999",
            "-o",
            "-",
            "--",
            &example("burn"),
            "0.2",
        ]);
        all.extend(stacks);
    }
    let profiler = total(&all, |s| s.frames[0].starts_with("emberprof"));
    assert_eq!(
        profiler,
        0,
        "samples under an emberprof root:\n{}",
        describe(&all)
    );
    assert!(
        total(&all, |s| s.frames[0] == "burn") >= 100,
        "{}",
        describe(&all)
    );
}

/// A stripped executable (Debian's `sort`) unwound with DWARF: its entry point, which has no
/// symbol left, reads `_start`, so its stacks count as complete; the main thread's start at
/// `_start` and the worker threads' at `clone3`.
#[test]
fn stripped_executable_entry_is_named_start() {
    let _kernel = kernel_test();
    let dir = scratch();
    let input = out_path(&dir, "numbers.txt");
    // A fixed pseudo-random sequence (xorshift), large enough for a second of sorting.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut text = String::with_capacity(24 << 20);
    for _ in 0..1_500_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(&format!("{state}\n"));
    }
    std::fs::write(&input, text).expect("write sort input");
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "--unwind",
        "dwarf",
        "-o",
        "-",
        "--",
        "sort",
        "-o",
        "/dev/null",
        input.to_str().expect("UTF-8 temp path"),
    ]);
    let in_sort = |s: &FoldedStack| s.frames.iter().any(|f| f.starts_with("sort+0x"));
    let all = total(&stacks, in_sort);
    let rooted = total(&stacks, |s| {
        in_sort(s)
            && matches!(
                s.frames.get(1).map(String::as_str),
                Some("_start" | "clone3")
            )
    });
    assert!(
        all >= 100 && rooted * 10 >= all * 9,
        "only {rooted}/{all} samples in sort's own code start at _start or clone3:\n{}",
        describe(&stacks)
    );
    assert!(
        total(&stacks, |s| s.frames.get(1).is_some_and(|f| f == "_start")) > 0,
        "{}",
        describe(&stacks)
    );
}
