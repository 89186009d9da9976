//! Loading the BPF object, attaching it, and reading what it collected. The only module that talks to
//! aya.

use std::collections::HashMap as StdHashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::perf_event::{PerfEventLinkId, PerfEventScope, SamplePolicy};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::{BtfTracePoint, PerfEvent, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use emberprof_bpf::{
    names, Config, FramelessRanges, ModuleExceptions, PythonProcess, PythonStack, PythonStat,
    RootKey, SampleKey, Stat, MAX_MODULE_EXCEPTIONS, MAX_PLAN_MAPPINGS, MODULE_FRAMELESS_WHOLE,
    STACK_ID_NONE,
};

use emberprof_symbolizer::{FramelessMapping, ModuleId};

use super::stats::BpfStats;
use crate::capture::{SampledEvent, UnwindMode};

/// Map sizes, fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    /// Distinct stacks (kernel and user together) each generation of the stack map holds before
    /// samples are streamed.
    pub stacks: u32,
    /// Distinct (thread, stack pair) keys each generation of the count map holds before samples are
    /// streamed.
    pub counts: u32,
    /// Ring buffer bytes (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// Target processes, including followed children.
    pub targets: u32,
    /// Distinct Python stacks each generation of `python_stacks` holds (3 KiB each, allocated as
    /// used) before samples keep only their native frames (counted).
    pub python_stacks: u32,
}

/// The ring buffer for an unwinding mode and `cpus` CPUs sampling at up to ~1 kHz, a power of two. It is
/// drained every 100 ms, or as soon as an eighth of it fills. Its data pages are mapped into
/// emberprof twice (the kernel's wrap-around trick) and all resident from the start, so it is sized
/// for the bursts the reader must ride out, not more.
/// - Frame pointers stream a sample (~2 KiB with its inline stacks) only when a stack or count map
///   is full or collides: 256 KiB a CPU holds more than 100 ms of samples that all stream.
/// - DWARF unwinding copies user stacks, up to ~17 KiB a sample: 2 MiB a CPU holds the copies of
///   a symbolization round (see docs/performance.md). A CPU whose copy finds the buffer full still
///   counts its sample, with a frame-pointer stack.
///
/// Capped at 32 MiB: one reader cannot unwind faster on a bigger machine, so a bigger buffer would
/// only delay the losses.
pub fn ring_buffer_bytes(mode: UnwindMode, cpus: usize) -> u32 {
    let per_cpu: usize = match mode {
        UnwindMode::FramePointers => 256 << 10,
        UnwindMode::Dwarf | UnwindMode::Auto => 2 << 20,
    };
    let bytes = per_cpu.saturating_mul(cpus.max(1)).next_power_of_two();
    bytes.clamp(512 << 10, 32 << 20) as u32
}

/// Online CPUs, each of which gets a sampling event (1 if they cannot be read: the attach then
/// reports why).
pub fn online_cpu_count() -> usize {
    aya::util::online_cpus().map(|cpus| cpus.len()).unwrap_or(1)
}

impl Default for MapSizes {
    fn default() -> Self {
        // Per generation (there are two, and the one not in use is emptied at each checkpoint, see
        // `bpf/mod.rs`): ~8 MiB of stacks (127 frames x 8 bytes each), ~3 MiB of counts, room for a
        // minute of a busy system before anything has to be streamed.
        MapSizes {
            stacks: 8 * 1024,
            counts: 32 * 1024,
            ring_buffer_bytes: ring_buffer_bytes(UnwindMode::FramePointers, 2),
            targets: 8 * 1024,
            python_stacks: 8 * 1024,
        }
    }
}

