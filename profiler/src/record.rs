//! `emberprof record`: checks, capture, output, summary — the pipeline in order.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use emberprof_symbolizer::{Symbolizer, SymbolizerOptions};

use crate::capture::backend::{self, BackendChoice, NeedsPrivileges, Privileges};
use crate::capture::bpf::MapSizes;
use crate::capture::setup::{self, Prepared, SourceOptions};
use crate::capture::{
    self, Capture, Collector, ExitStatus, PausedCommand, ProcessWatch, RunAs, RunningCommand,
    SampledEvent, StopConditions, StopReason, Target, UnwindMode,
};
use crate::memory::release_free_memory;
use crate::output::{write_outputs, Output, OutputFile, RenderOptions};
use crate::profile::{EndedLabels, Metadata};
use crate::{interrupt, preflight, summary};

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
    /// `--max-profile-size`: the most bytes (estimated) the profile holds while recording.
    pub max_profile_bytes: u64,
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
    /// Copy more (up to `MAX_STACK_COPY`) for a process whose stacks end at the edge of the copy.
    /// Default true; false when the user chose the size.
    pub grow_stack_copy: bool,
    /// Sizes of the kernel maps. The ring buffer's default: [`crate::capture::bpf::ring_buffer_bytes`].
    pub map_sizes: MapSizes,
    /// No status line and no summary.
    pub quiet: bool,
    /// Which capture backend. Default auto: BPF with the privileges for it, perf_event otherwise.
    pub backend: BackendChoice,
    /// What samples are taken on. Default cpu-clock.
    pub event: SampledEvent,
    /// Data pages of each CPU's ring buffer (perf backend). `None`: [`perf::default_ring_pages`].
    pub ring_pages: Option<usize>,
    /// `--off-cpu`: also count time switched out, intervals shorter than this left out. Default
    /// `None`: CPU time only.
    pub off_cpu: Option<Duration>,
    /// `--off-cpu-sample`: the BPF backend follows one switch-out in this many (at random) and
    /// counts its time this many times (1: every one). Default 0: adaptive, this many set from
    /// the switch-out rate while recording.
    pub off_cpu_sample: u32,
}

/// How long a launched command gets to exit after SIGTERM before it is killed.
const COMMAND_TERM_GRACE: Duration = Duration::from_secs(2);

pub fn run(options: RecordOptions) -> Result<ExitCode> {
    let prepared = check(&options)?;
    let backend = prepared.backend();
    let watches = match &options.target {
        Target::Pids(pids) => pids
            .iter()
            .map(|&pid| ProcessWatch::open(pid))
            .collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
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

    // Forked before anything starts threads; held before exec until sampling is attached.
    let paused = match &options.target {
        Target::Command(argv) => Some(PausedCommand::spawn(argv, &options.run_as)?),
        _ => None,
    };
    if let Some(paused) = &paused {
        interrupt::terminate_on_abort(paused.pid());
    }
    let launched_pid = paused.as_ref().map(PausedCommand::pid);
    let mut symbolizer = Symbolizer::new(options.symbols).context("cannot set up symbolization")?;
    let (source, mut command) =
        setup::start(prepared, &source_options(&options), paused, &mut symbolizer)?;
    let labels = if options.render.fold.per_thread {
        EndedLabels::All
    } else {
        EndedLabels::Bounded
    };
    let off_cpu_stacks = source.off_cpu_stacks();
    let collector = Collector::new(
        symbolizer,
        options.unwind,
        source.wants_feedback(),
        labels,
        launched_pid,
    )
    .off_cpu_on_last_sample(options.off_cpu.is_some() && !off_cpu_stacks)
    .profile_within(options.max_profile_bytes);
    let capture = capture::record(
        source,
        collector,
        StopConditions {
            duration: options.duration,
            watches,
            command: command.as_mut(),
            signal: &signal,
        },
        !options.quiet,
    )?;
    // The source (kernel maps, ring buffers) went before the last build, the symbolizer with the
    // collector after it: its parsed debug info (tens of MB) does not add to what the outputs take.
    release_free_memory();
    log::debug!(
        "capture read, symbolized and built {:?} after stop",
        capture.stopped_at.elapsed()
    );
    let Capture {
        profile,
        source: source_report,
        collector: collector_report,
        recorded_for,
        stop_reason,
        stopped_at,
    } = capture;
    let metadata = capture_metadata(&options, recorded_for, stopped_at, &source_report);
    let mut profile = profile.finish(metadata);
    if options.off_cpu.is_some() {
        crate::profile::values::add_off_cpu_type(&mut profile);
    }
    let processes = profile
        .samples
        .iter()
        .filter_map(|sample| sample.pid)
        .collect::<HashSet<u32>>()
        .len() as u64
        + profile.metadata.unlabelled_processes;
    let mut render = options.render.clone();
    if render.svg.title.is_empty() {
        render.svg.title = default_title(&options.target);
        if options.off_cpu.is_some() {
            render.svg.title = wall_clock_title(render.svg.title);
        }
    }
    let profile = write_outputs(profile, outputs, &render)?;
    let post_processing = stopped_at.elapsed();

    // The command is signalled and reaped below: its PID must not be signalled after that.
    interrupt::terminate_on_abort(0);
    let command_status = command.as_mut().map(finish_command).transpose()?;
    if !options.quiet {
        summary::print(&summary::Summary {
            profile: &profile,
            render: &render,
            outputs: &options.outputs,
            backend,
            off_cpu_stacks,
            processes,
            recorded_for,
            stop_reason,
            post_processing,
            source: &source_report,
            collector: &collector_report,
            max_profile_bytes: options.max_profile_bytes,
        });
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
        Some(end) => end.exit_code(stop_reason),
        None => ExitCode::SUCCESS,
    })
}

