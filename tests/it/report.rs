//! pprof output, `emberprof report` and `emberprof diff` (issue 10), end to end: profiles written by
//! `record` are decoded with an independent pprof reader (Google's protobuf runtime for Python with
//! classes that protoc generates from the vendored profile.proto, `tests/it/pprof_tool.py`), read
//! back by `report`, and compared by `diff`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Runs the independent pprof tool (see the module comment): protoc generates its Python classes
/// into `dir` first. Fails with instructions when protoc or python3-protobuf are missing.
fn pprof_tool(dir: &Path, args: &[&str]) -> String {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let pb2 = dir.join("pb2");
    if !pb2.join("profile_pb2.py").exists() {
        std::fs::create_dir_all(&pb2).expect("pb2 dir");
        let status = Command::new("protoc")
            .arg(format!("--proto_path={}", proto_dir.display()))
            .arg(format!("--python_out={}", pb2.display()))
            .arg("profile.proto")
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run protoc ({e}): apt-get install protobuf-compiler python3-protobuf (.ci/run does)")
            });
        assert!(status.success(), "protoc failed");
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/it/pprof_tool.py");
    let output = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(&pb2)
        .args(args)
        .output()
        .expect("run /usr/bin/python3");
    assert!(
        output.status.success(),
        "pprof_tool.py {args:?} failed (needs python3-protobuf: apt-get install python3-protobuf):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn report(args: &[&str]) -> String {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    String::from_utf8(run_ok(&all).stdout).expect("utf-8")
}

