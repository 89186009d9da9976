//! `emberprof report`: a saved profile (pprof or folded) read back and rendered in any format. No
//! root, no BPF: only the input reader and the outputs.
//!
//! Folded input to folded or SVG output never becomes a profile: it is read straight into folded
//! stacks (`input::read_folded_stacks`), so memory follows its distinct text. A pprof output needs
//! the profile.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::input::{read_stacks_or_profile, Input, InputSource};
use crate::output::{
    render_folded, write_outputs, Output, OutputFile, OutputFormat, RenderOptions,
};
use crate::profile::filter::Filter;
use crate::profile::values::Shown;
use crate::profile::{values, ValueChoice};

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub input: InputSource,
    pub outputs: Vec<Output>,
    pub render: RenderOptions,
}

pub fn run(options: ReportOptions) -> Result<ExitCode> {
    let ReportOptions {
        input,
        outputs,
        mut render,
    } = options;
    let wants_profile = outputs.iter().any(|o| o.format == OutputFormat::Pprof);
    // Checked before the input is read, as `record` checks before sampling.
    let files = outputs
        .into_iter()
        .map(|output| Ok((output.clone(), OutputFile::create(&output.target)?)))
        .collect::<Result<Vec<_>>>()?;
    // A folded input read as a profile is only filtered when it is written.
    let no_filter = Filter::default();
    let filter = if wants_profile {
        &no_filter
    } else {
        &render.filter
    };
    let read = if wants_profile {
        Input::Profile(crate::input::read_profile(&input)?)
    } else {
        read_stacks_or_profile(&input, filter, &render.fold)?
    };
    let (has_off_cpu, command_line, has_lines) = match &read {
        Input::Profile(profile) => {
            // Before any output is written, and naming the file that lacks the value.
            Shown::resolve(&profile.value_types, render.fold.value)
                .with_context(|| input.name())?;
            (
                profile.value_types.position(values::OFF_CPU).is_some(),
                profile.metadata.command_line.clone(),
                profile.metadata.has_lines,
            )
        }
        Input::Stacks(_) => (false, None, false),
    };
    if render.svg.title.is_empty() {
        let kind = match render.fold.value {
            ValueChoice::Auto if has_off_cpu => "Wall-clock",
            ValueChoice::Wall => "Wall-clock",
            ValueChoice::OffCpu => "Off-CPU",
            _ => "CPU",
        };
        render.svg.title = match command_line {
            Some(command) => format!("{kind} flame graph: {command}"),
            None => format!("{kind} flame graph: {}", input.name()),
        };
    }
    if render.fold.lines && !has_lines {
        log::warn!(
            "--lines: {} has no source lines (record with --lines, or from a build with debug info)",
            input.name()
        );
    }
    match read {
        Input::Profile(profile) => {
            write_outputs(profile, files, &render)?;
        }
        Input::Stacks(folded) => {
            for (output, file) in files {
                file.commit(|writer| render_folded(&folded, output.format, &render, writer))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
