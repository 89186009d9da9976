//! pprof (`perftools.profiles.Profile`, gzip-compressed or not) into the model: emberprof's own
//! profiles come back as they were written (labels, `[kernel.kallsyms]`/`[jit]` mappings, inlined
//! lines, the `[truncated]` root), and any other tool's as far as pprof says: functions, inlined
//! lines, mappings, and the sample value that counts samples.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use flate2::read::MultiGzDecoder;
use prost::Message;

use super::{MAX_FRAMES, MAX_INPUT_BYTES};
use crate::pprof::{self as proto, keys};
use crate::profile::{
    location_id, Frame, FrameKind, Location, Mapping, MappingKind, Metadata, Profile, Sample,
    Stacks, JIT_MAPPING, KERNEL_MAPPING, TRUNCATED_FRAME,
};

pub fn read_pprof(bytes: &[u8], name: &str) -> Result<Profile> {
    let decoded;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        decoded = gunzip(bytes, name)?;
        &decoded[..]
    } else {
        bytes
    };
    let message = proto::Profile::decode(bytes)
        .map_err(|error| anyhow!("{name}: not a pprof profile: {error}"))?;
    Reader {
        name,
        strings: &message.string_table,
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

    fn optional(&self, index: i64, what: &str) -> Result<Option<Arc<str>>> {
        let text = self.string(index, what)?;
        Ok((!text.is_empty()).then(|| Arc::from(text)))
    }

    fn convert(&self, message: &proto::Profile) -> Result<Profile> {
        let name = self.name;
        if self.strings.first().is_some_and(|s| !s.is_empty()) {
            bail!("{name}: not a pprof profile: string_table[0] must be empty");
        }
        let value_index = self.counting_value(message)?;

        let mut mappings = Vec::with_capacity(message.mapping.len());
        // Addresses become file offsets, as the model keeps them (emberprof's own mappings start
        // at 0 with file offset 0, so its addresses stay as they are).
        let mut offset_bases = Vec::with_capacity(message.mapping.len());
        let mut mapping_ids = HashMap::new();
        for (index, mapping) in message.mapping.iter().enumerate() {
            let what = format!("mapping {}", mapping.id);
            let path = self.string(mapping.filename, &what)?;
            let kind = match path {
                KERNEL_MAPPING => MappingKind::Kernel,
                JIT_MAPPING => MappingKind::Jit,
                _ if path.starts_with("[kernel") => MappingKind::Kernel,
                _ => MappingKind::User,
            };
            let display_name = path.rsplit('/').next().unwrap_or(path);
            offset_bases.push((mapping.memory_start, mapping.file_offset));
            mappings.push(Mapping {
                path: Arc::from(path),
                display_name: Arc::from(if display_name.is_empty() {
                    path
                } else {
                    display_name
                }),
                build_id: self
                    .optional(mapping.build_id, &what)?
                    .map(|b| b.to_string()),
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
            let frame_name = self.string(function.name, &what)?;
            let system_name = self.optional(function.system_name, &what)?;
            let mut frame = Frame::new(frame_name, FrameKind::User);
            frame.system_name = system_name.filter(|s| **s != *frame_name);
            frame.file = self.optional(function.filename, &what)?;
            if function.id == 0 || functions.insert(function.id, frame).is_some() {
                bail!("{name}: function id {} is zero or not unique", function.id);
            }
        }

        let mut locations = Vec::with_capacity(message.location.len());
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
        let mut total: u64 = 0;
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
            let value = *sample.value.get(value_index).ok_or_else(|| {
                anyhow!(
                    "{}: has {} values, the profile {} sample types",
                    at(),
                    sample.value.len(),
                    value_index + 1
                )
            })?;
            let count = u64::try_from(value)
                .map_err(|_| anyhow!("{}: negative sample count {value}", at()))?;
            total = total.checked_add(count).ok_or_else(|| {
                anyhow!("{}: the sample counts add up to more than 2^64 - 1", at())
            })?;
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
                count,
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
            if count > 0 {
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
        for &comment in &message.comment {
            let comment = self.string(comment, "a comment")?;
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
            mappings,
            locations,
            stacks,
            samples,
        })
    }

    /// Which sample value counts samples: the `samples`/`count` type if there is one (Go's CPU
    /// profiles and ours), else the default sample type, else the last (as pprof does).
    fn counting_value(&self, message: &proto::Profile) -> Result<usize> {
        if message.sample_type.is_empty() {
            bail!("{}: not a pprof profile: it has no sample types", self.name);
        }
        let mut types = Vec::new();
        for sample_type in &message.sample_type {
            types.push((
                self.string(sample_type.r#type, "a sample type")?,
                self.string(sample_type.unit, "a sample type")?,
            ));
        }
        if let Some(index) = types
            .iter()
            .position(|&(t, u)| t == "samples" && u == "count")
        {
            return Ok(index);
        }
        if message.default_sample_type != 0 {
            let default = self.string(message.default_sample_type, "default_sample_type")?;
            if let Some(index) = types.iter().position(|&(t, _)| t == default) {
                return Ok(index);
            }
        }
        Ok(types.len() - 1)
    }
}
