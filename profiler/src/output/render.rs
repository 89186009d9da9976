//! One profile, any number of outputs: the render options shared by `record` and `report`, and the
//! dispatch from an output's format to its renderer.

use std::io::Write;

use anyhow::Result;

use super::{
    fold, render_svg, write_pprof, FoldOptions, OutputFile, OutputFormat, OutputTarget, SvgOptions,
};
use crate::profile::{filter, Profile};

/// How a profile is shown; the same for every output of one run.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Which samples and frames are kept (`--no-kernel`, `--no-inline`, `--grep`).
    pub filter: filter::Filter,
    /// Roots and source lines of folded stacks (and so of the SVG).
    pub fold: FoldOptions,
    pub svg: SvgOptions,
}

/// One requested output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub target: OutputTarget,
    pub format: OutputFormat,
}

/// Writes `profile` (already filtered) in `format`.
pub fn render(
    profile: &Profile,
    format: OutputFormat,
    options: &RenderOptions,
    writer: &mut dyn Write,
) -> Result<()> {
    match format {
        OutputFormat::Pprof => write_pprof(profile, writer),
        OutputFormat::Folded => fold(profile, &options.fold)?.write(writer),
        OutputFormat::Svg => {
            let folded = fold(profile, &options.fold)?;
            let svg = SvgOptions {
                count_name: folded.unit().to_owned(),
                ..options.svg.clone()
            };
            render_svg(folded.text().lines(), &svg, writer)
        }
    }
}

/// Filters `profile` once and commits each output (opened beforehand with [`OutputFile::create`],
/// so that a bad path fails before any work) in turn.
pub fn write_outputs(
    profile: Profile,
    outputs: Vec<(Output, OutputFile)>,
    options: &RenderOptions,
) -> Result<Profile> {
    let profile = filter::apply(profile, &options.filter);
    for (output, file) in outputs {
        let started = std::time::Instant::now();
        file.commit(|writer| render(&profile, output.format, options, writer))?;
        log::debug!(
            "{:?} output {} written in {:?}",
            output.format,
            output.target,
            started.elapsed()
        );
    }
    Ok(profile)
}
