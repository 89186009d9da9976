//! Reading a saved profile back into the model: pprof (ours or another tool's, gzip-compressed or
//! not) and folded stacks. Everything here is untrusted input: sizes are capped, every index is
//! checked, counts are checked for overflow, and each error names the file and the place in it.

mod census;
mod folded;
mod pprof;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::output::{FoldOptions, Folded};
use crate::profile::filter::Filter;
use crate::profile::Profile;

pub use folded::{read_folded, read_folded_stacks};
pub use pprof::read_pprof;

/// Largest input, and largest decompressed pprof, read: a profile bigger than this is an attack or
/// a mistake, and would otherwise be held in memory whole.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Bytes of folded stacks a pprof may expand to (each sample's frames after inline expansion, with
/// its root), whatever the output format: what the SVG and folded outputs are made from. The folded
/// stacks of a long real recording are tens of MiB (tens of thousands of lines of hundreds of bytes).
pub const MAX_EXPANDED_BYTES: u64 = 256 << 20;
/// Most frames in one stack; the kernel's own limit is 127 kernel + 127 user frames, and DWARF
/// unwinding stops at a few hundred.
pub const MAX_FRAMES: usize = 4096;

/// Where a profile is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    Stdin,
    File(PathBuf),
}

impl InputSource {
    pub fn from_arg(arg: PathBuf) -> Self {
        if arg.as_os_str() == "-" {
            InputSource::Stdin
        } else {
            InputSource::File(arg)
        }
    }

    /// How errors name it.
    pub fn name(&self) -> String {
        match self {
            InputSource::Stdin => "standard input".to_owned(),
            InputSource::File(path) => path.display().to_string(),
        }
    }

    /// The input, at most [`MAX_INPUT_BYTES`] and one byte more (which tells it is too large).
    fn open(&self) -> Result<std::io::Take<Box<dyn Read>>> {
        let reader: Box<dyn Read> = match self {
            InputSource::Stdin => Box::new(std::io::stdin().lock()),
            InputSource::File(path) => Box::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", self.name()))?,
            ),
        };
        Ok(reader.take(MAX_INPUT_BYTES + 1))
    }

    fn read_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open()?
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", self.name()))?;
        too_large(&bytes, &self.name())?;
        Ok(bytes)
    }
}

fn too_large(bytes: &[u8], name: &str) -> Result<()> {
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        bail!("{name}: larger than {MAX_INPUT_BYTES} bytes; not read");
    }
    Ok(())
}

/// Reads a profile, telling pprof from folded stacks by content.
pub fn read_profile(source: &InputSource) -> Result<Profile> {
    let bytes = source.read_bytes()?;
    parse_profile(&bytes, &source.name())
}

/// What [`read_stacks_or_profile`] read.
#[expect(
    clippy::large_enum_variant,
    reason = "one per run, moved once: boxing would save nothing"
)]
pub enum Input {
    Profile(Profile),
    /// Folded input, folded and filtered as it was asked.
    Stacks(Folded),
}

/// Bytes read first, to tell folded text from pprof.
const HEAD_BYTES: u64 = 64 << 10;

/// Reads folded input straight into folded stacks, filtered and folded as `filter` and `options`
/// say (see [`read_folded_stacks`]: memory follows the distinct text, not a profile's model of it;
/// the text is read line by line, never held whole), and any other input as a profile.
pub fn read_stacks_or_profile(
    source: &InputSource,
    filter: &Filter,
    options: &FoldOptions,
) -> Result<Input> {
    let name = source.name();
    let mut reader = source.open()?;
    let mut head = Vec::new();
    (&mut reader)
        .take(HEAD_BYTES)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {name}"))?;
    if !head.starts_with(&[0x1f, 0x8b]) && text_head(&head).is_some_and(looks_like_text) {
        let mut text = std::io::BufReader::new(std::io::Cursor::new(head).chain(&mut reader));
        let stacks = read_folded_stacks(&mut text, &name, filter, options);
        drop(text);
        // Read to the limit: too large, whatever the cut last line made of it.
        if reader.limit() == 0 {
            bail!("{name}: larger than {MAX_INPUT_BYTES} bytes; not read");
        }
        return stacks.map(Input::Stacks);
    }
    reader
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {name}"))?;
    too_large(&head, &name)?;
    parse_profile(&head, &name).map(Input::Profile)
}

