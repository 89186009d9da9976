//! Signals that end a recording. SIGINT (Ctrl-C), SIGTERM and SIGHUP (a dropped SSH session) ask the
//! recording to stop: the loop notices the flag, and the output is written as after `-d`. A second
//! SIGINT while that is under way means "stop now": the temporary output file is removed and the
//! process exits at once, from the signal handler, since the main thread may be busy for a while.
//!
//! The handler only does async-signal-safe work: atomics, `kill`, `unlinkat`, `write` and `_exit`.
//! The BPF programs, links and perf events go with the file descriptors when the process exits.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};

/// The signals that stop a recording.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Exit status of an aborted run: 128 + SIGINT, as a shell reports a process killed by Ctrl-C.
const ABORT_STATUS: i32 = 128 + libc::SIGINT;

/// The temporary output files to remove if the run is aborted: each a directory descriptor (kept
/// open by its `OutputFile` until the process ends) and the name in it. Set once, before sampling
/// starts, and only read by the signal handler (an atomic load, safe in a handler).
static REMOVE_ON_ABORT: OnceLock<Vec<(RawFd, CString)>> = OnceLock::new();

/// Stop signals received so far: output that waits on a reader (a FIFO, a terminal) gives up once
/// one more arrives while it waits, so a reader that never reads cannot hold emberprof past it.
static STOP_SIGNALS_SEEN: AtomicUsize = AtomicUsize::new(0);

/// A launched command to end with SIGTERM if the run is aborted (0: none), as it would be at the
/// end of a normal run.
static TERMINATE_ON_ABORT: AtomicI32 = AtomicI32::new(0);

/// Installs the handlers; the returned flag holds the first stop signal's number, 0 until then.
pub fn install() -> Result<Arc<AtomicUsize>> {
    let flag = Arc::new(AtomicUsize::new(0));
    for signal in STOP_SIGNALS {
        let flag = Arc::clone(&flag);
        let handler = move || {
            STOP_SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst);
            let earlier = flag.swap(signal as usize, Ordering::SeqCst);
            if earlier != 0 && signal == libc::SIGINT {
                abort_now();
            }
            if earlier != 0 {
                // Keep the first signal as the reason the recording stopped.
                flag.store(earlier, Ordering::SeqCst);
            }
        };
        // SAFETY: the handler is async-signal-safe: atomics, and abort_now's kill/unlink/write/_exit.
        unsafe { signal_hook::low_level::register(signal, handler) }
            .context("cannot install the signal handler")?;
    }
    Ok(flag)
}

/// How many stop signals have arrived since the handlers were installed.
pub fn stop_signals_seen() -> usize {
    STOP_SIGNALS_SEEN.load(Ordering::SeqCst)
}

/// Names the temporary files a second Ctrl-C removes. Later calls are ignored (one set of outputs
/// per run).
pub fn remove_on_abort(files: Vec<(RawFd, CString)>) {
    let _ = REMOVE_ON_ABORT.set(files);
}

/// Names the launched command a second Ctrl-C sends SIGTERM to (0: none any more).
pub fn terminate_on_abort(pid: u32) {
    TERMINATE_ON_ABORT.store(pid as i32, Ordering::SeqCst);
}

fn abort_now() -> ! {
    let command = TERMINATE_ON_ABORT.load(Ordering::SeqCst);
    if command > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(command, libc::SIGTERM) };
    }
    for (directory, name) in REMOVE_ON_ABORT.get().into_iter().flatten() {
        // SAFETY: a valid C string relative to an open directory; unlinkat is async-signal-safe
        // and removes the name without following it.
        unsafe { libc::unlinkat(*directory, name.as_ptr(), 0) };
    }
    let message = b"emberprof: interrupted twice: stopped without writing the output\n";
    // SAFETY: write and _exit are async-signal-safe; the buffer is valid for its length.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::_exit(ABORT_STATUS)
    }
}