/// The `y` of the rectangle of the graph's root (`all`), from inferno's SVG.
fn root_y(svg: &str) -> f64 {
    let at = svg.find("<title>all (").expect("root frame in the SVG");
    let rect = &svg[at..];
    let y = rect.find(" y=\"").expect("y of the root frame") + 4;
    rect[y..]
        .split('"')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// One capture of burn and syscalls written as folded stacks and as pprof: the pprof decodes with
/// the independent reader to exactly the folded stacks (same stacks, names, counts); `report` gives
/// them back from the pprof, renders every function of the folded file into an SVG, and its
/// --reverse, --grep, --no-kernel and --per-thread options do what they say.
#[test]
fn pprof_matches_folded_and_report_renders_it() {
    let dir = scratch();
    let folded_path = out_path(&dir, "capture.folded");
    let pprof_path = out_path(&dir, "capture.pb.gz");
    let (folded, pprof) = (folded_path.to_str().unwrap(), pprof_path.to_str().unwrap());
    {
        let _guard = kernel_test();
        let burn = Workload::start("burn", &[UNTIL_KILLED]);
        let syscalls = Workload::start("syscalls", &[UNTIL_KILLED]);
        let pids = format!("{},{}", burn.pid(), syscalls.pid());
        run_ok(&[
            "record", "-p", &pids, "-d", "2", "-F", "499", "-o", folded, "-o", pprof,
        ]);
    }
    let recorded = std::fs::read_to_string(&folded_path).expect("folded output");
    let stacks = parse_folded(&recorded);
    assert!(total(&stacks, |_| true) > 200, "{}", describe(&stacks));
    assert!(
        recorded.contains("_[k]"),
        "kernel frames expected:\n{recorded}"
    );

    // The independent decoder sees the same stacks.
    let decoded = pprof_tool(dir.path(), &["decode", pprof]);
    assert_eq!(
        decoded, recorded,
        "pprof decoded by Python protobuf vs folded output"
    );

    // report: pprof back to folded, byte for byte.
    assert_eq!(report(&[pprof, "-o", "-"]), recorded);
    assert_eq!(report(&[pprof]), recorded, "folded to stdout by default");

    // folded -> SVG with every function.
    let svg_path = out_path(&dir, "from-folded.svg");
    report(&[folded, "-o", svg_path.to_str().unwrap(), "--min-width", "0"]);
    let svg = std::fs::read_to_string(&svg_path).expect("svg");
    for frame in stacks.iter().flat_map(|s| &s.frames) {
        let name = frame.trim_end_matches("_[k]").trim_end_matches("_[i]");
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(svg.contains(&escaped), "{name} missing from the SVG");
    }

    // --reverse: an icicle graph, root at the top instead of the bottom.
    let icicle_path = out_path(&dir, "icicle.svg");
    report(&[
        pprof,
        "-o",
        icicle_path.to_str().unwrap(),
        "--reverse",
        "--colors",
        "hot",
    ]);
    let icicle = std::fs::read_to_string(&icicle_path).expect("svg");
    let normal_path = out_path(&dir, "normal.svg");
    report(&[pprof, "-o", normal_path.to_str().unwrap()]);
    let normal = std::fs::read_to_string(&normal_path).expect("svg");
    assert!(
        root_y(&icicle) < root_y(&normal),
        "--reverse puts the root on top: y {} vs {}",
        root_y(&icicle),
        root_y(&normal)
    );

    // --grep: only stacks through a matching frame, with their counts unchanged.
    let grepped = parse_folded(&report(&[pprof, "--grep", "^burn_b$"]));
    assert!(!grepped.is_empty());
    assert!(
        grepped
            .iter()
            .all(|s| s.frames.iter().any(|f| f == "burn_b")),
        "{}",
        describe(&grepped)
    );
    assert_eq!(
        total(&grepped, |_| true),
        total(&stacks, |s| s.frames.iter().any(|f| f == "burn_b"))
    );

    // --no-kernel: the same samples, no kernel frame.
    let user_only = parse_folded(&report(&[pprof, "--no-kernel"]));
    assert!(user_only
        .iter()
        .all(|s| s.frames.iter().all(|f| !f.ends_with("_[k]"))));
    assert_eq!(total(&user_only, |_| true), total(&stacks, |_| true));

    // --per-thread: roots are thread-PID/TID, from the pprof labels.
    let threads = parse_folded(&report(&[pprof, "--per-thread"]));
    let root = regex::Regex::new(r"^(burn|syscalls)-\d+/\d+$").unwrap();
    assert!(
        threads.iter().all(|s| root.is_match(&s.frames[0])),
        "{}",
        describe(&threads)
    );
    assert_eq!(total(&threads, |_| true), total(&stacks, |_| true));

    // A folded file cannot be split per thread: a clear error.
    let output = emberprof()
        .args(["report", folded, "--per-thread"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--per-thread needs"));
}

/// A pprof profile from another tool (Go-style: no labels, inlined lines, an unsymbolized address
/// in a mapping that does not start at 0), gzip-compressed or not, reads as pprof says.
#[test]
fn report_reads_a_foreign_pprof() {
    let dir = scratch();
    for name in ["go.pb.gz", "go.pb"] {
        let path = out_path(&dir, name);
        pprof_tool(dir.path(), &["foreign", path.to_str().unwrap()]);
        assert_eq!(
            report(&[path.to_str().unwrap()]),
            "runtime.main;main.main 3\n\
             runtime.main;main.main;main.work;main.helper_[i] 7\n\
             runtime.main;main.main;server+0x1040 1\n",
            "{name}"
        );
    }
}

/// `--value` picks the value a foreign pprof is folded by: Go's CPU time (samples × 10 ms) in
/// microseconds; a value the profile does not have is one clear error naming the file, for
/// report and diff alike.
#[test]
fn report_value_picks_the_sample_type() {
    let dir = scratch();
    let path = out_path(&dir, "go.pb.gz");
    pprof_tool(dir.path(), &["foreign", path.to_str().unwrap()]);
    let path = path.to_str().unwrap();
    assert_eq!(
        report(&[path, "--value", "cpu"]),
        "runtime.main;main.main 30000\n\
         runtime.main;main.main;main.work;main.helper_[i] 70000\n\
         runtime.main;main.main;server+0x1040 10000\n"
    );
    assert_eq!(report(&[path, "--value", "samples"]), report(&[path]));
    for args in [
        vec!["report", path, "--value", "off-cpu"],
        vec!["diff", path, path, "--value", "wall"],
    ] {
        let output = emberprof().args(&args).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.contains("go.pb.gz") && stderr.contains("has no off-cpu time"),
            "{args:?}: {stderr}"
        );
    }
}

/// Two captures of burn with opposite splits (75/25 then 25/75), one saved as folded stacks and
/// one as pprof: the diff-folded numbers say burn_a shrank and burn_b grew, and the differential
/// flame graph colours burn_a blue and burn_b red.
#[test]
fn diff_marks_grown_and_shrunk_functions() {
    let dir = scratch();
    let before = out_path(&dir, "before.folded");
    let after = out_path(&dir, "after.pb.gz");
    {
        let _guard = kernel_test();
        for (split, path) in [(["3", "1"], &before), (["1", "3"], &after)] {
            let burn = example("burn");
            run_ok(&[
                "record",
                "-F",
                "499",
                "-o",
                path.to_str().unwrap(),
                "--",
                &burn,
                "--split",
                split[0],
                split[1],
                "2",
            ]);
        }
    }
    let (before, after) = (before.to_str().unwrap(), after.to_str().unwrap());
    let diff_path = out_path(&dir, "diff.folded");
    run_ok(&["diff", before, after, "-o", diff_path.to_str().unwrap()]);
    let text = std::fs::read_to_string(&diff_path).expect("diff");
    let sums = |function: &str| {
        text.lines()
            .filter(|l| {
                l.split(' ')
                    .next()
                    .is_some_and(|s| s.split(';').any(|f| f == function))
            })
            .map(|l| {
                let mut numbers = l.rsplit(' ').map(|n| n.parse::<u64>().expect("count"));
                let after = numbers.next().unwrap();
                let before = numbers.next().unwrap();
                (before, after)
            })
            .fold((0, 0), |(b, a), (b2, a2)| (b + b2, a + a2))
    };
    let (a_before, a_after) = sums("burn_a");
    let (b_before, b_after) = sums("burn_b");
    assert!(
        a_before > 2 * a_after,
        "burn_a shrank: {a_before} -> {a_after}\n{text}"
    );
    assert!(
        b_after > 2 * b_before,
        "burn_b grew: {b_before} -> {b_after}\n{text}"
    );

    let svg_path = out_path(&dir, "diff.svg");
    run_ok(&["diff", before, after, "-o", svg_path.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&svg_path).expect("svg");
    assert!(
        svg.contains("scaled to AFTER"),
        "the title says how it was normalised"
    );
    // inferno colours a frame by the change in its own (self) samples: here the `spin` called by
    // each function, the widest `spin` within its caller's span (a sample taken in a kernel frame
    // right under the caller, as on a busy machine, puts that frame first, and `spin` after it).
    // Name, x and width in samples, colour.
    type SvgFrame = (String, u64, u64, (u32, u32, u32));
    let frames: Vec<SvgFrame> = svg
        .split("<title>")
        .skip(1)
        .filter_map(|part| {
            let name = part.split(" (").next()?.to_owned();
            let number = |attribute: &str| -> Option<u64> {
                part.split(attribute)
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            };
            let (x, width) = (number("fg:x=\"")?, number("fg:w=\"")?);
            let rgb: Vec<u32> = part
                .split("fill=\"rgb(")
                .nth(1)?
                .split(')')
                .next()?
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            Some((name, x, width, (*rgb.first()?, *rgb.get(1)?, *rgb.get(2)?)))
        })
        .collect();
    let callee_colour = |caller: &str| {
        let &(_, x, width, _) = frames
            .iter()
            .find(|(name, ..)| name == caller)
            .unwrap_or_else(|| panic!("{caller} in the SVG"));
        frames
            .iter()
            .filter(|(name, at, ..)| name == "spin" && (x..x + width).contains(at))
            .max_by_key(|(_, _, width, _)| *width)
            .map(|(.., rgb)| *rgb)
            .unwrap_or_else(|| panic!("spin under {caller} in the SVG"))
    };
    let (r, _, b) = callee_colour("burn_b");
    assert!(r == 255 && b < 255, "burn_b grew: red, not rgb({r},_,{b})");
    let (r, _, b) = callee_colour("burn_a");
    assert!(
        b == 255 && r < 255,
        "burn_a shrank: blue, not rgb({r},_,{b})"
    );
}

/// Bad input to report and diff: one clear line naming the file and the place, a failure status,
/// never a panic.
#[test]
fn bad_input_is_one_clear_error() {
    let dir = scratch();
    let good = out_path(&dir, "good.pb.gz");
    pprof_tool(dir.path(), &["foreign", good.to_str().unwrap()]);
    let bytes = std::fs::read(&good).unwrap();
    let deep: String = (0..1_000_000).map(|i| format!("f{i};")).collect::<String>() + "leaf 1\n";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.pb.gz",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated or corrupt gzip",
        ),
        ("garbage.pb.gz", vec![0x1f, 0x8b, 0, 1, 2, 3], "gzip"),
        (
            "random.bin",
            vec![0xff, 0x00, 0x13, 0x37, 0x80, 0x81, 0x01],
            "not a pprof profile",
        ),
        (
            "bad.folded",
            b"a;b 1\na;c 2\nno count here\n".to_vec(),
            "bad.folded:3",
        ),
        (
            "overflow.folded",
            b"a;b 18446744073709551615\na;c 1\n".to_vec(),
            "overflow.folded:2",
        ),
        (
            "big.folded",
            b"a;b 18446744073709551616\n".to_vec(),
            "larger than 2^64",
        ),
        ("deep.folded", deep.into_bytes(), "more than 4096 frames"),
    ];
    for (name, content, expected) in cases {
        let path = out_path(&dir, name);
        std::fs::write(&path, content).unwrap();
        for args in [
            vec!["report", path.to_str().unwrap()],
            vec!["diff", good.to_str().unwrap(), path.to_str().unwrap()],
        ] {
            let output = emberprof().args(&args).output().expect("run");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{args:?} succeeded");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
            assert!(stderr.contains(name), "{args:?} names the file: {stderr}");
            assert!(
                stderr.contains(expected),
                "{args:?}: {expected:?} in {stderr}"
            );
        }
    }
}

/// --format with several outputs is refused before sampling (several outputs of one capture are
/// checked in `pprof_matches_folded_and_report_renders_it`).
#[test]
fn format_with_several_outputs_is_refused() {
    let output = emberprof()
        .args([
            "record", "-a", "-o", "a.svg", "-o", "b.svg", "--format", "folded",
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--format applies to a single output"),
        "{stderr}"
    );
}
