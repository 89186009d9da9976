//! The BPF backend's own machinery under real workloads: kernel maps too small for the load, map
//! switching in long runs, and the kernel's account of the BPF programs' run time. The perf backend
//! has none of these.

use crate::support::*;

/// With maps far too small for the workload, samples go through the ring buffer instead of being
/// lost: the profile is as right as with roomy maps, and the BPF counters account for every sample.
#[test]
fn tiny_maps_stream_samples_instead_of_losing_them() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    let args = Backend::Bpf
        .record()
        .args(&["-v", "--stack-map-entries", "2", "--count-map-entries", "2"])
        .pid(workload.pid())
        .frequency(999)
        .output_stdout();
    let (stacks, stderr, cpu) = record_pid_for_cpu(&args.strs(), workload.pid(), 3.0);
    assert!(stderr.contains("went through the ring buffer"), "{stderr}");
    assert!(stderr.contains("(0 lost, "), "{stderr}");
    assert!(!stderr.contains("unaccounted"), "{stderr}");
    assert_samples_match_cpu("burn", all_samples(&stacks), cpu, 999, &stacks);
    assert_burn_profile(&stacks);
}

/// Sets `kernel.bpf_stats_enabled` for the guard's life, then puts the old value back.
struct BpfStats(String);

impl BpfStats {
    fn set(value: &str) -> BpfStats {
        const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(PATH).expect("read kernel.bpf_stats_enabled");
        std::fs::write(PATH, value).expect("set kernel.bpf_stats_enabled (run the tests as root)");
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", self.0.trim());
    }
}

/// With `kernel.bpf_stats_enabled`, `-v` reports the time the kernel spent in emberprof's programs
/// (charged to the sampled tasks, so not in emberprof's own CPU time): the sampling program ran at
/// least once per sample kept. Without the sysctl there is nothing to report, and no line.
#[test]
fn bpf_run_time_is_reported_when_the_kernel_counts_it() {
    let _kernel = kernel_test();
    let workload = Workload::start("burn", &[UNTIL_KILLED]);
    let args = Backend::Bpf
        .record()
        .args(&["-v"])
        .pid(workload.pid())
        .frequency(999)
        .output_stdout();
    let record = || record_pid_for_cpu(&args.strs(), workload.pid(), 0.5);
    let (stacks, stderr, cpu) = {
        let _stats = BpfStats::set("1");
        record()
    };
    let number = |pattern: &str| {
        regex::Regex::new(pattern)
            .expect("valid regex")
            .captures(&stderr)
            .and_then(|c| c[1].parse::<f64>().ok())
            .unwrap_or_else(|| panic!("nothing matches {pattern}:\n{stderr}"))
    };
    let samples = summary_samples(&stderr);
    let runs = number(r"BPF programs ran (\d+) times") as u64;
    let seconds = number(r"BPF programs ran \d+ times for ([0-9.]+) s in all");
    // Runs are compared with the samples kept: those must be all the target's CPU time called for.
    assert_samples_match_cpu("burn", samples, cpu, 999, &stacks);
    assert!(
        runs >= samples,
        "{runs} runs for {samples} samples:\n{stderr}"
    );
    // Each run costs between a few hundred nanoseconds and a few tens of microseconds.
    let per_run = seconds / runs as f64;
    assert!(
        (1e-7..1e-4).contains(&per_run),
        "{seconds} s for {runs} runs:\n{stderr}"
    );

    let _stats = BpfStats::set("0");
    let (_, stderr, _) = record();
    assert!(!stderr.contains("BPF programs ran"), "{stderr}");
}

/// A long run with a stream of processes: the kernel maps are switched and emptied during the run
/// (here often, as they are tiny), the processes that ended are symbolized and released on the way,
/// and their samples still carry their names, as many as their CPU time calls for.
#[test]
fn long_run_empties_maps_and_releases_ended_processes() {
    let _kernel = kernel_test();
    let dir = scratch();
    // A file, not stdout: the spawner prints its children's PIDs there.
    let out = out_path(&dir, "long.folded");
    let args = Backend::Bpf
        .record()
        .args(&[
            "-v",
            "--stack-map-entries",
            "128",
            "--count-map-entries",
            "64",
        ])
        .frequency(999)
        .output(&out);
    // About 10 s: switches every 5 s at the least (the children are frameless, so their stacks are
    // copied, not counted in the maps, and do not fill them).
    let (output, cpu) = launch_measuring(
        None,
        &args.strs(),
        &[&example("spawner"), "150", "60", "10"],
    );
    let stderr = stderr_text(&output);
    let stacks = read_folded(&out);
    let number_before = |text: &str| -> u64 {
        stderr
            .split_once(text)
            .and_then(|(before, _)| before.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {text:?}:\n{stderr}"))
    };
    assert!(number_before(" times while recording") >= 1, "{stderr}");
    assert!(
        number_before(" ended processes symbolized") >= 20,
        "{stderr}"
    );
    assert!(stderr.contains("(0 lost,"), "{stderr}");
    // bash, which measured the CPU time, is a root of its own.
    let spawned = rooted(&stacks, |root| root == "short-lived" || root == "spawner");
    assert_samples_match_cpu(
        "spawner and its children",
        all_samples(&spawned),
        cpu,
        999,
        &spawned,
    );
    let short_lived = rooted(&stacks, |root| root == "short-lived");
    let all = all_samples(&short_lived);
    let named = total(&short_lived, |s| {
        has_in_order(&s.frames, &["main", "run", "short_lived_work"])
    });
    assert!(
        all * 10 >= all_samples(&spawned) * 9 && named * 10 >= all * 8,
        "{named}/{all} short-lived samples name main..run..short_lived_work:\n{}",
        describe(&short_lived)
    );
}
