//! A count of what a pprof message holds, taken from its wire format before prost decodes it.
//!
//! prost decodes every repeated field into a `Vec` whole, with no limit on the number of elements:
//! a 1 MB `.pb.gz` that inflates to 1 GiB of empty samples (two bytes each, 72 bytes decoded) made
//! it allocate 18 GiB and abort. So the message is scanned first, streaming (a gzip stream is never
//! held in memory for this pass), and every element count is checked against its cap before
//! anything is allocated. The scan only counts: malformed wire data ends it quietly, and prost's
//! decode then says what is wrong.
//!
//! Written by hand, not with prost: prost's low-level wire functions are `#[doc(hidden)]`, for
//! generated code, and no crate offers a counting pass with limits. The wire format is four
//! varint-or-length rules (<https://protobuf.dev/programming-guides/encoding/>).

use std::io::{self, BufRead, BufReader, Read};

use anyhow::{bail, Result};

use super::{MAX_FRAMES, MAX_INPUT_BYTES};

/// Samples in one pprof. Go's and emberprof's profiles of hours of `--all` hold tens of thousands.
pub const MAX_SAMPLES: u64 = 1 << 21;
/// Locations in one pprof: tens of thousands in long real profiles.
pub const MAX_LOCATIONS: u64 = 1 << 21;
/// Inlined lines of one location: real inlining goes a few tens deep.
pub const MAX_LINES_PER_LOCATION: u64 = 256;
/// Lines of all locations.
pub const MAX_LINES: u64 = 1 << 22;
/// Functions in one pprof.
pub const MAX_FUNCTIONS: u64 = 1 << 21;
/// Mappings (modules) in one pprof: hundreds in a long `--all` run.
pub const MAX_MAPPINGS: u64 = 1 << 16;
/// Strings in the string table: a few per function.
pub const MAX_STRINGS: u64 = 1 << 23;
/// Labels of all samples (emberprof writes four per sample).
pub const MAX_LABELS: u64 = 1 << 23;
/// Sample types, and so values per sample (Go's heap profiles have four).
pub const MAX_SAMPLE_TYPES: u64 = 16;
/// Comments (emberprof writes a handful).
pub const MAX_COMMENTS: u64 = 1 << 12;
/// Frames of every sample after inline expansion, in all: what folding the profile writes. Real
/// profiles have tens of thousands of samples of at most 254 frames. Checked here on the location
/// ids of the samples (each is at least one frame), and after decoding on the expanded frames.
pub const MAX_EXPANDED_FRAMES: u64 = 1 << 24;

/// What the message holds, counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub samples: u64,
    pub locations: u64,
    pub lines: u64,
    pub functions: u64,
    pub mappings: u64,
    pub strings: u64,
    pub labels: u64,
    pub sample_types: u64,
    pub comments: u64,
    /// Location ids of all samples.
    pub sample_locations: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Counts the message `reader` yields and checks every cap; errors name `name`. An I/O error
/// (corrupt gzip data) is reported as such; so is a message larger than [`MAX_INPUT_BYTES`].
pub fn census(reader: impl Read, name: &str) -> Result<Census> {
    let mut wire = Wire {
        reader: BufReader::with_capacity(64 * 1024, reader.take(MAX_INPUT_BYTES + 1)),
        at: 0,
    };
    let mut census = Census::default();
    match census.message(&mut wire, u64::MAX, name) {
        Ok(()) | Err(Stop::Malformed) => {}
        Err(Stop::Io(error)) => bail!(
            "{name}: truncated or corrupt gzip data after {} decompressed bytes: {error}",
            wire.at
        ),
        Err(Stop::Limit(error)) => return Err(error),
    }
    census.bytes = wire.at;
    if census.bytes > MAX_INPUT_BYTES {
        bail!("{name}: decompresses to more than {MAX_INPUT_BYTES} bytes; not read");
    }
    Ok(census)
}

enum Stop {
    /// Not a protobuf message (or cut short): prost's decode will say how.
    Malformed,
    Io(io::Error),
    Limit(anyhow::Error),
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Self {
        Stop::Io(error)
    }
}

/// One count over its cap.
fn over(name: &str, what: &str, count: u64, cap: u64) -> Result<(), Stop> {
    if count > cap {
        return Err(Stop::Limit(anyhow::anyhow!(
            "{name}: more than {cap} {what}; not read (a profile this large is an attack or a mistake)"
        )));
    }
    Ok(())
}

struct Wire<R> {
    reader: BufReader<R>,
    /// Bytes consumed.
    at: u64,
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

impl<R: Read> Wire<R> {
    fn byte(&mut self) -> Result<Option<u8>, Stop> {
        let buffer = self.reader.fill_buf()?;
        let Some(&byte) = buffer.first() else {
            return Ok(None);
        };
        self.reader.consume(1);
        self.at += 1;
        Ok(Some(byte))
    }