pub struct SamplerConfig {
    /// `None` samples every process.
    pub target_pids: Option<Vec<u32>>,
    pub follow_children: bool,
    pub capture_kernel: bool,
    pub capture_user: bool,
    pub unwind: UnwindMode,
    /// Bytes of user stack copied per sample when unwinding with DWARF.
    pub stack_copy_bytes: u32,
    /// Raise the copy of a process whose stacks end at its edge (see [`Sampler::stack_copy_exhausted`]).
    pub grow_stack_copy: bool,
    pub map_sizes: MapSizes,
    /// `--off-cpu`: the shortest interval switched out that is counted; `None`: the off-CPU
    /// program is not loaded and its maps get one entry each.
    pub off_cpu_min: Option<Duration>,
    /// Follow one switch-out in this many, its time counted this many times (1: every one; 0:
    /// adaptive, see `offcpu::Adaptive`).
    pub off_cpu_sample: u32,
}

/// The next copy size of a process whose stack ended at the edge of a copy of `copied` bytes when
/// it copies `current`: double, up to `MAX_STACK_COPY`. `None` for a copy smaller than `current`
/// (taken before the last raise, or cut at the end of the stack mapping, where more would not help).
fn raised_copy_size(current: u32, copied: u32) -> Option<u32> {
    let raised = current
        .saturating_mul(2)
        .min(emberprof_bpf::MAX_STACK_COPY as u32);
    (copied >= current && raised > current).then_some(raised)
}

/// `max_entries` of the `stack_copy_sizes` map.
const STACK_COPY_SIZES_ENTRIES: usize = 16384;

/// The loaded BPF object. Sampling runs from [`Sampler::attach`] until [`Sampler::detach`] or drop.
pub struct Sampler {
    ebpf: Ebpf,
    sizes: MapSizes,
    records: RingBuf<MapData>,
    /// Taken by the reader with [`Sampler::take_notices`].
    notices: Option<Notices>,
    perf_links: Vec<PerfEventLinkId>,
    /// `--unwind auto`: modules whose frameless functions are in `module_exceptions`.
    modules_sent: std::collections::HashSet<u32>,
    stack_copy_bytes: u32,
    grow_stack_copy: bool,
    /// Instances whose copy was raised, and to what (mirrors `stack_copy_sizes`).
    raised: StdHashMap<u32, u32>,
    /// `--off-cpu`: the sched_switch program is loaded (and attached while sampling).
    off_cpu: Option<Duration>,
    off_cpu_sample: u32,
    off_cpu_link: Option<BtfTracePointLinkId>,
}

