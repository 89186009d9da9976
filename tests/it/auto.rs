//! `--unwind auto` (the default) on programs built the way their users build them (issue 7): a
//! default `cargo build --release` Rust program (single-threaded, threads, fat LTO), gcc's
//! `-O2 -fno-omit-frame-pointer` (frameless leaves), a frame-pointer program whose hot function is
//! a callback from libc's frameless qsort, one root per thread on node, and the first samples of a
//! short-lived frameless process.

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

/// Whether `segments` occur in `frames` in order, each as a contiguous run.
fn has_segments(frames: &[String], segments: &[&[&str]]) -> bool {
    let mut from = 0;
    for segment in segments {
        let found = (from..frames.len().saturating_sub(segment.len() - 1))
            .find(|&i| segment.iter().zip(&frames[i..]).all(|(w, f)| f == w));
        match found {
            Some(i) => from = i + segment.len(),
            None => return false,
        }
    }
    true
}

/// burn-gcc's chain names burn_a or burn_b between run and spin.
fn has_chain(case: &Case, frames: &[String]) -> bool {
    if case.example == "burn-gcc" {
        return ["burn_a", "burn_b"]
            .iter()
            .any(|burn| has_segments(frames, &[&["main", "run", burn, "spin"]]));
    }
    has_segments(frames, case.segments)
}

/// The outermost user frame of a folded stack (after the process or thread frame).
fn outermost_user(stack: &FoldedStack) -> Option<&str> {
    stack
        .frames
        .get(1)
        .map(String::as_str)
        .filter(|f| !f.ends_with("_[k]"))
}

/// A user stack is complete when it reaches a known entry.
fn is_complete(stack: &FoldedStack) -> bool {
    outermost_user(stack)
        .is_some_and(|f| ["_start", "clone3", "clone", "start_thread"].contains(&f))
}

/// CPU time (user + system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Records `pid` for `seconds` in `mode`; checks the sample total against the CPU the target used
/// meanwhile (at least half of CPU seconds x frequency: on a machine with a load of 8 on 2 cores,
/// 60-70 % was seen; far fewer would mean samples dropped).
fn record_mode(pid: u32, mode: &str, seconds: &str) -> (Vec<FoldedStack>, String) {
    let before = cpu_seconds(pid);
    let (stacks, stderr) = record_folded(&[
        "record",
        "-p",
        &pid.to_string(),
        "-d",
        seconds,
        "-F",
        &FREQUENCY.to_string(),
        "--unwind",
        mode,
        "-o",
        "-",
    ]);
    let used = cpu_seconds(pid) - before;
    let all = total(&stacks, |_| true);
    let expected = used * FREQUENCY as f64;
    assert!(
        used > 0.3 && all as f64 >= expected * 0.5,
        "{mode}: {all} samples for {used:.2} CPU seconds at {FREQUENCY} Hz:\n{stderr}"
    );
    (stacks, stderr)
}

fn complete_share(stacks: &[FoldedStack]) -> f64 {
    let user = total(stacks, |s| outermost_user(s).is_some());
    assert!(user > 0, "no user stacks:\n{}", describe(stacks));
    total(stacks, is_complete) as f64 / user as f64
}

/// Each workload under the default auto: the known chain in 90 % of the samples in its hot function,
/// and as many complete stacks as --unwind dwarf gives (within 2 points).
#[test]
fn auto_keeps_whole_chains_of_mixed_code() {
    let _kernel = kernel_test();
    let mut failures = Vec::new();
    for case in CASES {
        let workload = Workload::start(case.example, &["30"]);
        // Past the loader, and the threads started.
        std::thread::sleep(Duration::from_millis(200));
        let (auto, _) = record_mode(workload.pid(), "auto", "2");
        let hot = total(&auto, |s| s.frames.iter().any(|f| f == case.hot));
        let chained = total(&auto, |s| has_chain(case, &s.frames));
        let min_hot = (total(&auto, |_| true) / 2).max(100);
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
        let (dwarf, _) = record_mode(workload.pid(), "dwarf", "2");
        let (auto_share, dwarf_share) = (complete_share(&auto), complete_share(&dwarf));
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

/// The frame-pointer burn stays on the cheap path: most stacks walked by frame pointers, all with
/// the root a DWARF unwind gives (`_start;__libc_start_main_impl;__libc_start_call_main`).
#[test]
fn frame_pointer_code_keeps_the_cheap_path_and_one_root() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["30"]);
    let (stacks, stderr) = record_mode(workload.pid(), "auto", "2");
    let burn = total(&stacks, crate::record::is_burn);
    let rooted = total(&stacks, |s| {
        crate::record::is_burn(s)
            && has_segments(
                &s.frames,
                &[&[
                    "_start",
                    "__libc_start_main_impl",
                    "__libc_start_call_main",
                    "main",
                    "run",
                ]],
            )
    });
    assert!(
        burn > 150 && rooted * 100 >= burn * 99,
        "{rooted}/{burn} burn stacks rooted at _start:\n{}",
        describe(&stacks)
    );
    let by_fp: u64 = stderr
        .split(" by frame pointers")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame-pointer count in:\n{stderr}"));
    let all = total(&stacks, |_| true);
    assert!(
        by_fp * 10 >= all * 9,
        "only {by_fp}/{all} stacks by frame pointers:\n{stderr}"
    );
}

