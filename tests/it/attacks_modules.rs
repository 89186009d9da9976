//! Issue 19, item 4: the descriptors modules hold. The attacker is uid 65534 (through `setpriv`),
//! emberprof records as root, and the test prints emberprof's peak RSS, the machine's `Shmem` and
//! the wall time (see `support::attack`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::*;

/// Maps COUNT (argv[1]) one-page files of its own executable, then forks a child that holds every
/// mapping and spins (its first sample comes with all of them mapped) until `stop` exists.
const FLOOD_MAIN_C: &str = r#"
int main(int argc, char **argv) {
    if (map_flood(argc == 2 ? atoi(argv[1]) : 0) != 0) return 1;
    if (fork() != 0) return 0;
    while (access("stop", F_OK) != 0) {
        for (int i = 0; i < 1000000; i++) sink++;
    }
    return 0;
}
"#;

/// A new program, started once the flood holds its files: burns CPU in one named function.
const VICTIM_C: &str = r#"
static volatile unsigned long sink;
__attribute__((noinline)) void victim_after_the_flood(void) {
    for (unsigned long i = 0; i < 1500000000UL; i++) sink += i;
}
int main(void) { victim_after_the_flood(); return 0; }
"#;

/// emberprof's open-file limit in this test: the flood's files exceed it (the limit of the machine
/// the issue was found on).
const FILE_LIMIT: u64 = 20_000;
/// Descriptors emberprof holds once it has opened a good part of the flood's files, whether it
/// keeps them all (before) or half the limit's worth (the default budget).
const FLOODED_DESCRIPTORS: usize = 4_000;
/// CPU time emberprof uses in [`QUIET_WINDOW`] once it has caught up with the flood (it then only
/// handles the spinning child's samples).
const QUIET_CPU_SECONDS: f64 = 0.025;
const QUIET_WINDOW: Duration = Duration::from_millis(500);
/// How long to wait for all that before starting the new program anyway (the test then fails on
/// what came out).
const FLOOD_WAIT: Duration = Duration::from_secs(100);

/// Creates `go` once this test's emberprof child (the one with argument `marker`, its output
/// path) holds [`FLOODED_DESCRIPTORS`] descriptors and has caught up (or after [`FLOOD_WAIT`]): the
/// new program starts only once emberprof has opened the flood's files, as in the issue, and not
/// while it is still busy opening them (a program it sees only after it exited has no memory map
/// left to read, whatever the descriptors).
fn start_after_flood(go: PathBuf, marker: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < FLOOD_WAIT {
            if let Some(pid) = child_with_argument(&marker) {
                if descriptors(pid) >= FLOODED_DESCRIPTORS {
                    let before = cpu_seconds_used(pid);
                    std::thread::sleep(QUIET_WINDOW);
                    if cpu_seconds_used(pid) - before < QUIET_CPU_SECONDS {
                        break;
                    }
                    continue;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::write(&go, "").expect("create go");
    })
}

/// Defect 4: 20,000 one-page files mapped by one attacker process took one descriptor each for
/// the session (two, with blazesym's), up to the open-file limit: every process started after
/// that was unnamed, and `-v` blamed "process exited before its memory map was read". Now open
/// modules hold at most half the limit; the least recently used are closed, and -v says so.
#[test]
fn mapping_many_files_does_not_take_every_descriptor() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    compile_flood(&dir.path().join("flood"), FLOOD_MAIN_C);
    compile(&dir.path().join("victim"), VICTIM_C, &[]);
    let script = format!(
        "./flood {FLOOD_FILES} && while [ ! -e go ]; do sleep 0.05; done; ./victim; touch stop"
    );
    let (out, args) = attack_args(dir.path(), 99, &["-v"], &script);
    let go = start_after_flood(dir.path().join("go"), out.display().to_string());
    let recording = record_attack_with_files("20,000 mapped files", &args, Some(FILE_LIMIT));
    go.join().expect("the thread that starts the new program");
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("read folded output"));
    let victim = rooted(&stacks, |comm| comm == "victim");
    let named = total(&victim, |s| s.has_frame("victim_after_the_flood"));
    assert!(
        named * 2 > total(&victim, |_| true),
        "the program started after the flood is not named in most of its samples; -v:\n{}\n{}",
        recording.stderr,
        describe(&victim)
    );
    assert!(
        recording
            .stderr
            .contains("modules closed to keep their descriptors within --max-module-fds"),
        "-v does not say that modules were closed for the descriptor budget:\n{}",
        recording.stderr
    );
}
