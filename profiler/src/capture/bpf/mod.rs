//! The BPF backend as a capture source: the sampler's ring buffer and count/stack maps decoded into
//! [`Event`]s. Stacks the kernel counts in its maps are announced when first counted (count 0,
//! so they can be symbolized while their process lives) and delivered with their counts at each
//! checkpoint, when the BPF side is switched to the other generation of its maps and the old one is
//! read and emptied: the kernel maps never fill on long runs, and every sample of an instance that
//! ended before the switch is in hand after it.
//!
//! Roles: `sampler` loads, attaches and reads the BPF object (the only module that talks to aya),
//! `stats` names its counters, `mapping_events` records executable mappings as they are made (so
//! processes gone before their maps are read are named), and this module decodes and reports.

mod comm;
mod mapping_events;
mod offcpu;
mod offcpu_load;
mod python;
mod sampler;
mod stats;

use std::time::{Duration, Instant};

use anyhow::Result;
use emberprof_bpf::{Record, SampleKey, Stat, STACK_ID_IN_RECORD, STACK_ID_NONE};
use emberprof_symbolizer::{FramelessCode, ProcessKey, RawPythonStack, StackCopy, UserRegisters};

use comm::CommTexts;
pub use mapping_events::MappingEvents;
use offcpu::OffCpu;
pub use sampler::{online_cpu_count, ring_buffer_bytes, MapSizes, Sampler, SamplerConfig};
use sampler::{Notices, SamplerMaps, StackCache};
use stats::BpfStats;

use super::address_spaces::AddressSpaces;
use super::source::{
    Event, EventSink, Feedback, Source, SourceReport, StackEvent, Thread, UserStack, Weight,
};

/// How often the map generations are switched and the old one read and emptied.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// ... or sooner when a generation fills (see [`BpfSource::checkpoint_due`]), but not more often
/// than this.
const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

pub struct BpfSource {
    sampler: Sampler,
    /// The map generation in use, and when it was switched to.
    generation: u32,
    since: Instant,
    /// Keys added to the current generation, to switch before it fills.
    keys_in_generation: u64,
    /// Python stacks the current generation may hold beyond its keys' (stack copies carry one each,
    /// outside the count map).
    python_in_generation: u64,
    /// Stacks read from the maps of both generations.
    stack_cache: StackCache,
    checkpoints: u64,
    malformed: u64,
    /// `--unwind auto`: the BPF side judges stacks and wants plans and roots.
    judges_stacks: bool,
    /// Time in the BPF programs and their runs, read when sampling stops.
    run_time: (Duration, u64),
    /// Times a process's stack copy was raised (see `Sampler::stack_copy_exhausted`).
    raised_copies: u64,
    comm_texts: CommTexts,
    /// First-sample and instance-end notices, and the mapping records they are bound with.
    side_band: SideBand,
    /// `--off-cpu`: the off-CPU maps' reader.
    off_cpu: Option<OffCpu>,
}

/// What the BPF side says about processes, apart from their samples: its notices (first samples,
/// instance ends) and the kernel's mapping records.
struct SideBand {
    notices: Option<Notices>,
    /// Executable mappings as they are made, if the kernel let them be recorded.
    mapping_events: Option<MappingEvents>,
    /// Which executable mappings each PID had when (see `address_spaces`).
    spaces: AddressSpaces,
    malformed: u64,
}

impl SideBand {
    /// Hands over the pending notices, each with the mappings of its process. The notices are
    /// taken before the mapping records are read, so every record from before a notice is read
    /// with it (an exec's among them: a notice is bound to the right program).
    fn sync(&mut self, sink: &mut dyn EventSink) {
        let mut pending = Vec::new();
        if let Some(notices) = self.notices.as_mut() {
            notices.drain(|bytes| pending.push(bytes.to_vec()));
        }
        if let Some(events) = self.mapping_events.as_mut() {
            events.sync(&mut self.spaces, sink);
        }
        for bytes in &pending {
            match Record::parse(bytes) {
                Some(Record::ProcessSeen(record)) => {
                    let process = ProcessKey {
                        pid: record.tgid,
                        instance: record.instance,
                    };
                    self.spaces
                        .process_seen(process, Some(record.start_time), record.time, sink);
                }
                Some(Record::InstanceEnd(record)) => {
                    let process = ProcessKey {
                        pid: record.tgid,
                        instance: record.instance,
                    };
                    self.spaces.instance_ended(process);
                    sink.event(Event::InstanceEnded(process));
                }
                _ => self.malformed += 1,
            }
        }
    }
}

