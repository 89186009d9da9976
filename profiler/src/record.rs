//! `emberprof record`: checks, capture, symbolization, output, summary — the pipeline in order.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use emberprof_symbolizer::{Symbolizer, SymbolizerOptions, UnwindEnd};

use crate::backend::{self, Backend, BackendChoice, NeedsPrivileges, Privileges};
use crate::capture::{
    self, Capture, ExitStatus, MapSizes, PausedCommand, ProcessWatch, RunAs, RunningCommand,
    Sampler, SamplerConfig, StopConditions, StopReason, UnwindMode,
};
use crate::capture::{perf, SampledEvent};
use crate::output::{fold, write_outputs, Output, OutputFile, RenderOptions};
use crate::profile::{self, EndedLabels, MergedProfile, Metadata, Profile};
use crate::{interrupt, preflight};

/// What to profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// These processes, all their threads, and (with `follow_children`) what they fork.
    Pids(Vec<u32>),
    /// Everything on every CPU.
    AllProcesses,
    /// A command launched by emberprof.
    Command(Vec<OsString>),
}

/// Everything `record` needs, validated (see `cli.rs` for the command-line spelling of each).
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub target: Target,
    /// Who a launched command runs as. Default: the user who ran sudo, else unchanged.
    pub run_as: RunAs,
    /// `None`: until Ctrl-C or the targets end.
    pub duration: Option<Duration>,
    /// Samples per second per CPU. Default 99.
    pub frequency_hz: u64,
    /// Each output and its format (at least one).
    pub outputs: Vec<Output>,
    /// How the profile is shown; an empty title is derived from the target.
    pub render: RenderOptions,
    /// Inlined frames (default on) and source lines (default off).
    pub symbols: SymbolizerOptions,
    pub capture_kernel: bool,
    pub capture_user: bool,
    /// Processes forked by targets become targets. Default true.
    pub follow_children: bool,
    /// Kernel BTF file; `None` uses /sys/kernel/btf/vmlinux.
    pub btf_path: Option<PathBuf>,
    /// How user stacks are unwound. Default auto.
    pub unwind: UnwindMode,
    /// Bytes of user stack copied per sample for DWARF unwinding. Default 16384.
    pub stack_copy_bytes: u32,
    /// Sizes of the kernel maps. The ring buffer's default: [`crate::capture::ring_buffer_bytes`].
    pub map_sizes: MapSizes,
    /// No status line and no summary.
    pub quiet: bool,
    /// Which capture backend. Default auto: BPF with the privileges for it, perf_event otherwise.
    pub backend: BackendChoice,
    /// What samples are taken on. Default cpu-clock.
    pub event: SampledEvent,
    /// Data pages of each CPU's ring buffer (perf backend). `None`: [`perf::default_ring_pages`].
    pub ring_pages: Option<usize>,
}

/// How long a launched command gets to exit after SIGTERM before it is killed.
const COMMAND_TERM_GRACE: Duration = Duration::from_secs(2);
/// How many modules `-v` names as where truncated stacks stop.
const TRUNCATION_MODULES_SHOWN: usize = 5;