    fn varint(&mut self) -> Result<u64, Stop> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?.ok_or(Stop::Malformed)?;
            value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Stop::Malformed)
    }

    /// Skips `count` bytes; fewer left is malformed.
    fn skip(&mut self, count: u64) -> Result<(), Stop> {
        let skipped = io::copy(&mut (&mut self.reader).take(count), &mut io::sink())?;
        self.at += skipped;
        if skipped < count {
            return Err(Stop::Malformed);
        }
        Ok(())
    }

    /// The varints in the next `count` bytes (a packed repeated field): the bytes that end one.
    fn packed_count(&mut self, count: u64) -> Result<u64, Stop> {
        let mut left = count;
        let mut varints = 0;
        while left > 0 {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                return Err(Stop::Malformed);
            }
            let take = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            varints += buffer[..take].iter().filter(|&&b| b & 0x80 == 0).count() as u64;
            self.reader.consume(take);
            self.at += take as u64;
            left -= take as u64;
        }
        Ok(varints)
    }

    /// The next field's number and wire type, or `None` at `end` (or at the end of input, for the
    /// top-level message).
    fn key(&mut self, end: u64) -> Result<Option<(u64, u64)>, Stop> {
        if self.at >= end {
            return Ok(None);
        }
        if end == u64::MAX && self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, key & 7)))
    }

    /// Skips a field of `wire_type` whose key was read.
    fn skip_field(&mut self, wire_type: u64) -> Result<(), Stop> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.skip(8),
            LEN => {
                let length = self.varint()?;
                self.skip(length)
            }
            FIXED32 => self.skip(4),
            // Groups (deprecated, never in pprof) and invalid types.
            _ => Err(Stop::Malformed),
        }
    }

    /// The end of a length-delimited field whose key was read.
    fn end_of_field(&mut self, outer_end: u64) -> Result<u64, Stop> {
        let length = self.varint()?;
        let end = self.at.checked_add(length).ok_or(Stop::Malformed)?;
        if end > outer_end {
            return Err(Stop::Malformed);
        }
        Ok(end)
    }

    /// How many elements one occurrence of a repeated scalar field adds: one unpacked, or the
    /// varints of a packed run.
    fn scalars(&mut self, wire_type: u64) -> Result<u64, Stop> {
        match wire_type {
            VARINT => self.varint().map(|_| 1),
            LEN => {
                let length = self.varint()?;
                self.packed_count(length)
            }
            other => self.skip_field(other).map(|()| 0),
        }
    }
}

impl Census {
    /// The top-level `Profile` message, up to `end`.
    fn message<R: Read>(&mut self, wire: &mut Wire<R>, end: u64, name: &str) -> Result<(), Stop> {
        while let Some((field, wire_type)) = wire.key(end)? {
            match (field, wire_type) {
                (1, LEN) => {
                    self.sample_types += 1;
                    over(name, "sample types", self.sample_types, MAX_SAMPLE_TYPES)?;
                    wire.skip_field(LEN)?;
                }
                (2, LEN) => {
                    self.samples += 1;
                    over(name, "samples", self.samples, MAX_SAMPLES)?;
                    let end = wire.end_of_field(end)?;
                    self.sample(wire, end, name)?;
                }
                (3, LEN) => {
                    self.mappings += 1;
                    over(name, "mappings", self.mappings, MAX_MAPPINGS)?;
                    wire.skip_field(LEN)?;
                }
                (4, LEN) => {
                    self.locations += 1;
                    over(name, "locations", self.locations, MAX_LOCATIONS)?;
                    let end = wire.end_of_field(end)?;
                    self.location(wire, end, name)?;
                }
                (5, LEN) => {
                    self.functions += 1;
                    over(name, "functions", self.functions, MAX_FUNCTIONS)?;
                    wire.skip_field(LEN)?;
                }
                (6, LEN) => {
                    self.strings += 1;
                    over(name, "strings", self.strings, MAX_STRINGS)?;
                    wire.skip_field(LEN)?;
                }
                (13, _) => {
                    self.comments += wire.scalars(wire_type)?;
                    over(name, "comments", self.comments, MAX_COMMENTS)?;
                }
                (_, other) => wire.skip_field(other)?,
            }
        }
        Ok(())
    }