impl BpfSource {
    /// A loaded and attached sampler, from which nothing has been read yet, and the mapping
    /// records opened before it was attached.
    pub fn new(
        mut sampler: Sampler,
        judges_stacks: bool,
        mapping_events: Option<MappingEvents>,
    ) -> Self {
        let notices = sampler.take_notices();
        BpfSource {
            off_cpu: sampler
                .off_cpu()
                .map(|min| OffCpu::new(min, sampler.off_cpu_sample())),
            sampler,
            generation: 0,
            since: Instant::now(),
            keys_in_generation: 0,
            python_in_generation: 0,
            stack_cache: StackCache::default(),
            checkpoints: 0,
            malformed: 0,
            judges_stacks,
            run_time: (Duration::ZERO, 0),
            raised_copies: 0,
            comm_texts: CommTexts::default(),
            side_band: SideBand {
                notices,
                mapping_events,
                spaces: AddressSpaces::default(),
                malformed: 0,
            },
        }
    }

    /// Reads a generation's counted keys and hands them over with their counts.
    fn deliver_generation(&mut self, generation: u32, sink: &mut dyn EventSink) -> Result<()> {
        for (key, count) in self.sampler.read_counts(generation)? {
            let event = self.resolve(key, Vec::new(), Vec::new(), Weight::Samples, count)?;
            sink.event(Event::Stack(event));
        }
        // Emptied as it is read: nothing writes to the generation any more.
        if let Some(off_cpu) = &mut self.off_cpu {
            off_cpu.deliver(&mut self.sampler, generation, sink)?;
        }
        Ok(())
    }

    /// A sample with its map stack ids replaced by the stacks' frames, so samples of the same
    /// stacks meet whichever generation or path they came by.
    fn resolve(
        &mut self,
        key: SampleKey,
        kernel_inline: Vec<u64>,
        user_inline: Vec<u64>,
        weight: Weight,
        count: u64,
    ) -> Result<StackEvent<'static>> {
        let kernel = self.frames(key.generation, key.kernel_stack_id, kernel_inline)?;
        let user = match key.user_stack_id {
            STACK_ID_NONE => UserStack::None,
            id => UserStack::Walked(self.frames(key.generation, id, user_inline)?),
        };
        Ok(StackEvent {
            thread: self.comm_texts.thread(&key),
            kernel,
            user,
            python: self.python(&key)?,
            weight,
            count,
        })
    }

    /// The Python frames of a sample, from the generation's `python_stacks`.
    fn python(&mut self, key: &SampleKey) -> Result<Option<RawPythonStack>> {
        if key.python_stack == 0 {
            return Ok(None);
        }
        self.sampler
            .load_python_stack(key.generation, key.python_stack, &mut self.stack_cache)?;
        Ok(self
            .stack_cache
            .python(key.generation, key.python_stack)
            .map(python::raw_stack))
    }

    fn frames(&mut self, generation: u32, id: i32, inline: Vec<u64>) -> Result<Vec<u64>> {
        if id < 0 {
            return Ok(inline);
        }
        self.sampler
            .load_stack(generation, id, &mut self.stack_cache)?;
        Ok(self.stack_cache.frames(generation, id).to_vec())
    }
}

/// A streamed sample or a new key whose stacks are still map ids, resolved after the drain.
enum Deferred {
    Sample(SampleKey, Vec<u64>, Vec<u64>),
    NewKey(SampleKey),
}

impl Source for BpfSource {
    fn wait(&mut self, timeout: Duration) {
        let notices = self.side_band.notices.as_ref().map(Notices::fd);
        let fds: Vec<i32> = [Some(self.sampler.records_fd()), notices]
            .into_iter()
            .flatten()
            .collect();
        // Adaptive off-CPU sampling follows the switch rate even when no record comes, and the
        // records of sampled switch-outs do not wake the reader (offcpu_wakeup_flags).
        let timeout = match &self.off_cpu {
            Some(off_cpu) => timeout.min(
                off_cpu
                    .adaptive
                    .as_ref()
                    .map_or(offcpu::ADAPT_INTERVAL, |adaptive| adaptive.due_in()),
            ),
            None => timeout,
        };
        wait_readable(&fds, timeout);
    }