pub fn run(options: RecordOptions) -> Result<ExitCode> {
    let privileges = Privileges::probe()?;
    let backend = backend::choose(
        options.backend,
        &options.target,
        &privileges,
        backend::process_owner,
    )
    .map_err(|error| match error.downcast::<NeedsPrivileges>() {
        // Says which privileges are missing and how to grant them.
        Ok(needs) => match preflight::check_privileges() {
            Err(missing) => missing.context(needs.what),
            Ok(()) => needs.into(),
        },
        Err(error) => error,
    })?;
    options.event.check_available()?;
    if backend == Backend::Bpf {
        preflight::check_privileges()?;
        preflight::check_kernel(
            options.unwind != UnwindMode::FramePointers && options.capture_user,
        )?;
    }
    preflight::check_frequency(options.frequency_hz)?;
    let watches = match &options.target {
        Target::Pids(pids) => pids
            .iter()
            .map(|&pid| ProcessWatch::open(pid))
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    // Read before anything is started, so that a missing BTF fails at once.
    let prepared = match backend {
        Backend::Bpf => Prepared::Bpf(preflight::load_btf(options.btf_path.as_deref())?),
        Backend::Perf { kernel } => Prepared::Perf { kernel },
    };
    let signal = interrupt::install()?;
    let outputs = options
        .outputs
        .iter()
        .map(|output| Ok((output.clone(), OutputFile::create(&output.target)?)))
        .collect::<Result<Vec<_>>>()?;
    interrupt::remove_on_abort(
        outputs
            .iter()
            .filter_map(|(_, file)| file.temp_location())
            .collect(),
    );
    preflight::raise_file_limit();

    // Forked before anything starts threads; held before exec until the sampler is attached.
    let paused = match &options.target {
        Target::Command(argv) => Some(PausedCommand::spawn(argv, &options.run_as)?),
        _ => None,
    };
    if let Some(paused) = &paused {
        interrupt::terminate_on_abort(paused.pid());
    }
    let symbolizer = Symbolizer::new(options.symbols).context("cannot set up symbolization")?;
    let mut recording = Recording {
        symbolizer,
        watches,
        signal: &signal,
    };
    let (mut capture, mut command) = match prepared {
        Prepared::Bpf(btf) => capture_with_bpf(&options, btf, paused, &mut recording)?,
        Prepared::Perf { kernel } => capture_with_perf(&options, kernel, paused, &mut recording)?,
    };
    let mut symbolizer = recording.symbolizer;
    if let Some(command) = &command {
        // The launched child was emberprof until its exec: what it ran then (a few samples of
        // the exec itself) is emberprof's own work, not the command's.
        let removed = command.remove_pre_exec_samples(&mut capture.samples);
        log::debug!("left out {removed} stacks of the command before its exec");
    }
    log::debug!(
        "maps read and released {:?} after stop",
        capture.stopped_at.elapsed()
    );

    let metadata = capture_metadata(&capture, &options);
    // The samples read at each map switch were built then; the processes that had ended, released.
    let mut merged =
        std::mem::replace(&mut capture.built, MergedProfile::new(EndedLabels::Bounded));
    let last_stacks = capture.samples.len();
    for part in profile::split_by_process(std::mem::take(&mut capture.samples)) {
        let part = profile::build(&part, &mut symbolizer, Metadata::default());
        // Every process is done now: those past the label budget are counted like ended ones.
        merged.add_ended(part);
    }
    let jit = symbolizer.jit_stats();
    // Everything is named: the symbolizer's parsed debug info (tens of MB: blazesym keeps every
    // file's DWARF for the session) goes before the outputs are made, so they do not add to it.
    drop(symbolizer);
    release_free_memory();
    let profile = merged.finish(metadata);
    let processes = profile
        .samples
        .iter()
        .filter_map(|sample| sample.pid)
        .collect::<HashSet<u32>>()
        .len() as u64
        + profile.metadata.unlabelled_processes;
    log::debug!(
        "last {last_stacks} stacks symbolized and the profile built {:?} after stop",
        capture.stopped_at.elapsed()
    );
    let mut render = options.render.clone();
    if render.svg.title.is_empty() {
        render.svg.title = default_title(&options.target);
    }
    let profile = write_outputs(profile, outputs, &render)?;
    let post_processing = capture.stopped_at.elapsed();

    // The command is signalled and reaped below: its PID must not be signalled after that.
    interrupt::terminate_on_abort(0);
    let command_status = command.as_mut().map(finish_command).transpose()?;
    if !options.quiet {
        print_summary(
            &capture,
            processes,
            &profile,
            &render,
            post_processing,
            &options.outputs,
            backend,
        );
        if jit != Default::default() {
            log::info!(
                "perf maps over their limits: {} bytes not read (--max-perf-map-size), {} functions not kept",
                jit.bytes_skipped,
                jit.entries_dropped
            );
        }
        if let (Some(command), Some(status)) = (&command, command_status) {
            // stderr may be gone (a closed terminal after SIGHUP): never a panic for that.
            let _ = writeln!(
                std::io::stderr(),
                "emberprof: `{}` {status}",
                command.display()
            );
        }
    }
    Ok(match command_status {
        Some(status) => ExitCode::from(status.shell_code()),
        None => ExitCode::SUCCESS,
    })
}

/// A backend with what it needs loaded.
enum Prepared {
    /// The kernel BTF given with --btf; `None`: the running kernel's.
    Bpf(Option<aya::Btf>),
    Perf {
        kernel: bool,
    },
}

/// What both backends' recordings share: the symbolizer and what stops them.
struct Recording<'a> {
    symbolizer: Symbolizer,
    watches: Vec<ProcessWatch>,
    signal: &'a AtomicUsize,
}

