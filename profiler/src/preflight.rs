//! Checks of the environment before anything is loaded, each failing with one line that says how to
//! fix it: privileges, kernel version, BTF, the sampling rate limit, resource limits.

use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::util::KernelVersion;
use aya::{Btf, Endianness};

const SYS_BTF: &str = "/sys/kernel/btf/vmlinux";

// Capability numbers from <linux/capability.h>.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The oldest kernel the sampler runs on: BPF ring buffers arrived in 5.8.
const MIN_KERNEL: (u8, u8) = (5, 8);
/// bpf_task_pt_regs (user registers of a sample taken in the kernel) arrived in 5.15.
const STACK_COPY_KERNEL: (u8, u8) = (5, 15);
/// From 5.11 BPF memory is charged to the memory cgroup, not to RLIMIT_MEMLOCK.
const MEMCG_ACCOUNTING_KERNEL: (u8, u8) = (5, 11);

/// Fails unless the process may load BPF programs and open perf events system-wide; warns about
/// capabilities whose absence only costs names.
pub fn check_privileges() -> Result<()> {
    let effective = effective_capabilities().context("cannot read this process's capabilities")?;
    let has = |cap: u32| effective & (1 << cap) != 0;
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap) && !has(CAP_SYS_ADMIN))
        .map(|(_, name)| name)
        .collect();
    if !missing.is_empty() {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "emberprof".into());
        // No cap_sys_admin: it is far more than profiling needs (CAP_CHECKPOINT_RESTORE opens
        // /proc/PID/map_files), and docs/security.md says to restrict the binary to a group first.
        bail!(
            "missing {}: run emberprof as root (sudo emberprof ...) or, for members of a trusted group \
             only (docs/security.md, Capabilities), `sudo chgrp profilers {exe} && sudo chmod 750 {exe} && sudo setcap \
             cap_bpf,cap_perfmon,cap_sys_ptrace,cap_syslog,cap_checkpoint_restore+ep {exe}`",
            missing.join(" and ")
        );
    }
    if !has(CAP_SYSLOG) && !has(CAP_SYS_ADMIN) {
        log::warn!("without CAP_SYSLOG, kernel addresses are hidden in /proc/kallsyms: kernel frames will be unnamed");
    }
    if !has(CAP_SYS_PTRACE) {
        log::warn!("without CAP_SYS_PTRACE, other users' processes cannot be read: their frames will be unnamed");
    }
    Ok(())
}

pub(crate) fn effective_capabilities() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?;
    Ok(u64::from_str_radix(hex.trim(), 16)?)
}

/// Checks the kernel version and, on kernels that charge BPF maps to RLIMIT_MEMLOCK, raises it.
pub fn check_kernel(copies_stacks: bool) -> Result<()> {
    let current = KernelVersion::current().context("cannot read the kernel version")?;
    let at_least = |(major, minor): (u8, u8)| current >= KernelVersion::new(major, minor, 0);
    if !at_least(MIN_KERNEL) {
        bail!(
            "kernel {current:?} is too old: emberprof needs Linux {}.{} or newer (BPF ring buffer)",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    if copies_stacks && !at_least(STACK_COPY_KERNEL) {
        bail!(
            "kernel {current:?} cannot copy user stacks for DWARF unwinding (needs {}.{}): use --unwind fp",
            STACK_COPY_KERNEL.0,
            STACK_COPY_KERNEL.1
        );
    }
    if !at_least(MEMCG_ACCOUNTING_KERNEL) {
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
            bail!(
                "cannot raise RLIMIT_MEMLOCK ({}), which this kernel charges BPF maps to: run as root, \
                 or raise it first with `ulimit -l unlimited`",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The kernel BTF given with `--btf` (parsed), or a check that the running kernel has its own (`None`).
pub fn load_btf(path: Option<&Path>) -> Result<Option<Btf>> {
    match path {
        Some(path) => Btf::parse_file(path, Endianness::default())
            .map(Some)
            .with_context(|| format!("cannot read kernel BTF from {}", path.display())),
        // Only checked here: aya's loader parses it anyway, and a second parsed copy (~15 MB) would
        // double the profiler's peak memory.
        None if !Path::new(SYS_BTF).exists() => bail!(
            "this kernel exposes no BTF ({SYS_BTF} is missing): emberprof needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y, or the kernel's BTF passed with --btf FILE"
        ),
        None => Ok(None),
    }
}

/// Fails if the kernel would refuse the sampling rate.
pub fn check_frequency(hz: u64) -> Result<()> {
    let limit_path = "/proc/sys/kernel/perf_event_max_sample_rate";
    let Ok(limit) = std::fs::read_to_string(limit_path) else {
        return Ok(());
    };
    let Ok(limit) = limit.trim().parse::<u64>() else {
        return Ok(());
    };
    if hz > limit {
        bail!(
            "--frequency {hz} is above the kernel's limit of {limit} samples per second \
             (kernel.perf_event_max_sample_rate): lower it, or raise the limit with \
             `sudo sysctl kernel.perf_event_max_sample_rate={hz}`"
        );
    }
    Ok(())
}

/// Every module of every profiled process is held open, so a busy system needs more than the
/// default 1024 descriptors. Raises the soft limit to the hard one; best effort.
pub fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