/// The first bytes of an input as text, but for a character they cut: `None` if they are not UTF-8
/// or there are none.
fn text_head(head: &[u8]) -> Option<&str> {
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(error) if error.error_len().is_none() => {
            std::str::from_utf8(&head[..error.valid_up_to()]).ok()?
        }
        Err(_) => return None,
    };
    (!valid.is_empty()).then_some(valid)
}

/// A profile from `bytes` read from `name`: gzip data is pprof; text is folded stacks; anything
/// else is tried as uncompressed pprof.
pub fn parse_profile(bytes: &[u8], name: &str) -> Result<Profile> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return read_pprof(bytes, name);
    }
    if bytes.is_empty() {
        bail!("{name}: empty file: neither a pprof profile nor folded stacks");
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if looks_like_text(text) => read_folded(text, name),
        _ => read_pprof(bytes, name).with_context(|| {
            format!("{name}: neither gzip-compressed pprof nor folded stacks (text)")
        }),
    }
}

/// Folded stacks are printable text; a protobuf has control bytes early on.
fn looks_like_text(text: &str) -> bool {
    text.chars()
        .take(4096)
        .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{write_pprof, FoldOptions};
    use proptest::prelude::*;

    fn small_pprof() -> Vec<u8> {
        let mut bytes = Vec::new();
        write_pprof(&crate::profile::testdata::small(), &mut bytes).expect("pprof");
        bytes
    }

    fn decompressed_small_pprof() -> Vec<u8> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&small_pprof()[..])
            .read_to_end(&mut raw)
            .expect("gunzip");
        raw
    }

    /// Whatever a reader accepts can be folded without a panic (every index it kept is valid).
    fn fold_if_read(bytes: &[u8]) {
        if let Ok(profile) = parse_profile(bytes, "fuzz") {
            let _ = crate::output::fold(&profile, &FoldOptions::default());
            let _ = crate::output::fold(
                &profile,
                &FoldOptions {
                    per_thread: true,
                    lines: true,
                    ..FoldOptions::default()
                },
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes: an error or a profile, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            fold_if_read(&bytes);
        }

        /// A valid pprof with bytes changed, cut, or inserted: never a panic.
        #[test]
        fn mutated_pprof_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut raw = decompressed_small_pprof();
            for (at, byte) in edits {
                let at = at.index(raw.len());
                raw[at] = byte;
            }
            fold_if_read(&raw);
            raw.truncate(cut.index(raw.len() + 1));
            fold_if_read(&raw);
        }

        /// Folded text from frames and counts of any shape: an error or a profile, never a panic.
        #[test]
        fn arbitrary_folded_never_panics(
            lines in proptest::collection::vec(("[a-z;_\\[\\] ]{0,40}", "[0-9]{0,22}|[^\\n]{0,5}"), 0..20)
        ) {
            let text: String = lines.iter().map(|(stack, count)| format!("{stack} {count}\n")).collect();
            fold_if_read(text.as_bytes());
        }
    }

    /// Folded text is told from pprof by its head, even where the head cuts a character in two,
    /// and read line by line: a line that is not UTF-8 is an error naming it.
    #[test]
    fn folded_text_is_streamed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.folded");
        let wide = "é".repeat(HEAD_BYTES as usize); // two bytes each: the head ends mid-line
        let text = format!("a;{wide} 2\nb 1\n");
        std::fs::write(&path, &text).expect("write");
        let source = InputSource::File(path.clone());
        let options = FoldOptions::default();
        let Ok(Input::Stacks(folded)) =
            read_stacks_or_profile(&source, &Filter::default(), &options)
        else {
            panic!("read as folded stacks");
        };
        assert_eq!(folded.text(), text);
        // Past the head: a text that turns out not to be UTF-8 (in the head, it is tried as pprof).
        let mut bytes = format!("a;{wide} 2\n").into_bytes();
        bytes.extend(b"b\xff 1\n");
        std::fs::write(&path, &bytes).expect("write");
        let error = read_stacks_or_profile(&source, &Filter::default(), &options)
            .err()
            .expect("an error");
        assert_eq!(
            error.to_string(),
            format!("{}:2: not UTF-8 text", path.display())
        );
    }

    /// A truncated gzip stream is an error naming the file, not a short profile.
    #[test]
    fn truncated_gzip_is_an_error() {
        let bytes = small_pprof();
        let error = parse_profile(&bytes[..bytes.len() - 10], "x.pb.gz").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("x.pb.gz: truncated or corrupt gzip"),
            "{error}"
        );
    }
}
