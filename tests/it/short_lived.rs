//! Processes that live a few milliseconds, under `--all` beside a busy build (issue 18, item 7):
//! they are gone long before a busy profiler could read their `/proc/PID/maps`, so their names
//! must come from the mappings the kernel recorded as they were made.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Times the 3 ms program runs.
const RUNS: usize = 300;
/// Fewest samples of each kind for the shares below to say anything.
const MIN_SAMPLES: u64 = 100;
/// Share of the 3 ms program's own samples (see the test) that must read `main;tiny_spin`.
const MIN_TINY_SHARE: f64 = 0.80;
/// Share of samples with a user stack whose innermost frame must be named, of the 3 ms program
/// and of the build's processes.
const MIN_NAMED_SHARE: f64 = 0.90;

/// A C file for the build to compile: enough for cc1 to work a few tens of milliseconds.
const BUILD_SOURCE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct node { int key; struct node *left, *right; };
static struct node *insert(struct node *n, int key) {
    if (!n) { n = calloc(1, sizeof *n); n->key = key; return n; }
    if (key < n->key) n->left = insert(n->left, key); else n->right = insert(n->right, key);
    return n;
}
int main(int argc, char **argv) {
    struct node *root = 0;
    for (int i = 0; i < argc * 1000; i++) root = insert(root, rand());
    printf("%s %d\n", argv[0], root ? root->key : 0);
    return 0;
}
"#;

both_backends! {
    /// `--all -F 999` while a shell runs a 3 ms frame-pointer program 300 times and two shells
    /// compile C files with gcc on both CPUs: the program's samples and the build's (`sh`, `gcc`,
    /// `cc1`, `as`) have their innermost frames named, and at least 80 % of the program's own
    /// samples read `main;tiny_spin`. Own samples: those through `main`, or with no name at all
    /// (where they land when the process is gone before its maps are read, as with /proc alone on
    /// a loaded machine: 4 % named); a 3 ms program also spends a fifth of its CPU time in the
    /// dynamic loader on a virtual machine (`init_cpu_features` traps), which is named but is not
    /// `main`.
    fn three_ms_processes_beside_a_build_are_named(backend) {
        let _kernel = kernel_test();
        let dir = scratch();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(format!("{name}.c")), BUILD_SOURCE).expect("write C file");
        }
        let out = out_path(&dir, "all.folded");
        let args = backend.record().args(&["--all", "-v"]).frequency(999).output(&out);
        let mut recorder = emberprof()
            .args(args.strs())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start emberprof");
        wait_until_sampling(&mut recorder);
        // The load: two shells compiling, one per CPU, until killed.
        let builds: Vec<KillOnDrop> = (0..2)
            .map(|_| {
                let child = Command::new("sh")
                    .arg("-c")
                    .arg("while :; do for f in a b c; do gcc -O2 -c $f.c -o $f.o || exit 1; done; done")
                    .current_dir(dir.path())
                    .spawn()
                    .expect("this test needs gcc: `apt-get install gcc`");
                KillOnDrop(child)
            })
            .collect();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(r#"for i in $(seq {RUNS}); do "$0" 3 || exit 1; done"#))
            .arg(example("tiny-spin"))
            .status()
            .expect("run the tiny-spin loop");
        assert!(status.success(), "the tiny-spin loop failed: {status}");
        drop(builds);
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(recorder.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(180);
        while matches!(recorder.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = recorder.kill();
                panic!("emberprof still writing its output 180 s after it was stopped");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = recorder.wait_with_output().expect("wait for emberprof");
        let stderr = expect_success(&output, "emberprof --all");
        let stacks = read_folded(&out);

        let tiny = with_user_stack(&rooted(&stacks, |root| root == "tiny-spin"));
        let all = all_samples(&tiny);
        assert!(
            all >= MIN_SAMPLES,
            "only {all} samples of tiny-spin with a user stack, {MIN_SAMPLES} wanted:\n{stderr}\n{}",
            describe(&tiny)
        );
        let named = total(&tiny, innermost_named);
        assert!(
            named as f64 >= all as f64 * MIN_NAMED_SHARE,
            "only {named}/{all} tiny-spin samples have a named innermost frame:\n{stderr}\n{}",
            describe(&tiny)
        );
        let unnamed = |s: &FoldedStack| !s.frames[1..].iter().any(|f| !f.ends_with("_[k]") && is_name(f));
        let own = total(&tiny, |s| s.has_frame("main") || unnamed(s));
        let in_main = total(&tiny, |s| has_consecutive(&s.frames, &["main", "tiny_spin"]));
        assert!(
            in_main as f64 >= own as f64 * MIN_TINY_SHARE,
            "only {in_main} of tiny-spin's {own} own samples read main;tiny_spin:\n{stderr}\n{}",
            describe(&tiny)
        );

        let build = with_user_stack(&rooted(&stacks, |root| {
            ["sh", "gcc", "cc1", "as"].contains(&root)
        }));
        let cc1 = all_samples(&rooted(&build, |root| root == "cc1"));
        let all = all_samples(&build);
        let named = total(&build, innermost_named);
        assert!(
            cc1 >= MIN_SAMPLES,
            "only {cc1} samples of cc1 with a user stack, {MIN_SAMPLES} wanted:\n{stderr}\n{}",
            describe(&build)
        );
        assert!(
            named as f64 >= all as f64 * MIN_NAMED_SHARE,
            "only {named}/{all} samples of the build's processes have a named innermost frame:\n\
             {stderr}\n{}",
            describe(&build)
        );
        assert!(
            stderr.contains("from mapping records alone"),
            "-v says nothing of where names came from:\n{stderr}"
        );
    }
}

/// The stacks that have user frames: a sample taken while the kernel tears down an exiting
/// process has none, so there is nothing to name.
fn with_user_stack(stacks: &[FoldedStack]) -> Vec<FoldedStack> {
    stacks
        .iter()
        .filter(|s| s.innermost_user().is_some())
        .cloned()
        .collect()
}

/// Whether the innermost user frame has a name (not `[unknown]`).
fn innermost_named(stack: &FoldedStack) -> bool {
    stack.innermost_user().is_some_and(is_name)
}

/// A frame with a name: not `[unknown]` (no module), nor the `[truncated]` marker.
fn is_name(frame: &str) -> bool {
    !frame.starts_with("[unknown]") && frame != "[truncated]"
}

trait InnermostUser {
    /// The innermost user frame (not a kernel frame, not the `[truncated]` marker).
    fn innermost_user(&self) -> Option<&str>;
}

impl InnermostUser for FoldedStack {
    fn innermost_user(&self) -> Option<&str> {
        self.frames[1..]
            .iter()
            .rev()
            .map(String::as_str)
            .find(|frame| !frame.ends_with("_[k]") && *frame != "[truncated]")
    }
}