/// The BPF backend: loads and attaches the sampler, starts the command, records.
fn capture_with_bpf(
    options: &RecordOptions,
    btf: Option<aya::Btf>,
    paused: Option<PausedCommand>,
    recording: &mut Recording<'_>,
) -> Result<(Capture, Option<RunningCommand>)> {
    let target_pids = match (&options.target, &paused) {
        (Target::Pids(pids), _) => Some(pids.clone()),
        (Target::Command(_), Some(paused)) => Some(vec![paused.pid()]),
        _ => None,
    };
    let mut sampler = Sampler::load(
        btf.as_ref(),
        &SamplerConfig {
            target_pids,
            follow_children: options.follow_children,
            capture_kernel: options.capture_kernel,
            capture_user: options.capture_user,
            unwind: options.unwind,
            stack_copy_bytes: options.stack_copy_bytes,
            map_sizes: options.map_sizes,
        },
    )?;
    if options.capture_kernel {
        recording.symbolizer.load_kernel_symbols();
    }
    sampler.attach(options.frequency_hz, options.event)?;
    // A parsed kernel BTF given with --btf (tens of MB) is only needed to load the programs.
    drop(btf);
    release_free_memory();
    let mut command = paused.map(PausedCommand::start).transpose()?;

    let capture = capture::record(
        &mut sampler,
        &mut recording.symbolizer,
        options.unwind,
        StopConditions {
            duration: options.duration,
            watches: std::mem::take(&mut recording.watches),
            command: command.as_mut(),
            signal: recording.signal,
        },
        !options.quiet,
        MergedProfile::new(if options.render.fold.per_thread {
            EndedLabels::All
        } else {
            EndedLabels::Bounded
        }),
    )?;
    drop(sampler); // frees the kernel maps
    Ok((capture, command))
}

/// The perf_event backend: opens the events (on the launched child before its exec, where they
/// start by themselves), starts the command, records.
fn capture_with_perf(
    options: &RecordOptions,
    kernel_allowed: bool,
    paused: Option<PausedCommand>,
    recording: &mut Recording<'_>,
) -> Result<(Capture, Option<RunningCommand>)> {
    let targets = match (&options.target, &paused) {
        (Target::Command(_), Some(paused)) => perf::EventTargets::ChildBeforeExec(paused.pid()),
        (Target::Pids(pids), _) => perf::EventTargets::Threads(pids.clone()),
        _ => perf::EventTargets::AllProcesses,
    };
    let kernel = options.capture_kernel && kernel_allowed;
    if options.capture_kernel && !kernel_allowed {
        log::info!(
            "kernel frames left out: kernel.perf_event_paranoid forbids kernel stacks without \
             CAP_PERFMON (run as root, or set it to 1, to see them)"
        );
    }
    let copies_stacks = options.capture_user && options.unwind != UnwindMode::FramePointers;
    let config = perf::EventConfig {
        event: options.event,
        frequency_hz: options.frequency_hz,
        kernel_mode: kernel_allowed,
        kernel_callchains: kernel,
        stack_copy_bytes: copies_stacks.then_some(options.stack_copy_bytes),
        // Always: new threads of a target are part of it. --no-inherit leaves out other processes
        // in the session instead.
        inherit: true,
        ring_pages: options.ring_pages.unwrap_or_else(perf::default_ring_pages),
    };
    let mut events = perf::Events::open(&targets, &config)?;
    if kernel {
        recording.symbolizer.load_kernel_symbols();
    }
    if paused.is_none() {
        events.enable()?;
    }
    let child = paused.as_ref().map(PausedCommand::pid);
    let mut command = paused.map(PausedCommand::start).transpose()?;
    let only_pids = match (&options.target, child) {
        _ if options.follow_children => None,
        (Target::Pids(pids), _) => Some(pids.clone()),
        (_, Some(child)) => Some(vec![child]),
        _ => None,
    };
    let mut capture = perf::record(
        &mut events,
        &config,
        &mut recording.symbolizer,
        options.unwind,
        StopConditions {
            duration: options.duration,
            watches: std::mem::take(&mut recording.watches),
            command: command.as_mut(),
            signal: recording.signal,
        },
        !options.quiet,
    )?;
    drop(events);
    if let Some(pids) = only_pids {
        capture.samples.retain(|sample| pids.contains(&sample.pid));
    }
    if !options.capture_user {
        for sample in &mut capture.samples {
            sample.user_ips.clear();
        }
    }
    Ok((capture, command))
}

/// Hands memory freed on the heap back to the kernel, so peak RSS reflects what is in use.
fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// What the profile says about the capture as a whole.
fn capture_metadata(capture: &Capture, options: &RecordOptions) -> Metadata {
    let command_line: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Metadata {
        start_time: std::time::SystemTime::now()
            .checked_sub(capture.stopped_at.elapsed() + capture.recorded_for),
        duration: Some(capture.recorded_for),
        frequency_hz: Some(options.frequency_hz),
        lost_samples: capture.stats.lost() + capture.malformed_records,
        unwinding: Some(
            match options.unwind {
                UnwindMode::FramePointers => "fp",
                UnwindMode::Dwarf => "dwarf",
                UnwindMode::Auto => "auto",
            }
            .to_owned(),
        ),
        command_line: Some(command_line.join(" ")),
        has_lines: options.symbols.source_lines || options.symbols.inlined_functions,
        ..Metadata::default()
    }
}

fn default_title(target: &Target) -> String {
    match target {
        Target::Pids(pids) => {
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            format!("CPU flame graph: PID {}", pids.join(", "))
        }
        Target::AllProcesses => "CPU flame graph: all processes".to_owned(),
        Target::Command(argv) => {
            let command: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
            format!("CPU flame graph: {}", command.join(" "))
        }
    }
}

