//! `--unwind auto` (the default) on programs built the way their users build them (issue 7): a
//! default `cargo build --release` Rust program (single-threaded, threads, fat LTO), gcc's
//! `-O2 -fno-omit-frame-pointer` (frameless leaves), a frame-pointer program whose hot function is
//! a callback from libc's frameless qsort, one root per thread on node, and the first samples of a
//! short-lived frameless process.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const FREQUENCY: u64 = 499;
/// Share of the target's samples that must carry the known chain under auto.
const MIN_CHAIN_SHARE: f64 = 0.90;
/// auto's complete-stack share may trail dwarf's by this much at most.
const MAX_COMPLETE_GAP: f64 = 0.02;

/// A workload, its hot (leaf-side) function, and its known chain as contiguous segments in order
/// (outermost first): every segment must appear whole, one after another.
struct Case {
    example: &'static str,
    hot: &'static str,
    segments: &'static [&'static [&'static str]],
}

const CASES: &[Case] = &[
    Case {
        example: "rust-release",
        hot: "rust_release::hot",
        segments: &[&[
            "rust_release::main",
            "rust_release::drive",
            "rust_release::stage",
            "rust_release::hot",
        ]],
    },
    Case {
        example: "rust-release-lto",
        hot: "rust_release::hot",
        segments: &[&[
            "rust_release::main",
            "rust_release::drive",
            "rust_release::stage",
            "rust_release::hot",
        ]],
    },
    Case {
        example: "rust-release-threads",
        hot: "rust_release::hot",
        segments: &[&[
            "rust_release_threads::worker",
            "rust_release::drive",
            "rust_release::stage",
            "rust_release::hot",
        ]],
    },
    Case {
        example: "burn-gcc",
        hot: "spin",
        segments: &[&["main", "run"], &["spin"]],
    },
    Case {
        example: "qsort-fp",
        hot: "spin",
        segments: &[&["main", "run"], &["cmp", "spin"]],
    },
];

impl Case {
    /// Whether `frames` keep this workload's known chain; burn-gcc's names burn_a or burn_b
    /// between run and spin.
    fn keeps_chain(&self, frames: &[String]) -> bool {
        if self.example == "burn-gcc" {
            return ["burn_a", "burn_b"]
                .iter()
                .any(|burn| has_consecutive(frames, &["main", "run", burn, "spin"]));
        }
        has_consecutive_runs(frames, self.segments)
    }
}

/// Records `pid` in `mode` until it has used a second of CPU time; checks the sample total against
/// it.
fn record_mode(backend: Backend, pid: u32, mode: &str) -> (Vec<FoldedStack>, String) {
    let args = backend
        .record()
        .pid(pid)
        .frequency(FREQUENCY)
        .unwind(mode)
        .output_stdout();
    let (stacks, stderr, cpu) = record_pid_for_cpu(&args.strs(), pid, 1.0);
    assert_samples_match_cpu(mode, all_samples(&stacks), cpu, FREQUENCY, &stacks);
    (stacks, stderr)
}

both_backends! {
    /// Each workload under the default auto: the known chain in 90 % of the samples in its hot
    /// function, and as many complete stacks as --unwind dwarf gives (within 2 points).
    fn auto_keeps_whole_chains_of_mixed_code(backend) {
        let _kernel = kernel_test();
        let mut failures = Vec::new();
        for case in CASES {
            let workload = Workload::start(case.example, &[UNTIL_KILLED]);
            // Past the loader, and the threads started.
            std::thread::sleep(Duration::from_millis(200));
            let (auto, _) = record_mode(backend, workload.pid(), "auto");
            let hot = total(&auto, |s| s.has_frame(case.hot));
            let chained = total(&auto, |s| case.keeps_chain(&s.frames));
            let min_hot = all_samples(&auto) / 2;
            if hot < min_hot || (chained as f64) < hot as f64 * MIN_CHAIN_SHARE {
                failures.push(format!(
                    "{}: {chained}/{hot} samples in {} keep the chain {:?} (need {:.0} %, and {min_hot} in it):\n{}",
                    case.example,
                    case.hot,
                    case.segments,
                    MIN_CHAIN_SHARE * 100.0,
                    describe(&auto)
                ));
                continue;
            }
            let (dwarf, _) = record_mode(backend, workload.pid(), "dwarf");
            let (auto_share, dwarf_share) = (complete_user_share(&auto), complete_user_share(&dwarf));
            if auto_share + MAX_COMPLETE_GAP < dwarf_share {
                failures.push(format!(
                    "{}: complete stacks {:.1} % under auto, {:.1} % under dwarf:\n{}",
                    case.example,
                    auto_share * 100.0,
                    dwarf_share * 100.0,
                    describe(&auto)
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }
}

/// The root a DWARF unwind gives a Debian program's main thread, down to the program's `run`.
const LIBC_ROOT_TO_RUN: &[&str] = &[
    "_start",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "main",
    "run",
];

both_backends! {
    /// The frame-pointer burn stays on the cheap path: most stacks walked by frame pointers (on the
    /// BPF backend), all with the root a DWARF unwind gives
    /// (`_start;__libc_start_main_impl;__libc_start_call_main`).
    fn frame_pointer_code_keeps_the_cheap_path_and_one_root(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        let (stacks, stderr) = record_mode(backend, workload.pid(), "auto");
        let burn = total(&stacks, is_burn);
        let rooted = total(&stacks, |s| is_burn(s) && has_consecutive(&s.frames, LIBC_ROOT_TO_RUN));
        assert!(
            rooted * 100 >= burn * 99,
            "{rooted}/{burn} burn stacks rooted at _start:\n{}",
            describe(&stacks)
        );
        let by_fp = summary_count(&stderr, " by frame pointers");
        let all = all_samples(&stacks);
        // Where the backends differ: the perf backend has the kernel copy every user stack under
        // auto and unwinds them all with DWARF, so it has no cheap path to keep.
        if backend == Backend::Perf {
            return;
        }
        assert!(
            by_fp * 10 >= all * 9,
            "only {by_fp}/{all} stacks by frame pointers:\n{stderr}"
        );
    }
}

/// A script that keeps node's JIT and V8's worker threads busy for 20 s.
const NODE_BUSY_SCRIPT: &str =
    "function work(n) { let x = 0; for (let i = 0; i < n; i++) { x = (x * 31 + i) % 1000003; } return x; }\n\
     const a = []; const end = Date.now() + 300000; let s = 0;\n\
     while (Date.now() < end) { s += work(20000); a.push({ s }); if (a.length > 5000) a.length = 0; }\n\
     if (s < 0) console.log(s);\n";

both_backends! {
    /// node (frame-pointer JIT code, a frameless libc, V8 worker threads): every sample of a thread
    /// has the same outermost frame, whichever way its stack was unwound.
    fn node_has_one_root_per_thread(backend) {
        let _kernel = kernel_test();
        assert_node_installed();
        let dir = scratch();
        let script = out_path(&dir, "cpu.js");
        std::fs::write(&script, NODE_BUSY_SCRIPT).expect("write script");
        let node = KillOnDrop(
            Command::new("node")
                .arg(&script)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("start node"),
        );
        // Past node's start-up, into the hot loop.
        std::thread::sleep(Duration::from_millis(700));
        let args = backend
            .record()
            .pid(node.pid())
            .frequency(499)
            .args(&["--per-thread"])
            .output_stdout();
        let (stacks, _, cpu) = record_pid_for_cpu(&args.strs(), node.pid(), 1.5);
        assert_samples_match_cpu("node", all_samples(&stacks), cpu, 499, &stacks);
        let mut roots: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for stack in &stacks {
            if let Some(root) = stack.outermost_user() {
                *roots
                    .entry(stack.frames[0].as_str())
                    .or_default()
                    .entry(root)
                    .or_default() += stack.count;
            }
        }
        let split: Vec<String> = roots
            .iter()
            .filter(|(_, r)| r.len() > 1)
            .map(|(thread, r)| format!("{thread}: {r:?}"))
            .collect();
        assert!(
            split.is_empty(),
            "threads with more than one root:\n{}\n{}",
            split.join("\n"),
            describe(&stacks)
        );
    }
}

both_backends! {
    /// Short-lived frameless processes (-O2 -fomit-frame-pointer), each burning 5 ms right after it
    /// starts: their first samples, taken before emberprof has judged their code, are whole too
    /// (`main;run;short_lived_work`). 5 ms makes those first samples a large share (with 80 ms
    /// processes, turning the copy off went unnoticed). The backends differ in how: BPF copies the
    /// stack of a process not judged yet, which the `-v` counter shows; the perf backend has the
    /// kernel copy every user stack under auto, and has no such counter.
    fn first_samples_of_a_short_lived_process_are_whole(backend) {
        let _kernel = kernel_test();
        // To a file: the spawner prints its children's PIDs on the standard output.
        let dir = scratch();
        let out = out_path(&dir, "short.folded");
        let args = backend.record().args(&["-v"]).frequency(999).output(&out);
        let (output, cpu) =
            launch_measuring(None, &args.strs(), &[&example("spawner"), "300", "5", "5"]);
        let stacks = read_folded(&out);
        let spawned = rooted(&stacks, |root| root == "short-lived" || root == "spawner");
        assert_samples_match_cpu("spawner and its children", all_samples(&spawned), cpu, 999, &spawned);
        let work = |s: &FoldedStack| s.frames[0] == "short-lived" && s.has_frame("short_lived_work");
        let in_work = total(&stacks, work);
        let whole_chain: Vec<&str> = LIBC_ROOT_TO_RUN.iter().copied().chain(["short_lived_work"]).collect();
        let whole = total(&stacks, |s| work(s) && has_consecutive(&s.frames, &whole_chain));
        assert!(
            whole as f64 >= in_work as f64 * 0.95,
            "{whole}/{in_work} short-lived samples whole:\n{}",
            describe(&stacks)
        );
        if backend == Backend::Bpf {
            let stderr = stderr_text(&output);
            let unjudged = regex::Regex::new(r"copied stacks: (\d+) of processes not judged yet")
                .expect("valid regex")
                .captures(&stderr)
                .and_then(|c| c[1].parse::<u64>().ok());
            assert!(
                unjudged.is_some_and(|n| n > 0),
                "no stack copied before its process was judged:\n{stderr}"
            );
        }
    }
}
