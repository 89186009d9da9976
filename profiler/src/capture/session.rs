//! One recording, whichever the source: waits while the kernel samples, hands what the source
//! decodes to the collector as it arrives (so new processes are snapshotted while alive),
//! symbolizes new stacks ahead, checkpoints every few seconds so what is held stays bounded,
//! shows a status line, and stops on the duration, a signal, or the end of the targets.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::collector::{Collector, CollectorReport};
use super::launch::RunningCommand;
use super::source::{Feedback, Source, SourceReport};
use super::targets::ProcessWatch;
use crate::profile::MergedProfile;

/// How often the loop wakes without ring-buffer activity, to check the clock, targets and signals.
const TICK: Duration = Duration::from_millis(100);
/// How soon a snapshot taken while the dynamic loader ran is retaken.
const LOADER_RETRY: Duration = Duration::from_millis(2);
/// How often the status line is redrawn.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often stacks first seen since the last round are symbolized while recording.
const SYMBOLIZE_INTERVAL: Duration = Duration::from_millis(500);
/// Stacks symbolized between two reads of the source: a round can take tens of milliseconds (the
/// first one loads kallsyms and the DWARF of every module), while stack copies keep arriving.
const SYMBOLIZE_BATCH: usize = 64;

/// The nice value of the recording thread once sampling has stopped (see [`hurry`]): -10 gives it
/// about 9 times the share of a nice-0 process, short of the -20 that would starve the machine
/// for as long as the output takes.
const AFTER_STOP_NICE: libc::c_int = -10;

/// What ends a recording besides a signal.
pub struct StopConditions<'a> {
    pub duration: Option<Duration>,
    /// Stop when all of these have exited (`--pid`).
    pub watches: Vec<ProcessWatch>,
    /// Stop when this command exits (launch mode).
    pub command: Option<&'a mut RunningCommand>,
    /// Set to a signal number by the signal handler.
    pub signal: &'a AtomicUsize,
}

