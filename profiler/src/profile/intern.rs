//! The one interning profile builder: `build` (a capture's samples) and `merge` (parts into the
//! whole) both add to a profile through it, so that a mapping, a location, a stack, a process or
//! thread name and a sample are each stored once, and adding costs the size of what is added, not
//! of the whole. It decides nothing about what to keep: the label budget and compaction are the
//! callers' (see `policy`). What it enforces is a limit in bytes on all it holds (`--max-profile-size`),
//! which no caller could check as cheaply: past it, what is added joins what the profile holds
//! (see [`Interner::set_limit`]).

mod prune;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use emberprof_symbolizer::SharedStrings;
use hashbrown::HashTable;

use super::{
    location_id, Frame, FrameKind, Location, LocationId, Mapping, MappingId, Metadata, Profile,
    Sample, StackId, ValueTypes, EMPTY_STACK, OVER_BUDGET_FRAME,
};

/// What a stack node costs: the node, its index entry and the vector's spare room.
const NODE_BYTES: u64 = 16;
/// What a sample costs: the sample, its index entry and its share of the names.
const SAMPLE_BYTES: u64 = 128;

/// Which locations share the location of their code point (mapping and frames) instead of keeping
/// their own address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Kernel locations only: pprof has no kernel image to disassemble or line-map kernel
    /// addresses named from kallsyms with, so one per instruction would only multiply stacks.
    Kernel,
    /// Every named location (a compacted profile, see `policy::Compaction`).
    All,
}

pub struct Interner {
    profile: Profile,
    sharing: Sharing,
    hasher: RandomState,
    /// Mappings are few (one per module): a plain map is enough.
    mapping_ids: HashMap<Mapping, MappingId>,
    /// Indices into `profile.locations`, hashed by the location: nothing stored twice.
    location_ids: HashTable<LocationId>,
    /// The first location of each distinct named code point, hashed by it.
    code_point_ids: HashTable<LocationId>,
    /// Indices into `profile.samples`, hashed by everything but the values.
    sample_ids: HashTable<u32>,
    names: SharedStrings,
    /// The most bytes (estimated) held in mappings, locations, stack nodes and samples.
    limit: u64,
    /// Whether samples past the limit keep their pid and tid (`--per-thread` folds by thread).
    keep_threads: bool,
    /// Estimated bytes of the mappings and locations held (nodes and samples are counted).
    mapping_bytes: u64,
    location_bytes: u64,
    /// The `[over budget]` frame that ends stacks cut at the limit, once one was.
    over_budget: Option<LocationId>,
    /// Bytes held, and samples cut, right after the last pruning (see [`Interner::make_room`]).
    pruned_at: u64,
    cut_at_prune: u64,
    /// The count of every sample added, for how often to prune.
    added: u64,
}

impl Interner {
    /// An empty profile with `metadata`.
    pub fn new(metadata: Metadata) -> Self {
        Interner {
            profile: Profile {
                metadata,
                ..Profile::default()
            },
            sharing: Sharing::Kernel,
            hasher: RandomState::new(),
            mapping_ids: HashMap::new(),
            location_ids: HashTable::new(),
            code_point_ids: HashTable::new(),
            sample_ids: HashTable::new(),
            names: SharedStrings::default(),
            limit: u64::MAX,
            keep_threads: false,
            mapping_bytes: 0,
            location_bytes: 0,
            over_budget: None,
            pruned_at: 0,
            cut_at_prune: 0,
            added: 0,
        }
    }

    /// Holds at most about `bytes` from now on. Before a part would pass it, the heaviest samples
    /// are kept and the others folded under their callers ([`Interner::make_room`]). What still
    /// does not fit is cut as it is added: a new mapping or location is not added (its frame and
    /// those under it become one `[over budget]` frame), nor a new stack node (the stack ends
    /// there in `[over budget]`), and a new sample joins one the profile holds (the same stack
    /// and names without pid and tid, unless `keep_threads`; an eighth past the limit, the
    /// `[over budget]` stack of its nearest held caller). Every sample keeps its values, so
    /// widths stay right: only detail below the cut is lost, and it is counted
    /// (`Metadata::over_budget_samples`).
    pub fn set_limit(&mut self, bytes: u64, keep_threads: bool) {
        self.limit = bytes;
        self.keep_threads = keep_threads;
    }

