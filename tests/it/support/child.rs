//! Running emberprof as a child whose attack may make it hang or take the machine's memory: under
//! an address-space limit (so a regression fails its test instead of exhausting the machine), killed
//! past a deadline, and reaped with `wait4`, which gives the peak RSS of that child alone.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a bounded child ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
    /// Bytes it wrote to stdout (counted, not kept).
    pub stdout_bytes: u64,
    /// Peak resident memory of the child (`ru_maxrss`).
    pub peak_rss_bytes: u64,
    pub wall: Duration,
}

/// Runs `command` with its address space limited to `address_space` bytes, its stdout counted and
/// its stderr kept; `tick` is called every 20 ms while it runs (to sample what the test measures).
/// Panics, with its stderr, if it still runs after `hang`.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its own rusage
pub fn run_bounded(
    command: &mut Command,
    address_space: u64,
    hang: Duration,
    mut tick: impl FnMut(),
) -> Finished {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: address_space,
                rlim_max: address_space,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The peak is the child's `ru_maxrss`, which starts at the pages it had at the fork from this
    // process: the heap that other tests freed but glibc kept resident counted as emberprof's
    // (report_memory read 76 MiB against a 72 MiB bound in a full run, 29 MiB alone). Handing it
    // back first leaves what the tests hold live.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let counter = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let pid = child.id() as i32;
    let started = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: our own child; valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (status, usage);
        }
        tick();
        if started.elapsed() > hang {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} hung: still running after {hang:?}; stderr:\n{}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stderr: reader.join().unwrap_or_default(),
        stdout_bytes: counter.join().expect("stdout").unwrap_or(0),
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
        wall: started.elapsed(),
    }
}

/// Runs emberprof with `args` in directory `dir`, asserting success: its stderr.
pub fn run_ok_in(dir: &Path, args: &[&str]) -> String {
    let output = super::emberprof()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run emberprof");
    super::expect_success(&output, &format!("emberprof {args:?}"))
}
