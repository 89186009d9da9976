//! Flame graph rendering with inferno, in process.

use std::borrow::Cow;
use std::io::Write;

use anyhow::{Context, Result};
use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Direction, Options};

use crate::text::printable;

/// How the flame graph looks.
#[derive(Clone, Debug)]
pub struct SvgOptions {
    pub title: String,
    /// Default: inferno's "java" palette, which keys colours on the frame suffixes we emit: kernel
    /// (_[k]) orange, JIT (_[j]) green, inlined (_[i]) aqua, native code red/yellow.
    pub palette: Palette,
    /// An icicle graph: roots at the top, growing down.
    pub reverse: bool,
    /// Frames narrower than this many pixels are left out. Default: inferno's 0.1.
    pub min_width: Option<f64>,
    /// Under the title, e.g. how a differential graph was normalised.
    pub subtitle: Option<String>,
    /// What one count is, in each frame's tooltip: `samples` (the default), `µs`.
    pub count_name: String,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            title: String::new(),
            palette: Palette::Multi(MultiPalette::Java),
            reverse: false,
            min_width: None,
            subtitle: None,
            count_name: "samples".to_owned(),
        }
    }
}

/// Renders folded lines (`stack COUNT`, or `stack BEFORE AFTER` for a differential graph) as an SVG
/// flame graph. An empty capture gives a valid SVG that says so, where inferno would fail.
///
/// inferno escapes XML's special characters but passes control characters through, and XML forbids
/// them even escaped: the title and every line are made printable here (folding already did so for
/// frame names; this keeps the SVG well-formed whatever the caller passes).
pub fn render_svg<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    svg: &SvgOptions,
    writer: &mut dyn Write,
) -> Result<()> {
    let title = printable(&svg.title);
    let lines: Vec<Cow<'a, str>> = lines.into_iter().map(printable).collect();
    if lines.is_empty() {
        return write_empty_svg(&title, writer);
    }
    let mut options = Options::default();
    options.title = title.into_owned();
    options.subtitle = svg.subtitle.as_deref().map(|s| printable(s).into_owned());
    options.count_name = svg.count_name.clone();
    options.colors = svg.palette;
    if svg.reverse {
        options.direction = Direction::Inverted;
    }
    if let Some(min_width) = svg.min_width {
        options.min_width = min_width;
    }
    // Stable colours from run to run: the same function keeps its colour.
    options.hash = true;
    options.deterministic = true;
    flamegraph::from_lines(&mut options, lines.iter().map(|l| l.as_ref()), writer)
        .context("cannot render the flame graph")
}

fn write_empty_svg(title: &str, writer: &mut dyn Write) -> Result<()> {
    let title = xml_escape(title);
    write!(
        writer,
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="80" xmlns="http://www.w3.org/2000/svg">
<text x="600" y="24" text-anchor="middle" font-family="Verdana" font-size="17">{title}</text>
<text x="600" y="56" text-anchor="middle" font-family="Verdana" font-size="12">No samples were collected.</text>
</svg>
"#
    )
    .context("cannot write the flame graph")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titled(title: &str) -> SvgOptions {
        SvgOptions {
            title: title.to_owned(),
            ..SvgOptions::default()
        }
    }

    /// A rendered graph is an SVG holding the frame names, kernel suffixes stripped from labels.
    #[test]
    fn renders_frames() {
        let mut out = Vec::new();
        render_svg(
            [
                "burn;main;run;burn_a 3",
                "burn;main;run;read_zero;vfs_read_[k] 1",
            ],
            &titled("T & <x>"),
            &mut out,
        )
        .unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("burn_a"));
        assert!(
            svg.contains(">vfs_read<") || svg.contains("vfs_read ("),
            "kernel label without suffix"
        );
        assert!(svg.contains("T &amp; &lt;x&gt;"));
    }

    /// Control characters in the title or frames cannot make the SVG ill-formed: no C0 control
    /// other than a line break reaches the file, and it parses as XML.
    #[test]
    fn control_characters_are_replaced() {
        let hostile = "<x\u{1}\u{1b}[31m\"&\u{7f}\u{9b}";
        let line = format!("{hostile};main;leaf\u{2} 3");
        for lines in [vec![line.as_str()], vec![]] {
            let mut out = Vec::new();
            render_svg(lines, &titled(hostile), &mut out).unwrap();
            let svg = String::from_utf8(out).unwrap();
            assert!(
                !svg.chars().any(|c| c.is_control() && c != '\n'),
                "control character in the SVG"
            );
            assert!(
                svg.contains("&lt;x\u{FFFD}\u{FFFD}[31m&quot;&amp;"),
                "{svg}"
            );
            let mut reader = quick_xml::Reader::from_str(&svg);
            loop {
                match reader.read_event() {
                    Ok(quick_xml::events::Event::Eof) => break,
                    Ok(_) => {}
                    Err(e) => panic!("invalid XML at {}: {e}", reader.buffer_position()),
                }
            }
        }
    }

    /// No samples still gives a well-formed SVG that says so.
    #[test]
    fn empty_capture_is_valid_svg() {
        let mut out = Vec::new();
        render_svg(std::iter::empty(), &titled("a <title>"), &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("No samples were collected"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
