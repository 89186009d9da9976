//! `emberprof diff`: two profiles folded alike, then compared as inferno-diff-folded does (BEFORE
//! scaled to AFTER's total unless asked otherwise), written as `stack BEFORE AFTER` lines or as a
//! differential flame graph (frames as wide as in AFTER; red grew, blue shrank).

use std::process::ExitCode;

use anyhow::{Context, Result};
use inferno::differential;

use crate::input::{read_profile, InputSource};
use crate::output::{fold, render_svg, FoldOptions, Output, OutputFile, OutputFormat, SvgOptions};
use crate::profile::filter::{self, Filter};

#[derive(Clone, Debug)]
pub struct DiffOptions {
    pub before: InputSource,
    pub after: InputSource,
    pub output: Output,
    pub title: Option<String>,
    pub no_kernel: bool,
    pub per_thread: bool,
    /// Scale BEFORE's counts to AFTER's total. Default true.
    pub normalize: bool,
}

pub fn run(options: DiffOptions) -> Result<ExitCode> {
    let file = OutputFile::create(&options.output.target)?;
    let lines = diff_lines(&options)?;
    let format = options.output.format;
    let normalized = if options.normalize {
        "BEFORE scaled to AFTER's total samples"
    } else {
        "raw counts, not normalised"
    };
    let svg = SvgOptions {
        title: options.title.clone().unwrap_or_else(|| {
            format!(
                "Differential flame graph: {} → {} ({normalized})",
                options.before.name(),
                options.after.name()
            )
        }),
        subtitle: Some(format!(
            "Width: AFTER's samples. Red: grew since BEFORE; blue: shrank ({normalized})."
        )),
        ..SvgOptions::default()
    };
    file.commit(|writer| match format {
        OutputFormat::Svg => render_svg(lines.iter().map(String::as_str), &svg, writer),
        _ => {
            for line in &lines {
                writeln!(writer, "{line}").context("cannot write the diff")?;
            }
            Ok(())
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The `stack BEFORE AFTER` lines of the two profiles, sorted.
pub fn diff_lines(options: &DiffOptions) -> Result<Vec<String>> {
    let folded = |source: &InputSource| -> Result<String> {
        let profile = read_profile(source)?;
        let profile = filter::apply(
            profile,
            &Filter {
                no_kernel: options.no_kernel,
                ..Filter::default()
            },
        );
        let folded = fold(
            &profile,
            &FoldOptions {
                per_thread: options.per_thread,
                lines: false,
            },
        )
        .with_context(|| source.name())?;
        Ok(folded.text())
    };
    let before = folded(&options.before)?;
    let after = folded(&options.after)?;
    let mut out = Vec::new();
    differential::from_readers(
        differential::Options {
            normalize: options.normalize,
            strip_hex: false,
        },
        before.as_bytes(),
        after.as_bytes(),
        &mut out,
    )
    .context("cannot compare the profiles")?;
    let text = String::from_utf8(out).context("the comparison is not text")?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    Ok(lines)
}