impl Sampler {
    /// Loads and verifies the programs and creates the maps; nothing is sampled yet.
    /// `btf` is the kernel's BTF when given with `--btf`; `None` uses /sys/kernel/btf/vmlinux.
    pub fn load(btf: Option<&Btf>, config: &SamplerConfig) -> Result<Self> {
        let bpf_config = Config {
            filter_tgids: config.target_pids.is_some() as u32,
            follow_children: config.follow_children as u32,
            capture_kernel: config.capture_kernel as u32,
            capture_user: config.capture_user as u32,
            include_kernel_threads: config.target_pids.is_none() as u32,
            unwind_mode: match config.unwind {
                UnwindMode::FramePointers => emberprof_bpf::UNWIND_FRAME_POINTERS,
                UnwindMode::Dwarf => emberprof_bpf::UNWIND_DWARF,
                UnwindMode::Auto => emberprof_bpf::UNWIND_AUTO,
            },
            stack_copy_bytes: config.stack_copy_bytes,
            // An eighth of the buffer: few wakeups, yet room for the seven eighths that can pile up
            // while the reader is busy.
            wakeup_bytes: config.map_sizes.ring_buffer_bytes / 8,
        };
        let sizes = config.map_sizes;
        // One staging slot per possible CPU (bpf_get_smp_processor_id indexes possible CPUs); none
        // worth allocating when stacks are never copied.
        let scratch_slots = match config.unwind {
            UnwindMode::FramePointers => 1,
            _ => aya::util::nr_cpus()
                .map_err(|(path, error)| anyhow!("cannot read {path}: {error}"))?
                as u32,
        };
        // EbpfLoader::new parses /sys/kernel/btf/vmlinux itself (~15 MB while loading, for the CO-RE
        // relocations); it is the only parse without --off-cpu: the lifecycle programs are raw
        // tracepoints, which need no BTF to load or attach (the off-CPU program does, see below).
        let off_cpu_settings =
            super::offcpu_load::settings(config.off_cpu_min, config.off_cpu_sample);
        let mut loader = EbpfLoader::new();
        if btf.is_some() {
            loader.btf(btf);
        }
        let off_cpu = config.off_cpu_min.is_some();
        let object = super::offcpu_load::load_settings(
            &mut loader,
            &off_cpu_settings,
            off_cpu,
            (config.map_sizes.stacks, config.map_sizes.counts),
        );
        let mut ebpf = loader
            .override_global(names::CONFIG_GLOBAL, &bpf_config, true)
            .map_max_entries(names::STACKS[0], sizes.stacks)
            .map_max_entries(names::STACKS[1], sizes.stacks)
            .map_max_entries(names::COUNTS[0], sizes.counts)
            .map_max_entries(names::COUNTS[1], sizes.counts)
            .map_max_entries(names::RECORDS, sizes.ring_buffer_bytes)
            .map_max_entries(names::TARGET_TGIDS, sizes.targets)
            .map_max_entries(names::STACK_SCRATCH, scratch_slots)
            .map_max_entries(
                emberprof_bpf::python_names::PYTHON_STACKS[0],
                sizes.python_stacks,
            )
            .map_max_entries(
                emberprof_bpf::python_names::PYTHON_STACKS[1],
                sizes.python_stacks,
            )
            .load(object)
            .context(
                "cannot load the BPF object (is BPF enabled in this kernel, CONFIG_BPF_SYSCALL=y?)",
            )?;
        drop(loader);

        let sample: &mut PerfEvent = program(&mut ebpf, names::SAMPLE_PROGRAM)?.try_into()?;
        sample
            .load()
            .context("the kernel rejected the sampling program")?;
        for (name, tracepoint) in names::LIFECYCLE_PROGRAMS {
            let notice: &mut RawTracePoint = program(&mut ebpf, name)?.try_into()?;
            notice
                .load()
                .with_context(|| format!("the kernel rejected the {tracepoint} program"))?;
        }
        if off_cpu {
            // A tp_btf program (see offcpu.bpf.h) is loaded against its tracepoint's BTF type id:
            // one more parse of the kernel's BTF when none was given, only under --off-cpu.
            let parsed;
            let btf = match btf {
                Some(btf) => btf,
                None => {
                    parsed =
                        Btf::from_sys_fs().context("cannot read the kernel's BTF for --off-cpu")?;
                    &parsed
                }
            };
            let switch: &mut BtfTracePoint =
                program(&mut ebpf, names::OFF_CPU_PROGRAM)?.try_into()?;
            switch
                .load(names::OFF_CPU_TRACEPOINT, btf)
                .context("the kernel rejected the off-CPU (sched_switch) program")?;
        }

        if let Some(pids) = &config.target_pids {
            let mut targets: HashMap<_, u32, u8> =
                HashMap::try_from(map(&mut ebpf, names::TARGET_TGIDS)?)?;
            for &pid in pids {
                targets
                    .insert(pid, 1, 0)
                    .with_context(|| format!("cannot add PID {pid} to the target map"))?;
            }
        }
        let records = RingBuf::try_from(
            ebpf.take_map(names::RECORDS)
                .ok_or_else(|| anyhow!("BPF object has no map {}", names::RECORDS))?,
        )?;
        let notices = RingBuf::try_from(
            ebpf.take_map(names::NOTICES)
                .ok_or_else(|| anyhow!("BPF object has no map {}", names::NOTICES))?,
        )?;
        Ok(Sampler {
            ebpf,
            sizes,
            records,
            notices: Some(Notices(notices)),
            perf_links: Vec::new(),
            modules_sent: Default::default(),
            stack_copy_bytes: config.stack_copy_bytes,
            grow_stack_copy: config.grow_stack_copy,
            raised: StdHashMap::new(),
            off_cpu: config.off_cpu_min.filter(|_| off_cpu),
            off_cpu_sample: config.off_cpu_sample,
            off_cpu_link: None,
        })
    }

