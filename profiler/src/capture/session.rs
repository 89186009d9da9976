//! One recording: waits while the BPF program samples, drains the ring buffer as it fills (so new
//! processes are snapshotted while alive), shows a status line, and stops on the duration, a signal,
//! or the end of the targets. Then it reads the maps into plain [`StackSample`]s.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use emberprof_bpf::{comm_to_string, Record, SampleKey, STACK_ID_IN_RECORD};
use emberprof_symbolizer::Symbolizer;

use super::launch::RunningCommand;
use super::sampler::{Sampler, StackCache};
use super::stats::BpfStats;
use super::targets::ProcessWatch;
use crate::sample::StackSample;
use crate::symbols::symbolize_stacks;

/// How often the loop wakes without ring-buffer activity, to check the clock, targets and signals.
const TICK: Duration = Duration::from_millis(100);
/// How often the status line is redrawn.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// How often stacks first seen since the last round are symbolized while recording.
const SYMBOLIZE_INTERVAL: Duration = Duration::from_millis(500);

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    DurationElapsed,
    Signal(i32),
    TargetsExited,
    CommandExited,
}

/// What a recording produced.
pub struct Capture {
    pub samples: Vec<StackSample>,
    pub stats: BpfStats,
    pub recorded_for: Duration,
    pub stop_reason: StopReason,
    /// When sampling stopped; post-processing time is measured from here.
    pub stopped_at: Instant,
    /// Ring-buffer records that did not decode (version skew or a bug); counted as lost.
    pub malformed_records: u64,
}

/// A sample that came through the ring buffer, keyed with its inline stacks.
type StreamedKey = (SampleKey, Vec<u64>, Vec<u64>);

pub fn record(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    mut stop: StopConditions<'_>,
    status_line: bool,
) -> Result<Capture> {
    let status_line = status_line && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut streamed: HashMap<StreamedKey, u64> = HashMap::new();
    let mut malformed_records = 0;
    let mut last_status = started;
    let mut stack_cache = StackCache::default();
    let mut new_keys = Vec::new();
    let mut last_symbolized = started;

    let stop_reason = loop {
        wait_readable(sampler.records_fd(), next_wakeup(started, stop.duration));
        drain(sampler, symbolizer, &mut streamed, &mut new_keys, &mut malformed_records);
        if last_symbolized.elapsed() >= SYMBOLIZE_INTERVAL && !new_keys.is_empty() {
            symbolize_new_keys(sampler, symbolizer, &mut stack_cache, &mut new_keys)?;
            last_symbolized = Instant::now();
        }

        if let Some(signal) = match stop.signal.load(Ordering::Relaxed) {
            0 => None,
            signal => Some(signal as i32),
        } {
            break StopReason::Signal(signal);
        }
        if stop.duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::DurationElapsed;
        }
        if let Some(command) = stop.command.as_deref_mut() {
            if command.try_wait()?.is_some() {
                break StopReason::CommandExited;
            }
        }
        if !stop.watches.is_empty() && stop.watches.iter_mut().all(|w| w.has_exited()) {
            break StopReason::TargetsExited;
        }
        if status_line && last_status.elapsed() >= STATUS_INTERVAL {
            last_status = Instant::now();
            draw_status(started.elapsed(), stop.duration, sampler.stats().map(|s| s.kept()).unwrap_or(0));
        }
    };
    let recorded_for = started.elapsed();
    sampler.detach()?;
    let stopped_at = Instant::now();
    if status_line {
        eprint!("\r\x1b[2K");
    }
    // Records written before the detach are still in the ring buffer.
    drain(sampler, symbolizer, &mut streamed, &mut new_keys, &mut malformed_records);

    let stats = sampler.stats()?;
    let counted = sampler.read_counts()?;
    for (key, _) in &counted {
        sampler.load_stack(key.kernel_stack_id, &mut stack_cache)?;
        sampler.load_stack(key.user_stack_id, &mut stack_cache)?;
    }
    for (key, _, _) in streamed.keys() {
        sampler.load_stack(key.kernel_stack_id, &mut stack_cache)?;
        sampler.load_stack(key.user_stack_id, &mut stack_cache)?;
    }
    let samples = to_samples(&stack_cache, &counted, streamed);
    Ok(Capture { samples, stats, recorded_for, stop_reason, stopped_at, malformed_records })
}