    fn sample<R: Read>(&mut self, wire: &mut Wire<R>, end: u64, name: &str) -> Result<(), Stop> {
        let (mut locations, mut values) = (0, 0);
        while let Some((field, wire_type)) = wire.key(end)? {
            match field {
                1 => {
                    let count = wire.scalars(wire_type)?;
                    locations += count;
                    self.sample_locations += count;
                    let at = || format!("{name}: sample {}", self.samples - 1);
                    over(&at(), "frames", locations, MAX_FRAMES as u64)?;
                    over(
                        name,
                        "frames in all samples",
                        self.sample_locations,
                        MAX_EXPANDED_FRAMES,
                    )?;
                }
                2 => {
                    values += wire.scalars(wire_type)?;
                    let at = format!("{name}: sample {}", self.samples - 1);
                    over(&at, "values", values, MAX_SAMPLE_TYPES)?;
                }
                3 if wire_type == LEN => {
                    self.labels += 1;
                    over(name, "labels", self.labels, MAX_LABELS)?;
                    wire.skip_field(LEN)?;
                }
                _ => wire.skip_field(wire_type)?,
            }
        }
        Ok(())
    }

    fn location<R: Read>(&mut self, wire: &mut Wire<R>, end: u64, name: &str) -> Result<(), Stop> {
        let mut lines = 0;
        while let Some((field, wire_type)) = wire.key(end)? {
            if (field, wire_type) == (4, LEN) {
                lines += 1;
                self.lines += 1;
                let at = format!("{name}: location {}", self.locations - 1);
                over(&at, "inlined lines", lines, MAX_LINES_PER_LOCATION)?;
                over(name, "lines in all locations", self.lines, MAX_LINES)?;
            }
            wire.skip_field(wire_type)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A length-delimited field `number` holding `payload`.
    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = varint(number << 3 | LEN);
        out.extend(varint(payload.len() as u64));
        out.extend_from_slice(payload);
        out
    }

    fn varint(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        // A length delimiter is a varint; prost's is the public encoder of one. A Vec always has room.
        prost::encode_length_delimiter(value as usize, &mut out).expect("a Vec grows");
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    /// A 1 MB gzip bomb of empty samples (it aborted with an 18 GiB allocation) is refused at the
    /// cap, streaming, with the count named; one sample fewer is counted and passes.
    #[test]
    fn samples_past_the_cap_are_refused_while_streaming() {
        let samples = [0x12u8, 0x00].repeat(MAX_SAMPLES as usize);
        let counted = census(&samples[..], "ok").expect("at the cap");
        assert_eq!(counted.samples, MAX_SAMPLES);
        let mut bomb = samples;
        bomb.extend([0x12, 0x00]);
        let compressed = gzip(&bomb);
        let decoder = flate2::read::MultiGzDecoder::new(&compressed[..]);
        let error = census(decoder, "bomb.pb.gz").unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "bomb.pb.gz: more than {MAX_SAMPLES} samples; not read (a profile this large \
                 is an attack or a mistake)"
            )
        );
    }

    /// Lines are capped per location and in all; location ids per sample (`MAX_FRAMES`) and in
    /// all samples; each count is exact for packed and unpacked fields.
    #[test]
    fn nested_counts_are_capped() {
        let line = field(4, &[0x08, 0x01]);
        let location = |lines: usize| field(4, &line.repeat(lines));
        let counted = census(&location(3)[..], "x").expect("three lines");
        assert_eq!((counted.locations, counted.lines), (1, 3));
        let error = census(&location(MAX_LINES_PER_LOCATION as usize + 1)[..], "x")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("x: location 0: more than 256 inlined lines"),
            "{error}"
        );
        let many = location(MAX_LINES_PER_LOCATION as usize)
            .repeat((MAX_LINES / MAX_LINES_PER_LOCATION) as usize + 1);
        let error = census(&many[..], "x").unwrap_err().to_string();
        assert!(error.contains("lines in all locations"), "{error}");

        // Packed ids (a run of varints, two of them two bytes long) and unpacked ones add up.
        let mut sample = field(1, &[1, 0x80, 0x01, 2, 0xff, 0x7f]);
        sample.extend([0x08, 0x05]);
        let counted = census(&field(2, &sample)[..], "x").expect("one sample");
        assert_eq!(counted.sample_locations, 5);
        let deep = field(2, &field(1, &vec![1u8; MAX_FRAMES + 1]));
        let error = census(&deep[..], "x").unwrap_err().to_string();
        assert!(
            error.starts_with("x: sample 0: more than 4096 frames"),
            "{error}"
        );
        let wide = field(2, &field(1, &vec![1u8; MAX_FRAMES]));
        let all = wide.repeat((MAX_EXPANDED_FRAMES / MAX_FRAMES as u64) as usize + 1);
        let error = census(&all[..], "x").unwrap_err().to_string();
        assert!(error.contains("frames in all samples"), "{error}");
    }

    /// Malformed data ends the count without an error (prost's decode says what is wrong), and a
    /// length past the end is not followed.
    #[test]
    fn malformed_data_ends_the_count() {
        for bytes in [&[0x12, 0x05, 0x08][..], &[0xff; 12], &[0x0b, 0x00], &[0x12]] {
            assert!(census(bytes, "x").is_ok(), "{bytes:?}");
        }
    }
}
