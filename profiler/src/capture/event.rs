//! The event that drives sampling (`-e/--event`), for both backends: its perf type and config, and
//! whether this machine can count it. Hardware events need a PMU, which most virtual machines do
//! not expose; the software clocks work everywhere.

use std::path::Path;

use anyhow::{bail, Result};
use aya::programs::perf_event::{HardwareEvent, PerfEventConfig, SoftwareEvent};
use perf_event_open_sys::bindings;

/// What a sample is taken on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SampledEvent {
    /// Wall-clock time on the CPU (a kernel hrtimer); works without a PMU.
    #[default]
    CpuClock,
    /// Time the task runs, as the scheduler accounts it; works without a PMU.
    TaskClock,
    /// CPU cycles (hardware PMU).
    Cycles,
    /// Retired instructions (hardware PMU).
    Instructions,
    /// Last-level cache misses (hardware PMU).
    CacheMisses,
    /// Mispredicted branches (hardware PMU).
    BranchMisses,
}

/// Where the kernel lists the performance monitoring units it drives; the core PMU is `cpu` on x86
/// (`cpu_core`/`cpu_atom` on hybrid parts) and `armv8_*` on arm64.
const PMU_DIR: &str = "/sys/bus/event_source/devices";

impl SampledEvent {
    pub fn name(self) -> &'static str {
        match self {
            SampledEvent::CpuClock => "cpu-clock",
            SampledEvent::TaskClock => "task-clock",
            SampledEvent::Cycles => "cycles",
            SampledEvent::Instructions => "instructions",
            SampledEvent::CacheMisses => "cache-misses",
            SampledEvent::BranchMisses => "branch-misses",
        }
    }

    pub fn is_hardware(self) -> bool {
        !matches!(self, SampledEvent::CpuClock | SampledEvent::TaskClock)
    }

    /// `perf_event_attr.type` and `.config`.
    pub fn type_and_config(self) -> (u32, u64) {
        let hardware = |id: u32| (bindings::PERF_TYPE_HARDWARE, u64::from(id));
        let software = |id: u32| (bindings::PERF_TYPE_SOFTWARE, u64::from(id));
        match self {
            SampledEvent::CpuClock => software(bindings::PERF_COUNT_SW_CPU_CLOCK),
            SampledEvent::TaskClock => software(bindings::PERF_COUNT_SW_TASK_CLOCK),
            SampledEvent::Cycles => hardware(bindings::PERF_COUNT_HW_CPU_CYCLES),
            SampledEvent::Instructions => hardware(bindings::PERF_COUNT_HW_INSTRUCTIONS),
            SampledEvent::CacheMisses => hardware(bindings::PERF_COUNT_HW_CACHE_MISSES),
            SampledEvent::BranchMisses => hardware(bindings::PERF_COUNT_HW_BRANCH_MISSES),
        }
    }

    /// The same event for aya's perf-event attachment (the BPF backend).
    pub fn aya_config(self) -> PerfEventConfig {
        match self {
            SampledEvent::CpuClock => PerfEventConfig::Software(SoftwareEvent::CpuClock),
            SampledEvent::TaskClock => PerfEventConfig::Software(SoftwareEvent::TaskClock),
            SampledEvent::Cycles => PerfEventConfig::Hardware(HardwareEvent::CpuCycles),
            SampledEvent::Instructions => PerfEventConfig::Hardware(HardwareEvent::Instructions),
            SampledEvent::CacheMisses => PerfEventConfig::Hardware(HardwareEvent::CacheMisses),
            SampledEvent::BranchMisses => PerfEventConfig::Hardware(HardwareEvent::BranchMisses),
        }
    }

    /// Fails with one line if this machine has no PMU for a hardware event.
    pub fn check_available(self) -> Result<()> {
        if self.is_hardware() && !has_hardware_pmu(Path::new(PMU_DIR)) {
            bail!("{}", no_pmu_message(self));
        }
        Ok(())
    }
}

/// Also used when opening the event fails with ENOENT/EOPNOTSUPP, the kernel's way of saying the same.
pub fn no_pmu_message(event: SampledEvent) -> String {
    format!(
        "cannot sample on {}: this machine has no hardware PMU (performance counters; most virtual \
         machines have none): use -e cpu-clock",
        event.name()
    )
}

/// Whether a core PMU is registered. Other event sources (software, tracepoint, msr, uncore PMUs)
/// cannot count a task's cycles.
fn has_hardware_pmu(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name == "cpu" || name.starts_with("cpu_") || name.starts_with("armv")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory with only software sources has no PMU; `cpu` or a hybrid core makes one.
    #[test]
    fn detects_core_pmu() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["software", "tracepoint", "breakpoint", "msr", "uprobe"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert!(!has_hardware_pmu(dir.path()));
        std::fs::create_dir(dir.path().join("cpu_core")).unwrap();
        assert!(has_hardware_pmu(dir.path()));
        assert!(!has_hardware_pmu(&dir.path().join("missing")));
    }

    /// The software clocks are always available; the message names the event and the way out.
    #[test]
    fn software_events_need_no_pmu() {
        assert!(SampledEvent::CpuClock.check_available().is_ok());
        assert!(SampledEvent::TaskClock.check_available().is_ok());
        let message = no_pmu_message(SampledEvent::Cycles);
        assert!(message.contains("no hardware PMU") && message.contains("-e cpu-clock"));
    }
}
