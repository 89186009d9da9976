//! Starting a capture source: loads and attaches the BPF sampler, or opens the perf events (on a
//! launched child before its exec, where they start by themselves), then lets the launched command
//! run. What comes out is a [`Source`] the session reads, whichever backend it is.

use anyhow::Result;
use emberprof_symbolizer::Symbolizer;

use super::backend::Backend;
use super::bpf::{BpfSource, MapSizes, MappingEvents, Sampler, SamplerConfig};
use super::perf::{self, EventConfig, EventTargets, Events, PerfSource};
use super::{PausedCommand, RunningCommand, SampledEvent, Source, Target, UnwindMode};
use crate::memory::release_free_memory;

/// What a source samples and how (see `record::RecordOptions` for each).
pub struct SourceOptions<'a> {
    pub target: &'a Target,
    pub frequency_hz: u64,
    pub event: SampledEvent,
    pub capture_kernel: bool,
    pub capture_user: bool,
    pub follow_children: bool,
    pub unwind: UnwindMode,
    pub stack_copy_bytes: u32,
    pub grow_stack_copy: bool,
    pub map_sizes: MapSizes,
    pub ring_pages: Option<usize>,
    /// `--off-cpu`: the shortest interval switched out that is counted.
    pub off_cpu: Option<std::time::Duration>,
    /// `--off-cpu-sample` (BPF only; 0: adaptive).
    pub off_cpu_sample: u32,
}

/// A backend with what it needs loaded before anything starts.
pub enum Prepared {
    /// The kernel BTF given with --btf; `None`: the running kernel's.
    Bpf(Option<aya::Btf>),
    Perf {
        /// Kernel mode may be sampled (root, CAP_PERFMON, or `perf_event_paranoid` ≤ 1).
        kernel: bool,
    },
}

impl Prepared {
    pub fn backend(&self) -> Backend {
        match self {
            Prepared::Bpf(_) => Backend::Bpf,
            Prepared::Perf { kernel } => Backend::Perf { kernel: *kernel },
        }
    }
}

/// Starts sampling and the launched command. Kernel symbols are loaded first when kernel frames
/// will come, so the first symbolization round does not pay for them.
pub fn start(
    prepared: Prepared,
    options: &SourceOptions<'_>,
    paused: Option<PausedCommand>,
    symbolizer: &mut Symbolizer,
) -> Result<(Box<dyn Source>, Option<RunningCommand>)> {
    match prepared {
        Prepared::Bpf(btf) => start_bpf(options, btf, paused, symbolizer),
        Prepared::Perf { kernel } => start_perf(options, kernel, paused, symbolizer),
    }
}

/// The BPF backend: loads and attaches the sampler, then starts the command.
fn start_bpf(
    options: &SourceOptions<'_>,
    btf: Option<aya::Btf>,
    paused: Option<PausedCommand>,
    symbolizer: &mut Symbolizer,
) -> Result<(Box<dyn Source>, Option<RunningCommand>)> {
    let target_pids = match (options.target, &paused) {
        (Target::Pids(pids), _) => Some(pids.clone()),
        (Target::Command(_), Some(paused)) => Some(vec![paused.pid()]),
        _ => None,
    };
    let mut sampler = Sampler::load(
        btf.as_ref(),
        &SamplerConfig {
            target_pids,
            follow_children: options.follow_children,
            capture_kernel: options.capture_kernel,
            capture_user: options.capture_user,
            unwind: options.unwind,
            stack_copy_bytes: options.stack_copy_bytes,
            grow_stack_copy: options.grow_stack_copy,
            map_sizes: options.map_sizes,
            off_cpu_min: options.off_cpu,
            off_cpu_sample: options.off_cpu_sample,
        },
    )?;
    if options.capture_kernel {
        symbolizer.load_kernel_symbols();
    }
    // Before the sampler: every mapping of a process it samples is recorded. Without them
    // (a kernel that refuses the dummy event), names depend on reading /proc in time.
    let mapping_events = match MappingEvents::open() {
        Ok(events) => Some(events),
        Err(error) => {
            log::warn!(
                "{error:#}: processes that end before their memory maps are read stay unnamed"
            );
            None
        }
    };
    sampler.attach(options.frequency_hz, options.event)?;
    // A parsed kernel BTF given with --btf (tens of MB) is only needed to load the programs.
    drop(btf);
    release_free_memory();
    let command = paused.map(PausedCommand::start).transpose()?;
    let judges_stacks = options.unwind == UnwindMode::Auto;
    let source = BpfSource::new(sampler, judges_stacks, mapping_events);
    Ok((Box::new(source), command))
}

/// The perf_event backend: opens the events, starts them (or lets the child's exec do it), then
/// starts the command.
fn start_perf(
    options: &SourceOptions<'_>,
    kernel_allowed: bool,
    paused: Option<PausedCommand>,
    symbolizer: &mut Symbolizer,
) -> Result<(Box<dyn Source>, Option<RunningCommand>)> {
    let targets = match (options.target, &paused) {
        (Target::Command(_), Some(paused)) => EventTargets::ChildBeforeExec(paused.pid()),
        (Target::Pids(pids), _) => EventTargets::Threads(pids.clone()),
        _ => EventTargets::AllProcesses,
    };
    let kernel = options.capture_kernel && kernel_allowed;
    if options.capture_kernel && !kernel_allowed {
        log::info!(
            "kernel frames left out: kernel.perf_event_paranoid forbids kernel stacks without \
             CAP_PERFMON (run as root, or set it to 1, to see them)"
        );
    }
    let copies_stacks = options.capture_user && options.unwind != UnwindMode::FramePointers;
    let config = EventConfig {
        event: options.event,
        frequency_hz: options.frequency_hz,
        kernel_mode: kernel_allowed,
        kernel_callchains: kernel,
        stack_copy_bytes: copies_stacks.then_some(options.stack_copy_bytes),
        // Always: new threads of a target are part of it. --no-inherit leaves out other processes
        // in the session instead.
        inherit: true,
        ring_pages: options.ring_pages.unwrap_or_else(perf::default_ring_pages),
        off_cpu_min: options.off_cpu,
        off_cpu_sample: options.off_cpu_sample,
    };
    let events = Events::open(&targets, &config)?;
    if kernel {
        symbolizer.load_kernel_symbols();
    }
    if paused.is_none() {
        events.enable()?;
    }
    let child = paused.as_ref().map(PausedCommand::pid);
    let only_pids = match (options.target, child) {
        _ if options.follow_children => None,
        (Target::Pids(pids), _) => Some(pids.clone()),
        (_, Some(child)) => Some(vec![child]),
        _ => None,
    };
    let source = PerfSource::new(events, &config, only_pids, options.capture_user)?;
    let command = paused.map(PausedCommand::start).transpose()?;
    Ok((Box::new(source), command))
}
