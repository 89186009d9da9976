//! The summary `record` prints when it is done: one line of totals on stderr, then what `-v` adds
//! (why stacks ended early, what was lost, what the source's kernel side did). Assembled from what
//! the source, the collector and the profile report, whichever backend ran.

use std::io::Write;
use std::time::Duration;

use emberprof_symbolizer::UnwindEnd;

use crate::capture::backend::Backend;
use crate::capture::{CollectorReport, SourceReport, StopReason};
use crate::output::{fold, Output, RenderOptions};
use crate::profile::{self, Profile};

/// How many modules `-v` names as where truncated stacks stop.
const TRUNCATION_MODULES_SHOWN: usize = 5;

pub struct Summary<'a> {
    pub profile: &'a Profile,
    pub render: &'a RenderOptions,
    pub outputs: &'a [Output],
    pub backend: Backend,
    /// `--off-cpu`: the source took the stacks at the switch-outs (the BPF backend; the perf
    /// backend with kernel access), else each thread's last on-CPU sample's were used.
    pub off_cpu_stacks: bool,
    pub processes: u64,
    pub recorded_for: Duration,
    pub stop_reason: StopReason,
    /// From the end of sampling to the outputs written.
    pub post_processing: Duration,
    pub source: &'a SourceReport,
    pub collector: &'a CollectorReport,
    /// `--max-profile-size`.
    pub max_profile_bytes: u64,
}

