//! Capture -> profile: every address of the captured stacks symbolized once, placed in its module
//! (mapping) at its file offset, and each sample turned into a list of locations, outermost first.
//! Truncated user stacks are judged and counted here, once, for every output.

use std::collections::HashMap;
use std::sync::Arc;

use emberprof_symbolizer::{
    stack_root, Frame, FrameAddress, FrameKind, ModuleId, ProcessKey, Symbol, Symbolizer,
    UserLocation,
};

use super::intern::Interner;
use super::python::{interleave, Item, NativeKind};
use super::truncation::is_truncated;
use super::values::{ValueType, OFF_CPU};
use super::{
    Location, LocationId, Mapping, MappingId, MappingKind, Metadata, Profile, Runtime, Sample,
    Values, EMPTY_STACK, OFF_CPU_FRAME,
};
use crate::sample::StackSample;
use crate::symbols::{symbolize_stacks, StackSymbols};

/// A frame-pointer walk can run past a thread's entry into garbage (a stale frame pointer beyond
/// Go's `runtime.mstart`): when every frame outside the outermost entry function is unnamed, the
/// stack ends at that entry. `symbol(i)` is the symbol of user frame `i`, innermost first; returns
/// how many frames to keep, if fewer than `len`.
fn end_of_real_frames<'a>(
    len: usize,
    symbol: impl Fn(usize) -> Option<&'a Symbol>,
) -> Option<usize> {
    let entry = (0..len)
        .rev()
        .find(|&index| symbol(index).is_some_and(stack_root::completes_stack))?;
    let beyond = entry + 1..len;
    let garbage = !beyond.is_empty()
        && beyond
            .clone()
            .all(|index| !matches!(symbol(index), Some(Symbol::Named(_))));
    garbage.then_some(entry + 1)
}

/// The pseudo-module of kernel frames, as perf and pprof name it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// The pseudo-module of JIT frames named from perf maps.
pub const JIT_MAPPING: &str = "[jit]";

/// Samples built into one profile part at a time (see [`split_by_process`]): small, because
/// building holds the symbol of every distinct address of a part's processes until it is merged.
pub const PART_SAMPLES: usize = 256;

/// `samples` split into parts of about [`PART_SAMPLES`], each pid's samples whole in one part (the
/// label budget counts processes per part: see `policy`), to be built and merged one after the
/// other, so that a map switch of a fork-heavy recording (thousands of short-lived processes, each
/// its own addresses) does not hold the symbols of them all at once.
pub fn split_by_process(mut samples: Vec<StackSample>) -> Vec<Vec<StackSample>> {
    samples.sort_unstable_by_key(StackSample::process);
    let mut parts = Vec::new();
    while samples.len() > PART_SAMPLES {
        let len = samples.len();
        let same_pid = |at: usize| samples[at - 1].pid == samples[at].pid;
        // Forward to where the next pid starts: the part gets no more than its size ...
        let mut at = len - PART_SAMPLES;
        while at < len && same_pid(at) {
            at += 1;
        }
        if at == len {
            // ... unless the last pid alone has more: then it is a part of its own.
            at = len - 1;
            while at > 0 && same_pid(at) {
                at -= 1;
            }
        }
        if at == 0 {
            break;
        }
        parts.push(samples.split_off(at));
    }
    parts.push(samples);
    parts
}

/// Symbolizes every address of `samples` (see [`symbolize_stacks`]) and builds the profile;
/// `metadata` is completed with the truncation and unnamed-frame counts.
pub fn build(samples: &[StackSample], symbolizer: &mut Symbolizer, metadata: Metadata) -> Profile {
    let symbols = symbolize_stacks(samples, symbolizer);
    let mut builder = Builder {
        symbolizer,
        symbols: &symbols,
        interner: Interner::new(metadata),
        mapping_ids: HashMap::new(),
        user_locations: HashMap::new(),
        kernel_locations: HashMap::new(),
    };
    for sample in samples {
        builder.add(sample);
    }
    builder.interner.into_profile()
}

