//! Issue 19, item 4: the descriptors modules hold. The attacker is uid 65534 (through `setpriv`),
//! emberprof records as root, and the test prints emberprof's peak RSS, the machine's `Shmem` and
//! the wall time (see `support::attack`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::*;

/// Maps COUNT (argv[1]) one-page files of its own executable, then forks a child that holds every
/// mapping and spins (its first sample comes with all of them mapped) until `stop` exists.
const FLOOD_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
static volatile unsigned long sink;
static const char page[4096];
int main(int argc, char **argv) {
    int count = argc == 2 ? atoi(argv[1]) : 0;
    for (int i = 0; i < count; i++) {
        char name[32];
        snprintf(name, sizeof name, "page%d", i);
        int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, page, sizeof page) != sizeof page) { perror(name); return 1; }
        if (mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
            perror("mmap"); return 1;
        }
        close(fd);
    }
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

/// One-page files the flood maps: the issue's count.
const FLOOD_FILES: &str = "20000";
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

/// Creates `go` once this test's emberprof child holds [`FLOODED_DESCRIPTORS`] descriptors and
/// has caught up (or after [`FLOOD_WAIT`]): the new program starts only once emberprof has opened
/// the flood's files, as in the issue, and not while it is still busy opening them (a program it
/// sees only after it exited has no memory map left to read, whatever the descriptors).
fn start_after_flood(go: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < FLOOD_WAIT {
            if let Some(pid) = child_emberprof() {
                let descriptors =
                    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count());
                if descriptors >= FLOODED_DESCRIPTORS {
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

/// The emberprof process this test started, if it runs.
fn child_emberprof() -> Option<u32> {
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `PID (comm) state PPID ...`
            let (head, rest) = stat.rsplit_once(") ")?;
            let ours = head.ends_with("(emberprof") && rest.split(' ').nth(1) == Some(own.as_str());
            ours.then(|| entry.file_name().to_str()?.parse().ok())?
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
    compile(&dir.path().join("flood"), FLOOD_C, &[]);
    compile(&dir.path().join("victim"), VICTIM_C, &[]);
    let script = format!(
        "./flood {FLOOD_FILES} && while [ ! -e go ]; do sleep 0.05; done; ./victim; touch stop"
    );
    let go = start_after_flood(dir.path().join("go"));
    let out = dir.path().join("out.folded");
    let mut args = strings(&["record", "-v", "-F", "99", "-o"]);
    args.push(out.display().to_string());
    args.push("--".into());
    args.extend(as_attacker_sh(dir.path(), &script));
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