/// A launched command still running when recording stops is asked to end with SIGTERM (timeout(1)'s
/// behaviour), then killed if it does not.
fn finish_command(command: &mut RunningCommand) -> Result<ExitStatus> {
    if let Some(status) = command.try_wait()? {
        return Ok(status);
    }
    command.signal(libc::SIGTERM);
    let deadline = Instant::now() + COMMAND_TERM_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = command.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    command.signal(libc::SIGKILL);
    command.wait()
}

fn print_summary(
    capture: &Capture,
    processes: u64,
    profile: &Profile,
    render: &RenderOptions,
    post_processing: Duration,
    outputs: &[Output],
    backend: Backend,
) {
    let stats = &capture.stats;
    let lost = stats.lost() + capture.malformed_records;
    let samples = profile.total_samples();
    // Distinct stacks as the folded output shows them.
    let distinct_stacks = fold(profile, &render.fold).map_or(profile.samples.len(), |f| f.len());
    let output = outputs
        .iter()
        .map(|o| o.target.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let stopped = match capture.stop_reason {
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
        capture.unwinding.dwarf_total(),
        capture.unwinding.frame_pointer,
        capture.unwinding
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
    let _ = writeln!(
        std::io::stderr(),
        "emberprof: {samples} samples ({lost} lost, {} truncated), {} distinct stacks, {} processes, {:.1} s{stopped}, {} backend{user_stacks}; \
         output written {:.3} s after sampling stopped: {output}",
        truncated.total(),
        distinct_stacks,
        processes,
        capture.recorded_for.as_secs_f64(),
        backend.name(),
        post_processing.as_secs_f64(),
    );
    if lost > 0 {
        log::warn!(
            "{lost} samples lost: the ring buffer was full ({} streamed samples and stack copies, {} \
             malformed records); fewer distinct stacks, a lower -F or fewer targets avoid it",
            stats.lost(),
            capture.malformed_records
        );
    }
    if ended_early > 0 {
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
    if stats.get(emberprof_bpf::Stat::Streamed) > 0 {
        log::info!(
            "{} samples went through the ring buffer (stack collisions {}, stack map full {}, count map full {})",
            stats.get(emberprof_bpf::Stat::Streamed),
            stats.get(emberprof_bpf::Stat::StreamStackCollision),
            stats.get(emberprof_bpf::Stat::StreamStackMapFull),
            stats.get(emberprof_bpf::Stat::StreamCountsFull),
        );
    }
    let copied_by_auto = [
        emberprof_bpf::Stat::CopyUnjudged,
        emberprof_bpf::Stat::CopyFramelessIp,
        emberprof_bpf::Stat::CopyFramelessCaller,
        emberprof_bpf::Stat::CopyUnknownRoot,
    ];
    if copied_by_auto.iter().any(|&stat| stats.get(stat) > 0) {
        log::info!(
            "--unwind auto copied stacks: {} of processes not judged yet, {} at frameless code, {} with a \
             frameless caller, {} with a chain ending in frameless code that is no learned root; {} frame-pointer \
             walks ended at a learned root",
            stats.get(emberprof_bpf::Stat::CopyUnjudged),
            stats.get(emberprof_bpf::Stat::CopyFramelessIp),
            stats.get(emberprof_bpf::Stat::CopyFramelessCaller),
            stats.get(emberprof_bpf::Stat::CopyUnknownRoot),
            stats.get(emberprof_bpf::Stat::FpKnownRoot),
        );
    }
    let fallbacks = stats.get(emberprof_bpf::Stat::StackCopyFallback);
    if fallbacks > 0 {
        // Not lost, but possibly wrong: a frame-pointer walk through frameless code skips frames.
        log::warn!(
            "{fallbacks} user stacks needed a copy for DWARF unwinding but the ring buffer was full; \
             they were walked through frame pointers and may miss frames in frameless code"
        );
    }
    let (bpf_time, bpf_runs) = capture.bpf_run_time;
    if bpf_runs > 0 {
        log::info!(
            "BPF programs ran {bpf_runs} times for {:.6} s in all ({:.2} µs a run; charged to the \
             sampled tasks, not to emberprof)",
            bpf_time.as_secs_f64(),
            bpf_time.as_secs_f64() * 1e6 / bpf_runs as f64
        );
    }
    if capture.rotations > 0 {
        log::info!(
            "kernel maps switched and emptied {} times while recording; {} ended processes symbolized \
             and released on the way",
            capture.rotations,
            capture.released
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
    if stats.unaccounted() != 0 {
        log::warn!(
            "{} BPF invocations unaccounted for (counter bug?)",
            stats.unaccounted()
        );
    }
}
