//! Which capture backend runs (`--backend`): BPF when the process may load BPF programs, otherwise
//! the perf_event backend for what the kernel lets a user sample — their own processes and the
//! commands emberprof launches — and otherwise one line saying what is missing and how to get it.
//!
//! The decision is plain logic on a [`Privileges`] probe, so every branch is unit-tested without
//! changing the machine.

use anyhow::{bail, Context, Result};

use super::targets::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// BPF programs on per-CPU perf events; stacks counted in the kernel.
    Bpf,
    /// perf_event ring buffers read by emberprof; no privileges needed for one's own processes.
    Perf {
        /// Kernel mode is sampled too (root, CAP_PERFMON, or `perf_event_paranoid` ≤ 1).
        kernel: bool,
    },
}

impl Backend {
    /// As the summary line names it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Bpf => "BPF",
            Backend::Perf { .. } => "perf_event",
        }
    }
}

/// The target needs the privileges of the BPF backend. The caller completes the message with what
/// exactly is missing and how to grant it (`preflight::check_privileges`), so that advice lives in
/// one place.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct NeedsPrivileges {
    pub what: String,
}

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Bpf,
    Perf,
}

// Capability numbers from <linux/capability.h>.
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const PARANOID_PATH: &str = "/proc/sys/kernel/perf_event_paranoid";

/// What this process may do, as probed at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// Effective capability set.
    pub capabilities: u64,
    /// Real user id.
    pub uid: u32,
    /// `kernel.perf_event_paranoid`; `None` if unreadable (no perf events in this kernel).
    pub paranoid: Option<i32>,
}

impl Privileges {
    pub fn probe() -> Result<Self> {
        let capabilities = crate::preflight::effective_capabilities()
            .context("cannot read this process's capabilities")?;
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        Ok(Privileges {
            capabilities,
            uid,
            paranoid: paranoid_level(),
        })
    }

    fn has(&self, cap: u32) -> bool {
        self.capabilities & (1 << cap) != 0 || self.capabilities & (1 << CAP_SYS_ADMIN) != 0
    }

    /// May load BPF programs and attach them to perf events on every CPU.
    fn bpf(&self) -> bool {
        self.has(CAP_BPF) && self.has(CAP_PERFMON)
    }

    /// perf_event_paranoid does not apply.
    fn perfmon(&self) -> bool {
        self.has(CAP_PERFMON)
    }

    fn paranoid_at_least(&self, level: i32) -> bool {
        // Unreadable: assume the strictest, the kernel will say if it is wrong.
        self.paranoid.is_none_or(|p| p >= level)
    }
}

