//! `emberprof generate man|bash|zsh|fish|elvish|powershell`: the man page and shell completions,
//! made from the clap definitions in `cli` (as ripgrep's `rg --generate` does), so they cannot drift
//! from the options the binary really takes. Printed to stdout, for packagers and `cargo install`
//! users to put where their system looks. This module reads the command tree; it never parses it.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

use crate::cli::{Cli, GenerateKind};

/// Writes what `kind` names to stdout.
pub fn run(kind: GenerateKind) -> Result<ExitCode> {
    let text = generate(kind).with_context(|| {
        let name = kind
            .to_possible_value()
            .map(|value| value.get_name().to_owned());
        format!("cannot generate {}", name.unwrap_or_default())
    })?;
    // Made in memory first: clap_complete panics on a failed write, and a closed pipe (`| head`)
    // must end quietly, which `main` does for the error returned here.
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&text)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The man page or completion script for `kind`.
pub fn generate(kind: GenerateKind) -> std::io::Result<Vec<u8>> {
    let mut command = Cli::command();
    command.build();
    let shell = match kind {
        GenerateKind::Man => return man_page(&command),
        GenerateKind::Bash => Shell::Bash,
        GenerateKind::Zsh => Shell::Zsh,
        GenerateKind::Fish => Shell::Fish,
        GenerateKind::Elvish => Shell::Elvish,
        GenerateKind::Powershell => Shell::PowerShell,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "emberprof", &mut script);
    Ok(script)
}

/// One page for the whole tool: the top-level command's sections, then a section per subcommand
/// (synopsis, description, options, examples). clap_mangen makes a page per subcommand
/// (`emberprof-record(1)`), but a single file is what one `generate man` can print and what `man
/// emberprof` finds; its section renderers are reused, demoted to subsections.
fn man_page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    // Every rendered piece starts with roff's definition of the apostrophe string: kept once.
    let mut page = Roff::default().render();
    let man = Man::new(command.clone());
    for render in [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
    ] {
        let mut section = Vec::new();
        render(&man, &mut section)?;
        page += &without_preamble(&section);
    }
    if let Some(after) = command.get_after_help() {
        page += &examples(&after.to_string(), "SH");
    }
    // clap's own `help` subcommand is what the page replaces: no section for it.
    for sub in command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
    {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let mut heading = Roff::default();
        heading.control("SH", [name.to_uppercase().as_str()]);
        page += &without_preamble(heading.render().as_bytes());
        let sub_man = Man::new(sub.clone());
        for render in [
            Man::render_synopsis_section,
            Man::render_description_section,
            Man::render_options_section,
        ] {
            let mut section = Vec::new();
            render(&sub_man, &mut section)?;
            page += &as_subsections(&section);
        }
        if let Some(after) = sub.get_after_help() {
            page += &examples(&after.to_string(), "SS");
        }
    }
    let mut tail = Roff::default();
    tail.control("SH", ["EXIT STATUS"])
        .text([roman(
            "0 on success; 1 on an error, which is one line on stderr. With a launched COMMAND, \
             its exit status (128 + the signal number if a signal ended it); 130 when a second \
             Ctrl-C stopped the recording without output.",
        )])
        .control("SH", ["SEE ALSO"])
        .text([roman(
            "perf-record(1), perf_event_open(2), bpf(2). The README and docs/ of the source \
             repository explain the requirements, how it works, its limits and its performance.",
        )]);
    page += &without_preamble(tail.render().as_bytes());
    Ok(page.into_bytes())
}

/// A subcommand's section as subsections of its own `.SH` heading.
fn as_subsections(roff: &[u8]) -> String {
    without_preamble(roff)
        .lines()
        .map(|line| match line.strip_prefix(".SH ") {
            Some(title) => format!(".SS {title}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// The `EXAMPLES:` text of an `after_help` as a section (`heading` `SH`) or subsection (`SS`), kept
/// as laid out: clap_mangen's own extra section fills its lines into one paragraph, which would run
/// the commands together.
fn examples(text: &str, heading: &str) -> String {
    let mut roff = Roff::default();
    roff.control(heading, ["EXAMPLES"]).control("nf", []);
    for line in text.lines().filter(|line| *line != "EXAMPLES:") {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
    without_preamble(roff.render().as_bytes())
}

/// A rendered piece without the string definition roff puts at the start of each.
fn without_preamble(roff: &[u8]) -> String {
    String::from_utf8_lossy(roff)
        .lines()
        .filter(|line| !line.starts_with(".ie \\n(.g .ds Aq") && !line.starts_with(".el .ds Aq"))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The man page has one section per subcommand, each with its options, and the apostrophe
    /// string defined once.
    #[test]
    fn man_page_covers_every_subcommand() {
        let page = String::from_utf8(generate(GenerateKind::Man).unwrap()).unwrap();
        for heading in [
            ".SH \"EMBERPROF RECORD\"",
            ".SH \"EMBERPROF REPORT\"",
            ".SH \"EMBERPROF DIFF\"",
            ".SH \"EMBERPROF GENERATE\"",
            ".SH EXAMPLES",
        ] {
            assert!(page.contains(heading), "no {heading} in:\n{page}");
        }
        assert!(!page.contains("EMBERPROF HELP"), "{page}");
        assert!(page.contains("\\-\\-pid"), "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "{page}");
    }
}
