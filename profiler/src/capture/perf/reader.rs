//! A thread that does nothing but empty the ring buffers into memory. The session thread unwinds
//! and symbolizes, and a symbolization round can take a second (the DWARF of a large library is
//! read at first use); the rings a user may lock (`kernel.perf_event_mlock_kb`, 516 KiB per CPU)
//! hold only ~30 samples with stack copies. Copying records out is fast, so this thread keeps the
//! rings empty while the session catches up. The records it holds for the session are bounded:
//! past [`MAX_PENDING_BYTES`] samples are dropped and counted as lost (side-band records are
//! always kept: the task table depends on them).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use perf_event_open_sys::bindings;

use super::ring::RingBuffer;
use crate::capture::clock::monotonic_ns;

/// Record bytes waiting for the session before samples are dropped. When the session unwinds more
/// slowly than the kernel samples (`--all` on a busy machine), a larger backlog would only delay
/// the drops and hold more memory: this is about a second of stack copies from two CPUs at 999 Hz.
const MAX_PENDING_BYTES: usize = 32 << 20;
/// How long the thread sleeps when no ring reaches its wakeup mark, so that a trickle of records
/// (a process at a low rate) still reaches the session promptly.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A record is stamped before the kernel writes it to the ring: one being written while its ring
/// was read is in the next pass although stamped just before this one began. Writing one takes
/// microseconds (a stack copy of 64 KiB at most); the margin is far above that, and below the
/// 50 ms the reader sleeps between passes when the rings are quiet.
const IN_FLIGHT_MARGIN_NS: u64 = 5_000_000;

pub struct Reader {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    passes: Receiver<Pass>,
}

/// What one pass over the rings read, and when it began (CLOCK_MONOTONIC ns, the records' clock):
/// a record not in this pass or an earlier one was written after its ring was read in this pass.
struct Pass {
    began_ns: u64,
    records: Vec<Vec<u8>>,
}

/// Records taken from the reader.
#[derive(Debug, Default)]
pub struct Taken {
    pub records: Vec<Vec<u8>>,
    /// If any pass was taken: every record stamped before this is in these records or earlier ones
    /// (when the last pass taken began, less [`IN_FLIGHT_MARGIN_NS`]). `u64::MAX` for the last
    /// records, read after the events were disabled.
    pub complete_before: Option<u64>,
}

struct Shared {
    pending_bytes: AtomicUsize,
    dropped_samples: AtomicU64,
    skipped_bytes: AtomicU64,
}

impl Reader {
    pub fn start(rings: Vec<RingBuffer>) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            pending_bytes: AtomicUsize::new(0),
            dropped_samples: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
        });
        let (sender, passes) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("emberprof-ring".into())
            .spawn({
                let stop = Arc::clone(&stop);
                let shared = Arc::clone(&shared);
                move || read_until_stopped(rings, &stop, &shared, &sender)
            })
            .context("cannot start the ring-buffer reader thread")?;
        Ok(Reader {
            thread: Some(thread),
            stop,
            shared,
            passes,
        })
    }

    /// Waits up to `timeout` for a pass over the rings, then takes what is pending, in whole passes,
    /// up to about `max_bytes`: what the session has not taken yet still counts against the
    /// backlog's bound.
    pub fn take(&self, timeout: Duration, max_bytes: usize) -> Taken {
        let Ok(first) = self.passes.recv_timeout(timeout) else {
            return Taken::default();
        };
        let mut complete_before = first.began_ns;
        let mut records = first.records;
        let mut taken: usize = records.iter().map(Vec::len).sum();
        while taken < max_bytes {
            let Ok(pass) = self.passes.try_recv() else {
                break;
            };
            taken += pass.records.iter().map(Vec::len).sum::<usize>();
            complete_before = pass.began_ns;
            records.extend(pass.records);
        }
        self.shared
            .pending_bytes
            .fetch_sub(taken, Ordering::Relaxed);
        Taken {
            records,
            complete_before: Some(complete_before.saturating_sub(IN_FLIGHT_MARGIN_NS)),
        }
    }

    /// Stops the thread after a last pass over the rings (call once the events are disabled), and
    /// returns what it read: all that is left.
    pub fn finish(&mut self) -> Result<Taken> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow!("the ring-buffer reader thread panicked"))?;
        }
        let mut last = self.take(Duration::ZERO, usize::MAX);
        last.complete_before = Some(u64::MAX);
        Ok(last)
    }

    /// Samples dropped because the session fell too far behind.
    pub fn dropped_samples(&self) -> u64 {
        self.shared.dropped_samples.load(Ordering::Relaxed)
    }

    /// Ring bytes skipped because a record header made no sense.
    pub fn skipped_bytes(&self) -> u64 {
        self.shared.skipped_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_until_stopped(
    mut rings: Vec<RingBuffer>,
    stop: &AtomicBool,
    shared: &Shared,
    sender: &Sender<Pass>,
) {
    let mut fds: Vec<libc::pollfd> = rings
        .iter()
        .map(|ring| libc::pollfd {
            fd: ring.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // Read after the last pass when asked to stop: the events are disabled by then, so
        // this pass sees every record.
        let stopping = stop.load(Ordering::Relaxed);
        let began_ns = monotonic_ns();
        let mut batch = Vec::new();
        for ring in &mut rings {
            let skipped = ring.drain(&mut batch);
            shared.skipped_bytes.fetch_add(skipped, Ordering::Relaxed);
        }
        if shared.pending_bytes.load(Ordering::Relaxed) > MAX_PENDING_BYTES {
            let before = batch.len();
            batch.retain(|record| !is_sample(record));
            shared
                .dropped_samples
                .fetch_add((before - batch.len()) as u64, Ordering::Relaxed);
        }
        // Sent even when empty: it tells the session that the records it holds back for time order
        // (see `order`) are complete.
        let bytes: usize = batch.iter().map(Vec::len).sum();
        shared.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
        let pass = Pass {
            began_ns,
            records: batch,
        };
        if sender.send(pass).is_err() {
            return; // the session is gone
        }
        if stopping {
            return;
        }
        // SAFETY: a valid array of pollfds on fds the rings keep open.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                POLL_INTERVAL.as_millis() as i32,
            )
        };
    }
}

fn is_sample(record: &[u8]) -> bool {
    record
        .get(0..4)
        .and_then(|kind| kind.try_into().ok())
        .map(u32::from_le_bytes)
        == Some(bindings::PERF_RECORD_SAMPLE)
}
