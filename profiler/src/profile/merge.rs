//! A profile that grows part by part while recording: at every switch of the kernel maps, the
//! samples just read are symbolized and added here (those of processes that ended, whose
//! snapshots and caches are released then, and those of processes still running); the last
//! samples are added at the stop.
//!
//! What keeps a long `--all` run bounded by what its output shows, not by its length or the
//! processes it saw:
//! - mappings, locations, stacks and samples are indexed, so adding a part costs the part's size,
//!   not the whole's (the profile is never rebuilt), and equal stacks are stored once;
//! - samples keep their `pid` and `tid` only for the first [`LABELLED_PROCESSES`] processes the
//!   profile meets, running or ended: later processes are merged by process name, thread name and
//!   stack, so a fork-heavy machine (a shell loop starts hundreds of processes a second) adds new
//!   stacks, not a copy of the same stacks per process (a process still running at a map switch
//!   is a new pid there too: on a long run, new ones keep coming); `--per-thread` keeps every
//!   label (it shows them);
//! - kernel addresses share one location per function from the start: pprof cannot disassemble
//!   or line-map kernel code named from kallsyms (there is no image), so a location per kernel
//!   instruction would only multiply stacks (on a fork-heavy machine they were 70 % of all
//!   locations);
//! - each distinct user address gets its own location until there are [`EXACT_LOCATIONS`], or
//!   until the samples they multiply (a stack per combination of instructions hit) reach
//!   [`EXACT_SAMPLES`]; then the profile is compacted once to one location per code point (module
//!   and frames: every instruction of a function, or of a line with `--lines`), and stays so.
//!   Folded stacks and SVG show frames, not addresses, so they are unchanged; pprof then gives one
//!   address per function, and the samples that differed only in the instruction they hit become
//!   one. On a fork-heavy machine the samples reach their budget first, in about 30 s (at 90 s
//!   there were 21,800 address-level stacks for 9,300 function-level ones).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use emberprof_symbolizer::SharedStrings;
use hashbrown::HashTable;

use super::{
    location_id, Location, LocationId, Mapping, MappingId, Metadata, Profile, Sample, StackId,
};

/// How many processes (pids) keep their pid and tid labels (see the module comment). Each costs
/// a sample (about a hundred bytes: the sample, its index entry, a new node or two of its stack)
/// per distinct stack it had: some MB in all.
pub const LABELLED_PROCESSES: usize = 10_000;

/// How many distinct addresses get a location of their own (see the module comment): a 10 s
/// capture of one program has some thousands; a busy machine's `--all` reaches it in minutes.
pub const EXACT_LOCATIONS: usize = 16_384;

/// How many samples (distinct stack and labels) the profile holds before it is compacted (see the
/// module comment): each costs about a hundred bytes (see [`LABELLED_PROCESSES`]), so 16,384 are
/// ~2 MB. A capture of one program stays far below it.
pub const EXACT_SAMPLES: usize = 16_384;

/// Whether samples keep their pid and tid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedLabels {
    /// Every one (`--per-thread`: a tower per thread needs them).
    All,
    /// Those of the first [`LABELLED_PROCESSES`] processes.
    Bounded,
}

pub struct MergedProfile {
    profile: Profile,
    /// The running processes whose samples keep their labels; `None`: every process keeps them.
    labelled_pids: Option<HashSet<u32>>,
    /// Processes given labels so far, running or ended, up to `label_budget`. Counted apart from
    /// the pids: a pid is reused by later processes, which must not inherit its labels.
    labels_given: usize,
    label_budget: usize,
    hasher: RandomState,
    /// Mappings are few (one per module): a plain map is enough.
    mapping_ids: HashMap<Mapping, MappingId>,
    /// Indices into `profile.locations`, hashed by the location: nothing stored twice.
    location_ids: HashTable<LocationId>,
    /// The first location of each distinct named code point (mapping, frames), hashed by those.
    frame_ids: HashTable<LocationId>,
    /// Compacted: one location per named code point (see the module comment).
    per_code_point: bool,
    /// Every distinct process and thread name, shared likewise.
    names: SharedStrings,
    /// Indices into `profile.samples`, hashed by everything but the count.
    sample_ids: HashTable<u32>,
}

