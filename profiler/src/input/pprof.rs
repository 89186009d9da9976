//! pprof (`perftools.profiles.Profile`, gzip-compressed or not) into the model: emberprof's own
//! profiles come back as they were written (labels, `[kernel.kallsyms]`/`[jit]`/`[python]`
//! mappings, inlined lines, the `[truncated]` root, every value), and any other tool's as far as
//! pprof says: functions, inlined lines, mappings, and its sample types (up to
//! `values::MAX_VALUES`, the one that counts samples first).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use flate2::read::MultiGzDecoder;
use prost::Message;

use super::census::{census, MAX_EXPANDED_FRAMES};
use super::{MAX_EXPANDED_BYTES, MAX_FRAMES, MAX_INPUT_BYTES};
use crate::pprof::{self as proto, keys};
use crate::profile::values::{self, MAX_VALUES};
use crate::profile::{
    location_id, Frame, FrameKind, Location, Mapping, MappingKind, Metadata, Profile, Runtime,
    Sample, Stacks, ValueType, ValueTypes, Values, JIT_MAPPING, KERNEL_MAPPING, TRUNCATED_FRAME,
};
use emberprof_symbolizer::SharedStrings;

/// Longest build id kept (real ones are 20 bytes of SHA-1 as hex; Go's are some 80 characters).
pub const MAX_BUILD_ID_BYTES: usize = 256;
/// Bytes of all comments (emberprof writes a few lines).
pub const MAX_COMMENT_BYTES: usize = 1 << 20;

pub fn read_pprof(bytes: &[u8], name: &str) -> Result<Profile> {
    let decoded;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        // Counted streaming first: a gzip bomb is refused before it is held in memory.
        census(MultiGzDecoder::new(bytes), name)?;
        decoded = gunzip(bytes, name)?;
        &decoded[..]
    } else {
        census(bytes, name)?;
        bytes
    };
    let message = proto::Profile::decode(bytes)
        .map_err(|error| anyhow!("{name}: not a pprof profile: {error}"))?;
    Reader {
        name,
        strings: &message.string_table,
        shared: RefCell::default(),
    }
    .convert(&message)
}

fn gunzip(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    let mut decoder = MultiGzDecoder::new(bytes).take(MAX_INPUT_BYTES + 1);
    let mut out = Vec::new();
    if let Err(error) = decoder.read_to_end(&mut out) {
        bail!(
            "{name}: truncated or corrupt gzip data after {} decompressed bytes: {error}",
            out.len()
        );
    }
    if out.len() as u64 > MAX_INPUT_BYTES {
        bail!("{name}: decompresses to more than {MAX_INPUT_BYTES} bytes; not read");
    }
    Ok(out)
}

struct Reader<'a> {
    name: &'a str,
    strings: &'a [String],
    /// The one copy of each string the profile keeps, by its index: a hostile file can name one
    /// huge string from every function, mapping and label.
    shared: RefCell<HashMap<usize, Arc<str>>>,
}