fn next_wakeup(started: Instant, duration: Option<Duration>) -> Duration {
    match duration {
        Some(duration) => duration.saturating_sub(started.elapsed()).min(TICK),
        None => TICK,
    }
}

/// Sleeps until `fd` is readable or `timeout` passes (or a signal arrives).
fn wait_readable(fd: i32, timeout: Duration) {
    let mut poll_fd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd. EINTR (a signal) just ends the wait early.
    unsafe { libc::poll(&mut poll_fd, 1, timeout.as_millis() as i32) };
}

fn drain(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    streamed: &mut HashMap<StreamedKey, u64>,
    new_keys: &mut Vec<SampleKey>,
    malformed: &mut u64,
) {
    let mut new_processes = Vec::new();
    sampler.drain_records(|bytes| match Record::parse(bytes) {
        Some(Record::ProcessSeen(record)) => new_processes.push(record.tgid),
        Some(Record::NewKey(key)) => new_keys.push(key),
        Some(Record::Sample(record)) => {
            let kernel = inline_stack(record.key.kernel_stack_id, &record.kernel_ips, record.kernel_len);
            let user = inline_stack(record.key.user_stack_id, &record.user_ips, record.user_len);
            *streamed.entry((record.key, kernel, user)).or_default() += 1;
        }
        None => *malformed += 1,
    });
    for pid in new_processes {
        if let Err(error) = symbolizer.process_seen(pid) {
            // Usually a process that exited between its first sample and now.
            log::debug!("no snapshot of process {pid}: {error}");
        }
    }
}

/// Symbolizes the stacks of keys first counted since the last round, while their processes are alive
/// and while sampling goes on, so that little is left to do when it stops.
fn symbolize_new_keys(
    sampler: &Sampler,
    symbolizer: &mut Symbolizer,
    stack_cache: &mut StackCache,
    new_keys: &mut Vec<SampleKey>,
) -> Result<()> {
    for key in new_keys.iter() {
        sampler.load_stack(key.kernel_stack_id, stack_cache)?;
        sampler.load_stack(key.user_stack_id, stack_cache)?;
    }
    let samples: Vec<StackSample> = new_keys
        .drain(..)
        .map(|key| to_sample(&key, stack_cache.frames(key.kernel_stack_id).to_vec(), stack_cache.frames(key.user_stack_id).to_vec(), 0))
        .collect();
    // The result is dropped: the point is the symbolizer's caches.
    symbolize_stacks(&samples, symbolizer);
    Ok(())
}

fn inline_stack(id: i32, ips: &[u64], len: u32) -> Vec<u64> {
    if id == STACK_ID_IN_RECORD {
        ips[..(len as usize).min(ips.len())].to_vec()
    } else {
        Vec::new()
    }
}

fn to_samples(stacks: &StackCache, counted: &[(SampleKey, u64)], streamed: HashMap<StreamedKey, u64>) -> Vec<StackSample> {
    let stack = |id: i32, inline: Vec<u64>| if id == STACK_ID_IN_RECORD { inline } else { stacks.frames(id).to_vec() };
    let from_counts = counted.iter().map(|(key, count)| {
        to_sample(key, stacks.frames(key.kernel_stack_id).to_vec(), stacks.frames(key.user_stack_id).to_vec(), *count)
    });
    let from_stream = streamed.into_iter().map(|((key, kernel, user), count)| {
        to_sample(&key, stack(key.kernel_stack_id, kernel), stack(key.user_stack_id, user), count)
    });
    from_counts.chain(from_stream).collect()
}

fn to_sample(key: &SampleKey, kernel_ips: Vec<u64>, user_ips: Vec<u64>, count: u64) -> StackSample {
    StackSample {
        pid: key.tgid,
        tid: key.tid,
        process_name: comm_to_string(&key.process_comm),
        thread_name: comm_to_string(&key.thread_comm),
        kernel_ips,
        user_ips,
        count,
    }
}

fn draw_status(elapsed: Duration, duration: Option<Duration>, samples: u64) {
    let total = match duration {
        Some(d) => format!(" / {:.0} s", d.as_secs_f64()),
        None => String::new(),
    };
    eprint!("\r\x1b[2Krecording {:.1} s{total}, {samples} samples (Ctrl-C to stop)", elapsed.as_secs_f64());
    let _ = std::io::stderr().flush();
}
