//! A profile that grows part by part while recording: at every switch of the kernel maps, the
//! samples just read are symbolized and added here (those of processes that ended, whose
//! snapshots and caches are released then, and those of processes still running); the last
//! samples are added at the stop.
//!
//! Adding a part costs the part's size, not the whole's: everything is interned (see `intern`),
//! and the profile is never rebuilt but once, at compaction. What keeps a long `--all` run bounded
//! by what its output shows are the two policies of `policy`: the label budget and compaction.

use super::intern::{Interner, Sharing};
use super::policy::{Compaction, LabelBudget};
use super::{values, Metadata, Profile};

pub use super::policy::{EndedLabels, LABELLED_PROCESSES};

pub struct MergedProfile {
    interner: Interner,
    labels: LabelBudget,
    compaction: Compaction,
}

impl MergedProfile {
    pub fn new(labels: EndedLabels) -> Self {
        MergedProfile {
            interner: Interner::new(Metadata::default()),
            labels: LabelBudget::new(labels),
            compaction: Compaction::default(),
        }
    }

    /// Holds at most about `bytes` in all (`--max-profile-size`, see [`super::policy::MAX_PROFILE_BYTES`]):
    /// past it, stacks are cut and samples merged, their values kept (see
    /// `Interner::set_limit`). With every process's labels kept (`--per-thread`), samples past it
    /// keep their pid and tid.
    pub fn within(mut self, bytes: u64) -> Self {
        let keep_threads = self.labels.keeps_all();
        self.interner.set_limit(bytes, keep_threads);
        self
    }

    /// Adds `part`, built from the samples of processes that have ended; those past the label
    /// budget are counted in the metadata as unlabelled.
    pub fn add_ended(&mut self, mut part: Profile) {
        let unlabelled = self.labels.strip(&mut part);
        self.interner.metadata_mut().unlabelled_processes += unlabelled;
        self.labels.ended(&part);
        self.add_labelled(part);
    }

    /// Adds the samples of `part` (with their labels while the budget lasts), its mappings and
    /// locations stored once, its values added to those of the same types, and its truncation and
    /// unnamed-frame counts; the rest of its metadata is ignored (see [`MergedProfile::finish`]).
    pub fn add(&mut self, mut part: Profile) {
        self.labels.strip(&mut part);
        self.add_labelled(part);
    }

    fn add_labelled(&mut self, mut part: Profile) {
        let value_map = self.interner.value_map(&part.value_types);
        let same_values = value_map.iter().enumerate().all(|(i, &to)| to == Some(i));
        self.interner.make_room(&part);
        let stack_map = self.interner.add_stacks_of(&mut part);
        for mut sample in part.samples {
            sample.stack = stack_map[sample.stack as usize];
            if !same_values {
                sample.values = sample.values.remapped(&value_map);
            }
            self.interner.add_sample(sample);
        }
        if self.interner.sharing() == Sharing::Kernel
            && self.compaction.due(self.interner.profile())
        {
            self.interner.reshare(Sharing::All);
            let profile = self.interner.profile();
            log::debug!(
                "profile compacted to one location per function: {} locations, {} samples",
                profile.locations.len(),
                profile.samples.len()
            );
        }
        let metadata = self.interner.metadata_mut();
        metadata.truncation.add(part.metadata.truncation);
        for (reason, count) in part.metadata.unknown_frames {
            *metadata.unknown_frames.entry(reason).or_default() += count;
        }
    }

    /// Entries held, for the debug log of long runs.
    pub fn sizes(&self) -> String {
        let profile = self.interner.profile();
        format!(
            "{} samples, {} stack nodes, {} locations, {} mappings, {} processes unlabelled, \
             about {} KiB held",
            profile.samples.len(),
            profile.stacks.len(),
            profile.locations.len(),
            profile.mappings.len(),
            profile.metadata.unlabelled_processes,
            self.interner.held_bytes() >> 10
        )
    }