impl MergedProfile {
    pub fn new(labels: EndedLabels) -> Self {
        MergedProfile {
            profile: Profile::default(),
            labelled_pids: match labels {
                EndedLabels::All => None,
                EndedLabels::Bounded => Some(HashSet::new()),
            },
            labels_given: 0,
            label_budget: LABELLED_PROCESSES,
            hasher: RandomState::new(),
            mapping_ids: HashMap::new(),
            location_ids: HashTable::new(),
            frame_ids: HashTable::new(),
            per_code_point: false,
            names: SharedStrings::default(),
            sample_ids: HashTable::new(),
        }
    }

    /// Adds `part`, built from the samples of processes that have ended; those past the label
    /// budget are counted in the metadata as unlabelled.
    pub fn add_ended(&mut self, mut part: Profile) {
        let unlabelled = self.strip_labels_past_budget(&mut part);
        self.profile.metadata.unlabelled_processes += unlabelled;
        if let Some(labelled) = &mut self.labelled_pids {
            // Their pids may come back as other processes.
            for sample in &part.samples {
                if let Some(pid) = sample.pid {
                    labelled.remove(&pid);
                }
            }
        }
        self.add_labelled(part);
    }

    /// Adds the samples of `part` (with their labels while the budget lasts, see the module
    /// comment), its mappings and locations stored once, and its truncation and unnamed-frame
    /// counts; the rest of its metadata is ignored (see [`MergedProfile::finish`]).
    pub fn add(&mut self, mut part: Profile) {
        self.strip_labels_past_budget(&mut part);
        self.add_labelled(part);
    }

    /// Removes pid and tid from the samples of pids past the label budget; how many distinct
    /// pids that was.
    fn strip_labels_past_budget(&mut self, part: &mut Profile) -> u64 {
        let Some(labelled) = &mut self.labelled_pids else {
            return 0;
        };
        let mut stripped = HashSet::new();
        for sample in &mut part.samples {
            let Some(pid) = sample.pid else {
                continue;
            };
            let keep = if labelled.contains(&pid) {
                true
            } else if self.labels_given < self.label_budget {
                labelled.insert(pid);
                self.labels_given += 1;
                true
            } else {
                false
            };
            if !keep {
                stripped.insert(pid);
                sample.pid = None;
                sample.tid = None;
            }
        }
        stripped.len() as u64
    }

    fn add_labelled(&mut self, part: Profile) {
        let mapping_map: Vec<MappingId> = part
            .mappings
            .into_iter()
            .map(|mapping| self.mapping_id(mapping))
            .collect();
        let location_map: Vec<LocationId> = part
            .locations
            .into_iter()
            .map(|mut location| {
                location.mapping = location.mapping.map(|id| mapping_map[id]);
                self.location_id(location)
            })
            .collect();
        let stack_map = part.stacks.map_into(&mut self.profile.stacks, |id| {
            Some(location_map[id as usize])
        });
        for mut sample in part.samples {
            sample.stack = stack_map[sample.stack as usize];
            sample.process_name = sample.process_name.map(|name| self.names.get(&name));
            sample.thread_name = sample.thread_name.map(|name| self.names.get(&name));
            self.add_sample(sample);
        }
        if !self.per_code_point
            && (self.profile.locations.len() >= EXACT_LOCATIONS
                || self.profile.samples.len() >= EXACT_SAMPLES)
        {
            self.compact();
        }
        let metadata = &mut self.profile.metadata;
        metadata.truncation.add(part.metadata.truncation);
        for (reason, count) in part.metadata.unknown_frames {
            *metadata.unknown_frames.entry(reason).or_default() += count;
        }
    }

    /// Entries held, for the debug log of long runs.
    pub fn sizes(&self) -> String {
        format!(
            "{} samples, {} stack nodes, {} locations, {} mappings, {} processes unlabelled",
            self.profile.samples.len(),
            self.profile.stacks.len(),
            self.profile.locations.len(),
            self.profile.mappings.len(),
            self.profile.metadata.unlabelled_processes
        )
    }

