//! Stopping an attacked recording with SIGTERM and measuring how long it then takes to end: a stop
//! signal is only looked at between two iterations of the recording loop, so this is how long the
//! attack can hold the loop (and the ring buffer's reader) at once.

use std::time::{Duration, Instant};

use super::{record_attack_with, Finished};

/// When to send SIGTERM: once emberprof holds this many descriptors (it is opening the attack's
/// files) and then `after` more, or at `latest` after it started whatever it holds.
pub struct SignalWhen {
    pub descriptors: usize,
    pub after: Duration,
    pub latest: Duration,
}

/// How a recording stopped by SIGTERM ended.
pub struct Stopped {
    pub recording: Finished,
    /// From SIGTERM to emberprof's exit seen (within the 20 ms the child is polled at).
    pub after_signal: Duration,
}

/// [`super::record_attack`] sending SIGTERM to emberprof as `when` says. `marker` is an argument
/// only this recording has (its output path), by which its process is told from other tests'.
pub fn record_attack_stopped(
    name: &str,
    args: &[String],
    marker: &str,
    when: SignalWhen,
) -> Stopped {
    let started = Instant::now();
    let mut busy_since: Option<Instant> = None;
    let mut signalled: Option<Instant> = None;
    let recording = record_attack_with(name, args, None, || {
        if signalled.is_some() {
            return;
        }
        let Some(pid) = child_with_argument(marker) else {
            return;
        };
        if busy_since.is_none() && descriptors(pid) >= when.descriptors {
            busy_since = Some(Instant::now());
        }
        let due = busy_since.is_some_and(|since| since.elapsed() >= when.after)
            || started.elapsed() >= when.latest;
        if due {
            // SAFETY: signalling the emberprof child of this test.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            signalled = Some(Instant::now());
        }
    });
    let signalled = signalled.unwrap_or_else(|| {
        panic!(
            "{name}: emberprof ended before it could be signalled; stderr:\n{}",
            recording.stderr
        )
    });
    let after_signal = signalled.elapsed();
    eprintln!("{name}: emberprof ended {after_signal:.2?} after SIGTERM");
    Stopped {
        recording,
        after_signal,
    }
}

/// A child of this process whose command line has `marker` as an argument.
pub fn child_with_argument(marker: &str) -> Option<u32> {
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `PID (comm) state PPID ...`
            let (_, rest) = stat.rsplit_once(") ")?;
            if rest.split(' ').nth(1) != Some(own.as_str()) {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == marker.as_bytes())
                .then_some(pid)
        })
}

/// Descriptors process `pid` holds.
pub fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}
