//! A profile as pprof: a gzip-compressed `perftools.profiles.Profile` (see `proto/profile.proto`),
//! readable by `go tool pprof`, Pyroscope, Grafana, Parca and speedscope.
//!
//! Layout: one mapping per module (path, build-id; addresses are file offsets, so the mapping starts
//! at 0 with file offset 0), plus `[kernel.kallsyms]` for kernel frames and `[jit]` for perf-map
//! frames; one location per distinct address, its inlined functions as several lines (innermost
//! first); labels `pid`, `tid`, `process_name`, `thread_name` on each sample. A truncated user stack
//! gets an outermost `[truncated]` location without mapping, as folded output does. The sample
//! types are the profile's value types (`samples`/`count`, `cpu`/`nanoseconds`, ...), and the
//! period is the sampling period in CPU nanoseconds.

use std::collections::HashMap;
use std::io::Write;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::pprof::{self as proto, keys};
use crate::profile::{values, Frame, Profile, TRUNCATED_FRAME};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Writes `profile` as gzip-compressed pprof.
pub fn write_pprof(profile: &Profile, writer: &mut dyn Write) -> Result<()> {
    let encoded = to_proto(profile).encode_to_vec();
    // Fast compression: the protobuf is already compact, and output is written after sampling stops.
    let mut gzip = GzEncoder::new(writer, Compression::fast());
    gzip.write_all(&encoded)
        .and_then(|()| gzip.try_finish())
        .context("cannot write the pprof profile")
}

/// Strings interned into the profile's string table; index 0 is "".
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut strings = Strings::default();
        strings.get("");
        strings
    }

    fn get(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.index.get(text) {
            return index;
        }
        let index = self.table.len() as i64;
        self.table.push(text.to_owned());
        self.index.insert(text.to_owned(), index);
        index
    }
}

fn interpreted(mapping: &crate::profile::Mapping) -> bool {
    matches!(mapping.kind, crate::profile::MappingKind::Interpreted(_))
}

/// Values are int64 on the wire.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Mapping indices in the order they are written: first the main executable — the user mapping
/// that holds the outermost user frame of the most samples (where `_start` and `main` are) — then
/// the others as they are in the profile.
fn mapping_order(profile: &Profile) -> Vec<usize> {
    let mut roots = vec![0u64; profile.mappings.len()];
    let mut locations = Vec::new();
    for sample in &profile.samples {
        profile
            .stacks
            .outermost_first_into(sample.stack, &mut locations);
        let outermost_user = locations.iter().find_map(|&id| {
            let mapping = profile.locations[id as usize].mapping?;
            (profile.mappings[mapping].kind == crate::profile::MappingKind::User).then_some(mapping)
        });
        if let Some(mapping) = outermost_user {
            roots[mapping] = roots[mapping].saturating_add(sample.values.get(0));
        }
    }
    let main = (0..roots.len())
        .filter(|&index| roots[index] > 0)
        .max_by_key(|&index| (roots[index], std::cmp::Reverse(index)));
    main.into_iter()
        .chain((0..profile.mappings.len()).filter(|&index| Some(index) != main))
        .collect()
}

