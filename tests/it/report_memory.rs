//! `report` on large folded input (issue 19, item 9): memory follows the distinct text of the input,
//! not a profile's model of it. Folded stacks of 8 MiB whose every frame is distinct and short (the
//! worst case per byte: each frame costs its bytes and a few more) must come out byte for byte with
//! a peak RSS of a few times the file; before, each frame became a location, a frame and a name of
//! some 200 bytes (26 times the file), and the SVG as much again inside inferno.

use std::time::Duration;

use crate::support::*;

/// Bytes of folded input generated.
const INPUT_BYTES: usize = 8 << 20;
/// Peak RSS allowed: this many times the input, plus what emberprof holds before it reads anything.
const MAX_TIMES_INPUT: u64 = 4;
const BASELINE_BYTES: u64 = 40 << 20;
/// A report still running after this is hung (the debug build takes seconds).
const HANG: Duration = Duration::from_secs(300);
const ADDRESS_SPACE_LIMIT: u64 = 4 << 30;

/// Lines of 32 distinct 8-byte frames under one root, in the order `report` writes them.
fn distinct_short_frames() -> String {
    let mut text = String::with_capacity(INPUT_BYTES + 512);
    let mut frame = 0u64;
    while text.len() < INPUT_BYTES {
        text.push_str("app");
        for _ in 0..32 {
            text.push_str(&format!(";f{frame:07x}"));
            frame += 1;
        }
        text.push_str(" 1\n");
    }
    text
}

/// Folded output gives the input back; folded and SVG output stay within the bound.
#[test]
fn report_memory_follows_the_distinct_text() {
    let _cpus = cpu_heavy_test();
    let dir = scratch();
    let input = dir.path().join("distinct.folded");
    let text = distinct_short_frames();
    std::fs::write(&input, &text).expect("write the input");
    let bound = MAX_TIMES_INPUT * text.len() as u64 + BASELINE_BYTES;
    for output in ["out.folded", "out.svg"] {
        let out = dir.path().join(output);
        let mut command = emberprof();
        command.args(["report", path_arg(&input), "-o", path_arg(&out)]);
        let report = run_bounded(&mut command, ADDRESS_SPACE_LIMIT, HANG, || {});
        eprintln!(
            "report -o {output}: {}, peak RSS {} MiB for {} MiB of input, {:.1} s",
            report.status,
            report.peak_rss_bytes >> 20,
            text.len() >> 20,
            report.wall.as_secs_f64()
        );
        assert!(report.status.success(), "{}", report.stderr);
        assert!(
            report.peak_rss_bytes <= bound,
            "report -o {output} peaked at {} MiB for {} MiB of input, bound {} MiB",
            report.peak_rss_bytes >> 20,
            text.len() >> 20,
            bound >> 20
        );
    }
    let folded = std::fs::read_to_string(dir.path().join("out.folded")).expect("read output");
    assert!(folded == text, "the folded output is not the input");
    let svg = std::fs::read_to_string(dir.path().join("out.svg")).expect("read SVG");
    assert!(
        svg.contains("<title>app (") && svg.contains("</svg>"),
        "the SVG has no root frame"
    );
}
