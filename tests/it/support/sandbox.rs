//! Running things as an unprivileged user: uid/gid 65534 without groups or capabilities (through
//! util-linux's `setpriv`), a directory that user can reach with copies of the binaries, and
//! `kernel.perf_event_paranoid` set for one test.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The unprivileged user (`nobody` on Debian): the attacker in the attack tests, the normal user in
/// the perf-backend tests.
pub const NOBODY: u32 = 65534;

/// A command that runs `program` as [`NOBODY`], with no groups and no capabilities. setpriv execs
/// the program, so the child's PID is the program's.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(program)
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID");
    command
}

/// Gives `path` to [`NOBODY`].
pub fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
}

/// A scratch directory [`NOBODY`] can enter (the default temporary directory may be root-only).
pub fn reachable_scratch() -> tempfile::TempDir {
    let dir = super::scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod scratch directory");
    dir
}

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Sets `kernel.perf_event_paranoid` for as long as it lives, then puts the old value back. Holds
/// an exclusive lock on a file, so that test processes running at once (another test binary, a
/// second `cargo test`) never change it under each other.
pub struct Paranoid {
    original: String,
    _lock: File,
}

impl Paranoid {
    pub fn set(level: i32) -> Paranoid {
        let lock = File::create(std::env::temp_dir().join("emberprof-perf-paranoid.lock"))
            .expect("create the paranoid lock file");
        // SAFETY: flock on an fd we own; blocks until the other holder is done.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) },
            0,
            "flock"
        );
        let original = std::fs::read_to_string(PARANOID)
            .unwrap_or_else(|e| panic!("cannot read {PARANOID}: {e}"));
        std::fs::write(PARANOID, level.to_string())
            .unwrap_or_else(|e| panic!("cannot set {PARANOID} (needs root): {e}"));
        Paranoid {
            original,
            _lock: lock,
        }
    }
}

impl Drop for Paranoid {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(PARANOID, self.original.trim()) {
            eprintln!(
                "cannot restore {PARANOID} to {}: {error}",
                self.original.trim()
            );
        }
    }
}

/// A directory [`NOBODY`] can use: the emberprof binary and the examples, copied in (the build
/// tree may sit under a directory that user cannot enter, /root in CI), and room for output.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new(examples: &[&str]) -> Sandbox {
        let dir = reachable_scratch();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir bin");
        let copy = |from: &Path, name: &str| {
            let to = bin.join(name);
            std::fs::copy(from, &to)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
                .expect("chmod binary");
        };
        copy(Path::new(env!("CARGO_BIN_EXE_emberprof")), "emberprof");
        for name in examples {
            copy(&emberprof_examples::path(name), name);
        }
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir out");
        give_to_nobody(&out);
        Sandbox { dir }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.path().join("bin").join(name)
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// `program` run as [`NOBODY`], in the output directory.
    pub fn unprivileged(&self, program: &Path) -> Command {
        let mut command = as_nobody(program);
        command.current_dir(self.dir.path().join("out"));
        command
    }

    /// The sandbox's emberprof run as [`NOBODY`] with `args`.
    pub fn emberprof(&self, args: &[&str]) -> Output {
        self.unprivileged(&self.bin("emberprof"))
            .args(args)
            .output()
            .expect("run setpriv (util-linux)")
    }
}