    /// Estimated bytes held.
    pub fn held_bytes(&self) -> u64 {
        self.mapping_bytes
            + self.location_bytes
            + self.profile.stacks.len() as u64 * NODE_BYTES
            + self.profile.samples.len() as u64 * SAMPLE_BYTES
    }

    /// Before `part` is added: past the limit with it, makes room by keeping the heaviest samples
    /// within three quarters of the limit, or less to fit the part (see `prune`), so that a stack
    /// that comes late and runs long still gets its place. Pruning costs the profile's size, so
    /// it waits until the profile grew by an eighth of the limit, or samples were cut since the
    /// last time (1024, or a 64th of all added). What does not fit even then is cut as it is
    /// added (see [`Interner::set_limit`]).
    pub fn make_room(&mut self, part: &Profile) {
        if self.limit == u64::MAX {
            return;
        }
        let held = self.held_bytes();
        let grown = held >= self.pruned_at.saturating_add(self.limit / 8);
        let cut = self.profile.metadata.over_budget_samples - self.cut_at_prune;
        if !(grown || cut >= (self.added / 64).max(1024)) {
            return;
        }
        // Sized only when a prune may be due: parts are added at every checkpoint.
        let part_bytes = part.stacks.len() as u64 * NODE_BYTES
            + part.samples.len() as u64 * SAMPLE_BYTES
            + part.locations.iter().map(location_bytes).sum::<u64>();
        if held.saturating_add(part_bytes) <= self.limit {
            return;
        }
        let target = self
            .limit
            .saturating_sub(part_bytes)
            .clamp(self.limit / 2, self.limit / 4 * 3);
        self.prune(target);
        log::debug!(
            "profile past --max-profile-size: kept its heaviest samples, {} KiB of {} KiB held",
            self.held_bytes() >> 10,
            held >> 10
        );
    }

    fn has_room(&self) -> bool {
        self.held_bytes() < self.limit
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The metadata's counts are the builder's to keep; everything else is added through the
    /// interner.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.profile.metadata
    }

    pub fn into_profile(self) -> Profile {
        self.profile
    }

    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    /// The one shared copy of a process or thread name.
    pub fn name(&mut self, name: &str) -> Arc<str> {
        self.names.get(name)
    }

    pub fn mapping(&mut self, mapping: Mapping) -> MappingId {
        self.mapping_if(mapping, true).expect("added when new")
    }

    /// The id of `mapping`, added if new and `may_add`.
    fn mapping_if(&mut self, mapping: Mapping, may_add: bool) -> Option<MappingId> {
        if let Some(&id) = self.mapping_ids.get(&mapping) {
            return Some(id);
        }
        if !may_add {
            return None;
        }
        self.mapping_bytes += mapping_bytes(&mapping);
        let id = self.profile.mappings.len();
        self.profile.mappings.push(mapping.clone());
        self.mapping_ids.insert(mapping, id);
        Some(id)
    }

    /// Where each of `types` goes in this profile's values (new types added while there is room;
    /// `None`: no room, the value is dropped).
    pub fn value_map(&mut self, types: &ValueTypes) -> Vec<Option<usize>> {
        let map: Vec<Option<usize>> = types
            .as_slice()
            .iter()
            .map(|t| self.profile.value_types.push(t.clone()))
            .collect();
        if map.iter().any(Option::is_none) {
            log::warn!(
                "profile parts with more than {} value types: the last ones are left out",
                super::values::MAX_VALUES
            );
        }
        map
    }

    /// The index of `value_type` in this profile's values, added if new (`None`: no room).
    pub fn value_index(&mut self, value_type: super::ValueType) -> Option<usize> {
        self.profile.value_types.push(value_type)
    }

    pub fn location(&mut self, location: Location) -> LocationId {
        self.location_if(location, true).expect("added when new")
    }