/// A mapping as the symbolizer knows it: cheaper to look up than the [`Mapping`] it becomes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum MappingKey {
    Module(ModuleId),
    Unreadable(Arc<str>),
    Kernel,
    Jit,
    Runtime(Runtime),
}

struct Builder<'a> {
    symbolizer: &'a Symbolizer,
    symbols: &'a StackSymbols,
    interner: Interner,
    mapping_ids: HashMap<MappingKey, MappingId>,
    /// Each address's location, so that an address met again is not placed and named again.
    user_locations: HashMap<(ProcessKey, FrameAddress), LocationId>,
    kernel_locations: HashMap<FrameAddress, LocationId>,
}

impl Builder<'_> {
    fn add(&mut self, sample: &StackSample) {
        let trimmed;
        let sample = match self.end_of_real_frames(sample) {
            Some(len) => {
                trimmed = StackSample {
                    user_ips: sample.user_ips[..len].to_vec(),
                    ..sample.clone()
                };
                &trimmed
            }
            None => sample,
        };
        let process = sample.process();
        let metadata = self.interner.metadata_mut();
        // The summary's figures count samples: an off-CPU sample's count is nanoseconds.
        let counted = !sample.off_cpu;
        if counted {
            metadata.truncation.count_path(sample);
        }
        let mut truncated = false;
        // An empty user stack (a kernel thread) is not judged.
        if let Some(outermost) = self.symbols.user_outermost_first(sample).next() {
            if is_truncated(sample, outermost) {
                truncated = true;
                if counted {
                    metadata
                        .truncation
                        .count(sample, outermost, self.symbolizer);
                }
            }
        }
        for symbol in self
            .symbols
            .user_outermost_first(sample)
            .chain(self.symbols.kernel_outermost_first(sample))
        {
            if let Symbol::Unknown { reason, .. } = symbol {
                if counted {
                    *metadata.unknown_frames.entry(*reason).or_default() += sample.count;
                }
            }
        }
        let mut stack = EMPTY_STACK;
        match &sample.python {
            None => {
                for (index, &ip) in sample.user_ips.iter().enumerate().rev() {
                    let address = FrameAddress::from_stack_index(index, ip);
                    let location = self.user_location(process, address);
                    stack = self.interner.call(stack, location);
                }
            }
            Some(python) => {
                let kind = |index: usize| self.native_kind(sample, index);
                for item in interleave(sample.user_ips.len(), kind, python) {
                    let location = match item {
                        Item::Native(index) => {
                            let ip = sample.user_ips[index];
                            self.user_location(process, FrameAddress::from_stack_index(index, ip))
                        }
                        Item::Python(frame) => self.python_location(frame.clone()),
                        Item::Truncated => self.python_location(python_truncated_frame()),
                    };
                    stack = self.interner.call(stack, location);
                }
            }
        }
        // An off-CPU stack is taken in the sched_switch tracepoint, the BPF side skipping its own
        // frames. With one program on the tracepoint the kernel calls it directly; with more (two
        // emberprof runs, or another tool) through __traceiter_sched_switch, one frame the skip
        // does not cover: it is not where the thread waits.
        let dispatch = match sample.off_cpu {
            true => sample
                .kernel_ips
                .iter()
                .enumerate()
                .take_while(|&(index, &ip)| {
                    self.is_tracepoint_dispatch(FrameAddress::from_stack_index(index, ip))
                })
                .count(),
            false => 0,
        };
        for (index, &ip) in sample.kernel_ips.iter().enumerate().skip(dispatch).rev() {
            let location = self.kernel_location(FrameAddress::from_stack_index(index, ip));
            stack = self.interner.call(stack, location);
        }
        let values = if sample.off_cpu {
            let leaf = self.off_cpu_location();
            stack = self.interner.call(stack, leaf);
            let mut values = Values::default();
            if let Some(index) = self.interner.value_index(ValueType::of(OFF_CPU)) {
                values.set(index, sample.count);
            }
            values
        } else {
            Values::count(sample.count)
        };
        let process_name = Some(self.interner.name(&sample.process_name));
        let thread_name = Some(self.interner.name(&sample.thread_name));
        self.interner.add_sample(Sample {
            stack,
            values,
            pid: Some(sample.pid),
            tid: Some(sample.tid),
            process_name,
            thread_name,
            truncated,
        });
    }

    /// What native user frame `index` of `sample` is to Python frames (see `python`).
    fn native_kind(&self, sample: &StackSample, index: usize) -> NativeKind {
        let address = FrameAddress::from_stack_index(index, sample.user_ips[index]);
        match self.symbols.user(sample.process(), address) {
            Some(Symbol::Named(frames)) => frames.first().map_or(NativeKind::Other, |f| {
                NativeKind::of(&f.name, f.kind == FrameKind::Jit)
            }),
            _ => NativeKind::Other,
        }
    }

    fn python_location(&mut self, frame: Frame) -> LocationId {
        let mapping = self.mapping(MappingKey::Runtime(Runtime::Python));
        self.interner
            .location(Location::interpreted(mapping, frame))
    }

    /// The user frames of `sample` to keep, if fewer than it has (see [`end_of_real_frames`]).
    fn end_of_real_frames(&self, sample: &StackSample) -> Option<usize> {
        let process = sample.process();
        end_of_real_frames(sample.user_ips.len(), |index| {
            self.symbols.user(
                process,
                FrameAddress::from_stack_index(index, sample.user_ips[index]),
            )
        })
    }

    fn user_location(&mut self, process: ProcessKey, address: FrameAddress) -> LocationId {
        if let Some(&id) = self.user_locations.get(&(process, address)) {
            return id;
        }
        let lookup = address.lookup_address();
        let placed = self
            .symbolizer
            .processes()
            .get(process)
            .map(|snapshot| snapshot.locate(lookup))
            .unwrap_or(UserLocation::Unmapped);
        let symbol = self.symbols.user(process, address);
        let frames = match symbol {
            Some(Symbol::Named(frames)) => frames.clone(),
            _ => Vec::new(),
        };
        let (mapping, offset) = match placed {
            UserLocation::Module {
                module,
                file_offset,
            } => (Some(MappingKey::Module(module)), file_offset),
            UserLocation::UnreadableModule { name, file_offset } => {
                (Some(MappingKey::Unreadable(name)), file_offset)
            }
            UserLocation::Unmapped => match symbol {
                Some(Symbol::Unknown {
                    module: Some(name),
                    offset,
                    ..
                }) => (Some(MappingKey::Unreadable(name.clone())), *offset),
                _ if frames.first().is_some_and(|f| f.kind == FrameKind::Jit) => {
                    (Some(MappingKey::Jit), lookup)
                }
                // Outside every mapping (anonymous memory, a process gone before its map was
                // read): the address names nothing, and differs in every process (its layout is
                // randomized), so all such frames share one `[unknown]` location rather than
                // adding one per process to a long recording.
                _ => (None, 0),
            },
        };
        let location = Location {
            mapping: mapping.map(|key| self.mapping(key)),
            address: offset,
            frames,
            in_kernel: false,
        };
        let id = self.interner.location(location);
        self.user_locations.insert((process, address), id);
        id
    }

    /// The `[off-cpu]` leaf: in no mapping (it is no code), named so that every output shows it
    /// and pprof keeps it as a function of its own.
    fn off_cpu_location(&mut self) -> LocationId {
        self.interner.location(Location {
            mapping: None,
            address: 0,
            frames: vec![Frame::new(OFF_CPU_FRAME, FrameKind::User)],
            in_kernel: false,
        })
    }

    /// Whether a kernel address is in the code that calls a tracepoint's programs.
    fn is_tracepoint_dispatch(&self, address: FrameAddress) -> bool {
        match self.symbols.kernel(address) {
            Some(Symbol::Named(frames)) => frames.first().is_some_and(|frame| {
                frame.name.starts_with("__traceiter_") || frame.name.starts_with("bpf_trace_run")
            }),
            _ => false,
        }
    }

    fn kernel_location(&mut self, address: FrameAddress) -> LocationId {
        if let Some(&id) = self.kernel_locations.get(&address) {
            return id;
        }
        let frames = match self.symbols.kernel(address) {
            Some(Symbol::Named(frames)) => frames.clone(),
            _ => Vec::new(),
        };
        let location = Location {
            mapping: Some(self.mapping(MappingKey::Kernel)),
            address: address.lookup_address(),
            frames,
            in_kernel: true,
        };
        let id = self.interner.location(location);
        self.kernel_locations.insert(address, id);
        id
    }

    fn mapping(&mut self, key: MappingKey) -> MappingId {
        if let Some(&id) = self.mapping_ids.get(&key) {
            return id;
        }
        let mapping = match &key {
            MappingKey::Module(module) => {
                let module = self.symbolizer.modules().get(*module);
                Mapping {
                    path: Arc::from(module.mapped_path.to_string_lossy().as_ref()),
                    display_name: module.display_name.clone(),
                    build_id: module.build_id().map(|id| hex(&id)),
                    kind: MappingKind::User,
                }
            }
            MappingKey::Unreadable(name) => Mapping {
                path: name.clone(),
                display_name: name.clone(),
                build_id: None,
                kind: MappingKind::User,
            },
            MappingKey::Kernel => pseudo_mapping(KERNEL_MAPPING, MappingKind::Kernel),
            MappingKey::Jit => pseudo_mapping(JIT_MAPPING, MappingKind::Jit),
            MappingKey::Runtime(runtime) => runtime.mapping(),
        };
        let id = self.interner.mapping(mapping);
        self.mapping_ids.insert(key, id);
        id
    }
}

