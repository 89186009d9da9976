//! Reading a saved profile back into the model: pprof (ours or another tool's, gzip-compressed or
//! not) and folded stacks. Everything here is untrusted input: sizes are capped, every index is
//! checked, counts are checked for overflow, and each error names the file and the place in it.

mod folded;
mod pprof;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::profile::Profile;

pub use folded::read_folded;
pub use pprof::read_pprof;

/// Largest input, and largest decompressed pprof, read: a profile bigger than this is an attack or
/// a mistake, and would otherwise be held in memory whole.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;
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

    fn read_bytes(&self) -> Result<Vec<u8>> {
        let name = self.name();
        let mut bytes = Vec::new();
        let read = match self {
            InputSource::Stdin => std::io::stdin()
                .lock()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut bytes),
            InputSource::File(path) => std::fs::File::open(path)
                .with_context(|| format!("cannot open {name}"))?
                .take(MAX_INPUT_BYTES + 1)
                .read_to_end(&mut bytes),
        };
        read.with_context(|| format!("cannot read {name}"))?;
        if bytes.len() as u64 > MAX_INPUT_BYTES {
            bail!("{name}: larger than {MAX_INPUT_BYTES} bytes; not read");
        }
        Ok(bytes)
    }
}

/// Reads a profile, telling pprof from folded stacks by content.
pub fn read_profile(source: &InputSource) -> Result<Profile> {
    let bytes = source.read_bytes()?;
    parse_profile(&bytes, &source.name())
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
