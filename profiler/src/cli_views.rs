//! The command-line options of how a profile is shown — shared by `record` and `report` through
//! `#[command(flatten)]` — and of `report` and `diff`. Clap types stay here and in `cli`; they are
//! turned into plain [`RenderOptions`], [`ReportOptions`] and [`DiffOptions`].

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use inferno::flamegraph::color::Palette;

use crate::diff::DiffOptions;
use crate::input::InputSource;
use crate::output::{FoldOptions, Output, OutputFormat, OutputTarget, RenderOptions, SvgOptions};
use crate::profile::filter::Filter;
use crate::profile::ValueChoice;
use crate::report::ReportOptions;

pub const REPORT_EXAMPLES: &str = "\
EXAMPLES:
  emberprof report app.pb.gz -o app.svg --title \"app, 30 s\"
      A flame graph of a pprof profile saved by `record -o app.pb.gz` (or written by another tool).
  emberprof report app.pb.gz --no-kernel | grep parse
      Folded stacks to stdout, kernel frames left out.
  emberprof report app.pb.gz -o icicle.svg --reverse --colors java --min-width 0.5
      An icicle graph, narrow frames left out.
  emberprof report app.pb.gz -o t.svg --per-thread --grep 'serde|json'
      One tower per thread, only stacks through a function matching the regex.
  emberprof report app.folded -o app.pb.gz
      Folded stacks (emberprof's, perf's through stackcollapse) to pprof.
  emberprof report wall.pb.gz --value off-cpu -o waiting.svg
      Only the time threads spent switched out, of a profile recorded with off-CPU time.";

pub const DIFF_EXAMPLES: &str = "\
EXAMPLES:
  emberprof diff before.pb.gz after.pb.gz -o diff.svg
      A differential flame graph: frames are as wide as in AFTER; red grew, blue shrank.
  emberprof diff before.folded after.folded -o diff.folded
      `stack BEFORE AFTER` lines, as inferno-diff-folded writes them.

BEFORE is scaled to AFTER's total first, so that a longer or busier capture does not turn
everything red; the title says so.";

/// Which value of a profile folded counts and flame graph widths are.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum ValueArg {
    /// `wall` where the profile has off-CPU time, else `samples`.
    #[default]
    Auto,
    /// Samples (another tool's pprof: its `samples` type, else its default sample type).
    Samples,
    /// Microseconds on a CPU.
    Cpu,
    /// Microseconds switched out (waiting: a lock, I/O, a sleep).
    OffCpu,
    /// Microseconds on a CPU plus switched out: each thread as wide as its wall-clock time.
    Wall,
}

