//! Golden tests: every output format of the hand-built profiles in `profile::testdata`, compared
//! with the files in `output/testdata/`. `EMBERPROF_BLESS=1 cargo test -p emberprof golden` rewrites
//! them after a deliberate change (review the diff).

use std::path::PathBuf;

use super::render::{render, RenderOptions};
use super::{FoldOptions, OutputFormat, SvgOptions};
use crate::profile::filter::{self, Filter};
use crate::profile::testdata;

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/output/testdata")
        .join(name);
    if std::env::var_os("EMBERPROF_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read golden file {}: {error}; create it with EMBERPROF_BLESS=1",
            path.display()
        )
    });
    for (index, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(
            want,
            got,
            "{}:{} differs; if the change is intended, rerun with EMBERPROF_BLESS=1",
            path.display(),
            index + 1
        );
    }
    assert_eq!(
        expected.lines().count(),
        actual.lines().count(),
        "{}: line count differs; if the change is intended, rerun with EMBERPROF_BLESS=1",
        path.display()
    );
}

fn rendered(format: OutputFormat, filter: Filter, options: RenderOptions) -> Vec<u8> {
    let profile = filter::apply(testdata::small(), &filter);
    let mut out = Vec::new();
    render(&profile, format, &options, &mut out).expect("render");
    out
}

fn folded(filter: Filter, fold: FoldOptions) -> String {
    let options = RenderOptions {
        fold,
        ..RenderOptions::default()
    };
    String::from_utf8(rendered(OutputFormat::Folded, filter, options)).expect("utf-8")
}

/// Folded stacks: roots, `[truncated]`, every suffix, unnamed frames, sanitized names.
#[test]
fn golden_folded() {
    check(
        "small.folded",
        &folded(Filter::default(), FoldOptions::default()),
    );
    let per_thread_lines = FoldOptions {
        per_thread: true,
        lines: true,
        ..FoldOptions::default()
    };
    check(
        "small-per-thread-lines.folded",
        &folded(Filter::default(), per_thread_lines),
    );
    let narrowed = Filter {
        no_kernel: true,
        no_inline: true,
        grep: Some(regex::Regex::new("^main$").expect("regex")),
    };
    check(
        "small-no-kernel-no-inline-grep.folded",
        &folded(narrowed, FoldOptions::default()),
    );
}

/// The SVG, default look and an icicle with another palette.
#[test]
fn golden_svg() {
    let svg = |svg| {
        let options = RenderOptions {
            svg,
            ..RenderOptions::default()
        };
        String::from_utf8(rendered(OutputFormat::Svg, Filter::default(), options)).expect("utf-8")
    };
    check(
        "small.svg",
        &svg(SvgOptions {
            title: "small".to_owned(),
            ..SvgOptions::default()
        }),
    );
    check(
        "small-reverse-hot.svg",
        &svg(SvgOptions {
            title: "small".to_owned(),
            reverse: true,
            palette: std::str::FromStr::from_str("hot").expect("palette"),
            min_width: Some(0.5),
            ..SvgOptions::default()
        }),
    );
}

/// pprof, as the decoded message (Debug form of the prost types); the gzip bytes decode to it.
#[test]
fn golden_pprof() {
    use prost::Message;
    let gzip = rendered(
        OutputFormat::Pprof,
        Filter::default(),
        RenderOptions::default(),
    );
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut bytes)
        .expect("gzip");
    let message = crate::pprof::Profile::decode(&bytes[..]).expect("protobuf");
    check("small.pprof.txt", &format!("{message:#?}\n"));
}

/// Reading our own pprof back gives the same profile (what `report` relies on), and folded stacks
/// read back fold to the same lines.
#[test]
fn round_trips() {
    let original = testdata::small();
    let gzip = rendered(
        OutputFormat::Pprof,
        Filter::default(),
        RenderOptions::default(),
    );
    let read = crate::input::parse_profile(&gzip, "small.pb.gz").expect("read back");
    assert_eq!(read.samples, original.samples);
    // The `[truncated]` root comes back as one more location, which no stack uses.
    assert_eq!(
        read.locations[..original.locations.len()],
        original.locations
    );
    assert_eq!(read.mappings, original.mappings);
    assert_eq!(read.metadata.frequency_hz, Some(99));
    assert_eq!(read.metadata.duration, original.metadata.duration);
    assert_eq!(read.metadata.start_time, original.metadata.start_time);
    assert_eq!(read.metadata.command_line, original.metadata.command_line);
    assert_eq!(read.metadata.lost_samples, 2);

    let text = folded(Filter::default(), FoldOptions::default());
    let from_folded = crate::input::parse_profile(text.as_bytes(), "small.folded").expect("folded");
    let mut again = Vec::new();
    render(
        &from_folded,
        OutputFormat::Folded,
        &RenderOptions::default(),
        &mut again,
    )
    .expect("render");
    assert_eq!(String::from_utf8(again).expect("utf-8"), text);
}