    /// The whole profile, with `metadata` (the capture's) completed by the counts of the parts.
    pub fn finish(self, mut metadata: Metadata) -> Profile {
        let mut profile = self.profile;
        metadata.truncation.add(profile.metadata.truncation);
        for (reason, count) in profile.metadata.unknown_frames {
            *metadata.unknown_frames.entry(reason).or_default() += count;
        }
        metadata.unlabelled_processes += profile.metadata.unlabelled_processes;
        profile.metadata = metadata;
        profile
    }

    fn mapping_id(&mut self, mapping: Mapping) -> MappingId {
        let mappings = &mut self.profile.mappings;
        *self
            .mapping_ids
            .entry(mapping)
            .or_insert_with_key(|mapping| {
                mappings.push(mapping.clone());
                mappings.len() - 1
            })
    }

    fn location_id(&mut self, location: Location) -> LocationId {
        let hasher = &self.hasher;
        let locations = &mut self.profile.locations;
        let hash = hasher.hash_one(&location);
        if let Some(&id) = self
            .location_ids
            .find(hash, |&id| locations[id as usize] == location)
        {
            return id;
        }
        // A named code point not seen yet is indexed; one seen already is shared once compacted.
        let mut new_code_point = None;
        if !location.frames.is_empty() {
            let code_hash = hasher.hash_one(CodePoint::of(&location));
            let same = |&id: &LocationId| {
                CodePoint::of(&locations[id as usize]) == CodePoint::of(&location)
            };
            match self.frame_ids.find(code_hash, same) {
                Some(&id) if self.per_code_point || location.in_kernel => return id,
                Some(_) => {}
                None => new_code_point = Some(code_hash),
            }
        }
        let id = location_id(locations.len());
        locations.push(location);
        self.location_ids
            .insert_unique(hash, id, |&id| hasher.hash_one(&locations[id as usize]));
        if let Some(code_hash) = new_code_point {
            self.frame_ids.insert_unique(code_hash, id, |&id| {
                hasher.hash_one(CodePoint::of(&locations[id as usize]))
            });
        }
        id
    }

    /// Rebuilds the profile with one location per named code point, and keeps it so.
    fn compact(&mut self) {
        self.per_code_point = true;
        let locations = std::mem::take(&mut self.profile.locations);
        let stacks = std::mem::take(&mut self.profile.stacks);
        let samples = std::mem::take(&mut self.profile.samples);
        self.location_ids.clear();
        self.frame_ids.clear();
        self.sample_ids.clear();
        let location_map: Vec<LocationId> = locations
            .into_iter()
            .map(|location| self.location_id(location))
            .collect();
        let stack_map = stacks.map_into(&mut self.profile.stacks, |id| {
            Some(location_map[id as usize])
        });
        for mut sample in samples {
            sample.stack = stack_map[sample.stack as usize];
            self.add_sample(sample);
        }
        log::debug!(
            "profile compacted to one location per function: {} locations, {} samples",
            self.profile.locations.len(),
            self.profile.samples.len()
        );
    }

    /// Adds `sample` (its stack one of this profile's), or its count to the sample that differs
    /// from it only in the count.
    fn add_sample(&mut self, sample: Sample) {
        let hasher = &self.hasher;
        let samples = &mut self.profile.samples;
        let hash = hasher.hash_one(SampleKey::of(&sample));
        if let Some(&id) = self.sample_ids.find(hash, |&id| {
            SampleKey::of(&samples[id as usize]) == SampleKey::of(&sample)
        }) {
            let total = &mut samples[id as usize].count;
            *total = total.saturating_add(sample.count);
            return;
        }
        if samples.len() == samples.capacity() {
            // By an eighth, not the doubling `push` would do: a long recording's samples are its
            // largest vector, and a doubling left it up to half unused for the rest of the run.
            samples.reserve_exact((samples.len() / 8).max(1024));
        }
        let id = u32::try_from(samples.len()).expect("fewer than 2^32 samples");
        samples.push(sample);
        self.sample_ids.insert_unique(hash, id, |&id| {
            hasher.hash_one(SampleKey::of(&samples[id as usize]))
        });
    }
}