/// node (frame-pointer JIT code, a frameless libc, V8 worker threads): every sample of a thread has
/// the same outermost frame, whichever way its stack was unwound.
#[test]
fn node_has_one_root_per_thread() {
    let _kernel = kernel_test();
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "this test needs Node.js: `apt-get install nodejs` (.ci/run installs it)"
    );
    let dir = scratch();
    let script = out_path(&dir, "cpu.js");
    std::fs::write(
        &script,
        "function work(n) { let x = 0; for (let i = 0; i < n; i++) { x = (x * 31 + i) % 1000003; } return x; }\n\
         const a = []; const end = Date.now() + 20000; let s = 0;\n\
         while (Date.now() < end) { s += work(20000); a.push({ s }); if (a.length > 5000) a.length = 0; }\n\
         if (s < 0) console.log(s);\n",
    )
    .expect("write script");
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start node");
    std::thread::sleep(Duration::from_millis(700));
    let pid = child.id().to_string();
    let output = emberprof()
        .args([
            "record",
            "-p",
            &pid,
            "-d",
            "3",
            "-F",
            "499",
            "--per-thread",
            "-o",
            "-",
        ])
        .output()
        .expect("run emberprof");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stacks = parse_folded(&String::from_utf8_lossy(&output.stdout));
    let mut roots: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, u64>> =
        Default::default();
    for stack in &stacks {
        if let Some(root) = outermost_user(stack) {
            *roots
                .entry(stack.frames[0].as_str())
                .or_default()
                .entry(root)
                .or_default() += stack.count;
        }
    }
    let main_thread = roots
        .iter()
        .max_by_key(|(_, r)| r.values().sum::<u64>())
        .map(|(t, r)| (*t, r.values().sum::<u64>()));
    assert!(
        main_thread.is_some_and(|(_, n)| n > 100),
        "too few node samples:\n{}",
        describe(&stacks)
    );
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

/// Short-lived frameless processes (-O2 -fomit-frame-pointer), each burning 5 ms right after it
/// starts: their first samples, taken before emberprof has judged their code, are whole too
/// (`main;run;short_lived_work`), because BPF copies the stack of a process not judged yet. 5 ms
/// makes those first samples a large share (with 80 ms processes, turning the copy off went
/// unnoticed); the `-v` counter shows the path ran.
#[test]
fn first_samples_of_a_short_lived_process_are_whole() {
    let _kernel = kernel_test();
    // To a file: the spawner prints its children's PIDs on the standard output.
    let dir = scratch();
    let out = out_path(&dir, "short.folded");
    let output = run_ok(&[
        "-v",
        "record",
        "-F",
        "999",
        "-o",
        out.to_str().expect("utf-8 path"),
        "--",
        &example("spawner"),
        "300",
        "5",
        "5",
    ]);
    let stacks = read_folded(&out);
    let work = |s: &FoldedStack| {
        s.frames[0] == "short-lived" && s.frames.iter().any(|f| f == "short_lived_work")
    };
    let in_work = total(&stacks, work);
    let whole = total(&stacks, |s| {
        work(s)
            && has_segments(
                &s.frames,
                &[&[
                    "_start",
                    "__libc_start_main_impl",
                    "__libc_start_call_main",
                    "main",
                    "run",
                    "short_lived_work",
                ]],
            )
    });
    assert!(
        in_work >= 150 && whole as f64 >= in_work as f64 * 0.95,
        "{whole}/{in_work} short-lived samples whole:\n{}",
        describe(&stacks)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let unjudged = regex::Regex::new(r"copied stacks: (\d+) of processes not judged yet")
        .expect("valid regex")
        .captures(&stderr)
        .and_then(|c| c[1].parse::<u64>().ok());
    assert!(
        unjudged.is_some_and(|n| n > 0),
        "no stack copied before its process was judged:\n{stderr}"
    );
}