    /// The id of `location` (or of the location it shares), added if new and `may_add` (if not,
    /// the held location of its function, if there is one).
    fn location_if(&mut self, location: Location, may_add: bool) -> Option<LocationId> {
        let hasher = &self.hasher;
        let locations = &mut self.profile.locations;
        let hash = hasher.hash_one(&location);
        if let Some(&id) = self
            .location_ids
            .find(hash, |&id| locations[id as usize] == location)
        {
            return Some(id);
        }
        // A named code point not seen yet is indexed; one seen already is shared where asked.
        let mut new_code_point = None;
        if !location.frames.is_empty() {
            let code_hash = hasher.hash_one(CodePoint::of(&location));
            let same = |&id: &LocationId| {
                CodePoint::of(&locations[id as usize]) == CodePoint::of(&location)
            };
            match self.code_point_ids.find(code_hash, same) {
                // Past the limit too: a new address of a held function costs no detail the
                // folded output or the SVG shows.
                Some(&id) if self.sharing == Sharing::All || location.in_kernel || !may_add => {
                    return Some(id)
                }
                Some(_) => {}
                None => new_code_point = Some(code_hash),
            }
        }
        if !may_add {
            return None;
        }
        self.location_bytes += location_bytes(&location);
        let id = location_id(locations.len());
        locations.push(location);
        self.location_ids
            .insert_unique(hash, id, |&id| hasher.hash_one(&locations[id as usize]));
        if let Some(code_hash) = new_code_point {
            self.code_point_ids.insert_unique(code_hash, id, |&id| {
                hasher.hash_one(CodePoint::of(&locations[id as usize]))
            });
        }
        Some(id)
    }

    /// The stack of `location` called from `caller`.
    pub fn call(&mut self, caller: StackId, location: LocationId) -> StackId {
        self.profile.stacks.call(caller, location)
    }

    /// `part`'s mappings, locations and stacks interned; for each of its stacks, the id here.
    /// Past the limit, a stack is cut where it leaves what the profile holds (see
    /// [`Interner::set_limit`]).
    pub fn add_stacks_of(&mut self, part: &mut Profile) -> Vec<StackId> {
        let mapping_map: Vec<Option<MappingId>> = std::mem::take(&mut part.mappings)
            .into_iter()
            .map(|mapping| {
                let room = self.has_room();
                self.mapping_if(mapping, room)
            })
            .collect();
        let location_map: Vec<Option<LocationId>> = std::mem::take(&mut part.locations)
            .into_iter()
            .map(|mut location| {
                if let Some(id) = location.mapping {
                    location.mapping = Some(mapping_map[id]?);
                }
                let room = self.has_room();
                self.location_if(location, room)
            })
            .collect();
        // Room is kept for the part's samples, up to half of what is left: nodes alone must not
        // take the whole limit (every sample would be past it), nor samples leave no node to
        // place them in.
        let nodes = self.profile.stacks.len() as u64 * NODE_BYTES;
        let left = self.limit.saturating_sub(self.held_bytes());
        let for_samples = (part.samples.len() as u64 * SAMPLE_BYTES).min(left / 2);
        let max_nodes =
            usize::try_from((nodes + left - for_samples) / NODE_BYTES).unwrap_or(usize::MAX);
        if location_map.iter().all(Option::is_some)
            && self.profile.stacks.len().saturating_add(part.stacks.len()) <= max_nodes
        {
            return part
                .stacks
                .map_into(&mut self.profile.stacks, |id| location_map[id as usize]);
        }
        let cut = self.over_budget_location();
        part.stacks.map_into_within(
            &mut self.profile.stacks,
            |id| location_map[id as usize],
            max_nodes,
            cut,
        )
    }

    /// The `[over budget]` frame: in no mapping, named so that every output shows it.
    fn over_budget_location(&mut self) -> LocationId {
        if let Some(id) = self.over_budget {
            return id;
        }
        let id = self.location(Location {
            mapping: None,
            address: 0,
            frames: vec![Frame::new(OVER_BUDGET_FRAME, FrameKind::User)],
            in_kernel: false,
        });
        self.over_budget = Some(id);
        id
    }

