//! Opening the perf events of the perf backend, the way `perf record` does it: one event per CPU
//! for each target thread, with `inherit` so threads and processes it creates later are sampled
//! too. The kernel refuses to mmap an inherited event bound to a task on every CPU (`cpu == -1`:
//! all its descendants would write one buffer from every CPU), so events are per CPU, and all the
//! events of one CPU write into the ring buffer of the first (`PERF_EVENT_IOC_SET_OUTPUT`).
//!
//! `--off-cpu` where the kernel lets emberprof sample kernel mode adds a `context-switches` event
//! beside each sampling event (see [`SwitchSampling`]); where it does not, nothing is added and the
//! switch records alone time the intervals.

use std::collections::{BTreeSet, HashSet};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use perf_event_open_sys::{bindings, ioctls};

use super::reader::Reader;
use super::records::{SampleLayout, USER_REGS_MASK};
use super::ring::RingBuffer;
use crate::capture::event::{no_pmu_message, SampledEvent};

/// Most user-stack bytes a sample may carry: the whole record must fit its 16-bit size.
pub const MAX_STACK_COPY: u32 = 65528 - 1024;

/// What to sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTargets {
    /// These threads (and, with `inherit`, what they create from now on).
    Threads(Vec<u32>),
    /// A launched child held before its exec: sampling starts at the exec
    /// (`enable_on_exec`), so the profiler's own code before it is never sampled.
    ChildBeforeExec(u32),
    /// Every task on every CPU (needs CAP_PERFMON, or `perf_event_paranoid` ≤ 0).
    AllProcesses,
}

#[derive(Clone, Copy, Debug)]
pub struct EventConfig {
    pub event: SampledEvent,
    pub frequency_hz: u64,
    /// Take samples that hit kernel mode (not allowed to users at paranoid ≥ 2): without it, time
    /// in system calls goes unsampled.
    pub kernel_mode: bool,
    /// Kernel callchains in those samples (`--no-kernel` leaves them out, keeping the samples).
    pub kernel_callchains: bool,
    /// Bytes of user stack copied per sample, with the user registers; `None` for callchains only.
    pub stack_copy_bytes: Option<u32>,
    /// Follow threads and processes the targets create.
    pub inherit: bool,
    /// Data pages of each CPU's ring buffer (a power of two).
    pub ring_pages: usize,
    /// `--off-cpu`: record every switch of the sampled tasks (`context_switch`, as samply does; no
    /// privileges needed for one's own tasks), timed by CLOCK_MONOTONIC so that threads still
    /// switched out at the stop can be counted up to it. Shorter intervals are not counted.
    pub off_cpu_min: Option<std::time::Duration>,
    /// `--off-cpu-sample`: with the `context-switches` event, one sample every N switch-outs
    /// (0: adaptive, see [`SwitchSampling`]).
    pub off_cpu_sample: u32,
}

/// Samples of the `context-switches` event a second (per event: one per thread and CPU) that the
/// kernel aims at when `--off-cpu-sample` is not given: below it every switch-out is sampled
/// (period 1); past it the kernel raises the period (`attr.freq`, adjusted at each sample and
/// tick), and the switch-outs between samples go to their thread's last sampled one's stacks (see
/// `switches`). The kernel sets the period from the switches since the event last ran at a tick,
/// so a thread that sleeps between bursts gets periods above 1 at rates far below the target:
/// aimed at 500 or 5000 a second, a thread alternating a mutex wait with a 500 µs sleep (~250
/// switch-outs a second) got periods up to 5, and with every other switch-out sampled its lock
/// waits were charged to its sleep (0.9 s of 2 s; the BPF backend measured 0.12 s). At 50,000
/// every one of its switch-outs had its own stack. On a pipe ping-pong (~130,000 switch-outs a
/// second) period 1 slowed the program 5.7 times and lost 24,000 records; 50,000 a second kept
/// the period at 5 at most and followed about one switch-out in five.
const SWITCH_SAMPLES_PER_SECOND: u64 = 50_000;

/// How the off-CPU stacks are taken on this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchSampling {
    /// A software `context-switches` sampling event beside each sampling event: it fires in the
    /// scheduler as the thread switches out, in kernel mode, so it needs kernel access (root,
    /// CAP_PERFMON, or `perf_event_paranoid` ≤ 1). Its samples carry the same callchains and stack
    /// copies as CPU samples: each is the exact stack of a switch-out.
    Exact,
    /// Kernel mode is not ours to sample: the switch records alone, each interval charged to the
    /// thread's last on-CPU sample.
    LastSample,
}