    /// New processes are announced at once, before the records after them (their first stack
    /// copies may follow directly), with the mappings recorded of them; the mapping records are
    /// read before each notice and stack copy, so those see every mapping made before them.
    fn read(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        let mut deferred = Vec::new();
        let mut malformed = 0;
        let side_band = &mut self.side_band;
        let comm_texts = &mut self.comm_texts;
        if let Some(adaptive) = self.off_cpu.as_mut().and_then(|o| o.adaptive.as_mut()) {
            adaptive.adapt(&mut self.sampler)?;
        }
        side_band.sync(sink);
        let stack_cache = &mut self.stack_cache;
        let mut python_copies = 0;
        let mut python_of = |maps: &SamplerMaps<'_>, key: &SampleKey| -> Option<RawPythonStack> {
            if key.python_stack == 0 {
                return None;
            }
            python_copies += 1;
            if let Err(error) =
                maps.load_python_stack(key.generation, key.python_stack, stack_cache)
            {
                log::warn!("{error:#}");
            }
            stack_cache
                .python(key.generation, key.python_stack)
                .map(python::raw_stack)
        };
        self.sampler
            .drain_records(|maps, bytes| match Record::parse(bytes) {
                // Notices travel in their own ring buffer.
                Some(Record::ProcessSeen(_) | Record::InstanceEnd(_)) => malformed += 1,
                Some(Record::NewKey(key)) => deferred.push(Deferred::NewKey(key)),
                Some(Record::Sample(record)) => deferred.push(Deferred::Sample(
                    record.key,
                    inline_stack(
                        record.key.kernel_stack_id,
                        &record.kernel_ips,
                        record.kernel_len,
                    ),
                    inline_stack(record.key.user_stack_id, &record.user_ips, record.user_len),
                )),
                Some(Record::UserStack(record, stack)) => {
                    // Its process's notice, and every mapping made before it, first.
                    side_band.sync(sink);
                    let thread = comm_texts.thread(&record.key);
                    let python = python_of(maps, &record.key);
                    sink.event(copied_stack(
                        thread,
                        python,
                        record,
                        stack,
                        Weight::Samples,
                        1,
                    ))
                }
                Some(Record::OffCpuEnd(record)) => sink.event(Event::OffCpuEnded {
                    tid: record.tid,
                    nanos: record.nanos,
                }),
                Some(Record::OffCpuSample(record)) => sink.event(Event::Stack(StackEvent {
                    thread: comm_texts.thread(&record.key),
                    kernel: inline_stack(
                        record.key.kernel_stack_id,
                        &record.kernel_ips,
                        record.kernel_len,
                    ),
                    user: match record.key.user_stack_id {
                        STACK_ID_NONE => UserStack::None,
                        id => {
                            UserStack::Walked(inline_stack(id, &record.user_ips, record.user_len))
                        }
                    },
                    python: python_of(maps, &record.key),
                    weight: Weight::OffCpuUntilEnded,
                    count: 0,
                })),
                Some(Record::OffCpuStack(record, stack)) => {
                    side_band.sync(sink);
                    let thread = comm_texts.thread(&record.key);
                    let python = python_of(maps, &record.key);
                    sink.event(copied_stack(
                        thread,
                        python,
                        record,
                        stack,
                        Weight::OffCpuUntilEnded,
                        0,
                    ))
                }
                None => malformed += 1,
            });
        // Notices of the samples in the maps, which are delivered after this.
        self.side_band.sync(sink);
        self.side_band.spaces.end_round();
        self.malformed += malformed + std::mem::take(&mut self.side_band.malformed);
        self.python_in_generation += python_copies;
        // Their stacks may be map ids: take the frames while the generation holds them.
        for record in deferred {
            let event = match record {
                Deferred::Sample(key, kernel, user) => {
                    self.resolve(key, kernel, user, Weight::Samples, 1)?
                }
                Deferred::NewKey(key) => {
                    self.keys_in_generation += 1;
                    self.resolve(key, Vec::new(), Vec::new(), Weight::Samples, 0)?
                }
            };
            sink.event(Event::Stack(event));
        }
        Ok(())
    }

    /// The interval passed, or the generation is half full (of keys, or of stacks: a new key
    /// brings up to two native ones and one Python one).
    fn checkpoint_due(&self) -> bool {
        let sizes = self.sampler.map_sizes();
        let keys = self.keys_in_generation;
        let elapsed = self.since.elapsed();
        elapsed >= CHECKPOINT_INTERVAL
            || (elapsed >= MIN_CHECKPOINT_INTERVAL
                && (keys * 2 >= u64::from(sizes.counts)
                    || keys * 4 >= u64::from(sizes.stacks)
                    // A new key or a stack copy brings at most one Python stack.
                    || (keys + self.python_in_generation) * 2 >= u64::from(sizes.python_stacks)))
    }

    /// Switches the BPF side to the other map generation, waits until no program can still be
    /// writing to the old one, hands over what it holds and empties it.
    fn checkpoint(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        let old = self.generation;
        self.generation ^= 1;
        self.since = Instant::now();
        self.checkpoints += 1;
        self.sampler.switch_generation(self.generation)?;
        wait_for_bpf_programs();
        // Streamed samples and notices of the old generation are in the ring buffer now.
        self.read(sink)?;
        self.deliver_generation(old, sink)?;
        self.sampler.clear_generation(old, &mut self.stack_cache)?;
        self.keys_in_generation = 0;
        self.python_in_generation = 0;
        log::debug!("map generation {old} read and emptied");
        Ok(())
    }

    fn wants_feedback(&self) -> bool {
        self.judges_stacks
    }

    fn apply(&mut self, feedback: Feedback) -> Result<()> {
        match feedback {
            Feedback::Plan(process, plan) => match &plan {
                FramelessCode::None => self.sampler.set_frameless_code(process.pid, &[]),
                FramelessCode::Everywhere => self.sampler.unwind_process_with_dwarf(process.pid),
                FramelessCode::Mappings(mappings) => {
                    self.sampler.set_frameless_code(process.pid, mappings)
                }
            },
            Feedback::KnownRoot {
                instance,
                address,
                known,
            } => self.sampler.set_known_root(instance, address, known),
            Feedback::StackCopyExhausted { instance, copied } => {
                if let Some(bytes) = self.sampler.stack_copy_exhausted(instance, copied)? {
                    self.raised_copies += 1;
                    log::debug!(
                        "instance {instance}: stacks end at the copy's edge, copying {bytes} bytes"
                    );
                }
                Ok(())
            }
            Feedback::Python { process, runtime } => {
                let value = python::process_value(process.instance, &runtime)?;
                log::debug!(
                    "process {} instance {}: walking its Python frames",
                    process.pid,
                    process.instance
                );
                self.sampler.set_python(process.pid, &value)
            }
        }
    }

    fn samples(&self) -> u64 {
        self.sampler.stats().map(|s| s.kept()).unwrap_or(0)
    }

    fn stop(&mut self) -> Result<()> {
        self.sampler.detach()?;
        if let Some(off_cpu) = &mut self.off_cpu {
            off_cpu.stopped();
        }
        self.run_time = self.sampler.programs_run_time();
        Ok(())
    }

    /// Records written before the detach, then both generations: the current one, and the
    /// previous one if samples were still on their way to it at the last switch. Nothing writes
    /// to them now, and they are freed with the sampler.
    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        self.read(sink)?;
        for generation in [self.generation ^ 1, self.generation] {
            self.deliver_generation(generation, sink)?;
        }
        if let Some(off_cpu) = &mut self.off_cpu {
            off_cpu.deliver_waiting(&mut self.sampler, sink)?;
        }
        Ok(())
    }

    fn report(&self) -> Result<SourceReport> {
        let stats = self.sampler.stats()?;
        Ok(SourceReport {
            lost: stats.lost(),
            malformed: self.malformed,
            checkpoints: self.checkpoints,
            notes: {
                let mut notes = notes(&stats, self.malformed, self.checkpoints, self.run_time);
                if let Some(events) = &self.side_band.mapping_events {
                    notes.extend(events.notes());
                }
                notes.extend(self.side_band.spaces.notes());
                if self.off_cpu.is_some() {
                    notes.extend(offcpu::notes(
                        &offcpu::stats(&self.sampler)?,
                        self.sampler.off_cpu_sample(),
                        self.off_cpu.as_ref().and_then(|o| o.adaptive.as_ref()),
                    ));
                }
                notes.extend(python::notes(&self.sampler.python_stats()?));
                if self.raised_copies > 0 {
                    notes.push((
                        log::Level::Info,
                        format!(
                            "stack copy raised {} times for processes whose stacks ended at its \
                             edge (frames bigger than --stack-size)",
                            self.raised_copies
                        ),
                    ));
                }
                notes
            },
        })
    }
}

