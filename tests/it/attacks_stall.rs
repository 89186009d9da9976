//! Issue 19: no hostile process may stall the recording loop with its memory map. The attacker
//! (uid 65534 through `setpriv`) maps 20,000 distinct one-page files, executable; emberprof, as
//! root, snapshots it at its first sample. Opening every mapped file in one snapshot held the loop
//! for ~9 s: the ring buffer was not read meanwhile, and SIGTERM waited 6.4 s. Now one iteration
//! opens what fits in its budget and postpones the rest. Figures (peak RSS, `Shmem`, wall time,
//! time from SIGTERM to exit) are printed by `support::attack` and `support::stop`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

/// Maps COUNT (argv[1]) one-page files of its own, executable, says so on stderr, then spins in
/// a named function until killed.
const FLOOD_MAIN_C: &str = r#"
__attribute__((noinline)) void spin_in_the_flood(void) {
    for (;;) for (int i = 0; i < 1000000; i++) sink++;
}
int main(int argc, char **argv) {
    if (map_flood(argc == 2 ? atoi(argv[1]) : 0) != 0) return 1;
    fprintf(stderr, "mapped\n");
    spin_in_the_flood();
}
"#;

/// How soon after SIGTERM emberprof must have ended, writing its outputs: generous (a stop is
/// looked at between two ~50-150 ms iterations, then the profile is built, which takes a second or
/// two under `--all` on a machine shared with builds), and below the 6.4 s (`-p`) and 8 s (`--all`)
/// the stall made it wait.
const MAX_AFTER_SIGNAL: Duration = Duration::from_secs(4);
/// SIGTERM goes once emberprof holds this many descriptors (it is opening the flood's files: the
/// stall, before the fix, had begun) and the time given in each test after that.
const OPENING_FLOOD: usize = 1_000;
/// Signalled by then whatever emberprof holds.
const LATEST_SIGNAL: Duration = Duration::from_secs(30);
/// Descriptors emberprof holds once it is opening the files of the flood's mapping records: more
/// than `--all` opens for the rest of a machine, so the signal comes while the flood is handled.
const OPENING_RECORDED_FLOOD: usize = 5_000;
/// When the flood starts after emberprof did, in the test where it maps its files while recorded.
const FLOOD_START: Duration = Duration::from_secs(2);
/// Share of the samples that may be lost while the flood is snapshotted.
const MAX_LOST_SHARE: f64 = 0.05;

/// The flood, started as the attacker in its own directory; returns once every file is mapped.
fn start_flood(dir: &Path) -> Attackers {
    compile_flood(&dir.join("flood"), FLOOD_MAIN_C);
    let mut attackers = spawn_flood(dir);
    let stderr = attackers.0[0].stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("read the flood's stderr");
    assert_eq!(line.trim(), "mapped", "the flood failed");
    attackers
}

/// The compiled flood started as the attacker in `dir`.
fn spawn_flood(dir: &Path) -> Attackers {
    let child = as_nobody(dir.join("flood"))
        .arg(FLOOD_FILES)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux): {e}"));
    Attackers(vec![child])
}

/// Records `mode` (`-p PID`, `--all`) with `-v` into `out.folded` in `dir`, sending SIGTERM once
/// emberprof holds `descriptors` descriptors (it is opening the flood's files) and 500 ms more;
/// asserts that it ended within [`MAX_AFTER_SIGNAL`] of the signal, which the flood's `what` (its
/// snapshot, its mapping records) must not hold the loop past.
fn record_flood_stopped(
    name: &str,
    mode: &[&str],
    dir: &Path,
    descriptors: usize,
    what: &str,
) -> (Stopped, PathBuf) {
    let out = dir.join("out.folded");
    let mut args = strings(&["record", "-v"]);
    args.extend(strings(mode));
    args.extend(["-o".to_owned(), out.display().to_string()]);
    let stopped = record_attack_stopped(
        name,
        &args,
        &out.display().to_string(),
        SignalWhen {
            descriptors,
            after: Duration::from_millis(500),
            latest: LATEST_SIGNAL,
        },
    );
    assert!(
        stopped.after_signal < MAX_AFTER_SIGNAL,
        "emberprof ended {:.1?} after SIGTERM (bound {MAX_AFTER_SIGNAL:?}): {what} held the \
         recording loop:\n{}",
        stopped.after_signal,
        stopped.recording.stderr
    );
    (stopped, out)
}

