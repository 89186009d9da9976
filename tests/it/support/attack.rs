//! What the attack tests share: a directory and programs of the unprivileged attacker (uid 65534),
//! and a root recording that is killed if it hangs, reporting the figures the issues ask for (peak
//! RSS, the machine's `Shmem`, wall time).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use super::{emberprof, run_bounded, scratch, Finished};

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
    super::compile_c("cc", out, source, flags);
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

/// `record` as the attacker's `script` in `dir` runs: `options`, `-F hz`, and the folded output in
/// `dir` (its path is returned with the arguments).
pub fn attack_args(
    dir: &Path,
    hz: u32,
    options: &[&str],
    script: &str,
) -> (std::path::PathBuf, Vec<String>) {
    let out = dir.join("out.folded");
    let mut args = vec!["record".to_string()];
    args.extend(options.iter().map(|option| option.to_string()));
    args.extend(["-F".into(), hz.to_string(), "-o".into()]);
    args.push(out.display().to_string());
    args.push("--".into());
    args.extend(as_attacker_sh(dir, script));
    (out, args)
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

/// The highest `Shmem` (KiB) seen by the last [`record_attack`], less `before`.
pub fn shmem_peak_since(before: u64) -> u64 {
    LAST_SHMEM_PEAK
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before)
}

static LAST_SHMEM_PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs emberprof as root with `args`, killing it if it hangs (see [`run_bounded`]); prints its
/// peak RSS (from `wait4`, this child only), `Shmem` before and at its peak, and the wall time.
pub fn record_attack(name: &str, args: &[String]) -> Finished {
    record_attack_with_files(name, args, None)
}

/// [`record_attack`] with emberprof's open-file limit (RLIMIT_NOFILE, soft and hard) set to
/// `max_files`, when given: the limit a machine's attacker must exhaust, the same on every machine.
pub fn record_attack_with_files(name: &str, args: &[String], max_files: Option<u64>) -> Finished {
    record_attack_with(name, args, max_files, || {})
}

/// [`record_attack_with_files`] calling `tick` every 20 ms while emberprof runs (to act on it
/// mid-attack: see `support::stop`).
pub fn record_attack_with(
    name: &str,
    args: &[String],
    max_files: Option<u64>,
    mut tick: impl FnMut(),
) -> Finished {
    let shmem_before = shmem_kib();
    let mut shmem_peak = shmem_before;
    let mut command = emberprof();
    command.args(args);
    if let Some(files) = max_files {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: files,
                    rlim_max: files,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let recording = run_bounded(&mut command, ADDRESS_SPACE_LIMIT, HANG, || {
        shmem_peak = shmem_peak.max(shmem_kib());
        tick();
    });
    LAST_SHMEM_PEAK.store(shmem_peak, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{name}: emberprof {}, peak RSS {} MiB, Shmem {} MiB before, {} MiB at peak, wall {:.1} s",
        recording.status,
        recording.peak_rss_bytes >> 20,
        shmem_before >> 10,
        shmem_peak >> 10,
        recording.wall.as_secs_f64()
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
