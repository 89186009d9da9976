//! Typed values through every output: a wall-clock profile (on-CPU and off-CPU time, see
//! `profile::testdata::wall`) folds in microseconds, each `--value` shows what it names, and pprof
//! keeps every value type and value so that `report` folds the file as the capture folded.

use std::collections::BTreeMap;

use super::render::{render, RenderOptions};
use super::{fold, write_pprof, FoldOptions, OutputFormat};
use crate::profile::{testdata, values, Profile, ValueChoice};

fn folded(profile: &Profile, value: ValueChoice, per_thread: bool) -> BTreeMap<String, u64> {
    let options = FoldOptions {
        per_thread,
        value,
        ..FoldOptions::default()
    };
    fold(profile, &options).expect("fold").counts()
}

fn counts(lines: &[(&str, u64)]) -> BTreeMap<String, u64> {
    lines.iter().map(|&(s, c)| (s.to_owned(), c)).collect()
}

/// With off-CPU time, counts are microseconds of on-CPU plus off-CPU time, summed in nanoseconds
/// per line and then rounded (thread 2's 1,499 ns and 400 ns make 2 µs, not 1 + 0), so that each
/// thread is as wide as its wall-clock time; the SVG says `µs`.
#[test]
fn off_cpu_profiles_fold_in_microseconds() {
    let wall = testdata::wall();
    let main = "app;main";
    assert_eq!(
        folded(&wall, ValueChoice::Auto, false),
        counts(&[
            (&format!("{main};burn"), 30_303),
            (&format!("{main};wait;schedule_[k]"), 60_002),
        ])
    );
    assert_eq!(
        folded(&wall, ValueChoice::Auto, true),
        counts(&[
            ("app-1/1;main;burn", 30_303),
            ("app-1/1;main;wait;schedule_[k]", 60_000),
            ("app-1/2;main;wait;schedule_[k]", 2),
        ])
    );
    let mut svg = Vec::new();
    render(
        &wall,
        OutputFormat::Svg,
        &RenderOptions::default(),
        &mut svg,
    )
    .expect("svg");
    let svg = String::from_utf8(svg).expect("utf-8");
    assert!(svg.contains("all (90,305 µs, 100%)"), "{svg}");
    // A CPU-only profile still counts samples.
    let small = folded(&testdata::small(), ValueChoice::Auto, false);
    assert_eq!(small.values().sum::<u64>(), 42);
}

/// Each choice shows its value alone: samples leave the off-CPU stacks out (they have none), CPU
/// and off-CPU time each their own stacks; a value the profile lacks is an error naming it.
#[test]
fn each_value_shows_what_it_names() {
    let wall = testdata::wall();
    assert_eq!(
        folded(&wall, ValueChoice::Samples, false),
        counts(&[("app;main;burn", 3)])
    );
    assert_eq!(
        folded(&wall, ValueChoice::Cpu, false),
        counts(&[("app;main;burn", 30_303)])
    );
    assert_eq!(
        folded(&wall, ValueChoice::OffCpu, false),
        counts(&[("app;main;wait;schedule_[k]", 60_002)])
    );
    assert_eq!(
        folded(&wall, ValueChoice::Wall, false),
        folded(&wall, ValueChoice::Auto, false)
    );
    let small = testdata::small();
    assert_eq!(
        folded(&small, ValueChoice::Cpu, false)
            .values()
            .sum::<u64>(),
        42 * 10_101,
        "42 samples of 10,101,010 ns, line by line"
    );
    let options = FoldOptions {
        value: ValueChoice::OffCpu,
        ..FoldOptions::default()
    };
    let error = fold(&small, &options).unwrap_err().to_string();
    assert!(error.contains("no off-cpu time"), "{error}");
    assert!(error.contains("samples/count, cpu/nanoseconds"), "{error}");
}

/// pprof gets one sample type per value type (`off_cpu`/`nanoseconds` among them, as `go tool
/// pprof -sample_index=off_cpu` needs) and reads back the same types and values, so `report`
/// folds the file exactly as the capture folded.
#[test]
fn values_round_trip_through_pprof() {
    let wall = testdata::wall();
    let mut gzip = Vec::new();
    write_pprof(&wall, &mut gzip).expect("pprof");
    let message = {
        use prost::Message;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut bytes)
            .expect("gunzip");
        crate::pprof::Profile::decode(&bytes[..]).expect("protobuf")
    };
    let string = |i: i64| message.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = message
        .sample_type
        .iter()
        .map(|t| (string(t.r#type), string(t.unit)))
        .collect();
    assert_eq!(types, [values::SAMPLES, values::CPU, values::OFF_CPU]);

    let read = crate::input::parse_profile(&gzip, "wall.pb.gz").expect("read back");
    assert_eq!(read.value_types, wall.value_types);
    assert_eq!(read.samples, wall.samples);
    for value in [ValueChoice::Auto, ValueChoice::Samples, ValueChoice::OffCpu] {
        for per_thread in [false, true] {
            assert_eq!(
                folded(&read, value, per_thread),
                folded(&wall, value, per_thread)
            );
        }
    }
}
