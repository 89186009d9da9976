//! Naming frames on real systems: processes that exited long before the end, exec, private mount
//! namespaces, JIT code, inlined functions, source lines, separate debug files, demangling.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::record::assert_burn_profile;
use crate::support::*;

fn frames_contain(stack: &FoldedStack, name: &str) -> bool {
    stack.frames.iter().any(|f| f == name)
}

/// 40 processes that each burn ~100 ms in `short_lived_work` and exit, under `--all`: their samples
/// are named although every one of them is gone long before the capture ends.
#[test]
fn short_lived_processes_are_named() {
    let _kernel = kernel_test();
    let dir = scratch();
    let out = out_path(&dir, "short.folded");
    let recorder = emberprof()
        .args([
            "record",
            "--all",
            "-d",
            "9",
            "-F",
            "999",
            "-o",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emberprof");
    std::thread::sleep(Duration::from_millis(1000));
    let status = Command::new(example("spawner"))
        .args(["40", "100", "50"])
        .status()
        .expect("run spawner");
    assert!(status.success(), "spawner failed: {status}");
    let output = recorder.wait_with_output().expect("wait for emberprof");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stacks = read_folded(&out);
    let short_lived: Vec<FoldedStack> = stacks
        .into_iter()
        .filter(|s| s.frames[0] == "short-lived")
        .collect();
    let all = total(&short_lived, |_| true);
    let named = total(&short_lived, |s| frames_contain(s, "short_lived_work"));
    assert!(
        all >= 1000,
        "only {all} samples of the short-lived processes:\n{}",
        describe(&short_lived)
    );
    assert!(
        named * 10 >= all * 8,
        "only {named}/{all} short-lived samples name short_lived_work:\n{}",
        describe(&short_lived)
    );
}

/// A process that execs another program mid-run: frames before the exec are named from the first
/// binary, frames after it from the second, under the same PID.
#[test]
fn exec_mid_run_names_both_programs() {
    let _kernel = kernel_test();
    for unwind in ["fp", "auto"] {
        let (stacks, _) = record_folded(&[
            "record",
            "-F",
            "999",
            "--unwind",
            unwind,
            "--per-thread",
            "-o",
            "-",
            "--",
            &example("exec-before"),
            "2",
        ]);
        let root = |s: &FoldedStack| s.frames[0].clone();
        let before = total(&stacks, |s| frames_contain(s, "before_exec_work"));
        let after = total(&stacks, |s| frames_contain(s, "after_exec_work"));
        assert!(
            before > 300 && after > 300,
            "{unwind}: before {before}, after {after}:\n{}",
            describe(&stacks)
        );
        for stack in &stacks {
            if frames_contain(stack, "before_exec_work") {
                assert!(
                    root(stack).starts_with("exec-before-"),
                    "{unwind}: {:?}",
                    stack.frames
                );
                assert!(
                    has_subsequence(&stack.frames, &["main", "run", "before_exec_work"]),
                    "{unwind}: {:?}",
                    stack.frames
                );
            }
            if frames_contain(stack, "after_exec_work") {
                assert!(
                    root(stack).starts_with("exec-after-"),
                    "{unwind}: {:?}",
                    stack.frames
                );
                assert!(
                    has_subsequence(&stack.frames, &["main", "run", "after_exec_work"]),
                    "{unwind}: {:?}",
                    stack.frames
                );
            }
        }
        // One PID for both programs.
        let pids: std::collections::HashSet<String> = stacks
            .iter()
            .filter_map(|s| {
                s.frames[0]
                    .rsplit_once('-')
                    .map(|(_, ids)| ids.split('/').next().unwrap_or("").to_owned())
            })
            .collect();
        assert_eq!(pids.len(), 1, "{unwind}: {pids:?}");
    }
}

/// A binary that exists only on a tmpfs mounted in the process's private mount namespace is named
/// (through /proc/PID/map_files), although the host path leads nowhere.
#[test]
fn private_mount_namespace_binary_is_named() {
    let _kernel = kernel_test();
    let dir = scratch();
    let mountpoint = dir.path().join("private");
    std::fs::create_dir(&mountpoint).expect("mkdir");
    let binary = mountpoint.join("private-burn");
    let script = format!(
        "mount -t tmpfs emberprof-test {m} && cp {burn} {b} && exec {b} 3",
        m = mountpoint.display(),
        burn = example("burn"),
        b = binary.display()
    );
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "-o",
        "-",
        "--",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        !binary.exists(),
        "the binary leaked into the host namespace"
    );
    let private: Vec<FoldedStack> = stacks
        .into_iter()
        .filter(|s| s.frames[0] == "private-burn")
        .collect();
    assert_burn_profile(&private);
}

/// JIT frames of Node.js run with --perf-basic-prof are named from /tmp/perf-PID.map and marked _[j].
#[test]
fn node_jit_frames_are_named() {
    let _kernel = kernel_test();
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "this test needs Node.js: `apt-get install nodejs` (.ci/run installs it)"
    );
    let dir = scratch();
    let script = out_path(&dir, "hot.js");
    std::fs::write(
        &script,
        "function emberprofHotLoop(n) { let x = 0; for (let i = 0; i < n; i++) { x = (x * 31 + i) % 1000003; } return x; }\n\
         const end = Date.now() + 2500; let s = 0;\n\
         while (Date.now() < end) { s += emberprofHotLoop(100000); }\n\
         if (s < 0) console.log(s);\n",
    )
    .expect("write script");
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "499",
        "-o",
        "-",
        "--",
        "node",
        "--perf-basic-prof",
        script.to_str().unwrap(),
    ]);
    let all = total(&stacks, |_| true);
    let jit = total(&stacks, |s| {
        s.frames
            .iter()
            .any(|f| f.contains("emberprofHotLoop") && f.ends_with("_[j]"))
    });
    assert!(
        jit * 2 >= all,
        "only {jit}/{all} samples in the JS hot loop, named and marked _[j]:\n{}",
        describe(&stacks)
    );
}