    /// The loaded object, for `offcpu`'s maps.
    pub(super) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// `--off-cpu`'s threshold, when its program is loaded.
    pub fn off_cpu(&self) -> Option<Duration> {
        self.off_cpu
    }

    /// `--off-cpu-sample`: each followed switch-out stands for this many; 0: adaptive.
    pub fn off_cpu_sample(&self) -> u32 {
        self.off_cpu_sample
    }

    /// `--unwind auto`: copy every user stack of this process.
    pub fn unwind_process_with_dwarf(&mut self, pid: u32) -> Result<()> {
        let mut map: HashMap<_, u32, u8> =
            HashMap::try_from(map(&mut self.ebpf, names::DWARF_TGIDS)?)?;
        map.insert(pid, 1, 0)
            .with_context(|| format!("cannot mark process {pid} for DWARF unwinding"))
    }

    /// `--unwind auto`: the plan of a judged process: copy the user stacks of samples whose
    /// frame-pointer walk meets frameless code of these mappings (sorted, disjoint; none: never
    /// copy). More mappings than the BPF side holds mean the whole process is copied. A full map
    /// leaves the process unjudged, so its stacks stay copied (counted as `CopyUnjudged`).
    pub fn set_frameless_code(&mut self, pid: u32, mappings: &[FramelessMapping]) -> Result<()> {
        if mappings.len() > MAX_PLAN_MAPPINGS {
            return self.unwind_process_with_dwarf(pid);
        }
        let mut value = FramelessRanges::boxed_empty();
        value.count = mappings.len() as u32;
        for (i, mapping) in mappings.iter().enumerate() {
            value.start[i] = mapping.range.start;
            value.end[i] = mapping.range.end;
            value.bias[i] = mapping.bias;
            value.module[i] = match &mapping.functions {
                Some((module, functions)) => self.module_exceptions(*module, functions),
                None => MODULE_FRAMELESS_WHOLE,
            };
        }
        let mut map: HashMap<_, u32, FramelessRanges> =
            HashMap::try_from(map(&mut self.ebpf, names::FRAMELESS_RANGES)?)?;
        // By reference: the value is 14 KiB, too big to pass around on the stack.
        let value: &FramelessRanges = &value;
        map.insert(pid, value, 0)
            .with_context(|| format!("cannot set the unwinding plan of process {pid}"))
    }

    /// The `module_exceptions` key of a module's frameless functions, sent once per module; a
    /// module whose list does not fit counts as frameless whole.
    fn module_exceptions(&mut self, module: ModuleId, functions: &[std::ops::Range<u64>]) -> u32 {
        if self.modules_sent.contains(&module.0) {
            return module.0;
        }
        if functions.len() > MAX_MODULE_EXCEPTIONS || module.0 == MODULE_FRAMELESS_WHOLE {
            return MODULE_FRAMELESS_WHOLE;
        }
        let mut value = ModuleExceptions::boxed_empty();
        value.count = functions.len() as u32;
        for (i, function) in functions.iter().enumerate() {
            value.start[i] = function.start;
            value.end[i] = function.end;
        }
        let value: &ModuleExceptions = &value;
        let sent = map(&mut self.ebpf, names::MODULE_EXCEPTIONS)
            .and_then(|m| Ok(HashMap::<_, u32, ModuleExceptions>::try_from(m)?))
            .and_then(|mut m| Ok(m.insert(module.0, value, 0)?));
        match sent {
            Ok(()) => {
                self.modules_sent.insert(module.0);
                module.0
            }
            Err(error) => {
                log::debug!("frameless functions of module {module:?} not sent: {error:#}");
                MODULE_FRAMELESS_WHOLE
            }
        }
    }