/// The frame standing for the outer Python frames of a stack deeper than the walker's bound.
fn python_truncated_frame() -> Frame {
    Frame::new("[python: outer frames not walked]", FrameKind::User)
}

fn pseudo_mapping(name: &str, kind: MappingKind) -> Mapping {
    Mapping {
        path: Arc::from(name),
        display_name: Arc::from(name),
        build_id: None,
        kind,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use emberprof_symbolizer::{ProcessKey, Symbolizer};

    use super::*;
    use crate::sample::UserStackSource;

    /// Parts hold at most [`PART_SAMPLES`] samples (more only for one process that has more), each
    /// pid in one part, every sample once.
    #[test]
    fn parts_keep_processes_whole() {
        let sample = |pid, instance| StackSample {
            pid,
            tid: pid,
            instance,
            process_name: "p".into(),
            thread_name: "p".into(),
            kernel_ips: vec![],
            user_ips: vec![],
            user_stack: UserStackSource::None,
            python: None,
            count: 1,
            off_cpu: false,
        };
        // Pid 7 alone has more than a part; 4,000 others have one to three samples, two instances.
        let mut samples: Vec<StackSample> = (0..3 * PART_SAMPLES).map(|_| sample(7, 1)).collect();
        for pid in 1000..5000 {
            for n in 0..pid % 3 + 1 {
                samples.push(sample(pid, 1 + n % 2));
            }
        }
        let total = samples.len();
        let parts = split_by_process(samples);
        assert!(parts.len() > 5, "{} parts", parts.len());
        let mut part_of = HashMap::new();
        for (index, part) in parts.iter().enumerate() {
            let pids: std::collections::HashSet<u32> = part.iter().map(|s| s.pid).collect();
            assert!(
                part.len() <= PART_SAMPLES || pids.len() == 1,
                "part {index}: {} samples of {} pids",
                part.len(),
                pids.len()
            );
            for pid in pids {
                assert_eq!(part_of.insert(pid, index), None, "pid {pid} in two parts");
            }
        }
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), total);
    }

    /// Addresses outside every mapping of the process share one `[unknown]` location, whatever
    /// they are: they differ per process and would otherwise grow a long recording's profile.
    #[test]
    fn stacks_end_at_an_entry_with_only_garbage_beyond() {
        use emberprof_symbolizer::{Frame, UnknownReason};
        let named = |name: &str| Symbol::Named(vec![Frame::new(name, FrameKind::User)]);
        let unknown = Symbol::Unknown {
            module: None,
            offset: 0,
            reason: UnknownReason::NotInModule,
        };
        let end = |frames: &[&Symbol]| end_of_real_frames(frames.len(), |i| Some(frames[i]));
        let (work, mstart, rt0) = (
            named("runtime.sysmon"),
            named("runtime.mstart"),
            named("runtime.rt0_go"),
        );
        // Innermost first: sysmon, mstart, then three garbage frames: cut after mstart.
        assert_eq!(
            end(&[&work, &mstart, &unknown, &unknown, &unknown]),
            Some(2)
        );
        // A named frame beyond the entry is real (mstart called from rt0_go): nothing cut.
        assert_eq!(end(&[&work, &mstart, &rt0]), None);
        assert_eq!(end(&[&work, &mstart, &unknown, &rt0]), None);
        // Complete already, or no entry at all: nothing cut.
        assert_eq!(end(&[&work, &mstart]), None);
        assert_eq!(end(&[&work, &unknown, &unknown]), None);
        assert_eq!(end(&[]), None);
    }

    /// Off-CPU time is its own value under an `[off-cpu]` leaf, apart from the samples of the same
    /// stack; with CPU time added, the types read samples, cpu, off_cpu and fold to microseconds.
    #[test]
    fn off_cpu_samples_get_their_leaf_and_value() {
        use crate::output::{fold, FoldOptions};
        use crate::profile::{EndedLabels, MergedProfile};
        let pid = std::process::id();
        let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
        let sample = |off_cpu, count| StackSample {
            pid,
            tid: pid,
            instance: 1,
            process_name: "tester".into(),
            thread_name: "tester".into(),
            kernel_ips: vec![],
            user_ips: vec![0x100],
            user_stack: UserStackSource::None,
            python: None,
            count,
            off_cpu,
        };
        let samples = [
            sample(false, 3),
            sample(true, 60_000_400),
            sample(true, 600),
        ];
        let part = build(&samples, &mut symbolizer, Metadata::default());
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        merged.add(part);
        let profile = merged.finish(Metadata {
            frequency_hz: Some(100),
            ..Metadata::default()
        });
        let types: Vec<&str> = profile
            .value_types
            .as_slice()
            .iter()
            .map(|t| &*t.name)
            .collect();
        assert_eq!(types, ["samples", "cpu", "off_cpu"]);
        let folded = fold(&profile, &FoldOptions::default()).expect("fold");
        let lines: Vec<String> = folded.lines().collect();
        assert_eq!(
            lines,
            ["tester;[unknown] 30000", "tester;[unknown];[off-cpu] 60001"]
        );
    }

    #[test]
    fn unmapped_addresses_share_one_location() {
        let pid = std::process::id();
        let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
        symbolizer
            .process_seen(ProcessKey { pid, instance: 1 })
            .expect("snapshot of this test process");
        // Below mmap_min_addr: never mapped.
        let sample = StackSample {
            pid,
            tid: pid,
            instance: 1,
            process_name: "tester".into(),
            thread_name: "tester".into(),
            kernel_ips: vec![],
            user_ips: vec![0x100, 0x200 + 1],
            user_stack: UserStackSource::None,
            python: None,
            count: 1,
            off_cpu: false,
        };
        let profile = build(&[sample], &mut symbolizer, Metadata::default());
        assert_eq!(profile.locations.len(), 1, "{:?}", profile.locations);
        assert_eq!(profile.locations[0].mapping, None);
        assert_eq!(profile.locations[0].address, 0);
        assert_eq!(
            profile.stacks.outermost_first(profile.samples[0].stack),
            [0, 0]
        );
    }
}