/// A Rust program with #[inline(always)] helpers: the inlined function is its own frame marked _[i],
/// names are demangled with their module path and without hashes (legacy and v0 mangling), --lines
/// adds file:line, and --no-inline removes the inlined frames.
#[test]
fn rust_inlined_frames_lines_and_demangling() {
    let _kernel = kernel_test();
    for binary in ["rust-inline", "rust-inline-v0"] {
        let (stacks, _) = record_folded(&[
            "record",
            "-F",
            "999",
            "-o",
            "-",
            "--",
            &example(binary),
            "2",
        ]);
        let hot = total(&stacks, |s| frames_contain(s, "rust_inline::hot_loop"));
        let inlined = total(&stacks, |s| {
            has_subsequence(
                &s.frames,
                &["rust_inline::run", "rust_inline::hot_loop", "mix_step_[i]"],
            )
        });
        assert!(
            hot > 500 && inlined * 2 >= hot,
            "{binary}: {inlined}/{hot} hot_loop samples show mix_step_[i]:\n{}",
            describe(&stacks)
        );
        let hashed = stacks.iter().flat_map(|s| &s.frames).find(|f| {
            f.contains("::h")
                && f.len() > 17
                && f.rsplit("::h").next().is_some_and(|h| {
                    h.len() >= 16 && h.chars().take(16).all(|c| c.is_ascii_hexdigit())
                })
        });
        assert!(hashed.is_none(), "{binary}: hash suffix left in {hashed:?}");
        assert!(
            stacks
                .iter()
                .flat_map(|s| &s.frames)
                .all(|f| !f.starts_with("_ZN") && !f.starts_with("_R")),
            "{binary}: mangled name left:\n{}",
            describe(&stacks)
        );

        let (stacks, _) = record_folded(&[
            "record",
            "-F",
            "999",
            "--lines",
            "-o",
            "-",
            "--",
            &example(binary),
            "1",
        ]);
        let with_line = total(&stacks, |s| {
            s.frames
                .iter()
                .any(|f| f.starts_with("mix_step (inline.rs:") && f.ends_with(")_[i]"))
        });
        assert!(
            with_line > 300,
            "{binary}: --lines did not add inline.rs:LINE:\n{}",
            describe(&stacks)
        );

        let (stacks, _) = record_folded(&[
            "record",
            "-F",
            "999",
            "--no-inline",
            "-o",
            "-",
            "--",
            &example(binary),
            "1",
        ]);
        assert!(
            stacks
                .iter()
                .all(|s| s.frames.iter().all(|f| !f.ends_with("_[i]"))),
            "{binary}: --no-inline:\n{}",
            describe(&stacks)
        );
        assert!(total(&stacks, |s| frames_contain(s, "rust_inline::hot_loop")) > 300);
    }
}

/// A binary stripped of all symbols, with a .gnu_debuglink to a separate debug file next to it, is
/// named fully from that file.
#[test]
fn debuglink_binary_is_named_from_debug_file() {
    let _kernel = kernel_test();
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "-o",
        "-",
        "--",
        &example("burn-debuglink"),
        "2",
    ]);
    assert_burn_profile(&stacks);
    let unnamed = total(&stacks, |s| {
        s.frames.iter().any(|f| f.starts_with("burn-debuglink+0x"))
    });
    assert_eq!(unnamed, 0, "frames left unnamed:\n{}", describe(&stacks));
}

/// C++ names are demangled in full with --full-names: namespace, class template arguments,
/// parameter types.
#[test]
fn cpp_names_are_demangled() {
    let _kernel = kernel_test();
    let (stacks, _) = record_folded(&[
        "record",
        "-F",
        "999",
        "--full-names",
        "-o",
        "-",
        "--",
        &example("cpp-work"),
        "1",
    ]);
    let demangled = total(&stacks, |s| {
        frames_contain(
            s,
            "emberprof_demo::Churner<unsigned long>::churn(unsigned long)",
        )
    });
    assert!(demangled > 500, "{}", describe(&stacks));
}

/// A perf map not owned by the process's user is not trusted: a warning, and no JIT names from it.
#[test]
fn foreign_perf_map_is_ignored_with_warning() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &["10"]);
    let pid = workload.pid();
    let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
    std::fs::write(&map, "0 ffffffffffff planted_by_someone_else\n").expect("write perf map");
    std::os::unix::fs::chown(&map, Some(65534), Some(65534)).expect("chown perf map");
    let output = run_ok(&["record", "-p", &pid.to_string(), "-d", "1", "-o", "-"]);
    let _ = std::fs::remove_file(&map);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "ignoring /tmp/perf-{pid}.map of process {pid}: owned by uid 65534"
        )),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("planted_by_someone_else"));
}