    /// Whether `stack` was cut at the limit.
    fn is_cut(&self, stack: StackId) -> bool {
        self.over_budget.is_some()
            && self.profile.stacks.innermost_first(stack).next() == self.over_budget
    }

    /// Adds `sample` (its stack one of this profile's, its names shared here), or its values to
    /// the sample that differs from it only in its values. Past the limit, a new sample joins one
    /// the profile holds (see [`Interner::set_limit`]).
    pub fn add_sample(&mut self, mut sample: Sample) {
        sample.process_name = sample.process_name.map(|name| self.names.get(&name));
        sample.thread_name = sample.thread_name.map(|name| self.names.get(&name));
        let weight = sample.values.get(0);
        self.added = self.added.saturating_add(weight);
        let cut = self.is_cut(sample.stack);
        if cut {
            self.profile.metadata.over_budget_samples += weight;
        }
        let sample = match self.add_to_same(sample) {
            Ok(()) => return,
            Err(new) => new,
        };
        if self.has_room() {
            return self.push_sample(sample);
        }
        if !cut {
            self.profile.metadata.over_budget_samples += weight;
        }
        if let Err(first) = self.add_past_limit(sample) {
            self.push_sample(first);
        }
    }

    /// Adds `sample`, new past the limit, to the sample of its stack and names without pid and
    /// tid; a new one of those while within an eighth past the limit; past that, to the held
    /// sample of its names whose stack is the nearest of its callers' cut there (`...;caller;[over
    /// budget]`), else to the `[over budget]` sample of no process. `Err`: the first sample of its
    /// kind, reduced so, to store.
    fn add_past_limit(&mut self, mut sample: Sample) -> Result<(), Sample> {
        if !self.keep_threads {
            sample.pid = None;
            sample.tid = None;
            sample = match self.add_to_same(sample) {
                Ok(()) => return Ok(()),
                Err(unlabelled) => unlabelled,
            };
        }
        if self.held_bytes() < self.limit.saturating_add(self.limit / 8) {
            return Err(sample);
        }
        let over_budget = self.over_budget_location();
        let stacks = &self.profile.stacks;
        let mut at = match self.is_cut(sample.stack) {
            true => stacks.caller(sample.stack),
            false => sample.stack,
        };
        let mut held_cuts = Vec::new();
        loop {
            held_cuts.extend(stacks.get(at, over_budget));
            if at == EMPTY_STACK {
                break;
            }
            at = stacks.caller(at);
        }
        for cut in held_cuts {
            sample.stack = cut;
            sample = match self.add_to_same(sample) {
                Ok(()) => return Ok(()),
                Err(not_held) => not_held,
            };
        }
        sample.stack = self.profile.stacks.call(EMPTY_STACK, over_budget);
        sample.process_name = None;
        sample.thread_name = None;
        self.add_to_same(sample)
    }

    /// Adds `sample`'s values to the sample that differs from it only in them; `Err(sample)` if
    /// there is none.
    fn add_to_same(&mut self, sample: Sample) -> Result<(), Sample> {
        let hash = self.hasher.hash_one(SampleKey::of(&sample));
        let samples = &mut self.profile.samples;
        match self.sample_ids.find(hash, |&id| {
            SampleKey::of(&samples[id as usize]) == SampleKey::of(&sample)
        }) {
            Some(&id) => {
                samples[id as usize].values.add(&sample.values);
                Ok(())
            }
            None => Err(sample),
        }
    }

    /// Stores `sample`, new to the profile.
    fn push_sample(&mut self, sample: Sample) {
        let hasher = &self.hasher;
        let samples = &mut self.profile.samples;
        let hash = hasher.hash_one(SampleKey::of(&sample));
        if samples.len() == samples.capacity() {
            // By an eighth, not the doubling `push` would do: a long recording's samples are its
            // largest vector, which a doubling would leave up to half unused.
            samples.reserve_exact((samples.len() / 8).max(1024));
        }
        let id = u32::try_from(samples.len()).expect("fewer than 2^32 samples");
        samples.push(sample);
        self.sample_ids.insert_unique(hash, id, |&id| {
            hasher.hash_one(SampleKey::of(&samples[id as usize]))
        });
    }