/// `kernel.perf_event_paranoid`, if readable.
pub fn paranoid_level() -> Option<i32> {
    std::fs::read_to_string(PARANOID_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Picks the backend for `target`, or says why none can run. `owner` gives the user owning a
/// process (`None` when it is gone: the later PID check reports that).
pub fn choose(
    choice: BackendChoice,
    target: &Target,
    privileges: &Privileges,
    owner: impl Fn(u32) -> Option<u32>,
) -> Result<Backend> {
    match choice {
        BackendChoice::Bpf => return Ok(Backend::Bpf),
        BackendChoice::Auto if privileges.bpf() => return Ok(Backend::Bpf),
        BackendChoice::Auto | BackendChoice::Perf => {}
    }
    let kernel = privileges.perfmon() || !privileges.paranoid_at_least(2);
    if privileges.perfmon() {
        return Ok(Backend::Perf { kernel });
    }
    if privileges.paranoid_at_least(3) {
        let level = privileges
            .paranoid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unreadable".into());
        bail!(
            "kernel.perf_event_paranoid is {level}, which allows no profiling without privileges: \
             run emberprof as root (sudo), or let users profile their own processes with \
             `sudo sysctl kernel.perf_event_paranoid=2`"
        );
    }
    match target {
        Target::AllProcesses if privileges.paranoid_at_least(1) => Err(NeedsPrivileges {
            what: "--all samples every process, which needs privileges (without them emberprof \
                   profiles only your own processes and the commands it launches)"
                .into(),
        }
        .into()),
        Target::Pids(pids) if !privileges.has(CAP_SYS_PTRACE) => {
            for &pid in pids {
                match owner(pid) {
                    Some(uid) if uid != privileges.uid => {
                        return Err(NeedsPrivileges {
                            what: format!(
                                "process {pid} belongs to another user (uid {uid}), which needs \
                                 privileges (without them emberprof profiles only your own processes)"
                            ),
                        }
                        .into())
                    }
                    _ => {}
                }
            }
            Ok(Backend::Perf { kernel })
        }
        _ => Ok(Backend::Perf { kernel }),
    }
}

/// The user a process runs as, as the kernel's ptrace check sees it: its real, effective and saved
/// user ids must all be the caller's, so a set-uid process counts as the other user's.
pub fn process_owner(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids: Vec<u32> = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .take(3)
        .map(|id| id.parse().ok())
        .collect::<Option<_>>()?;
    let first = *ids.first()?;
    // A mix of ids: report one that is not the real one, which is what makes access fail.
    Some(ids.iter().copied().find(|&id| id != first).unwrap_or(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = 1 << CAP_SYS_ADMIN;

    fn user(paranoid: i32) -> Privileges {
        Privileges {
            capabilities: 0,
            uid: 1000,
            paranoid: Some(paranoid),
        }
    }

    fn choose_for(target: &Target, privileges: &Privileges) -> Result<Backend> {
        choose(BackendChoice::Auto, target, privileges, |pid| {
            Some(if pid == 1 { 0 } else { 1000 })
        })
    }

    /// Root (or CAP_BPF + CAP_PERFMON) gets BPF; --backend perf as root samples the kernel too.
    #[test]
    fn privileged_gets_bpf() {
        let root = Privileges {
            capabilities: ROOT,
            uid: 0,
            paranoid: Some(4),
        };
        assert_eq!(
            choose_for(&Target::AllProcesses, &root).unwrap(),
            Backend::Bpf
        );
        let capabilities = Privileges {
            capabilities: (1 << CAP_BPF) | (1 << CAP_PERFMON),
            ..user(2)
        };
        assert_eq!(
            choose_for(&Target::Pids(vec![1]), &capabilities).unwrap(),
            Backend::Bpf
        );
        let forced = choose(BackendChoice::Perf, &Target::AllProcesses, &root, |_| None);
        assert_eq!(forced.unwrap(), Backend::Perf { kernel: true });
    }

    /// A user at paranoid 2 gets the perf backend, without kernel frames, for a command or their
    /// own PIDs; --all and another user's PID fail naming what is missing.
    #[test]
    fn user_gets_perf_for_own_processes() {
        let command = Target::Command(vec!["ls".into()]);
        assert_eq!(
            choose_for(&command, &user(2)).unwrap(),
            Backend::Perf { kernel: false }
        );
        assert_eq!(
            choose_for(&Target::Pids(vec![2]), &user(1)).unwrap(),
            Backend::Perf { kernel: true }
        );
        let needs = |target: &Target| {
            choose_for(target, &user(2))
                .unwrap_err()
                .downcast::<NeedsPrivileges>()
                .expect("a NeedsPrivileges error")
                .what
        };
        assert!(
            needs(&Target::Pids(vec![2, 1])).contains("process 1 belongs to another user (uid 0)")
        );
        assert!(needs(&Target::AllProcesses).contains("--all samples every process"));
        // paranoid -1 or 0 lets users sample every CPU.
        assert!(choose_for(&Target::AllProcesses, &user(0)).is_ok());
    }

    /// At paranoid 3 or more (Debian's default) the error names the sysctl and the value to set.
    #[test]
    fn paranoid_three_names_the_sysctl() {
        for level in [3, 4] {
            let error = choose_for(&Target::Command(vec!["ls".into()]), &user(level)).unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains(&format!("kernel.perf_event_paranoid is {level}"))
                    && message.contains("sysctl kernel.perf_event_paranoid=2"),
                "{message}"
            );
        }
    }

    /// The owner is read from /proc: this process is ours.
    #[test]
    fn owner_of_self() {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(process_owner(std::process::id()), Some(uid));
        assert_eq!(process_owner(u32::MAX), None);
    }
}
