//! What the attack tests share: a directory and programs of the unprivileged attacker (uid 65534),
//! and a root recording that is killed if it hangs, reporting the figures the issues ask for (peak
//! RSS, the machine's `Shmem`, wall time).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{emberprof, scratch};

/// The unprivileged attacker (`nobody` on Debian).
pub const ATTACKER: u32 = super::NOBODY;
/// A recording that has not ended this long after it started is hung.
const HANG: Duration = Duration::from_secs(120);
/// Address space granted to emberprof (RLIMIT_AS): far above a normal recording (BPF maps, module
/// copies), far below what the attacks made it take.
const ADDRESS_SPACE_LIMIT: u64 = 3 << 30;

/// A directory the attacker owns, on the file system of the default temporary directory.
pub fn attacker_dir() -> tempfile::TempDir {
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(dir.path(), Some(ATTACKER), Some(ATTACKER)).expect("chown");
    dir
}

/// Compiles C `source` with `cc` into `out` (root-owned: the attacker copies it where needed).
pub fn compile(out: &Path, source: &str, flags: &[&str]) {
    let source_path = out.with_extension("c");
    std::fs::write(&source_path, source).expect("write source");
    let output = Command::new("cc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(out)
        .arg(&source_path)
        .args(flags)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc: {e} (apt-get install gcc)"));
    assert!(
        output.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `sh -c script` as the attacker, in `dir`: the arguments after emberprof's `--`.
pub fn as_attacker_sh(dir: &Path, script: &str) -> Vec<String> {
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "sh",
        "-c",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("cd {} && {script}", dir.display())])
    .collect()
}

/// `Shmem` of /proc/meminfo, in KiB.
pub fn shmem_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("Shmem:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Shmem in /proc/meminfo")
}

/// How a recording ended, with the figures the issue asks for.
pub struct Recording {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    pub peak_rss_bytes: u64,
}

/// The highest `Shmem` (KiB) seen by the last [`record_attack`], less `before`.
pub fn shmem_peak_since(before: u64) -> u64 {
    LAST_SHMEM_PEAK
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before)
}

static LAST_SHMEM_PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs emberprof as root with `args`, killing it if it hangs; prints its peak RSS (from `wait4`,
/// this child only), `Shmem` before and after, and the wall time.
pub fn record_attack(name: &str, args: &[String]) -> Recording {
    record_attack_with_files(name, args, None)
}

/// [`record_attack`] with emberprof's open-file limit (RLIMIT_NOFILE, soft and hard) set to
/// `max_files`, when given: the limit a machine's attacker must exhaust, the same on every machine.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its own rusage
pub fn record_attack_with_files(name: &str, args: &[String], max_files: Option<u64>) -> Recording {
    let shmem_before = shmem_kib();
    let mut command = emberprof();
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // An unbounded regression fails its test instead of taking the machine's memory.
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(files) = max_files {
                let limit = libc::rlimit {
                    rlim_cur: files,
                    rlim_max: files,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("run emberprof");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let pid = child.id() as i32;
    let started = Instant::now();
    let mut shmem_peak = shmem_before;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: our own child; valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (status, usage);
        }
        shmem_peak = shmem_peak.max(shmem_kib());
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "emberprof {args:?} hung: still running after {HANG:?}; stderr:\n{}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    LAST_SHMEM_PEAK.store(shmem_peak, std::sync::atomic::Ordering::Relaxed);
    let recording = Recording {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stderr: reader.join().unwrap_or_default(),
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
    };
    eprintln!(
        "{name}: emberprof {}, peak RSS {} MiB, Shmem {} MiB before, {} MiB at peak, wall {:.1} s",
        recording.status,
        recording.peak_rss_bytes >> 20,
        shmem_before >> 10,
        shmem_peak >> 10,
        started.elapsed().as_secs_f64()
    );
    assert!(
        recording.status.success() && !recording.stderr.contains("panicked"),
        "emberprof ended with {}; stderr:\n{}",
        recording.status,
        recording.stderr
    );
    recording
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Workloads started as the attacker, killed (and their perf maps removed) when dropped.
pub struct Attackers(pub Vec<std::process::Child>);

impl Drop for Attackers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", child.id()));
        }
    }
}