/// The open events: one ring buffer per CPU, and the events that write into them.
pub struct Events {
    rings: Vec<RingBuffer>,
    /// Descriptors of the rings handed to the reader thread, which keeps them open until it ends.
    reader_fds: Vec<RawFd>,
    /// Events redirected into a ring of their CPU; kept open for as long as sampling runs.
    redirected: Vec<OwnedFd>,
    /// `--off-cpu`: how its stacks are taken (decided at the first open: `None` until then).
    switch_sampling: Option<SwitchSampling>,
    /// The `context-switches` events' ids, which their samples carry (inherited ones their
    /// parent's).
    switch_ids: HashSet<u64>,
    /// The context-switches events get rings of their own (until mapping one is refused).
    switch_rings: bool,
    user_stack_copy: bool,
}

impl Events {
    pub fn open(targets: &EventTargets, config: &EventConfig) -> Result<Self> {
        config.event.check_available()?;
        check_ring_size(config)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(path, error)| anyhow!("cannot read {path}: {error}"))?;
        let mut events = Events {
            rings: Vec::new(),
            reader_fds: Vec::new(),
            redirected: Vec::new(),
            switch_sampling: None,
            switch_ids: HashSet::new(),
            switch_rings: true,
            user_stack_copy: config.stack_copy_bytes.is_some(),
        };
        let mut leaders: Vec<Option<usize>> = vec![None; cpus.len()];
        // The rings of the context-switches events, per CPU (see `add_switch_event`).
        let mut switch_leaders: Vec<Option<usize>> = vec![None; cpus.len()];
        let mut open_on = |events: &mut Events, pid: i32, enable_on_exec: bool| -> Result<bool> {
            for (slot, &cpu) in cpus.iter().enumerate() {
                // First, so that whether it opens decides the layout of every sample.
                let switch_fd = match events.open_switches(config, pid, cpu, enable_on_exec) {
                    Ok(fd) => fd,
                    Err(error) if error.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
                    Err(error) => {
                        return Err(anyhow::Error::new(error)
                            .context("cannot open the context-switches perf event"))
                    }
                };
                let identified = events.switch_sampling == Some(SwitchSampling::Exact);
                let fd = match open_one(config, identified, pid, cpu, enable_on_exec) {
                    Ok(fd) => fd,
                    // The thread exited since it was listed.
                    Err(error) if error.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
                    Err(error) => return Err(explain_open_error(error, config.event, pid)),
                };
                match leaders[slot] {
                    Some(ring) => {
                        let leader = events.rings[ring].raw_fd();
                        // SAFETY: both are perf event fds we own, on the same CPU.
                        if unsafe { ioctls::SET_OUTPUT(fd.as_raw_fd(), leader) } != 0 {
                            return Err(std::io::Error::last_os_error()).with_context(|| {
                                format!("cannot share the ring buffer of CPU {cpu}")
                            });
                        }
                        events.redirected.push(fd);
                    }
                    None => {
                        leaders[slot] = Some(events.rings.len());
                        events.rings.push(RingBuffer::map(fd, config.ring_pages)?);
                    }
                }
                if let Some(fd) = switch_fd {
                    events.add_switch_event(
                        fd,
                        &mut switch_leaders[slot],
                        leaders[slot],
                        config,
                    )?;
                }
            }
            Ok(true)
        };
        match targets {
            EventTargets::AllProcesses => {
                open_on(&mut events, -1, false)?;
            }
            EventTargets::ChildBeforeExec(pid) => {
                open_on(&mut events, pid_arg(*pid)?, true)?;
            }
            EventTargets::Threads(pids) => {
                // Threads started while the events are being opened are listed again; inherit
                // covers every one started after its creator's events exist.
                let mut opened = BTreeSet::new();
                for _ in 0..5 {
                    let threads = list_threads(pids)?;
                    let new: Vec<u32> = threads.difference(&opened).copied().collect();
                    if new.is_empty() {
                        break;
                    }
                    for tid in new {
                        open_on(&mut events, pid_arg(tid)?, false)?;
                        opened.insert(tid);
                    }
                }
                if opened.is_empty() {
                    bail!("the target processes have no threads left to sample");
                }
            }
        }
        Ok(events)
    }

    /// `--off-cpu`: how its stacks are taken (the last-sample method when nothing was opened).
    pub fn switch_sampling(&self) -> SwitchSampling {
        self.switch_sampling.unwrap_or(SwitchSampling::LastSample)
    }

    /// Whether a sample came from a `context-switches` event (a switch-out's stack).
    pub fn is_switch_sample(&self, id: u64) -> bool {
        self.switch_ids.contains(&id)
    }

    /// How the samples in the rings are laid out.
    pub fn layout(&self) -> SampleLayout {
        SampleLayout {
            user_stack_copy: self.user_stack_copy,
            identified: self.switch_sampling == Some(SwitchSampling::Exact),
        }
    }

    /// With `--off-cpu`, the `context-switches` event on `pid` and `cpu`, if the kernel lets us
    /// sample kernel mode: the first open decides, by trying (EACCES or EPERM: the last-sample
    /// method for the whole run), rather than guess from `perf_event_paranoid` and capabilities.
    fn open_switches(
        &mut self,
        config: &EventConfig,
        pid: i32,
        cpu: u32,
        enable_on_exec: bool,
    ) -> std::io::Result<Option<OwnedFd>> {
        if config.off_cpu_min.is_none() || self.switch_sampling == Some(SwitchSampling::LastSample)
        {
            return Ok(None);
        }
        let fd = match open_switch_event(config, pid, cpu, enable_on_exec) {
            Ok(fd) => fd,
            Err(error)
                if self.switch_sampling.is_none()
                    && matches!(error.raw_os_error(), Some(libc::EACCES | libc::EPERM)) =>
            {
                log::debug!("no context-switches event ({error}): off-CPU time on last samples");
                self.switch_sampling = Some(SwitchSampling::LastSample);
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let mut id = 0u64;
        // SAFETY: a perf event fd we own and a u64 to write to.
        if unsafe { ioctls::ID(fd.as_raw_fd(), &mut id) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.switch_ids.insert(id);
        self.switch_sampling = Some(SwitchSampling::Exact);
        Ok(Some(fd))
    }

    /// Puts an opened context-switches event's samples in a ring of their own on its CPU: at high
    /// switch rates they fill it, and a full ring loses what comes next, which there is only
    /// stacks, never the switch records that time the intervals nor CPU samples (sharing the CPU's
    /// ring, a ping-pong lost a third of its switch records and its threads came out 0.7 times as
    /// wide as they ran). Where a second ring is refused (a user's `perf_event_mlock_kb`), they
    /// share the CPU's ring.
    fn add_switch_event(
        &mut self,
        fd: OwnedFd,
        switch_ring: &mut Option<usize>,
        cpu_ring: Option<usize>,
        config: &EventConfig,
    ) -> Result<()> {
        let mut fd = fd;
        let mut target = *switch_ring;
        if target.is_none() && self.switch_rings {
            let spare = fd
                .try_clone()
                .context("cannot duplicate a perf event descriptor")?;
            match RingBuffer::map(fd, config.ring_pages) {
                Ok(ring) => {
                    *switch_ring = Some(self.rings.len());
                    self.rings.push(ring);
                    return Ok(());
                }
                Err(error) => {
                    log::debug!("context-switches samples share the CPU rings: {error:#}");
                    self.switch_rings = false;
                    fd = spare;
                }
            }
        }
        if target.is_none() {
            target = cpu_ring;
        }
        let ring = target.map(|ring| self.rings[ring].raw_fd());
        // SAFETY: both are perf event fds we own, on the same CPU, with the same clock.
        if ring.is_none_or(|ring| unsafe { ioctls::SET_OUTPUT(fd.as_raw_fd(), ring) } != 0) {
            return Err(std::io::Error::last_os_error())
                .context("cannot give the context-switches event a ring buffer");
        }
        self.redirected.push(fd);
        Ok(())
    }

    /// Hands the ring buffers to a reader thread. Call [`Reader::finish`] only after
    /// [`Events::disable`]: the events keep the rings' descriptors until then.
    pub fn start_reader(&mut self) -> Result<Reader> {
        let rings = std::mem::take(&mut self.rings);
        self.reader_fds = rings.iter().map(RingBuffer::raw_fd).collect();
        Reader::start(rings)
    }

    /// Starts sampling (events of a launched child start by themselves at its exec).
    pub fn enable(&self) -> Result<()> {
        self.each_fd(|fd| {
            // SAFETY: an ioctl without pointer arguments on a perf event fd we own.
            unsafe { ioctls::ENABLE(fd, 0) }
        })
        .context("cannot enable the perf events")
    }

    /// Stops sampling; records already written stay readable.
    pub fn disable(&self) -> Result<()> {
        self.each_fd(|fd| {
            // SAFETY: as in `enable`.
            unsafe { ioctls::DISABLE(fd, 0) }
        })
        .context("cannot disable the perf events")
    }

    fn each_fd(&self, call: impl Fn(i32) -> i32) -> std::io::Result<()> {
        let fds = self
            .rings
            .iter()
            .map(RingBuffer::raw_fd)
            .chain(self.reader_fds.iter().copied())
            .chain(self.redirected.iter().map(AsRawFd::as_raw_fd));
        for fd in fds {
            if call(fd) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Room for the header, the callchain (127 frames at most by default) and the registers of a sample.
const SAMPLE_OVERHEAD_BYTES: usize = 1280;

/// A ring that cannot hold two samples loses nearly all of them: refuse it with the size to give.
fn check_ring_size(config: &EventConfig) -> Result<()> {
    let page = super::ring::page_size();
    let sample = config.stack_copy_bytes.unwrap_or(0) as usize + SAMPLE_OVERHEAD_BYTES;
    let needed_pages = (2 * sample).div_ceil(page).next_power_of_two();
    if config.ring_pages < needed_pages {
        bail!(
            "--mmap-pages {} cannot hold samples of {} bytes of stack each: give --mmap-pages {needed_pages} \
             or more, or a smaller --stack-size",
            config.ring_pages,
            config.stack_copy_bytes.unwrap_or(0)
        );
    }
    Ok(())
}

fn pid_arg(pid: u32) -> Result<i32> {
    i32::try_from(pid).map_err(|_| anyhow!("{pid} is not a valid PID"))
}

/// What a sampling event's samples carry, the same for both kinds so that one layout decodes
/// them: callchains, the user registers and stack copy unless `--unwind fp`, and, when a
/// `context-switches` event shares the rings, which event took the sample and its period.
fn sample_attr(
    config: &EventConfig,
    identified: bool,
    pid: i32,
    enable_on_exec: bool,
) -> bindings::perf_event_attr {
    let mut attr = bindings::perf_event_attr {
        size: std::mem::size_of::<bindings::perf_event_attr>() as u32,
        ..Default::default()
    };
    attr.sample_type = u64::from(
        bindings::PERF_SAMPLE_IP
            | bindings::PERF_SAMPLE_TID
            | bindings::PERF_SAMPLE_TIME
            | bindings::PERF_SAMPLE_CALLCHAIN,
    );
    if identified {
        attr.sample_type |=
            u64::from(bindings::PERF_SAMPLE_IDENTIFIER | bindings::PERF_SAMPLE_PERIOD);
    }
    if let Some(bytes) = config.stack_copy_bytes {
        attr.sample_type |=
            u64::from(bindings::PERF_SAMPLE_REGS_USER | bindings::PERF_SAMPLE_STACK_USER);
        attr.sample_regs_user = USER_REGS_MASK;
        // The kernel wants a multiple of 8.
        attr.sample_stack_user = bytes.min(MAX_STACK_COPY) & !7;
    }
    attr.set_disabled(1);
    attr.set_enable_on_exec(u64::from(enable_on_exec));
    attr.set_inherit(u64::from(config.inherit && pid != -1));
    attr.set_exclude_hv(1);
    attr
}

/// The `context-switches` event (see [`SwitchSampling::Exact`]): kernel mode included, since that
/// is where it fires; no side band and no switch records, which the sampling event beside it asks
/// for; the sampling event's clock, which sharing its ring requires.
fn open_switch_event(
    config: &EventConfig,
    pid: i32,
    cpu: u32,
    enable_on_exec: bool,
) -> std::io::Result<OwnedFd> {
    let mut attr = sample_attr(config, true, pid, enable_on_exec);
    attr.type_ = bindings::PERF_TYPE_SOFTWARE;
    attr.config = u64::from(bindings::PERF_COUNT_SW_CONTEXT_SWITCHES);
    match config.off_cpu_sample {
        0 => {
            // The kernel refuses a frequency over its limit (EINVAL), which it lowers by itself
            // when sampling interrupts take long.
            let limit = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(SWITCH_SAMPLES_PER_SECOND);
            attr.__bindgen_anon_1.sample_freq = SWITCH_SAMPLES_PER_SECOND.min(limit).max(1);
            attr.set_freq(1);
        }
        every => attr.__bindgen_anon_1.sample_period = u64::from(every),
    }
    attr.set_exclude_kernel(0);
    attr.set_exclude_callchain_kernel(u64::from(!config.kernel_callchains));
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    set_wakeup(&mut attr, config);
    super::side_band::open(&mut attr, pid, cpu as i32)
}

/// Wake the reader when a quarter of the buffer is full, not at every record.
fn set_wakeup(attr: &mut bindings::perf_event_attr, config: &EventConfig) {
    attr.set_watermark(1);
    let ring_bytes = config
        .ring_pages
        .saturating_mul(super::ring::page_size())
        .min(u32::MAX as usize) as u32;
    attr.__bindgen_anon_2.wakeup_watermark = ring_bytes / 4;
}

fn open_one(
    config: &EventConfig,
    identified: bool,
    pid: i32,
    cpu: u32,
    enable_on_exec: bool,
) -> std::io::Result<OwnedFd> {
    let mut attr = sample_attr(config, identified, pid, enable_on_exec);
    let (kind, event_config) = config.event.type_and_config();
    attr.type_ = kind;
    attr.config = event_config;
    attr.__bindgen_anon_1.sample_freq = config.frequency_hz;
    attr.set_freq(1);
    attr.set_exclude_kernel(u64::from(!config.kernel_mode));
    attr.set_exclude_callchain_kernel(u64::from(!(config.kernel_mode && config.kernel_callchains)));
    // Side band: code mapped, names (and execs), forks and exits of the sampled tasks.
    super::side_band::ask_for_side_band(&mut attr);
    if config.off_cpu_min.is_some() {
        attr.set_context_switch(1);
        attr.set_use_clockid(1);
        attr.clockid = libc::CLOCK_MONOTONIC;
    }
    set_wakeup(&mut attr, config);
    super::side_band::open(&mut attr, pid, cpu as i32)
}

/// Turns the kernel's errno into what the user can do about it.
fn explain_open_error(error: std::io::Error, event: SampledEvent, pid: i32) -> anyhow::Error {
    let errno = error.raw_os_error();
    if event.is_hardware() && matches!(errno, Some(libc::ENOENT | libc::EOPNOTSUPP)) {
        return anyhow!("{}", no_pmu_message(event));
    }
    if matches!(errno, Some(libc::EACCES | libc::EPERM)) {
        let what = if pid == -1 {
            "every CPU".to_owned()
        } else {
            format!("thread {pid}")
        };
        return anyhow!(
            "the kernel refused to sample {what} ({error}; kernel.perf_event_paranoid is {}): \
             profile your own processes, or run emberprof as root",
            crate::capture::backend::paranoid_level()
                .map(|level| level.to_string())
                .unwrap_or_else(|| "unknown".into())
        );
    }
    anyhow::Error::new(error).context(format!("cannot open the {} perf event", event.name()))
}

/// Every thread of these processes.
fn list_threads(pids: &[u32]) -> Result<BTreeSet<u32>> {
    let mut threads = BTreeSet::new();
    for &pid in pids {
        let dir = format!("/proc/{pid}/task");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Exited: nothing to sample, and the watch ends the recording.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("cannot list {dir}")),
        };
        threads.extend(
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()),
        );
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::super::records::{parse, PerfRecord};
    use super::*;

    /// This very thread sampled through a one-page ring: records wrap around its end many times
    /// and every one still decodes, with this process's PID and a stack copy.
    #[test]
    fn own_thread_through_a_wrapping_ring() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let config = EventConfig {
            event: SampledEvent::TaskClock,
            frequency_hz: 1000,
            kernel_mode: false,
            kernel_callchains: false,
            stack_copy_bytes: Some(512),
            inherit: false,
            ring_pages: 1,
            off_cpu_min: None,
            off_cpu_sample: 0,
        };
        let mut events = Events::open(&EventTargets::Threads(vec![tid]), &config).expect(
            "perf_event_open on this thread (kernel.perf_event_paranoid must be 2 or lower)",
        );
        events.enable().expect("enable");
        let mut records = Vec::new();
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            for _ in 0..100_000 {
                spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
            }
            for ring in &mut events.rings {
                assert_eq!(ring.drain(&mut records), 0, "undecodable ring contents");
            }
        }
        events.disable().expect("disable");
        let (mut samples, mut bytes) = (0, 0);
        for record in &records {
            bytes += record.len();
            match parse(record, events.layout()) {
                Some(PerfRecord::Sample(sample)) => {
                    assert_eq!(sample.pid, std::process::id());
                    assert!(sample.registers.is_some() && !sample.stack.is_empty());
                    // The test harness's other threads may show up now and then (seen once in CI):
                    // count this thread's samples only.
                    if sample.tid == tid {
                        samples += 1;
                    }
                }
                Some(_) => {}
                None => panic!("record did not decode: {record:?}"),
            }
        }
        assert!(samples >= 50, "only {samples} samples in 300 ms at 1000 Hz");
        assert!(
            bytes > 4 * super::super::ring::page_size(),
            "the ring never wrapped ({bytes} bytes)"
        );
    }
}
