//! `emberprof diff`: two profiles folded alike, then compared as inferno-diff-folded does (BEFORE
//! scaled to AFTER's total unless asked otherwise), written as `stack BEFORE AFTER` lines or as a
//! differential flame graph (frames as wide as in AFTER; red grew, blue shrank). The values compared
//! are those folded output shows (`--value`), the same for both profiles.

use std::process::ExitCode;

use anyhow::{Context, Result};
use inferno::differential;

use crate::input::{read_profile, InputSource};
use crate::output::{fold, render_svg, FoldOptions, Output, OutputFile, OutputFormat, SvgOptions};
use crate::profile::filter::{self, Filter};
use crate::profile::{values, Profile, ValueChoice};

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
    /// Which value is compared; `Auto` is resolved for both profiles alike (see [`common_value`]).
    pub value: ValueChoice,
}

pub fn run(options: DiffOptions) -> Result<ExitCode> {
    let file = OutputFile::create(&options.output.target)?;
    let (lines, unit) = compare(&options)?;
    let format = options.output.format;
    let normalized = if options.normalize {
        "BEFORE scaled to AFTER's total"
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
            "Width: AFTER's {unit}. Red: grew since BEFORE; blue: shrank ({normalized})."
        )),
        count_name: unit.to_owned(),
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

/// The value `diff` compares: `Auto` means wall-clock time only if both profiles have off-CPU
/// time (a CPU-only profile has none to compare it with), else samples.
pub fn common_value(choice: ValueChoice, profiles: [&Profile; 2]) -> ValueChoice {
    let has_off_cpu = |p: &Profile| p.value_types.position(values::OFF_CPU).is_some();
    match choice {
        ValueChoice::Auto if profiles.iter().all(|p| has_off_cpu(p)) => ValueChoice::Wall,
        ValueChoice::Auto => ValueChoice::Samples,
        choice => choice,
    }
}

/// The sorted `stack BEFORE AFTER` lines and what their counts are (`samples`, `µs`).
fn compare(options: &DiffOptions) -> Result<(Vec<String>, &'static str)> {
    let read = |source: &InputSource| -> Result<Profile> {
        let profile = read_profile(source)?;
        Ok(filter::apply(
            profile,
            &Filter {
                no_kernel: options.no_kernel,
                ..Filter::default()
            },
        ))
    };
    let before = read(&options.before)?;
    let after = read(&options.after)?;
    let value = common_value(options.value, [&before, &after]);
    let folded = |profile: &Profile, source: &InputSource| {
        let options = FoldOptions {
            per_thread: options.per_thread,
            lines: false,
            value,
        };
        fold(profile, &options).with_context(|| source.name())
    };
    let before = folded(&before, &options.before)?.text();
    let after = folded(&after, &options.after)?;
    let unit = after.unit();
    let after = after.text();
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
    Ok((lines, unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::testdata;

    /// `auto` compares wall-clock time only when both profiles have it, else samples; an explicit
    /// choice is kept.
    #[test]
    fn both_profiles_are_compared_in_one_value() {
        let (wall, cpu) = (testdata::wall(), testdata::small());
        assert_eq!(
            common_value(ValueChoice::Auto, [&wall, &wall]),
            ValueChoice::Wall
        );
        assert_eq!(
            common_value(ValueChoice::Auto, [&cpu, &wall]),
            ValueChoice::Samples
        );
        assert_eq!(
            common_value(ValueChoice::Cpu, [&cpu, &wall]),
            ValueChoice::Cpu
        );
    }
}
