//! `--off-cpu -p PID` on the BPF backend (issue 20): the sched_switch program runs at every
//! context switch of the machine, and the target filter is applied there, first. The program
//! keeps each task's verdict in the task's own storage, so that the table of targets is read once
//! per task and not at each of its switches: a verdict kept wrongly (or for the wrong task) would
//! let another process's waiting into the profile, or leave the target's out.

use crate::support::*;

/// Two processes run the same sleeping thread (`waits sleep`: 20 ms of CPU, 60 ms asleep, in a
/// loop); only one is the target. Its sleeper is as wide as the capture, on and off CPU together
/// (at least its 2 s, less at most one 60 ms nap under way when the capture started); the other
/// process's sleeper, which switches out as often, is not in the profile at all.
#[test]
fn only_the_targets_waiting_is_counted() {
    let _kernel = kernel_test();
    let target = Workload::start("waits", &["sleep", UNTIL_KILLED]);
    let other = Workload::start("waits", &["sleep", UNTIL_KILLED]);
    let args = Backend::Bpf
        .record()
        .args(&["--off-cpu", "--per-thread", "-v"])
        .pid(target.pid())
        .duration("2")
        .output_stdout();
    let started = std::time::Instant::now();
    let (stacks, stderr) = record_folded(&args.strs());
    let run = started.elapsed().as_micros() as u64;
    let context = || format!("{stderr}\n{}", describe(&stacks));

    let in_process = |pid: u32| {
        let prefix = format!("sleeper-{pid}/");
        rooted(&stacks, |root| root.starts_with(&prefix))
    };
    let sleeper = all_samples(&in_process(target.pid()));
    assert!(
        (1_880_000..=run).contains(&sleeper),
        "the target's sleeper: on + off CPU is {:.3} s of a 2 s capture in a {:.3} s run\n{}",
        sleeper as f64 / 1e6,
        run as f64 / 1e6,
        context()
    );
    let not_target = format!("-{}/", other.pid());
    let leaked: Vec<&FoldedStack> = stacks
        .iter()
        .filter(|s| {
            s.frames
                .first()
                .is_some_and(|root| root.contains(&not_target))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "{} stacks of PID {}, which is no target:\n{}",
        leaked.len(),
        other.pid(),
        context()
    );
}