    /// The whole profile, with `metadata` (the capture's) completed by the counts of the parts,
    /// and CPU time from its sampling frequency.
    pub fn finish(self, mut metadata: Metadata) -> Profile {
        let mut profile = self.interner.into_profile();
        metadata.truncation.add(profile.metadata.truncation);
        for (reason, count) in profile.metadata.unknown_frames {
            *metadata.unknown_frames.entry(reason).or_default() += count;
        }
        metadata.unlabelled_processes += profile.metadata.unlabelled_processes;
        metadata.over_budget_samples += profile.metadata.over_budget_samples;
        profile.metadata = metadata;
        values::add_cpu_time(&mut profile);
        profile
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use emberprof_symbolizer::UnknownReason;

    use std::collections::HashSet;

    use super::*;
    use crate::profile::policy::{EXACT_LOCATIONS, EXACT_SAMPLES};
    use crate::profile::{
        location_id, testdata, Location, Mapping, Sample, Stacks, Values, OVER_BUDGET_FRAME,
    };

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
                (stack, sample.pid, sample.values.get(0))
            })
            .collect();
        samples.sort();
        samples
    }

    /// The same profile with its mappings and locations in reverse order.
    fn reversed(profile: &Profile) -> Profile {
        let mut reversed = profile.clone();
        let mappings = reversed.mappings.len();
        let locations = location_id(reversed.locations.len());
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
        assert_eq!(resolved(merged.interner.profile()), resolved(&original));

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
        merged.labels.budget = pids.len();
        merged.add(part.clone());
        merged.add_ended(part.clone());
        assert_eq!(
            merged.interner.profile().samples.len(),
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
        let unlabelled = merged
            .interner
            .profile()
            .samples
            .iter()
            .filter(|s| s.pid.is_none());
        assert!(unlabelled.clone().all(|s| s.tid.is_none()));
        let unlabelled = unlabelled.count();
        assert!(
            (1..=distinct).contains(&unlabelled),
            "one per name and stack: {unlabelled}"
        );
        assert_eq!(
            merged.interner.profile().samples.len(),
            distinct + unlabelled
        );
        // Labelled and unlabelled samples of one stack share it (one id, one path of nodes).
        let samples = &merged.interner.profile().samples;
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
        all.labels.budget = 0;
        for round in 0..3 {
            all.add_ended(with_pids_moved(&part, 1000 * round));
        }
        assert!(all
            .interner
            .profile()
            .samples
            .iter()
            .all(|s| s.pid.is_some()));
        assert_eq!(all.interner.profile().samples.len(), 3 * distinct);
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
                values: Values::count(1),
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
        let locations = &merged.interner.profile().locations;
        let of = |name: &str| {
            locations
                .iter()
                .filter(|l| &*l.frames[0].name == name)
                .count()
        };
        assert_eq!((of("k"), of("u"), of("k2")), (1, 3, 1));
        assert_eq!(merged.interner.profile().samples.len(), 1 + 3 + 1);
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
        assert_eq!(merged.interner.profile().locations.len(), 2);
        assert_eq!(merged.interner.profile().samples.len(), 2);
        let filler: Vec<u64> = (100..100 + EXACT_LOCATIONS as u64).collect();
        merged.add(part_at(&filler, |a| format!("g{a}"), false));
        let folded_before = fold_all(merged.interner.profile());
        // The next part compacts the profile first.
        merged.add(part_at(&[3], |_| "f".to_owned(), false));
        assert_eq!(
            merged.interner.profile().locations.len(),
            EXACT_LOCATIONS + 1
        );
        assert_eq!(
            merged.interner.profile().samples.len(),
            2,
            "f at 1, 2 and 3 is one sample; the filler"
        );
        merged.add(part_at(&[4], |_| "h".to_owned(), false));
        assert_eq!(
            merged.interner.profile().locations.len(),
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
        assert_eq!(merged.interner.profile().samples.len(), 1);
        assert_eq!(
            merged.interner.profile().samples[0].values.get(0),
            side * side
        );
        assert_eq!(merged.interner.profile().locations.len(), 2);
    }

    /// A part of one sample of process `name` (pid `pid`) through functions `names`, outermost
    /// first, each at its own address of one user mapping.
    fn part_of(name: &str, pid: u32, names: &[String]) -> Profile {
        let mut part = part_at(
            &(1..=names.len() as u64).collect::<Vec<_>>(),
            |a| names[a as usize - 1].clone(),
            false,
        );
        part.samples[0].process_name = Some(name.into());
        part.samples[0].pid = Some(pid);
        part.samples[0].tid = Some(pid);
        part
    }

    /// Past its limit the profile stops growing: a new stack is cut where it leaves the held
    /// ones (ending in `[over budget]`), a new sample merges with a held one, and every sample's
    /// values stay, so the total and the widths of what was held are right; what was cut is
    /// counted.
    #[test]
    fn a_profile_past_its_limit_cuts_stacks_and_keeps_every_sample() {
        const LIMIT: u64 = 64 << 10;
        let mut merged = MergedProfile::new(EndedLabels::Bounded).within(LIMIT);
        let stack = |i: u32| -> Vec<String> {
            // Shared outer frames, then frames of its own: a program with ever new stacks.
            ["main", "run"]
                .iter()
                .map(|s| s.to_string())
                .chain((0..8).map(|depth| format!("f{i}_{depth}")))
                .collect()
        };
        let added = 5_000;
        for i in 0..added {
            merged.add(part_of("app", 1 + i % 7, &stack(i)));
        }
        let held = merged.interner.held_bytes();
        assert!(held <= LIMIT + LIMIT / 4, "{held} bytes held");
        let profile = merged.finish(Metadata::default());
        assert_eq!(profile.total_samples(), u64::from(added), "no sample lost");
        let folded = crate::output::fold(&profile, &Default::default())
            .expect("fold")
            .counts();
        let whole = folded
            .iter()
            .filter(|(line, _)| line.starts_with("app;main;run;f") && line.ends_with("_7"))
            .count();
        // Each stack has 8 functions of its own: some 40 fit in the limit.
        assert!(whole > 20, "{whole} stacks kept whole: {folded:?}");
        let cut = folded
            .iter()
            .filter(|(line, _)| line.ends_with(&format!(";{OVER_BUDGET_FRAME}")))
            .map(|(line, count)| {
                assert!(line.starts_with("app;main;run"), "{line}");
                count
            })
            .sum::<u64>();
        assert!(cut * 2 >= u64::from(added), "{cut} samples cut");
        assert_eq!(profile.metadata.over_budget_samples, cut);
        assert_samples_distinct(&profile);
    }

    /// No two samples differ only in their values: pruning merged those it made equal.
    fn assert_samples_distinct(profile: &Profile) {
        let mut keys = HashSet::new();
        for sample in &profile.samples {
            let key = (
                sample.stack,
                sample.pid,
                sample.tid,
                sample.process_name.clone(),
                sample.thread_name.clone(),
                sample.truncated,
            );
            assert!(keys.insert(key), "a sample twice: {sample:?}");
        }
    }

    /// Past the limit the profile keeps its heaviest samples: a program that starts late and
    /// runs long gets its stacks whole (after some of its samples went to `[over budget]` under
    /// its held callers), and the light stacks that made way are counted there.
    #[test]
    fn a_heavy_stack_that_comes_late_is_kept_whole() {
        const LIMIT: u64 = 64 << 10;
        let mut merged = MergedProfile::new(EndedLabels::Bounded).within(LIMIT);
        let light = |i: u32| vec!["main".to_owned(), format!("light{i}")];
        for i in 0..3_000 {
            merged.add(part_of("app", 1, &light(i)));
        }
        let late: Vec<String> = ["main", "late", "hot"].map(String::from).to_vec();
        for _ in 0..3_000 {
            merged.add(part_of("app", 1, &late));
        }
        let held = merged.interner.held_bytes();
        assert!(held <= LIMIT + LIMIT / 4, "{held} bytes held");
        let profile = merged.finish(Metadata::default());
        assert_eq!(profile.total_samples(), 6_000);
        let folded = crate::output::fold(&profile, &Default::default())
            .expect("fold")
            .counts();
        let hot = folded.get("app;main;late;hot").copied().unwrap_or(0);
        assert!(hot >= 2_000, "the late stack has {hot} samples: {folded:?}");
        let over = folded
            .get(&format!("app;main;{OVER_BUDGET_FRAME}"))
            .copied()
            .unwrap_or(0);
        assert!(over > 0, "{folded:?}");
        assert_eq!(profile.metadata.over_budget_samples, over);
        assert_samples_distinct(&profile);
    }

    /// Samples that differ only in what the profiled program controls (pids and process names,
    /// here of ever new processes) cannot grow a profile past its limit either: past it they
    /// lose their labels, and an eighth past it their stacks and names.
    #[test]
    fn new_names_past_the_limit_do_not_grow_the_profile() {
        const LIMIT: u64 = 32 << 10;
        let mut merged = MergedProfile::new(EndedLabels::Bounded).within(LIMIT);
        let names = vec!["main".to_owned(), "work".to_owned()];
        for i in 0..20_000 {
            merged.add_ended(part_of(&format!("p{i}"), i, &names));
        }
        let held = merged.interner.held_bytes();
        assert!(held <= LIMIT + LIMIT / 4, "{held} bytes held");
        let profile = merged.finish(Metadata::default());
        assert_eq!(profile.total_samples(), 20_000);
        let folded = crate::output::fold(&profile, &Default::default())
            .expect("fold")
            .counts();
        assert_eq!(folded.get("p0;main;work"), Some(&1));
        assert!(folded.get(OVER_BUDGET_FRAME).is_some_and(|&n| n > 10_000));
    }

    /// With `--per-thread` every sample keeps its thread past the limit (the output has a tower
    /// per thread), its stack cut to `[over budget]`.
    #[test]
    fn samples_past_the_limit_keep_their_thread_with_per_thread() {
        let mut merged = MergedProfile::new(EndedLabels::All).within(4 << 10);
        for i in 0..1_000 {
            let names = vec!["main".to_owned(), format!("f{i}")];
            merged.add(part_of("app", 7, &names));
        }
        let profile = merged.finish(Metadata::default());
        assert!(profile.metadata.over_budget_samples > 0);
        assert!(profile.samples.iter().all(|s| s.tid == Some(7)));
        assert_eq!(profile.total_samples(), 1_000);
    }

    /// Values add element-wise by type, whatever each part's order of types; a part with a type
    /// new to the profile adds it (older samples have 0 of it); finishing with the sampling
    /// frequency gives a capture its CPU time (samples × period).
    #[test]
    fn values_add_by_type_and_finish_adds_cpu_time() {
        use crate::profile::values::{OFF_CPU, SAMPLES};
        use crate::profile::{ValueType, ValueTypes};
        let samples_only = part_at(&[1], |_| "f".to_owned(), false);
        let mut off_cpu_first = part_at(&[1], |_| "f".to_owned(), false);
        off_cpu_first.value_types =
            ValueTypes::new(ValueType::of(OFF_CPU), [ValueType::of(SAMPLES)]).0;
        off_cpu_first.samples[0].values = Values::count(5_000);
        off_cpu_first.samples[0].values.set(1, 2);
        let mut merged = MergedProfile::new(EndedLabels::Bounded);
        merged.add(samples_only.clone());
        merged.add(off_cpu_first);
        merged.add(samples_only);
        let profile = merged.finish(Metadata {
            frequency_hz: Some(100),
            ..Metadata::default()
        });
        let types: Vec<String> = profile
            .value_types
            .as_slice()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        // CPU time right after the counting value, whatever order the parts came in.
        assert_eq!(types, ["samples", "cpu", "off_cpu"]);
        assert_eq!(profile.samples.len(), 1);
        let values = profile.samples[0].values;
        assert_eq!(
            (values.get(0), values.get(1), values.get(2)),
            (4, 40_000_000, 5_000)
        );
        assert_eq!(profile.total_samples(), 4);
    }
}
