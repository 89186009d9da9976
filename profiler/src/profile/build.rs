//! Capture -> profile: every address of the captured stacks symbolized once, placed in its module
//! (mapping) at its file offset, and each sample turned into a list of locations, outermost first.
//! Truncated user stacks are judged and counted here, once, for every output.

use std::collections::HashMap;
use std::sync::Arc;

use emberprof_symbolizer::{
    FrameAddress, FrameKind, ModuleId, ProcessKey, Symbol, Symbolizer, UserLocation,
};

use super::truncation::is_truncated;
use super::{Location, LocationId, Mapping, MappingId, MappingKind, Metadata, Profile, Sample};
use crate::sample::StackSample;
use crate::symbols::{symbolize_stacks, StackSymbols};

/// The pseudo-module of kernel frames, as perf and pprof name it.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// The pseudo-module of JIT frames named from perf maps.
pub const JIT_MAPPING: &str = "[jit]";

/// Symbolizes every address of `samples` (see [`symbolize_stacks`]) and builds the profile;
/// `metadata` is completed with the truncation and unnamed-frame counts.
pub fn build(samples: &[StackSample], symbolizer: &mut Symbolizer, metadata: Metadata) -> Profile {
    let symbols = symbolize_stacks(samples, symbolizer);
    let mut builder = Builder {
        symbolizer,
        symbols: &symbols,
        profile: Profile {
            metadata,
            ..Profile::default()
        },
        mapping_ids: HashMap::new(),
        location_ids: HashMap::new(),
        user_locations: HashMap::new(),
        kernel_locations: HashMap::new(),
    };
    for sample in samples {
        builder.add(sample);
    }
    builder.profile
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum MappingKey {
    Module(ModuleId),
    Unreadable(Arc<str>),
    Kernel,
    Jit,
}

struct Builder<'a> {
    symbolizer: &'a Symbolizer,
    symbols: &'a StackSymbols,
    profile: Profile,
    mapping_ids: HashMap<MappingKey, MappingId>,
    location_ids: HashMap<Location, LocationId>,
    user_locations: HashMap<(ProcessKey, FrameAddress), LocationId>,
    kernel_locations: HashMap<FrameAddress, LocationId>,
}

impl Builder<'_> {
    fn add(&mut self, sample: &StackSample) {
        let process = sample.process();
        let metadata = &mut self.profile.metadata;
        metadata.truncation.count_path(sample);
        let mut truncated = false;
        // An empty user stack (a kernel thread) is not judged.
        if let Some(outermost) = self.symbols.user_outermost_first(sample).next() {
            if is_truncated(sample, outermost) {
                truncated = true;
                metadata
                    .truncation
                    .count(sample, outermost, self.symbolizer);
            }
        }
        for symbol in self
            .symbols
            .user_outermost_first(sample)
            .chain(self.symbols.kernel_outermost_first(sample))
        {
            if let Symbol::Unknown { reason, .. } = symbol {
                *metadata.unknown_frames.entry(*reason).or_default() += sample.count;
            }
        }
        let mut stack = Vec::with_capacity(sample.user_ips.len() + sample.kernel_ips.len());
        for (index, &ip) in sample.user_ips.iter().enumerate().rev() {
            stack.push(self.user_location(process, FrameAddress::from_stack_index(index, ip)));
        }
        for (index, &ip) in sample.kernel_ips.iter().enumerate().rev() {
            stack.push(self.kernel_location(FrameAddress::from_stack_index(index, ip)));
        }
        self.profile.samples.push(Sample {
            stack: stack.into(),
            count: sample.count,
            pid: Some(sample.pid),
            tid: Some(sample.tid),
            process_name: Some(sample.process_name.clone()),
            thread_name: Some(sample.thread_name.clone()),
            truncated,
        });
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
        let id = self.intern(location);
        self.user_locations.insert((process, address), id);
        id
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
        let id = self.intern(location);
        self.kernel_locations.insert(address, id);
        id
    }

    fn intern(&mut self, location: Location) -> LocationId {
        if let Some(&id) = self.location_ids.get(&location) {
            return id;
        }
        let id = self.profile.locations.len();
        self.profile.locations.push(location.clone());
        self.location_ids.insert(location, id);
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
        };
        let id = self.profile.mappings.len();
        self.profile.mappings.push(mapping);
        self.mapping_ids.insert(key, id);
        id
    }
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

    /// Addresses outside every mapping of the process share one `[unknown]` location, whatever
    /// they are: they differ per process and would otherwise grow a long recording's profile.
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
            count: 1,
        };
        let profile = build(&[sample], &mut symbolizer, Metadata::default());
        assert_eq!(profile.locations.len(), 1, "{:?}", profile.locations);
        assert_eq!(profile.locations[0].mapping, None);
        assert_eq!(profile.locations[0].address, 0);
        assert_eq!(&*profile.samples[0].stack, &[0, 0]);
    }
}
