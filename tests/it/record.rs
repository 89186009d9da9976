//! Recording real workloads and checking the stacks, names and ratios that come out, on both
//! backends. Checks of the BPF backend's own machinery (its maps, ring buffer, run-time counters)
//! are in `record_bpf`.

use std::os::unix::process::ExitStatusExt;

use crate::support::*;

both_backends! {
    /// --pid with --unwind fp on a frame-pointer build: as many samples as the target's CPU time
    /// calls for, burn_a gets 3x burn_b's samples and stacks are complete.
    fn pid_mode_gets_ratio_and_full_stacks(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        let dir = scratch();
        let out = out_path(&dir, "burn.folded");
        let args = backend
            .record()
            .pid(workload.pid())
            .frequency(999)
            .unwind("fp")
            .output(&out);
        let (_, cpu) = record_for_cpu(&args.strs(), &[workload.pid()], 3.0);
        let stacks = read_folded(&out);
        assert!(
            stacks.iter().all(|s| s.frames[0] == "burn"),
            "root is the process name:\n{}",
            describe(&stacks)
        );
        assert_samples_match_cpu("burn", all_samples(&stacks), cpu[0], 999, &stacks);
        assert_burn_profile(&stacks);
    }
}

both_backends! {
    /// Launch mode profiles the command from its start, ends when it exits, and exits with its
    /// status. (The 3:1 split is checked where a recording can run until the target has had its
    /// CPU time: a 4 s command on a busy machine may get too few samples to judge it.)
    fn launch_mode_profiles_command_and_returns_its_status(backend) {
        let _kernel = kernel_test();
        let dir = scratch();
        let out = out_path(&dir, "launch.folded");
        let args = backend
            .record()
            .frequency(999)
            .output(&out)
            .command(&[&example("burn"), "4", "7"]);
        let output = emberprof()
            .args(args.strs())
            .output()
            .expect("run emberprof");
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(7), "exit status of the command:\n{stderr}");
        assert!(stderr.contains("exited with status 7"), "{stderr}");
        // Ended by the command, not by anything else: no -d was given.
        assert!(summary_line(&stderr).contains("(command exited)"), "{stderr}");
        assert!(!stderr.contains("unaccounted"), "{stderr}");
        assert_burn_stacks(&read_folded(&out));
    }
}

both_backends! {
    /// Processes a launched command forks are followed: the forked burn child gets as many samples
    /// as its CPU time calls for.
    fn launch_mode_follows_children(backend) {
        let _kernel = kernel_test();
        let script = format!("{} 2; true", example("burn"));
        let args = backend.record().frequency(499).output_stdout();
        let (stacks, _, cpu) = record_command_measuring(&args.strs(), &["sh", "-c", &script]);
        let burn = samples_of(&stacks, |root| root == "burn");
        assert_samples_match_cpu("forked burn child", burn, cpu, 499, &stacks);
        let in_burn = total(&stacks, |s| s.frames[0] == "burn" && is_burn(s));
        assert!(
            in_burn * 10 >= burn * 9,
            "only {in_burn}/{burn} samples of the child in burn_*:\n{}",
            describe(&stacks)
        );
    }
}