impl StopConditions<'_> {
    /// Why the recording that started at `started` should stop now, if it should: a signal, the
    /// duration, the launched command's exit, or the end of every watched process.
    fn reached(&mut self, started: Instant) -> Result<Option<StopReason>> {
        match self.signal.load(Ordering::Relaxed) {
            0 => {}
            signal => return Ok(Some(StopReason::Signal(signal as i32))),
        }
        if self.duration.is_some_and(|d| started.elapsed() >= d) {
            return Ok(Some(StopReason::DurationElapsed));
        }
        if let Some(command) = self.command.as_deref_mut() {
            if command.try_wait()?.is_some() {
                return Ok(Some(StopReason::CommandExited));
            }
        }
        if !self.watches.is_empty() && self.watches.iter_mut().all(|w| w.has_exited()) {
            return Ok(Some(StopReason::TargetsExited));
        }
        Ok(None)
    }

    /// How long the loop may sleep before it must look at the clock again.
    fn next_wakeup(&self, started: Instant) -> Duration {
        match self.duration {
            Some(duration) => duration.saturating_sub(started.elapsed()).min(TICK),
            None => TICK,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    DurationElapsed,
    Signal(i32),
    TargetsExited,
    CommandExited,
}

/// What a recording produced.
pub struct Capture {
    /// Every sample, symbolized and built.
    pub profile: MergedProfile,
    pub source: SourceReport,
    pub collector: CollectorReport,
    pub recorded_for: Duration,
    pub stop_reason: StopReason,
    /// When sampling stopped; post-processing time is measured from here.
    pub stopped_at: Instant,
}

/// Records until a stop condition, then hands everything to the collector. The source (its kernel
/// maps, ring buffers and event descriptors) is dropped before the collector builds what is left,
/// so that nothing of the kernel side outlives the sampling while the profile is built.
pub fn record(
    mut source: Box<dyn Source>,
    mut collector: Collector,
    mut stop: StopConditions<'_>,
    status_line: bool,
) -> Result<Capture> {
    let status_line = status_line && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_status = started;
    let mut last_symbolized = started;

    let stop_reason = loop {
        let mut wakeup = stop.next_wakeup(started);
        if collector.retake_soon() {
            wakeup = wakeup.min(LOADER_RETRY);
        }
        source.wait(wakeup);
        // Everything from here to the next wait delays the ring buffer's reader and a stop signal.
        let busy = Instant::now();
        let busy_cpu = emberprof_symbolizer::thread_cpu_time();
        collector.begin_iteration();
        read(source.as_mut(), &mut collector)?;
        if last_symbolized.elapsed() >= SYMBOLIZE_INTERVAL && collector.pending() > 0 {
            symbolize_ahead(source.as_mut(), &mut collector)?;
            last_symbolized = Instant::now();
        }
        if source.checkpoint_due() {
            let finished = collector.begin_checkpoint();
            source.checkpoint(&mut collector)?;
            let feedback = collector.end_checkpoint(finished);
            apply(source.as_mut(), feedback);
        }
        collector.end_iteration(
            busy.elapsed(),
            emberprof_symbolizer::thread_cpu_time().saturating_sub(busy_cpu),
        );
        if let Some(reason) = stop.reached(started)? {
            break reason;
        }
        if status_line && last_status.elapsed() >= STATUS_INTERVAL {
            last_status = Instant::now();
            draw_status(started.elapsed(), stop.duration, source.samples());
        }
    };
    let recorded_for = started.elapsed();
    source.stop()?;
    let stopped_at = Instant::now();
    hurry();
    if status_line {
        // stderr may be gone (a closed terminal after SIGHUP): never a panic for that.
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    source.finish(&mut collector)?;
    let report = source.report()?;
    drop(source);
    let (profile, collector) = collector.finish();
    Ok(Capture {
        profile,
        source: report,
        collector,
        recorded_for,
        stop_reason,
        stopped_at,
    })
}

/// Once sampling has stopped, what is left (the last samples named and built, the outputs written)
/// is a fixed amount of work that someone waits for, and it no longer measures anything. On a
/// machine busy with a cargo build (load 5 on 2 cores), the recording thread at the usual priority
/// got a fifth of a core: 0.8 s of CPU took 4.7 s from the stop to the output. A higher priority
/// takes no more CPU from the others in all, it only does this work first. Lowering the nice value
/// needs CAP_SYS_NICE (root has it, a `setcap` install may not): without it the work goes on at
/// the usual priority.
/// A nice value the user chose (`nice -n 19 emberprof ...`: stay in the background) is kept.
fn hurry() {
    // SAFETY: getpriority has no memory-safety preconditions; -1 is also a valid nice value, so
    // errno tells an error apart.
    let current = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    if current != 0 || std::io::Error::last_os_error().raw_os_error() != Some(0) {
        log::debug!("output made at the priority emberprof was given (nice {current})");
        return;
    }
    // SAFETY: setpriority has no memory-safety preconditions; on Linux, PRIO_PROCESS 0 is the
    // calling thread (nice values are per thread), the one that makes the outputs.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, AFTER_STOP_NICE) } != 0 {
        log::debug!(
            "output made at the usual priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Hands what the source has to the collector, and what the collector learned back to the source.
fn read(source: &mut dyn Source, collector: &mut Collector) -> Result<()> {
    source.read(collector)?;
    let feedback = collector.after_read();
    apply(source, feedback);
    Ok(())
}

/// A source that cannot take feedback still samples, only less cheaply: never fatal.
fn apply(source: &mut dyn Source, feedback: Vec<Feedback>) {
    for feedback in feedback {
        if let Err(error) = source.apply(feedback) {
            log::warn!("{error:#}");
        }
    }
}

/// Symbolizes the stacks pending when the round started, in batches with the source read in
/// between; stacks that arrive meanwhile wait for the next round.
fn symbolize_ahead(source: &mut dyn Source, collector: &mut Collector) -> Result<()> {
    let mut left = collector.pending();
    while left > 0 {
        let taken = collector.symbolize_pending(left.min(SYMBOLIZE_BATCH));
        if taken == 0 {
            break;
        }
        left = left.saturating_sub(taken);
        read(source, collector)?;
    }
    Ok(())
}

/// The live status line on stderr (a terminal).
fn draw_status(elapsed: Duration, duration: Option<Duration>, samples: u64) {
    let total = match duration {
        Some(d) => format!(" / {:.0} s", d.as_secs_f64()),
        None => String::new(),
    };
    let _ = write!(
        std::io::stderr(),
        "\r\x1b[2Krecording {:.1} s{total}, {samples} samples (Ctrl-C to stop)",
        elapsed.as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}
