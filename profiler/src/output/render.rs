//! One profile, any number of outputs: the render options shared by `record` and `report`, and the
//! dispatch from an output's format to its renderer.

use std::io::Write;

use anyhow::{bail, Result};

use super::visible::visible_text;
use super::{
    fold, render_svg, write_pprof, FoldOptions, Folded, OutputFile, OutputFormat, OutputTarget,
    SvgOptions,
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
            render_folded_svg(&fold(profile, &options.fold)?, &options.svg, writer)
        }
    }
}

/// Writes folded stacks (read as such, see `input::read_folded_stacks`) in `format`: folded or
/// SVG; pprof is made from a profile.
pub fn render_folded(
    folded: &Folded,
    format: OutputFormat,
    options: &RenderOptions,
    writer: &mut dyn Write,
) -> Result<()> {
    match format {
        OutputFormat::Folded => folded.write(writer),
        OutputFormat::Svg => render_folded_svg(folded, &options.svg, writer),
        OutputFormat::Pprof => bail!("pprof output is made from a profile, not folded stacks"),
    }
}

/// The flame graph of `folded`: inferno gets only the frames it can draw (see `visible`).
fn render_folded_svg(folded: &Folded, svg: &SvgOptions, writer: &mut dyn Write) -> Result<()> {
    let svg = SvgOptions {
        count_name: folded.unit().to_owned(),
        ..svg.clone()
    };
    let min_width = svg
        .min_width
        .unwrap_or_else(|| inferno::flamegraph::Options::default().min_width);
    render_svg(visible_text(folded, min_width).lines(), &svg, writer)
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