both_backends! {
    /// A syscall-heavy loop shows kernel frames, marked _[k], below its user frames. As root the
    /// perf backend samples kernel mode and kernel stacks too, like the BPF backend.
    fn syscall_loop_shows_kernel_frames(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("syscalls", &[UNTIL_KILLED]);
        let args = backend
            .record()
            .pid(workload.pid())
            .frequency(499)
            .output_stdout();
        let (stacks, _, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 1.0);
        let all = all_samples(&stacks);
        // Half the time of this loop is system time: the kernel-mode samples must not go missing.
        assert_samples_match_cpu("syscalls", all, cpu, 499, &stacks);
        let in_kernel = total(&stacks, FoldedStack::has_kernel_frame);
        assert!(
            in_kernel * 4 >= all,
            "only {in_kernel}/{all} samples have kernel frames:\n{}",
            describe(&stacks)
        );
        // Kernel frames come after (below) the user frames, and name the read system call: the
        // kernel's own ksys_read/vfs_read (a user frame such as read_zero must not count).
        let read_path = total(&stacks, |s| {
            let first_kernel = s.frames.iter().position(|f| f.ends_with("_[k]"));
            first_kernel.is_some_and(|k| {
                s.frames[..k].iter().any(|f| f == "run")
                    && s.frames[k..].iter().all(|f| f.ends_with("_[k]"))
                    && s.frames[k..]
                        .iter()
                        .any(|f| f == "ksys_read_[k]" || f == "vfs_read_[k]")
            })
        });
        assert!(
            read_path * 10 >= in_kernel * 4,
            "only {read_path}/{in_kernel} kernel samples read ksys_read or vfs_read under run:\n{}",
            describe(&stacks)
        );
        assert_kernel_frames_named(&stacks);
    }
}

both_backends! {
    /// --no-kernel drops kernel frames, --no-user drops user frames; neither drops samples.
    fn no_kernel_and_no_user_drop_frames(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("syscalls", &[UNTIL_KILLED]);
        let args = |frames: &str| {
            backend
                .record()
                .pid(workload.pid())
                .frequency(499)
                .args(&[frames])
                .output_stdout()
        };
        let (stacks, _, cpu) = record_pid_for_cpu(&args("--no-kernel").strs(), workload.pid(), 1.0);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("--no-kernel", all, cpu, 499, &stacks);
        let with_run = total(&stacks, |s| has_consecutive(&s.frames, &["main", "run"]));
        assert!(
            with_run * 10 >= all * 9,
            "--no-kernel lost the user frames:\n{}",
            describe(&stacks)
        );
        assert!(
            !stacks.iter().any(FoldedStack::has_kernel_frame),
            "--no-kernel left kernel frames:\n{}",
            describe(&stacks)
        );

        let (stacks, _, cpu) = record_pid_for_cpu(&args("--no-user").strs(), workload.pid(), 1.0);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("--no-user", all, cpu, 499, &stacks);
        let in_kernel = total(&stacks, |s| s.frames.len() > 1);
        assert!(
            in_kernel * 4 >= all,
            "--no-user: only {in_kernel}/{all} samples have kernel frames:\n{}",
            describe(&stacks)
        );
        assert_kernel_frames_named(&stacks);
        assert!(
            stacks
                .iter()
                .all(|s| s.frames[1..].iter().all(|f| f.ends_with("_[k]"))),
            "--no-user left user frames:\n{}",
            describe(&stacks)
        );
    }
}

both_backends! {
    /// --all sees every busy process: two different workloads appear as two roots, each with as
    /// many samples as its CPU time calls for.
    fn all_mode_sees_separate_processes(backend) {
        let _kernel = kernel_test();
        let burn = Workload::start("burn", &[UNTIL_KILLED]);
        let syscalls = Workload::start("syscalls", &[UNTIL_KILLED]);
        let dir = scratch();
        let out = out_path(&dir, "system.folded");
        let args = backend
            .record()
            .args(&["--all", "--per-thread"])
            .frequency(499)
            .output(&out);
        let (output, cpu) = record_for_cpu(&args.strs(), &[burn.pid(), syscalls.pid()], 1.0);
        let summary = summary_line(&stderr_text(&output)).to_owned();
        let stacks = read_folded(&out);
        // Other processes on the machine may run the same examples: ours are told apart by PID
        // (roots read NAME-PID/TID with --per-thread; both examples are single-threaded).
        for ((name, function, pid), cpu) in [
            ("burn", "burn_a", burn.pid()),
            ("syscalls", "read_zero", syscalls.pid()),
        ]
        .into_iter()
        .zip(cpu)
        {
            let root = format!("{name}-{pid}/{pid}");
            let own = rooted(&stacks, |r| r == root);
            let all = all_samples(&own);
            assert_samples_match_cpu(&format!("{root} ({summary})"), all, cpu, 499, &own);
            let samples = total(&own, |s| has_consecutive(&s.frames, &["main", "run", function]));
            // burn_a is 3/4 of burn's work; read_zero nearly all of syscalls'.
            assert!(
                samples * 10 >= all * 6,
                "{root}: only {samples}/{all} samples with main;run;{function}:\n{}",
                describe(&own)
            );
        }
    }
}