pub fn print(summary: &Summary<'_>) {
    let Summary {
        profile,
        render,
        outputs,
        backend,
        off_cpu_stacks,
        processes,
        recorded_for,
        stop_reason,
        post_processing,
        source,
        collector,
        max_profile_bytes,
    } = summary;
    let lost = source.lost + source.malformed;
    let samples = profile.total_samples();
    // Distinct stacks as the folded output shows them.
    let distinct_stacks = fold(profile, &render.fold).map_or(profile.samples.len(), |f| f.len());
    let output = outputs
        .iter()
        .map(|o| o.target.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let stopped = match stop_reason {
        StopReason::DurationElapsed => "",
        StopReason::Signal(_) => " (interrupted)",
        StopReason::TargetsExited => " (targets exited)",
        StopReason::CommandExited => " (command exited)",
    };
    if samples == 0 {
        let _ = writeln!(
            std::io::stderr(),
            "emberprof: no samples were collected (was the target idle?); wrote an empty {output}"
        );
    }
    log::debug!(
        "user stacks as captured (launch mode's pre-exec samples included): {} by DWARF, {} by \
         frame pointers; {:?}",
        collector.unwinding.dwarf_total(),
        collector.unwinding.frame_pointer,
        collector.unwinding
    );
    let truncated = &profile.metadata.truncation;
    // "Ended early" is judged like every other stack, by where it ends (see `stack_root`), not
    // by what the unwinder reported: an unwind can end "normally" short of the entry.
    let ended_early = truncated.dwarf_total();
    // Counted from the samples in the output, so that the figures add up with it.
    let user_stacks = if truncated.dwarf_stacks > 0 || truncated.total() > 0 {
        format!(
            "; user stacks: {} by DWARF ({ended_early} ended early), {} by frame pointers ({} truncated)",
            truncated.dwarf_stacks, truncated.frame_pointer_stacks, truncated.frame_pointer,
        )
    } else {
        String::new()
    };
    if let Some(line) = wall_clock_totals(profile, *backend, *off_cpu_stacks) {
        let _ = writeln!(std::io::stderr(), "emberprof: {line}");
    }
    if collector.off_cpu_unattributed > 0 {
        log::info!(
            "{:.3} s switched out without a stack of the thread to charge it to (its switch-out \
             came before the capture, or its stack was lost)",
            collector.off_cpu_unattributed as f64 / 1e9
        );
    }
    // stderr may be gone (a closed terminal after SIGHUP): never a panic for that.
    let _ = writeln!(
        std::io::stderr(),
        "emberprof: {samples} samples ({lost} lost, {} truncated), {} distinct stacks, {} processes, {:.1} s{stopped}, {} backend{user_stacks}; \
         output written {:.3} s after sampling stopped: {output}",
        truncated.total(),
        distinct_stacks,
        processes,
        recorded_for.as_secs_f64(),
        backend.name(),
        post_processing.as_secs_f64(),
    );
    // Without -v too: a Python process without Python frames must say why.
    let (python, python_verbose) = collector.python.lines(*backend);
    if let Some(line) = python {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    for line in python_verbose {
        log::info!("{line}");
    }
    if ended_early > 0 {
        // Without -v too: "ended early" alone does not say whether to raise --stack-size, install
        // debug info, or report a bug.
        let _ = writeln!(
            std::io::stderr(),
            "emberprof: DWARF stacks ended early because: {}",
            early_end_reasons(truncated)
        );
        log::info!(
            "DWARF unwinds that ended early: {} at the end of the stack copy (raise --stack-size), {} without \
             a working unwind rule, {} in processes never snapshotted, {} where the unwinder found no caller \
             although the frame is no process or thread entry",
            truncated.dwarf_ended(UnwindEnd::StackCopyExhausted),
            truncated.dwarf_failures().iter().map(|(_, count)| count).sum::<u64>(),
            truncated.dwarf_ended(UnwindEnd::UnknownProcess),
            truncated.dwarf_ended(UnwindEnd::Complete),
        );
    }
    if truncated.total() > 0 {
        let modules: Vec<String> = truncated
            .top_modules(TRUNCATION_MODULES_SHOWN)
            .iter()
            .map(|(module, count)| format!("{module} ({count})"))
            .collect();
        log::info!(
            "truncated user stacks (not reaching a process or thread entry) stop in: {}",
            modules.join(", ")
        );
        for (reason, count) in truncated.dwarf_failures() {
            log::info!("{count} DWARF unwinds stopped: {}", reason.describe());
        }
    }
    for (level, note) in &source.notes {
        log::log!(*level, "{note}");
    }
    if collector.released > 0 {
        log::info!(
            "{} ended processes symbolized and released while recording ({} checkpoints)",
            collector.released,
            source.checkpoints
        );
    }
    let (longest, cpu) = collector.longest_iteration;
    log::info!(
        "longest recording-loop iteration: {:.1} ms, {:.1} ms of CPU (reading, snapshots, \
         symbolizing between two waits)",
        longest.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3
    );
    let budget = collector.snapshots;
    if budget.postponed > 0 {
        // Not only with -v when it cost names.
        let level = if budget.dropped > 0 {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "snapshot budget: {} file mappings of {} snapshots postponed past {} ms of CPU in one loop \
             iteration, {} opened later, {} never (their process ended first: frames in them are \
             named file+offset)",
            budget.postponed,
            budget.snapshots_postponed,
            crate::capture::SNAPSHOT_WORK_PER_ITERATION.as_millis(),
            budget.opened_later,
            budget.dropped
        );
    }
    if budget.records_postponed > 0 || budget.records_dropped > 0 {
        log::info!(
            "snapshot budget: {} mapping records postponed, {} merged later, {} never (over {} \
             waiting in one process, or their process was released first)",
            budget.records_postponed,
            budget.records_merged_later,
            budget.records_dropped,
            emberprof_symbolizer::MAX_RECORDED_PER_PROCESS
        );
    }
    naming_notes(&collector.naming);
    let modules = collector.modules;
    if modules.released > 0 {
        log::info!(
            "{} modules released while recording: no live process mapped them any more",
            modules.released
        );
    }
    if modules.closed > 0 {
        // Not only with -v when it cost names: the user can raise the budget.
        let level = if modules.not_reopened > 0 {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "{} modules closed to keep their descriptors within --max-module-fds ({}; at most {} \
             held), {} opened again, {} could not be (no live process mapped them): their frames are \
             unnamed",
            modules.closed,
            modules.max_descriptors,
            modules.most_descriptors,
            modules.reopened,
            modules.not_reopened
        );
    }
    if modules.parsed_dropped > 0 {
        log::info!(
            "{} times a module's parsed symbols were dropped to keep them within --max-parsed-size \
             ({} MiB of files), and parsed again when needed",
            modules.parsed_dropped,
            modules.max_parsed_bytes >> 20
        );
    }
    if modules.parsed_rebuilt > 0 {
        log::info!(
            "{} times a module's parsed symbols were parsed anew, having grown well past their \
             first round's: they keep what recent samples needed, not every unit ever named",
            modules.parsed_rebuilt
        );
    }
    if modules.dwarf_refused > 0 {
        log::info!(
            "{} modules named from their symbol tables only, their DWARF not read: compressed \
             sections that would inflate past {} MiB or not as their headers claim, links to \
             other files, or more DWARF work than allowed (-v names them and the limit)",
            modules.dwarf_refused,
            emberprof_symbolizer::MAX_INFLATED_BYTES >> 20
        );
    }
    if profile.metadata.over_budget_samples > 0 {
        // Not only with -v: detail was lost, and the user can raise the budget.
        log::warn!(
            "{} samples past --max-profile-size ({:.1} MiB held at most): their stacks end in {} \
             where they left what the profile held, or they were merged without pid and tid",
            profile.metadata.over_budget_samples,
            *max_profile_bytes as f64 / f64::from(1 << 20),
            profile::OVER_BUDGET_FRAME
        );
    }
    if profile.metadata.unlabelled_processes > 0 {
        log::info!(
            "{} processes are merged by name, without pid and tid (only the first {} keep them, \
             to bound memory; --per-thread keeps all)",
            profile.metadata.unlabelled_processes,
            profile::LABELLED_PROCESSES
        );
    }
    for (reason, count) in &profile.metadata.unknown_frames {
        log::info!("{count} sampled frames unnamed: {}", reason.describe());
    }
    let refused = emberprof_symbolizer::untrusted::copies_refused();
    if refused > 0 {
        log::info!(
            "{refused} files their owners can modify got no private copy, so no names: copies hold \
             at most {} bytes in all",
            emberprof_symbolizer::untrusted::MAX_TOTAL_COPY_BYTES
        );
    }
    if collector.jit.without_map > 0 {
        // Not only with -v: every frame of their JIT code is `[unknown]`, which a user must be
        // able to fix.
        log::warn!(
            "{} processes ran JIT code without a readable perf map: its frames are unnamed (Node.js: \
             --perf-basic-prof; Java: -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit; \
             Python 3.12+: -X perf)",
            collector.jit.without_map
        );
    }
    if collector.jit.bytes_skipped > 0
        || collector.jit.entries_dropped > 0
        || collector.jit.maps_evicted > 0
    {
        log::info!(
            "perf maps over their limits: {} bytes not read (--max-perf-map-size), {} functions not kept",
            collector.jit.bytes_skipped,
            collector.jit.entries_dropped
        );
        if collector.jit.maps_evicted > 0 {
            log::info!(
                "{} perf maps dropped to keep all perf maps within --max-perf-maps-size",
                collector.jit.maps_evicted
            );
        }
    }
}

/// Where the processes' modules came from (`-v`): `/proc` snapshots, mapping records, or
/// neither, and why.
fn naming_notes(naming: &emberprof_symbolizer::NamingStats) {
    log::info!(
        "process instances named from /proc snapshots: {} ({} completed by mapping records); from \
         mapping records alone (gone before their maps were read): {}; unnamed: {} gone before \
         their maps were read with no mapping records (started before the recording, or records \
         lost), {} whose recorded files could not be used",
        naming.from_proc,
        naming.completed_by_records,
        naming.from_records,
        naming.unnamed_without_records,
        naming.unnamed_files_unusable,
    );
    for (why, count) in &naming.unusable {
        log::info!("{count} recorded mappings not used: {}", why.describe());
    }
    if naming.over_limit > 0 {
        log::info!(
            "{} recorded mappings over the limit of {} per process",
            naming.over_limit,
            emberprof_symbolizer::MAX_RECORDED_PER_PROCESS
        );
    }
}

/// `--off-cpu`: the on-CPU and off-CPU time in the profile, the two parts of its width.
fn wall_clock_totals(profile: &Profile, backend: Backend, at_switch: bool) -> Option<String> {
    use crate::profile::values::{CPU, OFF_CPU};
    let off_cpu = profile.value_types.position(OFF_CPU)?;
    let cpu = profile.value_types.position(CPU);
    let (mut on, mut off) = (0u64, 0u64);
    for sample in &profile.samples {
        on = on.saturating_add(cpu.map_or(0, |i| sample.values.get(i)));
        off = off.saturating_add(sample.values.get(off_cpu));
    }
    let percent = |part: u64| 100.0 * part as f64 / (on.saturating_add(off)).max(1) as f64;
    Some(format!(
        "wall-clock {:.3} s in all threads: on-CPU {:.3} s ({:.0} %), off-CPU {:.3} s ({:.0} %, \
         {}); folded counts are microseconds",
        on.saturating_add(off) as f64 / 1e9,
        on as f64 / 1e9,
        percent(on),
        off as f64 / 1e9,
        percent(off),
        match backend {
            Backend::Bpf => "on the stacks threads switched out in",
            Backend::Perf { .. } if at_switch =>
                "on the stacks threads switched out in (context-switches event)",
            Backend::Perf { .. } =>
                "on each thread's last on-CPU sample: perf_event gives no stack at a switch \
                 without kernel access (root, CAP_PERFMON or kernel.perf_event_paranoid <= 1 \
                 give the exact stacks)",
        },
    ))
}

/// Why DWARF unwinds ended early, most first: `N <reason>, ...`.
fn early_end_reasons(truncated: &crate::profile::Truncation) -> String {
    let mut reasons: Vec<(u64, String)> = truncated
        .dwarf_failures()
        .into_iter()
        .map(|(reason, count)| (count, reason.describe().to_string()))
        .collect();
    let others = [
        (
            UnwindEnd::StackCopyExhausted,
            "reached the end of the stack copy (frames bigger than --stack-size)",
        ),
        (UnwindEnd::UnknownProcess, "in a process never snapshotted"),
        (
            UnwindEnd::Complete,
            "found no caller although the frame is no process or thread entry",
        ),
    ];
    for (end, reason) in others {
        let count = truncated.dwarf_ended(end);
        if count > 0 {
            reasons.push((count, reason.to_string()));
        }
    }
    reasons.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    reasons
        .iter()
        .map(|(count, reason)| format!("{count} {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}