pub fn to_proto(profile: &Profile) -> proto::Profile {
    let mut strings = Strings::new();
    let metadata = &profile.metadata;
    let period = metadata
        .frequency_hz
        .filter(|&hz| hz > 0)
        .map(|hz| NANOS_PER_SECOND / hz);
    // Written as the profile names them, so that `report` reads back every value.
    let value_types = profile.value_types.as_slice();
    let sample_type = value_types
        .iter()
        .map(|t| proto::ValueType {
            r#type: strings.get(&t.name),
            unit: strings.get(&t.unit),
        })
        .collect();
    let period_type = period.map(|_| proto::ValueType {
        r#type: strings.get(values::CPU.0),
        unit: strings.get(values::CPU.1),
    });

    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64, i64), u64> = HashMap::new();
    let mut function_id = |strings: &mut Strings, frame: &Frame| {
        let name = strings.get(&frame.name);
        let system_name = strings.get(frame.system_name.as_deref().unwrap_or(&frame.name));
        let filename = strings.get(frame.file.as_deref().unwrap_or(""));
        *function_ids
            .entry((name, system_name, filename))
            .or_insert_with(|| {
                let id = functions.len() as u64 + 1;
                functions.push(proto::Function {
                    id,
                    name,
                    system_name,
                    filename,
                    start_line: 0,
                });
                id
            })
    };

    // pprof readers take the first mapping for the main binary (`go tool pprof` prints it as
    // `File:`): ids are given in `mapping_order`, which puts the executable first.
    let mapping_order = mapping_order(profile);
    let mut mapping_ids = vec![0u64; profile.mappings.len()];
    for (position, &index) in mapping_order.iter().enumerate() {
        mapping_ids[index] = position as u64 + 1;
    }
    let mut mapping_limits = vec![0u64; profile.mappings.len()];
    let mut mapping_inlines = vec![false; profile.mappings.len()];
    let mut mapping_named = vec![false; profile.mappings.len()];
    let mut locations: Vec<proto::Location> = Vec::with_capacity(profile.locations.len() + 1);
    for (index, location) in profile.locations.iter().enumerate() {
        if let Some(mapping) = location.mapping {
            let limit = &mut mapping_limits[mapping];
            *limit = (*limit).max(location.address.saturating_add(1));
            mapping_inlines[mapping] |= location.frames.len() > 1;
            mapping_named[mapping] |= !location.frames.is_empty();
        }
        let line = location
            .frames
            .iter()
            .rev()
            .map(|frame| proto::Line {
                function_id: function_id(&mut strings, frame),
                line: frame.line.map_or(0, i64::from),
                column: 0,
            })
            .collect();
        locations.push(proto::Location {
            id: index as u64 + 1,
            mapping_id: location.mapping.map_or(0, |m| mapping_ids[m]),
            address: location.address,
            line,
            is_folded: false,
        });
    }
    let truncated_id = locations.len() as u64 + 1;
    if profile.samples.iter().any(|s| s.truncated) {
        let function_id = function_id(
            &mut strings,
            &Frame::new(TRUNCATED_FRAME, crate::profile::FrameKind::User),
        );
        locations.push(proto::Location {
            id: truncated_id,
            line: vec![proto::Line {
                function_id,
                ..Default::default()
            }],
            ..Default::default()
        });
    }

    let has_lines = metadata.has_lines;
    let mapping = mapping_order
        .iter()
        .map(|&index| (index, &profile.mappings[index]))
        .map(|(index, mapping)| proto::Mapping {
            id: mapping_ids[index],
            memory_start: 0,
            memory_limit: mapping_limits[index],
            file_offset: 0,
            filename: strings.get(&mapping.path),
            build_id: strings.get(mapping.build_id.as_deref().unwrap_or("")),
            has_functions: mapping_named[index],
            // An interpreter's frames always carry their file and line.
            has_filenames: (has_lines || interpreted(mapping)) && mapping_named[index],
            has_line_numbers: (has_lines || interpreted(mapping)) && mapping_named[index],
            has_inline_frames: mapping_inlines[index],
        })
        .collect();

    let label_keys = [
        strings.get(keys::PID),
        strings.get(keys::TID),
        strings.get(keys::PROCESS_NAME),
        strings.get(keys::THREAD_NAME),
    ];
    let sample = profile
        .samples
        .iter()
        .map(|sample| {
            let mut location_id: Vec<u64> = profile
                .stacks
                .innermost_first(sample.stack)
                .map(|id| id as u64 + 1)
                .collect();
            if sample.truncated {
                location_id.push(truncated_id);
            }
            let value = (0..value_types.len())
                .map(|i| int(sample.values.get(i)))
                .collect();
            let mut label = Vec::new();
            for (key, num) in [(label_keys[0], sample.pid), (label_keys[1], sample.tid)] {
                if let Some(num) = num {
                    label.push(proto::Label {
                        key,
                        num: i64::from(num),
                        ..Default::default()
                    });
                }
            }
            for (key, text) in [
                (label_keys[2], &sample.process_name),
                (label_keys[3], &sample.thread_name),
            ] {
                if let Some(text) = text {
                    label.push(proto::Label {
                        key,
                        str: strings.get(text),
                        ..Default::default()
                    });
                }
            }
            proto::Sample {
                location_id,
                value,
                label,
            }
        })
        .collect();

    let mut comments = Vec::new();
    if let Some(command) = &metadata.command_line {
        comments.push(format!("{}{command}", keys::COMMAND));
    }
    comments.push(format!("{}{}", keys::LOST, metadata.lost_samples));
    if let Some(unwinding) = &metadata.unwinding {
        comments.push(format!("{}{unwinding}", keys::UNWINDING));
    }
    if metadata.truncation.total() > 0 {
        comments.push(format!(
            "{}{}",
            keys::TRUNCATED,
            metadata.truncation.total()
        ));
    }
    if metadata.unlabelled_processes > 0 {
        comments.push(format!(
            "{}{}",
            keys::UNLABELLED,
            metadata.unlabelled_processes
        ));
    }
    comments.extend(metadata.comments.iter().cloned());
    let comment = comments.iter().map(|c| strings.get(c)).collect();

    proto::Profile {
        sample_type,
        sample,
        mapping,
        location: locations,
        function: functions,
        time_nanos: metadata
            .start_time
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        duration_nanos: metadata
            .duration
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        period_type,
        period: period.map_or(0, int),
        comment,
        string_table: strings.table,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::testdata;

    /// The executable where stacks start comes first even when another module (the loader, libc)
    /// was seen first, and locations still point at their own module.
    #[test]
    fn main_executable_is_the_first_mapping() {
        let mut profile = testdata::small();
        profile.mappings.swap(0, 1);
        for location in &mut profile.locations {
            location.mapping = location.mapping.map(|m| match m {
                0 => 1,
                1 => 0,
                m => m,
            });
        }
        assert!(profile.mappings[0].path.ends_with("libc.so.6"));
        let message = to_proto(&profile);
        let file = |mapping: &proto::Mapping| &message.string_table[mapping.filename as usize];
        assert_eq!(file(&message.mapping[0]), "/usr/bin/burn");
        assert_eq!(message.mapping[0].id, 1);
        for (location, original) in message.location.iter().zip(&profile.locations) {
            let Some(index) = original.mapping else {
                continue;
            };
            let written = message
                .mapping
                .iter()
                .find(|m| m.id == location.mapping_id)
                .expect("a location's mapping is written");
            assert_eq!(file(written), &*profile.mappings[index].path);
        }
    }
}