impl Reader<'_> {
    fn string(&self, index: i64, what: &str) -> Result<&str> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.strings.get(i))
            .map(String::as_str)
            .ok_or_else(|| {
                anyhow!(
                    "{}: {what} refers to string {index}, but the string table has {}",
                    self.name,
                    self.strings.len()
                )
            })
    }

    /// The shared copy of string `index`.
    fn shared(&self, index: i64, what: &str) -> Result<Arc<str>> {
        let text = self.string(index, what)?;
        // `string` checked the index.
        let index = index as usize;
        let mut shared = self.shared.borrow_mut();
        Ok(shared
            .entry(index)
            .or_insert_with(|| Arc::from(text))
            .clone())
    }

    fn optional(&self, index: i64, what: &str) -> Result<Option<Arc<str>>> {
        let text = self.shared(index, what)?;
        Ok((!text.is_empty()).then_some(text))
    }

    fn convert(&self, message: &proto::Profile) -> Result<Profile> {
        let name = self.name;
        if self.strings.first().is_some_and(|s| !s.is_empty()) {
            bail!("{name}: not a pprof profile: string_table[0] must be empty");
        }
        let (value_types, value_indices) = self.value_types(message)?;

        let mut mappings = Vec::with_capacity(message.mapping.len());
        // Addresses become file offsets, as the model keeps them (emberprof's own mappings start
        // at 0 with file offset 0, so its addresses stay as they are).
        let mut offset_bases = Vec::with_capacity(message.mapping.len());
        let mut mapping_ids = HashMap::new();
        let mut display_names = SharedStrings::default();
        for (index, mapping) in message.mapping.iter().enumerate() {
            let what = format!("mapping {}", mapping.id);
            let path = self.string(mapping.filename, &what)?;
            let runtime = Runtime::ALL.into_iter().find(|r| r.mapping_name() == path);
            let kind = match path {
                KERNEL_MAPPING => MappingKind::Kernel,
                JIT_MAPPING => MappingKind::Jit,
                _ if path.starts_with("[kernel") => MappingKind::Kernel,
                _ => runtime.map_or(MappingKind::User, MappingKind::Interpreted),
            };
            let display_name = match path.rsplit('/').next().unwrap_or(path) {
                "" => path,
                name => name,
            };
            offset_bases.push((mapping.memory_start, mapping.file_offset));
            let build_id = self.optional(mapping.build_id, &what)?;
            // The model keeps a copy per mapping: an absurd one is left out, not copied.
            let build_id = build_id.filter(|b| {
                let fits = b.len() <= MAX_BUILD_ID_BYTES;
                if !fits {
                    log::warn!("{name}: {what}: a build id of {} bytes; left out", b.len());
                }
                fits
            });
            mappings.push(Mapping {
                path: self.shared(mapping.filename, &what)?,
                display_name: display_names.get(display_name),
                build_id: build_id.map(|b| b.to_string()),
                kind,
            });
            if mapping.id == 0 || mapping_ids.insert(mapping.id, index).is_some() {
                bail!(
                    "{name}: mapping {index} has id {}: ids must be unique and nonzero",
                    mapping.id
                );
            }
        }

        let mut functions = HashMap::with_capacity(message.function.len());
        for function in &message.function {
            let what = format!("function {}", function.id);
            let frame_name = self.shared(function.name, &what)?;
            let system_name = self.optional(function.system_name, &what)?;
            let mut frame = Frame::new(frame_name.clone(), FrameKind::User);
            frame.system_name = system_name.filter(|s| *s != frame_name);
            frame.file = self.optional(function.filename, &what)?;
            if function.id == 0 || functions.insert(function.id, frame).is_some() {
                bail!("{name}: function id {} is zero or not unique", function.id);
            }
        }

        let mut locations = Vec::with_capacity(message.location.len());
        let mut expansions = Vec::with_capacity(message.location.len());
        let mut location_ids = HashMap::with_capacity(message.location.len());
        let mut truncated_root = None;
        let mut has_lines = false;
        for (index, location) in message.location.iter().enumerate() {
            let mapping = match location.mapping_id {
                0 => None,
                id => Some(*mapping_ids.get(&id).ok_or_else(|| {
                    anyhow!(
                        "{name}: location {} refers to mapping {id}, which does not exist",
                        location.id
                    )
                })?),
            };
            let kind = mapping.map_or(MappingKind::User, |m: usize| mappings[m].kind);
            let count = location.line.len();
            let mut frames = Vec::with_capacity(count);
            // pprof lists the innermost inlined function first; the model, outermost first.
            for (position, line) in location.line.iter().rev().enumerate() {
                let mut frame = functions
                    .get(&line.function_id)
                    .ok_or_else(|| {
                        anyhow!(
                            "{name}: location {} refers to function {}, which does not exist",
                            location.id,
                            line.function_id
                        )
                    })?
                    .clone();
                frame.kind = match (kind, position) {
                    (MappingKind::Kernel, _) => FrameKind::Kernel,
                    (MappingKind::Jit, 0) => FrameKind::Jit,
                    (_, 0) => FrameKind::User,
                    _ => FrameKind::Inlined,
                };
                frame.line = u32::try_from(line.line).ok().filter(|&l| l > 0);
                has_lines |= frame.line.is_some();
                frames.push(frame);
            }
            if mapping.is_none()
                && location.address == 0
                && frames.len() == 1
                && &*frames[0].name == TRUNCATED_FRAME
            {
                truncated_root = Some(location.id);
            }
            let address = match mapping.map(|m| offset_bases[m]) {
                Some((start, offset)) if kind == MappingKind::User => location
                    .address
                    .checked_sub(start)
                    .and_then(|a| a.checked_add(offset))
                    .unwrap_or(location.address),
                _ => location.address,
            };
            expansions.push(Expansion::of_location(
                &frames,
                mapping.map(|m| &*mappings[m].display_name),
            ));
            locations.push(Location {
                mapping,
                address,
                frames,
                in_kernel: kind == MappingKind::Kernel,
            });
            if location.id == 0
                || location_ids
                    .insert(location.id, location_id(index))
                    .is_some()
            {
                bail!(
                    "{name}: location {index} has id {}: ids must be unique and nonzero",
                    location.id
                );
            }
        }

        let mut samples = Vec::with_capacity(message.sample.len());
        let mut stacks = Stacks::default();
        let mut totals = [0u64; MAX_VALUES];
        let mut expanded = Expansion::default();
        // Label strings by their index in the string table: one copy for the samples sharing one.
        let mut names: HashMap<i64, Arc<str>> = HashMap::new();
        let mut label_string = |index: i64| -> Result<Arc<str>> {
            if let Some(name) = names.get(&index) {
                return Ok(name.clone());
            }
            let name: Arc<str> = self.string(index, "a label")?.into();
            names.insert(index, name.clone());
            Ok(name)
        };
        for (index, sample) in message.sample.iter().enumerate() {
            let at = || format!("{name}: sample {index}");
            if sample.value.len() != message.sample_type.len() {
                bail!(
                    "{}: has {} values, the profile {} sample types",
                    at(),
                    sample.value.len(),
                    message.sample_type.len()
                );
            }
            let mut values = Values::default();
            for (to, &from) in value_indices.iter().enumerate() {
                let value = sample.value[from];
                let value = u64::try_from(value)
                    .map_err(|_| anyhow!("{}: negative sample value {value}", at()))?;
                totals[to] = totals[to].checked_add(value).ok_or_else(|| {
                    anyhow!("{}: the sample values add up to more than 2^64 - 1", at())
                })?;
                values.set(to, value);
            }
            if sample.location_id.len() > MAX_FRAMES {
                bail!(
                    "{}: a stack of {} frames, more than the limit of {MAX_FRAMES}",
                    at(),
                    sample.location_id.len()
                );
            }
            let mut ids = sample.location_id.as_slice();
            let mut truncated = false;
            if let (Some(root), Some((&last, rest))) = (truncated_root, ids.split_last()) {
                if last == root {
                    truncated = true;
                    ids = rest;
                }
            }
            let mut stack = Vec::with_capacity(ids.len());
            for id in ids.iter().rev() {
                stack.push(*location_ids.get(id).ok_or_else(|| {
                    anyhow!("{}: refers to location {id}, which does not exist", at())
                })?);
            }
            let mut converted = Sample {
                values,
                truncated,
                ..Sample::default()
            };
            for label in &sample.label {
                let key = self.string(label.key, "a label")?;
                match key {
                    keys::PID => converted.pid = u32::try_from(label.num).ok(),
                    keys::TID => converted.tid = u32::try_from(label.num).ok(),
                    keys::PROCESS_NAME => converted.process_name = Some(label_string(label.str)?),
                    keys::THREAD_NAME => converted.thread_name = Some(label_string(label.str)?),
                    _ => {}
                }
            }
            if !values.is_zero() {
                // Before the stack is stored: the budget is for the whole profile, so that a
                // small file cannot make folding write gigabytes (one location of 1,000 inlined
                // lines, named 4,096 times by each of a few samples).
                let mut expansion = Expansion::of_root(&converted);
                for &id in &stack {
                    expansion.add(expansions[id as usize]);
                }
                expanded.add(expansion);
                expanded.check(at)?;
                converted.stack = stacks.insert(&stack);
                samples.push(converted);
            }
        }

        let mut metadata = Metadata {
            has_lines,
            start_time: u64::try_from(message.time_nanos)
                .ok()
                .filter(|&n| n > 0)
                .map(|n| UNIX_EPOCH + Duration::from_nanos(n)),
            duration: u64::try_from(message.duration_nanos)
                .ok()
                .filter(|&n| n > 0)
                .map(Duration::from_nanos),
            ..Metadata::default()
        };
        if let Some(period_type) = &message.period_type {
            let unit = self.string(period_type.unit, "period_type")?;
            if unit == "nanoseconds" && message.period > 0 {
                let hz = 1_000_000_000f64 / message.period as f64;
                metadata.frequency_hz = Some(hz.round().max(1.0) as u64);
            }
        }
        let mut comment_bytes = 0usize;
        for &comment in &message.comment {
            let comment = self.string(comment, "a comment")?;
            // Copied into the model: one huge string named by every comment would be copied
            // thousands of times.
            comment_bytes = comment_bytes.saturating_add(comment.len());
            if comment_bytes > MAX_COMMENT_BYTES {
                bail!("{name}: comments of more than {MAX_COMMENT_BYTES} bytes in all; not read");
            }
            if let Some(command) = comment.strip_prefix(keys::COMMAND) {
                metadata.command_line = Some(command.to_owned());
            } else if let Some(lost) = comment.strip_prefix(keys::LOST) {
                metadata.lost_samples = lost.parse().unwrap_or(0);
            } else if let Some(mode) = comment.strip_prefix(keys::UNWINDING) {
                metadata.unwinding = Some(mode.to_owned());
            } else if let Some(count) = comment.strip_prefix(keys::UNLABELLED) {
                metadata.unlabelled_processes = count.parse().unwrap_or(0);
            } else if !comment.starts_with(keys::TRUNCATED) {
                metadata.comments.push(comment.to_owned());
            }
        }
        Ok(Profile {
            metadata,
            value_types,
            mappings,
            locations,
            stacks,
            samples,
        })
    }

    /// The value types kept (at most [`MAX_VALUES`]) and the index of each in the file's. The
    /// counting value comes first: the `samples`/`count` type if there is one (Go's CPU profiles
    /// and ours), else the default sample type, else the last (as pprof does); then the others in
    /// file order.
    fn value_types(&self, message: &proto::Profile) -> Result<(ValueTypes, Vec<usize>)> {
        if message.sample_type.is_empty() {
            bail!("{}: not a pprof profile: it has no sample types", self.name);
        }
        let mut types = Vec::new();
        for sample_type in &message.sample_type {
            types.push(ValueType {
                name: self.shared(sample_type.r#type, "a sample type")?,
                unit: self.shared(sample_type.unit, "a sample type")?,
            });
        }
        let mut counting = types.iter().position(|t| t.is(values::SAMPLES));
        if counting.is_none() && message.default_sample_type != 0 {
            let default = self.string(message.default_sample_type, "default_sample_type")?;
            counting = types.iter().position(|t| &*t.name == default);
        }
        let counting = counting.unwrap_or(types.len() - 1);
        let (mut kept, _) = ValueTypes::new(types[counting].clone(), []);
        let mut indices = vec![counting];
        for index in (0..types.len()).filter(|&i| i != counting) {
            let next = kept.len();
            // A type of the same name and unit as one kept already is left out with the rest.
            if next < MAX_VALUES && kept.push(types[index].clone()) == Some(next) {
                indices.push(index);
            }
        }
        if indices.len() < types.len() {
            log::warn!(
                "{}: {} sample types; only {} are read ({})",
                self.name,
                types.len(),
                kept.len(),
                kept.as_slice()
                    .iter()
                    .map(|t| format!("{}/{}", t.name, t.unit))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok((kept, indices))
    }
}

/// What folding a location or a sample writes at most: frames (inlined ones included) and bytes of
/// text. Bytes count each frame's name and file and a margin for its suffix, `;` and line number,
/// and a sample's root (its process and thread names).
#[derive(Clone, Copy, Debug, Default)]
struct Expansion {
    frames: u64,
    bytes: u64,
}

/// Bytes a frame or root may add besides its names: `_[i]`, `;`, ` (:LINE)`, `-PID/TID`.
const MARGIN: u64 = 24;

impl Expansion {
    fn of_location(frames: &[Frame], unnamed: Option<&str>) -> Expansion {
        if frames.is_empty() {
            // `module+0xOFFSET` or `[unknown]`.
            let bytes = unnamed.map_or(0, str::len) as u64 + MARGIN;
            return Expansion { frames: 1, bytes };
        }
        let bytes = frames.iter().fold(0u64, |bytes, frame| {
            // `--lines` shows the file only with a line.
            let file = match (&frame.file, frame.line) {
                (Some(file), Some(_)) => file.len(),
                _ => 0,
            };
            bytes.saturating_add((frame.name.len() + file) as u64 + MARGIN)
        });
        Expansion {
            frames: frames.len() as u64,
            bytes,
        }
    }

    fn of_root(sample: &Sample) -> Expansion {
        let name = |name: &Option<Arc<str>>| name.as_deref().map_or(0, str::len) as u64;
        Expansion {
            frames: 2,
            bytes: name(&sample.process_name) + name(&sample.thread_name) + 2 * MARGIN,
        }
    }

    fn add(&mut self, other: Expansion) {
        self.frames = self.frames.saturating_add(other.frames);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    /// An error past the budget, naming the sample `at` gives.
    fn check(&self, at: impl Fn() -> String) -> Result<()> {
        if self.frames > MAX_EXPANDED_FRAMES {
            bail!(
                "{}: the samples so far expand to more than {MAX_EXPANDED_FRAMES} frames \
                 (inlined functions included); not read",
                at()
            );
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            bail!(
                "{}: the samples so far expand to more than {MAX_EXPANDED_BYTES} bytes of folded \
                 stacks; not read",
                at()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pprof as another tool writes it: one function `f` at one location, two samples with
    /// `values` each, of `types` (name, unit), `default` naming the default sample type.
    fn foreign(types: &[(&str, &str)], default: &str, values: [&[i64]; 2]) -> Vec<u8> {
        let mut strings = vec![String::new()];
        let mut string = |text: &str| {
            let index = strings.iter().position(|s| s == text).unwrap_or_else(|| {
                strings.push(text.to_owned());
                strings.len() - 1
            });
            index as i64
        };
        let sample_type = types
            .iter()
            .map(|&(name, unit)| proto::ValueType {
                r#type: string(name),
                unit: string(unit),
            })
            .collect();
        let function = vec![proto::Function {
            id: 1,
            name: string("f"),
            ..Default::default()
        }];
        let default_sample_type = if default.is_empty() {
            0
        } else {
            string(default)
        };
        let message = proto::Profile {
            sample_type,
            sample: values
                .iter()
                .map(|v| proto::Sample {
                    location_id: vec![1],
                    value: v.to_vec(),
                    label: vec![],
                })
                .collect(),
            location: vec![proto::Location {
                id: 1,
                line: vec![proto::Line {
                    function_id: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            function,
            default_sample_type,
            string_table: strings,
            ..Default::default()
        };
        message.encode_to_vec()
    }

    fn names(profile: &Profile) -> Vec<String> {
        let types = profile.value_types.as_slice();
        types
            .iter()
            .map(|t| format!("{}/{}", t.name, t.unit))
            .collect()
    }

    /// Go's CPU profiles (`runtime/pprof`: samples/count, cpu/nanoseconds) read with both values;
    /// samples count, CPU time is there for `--value cpu`.
    #[test]
    fn go_cpu_profiles_keep_both_values() {
        let bytes = foreign(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            "",
            [&[2, 20_000_000], &[1, 10_000_000]],
        );
        let profile = read_pprof(&bytes, "cpu.pprof").expect("read");
        assert_eq!(names(&profile), ["samples/count", "cpu/nanoseconds"]);
        assert_eq!(profile.total_samples(), 3);
        assert_eq!(profile.samples[0].values.get(1), 20_000_000);
    }

    /// Heap profiles have no `samples` type: the default sample type counts, else the last (what
    /// `report` showed before values were typed); it comes first, then the others in file order,
    /// up to `MAX_VALUES`.
    #[test]
    fn heap_profiles_count_their_default_type() {
        let types = [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ];
        let values: [&[i64]; 2] = [&[1, 2, 3, 4], &[10, 20, 30, 40]];
        let profile = read_pprof(&foreign(&types, "alloc_space", values), "heap").expect("read");
        assert_eq!(
            names(&profile),
            [
                "alloc_space/bytes",
                "alloc_objects/count",
                "inuse_objects/count"
            ]
        );
        assert_eq!(profile.total_samples(), 22);
        assert_eq!(profile.samples[1].values.get(2), 30);
        let profile = read_pprof(&foreign(&types, "", values), "heap").expect("read");
        assert_eq!(names(&profile)[0], "inuse_space/bytes");
        assert_eq!(profile.total_samples(), 44);
    }

    /// Negative values (a pprof diff) and samples with too few values are errors naming the
    /// sample.
    #[test]
    fn bad_values_are_refused() {
        let types = [("samples", "count"), ("cpu", "nanoseconds")];
        let negative = foreign(&types, "", [&[1, 5], &[1, -5]]);
        let error = read_pprof(&negative, "x").unwrap_err().to_string();
        assert!(
            error.contains("sample 1: negative sample value -5"),
            "{error}"
        );
        let short = foreign(&types, "", [&[1, 5], &[1]]);
        let error = read_pprof(&short, "x").unwrap_err().to_string();
        assert!(error.contains("sample 1: has 1 values"), "{error}");
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use crate::input::census::MAX_LINES_PER_LOCATION;

    /// One function named `name` inlined `lines` deep at location 1 (location 2 is `g`), and one
    /// sample per entry of `stacks`, each naming location 1 `repeat` times under its locations.
    fn inlined(name: &str, lines: usize, repeat: usize, stacks: &[&[u64]]) -> Vec<u8> {
        let message = proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            string_table: ["", "samples", "count", name, "g"]
                .map(String::from)
                .to_vec(),
            function: vec![
                proto::Function {
                    id: 1,
                    name: 3,
                    ..Default::default()
                },
                proto::Function {
                    id: 2,
                    name: 4,
                    ..Default::default()
                },
            ],
            location: vec![
                proto::Location {
                    id: 1,
                    line: vec![
                        proto::Line {
                            function_id: 1,
                            ..Default::default()
                        };
                        lines
                    ],
                    ..Default::default()
                },
                proto::Location {
                    id: 2,
                    line: vec![proto::Line {
                        function_id: 2,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            sample: stacks
                .iter()
                .map(|outer| proto::Sample {
                    location_id: [vec![1; repeat], outer.to_vec()].concat(),
                    value: vec![1],
                    label: vec![],
                })
                .collect(),
            ..Default::default()
        };
        message.encode_to_vec()
    }

    /// The expansion budget is for the whole profile, not per sample: each sample of a location
    /// inlined 256 deep named 4,096 times expands to 1 Mi frames of ~110 bytes (110 MiB of folded
    /// text from a few hundred bytes); two are read, three are refused before their stacks are
    /// stored, naming the sample.
    #[test]
    fn expansion_is_budgeted_in_all() {
        let name = "f".repeat(86);
        let deep = MAX_LINES_PER_LOCATION as usize;
        let two = inlined(&name, deep, MAX_FRAMES - 2, &[&[2], &[2, 2]]);
        let profile = read_pprof(&two, "two").expect("within the budget");
        assert_eq!(profile.samples.len(), 2);
        let three = inlined(&name, deep, MAX_FRAMES - 2, &[&[2], &[2, 2], &[]]);
        let Err(error) = read_pprof(&three, "three").map(drop) else {
            panic!("three samples of 110 MiB each were read");
        };
        let error = error.to_string();
        assert_eq!(
            error,
            format!(
                "three: sample 2: the samples so far expand to more than {MAX_EXPANDED_BYTES} \
                 bytes of folded stacks; not read"
            )
        );
    }

    /// A huge string named by every function is held once (it was copied per function).
    #[test]
    fn strings_are_shared_by_index() {
        let bytes = inlined("h", 2, 1, &[&[2]]);
        let profile = read_pprof(&bytes, "x").expect("read");
        let frames = &profile.locations[0].frames;
        assert!(Arc::ptr_eq(&frames[0].name, &frames[1].name));
    }
}
