//! Attacks on `emberprof report` through the profile file (issue 19, defect 8): a tiny pprof whose
//! stacks expand to gigabytes of folded text, and a gzip bomb of empty samples. The file is the
//! attacker's; whoever runs `report` on it (root, a CI job) must get one error line, quickly, with
//! bounded memory: peak RSS of the emberprof process from `wait4`, under an address-space limit so
//! that a regression fails the test instead of exhausting the machine.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

/// Peak RSS allowed for refusing an attack: a bound on the attack, not a speed target.
const MAX_RSS_BYTES: u64 = 300 << 20;
/// Address space of the child: past it an allocation fails (the unfixed reader asked for 18 GiB).
const ADDRESS_SPACE_LIMIT: u64 = 3 << 30;
/// A report still running after this is hung (refusing takes well under a second of CPU).
const HANG: Duration = Duration::from_secs(120);

/// One sample type (`samples`/`count`), and function 1 named by a 60-byte string.
fn header() -> Vec<u8> {
    let strings = ["", "samples", "count", &"f".repeat(60)];
    let mut out = field(1, &[number(1, 1), number(2, 2)].concat());
    for text in strings {
        out.extend(field(6, text.as_bytes()));
    }
    out.extend(field(5, &[number(1, 1), number(2, 3)].concat()));
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Runs `emberprof report FILE -o -` (folded stacks to stdout, counted and dropped).
fn report(file: &Path) -> Finished {
    let mut command = emberprof();
    command.args(["report", file.to_str().expect("utf-8 path"), "-o", "-"]);
    run_bounded(&mut command, ADDRESS_SPACE_LIMIT, HANG, || {})
}

/// `report` refused the file: an error exit, one line on stderr that says `wanted`, no output,
/// bounded memory.
fn assert_refused(report: &Finished, wanted: &str) {
    eprintln!(
        "report: {}, peak RSS {} MiB, {} bytes out; stderr: {}",
        report.status,
        report.peak_rss_bytes >> 20,
        report.stdout_bytes,
        report.stderr
    );
    assert_eq!(
        report.status.code(),
        Some(1),
        "an error exit, not success, a signal or an abort; stderr:\n{}",
        report.stderr
    );
    let lines: Vec<&str> = report.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("emberprof: ") && lines[0].contains(wanted),
        "one error line saying {wanted:?}, got:\n{}",
        report.stderr
    );
    assert_eq!(report.stdout_bytes, 0, "nothing written");
    assert!(
        report.peak_rss_bytes <= MAX_RSS_BYTES,
        "peak RSS {} MiB, bound {} MiB",
        report.peak_rss_bytes >> 20,
        MAX_RSS_BYTES >> 20
    );
}

/// A few hundred bytes of gzip: one location with 1,000 inlined lines named 4,096 times by each of
/// a few distinct samples (the unfixed `report` wrote 245 MB of folded text per sample).
#[test]
fn report_refuses_a_pprof_that_expands_to_gigabytes() {
    let dir = scratch();
    let mut message = header();
    let line = field(4, &number(1, 1));
    message.extend(field(4, &[number(1, 1), line.repeat(1000)].concat()));
    for outer in 1..=4u64 {
        // A distinct outer location each: distinct stacks, distinct folded lines.
        message.extend(field(
            4,
            &[number(1, 1 + outer), field(4, &number(1, 1))].concat(),
        ));
        let ids = [vec![1u8; 4000], varint(1 + outer)].concat();
        message.extend(field(2, &[field(1, &ids), field(2, &[1])].concat()));
    }
    let path = dir.path().join("inline.pb.gz");
    let bytes = gzip(&message);
    std::fs::write(&path, &bytes).expect("write the attack");
    eprintln!("attack file: {} bytes", bytes.len());
    assert_refused(&report(&path), "more than 256 inlined lines");

    // Within the per-location cap, the budget is total: 256 lines, several samples.
    let mut message = header();
    message.extend(field(4, &[number(1, 1), line.repeat(256)].concat()));
    for outer in 1..=8u64 {
        message.extend(field(
            4,
            &[number(1, 1 + outer), field(4, &number(1, 1))].concat(),
        ));
        let ids = [vec![1u8; 4000], varint(1 + outer)].concat();
        message.extend(field(2, &[field(1, &ids), field(2, &[1])].concat()));
    }
    std::fs::write(&path, gzip(&message)).expect("write the attack");
    assert_refused(&report(&path), "bytes of folded stacks; not read");
}

/// A 1 MB `.pb.gz` that inflates to 1,023 MiB of empty samples (the unfixed `report` aborted
/// asking for 18 GiB): gzip members of 1 MiB each, concatenated, as `gzip` itself reads them.
#[test]
fn report_refuses_a_gzip_bomb_of_empty_samples() {
    let dir = scratch();
    let mebibyte = [0x12u8, 0x00].repeat(1 << 19);
    let member = gzip(&mebibyte);
    let mut bomb = gzip(&[header(), mebibyte].concat());
    for _ in 1..1023 {
        bomb.extend_from_slice(&member);
    }
    let path = dir.path().join("empty.pb.gz");
    std::fs::write(&path, &bomb).expect("write the attack");
    eprintln!("attack file: {} bytes", bomb.len());
    assert_refused(&report(&path), "more than 2097152 samples; not read");
}