    /// `--unwind auto`: a frame-pointer chain of this process instance that ends at `address` (a
    /// frameless return address) needs no copy: userspace appends the outer frames it learned.
    pub fn set_known_root(&mut self, instance: u32, address: u64, known: bool) -> Result<()> {
        let mut map: HashMap<_, RootKey, u8> =
            HashMap::try_from(map(&mut self.ebpf, names::KNOWN_ROOTS)?)?;
        let key = RootKey {
            instance,
            _pad: 0,
            address,
        };
        let result = if known {
            map.insert(key, 1, 0)
        } else {
            map.remove(&key)
        };
        result
            .with_context(|| format!("cannot update the root {address:#x} of instance {instance}"))
    }

    /// A stack of `instance` ended at the edge of a copy of `copied` bytes from sp: doubles the
    /// instance's copy, up to `MAX_STACK_COPY`, so frames bigger than the default copy unwind
    /// while every other process keeps the cheap size. Copies taken before an earlier raise (still
    /// in the ring buffer) are smaller than the current size and change nothing. Returns the new
    /// size if it grew.
    pub fn stack_copy_exhausted(&mut self, instance: u32, copied: u32) -> Result<Option<u32>> {
        if !self.grow_stack_copy {
            return Ok(None);
        }
        let current = self
            .raised
            .get(&instance)
            .copied()
            .unwrap_or(self.stack_copy_bytes);
        // The BPF map is an LRU of this many entries; past it (a fork bomb of deep stacks) new
        // instances keep the default rather than grow this table without bound.
        let full =
            !self.raised.contains_key(&instance) && self.raised.len() >= STACK_COPY_SIZES_ENTRIES;
        let Some(raised) = raised_copy_size(current, copied).filter(|_| !full) else {
            return Ok(None);
        };
        let mut map: HashMap<_, u32, u32> =
            HashMap::try_from(map(&mut self.ebpf, names::STACK_COPY_SIZES)?)?;
        map.insert(instance, raised, 0)
            .with_context(|| format!("cannot raise the stack copy of instance {instance}"))?;
        self.raised.insert(instance, raised);
        Ok(Some(raised))
    }

    /// A process with a CPython runtime: its Python frames are walked from its next sample on.
    /// The BPF side forgets it when the instance ends.
    pub fn set_python(&mut self, pid: u32, process: &PythonProcess) -> Result<()> {
        let name = emberprof_bpf::python_names::PYTHON_PROCESSES;
        let mut map: HashMap<_, u32, PythonProcess> =
            HashMap::try_from(map(&mut self.ebpf, name)?)?;
        map.insert(pid, process, 0)
            .with_context(|| format!("cannot set the Python runtime of process {pid}"))
    }

