//! Interpreter frames (Python) through every output: marked `_[p]` in folded stacks, read back
//! from folded and pprof as the same frames, and drawn in the SVG without the marker, in their own
//! colour. Nothing produces them yet (issue 21 will): the profile is `profile::testdata::python`.

use super::render::{render, RenderOptions};
use super::{fold, write_pprof, FoldOptions, OutputFormat};
use crate::profile::{testdata, MappingKind, Profile, Runtime};

fn folded_text(profile: &Profile, lines: bool) -> String {
    let options = FoldOptions {
        lines,
        ..FoldOptions::default()
    };
    fold(profile, &options).expect("fold").text()
}

/// Python frames carry the `_[p]` marker (after `(file:LINE)` with `--lines`), native frames
/// between them stay where they are, unmarked.
#[test]
fn python_frames_fold_with_their_marker() {
    let profile = testdata::python();
    let root = "python3;_start;Py_RunMain";
    assert_eq!(
        folded_text(&profile, false),
        format!(
            "{root};<module>_[p];outer_[p];Sorter.run_[p] 6\n\
             {root};<module>_[p];outer_[p];Sorter.run_[p];builtin_sorted;key_[p] 2\n\
             {root};<module>_[p];outer_[p];run 1\n"
        )
    );
    let with_lines = folded_text(&profile, true);
    assert!(
        with_lines.contains(";<module> (app.py:40)_[p];outer (app.py:13)_[p];run 1\n"),
        "{with_lines}"
    );
}

/// Folded stacks read back give interpreter frames in the runtime's mapping, and fold to the same
/// lines, with and without source lines.
#[test]
fn python_frames_round_trip_through_folded() {
    let profile = testdata::python();
    for lines in [false, true] {
        let text = folded_text(&profile, lines);
        let read = crate::input::parse_profile(text.as_bytes(), "py.folded").expect("read");
        assert_eq!(folded_text(&read, false), text);
        let python = read
            .locations
            .iter()
            .filter(|l| read.runtime(l) == Some(Runtime::Python))
            .count();
        assert_eq!(python, if lines { 5 } else { 4 }, "{:?}", read.locations);
    }
}

/// pprof holds Python frames as locations of a `[python]` mapping whose functions have the
/// script's file name and whose lines the script's lines; reading it back gives the same mappings
/// and locations, so `report` folds it as the capture did.
#[test]
fn python_frames_round_trip_through_pprof() {
    let profile = testdata::python();
    let mut gzip = Vec::new();
    write_pprof(&profile, &mut gzip).expect("pprof");
    let read = crate::input::parse_profile(&gzip, "py.pb.gz").expect("read back");
    assert_eq!(read.mappings, profile.mappings);
    assert_eq!(
        read.mappings[1].kind,
        MappingKind::Interpreted(Runtime::Python)
    );
    assert_eq!(read.locations, profile.locations);
    assert_eq!(read.samples, profile.samples);
    for lines in [false, true] {
        assert_eq!(folded_text(&read, lines), folded_text(&profile, lines));
    }
}

/// The colour of the frame whose tooltip starts with `name (`, as `(r, g, b)`.
fn fill_of(svg: &str, name: &str) -> (u8, u8, u8) {
    let at = svg
        .find(&format!("<title>{name} ("))
        .unwrap_or_else(|| panic!("no frame {name}: {svg}"));
    let fill = &svg[at..];
    let fill = &fill[fill.find("fill=\"rgb(").expect("a fill") + 10..];
    let parts: Vec<u8> = fill[..fill.find(')').expect("rgb(...)")]
        .split(',')
        .map(|p| p.trim().parse().expect("a colour component"))
        .collect();
    (parts[0], parts[1], parts[2])
}

/// In the SVG, Python frames show their bare names (no `_[p]`, no marker inferno was given) and
/// are blue, whatever the palette; a native function of the same name keeps its native colour.
#[test]
fn python_frames_are_drawn_unmarked_in_their_own_colour() {
    for palette in ["java", "hot"] {
        let mut options = RenderOptions::default();
        options.svg.palette = std::str::FromStr::from_str(palette).expect("palette");
        let mut svg = Vec::new();
        render(&testdata::python(), OutputFormat::Svg, &options, &mut svg).expect("svg");
        let svg = String::from_utf8(svg).expect("utf-8");
        assert!(!svg.contains("_[p]") && !svg.contains("_[w]"), "{svg}");
        assert!(
            svg.contains(">Sorter.run<") || svg.contains(">Sorter.r"),
            "{svg}"
        );
        for python in ["&lt;module&gt;", "outer", "Sorter.run", "key"] {
            let (r, g, b) = fill_of(&svg, python);
            assert!(
                b >= 190 && r < 140 && g < 180,
                "{palette}: {python} is rgb({r},{g},{b})"
            );
        }
        let (r, _, b) = fill_of(&svg, "run");
        assert!(r > b, "{palette}: native run is rgb({r},_,{b})");
    }
}
