//! Flame graph rendering with inferno, in process.

use std::borrow::Cow;
use std::io::Write;

use anyhow::{Context, Result};
use inferno::flamegraph::color::{Color, MultiPalette, Palette, PaletteMap};
use inferno::flamegraph::{self, Direction, Options};

use crate::profile::{Runtime, OFF_CPU_FRAME};
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
    let mut interpreted = PaletteMap::default();
    let lines: Vec<Cow<'a, str>> = lines
        .into_iter()
        .map(|line| mark_interpreted(printable(line), &mut interpreted))
        .collect();
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
    if lines.iter().any(|line| line.contains(OFF_CPU_FRAME)) {
        interpreted.insert(OFF_CPU_FRAME, OFF_CPU_COLOUR);
    }
    if interpreted.iter().next().is_some() {
        options.palette_map = Some(&mut interpreted);
    }
    // Stable colours from run to run: the same function keeps its colour.
    options.hash = true;
    options.deterministic = true;
    flamegraph::from_lines(&mut options, lines.iter().map(|l| l.as_ref()), writer)
        .context("cannot render the flame graph")
}

/// inferno takes the suffix off a label, and colours the frame by it, only for the markers it
/// knows (`_[k]`, `_[w]`, `_[i]`, `_[j]`); `_[p]` would show in every Python label and be coloured
/// as a native name. Interpreter frames therefore reach inferno marked `_[w]` (its waker-stack
/// marker, which emberprof never writes), so that the label and tooltip show the bare name, and
/// their colour comes from `palette`, which gets each such frame. Counts end the line: only the
/// stack's frames are rewritten.
fn mark_interpreted<'a>(line: Cow<'a, str>, palette: &mut PaletteMap) -> Cow<'a, str> {
    if !Runtime::ALL.iter().any(|r| line.contains(r.marker())) {
        return line;
    }
    // `stack COUNT` or, from diff, `stack BEFORE AFTER`.
    let mut end = line.len();
    for _ in 0..2 {
        match line[..end].rsplit_once(' ') {
            Some((stack, count))
                if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) =>
            {
                end = stack.len();
            }
            _ => break,
        }
    }
    let mut marked = String::with_capacity(line.len());
    for (position, frame) in line[..end].split(';').enumerate() {
        if position > 0 {
            marked.push(';');
        }
        let bare = Runtime::ALL.iter().find_map(|runtime| {
            frame
                .strip_suffix(runtime.marker())
                .map(|bare| (bare, *runtime))
        });
        match bare {
            Some((bare, runtime)) => {
                let start = marked.len();
                marked.push_str(bare);
                marked.push_str(INFERNO_MARKER);
                palette.insert(&marked[start..], colour(runtime, bare));
            }
            None => marked.push_str(frame),
        }
    }
    marked.push_str(&line[end..]);
    Cow::Owned(marked)
}

/// The colour of the `[off-cpu]` leaf of waiting stacks: a grey-violet no other frame kind has
/// (native red/yellow, kernel orange, JIT green, inlined aqua, Python blue), so waiting stands out.
const OFF_CPU_COLOUR: Color = Color {
    r: 160,
    g: 140,
    b: 200,
};

/// A marker inferno strips from labels; see [`mark_interpreted`].
const INFERNO_MARKER: &str = "_[w]";

/// The colour of an interpreter frame: its runtime's hue, shaded by the name so that neighbours
/// differ and a function keeps its shade from run to run. By hand: inferno's own palette function
/// is private to it. Python: blues, apart from native red/yellow, kernel orange, JIT green and
/// inlined aqua.
fn colour(runtime: Runtime, name: &str) -> Color {
    // FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let shade = (hash % 64) as u8;
    match runtime {
        Runtime::Python => Color {
            r: 70 + shade,
            g: 110 + shade,
            b: 190 + shade,
        },
    }
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

    /// The `[off-cpu]` leaf gets its own colour: inferno's palette would give it a native one.
    #[test]
    fn off_cpu_frames_have_their_own_colour() {
        let mut out = Vec::new();
        render_svg(
            ["app;main;work 3", "app;main;read;schedule_[k];[off-cpu] 9"],
            &titled("wall"),
            &mut out,
        )
        .unwrap();
        let svg = String::from_utf8(out).unwrap();
        let fill = format!(
            "fill=\"rgb({},{},{})\"",
            OFF_CPU_COLOUR.r, OFF_CPU_COLOUR.g, OFF_CPU_COLOUR.b
        );
        let at = svg.find("<title>[off-cpu]").expect("an [off-cpu] frame");
        let frame = &svg[at..svg[at..].find("</g>").map_or(svg.len(), |end| at + end)];
        assert!(frame.contains(&fill), "{frame}");
        assert_eq!(svg.matches(&fill).count(), 1, "only the [off-cpu] frame");
    }

    /// Only whole Python frames of the stack are re-marked for inferno, in folded and diff lines
    /// alike, each added to the palette; a marker inside a name, native frames and counts stay.
    #[test]
    fn python_frames_are_remarked_for_inferno() {
        let mut palette = PaletteMap::default();
        let line = "p;main;f_[p];x_[p]y;g (a.py:3)_[p] 10 12";
        let marked = mark_interpreted(Cow::Borrowed(line), &mut palette);
        assert_eq!(marked, "p;main;f_[w];x_[p]y;g (a.py:3)_[w] 10 12");
        let mut names: Vec<&str> = palette.iter().map(|(name, _)| name).collect();
        names.sort();
        assert_eq!(names, ["f_[w]", "g (a.py:3)_[w]"]);
        let native = "p;main;f 3";
        assert!(matches!(
            mark_interpreted(Cow::Borrowed(native), &mut palette),
            Cow::Borrowed(_)
        ));
    }
}