impl From<ValueArg> for ValueChoice {
    fn from(value: ValueArg) -> Self {
        match value {
            ValueArg::Auto => ValueChoice::Auto,
            ValueArg::Samples => ValueChoice::Samples,
            ValueArg::Cpu => ValueChoice::Cpu,
            ValueArg::OffCpu => ValueChoice::OffCpu,
            ValueArg::Wall => ValueChoice::Wall,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// An interactive SVG flame graph.
    Svg,
    /// Folded stacks, one `process;frame;..;frame COUNT` line per distinct stack.
    Folded,
    /// gzip-compressed pprof protobuf, for go tool pprof, Pyroscope, Grafana, Parca, speedscope.
    Pprof,
}

/// How a profile is shown: which samples and frames, and how the flame graph looks.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Title of the flame graph.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,

    /// Flame graph colours, one of inferno's palettes: java (the default: kernel frames orange,
    /// JIT green, inlined aqua, the rest red/yellow), hot, mem, io, wakeup, js, perl, python, rust,
    /// red, green, blue, aqua, yellow, purple, orange.
    #[arg(long, value_name = "PALETTE")]
    pub colors: Option<String>,

    /// Draw an icicle graph: the roots at the top, callees below them.
    #[arg(long)]
    pub reverse: bool,

    /// Leave out frames narrower than this many pixels of the 1200-pixel-wide graph (default 0.1).
    // Negative numbers are taken as values so that `--min-width -1` gets the clear error below.
    #[arg(long, value_name = "PIXELS", allow_negative_numbers = true)]
    pub min_width: Option<f64>,

    /// Leave kernel frames out (with record: do not capture them).
    #[arg(long)]
    pub no_kernel: bool,

    /// Root each stack at `threadname-PID/TID` instead of the process name, so every thread gets
    /// its own tower (pprof input: from its pid, tid and thread_name labels).
    #[arg(long)]
    pub per_thread: bool,

    /// Keep only the stacks with a frame whose function name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,

    /// Append the source location to each frame, `name (file.c:LINE)`, where debug info has it: the
    /// line each function is at (for a caller, its call into the next frame).
    #[arg(long)]
    pub lines: bool,

    /// Do not show functions inlined into their callers as frames of their own. By default each
    /// inlined call is a frame, marked `_[i]` in folded output (needs DWARF debug info).
    #[arg(long)]
    pub no_inline: bool,
}

impl RenderArgs {
    pub fn into_options(self) -> Result<RenderOptions> {
        let RenderArgs {
            title,
            colors,
            reverse,
            min_width,
            no_kernel,
            per_thread,
            grep,
            lines,
            no_inline,
        } = self;
        let mut svg = SvgOptions {
            title: title.unwrap_or_default(),
            reverse,
            ..SvgOptions::default()
        };
        if let Some(colors) = colors {
            svg.palette = Palette::from_str(&colors).map_err(|_| {
                anyhow::anyhow!(
                    "--colors {colors:?} is not a palette; choose one of java, hot, mem, io, wakeup, js, \
                     perl, python, rust, red, green, blue, aqua, yellow, purple, orange"
                )
            })?;
        }
        if let Some(width) = min_width {
            if !(width.is_finite() && width >= 0.0) {
                bail!("--min-width must be a number of pixels, 0 or more, not {width}");
            }
            svg.min_width = Some(width);
        }
        let grep = grep
            .map(|pattern| {
                regex::Regex::new(&pattern).with_context(|| {
                    format!("--grep {pattern:?} is not a valid regular expression")
                })
            })
            .transpose()?;
        Ok(RenderOptions {
            filter: Filter {
                no_kernel,
                no_inline,
                grep,
            },
            fold: FoldOptions {
                per_thread,
                lines,
                ..FoldOptions::default()
            },
            svg,
        })
    }
}

/// The outputs named by `-o` (each one's format from its extension, or `--format` for a single one).
pub fn outputs(paths: Vec<PathBuf>, format: Option<FormatArg>) -> Result<Vec<Output>> {
    if format.is_some() && paths.len() > 1 {
        bail!("--format applies to a single output; with several -o, each one's extension names its format");
    }
    let mut stdout = 0;
    paths
        .into_iter()
        .map(|path| {
            let target = OutputTarget::from_arg(path);
            if target == OutputTarget::Stdout {
                stdout += 1;
                if stdout > 1 {
                    bail!("-o - (standard output) can be given only once");
                }
            }
            let format = match format {
                Some(FormatArg::Svg) => OutputFormat::Svg,
                Some(FormatArg::Folded) => OutputFormat::Folded,
                Some(FormatArg::Pprof) => OutputFormat::Pprof,
                None => OutputFormat::from_target(&target)?,
            };
            Ok(Output { target, format })
        })
        .collect()
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The profile: pprof (gzip-compressed or not, from emberprof or any other tool) or folded
    /// stacks; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,

    /// Where to write (default: folded stacks to standard output); several times for several
    /// outputs. The format follows the extension, as with `record -o`.
    #[arg(short, long, value_name = "FILE")]
    pub output: Vec<PathBuf>,

    /// Output format, overriding the one implied by the --output extension (one output only).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Which value the folded counts and the flame graph widths are. Times are in microseconds,
    /// summed per stack, then rounded (stacks under 0.5 µs are left out). pprof output keeps every
    /// value.
    #[arg(long, value_enum, value_name = "VALUE", default_value_t)]
    pub value: ValueArg,

    #[command(flatten)]
    pub render: RenderArgs,
}

impl ReportArgs {
    pub fn into_options(self) -> Result<ReportOptions> {
        let ReportArgs {
            input,
            output,
            format,
            value,
            render,
        } = self;
        let render = render.into_options()?;
        let output = if output.is_empty() {
            vec![PathBuf::from("-")]
        } else {
            output
        };
        Ok(ReportOptions {
            input: InputSource::from_arg(input),
            outputs: outputs(output, format)?,
            render: RenderOptions {
                fold: FoldOptions {
                    value: value.into(),
                    ..render.fold
                },
                ..render
            },
        })
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The profile before the change (pprof or folded; `-` for standard input).
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,

    /// The profile after the change.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,

    /// Where to write: .svg for a differential flame graph, .folded/.txt (or `-`, the default) for
    /// `stack BEFORE AFTER` lines.
    #[arg(short, long, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,

    /// Output format, overriding the one implied by the --output extension.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Title of the flame graph.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,

    /// Leave kernel frames out of both profiles.
    #[arg(long)]
    pub no_kernel: bool,

    /// Compare per thread (`threadname-PID/TID` roots) rather than per process.
    #[arg(long)]
    pub per_thread: bool,

    /// Compare the raw counts, without scaling BEFORE to AFTER's total.
    #[arg(long)]
    pub no_normalize: bool,

    /// Which value is compared (as `report --value`); `auto` compares wall-clock time when both
    /// profiles have off-CPU time, else samples.
    #[arg(long, value_enum, value_name = "VALUE", default_value_t)]
    pub value: ValueArg,
}

impl DiffArgs {
    pub fn into_options(self) -> Result<DiffOptions> {
        let DiffArgs {
            before,
            after,
            output,
            format,
            title,
            no_kernel,
            per_thread,
            no_normalize,
            value,
        } = self;
        let Some(output) = outputs(vec![output], format)?.pop() else {
            bail!("diff needs an output");
        };
        if output.format == OutputFormat::Pprof {
            bail!("diff writes an SVG flame graph or diff-folded text, not pprof");
        }
        Ok(DiffOptions {
            before: InputSource::from_arg(before),
            after: InputSource::from_arg(after),
            output,
            title,
            no_kernel,
            per_thread,
            normalize: !no_normalize,
            value: value.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn report(args: &[&str]) -> Result<ReportOptions> {
        let mut all = vec!["emberprof", "report"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Report(report) => report.into_options(),
            _ => unreachable!("a report command"),
        }
    }

    fn diff(args: &[&str]) -> Result<DiffOptions> {
        let mut all = vec!["emberprof", "diff"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Diff(diff) => diff.into_options(),
            _ => unreachable!("a diff command"),
        }
    }

    /// Several -o, each with its extension's format; stdout by default; --format only with one.
    #[test]
    fn outputs_follow_their_extensions() {
        let options = report(&["in.pb.gz", "-o", "a.svg", "-o", "b.pb.gz", "-o", "-"]).unwrap();
        let formats: Vec<OutputFormat> = options.outputs.iter().map(|o| o.format).collect();
        assert_eq!(
            formats,
            [OutputFormat::Svg, OutputFormat::Pprof, OutputFormat::Folded]
        );
        let options = report(&["-"]).unwrap();
        assert_eq!(options.input, InputSource::Stdin);
        assert_eq!(options.outputs[0].target, OutputTarget::Stdout);
        let options = report(&["x", "-o", "out", "--format", "pprof"]).unwrap();
        assert_eq!(options.outputs[0].format, OutputFormat::Pprof);
        let error = report(&["x", "-o", "a.svg", "-o", "b.svg", "--format", "svg"]).unwrap_err();
        assert!(error.to_string().contains("--format"), "{error}");
        let error = report(&["x", "-o", "-", "-o", "-"]).unwrap_err();
        assert!(error.to_string().contains("only once"), "{error}");
    }

    /// Render options become plain options; bad palettes, regexes and widths are refused by name.
    #[test]
    fn render_options_are_validated() {
        let options = report(&[
            "x",
            "--title",
            "T",
            "--reverse",
            "--colors",
            "hot",
            "--min-width",
            "0.5",
            "--grep",
            "a|b",
            "--no-kernel",
            "--no-inline",
            "--per-thread",
            "--lines",
        ])
        .unwrap();
        let render = options.render;
        assert_eq!(render.svg.title, "T");
        assert!(render.svg.reverse);
        assert_eq!(render.svg.min_width, Some(0.5));
        assert!(render.filter.no_kernel && render.filter.no_inline);
        assert!(render.fold.per_thread && render.fold.lines);
        assert!(render.filter.grep.is_some_and(|g| g.is_match("xb")));
        for (args, named) in [
            (&["x", "--colors", "plaid"][..], "--colors"),
            (&["x", "--grep", "("][..], "--grep"),
            (&["x", "--min-width", "-1"][..], "--min-width"),
        ] {
            let error = report(args).unwrap_err().to_string();
            assert!(error.contains(named), "{args:?}: {error}");
        }
    }

    /// diff writes SVG or diff-folded text, normalised unless asked not to; never pprof.
    #[test]
    fn diff_options() {
        let options = diff(&["a.pb.gz", "b.folded", "-o", "d.svg"]).unwrap();
        assert_eq!(options.output.format, OutputFormat::Svg);
        assert!(options.normalize);
        let options = diff(&["a", "b", "--no-normalize"]).unwrap();
        assert_eq!(options.output.target, OutputTarget::Stdout);
        assert!(!options.normalize);
        assert!(diff(&["a", "b", "-o", "d.pb.gz"]).is_err());
        assert_eq!(options.value, ValueChoice::Auto);
        let options = diff(&["a", "b", "--value", "cpu"]).unwrap();
        assert_eq!(options.value, ValueChoice::Cpu);
    }

    /// `--value` picks what folded counts are; `auto` by default; unknown values are refused.
    #[test]
    fn report_value_choice() {
        assert_eq!(report(&["x"]).unwrap().render.fold.value, ValueChoice::Auto);
        for (arg, value) in [
            ("samples", ValueChoice::Samples),
            ("cpu", ValueChoice::Cpu),
            ("off-cpu", ValueChoice::OffCpu),
            ("wall", ValueChoice::Wall),
        ] {
            let options = report(&["x", "--value", arg, "--per-thread"]).unwrap();
            assert_eq!(options.render.fold.value, value);
            assert!(options.render.fold.per_thread);
        }
        assert!(report(&["x", "--value", "bytes"]).is_err());
    }
}