/// At most [`MAX_LOST_SHARE`] of the samples were lost, by the `-v` summary in `stderr`.
fn assert_few_lost(stderr: &str) {
    let samples = summary_samples(stderr);
    let lost = summary_count(stderr, " lost");
    assert!(
        lost as f64 <= (samples + lost) as f64 * MAX_LOST_SHARE,
        "{lost} samples lost of {}: the ring buffer was not read while the flood was \
         handled:\n{stderr}",
        samples + lost
    );
}

/// `record -p` of the flood: SIGTERM, sent while emberprof opens the flood's files, ends it within
/// [`MAX_AFTER_SIGNAL`], with the flood's own samples named, and `-v` says what the snapshot budget
/// postponed.
#[test]
fn mapping_flood_does_not_hold_sigterm_with_pid() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let flood = start_flood(dir.path());
    let (stopped, out) = record_flood_stopped(
        "record -p of 20,000 mapped files",
        &["-p", &flood.0[0].id().to_string()],
        dir.path(),
        OPENING_FLOOD,
        "the flood's snapshot",
    );
    let stderr = &stopped.recording.stderr;
    let stacks = read_folded(&out);
    let flood_samples = total(&stacks, |_| true);
    let named = total(&stacks, |s| s.has_frame("spin_in_the_flood"));
    assert!(
        flood_samples > 0 && named * 2 > flood_samples,
        "the flood's samples are not named:\n{}",
        describe(&stacks)
    );
    assert!(
        stderr.contains("snapshot budget:") && stderr.contains("postponed"),
        "-v does not say that the snapshot budget postponed mappings:\n{stderr}"
    );
}

/// `--all` beside a CPU burner: SIGTERM ends it within [`MAX_AFTER_SIGNAL`], the burner's stacks
/// are complete and named, and at most [`MAX_LOST_SHARE`] of the samples were lost.
#[test]
fn mapping_flood_does_not_stall_recording_all() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    let _flood = start_flood(dir.path());
    let _burner = Workload::start("burn", &[UNTIL_KILLED]);
    let (stopped, out) = record_flood_stopped(
        "--all beside 20,000 mapped files",
        &["--all"],
        dir.path(),
        OPENING_FLOOD,
        "the flood's snapshot",
    );
    assert_few_lost(&stopped.recording.stderr);
    let stacks = read_folded(&out);
    let burner = rooted(&stacks, |comm| comm == "burn");
    assert_burn_stacks(&burner);
}

/// `--all` while the flood starts and maps its files: each mapping comes as a record, which used to
/// open its file on the loop (a recording of `-d 8` took 24 s, 18 s of it one iteration). SIGTERM,
/// sent while emberprof opens the flood's files, ends it within [`MAX_AFTER_SIGNAL`], and at most
/// [`MAX_LOST_SHARE`] of the samples were lost.
#[test]
fn mapping_flood_during_recording_does_not_stall_it() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    compile_flood(&dir.path().join("flood"), FLOOD_MAIN_C);
    let flood_dir = dir.path().to_owned();
    // Started once emberprof samples (it takes well under this to load its BPF programs).
    let flood = std::thread::spawn(move || {
        std::thread::sleep(FLOOD_START);
        spawn_flood(&flood_dir)
    });
    let (stopped, _) = record_flood_stopped(
        "--all while 20,000 files are mapped",
        &["--all"],
        dir.path(),
        OPENING_RECORDED_FLOOD,
        "the flood's mapping records",
    );
    let _flood = flood.join().expect("the thread that starts the flood");
    assert_few_lost(&stopped.recording.stderr);
}