    /// The Python walker's per-CPU counters, summed over CPUs.
    pub fn python_stats(&self) -> Result<[u64; PythonStat::COUNT as usize]> {
        let name = emberprof_bpf::python_names::PYTHON_STATS;
        let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(name)
                .ok_or_else(|| anyhow!("BPF object has no map {name}"))?,
        )?;
        let mut totals = [0; PythonStat::COUNT as usize];
        for stat in PythonStat::ALL {
            let per_cpu = stats
                .get(&(stat as u32), 0)
                .with_context(|| format!("cannot read counter {stat:?}"))?;
            totals[stat as usize] = per_cpu.iter().sum();
        }
        Ok(totals)
    }

    /// Makes sure `cache` holds Python stack `id` of a generation (0: none, a no-op).
    pub fn load_python_stack(
        &self,
        generation: u32,
        id: u64,
        cache: &mut StackCache,
    ) -> Result<()> {
        SamplerMaps(&self.ebpf).load_python_stack(generation, id, cache)
    }

    /// Starts sampling: follows forks first, so no child is missed, then opens one cpu-clock event per
    /// online CPU. Per-CPU events with the TGID filter in BPF cover every thread of a target, present
    /// and future; an event bound to a PID would sample only that one thread.
    pub fn attach(&mut self, frequency_hz: u64, event: SampledEvent) -> Result<()> {
        event.check_available()?;
        // Fork first: no child is missed.
        for (name, tracepoint) in names::LIFECYCLE_PROGRAMS {
            let notice: &mut RawTracePoint = program(&mut self.ebpf, name)?.try_into()?;
            notice
                .attach(tracepoint)
                .with_context(|| format!("cannot attach to the {tracepoint} tracepoint"))?;
        }

        if self.off_cpu.is_some() {
            let switch: &mut BtfTracePoint =
                program(&mut self.ebpf, names::OFF_CPU_PROGRAM)?.try_into()?;
            let link = switch
                .attach()
                .context("cannot attach to the sched_switch tracepoint (--off-cpu)")?;
            self.off_cpu_link = Some(link);
        }

        let cpus = aya::util::online_cpus()
            .map_err(|(path, error)| anyhow!("cannot read {path}: {error}"))?;
        let sample: &mut PerfEvent = program(&mut self.ebpf, names::SAMPLE_PROGRAM)?.try_into()?;
        for cpu in cpus {
            let link = sample
                .attach(
                    event.aya_config(),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .with_context(|| {
                    format!("cannot open the {} perf event on CPU {cpu}", event.name())
                })?;
            self.perf_links.push(link);
        }
        Ok(())
    }

    /// Stops sampling. The maps stay readable.
    pub fn detach(&mut self) -> Result<()> {
        let sample: &mut PerfEvent = program(&mut self.ebpf, names::SAMPLE_PROGRAM)?.try_into()?;
        for link in self.perf_links.drain(..) {
            sample
                .detach(link)
                .context("cannot detach the sampling program")?;
        }
        if let Some(link) = self.off_cpu_link.take() {
            let switch: &mut BtfTracePoint =
                program(&mut self.ebpf, names::OFF_CPU_PROGRAM)?.try_into()?;
            switch
                .detach(link)
                .context("cannot detach the off-CPU program")?;
        }
        Ok(())
    }

    /// Time the kernel spent in our programs and how many times they ran, as counted while the
    /// `kernel.bpf_stats_enabled` sysctl is 1 (zero otherwise). It is charged to the interrupted
    /// tasks, so emberprof's own CPU time leaves it out.
    pub fn programs_run_time(&self) -> (Duration, u64) {
        self.ebpf
            .programs()
            .filter_map(|(_, program)| program.info().ok())
            .fold((Duration::ZERO, 0), |(time, runs), info| {
                (time + info.run_time(), runs + info.run_count())
            })
    }

    /// File descriptor that becomes readable when the ring buffer has records.
    pub fn records_fd(&self) -> RawFd {
        self.records.as_raw_fd()
    }

    /// The ring buffer of first-sample and instance-end notices, read apart from the records
    /// (see `profile.bpf.c`); `None` once taken.
    pub fn take_notices(&mut self) -> Option<Notices> {
        self.notices.take()
    }

    /// Hands every pending ring-buffer record to `handle`, with the maps a record may refer to.
    pub fn drain_records(&mut self, mut handle: impl FnMut(&SamplerMaps<'_>, &[u8])) {
        let maps = SamplerMaps(&self.ebpf);
        while let Some(item) = self.records.next() {
            handle(&maps, &item);
        }
    }

    /// The per-CPU counters, summed over CPUs.
    pub fn stats(&self) -> Result<BpfStats> {
        let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(names::STATS)
                .ok_or_else(|| anyhow!("BPF object has no map {}", names::STATS))?,
        )?;
        let mut totals = BpfStats::default();
        for stat in Stat::ALL {
            let per_cpu = stats
                .get(&(stat as u32), 0)
                .with_context(|| format!("cannot read counter {stat:?}"))?;
            totals.set(stat, per_cpu.iter().sum());
        }
        Ok(totals)
    }

    pub fn map_sizes(&self) -> MapSizes {
        self.sizes
    }

    /// Makes `next` the generation of the count and stack maps new samples go to.
    pub fn switch_generation(&mut self, next: u32) -> Result<()> {
        let mut generation: Array<_, u32> =
            Array::try_from(map(&mut self.ebpf, names::GENERATION)?)?;
        generation
            .set(0, next, 0)
            .context("cannot switch the map generation")
    }

    /// Every counted key of a generation with its count.
    pub fn read_counts(&self, generation: u32) -> Result<Vec<(SampleKey, u64)>> {
        let name = names::COUNTS[generation as usize & 1];
        let counts: HashMap<_, SampleKey, u64> = HashMap::try_from(
            self.ebpf
                .map(name)
                .ok_or_else(|| anyhow!("BPF object has no map {name}"))?,
        )?;
        counts
            .iter()
            .map(|entry| entry.context("cannot read the counts map"))
            .collect()
    }

    /// Empties a generation's count and stack maps, and forgets its stacks in `cache`. Only for a
    /// generation the BPF program no longer writes (switched away from, and a grace period passed).
    pub fn clear_generation(&mut self, generation: u32, cache: &mut StackCache) -> Result<()> {
        let generation = generation & 1;
        let name = names::COUNTS[generation as usize];
        let mut counts: HashMap<_, SampleKey, u64> = HashMap::try_from(map(&mut self.ebpf, name)?)?;
        let keys: Vec<SampleKey> = counts.keys().filter_map(|key| key.ok()).collect();
        remove_all(name, &keys, |key| counts.remove(key))?;
        let name = names::STACKS[generation as usize];
        let mut stacks: StackTraceMap<_> = StackTraceMap::try_from(map(&mut self.ebpf, name)?)?;
        let ids: Vec<u32> = stacks.stack_ids().filter_map(|id| id.ok()).collect();
        remove_all(name, &ids, |id| stacks.remove(id))?;
        cache.stacks.retain(|&(g, _), _| g != generation);
        let name = emberprof_bpf::python_names::PYTHON_STACKS[generation as usize];
        let mut python: HashMap<_, u64, PythonStack> =
            HashMap::try_from(map(&mut self.ebpf, name)?)?;
        let ids: Vec<u64> = python.keys().filter_map(|id| id.ok()).collect();
        remove_all(name, &ids, |id| python.remove(id))?;
        cache.python.retain(|&(g, _), _| g != generation);
        Ok(())
    }

    /// Makes sure `cache` holds the frames of stack `id` of a generation (a no-op for ids that are not
    /// map ids).
    pub fn load_stack(&self, generation: u32, id: i32, cache: &mut StackCache) -> Result<()> {
        let generation = generation & 1;
        if id < 0 || cache.stacks.contains_key(&(generation, id)) {
            return Ok(());
        }
        let name = names::STACKS[generation as usize];
        let stacks: StackTraceMap<_> = StackTraceMap::try_from(
            self.ebpf
                .map(name)
                .ok_or_else(|| anyhow!("BPF object has no map {name}"))?,
        )?;
        let frames = match stacks.get(&(id as u32), 0) {
            Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
            // Cannot happen without BPF_F_REUSE_STACKID or deletions of a generation still in use;
            // keep the sample, without this stack.
            Err(error) => {
                log::warn!("stack {id} vanished from the stack map: {error}");
                Vec::new()
            }
        };
        cache.stacks.insert((generation, id), frames);
        Ok(())
    }
}

