//! What frames say: truncated stacks marked and counted, exact source lines for frames with inlined
//! calls, short C++ names, and nothing of emberprof's own in launch mode.

use crate::support::*;

/// Samples of stacks marked truncated (`[truncated]` right under the root).
fn truncated(stacks: &[FoldedStack]) -> u64 {
    total(stacks, |s| {
        s.frames.get(1).is_some_and(|f| f == "[truncated]")
    })
}

both_backends! {
    /// The frameless burn walked through frame pointers cannot reach `main`, let alone `_start`: its
    /// stacks are marked `[truncated]` and counted in the summary, and `-v` says they stop in
    /// `burn-nofp`. Unwound with DWARF they reach `_start`: (almost) none is truncated, and the
    /// summary's "ended early" count is exactly the truncated stacks in the output.
    fn truncated_stacks_are_marked_and_counted(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn-nofp", &[UNTIL_KILLED]);
        let args = |mode: &str| {
            backend
                .record()
                .pid(workload.pid())
                .frequency(499)
                .unwind(mode)
                .output_stdout()
        };

        let (stacks, stderr, cpu) = record_pid_for_cpu(&args("fp").args(&["-v"]).strs(), workload.pid(), 0.5);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("--unwind fp", all, cpu, 499, &stacks);
        let marked = truncated(&stacks);
        assert!(
            marked * 10 >= all * 9,
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

        let (stacks, stderr, cpu) = record_pid_for_cpu(&args("dwarf").strs(), workload.pid(), 0.5);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("--unwind dwarf", all, cpu, 499, &stacks);
        let marked = truncated(&stacks);
        assert!(
            marked * 50 <= all,
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
}

both_backends! {
    /// `--lines` on the Rust example: `hot_loop`, whose callees are inlined, carries the line it is at
    /// (its call to `mix_step`, or its `for` loop with the inlined `Range::next`), `run` the line of its
    /// call to `hot_loop`, and the inlined `mix_step` a line of its own body (lines found in the source
    /// by their text).
    fn lines_are_exact_for_frames_with_inlined_calls(backend) {
        let _kernel = kernel_test();
        let source = "rust/inline.rs";
        let hot_loop_calls = source_line(source, "state = mix_step(state, round);");
        let hot_loop_loops = source_line(source, "for round in 0..rounds");
        let run_calls = source_line(source, "state = hot_loop(black_box(state)");
        let mix_step_body =
            source_line(source, "fn mix_step(") + 1..=source_line(source, "x.rotate_left((round");

        let args = backend.record().frequency(999).args(&["--lines"]).output_stdout();
        let (stacks, _, cpu) =
            record_command_measuring(&args.strs(), &[&example("rust-inline"), "1"]);
        let all = samples_of(&stacks, |root| root == "rust-inline");
        assert_samples_match_cpu("rust-inline", all, cpu, 999, &stacks);
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
            hot * 10 >= all * 8 && (calls + loops) * 10 >= hot * 9 && calls * 3 >= hot,
            "of {hot} hot_loop samples ({all} in all), {calls} read `{run};{calling};mix_step (inline.rs:{mix_step_body:?})_[i]` \
             and {loops} `{run};{looping};next<u64> (..range.rs:N)_[i]`:\n{}",
            describe(&stacks)
        );
    }
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

both_backends! {
    /// C++ names default to the qualified name with template arguments, without return type,
    /// parameters or clone suffixes; `--full-names` keeps them. Checked on the example and on node, a
    /// large real C++ program.
    fn cpp_names_are_short_unless_asked(backend) {
        let _kernel = kernel_test();
        let record = |names: &[&str]| {
            let args = backend.record().frequency(999).args(names).output_stdout();
            let (stacks, _, cpu) =
                record_command_measuring(&args.strs(), &[&example("cpp-work"), "1"]);
            let own = rooted(&stacks, |root| root == "cpp-work");
            assert_samples_match_cpu("cpp-work", all_samples(&own), cpu, 999, &own);
            own
        };
        let stacks = record(&[]);
        let all = all_samples(&stacks);
        let short = total(&stacks, |s| {
            s.frames
                .windows(2)
                .any(|w| w[0] == "run" && w[1] == "emberprof_demo::Churner<unsigned long>::churn")
        });
        assert!(
            short * 10 >= all * 8,
            "only {short}/{all} samples in run;emberprof_demo::Churner<unsigned long>::churn:\n{}",
            describe(&stacks)
        );
        let stacks = record(&["--full-names"]);
        let full = total(&stacks, |s| {
            s.has_frame("emberprof_demo::Churner<unsigned long>::churn(unsigned long)")
        });
        assert!(
            full * 10 >= all_samples(&stacks) * 8,
            "--full-names:\n{}",
            describe(&stacks)
        );

        let script = "function work() { let n = 0; for (let i = 0; i < 20000; i++) \
                      n += JSON.parse('{\"a\":[1,2,3],\"b\":\"' + i + '\"}').a.length; return n; } \
                      const end = Date.now() + 1500; let t = 0; while (Date.now() < end) t += work(); \
                      console.log(t);";
        // To a file: node's own output goes to stdout.
        let dir = scratch();
        let out = out_path(&dir, "node.folded");
        let args = backend.record().frequency(999).output(&out);
        let (_, cpu) = launch_measuring(None, &args.strs(), &["node", "-e", script]);
        let stacks = rooted(&read_folded(&out), |root| root == "node");
        assert_samples_match_cpu("node", all_samples(&stacks), cpu, 999, &stacks);
        let v8 = total(&stacks, |s| {
            s.frames.iter().any(|f| f.starts_with("v8::internal::"))
        });
        // JSON.parse runs in V8's C++ parser.
        assert!(
            v8 * 20 >= all_samples(&stacks),
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
}

both_backends! {
    /// Launch mode samples only the command: the forked child is emberprof until its exec (a few
    /// samples in `execve` each run), and none of that shows as a process of emberprof's.
    fn launch_mode_shows_no_profiler_process(backend) {
        let _kernel = kernel_test();
        let mut all = Vec::new();
        let mut cpu = 0.0;
        for _ in 0..8 {
            let args = backend.record().frequency(999).output_stdout();
            let (stacks, _, used) =
                record_command_measuring(&args.strs(), &[&example("burn"), "0.2"]);
            all.extend(stacks);
            cpu += used;
        }
        let profiler = total(&all, |s| s.frames[0].starts_with("emberprof"));
        assert_eq!(
            profiler,
            0,
            "samples under an emberprof root:\n{}",
            describe(&all)
        );
        // The command's own samples are all there (bash, which measured its CPU time, has its own
        // root).
        let burn = samples_of(&all, |root| root == "burn");
        assert_samples_match_cpu("burn", burn, cpu, 999, &all);
    }
}

both_backends! {
    /// A stripped executable (Debian's `sort`) unwound with DWARF: its entry point, which has no
    /// symbol left, reads `_start`, so its stacks count as complete; the main thread's start at
    /// `_start` and the worker threads' at `clone3`.
    fn stripped_executable_entry_is_named_start(backend) {
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
        let args = backend.record().frequency(999).unwind("dwarf").output_stdout();
        let (stacks, _, cpu) =
            record_command_measuring(&args.strs(), &["sort", "-o", "/dev/null", path_arg(&input)]);
        let stacks = rooted(&stacks, |root| root == "sort");
        assert_samples_match_cpu("sort", all_samples(&stacks), cpu, 999, &stacks);
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
            all * 10 >= all_samples(&stacks) && rooted * 10 >= all * 9,
            "only {rooted}/{all} samples in sort's own code start at _start or clone3:\n{}",
            describe(&stacks)
        );
        assert!(
            total(&stacks, |s| s.frames.get(1).is_some_and(|f| f == "_start")) > 0,
            "{}",
            describe(&stacks)
        );
    }
}
