//! A profile that grows part by part: the processes that end while recording are built as they end
//! (their snapshots and caches are released then) and added here, and the processes still running
//! at the stop are added last.
//!
//! Two things keep a long `--all` run bounded. Mappings, locations and samples are indexed, so
//! adding a part costs the part's size, not the whole's (the profile is never rebuilt). And the
//! samples of ended processes keep their `pid` and `tid` only for the first
//! [`LABELLED_ENDED_PROCESSES`]: later ones are merged by process name, thread name and stack, so a
//! fork-heavy machine (a shell loop starts hundreds of processes a second) adds new stacks, not a
//! copy of the same stacks per process. `--per-thread` keeps every label (it shows them).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::{Location, LocationId, Mapping, MappingId, Metadata, Profile, Sample};

/// How many ended processes keep their pid and tid labels (see the module comment). Each costs a
/// few hundred bytes per distinct stack it had: some MB in all.
pub const LABELLED_ENDED_PROCESSES: u64 = 10_000;

/// Whether the samples of ended processes keep their pid and tid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedLabels {
    /// Every one (`--per-thread`: a tower per thread needs them).
    All,
    /// The first [`LABELLED_ENDED_PROCESSES`].
    Bounded,
}

pub struct MergedProfile {
    profile: Profile,
    /// Ended processes that may still keep their labels; `None`: no limit.
    labels_left: Option<u64>,
    hasher: RandomState,
    /// Mappings are few (one per module): a plain map is enough.
    mapping_ids: HashMap<Mapping, MappingId>,
    /// Indices into `profile.locations`, hashed by the location: nothing stored twice.
    location_ids: HashTable<LocationId>,
    /// Indices into `profile.samples`, hashed by everything but the count.
    sample_ids: HashTable<usize>,
}

impl MergedProfile {
    pub fn new(labels: EndedLabels) -> Self {
        MergedProfile {
            profile: Profile::default(),
            labels_left: match labels {
                EndedLabels::All => None,
                EndedLabels::Bounded => Some(LABELLED_ENDED_PROCESSES),
            },
            hasher: RandomState::new(),
            mapping_ids: HashMap::new(),
            location_ids: HashTable::new(),
            sample_ids: HashTable::new(),
        }
    }

    /// Adds `part`, built from the samples of `processes` process instances that have ended: they
    /// keep their pid and tid labels while the budget lasts, all or none of them.
    pub fn add_ended(&mut self, mut part: Profile, processes: u64) {
        let labelled = match &mut self.labels_left {
            None => true,
            Some(left) if *left >= processes => {
                *left -= processes;
                true
            }
            Some(left) => {
                *left = 0;
                false
            }
        };
        if !labelled {
            for sample in &mut part.samples {
                sample.pid = None;
                sample.tid = None;
            }
            self.profile.metadata.unlabelled_processes += processes;
        }
        self.add(part);
    }

    /// Adds the samples of `part` with their labels, its mappings and locations stored once, and
    /// its truncation and unnamed-frame counts; the rest of its metadata is ignored (see
    /// [`MergedProfile::finish`]).
    pub fn add(&mut self, part: Profile) {
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
        for mut sample in part.samples {
            for id in &mut sample.stack {
                *id = location_map[*id];
            }
            self.add_sample(sample);
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
            "{} samples, {} locations, {} mappings, {} processes unlabelled",
            self.profile.samples.len(),
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
        *self.mapping_ids.entry(mapping).or_insert_with_key(|mapping| {
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
            .find(hash, |&id| locations[id] == location)
        {
            return id;
        }
        locations.push(location);
        let id = locations.len() - 1;
        self.location_ids
            .insert_unique(hash, id, |&id| hasher.hash_one(&locations[id]));
        id
    }

    fn add_sample(&mut self, sample: Sample) {
        let hasher = &self.hasher;
        let samples = &mut self.profile.samples;
        let hash = hasher.hash_one(SampleKey::of(&sample));
        if let Some(&id) = self
            .sample_ids
            .find(hash, |&id| SampleKey::of(&samples[id]) == SampleKey::of(&sample))
        {
            let total = &mut samples[id].count;
            *total = total.saturating_add(sample.count);
            return;
        }
        samples.push(sample);
        let id = samples.len() - 1;
        self.sample_ids
            .insert_unique(hash, id, |&id| hasher.hash_one(SampleKey::of(&samples[id])));
    }
}

/// What makes two samples the same stack of the same thread: everything but the count.
#[derive(Hash, PartialEq, Eq)]
struct SampleKey<'a> {
    stack: &'a [LocationId],
    pid: Option<u32>,
    tid: Option<u32>,
    process_name: Option<&'a str>,
    thread_name: Option<&'a str>,
    truncated: bool,
}

impl<'a> SampleKey<'a> {
    fn of(sample: &'a Sample) -> Self {
        SampleKey {
            stack: &sample.stack,
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
    use emberprof_symbolizer::UnknownReason;

    use super::*;
    use crate::profile::testdata;

    /// A location as its mapping's path and its frames' names.
    type Resolved = (Option<String>, Vec<String>);

    /// Each sample as its locations, outermost first, its pid and its count, sorted.
    fn resolved(profile: &Profile) -> Vec<(Vec<Resolved>, Option<u32>, u64)> {
        let mut samples: Vec<_> = profile
            .samples
            .iter()
            .map(|sample| {
                let stack = sample
                    .stack
                    .iter()
                    .map(|&id| {
                        let location = &profile.locations[id];
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
        let locations = reversed.locations.len();
        reversed.mappings.reverse();
        reversed.locations.reverse();
        for location in &mut reversed.locations {
            location.mapping = location.mapping.map(|m| mappings - 1 - m);
        }
        for sample in &mut reversed.samples {
            for id in &mut sample.stack {
                *id = locations - 1 - *id;
            }
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

    /// Past the label budget, ended processes lose pid and tid and their stacks merge by name:
    /// memory then grows with new stacks, not with processes.
    #[test]
    fn ended_processes_past_the_budget_merge_by_name() {
        let part = testdata::small();
        let distinct = part.samples.len();
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        merged.add_ended(part.clone(), LABELLED_ENDED_PROCESSES - 1);
        merged.add_ended(part.clone(), 1);
        assert_eq!(merged.profile.samples.len(), distinct, "the same pids again");
        for round in 0..100 {
            let mut later = part.clone();
            for sample in &mut later.samples {
                sample.pid = sample.pid.map(|pid| pid + 1000 * (round + 1));
            }
            merged.add_ended(later, 1);
        }
        let unlabelled = merged.profile.samples.iter().filter(|s| s.pid.is_none());
        assert!(unlabelled.clone().all(|s| s.tid.is_none()));
        assert!(unlabelled.count() <= distinct, "one per name and stack");
        let profile = merged.finish(Metadata::default());
        assert_eq!(profile.metadata.unlabelled_processes, 100);
        assert_eq!(profile.total_samples(), 102 * part.total_samples());

        // --per-thread: every process keeps its labels.
        let mut all = MergedProfile::new(EndedLabels::All);
        for round in 0..3 {
            let mut later = part.clone();
            for sample in &mut later.samples {
                sample.pid = sample.pid.map(|pid| pid + 1000 * round);
            }
            all.add_ended(later, LABELLED_ENDED_PROCESSES);
        }
        assert!(all.profile.samples.iter().all(|s| s.pid.is_some()));
        assert_eq!(all.profile.samples.len(), 3 * distinct);
    }
}