    /// Rebuilds the profile with `sharing`, which stays for what is added next.
    pub fn reshare(&mut self, sharing: Sharing) {
        self.sharing = sharing;
        let locations = std::mem::take(&mut self.profile.locations);
        let stacks = std::mem::take(&mut self.profile.stacks);
        let mut samples = std::mem::take(&mut self.profile.samples);
        self.location_ids.clear();
        self.code_point_ids.clear();
        self.location_bytes = 0;
        let location_map: Vec<LocationId> = locations
            .into_iter()
            .map(|location| self.location(location))
            .collect();
        self.over_budget = self.over_budget.map(|id| location_map[id as usize]);
        let stack_map = stacks.map_into(&mut self.profile.stacks, |id| {
            Some(location_map[id as usize])
        });
        // Fewer or as many of each as before: within the limit, nothing counted again.
        for sample in &mut samples {
            sample.stack = stack_map[sample.stack as usize];
        }
        self.profile.samples = samples;
        self.merge_equal_samples();
    }

    /// After samples were rewritten (their stacks, or their threads dropped): merges those that
    /// became equal but for their values, in place, and indexes them again. In place because the
    /// samples are the profile's largest part: a rebuilt copy beside them was what pruning cost.
    fn merge_equal_samples(&mut self) {
        self.sample_ids.clear();
        let hasher = &self.hasher;
        let samples = &mut self.profile.samples;
        let mut held = 0;
        for at in 0..samples.len() {
            let hash = hasher.hash_one(SampleKey::of(&samples[at]));
            let (before, rest) = samples.split_at_mut(at);
            let sample = &rest[0];
            let same = self.sample_ids.find(hash, |&id| {
                SampleKey::of(&before[id as usize]) == SampleKey::of(sample)
            });
            if let Some(&id) = same {
                before[id as usize].values.add(&sample.values);
                continue;
            }
            samples.swap(held, at);
            let id = u32::try_from(held).expect("fewer than 2^32 samples");
            self.sample_ids.insert_unique(hash, id, |&id| {
                hasher.hash_one(SampleKey::of(&samples[id as usize]))
            });
            held += 1;
        }
        samples.truncate(held);
    }
}

/// Estimated bytes of a mapping: the struct, its index entry and its texts.
fn mapping_bytes(mapping: &Mapping) -> u64 {
    (2 * std::mem::size_of::<Mapping>()
        + mapping.path.len()
        + mapping.display_name.len()
        + mapping.build_id.as_ref().map_or(0, String::len)) as u64
}

/// Estimated bytes of a location: the struct, its two index entries and its frames with their
/// texts (shared texts are counted for each location: an estimate on the safe side).
fn location_bytes(location: &Location) -> u64 {
    let frames: usize = location
        .frames
        .iter()
        .map(|frame| {
            std::mem::size_of::<Frame>()
                + frame.name.len()
                + frame.system_name.as_ref().map_or(0, |name| name.len())
                + frame.file.as_ref().map_or(0, |file| file.len())
        })
        .sum();
    (std::mem::size_of::<Location>() + 16 + frames) as u64
}

/// What folded stacks show of a location: its module and frames, not its address.
#[derive(Hash, PartialEq, Eq)]
struct CodePoint<'a> {
    mapping: Option<MappingId>,
    in_kernel: bool,
    frames: &'a [Frame],
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

/// What makes two samples the same stack of the same thread: everything but the values.
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
        // Exhaustive: a new field of `Sample` must be placed here or in the values.
        let Sample {
            stack,
            values: _,
            pid,
            tid,
            process_name,
            thread_name,
            truncated,
        } = sample;
        SampleKey {
            stack: *stack,
            pid: *pid,
            tid: *tid,
            process_name: process_name.as_deref(),
            thread_name: thread_name.as_deref(),
            truncated: *truncated,
        }
    }
}