/// What folded stacks show of a location: its module and frames, not its address.
#[derive(Hash, PartialEq, Eq)]
struct CodePoint<'a> {
    mapping: Option<MappingId>,
    in_kernel: bool,
    frames: &'a [crate::profile::Frame],
}

impl<'a> CodePoint<'a> {
    fn of(location: &'a Location) -> Self {
        CodePoint {
            mapping: location.mapping,
            in_kernel: location.in_kernel,
            frames: &location.frames,
        }
    }
}

/// What makes two samples the same stack of the same thread: everything but the count.
#[derive(Hash, PartialEq, Eq)]
struct SampleKey<'a> {
    stack: StackId,
    pid: Option<u32>,
    tid: Option<u32>,
    process_name: Option<&'a str>,
    thread_name: Option<&'a str>,
    truncated: bool,
}

impl<'a> SampleKey<'a> {
    fn of(sample: &'a Sample) -> Self {
        SampleKey {
            stack: sample.stack,
            pid: sample.pid,
            tid: sample.tid,
            process_name: sample.process_name.as_deref(),
            thread_name: sample.thread_name.as_deref(),
            truncated: sample.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use emberprof_symbolizer::UnknownReason;

    use super::*;
    use crate::profile::{testdata, Stacks};

    /// A location as its mapping's path and its frames' names.
    type Resolved = (Option<String>, Vec<String>);

    /// Each sample as its locations, outermost first, its pid and its count, sorted.
    fn resolved(profile: &Profile) -> Vec<(Vec<Resolved>, Option<u32>, u64)> {
        let mut samples: Vec<_> = profile
            .samples
            .iter()
            .map(|sample| {
                let stack = profile
                    .stacks
                    .outermost_first(sample.stack)
                    .into_iter()
                    .map(|id| {
                        let location = &profile.locations[id as usize];
                        let mapping = location
                            .mapping
                            .map(|m| profile.mappings[m].path.to_string());
                        let names = location.frames.iter().map(|f| f.name.to_string()).collect();
                        (mapping, names)
                    })
                    .collect();
                (stack, sample.pid, sample.count)
            })
            .collect();
        samples.sort();
        samples
    }

    /// The same profile with its mappings and locations in reverse order.
    fn reversed(profile: &Profile) -> Profile {
        let mut reversed = profile.clone();
        let mappings = reversed.mappings.len();
        let locations = reversed.next_location_id();
        reversed.mappings.reverse();
        reversed.locations.reverse();
        for location in &mut reversed.locations {
            location.mapping = location.mapping.map(|m| mappings - 1 - m);
        }
        reversed.stacks = Default::default();
        let stack_map = profile
            .stacks
            .map_into(&mut reversed.stacks, |id| Some(locations - 1 - id));
        for sample in &mut reversed.samples {
            sample.stack = stack_map[sample.stack as usize];
        }
        reversed
    }

    /// Adding keeps every sample's frames, stores shared mappings and locations once (whatever
    /// their order in the part), adds up the counts of the same stack of the same thread, and
    /// the truncation and unnamed-frame counts.
    #[test]
    fn parts_share_locations_and_add_up() {
        let mut original = testdata::small();
        original.metadata.truncation.frame_pointer += 3;
        *original
            .metadata
            .unknown_frames
            .entry(UnknownReason::NotInModule)
            .or_default() += 2;
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        merged.add(original.clone());
        assert_eq!(resolved(&merged.profile), resolved(&original));

        let reversed = reversed(&original);
        assert_eq!(resolved(&reversed), resolved(&original));
        merged.add(reversed);
        let profile = merged.finish(Metadata::default());
        assert_eq!(profile.mappings.len(), original.mappings.len());
        assert_eq!(profile.locations.len(), original.locations.len());
        // The reversed part's stacks were the same stacks: no node added for them.
        assert_eq!(profile.stacks.len(), original.stacks.len());
        let doubled: Vec<_> = resolved(&original)
            .into_iter()
            .map(|(stack, pid, count)| (stack, pid, 2 * count))
            .collect();
        assert_eq!(resolved(&profile), doubled);
        assert_eq!(
            profile.metadata.truncation.total(),
            2 * original.metadata.truncation.total()
        );
        let unknown = |p: &Profile| p.metadata.unknown_frames.values().sum::<u64>();
        assert_eq!(unknown(&profile), 2 * unknown(&original));
    }

    /// `part` with every pid moved up by `by` (another set of processes running the same code).
    fn with_pids_moved(part: &Profile, by: u32) -> Profile {
        let mut moved = part.clone();
        for sample in &mut moved.samples {
            sample.pid = sample.pid.map(|pid| pid + by);
        }
        moved
    }

    /// Past the label budget, processes lose pid and tid and their stacks merge by name, whether
    /// they ended or were still running when their samples were added (a process running at a map
    /// switch): memory then grows with new stacks, not with processes. A labelled process keeps
    /// its labels until it ends, and a later process with its pid does not inherit them; those that
    /// ended unlabelled are counted.
    #[test]
    fn processes_past_the_budget_merge_by_name() {
        let part = testdata::small();
        let distinct = part.samples.len();
        let pids: HashSet<u32> = part.samples.iter().filter_map(|s| s.pid).collect();
        assert!(!pids.is_empty());
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        merged.label_budget = pids.len();
        merged.add(part.clone());
        merged.add_ended(part.clone());
        assert_eq!(
            merged.profile.samples.len(),
            distinct,
            "the same pids again, labelled"
        );
        for round in 1..=100 {
            let later = with_pids_moved(&part, 1000 * round);
            // Running at one switch, ended by the next.
            merged.add(later.clone());
            merged.add_ended(later);
        }
        // The first pids again, now other processes: they do not inherit the labels.
        merged.add_ended(part.clone());
        let unlabelled = merged.profile.samples.iter().filter(|s| s.pid.is_none());
        assert!(unlabelled.clone().all(|s| s.tid.is_none()));
        let unlabelled = unlabelled.count();
        assert!(
            (1..=distinct).contains(&unlabelled),
            "one per name and stack: {unlabelled}"
        );
        assert_eq!(merged.profile.samples.len(), distinct + unlabelled);
        // Labelled and unlabelled samples of one stack share it (one id, one path of nodes).
        let samples = &merged.profile.samples;
        assert!(samples[distinct..]
            .iter()
            .all(|u| samples[..distinct].iter().any(|l| u.stack == l.stack)));
        // So do all samples of one process name (the part has a copy per sample).
        let name = |s: &Sample| s.process_name.clone().expect("named");
        assert!(samples
            .iter()
            .all(|s| Arc::ptr_eq(&name(s), &name(&samples[0]))));
        let profile = merged.finish(Metadata::default());
        assert_eq!(
            profile.metadata.unlabelled_processes,
            101 * pids.len() as u64
        );
        assert_eq!(profile.total_samples(), 203 * part.total_samples());

        // --per-thread: every process keeps its labels.
        let mut all = MergedProfile::new(EndedLabels::All);
        all.label_budget = 0;
        for round in 0..3 {
            all.add_ended(with_pids_moved(&part, 1000 * round));
        }
        assert!(all.profile.samples.iter().all(|s| s.pid.is_some()));
        assert_eq!(all.profile.samples.len(), 3 * distinct);
    }

    /// A part of one sample through locations at `addresses` of a kernel or user mapping, each
    /// named `name(address)`.
    fn part_at(addresses: &[u64], name: impl Fn(u64) -> String, kernel: bool) -> Profile {
        use crate::profile::{Frame, FrameKind, MappingKind};
        let (path, kind, frame_kind) = match kernel {
            true => ("[kernel.kallsyms]", MappingKind::Kernel, FrameKind::Kernel),
            false => ("/usr/bin/app", MappingKind::User, FrameKind::User),
        };
        let mut stacks = Stacks::default();
        let stack = stacks.insert(&(0..location_id(addresses.len())).collect::<Vec<_>>());
        Profile {
            mappings: vec![Mapping {
                path: path.into(),
                display_name: path.into(),
                build_id: None,
                kind,
            }],
            locations: addresses
                .iter()
                .map(|&address| Location {
                    mapping: Some(0),
                    address,
                    frames: vec![Frame::new(name(address), frame_kind)],
                    in_kernel: kernel,
                })
                .collect(),
            stacks,
            samples: vec![Sample {
                stack,
                count: 1,
                ..Sample::default()
            }],
            ..Profile::default()
        }
    }

    /// Kernel addresses of one function share its location from the first (pprof has no kernel
    /// image to use them with), while user addresses keep their own; folded output counts both
    /// alike.
    #[test]
    fn kernel_addresses_share_their_function_location() {
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        for address in [1, 2, 3] {
            merged.add(part_at(&[address], |_| "k".to_owned(), true));
            merged.add(part_at(&[address], |_| "u".to_owned(), false));
        }
        merged.add(part_at(&[4], |_| "k2".to_owned(), true));
        let locations = &merged.profile.locations;
        let of = |name: &str| {
            locations
                .iter()
                .filter(|l| &*l.frames[0].name == name)
                .count()
        };
        assert_eq!((of("k"), of("u"), of("k2")), (1, 3, 1));
        assert_eq!(merged.profile.samples.len(), 1 + 3 + 1);
        let folded = crate::output::fold(&merged.finish(Metadata::default()), &Default::default())
            .expect("fold")
            .counts();
        assert_eq!(folded.get("k_[k]"), Some(&3));
        assert_eq!(folded.get("u"), Some(&3));
    }

    /// Addresses keep their own locations up to the budget; past it, the profile is compacted to
    /// one location per function (samples that differed only in the address merge, folded output
    /// unchanged), a new address of a known function shares its location, and a new function
    /// still gets one.
    #[test]
    fn addresses_past_the_budget_share_their_function_location() {
        let fold_all = |profile: &Profile| {
            let folded = crate::output::fold(profile, &Default::default()).expect("fold");
            folded.counts()
        };
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        // Two addresses of `f`, in two samples: both kept while under the budget.
        merged.add(part_at(&[1], |_| "f".to_owned(), false));
        merged.add(part_at(&[2], |_| "f".to_owned(), false));
        assert_eq!(merged.profile.locations.len(), 2);
        assert_eq!(merged.profile.samples.len(), 2);
        let filler: Vec<u64> = (100..100 + EXACT_LOCATIONS as u64).collect();
        merged.add(part_at(&filler, |a| format!("g{a}"), false));
        let folded_before = fold_all(&merged.profile);
        // The next part compacts the profile first.
        merged.add(part_at(&[3], |_| "f".to_owned(), false));
        assert_eq!(merged.profile.locations.len(), EXACT_LOCATIONS + 1);
        assert_eq!(
            merged.profile.samples.len(),
            2,
            "f at 1, 2 and 3 is one sample; the filler"
        );
        merged.add(part_at(&[4], |_| "h".to_owned(), false));
        assert_eq!(
            merged.profile.locations.len(),
            EXACT_LOCATIONS + 2,
            "h is new"
        );

        let profile = merged.finish(Metadata::default());
        let mut folded_after = fold_all(&profile);
        assert_eq!(folded_after.remove("f"), Some(3));
        assert_eq!(folded_after.remove("h"), Some(1));
        let mut expected = folded_before;
        expected.remove("f");
        assert_eq!(folded_after, expected);
    }

    /// Samples that differ only in the addresses they hit are budgeted too: at
    /// [`EXACT_SAMPLES`] the profile is compacted although its locations are few, and they become
    /// one sample per function stack.
    #[test]
    fn samples_past_their_budget_compact_the_profile() {
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        let side = (EXACT_SAMPLES as f64).sqrt().ceil() as u64;
        let name = |a: u64| if a < 1_000_000 { "f" } else { "g" }.to_owned();
        for caller in 0..side {
            for callee in 0..side {
                merged.add(part_at(&[caller, 1_000_000 + callee], name, false));
            }
        }
        assert!(2 * side as usize <= EXACT_LOCATIONS);
        assert_eq!(merged.profile.samples.len(), 1);
        assert_eq!(merged.profile.samples[0].count, side * side);
        assert_eq!(merged.profile.locations.len(), 2);
    }
}