/// Everything that can be checked before sampling starts: the backend and its privileges, the
/// kernel, the event, the frequency, and the BTF (read now, so that a missing one fails at once).
fn check(options: &RecordOptions) -> Result<Prepared> {
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
    if backend == backend::Backend::Bpf {
        preflight::check_privileges()?;
        preflight::check_kernel(
            options.unwind != UnwindMode::FramePointers && options.capture_user,
        )?;
    }
    preflight::check_frequency(options.frequency_hz)?;
    Ok(match backend {
        backend::Backend::Bpf => Prepared::Bpf(preflight::load_btf(options.btf_path.as_deref())?),
        backend::Backend::Perf { kernel } => Prepared::Perf { kernel },
    })
}

fn source_options(options: &RecordOptions) -> SourceOptions<'_> {
    SourceOptions {
        target: &options.target,
        frequency_hz: options.frequency_hz,
        event: options.event,
        capture_kernel: options.capture_kernel,
        capture_user: options.capture_user,
        follow_children: options.follow_children,
        unwind: options.unwind,
        stack_copy_bytes: options.stack_copy_bytes,
        grow_stack_copy: options.grow_stack_copy,
        map_sizes: options.map_sizes,
        ring_pages: options.ring_pages,
        off_cpu: options.off_cpu,
        off_cpu_sample: options.off_cpu_sample,
    }
}

/// What the profile says about the capture as a whole.
fn capture_metadata(
    options: &RecordOptions,
    recorded_for: Duration,
    stopped_at: Instant,
    source: &capture::SourceReport,
) -> Metadata {
    let command_line: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Metadata {
        start_time: std::time::SystemTime::now().checked_sub(stopped_at.elapsed() + recorded_for),
        duration: Some(recorded_for),
        frequency_hz: Some(options.frequency_hz),
        lost_samples: source.lost + source.malformed,
        unwinding: Some(options.unwind.name().to_owned()),
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

/// The default title of a wall-clock (`--off-cpu`) capture.
fn wall_clock_title(cpu_title: String) -> String {
    cpu_title.replacen("CPU flame graph", "Wall-clock flame graph", 1)
}

/// How a launched command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommandEnd {
    /// By itself: its status is emberprof's.
    ByItself(ExitStatus),
    /// Asked to end at the end of the recording (`-d`, a stop signal).
    Stopped(ExitStatus),
}

impl CommandEnd {
    /// emberprof's exit status: the command's own when it ended by itself (`emberprof record --
    /// make && ...` works as `make && ...`); success when `-d` ended it, as the recording asked
    /// for was made; the command's status when a signal stopped the run (130 after Ctrl-C, as a
    /// shell reports).
    fn exit_code(self, stop_reason: StopReason) -> ExitCode {
        match self {
            CommandEnd::ByItself(status) => ExitCode::from(status.shell_code()),
            CommandEnd::Stopped(_) if stop_reason == StopReason::DurationElapsed => {
                ExitCode::SUCCESS
            }
            CommandEnd::Stopped(status) => ExitCode::from(status.shell_code()),
        }
    }
}

impl std::fmt::Display for CommandEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandEnd::ByItself(status) => write!(f, "{status}"),
            CommandEnd::Stopped(status) => {
                write!(
                    f,
                    "was still running at the end of the recording and {status}"
                )
            }
        }
    }
}

/// A launched command still running when recording stops is asked to end with SIGTERM (timeout(1)'s
/// behaviour), then killed if it does not.
fn finish_command(command: &mut RunningCommand) -> Result<CommandEnd> {
    if let Some(status) = command.try_wait()? {
        return Ok(CommandEnd::ByItself(status));
    }
    command.signal(libc::SIGTERM);
    let deadline = Instant::now() + COMMAND_TERM_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = command.try_wait()? {
            return Ok(CommandEnd::Stopped(status));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    command.signal(libc::SIGKILL);
    Ok(CommandEnd::Stopped(command.wait()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `-d` ending a launched command is a successful recording; a command that ended by itself
    /// passes its status through; a stop signal passes the command's status through.
    #[test]
    fn exit_code_follows_how_the_command_ended() {
        let terminated = ExitStatus::Signaled(libc::SIGTERM);
        let cases = [
            (
                CommandEnd::ByItself(ExitStatus::Exited(7)),
                StopReason::CommandExited,
                7,
            ),
            (
                CommandEnd::ByItself(ExitStatus::Exited(0)),
                StopReason::DurationElapsed,
                0,
            ),
            (
                CommandEnd::Stopped(terminated),
                StopReason::DurationElapsed,
                0,
            ),
            (
                CommandEnd::Stopped(terminated),
                StopReason::Signal(libc::SIGTERM),
                143,
            ),
            (
                CommandEnd::Stopped(ExitStatus::Exited(3)),
                StopReason::Signal(libc::SIGINT),
                3,
            ),
        ];
        for (end, reason, want) in cases {
            assert_eq!(
                end.exit_code(reason),
                ExitCode::from(want),
                "{end:?} {reason:?}"
            );
        }
    }
}
