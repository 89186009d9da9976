//! The one interning profile builder: `build` (a capture's samples) and `merge` (parts into the
//! whole) both add to a profile through it, so that a mapping, a location, a stack, a process or
//! thread name and a sample are each stored once, and adding costs the size of what is added, not
//! of the whole. It decides nothing about what to keep: the label budget and compaction are the
//! callers' (see `policy`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use emberprof_symbolizer::SharedStrings;
use hashbrown::HashTable;

use super::{
    location_id, Frame, Location, LocationId, Mapping, MappingId, Metadata, Profile, Sample,
    StackId, ValueTypes,
};

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
        }
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
        let mappings = &mut self.profile.mappings;
        *self
            .mapping_ids
            .entry(mapping)
            .or_insert_with_key(|mapping| {
                mappings.push(mapping.clone());
                mappings.len() - 1
            })
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
        let hasher = &self.hasher;
        let locations = &mut self.profile.locations;
        let hash = hasher.hash_one(&location);
        if let Some(&id) = self
            .location_ids
            .find(hash, |&id| locations[id as usize] == location)
        {
            return id;
        }
        // A named code point not seen yet is indexed; one seen already is shared where asked.
        let mut new_code_point = None;
        if !location.frames.is_empty() {
            let code_hash = hasher.hash_one(CodePoint::of(&location));
            let same = |&id: &LocationId| {
                CodePoint::of(&locations[id as usize]) == CodePoint::of(&location)
            };
            match self.code_point_ids.find(code_hash, same) {
                Some(&id) if self.sharing == Sharing::All || location.in_kernel => return id,
                Some(_) => {}
                None => new_code_point = Some(code_hash),
            }
        }
        let id = location_id(locations.len());
        locations.push(location);
        self.location_ids
            .insert_unique(hash, id, |&id| hasher.hash_one(&locations[id as usize]));
        if let Some(code_hash) = new_code_point {
            self.code_point_ids.insert_unique(code_hash, id, |&id| {
                hasher.hash_one(CodePoint::of(&locations[id as usize]))
            });
        }
        id
    }

    /// The stack of `location` called from `caller`.
    pub fn call(&mut self, caller: StackId, location: LocationId) -> StackId {
        self.profile.stacks.call(caller, location)
    }

    /// `part`'s mappings, locations and stacks interned; for each of its stacks, the id here.
    pub fn add_stacks_of(&mut self, part: &mut Profile) -> Vec<StackId> {
        let mapping_map: Vec<MappingId> = std::mem::take(&mut part.mappings)
            .into_iter()
            .map(|mapping| self.mapping(mapping))
            .collect();
        let location_map: Vec<LocationId> = std::mem::take(&mut part.locations)
            .into_iter()
            .map(|mut location| {
                location.mapping = location.mapping.map(|id| mapping_map[id]);
                self.location(location)
            })
            .collect();
        part.stacks.map_into(&mut self.profile.stacks, |id| {
            Some(location_map[id as usize])
        })
    }

    /// Adds `sample` (its stack one of this profile's, its names shared here), or its values to
    /// the sample that differs from it only in its values.
    pub fn add_sample(&mut self, mut sample: Sample) {
        sample.process_name = sample.process_name.map(|name| self.names.get(&name));
        sample.thread_name = sample.thread_name.map(|name| self.names.get(&name));
        let hasher = &self.hasher;
        let samples = &mut self.profile.samples;
        let hash = hasher.hash_one(SampleKey::of(&sample));
        if let Some(&id) = self.sample_ids.find(hash, |&id| {
            SampleKey::of(&samples[id as usize]) == SampleKey::of(&sample)
        }) {
            samples[id as usize].values.add(&sample.values);
            return;
        }
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
        let samples = std::mem::take(&mut self.profile.samples);
        self.location_ids.clear();
        self.code_point_ids.clear();
        self.sample_ids.clear();
        let location_map: Vec<LocationId> = locations
            .into_iter()
            .map(|location| self.location(location))
            .collect();
        let stack_map = stacks.map_into(&mut self.profile.stacks, |id| {
            Some(location_map[id as usize])
        });
        for mut sample in samples {
            sample.stack = stack_map[sample.stack as usize];
            self.add_sample(sample);
        }
    }
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
