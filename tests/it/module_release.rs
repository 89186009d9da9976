//! Modules follow what is live (issue 19): a module no live process maps, and none of whose
//! samples await symbolization, is released while recording. The short form of
//! `benches/module-release.sh`, which runs 400 such programs under `--all` for two minutes and
//! measures emberprof's memory.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A program of about 1 MB that burns 0.15 s of CPU in one function, distinct per `ID` (see the
/// file).
pub const DISTINCT_PROGRAM_C: &str = include_str!("../../examples/c/module_release.c");

/// Programs run one after another: enough for several checkpoints (each releases what ended
/// before it) within the recording.
const PROGRAMS: usize = 60;

/// `count` distinct programs `prog0`, `prog1`... in `dir`.
fn distinct_programs(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("prog{i}"));
            compile(
                &path,
                DISTINCT_PROGRAM_C,
                &[&format!("-DID={}", i % 250 + 1)],
            );
            // Distinct files even where the constant repeats: the data differs at one more byte.
            let mut bytes = std::fs::read(&path).expect("read program");
            bytes.extend_from_slice(&(i as u64).to_le_bytes());
            std::fs::write(&path, bytes).expect("write program");
            path
        })
        .collect()
}

/// `record` with `options` of a shell running `script` (measured as `record_attack` does), the
/// folded output in `dir`: its path, and how the recording went.
fn record_script(name: &str, dir: &Path, options: &[&str], script: &str) -> (PathBuf, Finished) {
    let out = dir.join("out.folded");
    let mut args = strings(&["record"]);
    args.extend(strings(options));
    args.extend(strings(&["-o", path_arg(&out), "--", "sh", "-c", script]));
    let recording = record_attack(name, &args);
    (out, recording)
}

/// 60 distinct programs of about 1 MB run one after another under one recording: each program's
/// module is released at the first checkpoint after it ended (`-v` counts them; before, every
/// module was kept for the session with its parsed symbols and a descriptor), and releasing
/// loses no names: at least 80 % of the programs' samples are in their function.
#[test]
fn modules_of_ended_programs_are_released_and_named() {
    let _kernel = kernel_test();
    let dir = scratch();
    distinct_programs(dir.path(), PROGRAMS);
    let script = format!(
        "cd {} && for i in $(seq 0 {}); do ./prog$i; done",
        dir.path().display(),
        PROGRAMS - 1
    );
    let (out, recording) = record_script(
        "60 distinct programs",
        dir.path(),
        &["-v", "-F", "199"],
        &script,
    );
    let released = recording
        .stderr
        .lines()
        .find_map(|line| {
            let (before, _) = line.split_once(" modules released while recording")?;
            before.rsplit(' ').next()?.parse::<usize>().ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "-v does not count modules released while recording:\n{}",
                recording.stderr
            )
        });
    assert!(
        released >= PROGRAMS / 2,
        "only {released} modules released while {PROGRAMS} programs ran one after another:\n{}",
        recording.stderr
    );
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    let programs = rooted(&stacks, |comm| comm.starts_with("prog"));
    let all = total(&programs, |_| true);
    let named = total(&programs, |s| s.has_frame("module_release_burn"));
    assert!(
        all >= PROGRAMS as u64,
        "only {all} samples of {PROGRAMS} programs:\n{}",
        describe(&stacks)
    );
    assert!(
        named * 10 >= all * 8,
        "{named} of {all} samples of the programs are in their function:\n{}",
        describe(&programs)
    );
}

/// Processes the burst below runs, one after another.
const BURST_PROCESSES: usize = 8_000;
/// The most room a table shrunk after the burst keeps while it is quiet (`KEPT_CAPACITY` in the
/// symbolizer's `tables`: tables below it are left alone).
const ROOM_KEPT: usize = 1_024;

/// Tables follow what is live, not the busiest moment (see the symbolizer's `tables`): the table
/// of the stacks seen since the last checkpoint gives back the room a burst grew it to. `-vv`
/// logs that room at each checkpoint, before it shrinks. A burst of 8,000 `/bin/true` (each
/// sample a stack of its own, being another process's), then seconds of one sleeping shell: kept,
/// the burst's room would show at every later checkpoint.
#[test]
fn a_burst_of_stacks_leaves_no_room_behind() {
    let _kernel = kernel_test();
    let dir = scratch();
    let script = format!(
        "i=0; while [ $i -lt {BURST_PROCESSES} ]; do /bin/true; i=$((i + 1)); done; sleep 12"
    );
    let (_, recording) = record_script(
        "a burst of processes, then a sleep",
        dir.path(),
        &["-vv", "-F", "999"],
        &script,
    );
    let rooms: Vec<usize> = recording
        .stderr
        .lines()
        .filter_map(|line| {
            let (before, _) = line.split_once(" before shrinking")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    let (Some(&burst), Some(&last)) = (rooms.iter().max(), rooms.last()) else {
        panic!(
            "-vv logs no checkpoint's room for stacks:\n{}",
            recording.stderr
        );
    };
    assert!(
        burst > 3 * ROOM_KEPT / 2,
        "the burst took the table of stacks to room for only {burst} (checkpoints: {rooms:?}): \
         too few to tell a shrunk table from a kept one"
    );
    assert!(
        last <= ROOM_KEPT,
        "the table of stacks kept room for {last} after a burst took it to {burst} \
         (checkpoints: {rooms:?})"
    );
}
