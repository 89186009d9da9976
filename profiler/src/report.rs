//! `emberprof report`: a saved profile (pprof or folded) read back and rendered in any format. No
//! root, no BPF: only the input reader and the outputs.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::input::{read_profile, InputSource};
use crate::output::{write_outputs, Output, OutputFile, RenderOptions};
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
    // Checked before the input is read, as `record` checks before sampling.
    let files = outputs
        .into_iter()
        .map(|output| Ok((output.clone(), OutputFile::create(&output.target)?)))
        .collect::<Result<Vec<_>>>()?;
    let profile = read_profile(&input)?;
    // Before any output is written, and naming the file that lacks the value.
    Shown::resolve(&profile.value_types, render.fold.value).with_context(|| input.name())?;
    if render.svg.title.is_empty() {
        let has_off_cpu = profile.value_types.position(values::OFF_CPU).is_some();
        let kind = match render.fold.value {
            ValueChoice::Auto if has_off_cpu => "Wall-clock",
            ValueChoice::Wall => "Wall-clock",
            ValueChoice::OffCpu => "Off-CPU",
            _ => "CPU",
        };
        render.svg.title = match &profile.metadata.command_line {
            Some(command) => format!("{kind} flame graph: {}", command),
            None => format!("{kind} flame graph: {}", input.name()),
        };
    }
    if render.fold.lines && !profile.metadata.has_lines {
        log::warn!(
            "--lines: {} has no source lines (record with --lines, or from a build with debug info)",
            input.name()
        );
    }
    write_outputs(profile, files, &render)?;
    Ok(ExitCode::SUCCESS)
}
