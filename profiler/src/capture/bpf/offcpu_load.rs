//! How the off-CPU program is set up at load: its configuration and map sizes. Apart from
//! `offcpu` (which reads its maps from a loaded `Sampler`) so that the sampler, which loads it,
//! depends on this one way.

use std::time::Duration;

use aya::EbpfLoader;
use emberprof_bpf::{names, OffCpuConfig};

/// Threads switched out at once that the kernel can time: far more than a machine runs.
const THREADS: u32 = 16_384;

/// The off-CPU program's configuration: `off_cpu_min` is `--off-cpu-min` (None without
/// `--off-cpu`), `sample_every` `--off-cpu-sample` (0: adaptive).
pub(super) fn settings(off_cpu_min: Option<Duration>, sample_every: u32) -> OffCpuConfig {
    OffCpuConfig {
        min_ns: off_cpu_min.map_or(0, |min| u64::try_from(min.as_nanos()).unwrap_or(u64::MAX)),
        self_tgid: std::process::id(),
        sample_every,
    }
}

/// The object to load and, with `--off-cpu` (`on`), the off-CPU program's configuration and map
/// sizes on `loader` (its stack and count maps as large as the sampler's, `stacks`, `counts`).
/// Without `--off-cpu` the object has no off-CPU program or maps at all
/// ([`emberprof_bpf::PROFILE_OBJECT`]).
pub(super) fn load_settings<'a>(
    loader: &mut EbpfLoader<'a>,
    settings: &'a OffCpuConfig,
    on: bool,
    (stacks, counts): (u32, u32),
) -> &'static [u8] {
    if !on {
        return emberprof_bpf::PROFILE_OBJECT;
    }
    loader
        // `offcpu_tasks` is task-local storage, which aya creates but has no type for (userspace
        // never reads it).
        .allow_unsupported_maps()
        .override_global(names::OFF_CPU_CONFIG_GLOBAL, settings, true)
        .map_max_entries(names::OFF_CPU_THREADS, THREADS)
        .map_max_entries(names::OFF_CPU_STACKS, stacks)
        .map_max_entries(names::OFF_CPU_COUNTS[0], counts)
        .map_max_entries(names::OFF_CPU_COUNTS[1], counts);
    emberprof_bpf::PROFILE_OFF_CPU_OBJECT
}
