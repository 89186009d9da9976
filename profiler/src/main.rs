//! emberprof: a sampling profiler for Linux on eBPF.
//!
//! The pipeline: `capture` (BPF sampler, needs the kernel) -> `sample` (plain stacks) -> symbolize
//! (the emberprof-symbolizer crate) -> `profile` (the symbolized model) -> `output` (fold, SVG,
//! pprof; write). `input` reads a saved profile back for `report` and `diff`. Only `main` decides
//! how the process ends.

mod capture;
mod cli;
mod cli_views;
mod diff;
mod generate;
mod input;
mod interrupt;
mod memory;
mod output;
mod pprof;
mod preflight;
mod profile;
mod record;
mod report;
mod sample;
mod summary;
mod symbols;
mod text;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Counts the heap in use, by which the symbolizer measures what blazesym parsed (see its `heap`).
#[global_allocator]
static HEAP: emberprof_symbolizer::CountingAllocator = emberprof_symbolizer::CountingAllocator;

fn main() -> ExitCode {
    memory::tune_allocator();
    let cli = Cli::parse();
    init_logging(&cli.verbosity);
    let result = match cli.command {
        Command::Record(args) => args.into_options(&cli.verbosity).and_then(record::run),
        Command::Report(args) => args.into_options().and_then(report::run),
        Command::Diff(args) => args.into_options().and_then(diff::run),
        Command::Generate(args) => generate::run(args.kind),
    };
    match result {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("emberprof: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbosity: &cli::Verbosity) {
    let level = match (verbosity.quiet, verbosity.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        // blazesym and aya are chatty at debug level; their debug output is for -vv only.
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "emberprof: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .init();
}

/// Output piped into `head` that closes early is not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
