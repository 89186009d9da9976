//! Programs built the way their users build them, mixing code with and without frame pointers:
//! C++ at plain `-O2` over libstdc++ and libc, a frameless program calling a frame-pointer shared
//! library, and a frame-pointer program calling a frameless one. Under `--unwind auto` and `dwarf`
//! the known chain must be there, consecutive, in nearly every sample; `--unwind fp` is checked only
//! for what frame pointers can do.

use crate::support::*;

/// Share of a workload's samples that must carry its known chain under `auto` and `dwarf`.
const MIN_CHAIN_SHARE: f64 = 0.90;

/// Most complete-stack share (in points) `auto` may fall short of `dwarf` on the same program.
const MAX_AUTO_SHORTFALL: f64 = 0.02;

/// Most known-chain share `--unwind fp` may reach on code it cannot walk: above it, the workload
/// has frame pointers after all and the `auto`/`dwarf` checks prove nothing.
const MAX_FP_CHAIN_SHARE: f64 = 0.5;

/// The function's name without a C++ parameter list: `run(double)` and `run` are both `run`.
fn bare(frame: &str) -> &str {
    frame.split_once('(').map_or(frame, |(name, _)| name)
}

/// The process name as the kernel keeps it: 15 bytes at most.
fn comm(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// One 2-second recording of `example_name` under `--unwind mode`: its stacks (other processes
/// filtered out), with the sample total checked against its CPU time.
fn record(backend: Backend, example_name: &str, mode: &str) -> Vec<FoldedStack> {
    let args = backend.record().frequency(999).unwind(mode).output_stdout();
    let (stacks, _, cpu) = record_command_measuring(&args.strs(), &[&example(example_name), "2"]);
    let own = rooted(&stacks, |root| root == comm(example_name));
    assert_samples_match_cpu(
        &format!("{example_name} --unwind {mode}"),
        all_samples(&own),
        cpu,
        999,
        &own,
    );
    own
}

/// Share of samples with one of `chains` as consecutive frames (C++ parameter lists ignored).
fn chain_share(stacks: &[FoldedStack], chains: &[&[&str]]) -> f64 {
    let with_chain = total(stacks, |s| {
        let frames: Vec<String> = s.frames.iter().map(|f| bare(f).to_owned()).collect();
        chains.iter().any(|chain| has_consecutive(&frames, chain))
    });
    with_chain as f64 / all_samples(stacks) as f64
}

/// Runs `example` under auto, dwarf and fp: the known chain in [`MIN_CHAIN_SHARE`] of samples with
/// auto and dwarf, auto as complete as dwarf, and fp unable to walk it.
fn assert_known_chain(backend: Backend, example_name: &str, chains: &[&[&str]]) {
    let mut complete = Vec::new();
    for mode in ["auto", "dwarf"] {
        let stacks = record(backend, example_name, mode);
        let share = chain_share(&stacks, chains);
        assert!(
            share >= MIN_CHAIN_SHARE,
            "{example_name} --unwind {mode}: {:.1} % of samples carry {chains:?}:\n{}",
            share * 100.0,
            describe(&stacks)
        );
        complete.push((complete_user_share(&stacks), stacks));
    }
    let (auto, auto_stacks) = &complete[0];
    let (dwarf, _) = &complete[1];
    assert!(
        auto + MAX_AUTO_SHORTFALL >= *dwarf,
        "{example_name}: {:.1} % complete stacks under auto, {:.1} % under dwarf:\n{}",
        auto * 100.0,
        dwarf * 100.0,
        describe(auto_stacks)
    );
    let stacks = record(backend, example_name, "fp");
    let share = chain_share(&stacks, chains);
    assert!(
        share <= MAX_FP_CHAIN_SHARE,
        "{example_name} --unwind fp walked {chains:?} in {:.1} % of samples: frame pointers \
         after all?\n{}",
        share * 100.0,
        describe(&stacks)
    );
}

both_backends! {
    /// C++ as Debian builds it (`-O2 -g`, frameless, time in libstdc++ and libc): main;run;sort_words
    /// or main;run;count_words.
    fn cpp_o2_stacks_are_whole(backend) {
        let _kernel = kernel_test();
        assert_known_chain(
            backend,
            "cpp-o2",
            &[
                &["main", "run", "sort_words"],
                &["main", "run", "count_words"],
            ],
        );
    }
}

both_backends! {
    /// A frameless program calling a frame-pointer library: main;run;fplib_outer;fplib_inner.
    fn frameless_program_calling_frame_pointer_library(backend) {
        let _kernel = kernel_test();
        assert_known_chain(
            backend,
            "nofp-calls-fplib",
            &[&["main", "run", "fplib_outer", "fplib_inner"]],
        );
        // What frame pointers do walk: the library's own frames.
        let stacks = record(backend, "nofp-calls-fplib", "fp");
        let share = chain_share(&stacks, &[&["fplib_outer", "fplib_inner"]]);
        assert!(
            share >= MIN_CHAIN_SHARE,
            "--unwind fp: {:.1} % of samples carry fplib_outer;fplib_inner:\n{}",
            share * 100.0,
            describe(&stacks)
        );
    }
}

both_backends! {
    /// A frame-pointer program calling a frameless library: main;run;nofplib_outer;nofplib_inner.
    fn frame_pointer_program_calling_frameless_library(backend) {
        let _kernel = kernel_test();
        assert_known_chain(
            backend,
            "fp-calls-nofplib",
            &[&["main", "run", "nofplib_outer", "nofplib_inner"]],
        );
    }
}

both_backends! {
    /// `--unwind fp` on a frameless caller: the walk stops (at `run`, whose caller it cannot find), and
    /// the stack must say so with a `[truncated]` root frame rather than pass for a complete one.
    fn frame_pointer_walk_stopped_by_frameless_caller_is_marked_truncated(backend) {
        let _kernel = kernel_test();
        let stacks = record(backend, "nofp-calls-fplib", "fp");
        let all = all_samples(&stacks);
        let marked = total(&stacks, |s| {
            s.frames.get(1).is_some_and(|f| f == "[truncated]")
        });
        assert!(
            marked * 10 >= all * 9,
            "only {marked}/{all} stacks cut short by frameless code have a [truncated] root:\n{}",
            describe(&stacks)
        );
    }
}
