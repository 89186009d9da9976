//! From a profile to the bytes the user asked for: the format choice, folding, rendering (SVG,
//! pprof), and writing the file atomically. Every format is a pure function of the profile (and the
//! render options). Only `svg` knows inferno's flame graphs, only `pprof` protobuf.

mod file;
mod fold;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod interpreted_tests;
mod node;
mod pprof;
mod render;
mod stale;
mod svg;
mod texts;
mod through;
#[cfg(test)]
mod values_tests;
mod visible;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use file::OutputFile;
pub use fold::{fold, no_threads, sanitize, FoldOptions, Folded, FoldedBuilder};
pub use pprof::write_pprof;
pub use render::{render_folded, write_outputs, Output, RenderOptions};
pub use svg::{render_svg, SvgOptions};

/// Where the output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
}

impl OutputTarget {
    /// `-` is stdout, anything else a file path.
    pub fn from_arg(arg: PathBuf) -> Self {
        if arg.as_os_str() == "-" {
            OutputTarget::Stdout
        } else {
            OutputTarget::File(arg)
        }
    }
}

impl std::fmt::Display for OutputTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputTarget::Stdout => f.write_str("stdout"),
            OutputTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// An SVG flame graph rendered by inferno.
    Svg,
    /// Folded stacks: `process;outermost;...;leaf COUNT` lines, sorted.
    Folded,
    /// gzip-compressed pprof protobuf (`perftools.profiles.Profile`).
    Pprof,
}

impl OutputFormat {
    /// The format implied by the output target: stdout gets folded stacks; a file by its extension.
    pub fn from_target(target: &OutputTarget) -> Result<Self> {
        match target {
            OutputTarget::Stdout => Ok(OutputFormat::Folded),
            OutputTarget::File(path) => Self::from_extension(path),
        }
    }

    fn from_extension(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if name.ends_with(".pb.gz") {
            return Ok(OutputFormat::Pprof);
        }
        match extension.as_deref() {
            Some("svg") => Ok(OutputFormat::Svg),
            Some("folded" | "txt" | "collapsed") => Ok(OutputFormat::Folded),
            Some("pprof") => Ok(OutputFormat::Pprof),
            _ => bail!(
                "cannot tell the output format from {:?}: name it .svg (flame graph), .folded/.txt \
                 (folded stacks) or .pb.gz/.pprof (pprof), or pass --format svg|folded|pprof",
                path.display().to_string()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The extension picks the format, case-insensitively; stdout is folded; unknown extensions fail.
    #[test]
    fn format_follows_extension() {
        let format = |p: &str| OutputFormat::from_target(&OutputTarget::from_arg(p.into()));
        assert_eq!(format("a/flame.svg").unwrap(), OutputFormat::Svg);
        assert_eq!(format("FLAME.SVG").unwrap(), OutputFormat::Svg);
        assert_eq!(format("x.folded").unwrap(), OutputFormat::Folded);
        assert_eq!(format("x.txt").unwrap(), OutputFormat::Folded);
        assert_eq!(format("-").unwrap(), OutputFormat::Folded);
        assert_eq!(format("a.pb.gz").unwrap(), OutputFormat::Pprof);
        assert_eq!(format("a.PPROF").unwrap(), OutputFormat::Pprof);
        assert!(format("a.gz").is_err());
        let error = format("x.png").unwrap_err().to_string();
        assert!(error.contains("--format"), "{error}");
        assert!(format("noextension").is_err());
    }
}