/// The notices ring buffer (first samples, instance ends).
pub struct Notices(RingBuf<MapData>);

impl Notices {
    /// Hands every pending notice to `handle`.
    pub fn drain(&mut self, mut handle: impl FnMut(&[u8])) {
        while let Some(item) = self.0.next() {
            handle(&item);
        }
    }

    /// File descriptor that becomes readable when notices are pending.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The maps a ring-buffer record may refer to, readable while the ring buffer is drained.
pub struct SamplerMaps<'a>(&'a Ebpf);

impl SamplerMaps<'_> {
    /// Makes sure `cache` holds Python stack `id` of a generation (0: none, a no-op).
    pub fn load_python_stack(
        &self,
        generation: u32,
        id: u64,
        cache: &mut StackCache,
    ) -> Result<()> {
        let generation = generation & 1;
        if id == 0 || cache.python.contains_key(&(generation, id)) {
            return Ok(());
        }
        let name = emberprof_bpf::python_names::PYTHON_STACKS[generation as usize];
        let stacks: HashMap<_, u64, PythonStack> = HashMap::try_from(
            self.0
                .map(name)
                .ok_or_else(|| anyhow!("BPF object has no map {name}"))?,
        )?;
        let stack = match stacks.get(&id, 0) {
            Ok(stack) => Some(Box::new(stack)),
            // Cannot happen while the generation is in use; keep the sample, native frames only.
            Err(error) => {
                log::warn!("Python stack {id:#x} vanished from {name}: {error}");
                None
            }
        };
        cache.python.insert((generation, id), stack);
        Ok(())
    }
}