both_backends! {
    /// --per-thread roots each thread at name-PID/TID, so the two named threads are separate
    /// towers; without it both are under the process name. Threads are all sampled (the perf
    /// backend opens events for each thread, the BPF one filters by process).
    fn per_thread_separates_named_threads(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("threads", &[UNTIL_KILLED]);
        let pid = workload.pid();
        let args = backend.record().pid(pid).frequency(499).output_stdout();
        let per_thread = args.clone().args(&["--per-thread"]);
        let (stacks, _, cpu) = record_pid_for_cpu(&per_thread.strs(), pid, 1.0);
        let all = all_samples(&stacks);
        assert_samples_match_cpu("threads", all, cpu, 499, &stacks);
        for (thread, function) in [("worker-alpha", "alpha_work"), ("worker-beta", "beta_work")] {
            let prefix = format!("{thread}-{pid}/");
            let samples = total(&stacks, |s| s.frames[0].starts_with(&prefix) && s.has_frame(function));
            // The two workers share the process's CPU time equally.
            assert!(
                samples * 10 >= all * 3,
                "{thread}: {samples}/{all} samples in {function}:\n{}",
                describe(&stacks)
            );
        }
        let (stacks, _, cpu) = record_pid_for_cpu(&args.strs(), pid, 1.0);
        assert_samples_match_cpu("threads", all_samples(&stacks), cpu, 499, &stacks);
        assert!(
            stacks.iter().all(|s| s.frames[0] == "threads"),
            "{}",
            describe(&stacks)
        );
    }
}

both_backends! {
    /// The SVG is well-formed XML and names the sampled functions.
    fn svg_is_xml_with_function_names(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        let dir = scratch();
        let out = out_path(&dir, "flame.svg");
        let args = backend
            .record()
            .pid(workload.pid())
            .frequency(999)
            .args(&["--title", "burn test"])
            .output(&out);
        record_for_cpu(&args.strs(), &[workload.pid()], 0.5);
        let svg = std::fs::read_to_string(&out).expect("read svg");
        let (elements, titles) = svg_titles(&svg);
        assert!(elements > 10, "{elements} elements in the SVG");
        let frame_titled = |name: &str| {
            titles
                .iter()
                .any(|title| title.starts_with(&format!("{name} (")) && title.contains(" samples"))
        };
        for name in ["burn_a", "burn_b", "main", "run", "burn"] {
            assert!(
                frame_titled(name),
                "no frame titled {name} in the SVG; titles:\n{}",
                titles.join("\n")
            );
        }
        assert!(svg.contains(">burn test<"), "the title text is missing from the SVG");
    }
}

/// Parses `svg` as XML (failing the test if it is not): its number of elements, and the text of
/// every <title>. inferno gives each frame one, "NAME (N samples, P%)"; the script it embeds
/// contains words such as `run` too, so names are looked up only there.
fn svg_titles(svg: &str) -> (usize, Vec<String>) {
    let mut reader = quick_xml::Reader::from_str(svg);
    let mut elements = 0;
    let mut titles = Vec::new();
    let mut in_title = false;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(start)) => {
                elements += 1;
                in_title = start.name().as_ref() == b"title";
            }
            Ok(quick_xml::events::Event::Text(text)) if in_title => {
                titles.push(String::from_utf8_lossy(&text).into_owned());
            }
            Ok(quick_xml::events::Event::End(_)) => in_title = false,
            Ok(_) => {}
            Err(e) => panic!("invalid XML at {}: {e}", reader.buffer_position()),
        }
    }
    (elements, titles)
}