/// What the BPF counters say beyond the totals, for the summary.
fn notes(
    stats: &BpfStats,
    malformed: u64,
    checkpoints: u64,
    (run_time, runs): (Duration, u64),
) -> Vec<(log::Level, String)> {
    let mut notes = Vec::new();
    let lost = stats.lost() + malformed;
    if lost > 0 {
        notes.push((
            log::Level::Warn,
            format!(
                "{lost} samples lost: the ring buffer was full ({} streamed samples and stack \
                 copies, {malformed} malformed records); fewer distinct stacks, a lower -F or \
                 fewer targets avoid it",
                stats.lost()
            ),
        ));
    }
    if stats.get(Stat::Streamed) > 0 {
        notes.push((
            log::Level::Info,
            format!(
                "{} samples went through the ring buffer (stack collisions {}, stack map full {}, \
                 count map full {})",
                stats.get(Stat::Streamed),
                stats.get(Stat::StreamStackCollision),
                stats.get(Stat::StreamStackMapFull),
                stats.get(Stat::StreamCountsFull),
            ),
        ));
    }
    let copied_by_auto = [
        Stat::CopyUnjudged,
        Stat::CopyFramelessIp,
        Stat::CopyFramelessCaller,
        Stat::CopyUnknownRoot,
    ];
    if copied_by_auto.iter().any(|&stat| stats.get(stat) > 0) {
        notes.push((
            log::Level::Info,
            format!(
                "--unwind auto copied stacks: {} of processes not judged yet, {} at frameless \
                 code, {} with a frameless caller, {} with a chain ending in frameless code that \
                 is no learned root; {} frame-pointer walks ended at a learned root",
                stats.get(Stat::CopyUnjudged),
                stats.get(Stat::CopyFramelessIp),
                stats.get(Stat::CopyFramelessCaller),
                stats.get(Stat::CopyUnknownRoot),
                stats.get(Stat::FpKnownRoot),
            ),
        ));
    }
    let fallbacks = stats.get(Stat::StackCopyFallback);
    if fallbacks > 0 {
        // Not lost, but possibly wrong: a frame-pointer walk through frameless code skips frames.
        notes.push((
            log::Level::Warn,
            format!(
                "{fallbacks} user stacks needed a copy for DWARF unwinding but the ring buffer \
                 was full; they were walked through frame pointers and may miss frames in \
                 frameless code"
            ),
        ));
    }
    if runs > 0 {
        notes.push((
            log::Level::Info,
            format!(
                "BPF programs ran {runs} times for {:.6} s in all ({:.2} µs a run; charged to \
                 the sampled tasks, not to emberprof)",
                run_time.as_secs_f64(),
                run_time.as_secs_f64() * 1e6 / runs as f64
            ),
        ));
    }
    if checkpoints > 0 {
        notes.push((
            log::Level::Info,
            format!("kernel maps switched and emptied {checkpoints} times while recording"),
        ));
    }
    if stats.unaccounted() != 0 {
        notes.push((
            log::Level::Warn,
            format!(
                "{} BPF invocations unaccounted for (counter bug?)",
                stats.unaccounted()
            ),
        ));
    }
    notes
}