/// Stacks read from the stack maps, by (generation, id). An id's frames never change until its
/// generation is cleared (no BPF_F_REUSE_STACKID), so each is read once; clearing a generation
/// forgets its entries, so the cache holds at most the stacks of two generations.
#[derive(Debug, Default)]
pub struct StackCache {
    stacks: StdHashMap<(u32, i32), Vec<u64>>,
    /// Python stacks by (generation, id), the same way (`None`: could not be read).
    python: StdHashMap<(u32, u64), Option<Box<PythonStack>>>,
}

impl StackCache {
    /// The frames of a stack id, innermost first; empty for [`STACK_ID_NONE`] or an id not loaded.
    pub fn frames(&self, generation: u32, id: i32) -> &[u64] {
        if id == STACK_ID_NONE {
            return &[];
        }
        self.stacks
            .get(&(generation & 1, id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A Python stack loaded by [`Sampler::load_python_stack`].
    pub fn python(&self, generation: u32, id: u64) -> Option<&PythonStack> {
        self.python.get(&(generation & 1, id))?.as_deref()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))
}

/// Removes these keys from the BPF map `name` with `remove`.
fn remove_all<K>(
    name: &str,
    keys: &[K],
    mut remove: impl FnMut(&K) -> Result<(), aya::maps::MapError>,
) -> Result<()> {
    for key in keys {
        remove(key).with_context(|| format!("cannot clear the {name} map"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring buffer grows with the CPUs writing into it, stays a power of two the kernel accepts,
    /// and DWARF modes get room for stack copies that frame pointers do not need.
    #[test]
    fn ring_buffer_scales_with_cpus_within_bounds() {
        use UnwindMode::*;
        assert_eq!(ring_buffer_bytes(FramePointers, 1), 512 << 10);
        assert_eq!(ring_buffer_bytes(FramePointers, 2), 512 << 10);
        assert_eq!(ring_buffer_bytes(FramePointers, 8), 2 << 20);
        assert_eq!(ring_buffer_bytes(Auto, 2), 4 << 20);
        assert_eq!(ring_buffer_bytes(Dwarf, 3), 8 << 20);
        assert_eq!(ring_buffer_bytes(Auto, 0), 2 << 20);
        assert_eq!(ring_buffer_bytes(Dwarf, 4096), 32 << 20);
        for cpus in 0..300 {
            for mode in [FramePointers, Auto, Dwarf] {
                let bytes = ring_buffer_bytes(mode, cpus);
                assert!(
                    bytes.is_power_of_two() && bytes >= 4096,
                    "{mode:?} {cpus}: {bytes}"
                );
            }
        }
    }

    /// Doubles from the default to the BPF cap and no further; copies from before a raise, or
    /// cut short by the end of the stack, change nothing.
    #[test]
    fn copy_size_doubles_up_to_the_cap() {
        assert_eq!(raised_copy_size(16384, 16384), Some(32768));
        assert_eq!(raised_copy_size(32768, 32768), Some(65536));
        assert_eq!(raised_copy_size(65536, 65536), None);
        assert_eq!(raised_copy_size(40000, 40000), Some(65536));
        assert_eq!(raised_copy_size(32768, 16384), None);
        assert_eq!(raised_copy_size(16384, 9000), None);
    }
}