both_backends! {
    /// Ctrl-C (SIGINT) or SIGTERM stop an open-ended recording and the output is still written,
    /// with every sample taken before the signal.
    fn signals_stop_recording_and_write_output(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let dir = scratch();
            let out = out_path(&dir, "interrupted.folded");
            let args = backend.record().pid(workload.pid()).frequency(499).output(&out);
            let mut child = emberprof()
                .args(args.strs())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start emberprof");
            let watch = CpuWatch::start(&mut child, &[workload.pid()]);
            // Samples to keep: the signal must not come before there are any.
            wait_for_cpu(workload.pid(), 1.0, &mut child);
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
            let output = child.wait_with_output().expect("wait");
            let cpu = watch.used(&stderr_text(&output))[0];
            assert!(
                output.status.success(),
                "signal {signal}: {:?} {:?}",
                output.status,
                output.status.signal()
            );
            let stacks = read_folded(&out);
            let all = all_samples(&stacks);
            assert_samples_match_cpu(&format!("signal {signal}"), all, cpu, 499, &stacks);
            assert!(
                total(&stacks, is_burn) * 10 >= all * 9,
                "signal {signal}: {}",
                describe(&stacks)
            );
            let stderr = stderr_text(&output);
            assert!(stderr.contains("(interrupted)"), "{stderr}");
            let leftovers: Vec<_> = std::fs::read_dir(dir.path())
                .expect("list the output directory")
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .collect();
            assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        }
    }
}

both_backends! {
    /// A target that never runs gives a valid, empty output and says so.
    fn empty_capture_writes_valid_output(backend) {
        let _kernel = kernel_test();
        let idle = KillOnDrop(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("start sleep"),
        );
        let dir = scratch();
        let args = |out: &std::path::Path| {
            backend.record().pid(idle.pid()).duration("0.5").output(out)
        };
        let svg = out_path(&dir, "empty.svg");
        let output = run_ok(&args(&svg).strs());
        let stderr = stderr_text(&output);
        assert!(stderr.contains("no samples were collected"), "{stderr}");
        let text = std::fs::read_to_string(&svg).expect("svg written");
        assert!(text.contains("<svg") && text.contains("No samples"), "{text}");
        let folded = out_path(&dir, "empty.folded");
        run_ok(&args(&folded).strs());
        assert_eq!(std::fs::read_to_string(&folded).expect("folded written"), "");
    }
}

both_backends! {
    /// A target that exits ends the capture early, keeping its samples.
    fn exiting_target_ends_capture_early(backend) {
        let _kernel = kernel_test();
        let workload = Workload::start("burn", &[UNTIL_KILLED]);
        let args = backend
            .record()
            .pid(workload.pid())
            .duration("600")
            .frequency(499)
            .output_stdout();
        let mut profiler = emberprof()
            .args(args.strs())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start emberprof");
        let watch = CpuWatch::start(&mut profiler, &[workload.pid()]);
        // The target exits once it has had samples to keep; it is killed rather than left to end
        // by itself, which on a busy machine could come before emberprof attached.
        wait_for_cpu(workload.pid(), 0.5, &mut profiler);
        workload.kill_leaving_zombie();
        let output = profiler.wait_with_output().expect("wait for emberprof");
        let stderr = expect_success(&output, "emberprof");
        let cpu = watch.used(&stderr)[0];
        let stacks = folded_stdout(&output);
        assert!(summary_line(&stderr).contains("(targets exited)"), "{stderr}");
        // By emberprof's own clock, sampling ended with the target, long before -d 600.
        assert!(
            summary_seconds(&stderr) < 300.0,
            "capture ran on after the target exited:\n{stderr}"
        );
        // The samples of the target's last moments are kept.
        let all = all_samples(&stacks);
        assert_samples_match_cpu("burn", all, cpu, 499, &stacks);
        assert!(total(&stacks, is_burn) * 10 >= all * 9, "{}", describe(&stacks));
    }
}