/// A sample (or a switch-out) with its user stack copied.
fn copied_stack<'a>(
    thread: Thread,
    python: Option<RawPythonStack>,
    record: &emberprof_bpf::UserStackRecord,
    stack: &'a [u8],
    weight: Weight,
    count: u64,
) -> Event<'a> {
    Event::Stack(StackEvent {
        thread,
        kernel: inline_stack(
            record.key.kernel_stack_id,
            &record.kernel_ips,
            record.kernel_len,
        ),
        user: UserStack::Copied {
            registers: UserRegisters {
                ip: record.ip,
                sp: record.sp,
                bp: record.bp,
                general: Some(record.gp_regs),
            },
            stack: StackCopy {
                start: record.stack_start(),
                bytes: stack,
            },
        },
        python,
        weight,
        count,
    })
}

fn inline_stack(id: i32, ips: &[u64], len: u32) -> Vec<u64> {
    if id == STACK_ID_IN_RECORD {
        ips[..(len as usize).min(ips.len())].to_vec()
    } else {
        Vec::new()
    }
}

/// Waits for an RCU grace period: every BPF program running when this is called has returned.
/// membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu() from userspace; where it is unavailable
/// (nohz_full kernels refuse it), a sleep far longer than any program run does the same in practice.
fn wait_for_bpf_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes integer arguments and touches no memory of ours.
    let result = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if result != 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sleeps until one of `fds` is readable or `timeout` passes (or a signal arrives).
fn wait_readable(fds: &[i32], timeout: Duration) {
    let mut poll_fds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: valid pollfds. EINTR (a signal) just ends the wait early.
    unsafe {
        libc::poll(
            poll_fds.as_mut_ptr(),
            poll_fds.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
}
