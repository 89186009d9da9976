//! Naming frames on real systems: processes that exited long before the end, exec, private mount
//! namespaces, JIT code, inlined functions, source lines, separate debug files, demangling.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

both_backends! {
    /// 40 processes that each burn ~100 ms in `short_lived_work` and exit, under `--all`: their samples
    /// are named although every one of them is gone long before the capture ends.
    fn short_lived_processes_are_named(backend) {
        let _kernel = kernel_test();
        let dir = scratch();
        let out = out_path(&dir, "short.folded");
        let args = backend
            .record()
            .args(&["--all", "--per-thread"])
            .duration("9")
            .frequency(999)
            .output(&out);
        let mut recorder = emberprof()
            .args(args.strs())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start emberprof");
        wait_until_sampling(&mut recorder);
        let mut spawner = Command::new(example("spawner"))
            .args(["40", "100", "50"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run spawner");
        let mut child_pids = String::new();
        let stdout = spawner.stdout.take();
        let spawner_pid = spawner.id();
        // The spawner and every child it reaped: all of it ran while sampled.
        let (status, cpu) = reap_with_cpu_seconds(spawner);
        assert!(status == 0, "spawner failed: wait status {status}");
        std::io::Read::read_to_string(&mut stdout.expect("spawner stdout"), &mut child_pids)
            .expect("read the spawner's output");
        // Other processes on the machine may have the same names: ours are told apart by PID (roots
        // read NAME-PID/TID with --per-thread).
        let ours_root = |root: &str, name: &str| {
            root.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(pid, _)| {
                    pid == spawner_pid.to_string() || child_pids.lines().any(|child| child == pid)
                })
        };
        // --all snapshots every process on the machine, whatever they do: a hang there must fail the
        // test, not stall the suite.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while matches!(recorder.try_wait(), Ok(None)) {
            if std::time::Instant::now() > deadline {
                let _ = recorder.kill();
                let output = recorder.wait_with_output().expect("wait for emberprof");
                panic!(
                    "emberprof --all -d 9 still running after 60 s:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = recorder.wait_with_output().expect("wait for emberprof");
        assert!(
            output.status.success(),
            "emberprof failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let stacks = read_folded(&out);
        let ours: Vec<FoldedStack> = stacks
            .iter()
            .filter(|s| ours_root(&s.frames[0], "short-lived") || ours_root(&s.frames[0], "spawner"))
            .cloned()
            .collect();
        let spawned = total(&ours, |_| true);
        assert_samples_match_cpu("spawner and its children", spawned, cpu, 999, &ours);
        let short_lived: Vec<FoldedStack> = stacks
            .into_iter()
            .filter(|s| ours_root(&s.frames[0], "short-lived"))
            .collect();
        let all = total(&short_lived, |_| true);
        let named = total(&short_lived, |s| s.has_frame("short_lived_work"));
        assert!(
            all * 10 >= spawned * 9,
            "only {all} of {spawned} samples in the short-lived processes:\n{}",
            describe(&short_lived)
        );
        assert!(
            named * 10 >= all * 8,
            "only {named}/{all} short-lived samples name short_lived_work:\n{}",
            describe(&short_lived)
        );
        // Frameless code, first samples included (taken before emberprof judged the process): whole
        // stacks, rooted at `_start` rather than `[truncated]`.
        let complete = total(&short_lived, |s| {
            s.frames.get(1).is_some_and(|frame| frame == "_start")
        });
        assert!(
            complete * 10 >= all * 8,
            "only {complete}/{all} short-lived samples have complete stacks:\n{}",
            describe(&short_lived)
        );
    }
}

both_backends! {
    /// A process that execs another program mid-run: frames before the exec are named from the first
    /// binary, frames after it from the second, under the same PID.
    fn exec_mid_run_names_both_programs(backend) {
        let _kernel = kernel_test();
        for unwind in ["fp", "auto"] {
            let args = backend
                .record()
                .frequency(999)
                .unwind(unwind)
                .args(&["--per-thread"])
                .output_stdout();
            let (stacks, _, cpu) =
                record_command_measuring(&args.strs(), &[&example("exec-before"), "2"]);
            // bash, which measured the CPU time, is a root of its own.
            let stacks: Vec<FoldedStack> = stacks
                .into_iter()
                .filter(|s| s.frames[0].starts_with("exec-"))
                .collect();
            let all = total(&stacks, |_| true);
            assert_samples_match_cpu(unwind, all, cpu, 999, &stacks);
            let root = |s: &FoldedStack| s.frames[0].clone();
            let before = total(&stacks, |s| s.has_frame("before_exec_work"));
            let after = total(&stacks, |s| s.has_frame("after_exec_work"));
            // Each program burns for half the wall time, and gets whatever share of a CPU the
            // machine leaves it meanwhile: on a busy one the halves' samples split 36:64 was seen.
            // Both must be there, in most of the samples between them.
            assert!(
                before * 10 >= all * 2 && after * 10 >= all * 2 && (before + after) * 10 >= all * 9,
                "{unwind}: before {before}, after {after} of {all}:\n{}",
                describe(&stacks)
            );
            for stack in &stacks {
                if stack.has_frame("before_exec_work") {
                    assert!(
                        root(stack).starts_with("exec-before-"),
                        "{unwind}: {:?}",
                        stack.frames
                    );
                    assert!(
                        has_consecutive(&stack.frames, &["main", "run", "before_exec_work"]),
                        "{unwind}: {:?}",
                        stack.frames
                    );
                }
                if stack.has_frame("after_exec_work") {
                    assert!(
                        root(stack).starts_with("exec-after-"),
                        "{unwind}: {:?}",
                        stack.frames
                    );
                    assert!(
                        has_consecutive(&stack.frames, &["main", "run", "after_exec_work"]),
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
}

both_backends! {
    /// A binary that exists only on a tmpfs mounted in the process's private mount namespace is named
    /// (through /proc/PID/map_files), although the host path leads nowhere.
    fn private_mount_namespace_binary_is_named(backend) {
        let _kernel = kernel_test();
        let dir = scratch();
        let mountpoint = dir.path().join("private");
        std::fs::create_dir(&mountpoint).expect("mkdir");
        let binary = mountpoint.join("private-burn");
        let script = format!(
            "mount -t tmpfs emberprof-test {m} && cp {burn} {b} && exec {b} 4",
            m = mountpoint.display(),
            burn = example("burn"),
            b = binary.display()
        );
        let args = backend.record().frequency(999).output_stdout().command(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]);
        let (stacks, _) = record_folded(&args.strs());
        assert!(
            !binary.exists(),
            "the binary leaked into the host namespace"
        );
        let private = rooted(&stacks, |root| root == "private-burn");
        assert_burn_stacks(&private);
    }
}

/// Writes a script that spends `seconds` in the JS function `emberprofHotLoop` into `dir`.
fn node_hot_loop_script(dir: &tempfile::TempDir, seconds: u32) -> std::path::PathBuf {
    let script = out_path(dir, "hot.js");
    std::fs::write(
        &script,
        format!(
            "function emberprofHotLoop(n) {{ let x = 0; for (let i = 0; i < n; i++) {{ x = (x * 31 + i) % 1000003; }} return x; }}\n\
             const end = Date.now() + {ms}; let s = 0;\n\
             while (Date.now() < end) {{ s += emberprofHotLoop(100000); }}\n\
             if (s < 0) console.log(s);\n",
            ms = seconds * 1000
        ),
    )
    .expect("write script");
    script
}

both_backends! {
    /// JIT frames of Node.js run with --perf-basic-prof are named from /tmp/perf-PID.map and marked _[j].
    fn node_jit_frames_are_named(backend) {
        let _kernel = kernel_test();
        let _maps = PerfMapCleanup::new();
        assert_node_installed();
        let dir = scratch();
        let script = node_hot_loop_script(&dir, 3);
        // node writes isolate-*-v8.log files into its working directory: keep them in the scratch one.
        let (output, cpu) = launch_measuring(
            Some(dir.path()),
            &backend.record().frequency(499).output_stdout().strs(),
            &["node", "--perf-basic-prof", path_arg(&script)],
        );
        let stacks = folded_stdout(&output);
        let all = samples_of(&stacks, |root| root == "node");
        assert_samples_match_cpu("node", all, cpu, 499, &stacks);
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
}

both_backends! {
    /// A Rust program with #[inline(always)] helpers: the inlined function is its own frame marked _[i],
    /// names are demangled with their module path and without hashes (legacy and v0 mangling), --lines
    /// adds the exact file:line, and --no-inline removes the inlined frames.
    fn rust_inlined_frames_lines_and_demangling(backend) {
        let _kernel = kernel_test();
        // Where run calls hot_loop, and the body of mix_step (the line after its `fn` up to its `}`).
        let call_line = source_line("rust/inline.rs", "state = hot_loop(black_box(state)");
        let mix_first = source_line("rust/inline.rs", "fn mix_step(") + 1;
        let mix_last = source_line("rust/inline.rs", "x.rotate_left((round & 63) as u32)");
        for binary in ["rust-inline", "rust-inline-v0"] {
            let (stacks, _, cpu) = record_command_measuring(
                &backend.record().frequency(999).output_stdout().strs(),
                &[&example(binary), "2"],
            );
            let all = samples_of(&stacks, |root| {
                root == "rust-inline" || root == "rust-inline-v0"
            });
            assert_samples_match_cpu(binary, all, cpu, 999, &stacks);
            let hot = total(&stacks, |s| s.has_frame("rust_inline::hot_loop"));
            let inlined = total(&stacks, |s| {
                has_consecutive(
                    &s.frames,
                    &["rust_inline::run", "rust_inline::hot_loop", "mix_step_[i]"],
                )
            });
            assert!(
                hot * 10 >= all * 8 && inlined * 2 >= hot,
                "{binary}: {inlined}/{hot}/{all} samples show run;hot_loop;mix_step_[i]:\n{}",
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

            let (stacks, _, cpu) = record_command_measuring(
                &backend.record().frequency(999).args(&["--lines"]).output_stdout().strs(),
                &[&example(binary), "2"],
            );
            let all = samples_of(&stacks, |root| root.starts_with("rust-inline"));
            assert_samples_match_cpu(binary, all, cpu, 999, &stacks);
            // run's frame carries the line of its call to hot_loop, exactly.
            let run_frame = format!("rust_inline::run (inline.rs:{call_line})");
            let with_run_line = total(&stacks, |s| s.has_frame(&run_frame));
            let hot = total(&stacks, |s| {
                s.frames
                    .iter()
                    .any(|f| f.starts_with("rust_inline::hot_loop"))
            });
            assert!(
                hot * 10 >= all * 8 && with_run_line * 10 >= hot * 9,
                "{binary}: {with_run_line}/{hot}/{all} samples have {run_frame:?}:\n{}",
                describe(&stacks)
            );
            // mix_step's frames carry lines of its body, and nothing else.
            let mix_lines: Vec<(usize, u64)> = stacks
                .iter()
                .flat_map(|s| {
                    s.frames.iter().filter_map(move |f| {
                        let line = f
                            .strip_prefix("mix_step (inline.rs:")?
                            .strip_suffix(")_[i]")?;
                        Some((line.parse::<usize>().unwrap_or(0), s.count))
                    })
                })
                .collect();
            let in_body: u64 = mix_lines
                .iter()
                .filter(|(line, _)| (mix_first..=mix_last).contains(line))
                .map(|(_, count)| count)
                .sum();
            let outside: Vec<usize> = mix_lines
                .iter()
                .map(|(line, _)| *line)
                .filter(|line| !(mix_first..=mix_last).contains(line))
                .collect();
            assert!(
                outside.is_empty() && in_body * 2 >= hot,
                "{binary}: mix_step lines outside {mix_first}..={mix_last}: {outside:?}, \
                 {in_body}/{hot} hot samples in its body:\n{}",
                describe(&stacks)
            );

            let (stacks, _, cpu) = record_command_measuring(
                &backend.record().frequency(999).args(&["--no-inline"]).output_stdout().strs(),
                &[&example(binary), "2"],
            );
            let all = samples_of(&stacks, |root| root.starts_with("rust-inline"));
            assert_samples_match_cpu(binary, all, cpu, 999, &stacks);
            assert!(
                stacks
                    .iter()
                    .all(|s| s.frames.iter().all(|f| !f.ends_with("_[i]"))),
                "{binary}: --no-inline:\n{}",
                describe(&stacks)
            );
            let hot = total(&stacks, |s| {
                has_consecutive(&s.frames, &["rust_inline::run", "rust_inline::hot_loop"])
            });
            assert!(
                hot * 10 >= all * 8,
                "{binary}: --no-inline: {hot}/{all} samples in run;hot_loop:\n{}",
                describe(&stacks)
            );
        }
    }
}

both_backends! {
    /// A binary stripped of all symbols, with a .gnu_debuglink to a separate debug file next to it, is
    /// named fully from that file.
    fn debuglink_binary_is_named_from_debug_file(backend) {
        let _kernel = kernel_test();
        let args = backend
            .record()
            .frequency(999)
            .output_stdout()
            .command(&[&example("burn-debuglink"), "4"]);
        let (stacks, _) = record_folded(&args.strs());
        assert_burn_stacks(&stacks);
        let unnamed = total(&stacks, |s| {
            s.frames.iter().any(|f| f.starts_with("burn-debuglink+0x"))
        });
        assert_eq!(unnamed, 0, "frames left unnamed:\n{}", describe(&stacks));
    }
}

both_backends! {
    /// C++ names are demangled in full with --full-names: namespace, class template arguments,
    /// parameter types.
    fn cpp_names_are_demangled(backend) {
        let _kernel = kernel_test();
        let (stacks, _, cpu) = record_command_measuring(
            &backend.record().frequency(999).args(&["--full-names"]).output_stdout().strs(),
            &[&example("cpp-work"), "2"],
        );
        let all = samples_of(&stacks, |root| root == "cpp-work");
        assert_samples_match_cpu("cpp-work", all, cpu, 999, &stacks);
        let demangled = total(&stacks, |s| {
            s.has_frame("emberprof_demo::Churner<unsigned long>::churn(unsigned long)")
        });
        assert!(demangled * 10 >= all * 9, "{}", describe(&stacks));
    }
}

both_backends! {
    /// A perf map not owned by the process's user is not trusted: a warning, and no JIT names from it.
    /// The process is a real JIT (node with --perf-basic-prof) whose own map, naming its hot JS
    /// function, is swapped for a copy owned by another user: node's own frames stay named, the JIT
    /// names of the copy must not appear.
    fn foreign_perf_map_is_ignored_with_warning(backend) {
        let _kernel = kernel_test();
        let _maps = PerfMapCleanup::new();
        assert_node_installed();
        let dir = scratch();
        let script = node_hot_loop_script(&dir, 30);
        let node = Command::new("node")
            .arg("--perf-basic-prof")
            .arg(&script)
            .current_dir(dir.path())
            .spawn()
            .expect("start node");
        let node = KillOnDrop(node);
        let pid = node.0.id();
        let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
        // Wait until node has compiled the hot function and written it to its map.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let contents = loop {
            let text = std::fs::read_to_string(&map).unwrap_or_default();
            if text.contains("emberprofHotLoop") {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node never wrote emberprofHotLoop to {}",
                map.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Same entries, another owner, renamed over the map: node keeps appending to the file it
        // opened, now unlinked.
        let foreign = map.with_extension("map.foreign");
        std::fs::write(&foreign, &contents).expect("write perf map copy");
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown perf map");
        std::fs::rename(&foreign, &map).expect("replace perf map");
        let args = backend.record().pid(pid).frequency(499).output_stdout();
        let (stacks, stderr, cpu) = record_pid_for_cpu(&args.strs(), pid, 1.0);
        let _ = std::fs::remove_file(&map);
        assert!(
            stderr.contains(&format!(
                "ignoring /tmp/perf-{pid}.map of process {pid}: owned by uid 65534"
            )),
            "{stderr}"
        );
        let all = total(&stacks, |_| true);
        assert_samples_match_cpu("node", all, cpu, 499, &stacks);
        let jit = total(&stacks, |s| {
            s.frames
                .iter()
                .any(|f| f.ends_with("_[j]") || f.contains("emberprofHotLoop"))
        });
        assert_eq!(
            jit,
            0,
            "JIT names from a foreign map:\n{}",
            describe(&stacks)
        );
        // The node binary's own frames are still named: only the map was refused.
        let named_node = total(&stacks, |s| {
            s.frames.iter().any(|f| f.starts_with("node::Start"))
        });
        assert!(
            named_node * 10 >= all * 8,
            "only {named_node}/{all} samples under node::Start:\n{}",
            describe(&stacks)
        );
    }
}
