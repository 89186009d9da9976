//! Unwinding throughput: user-stack snapshots of the frameless example workloads (taken with ptrace,
//! the same registers + stack copy the BPF program sends) are unwound repeatedly; prints samples per
//! second on one core. Target: at least 200,000 samples/s.
//!
//!     cargo bench -p emberprof-symbolizer --bench unwind

#[path = "../tests/it/capture.rs"]
mod capture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use emberprof_symbolizer::Symbolizer;

use capture::{snapshots, Workload};

const SNAPSHOTS_PER_WORKLOAD: usize = 200;
const STACK_COPY_BYTES: usize = 16384;
const MEASURE_FOR: Duration = Duration::from_secs(2);

fn main() {
    let workloads: Vec<Workload> = ["burn-nofp", "deep-nofp", "syscalls"]
        .into_iter()
        .map(Workload::start)
        .collect();
    let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
    let mut recorded = Vec::new();
    for workload in &workloads {
        symbolizer
            .process_seen(workload.key())
            .expect("process snapshot");
        recorded.extend(snapshots(
            workload.pid(),
            SNAPSHOTS_PER_WORKLOAD,
            STACK_COPY_BYTES,
        ));
    }
    let frames: usize = recorded
        .iter()
        .map(|s| {
            symbolizer
                .unwind(s.key(), s.registers, s.stack_copy())
                .frames
                .len()
        })
        .sum();
    let stack_bytes: usize = recorded.iter().map(|s| s.stack.len()).sum();
    println!(
        "{} snapshots, {:.1} frames and {:.1} KiB of stack each on average",
        recorded.len(),
        frames as f64 / recorded.len() as f64,
        stack_bytes as f64 / recorded.len() as f64 / 1024.0
    );

    // Warm: unwinders built and rule caches filled, as during a recording.
    let started = Instant::now();
    let mut unwound = 0u64;
    while started.elapsed() < MEASURE_FOR {
        for snapshot in &recorded {
            black_box(symbolizer.unwind(
                snapshot.key(),
                snapshot.registers,
                black_box(snapshot.stack_copy()),
            ));
        }
        unwound += recorded.len() as u64;
    }
    let per_second = unwound as f64 / started.elapsed().as_secs_f64();
    println!(
        "unwind (warm): {per_second:.0} samples/s ({:.2} µs per sample)",
        1e6 / per_second
    );

    // Cold: a new symbolizer per round, so every process's unwinder and every module's unwind
    // sections are set up again (the cost of a process's first samples).
    let started = Instant::now();
    let mut rounds = 0u32;
    while started.elapsed() < MEASURE_FOR {
        let mut fresh = Symbolizer::new(Default::default()).expect("symbolizer");
        for workload in &workloads {
            fresh
                .process_seen(workload.key())
                .expect("process snapshot");
        }
        for snapshot in &recorded {
            black_box(fresh.unwind(snapshot.key(), snapshot.registers, snapshot.stack_copy()));
        }
        rounds += 1;
    }
    println!(
        "setup + first unwind of {} snapshots in 3 processes (cold): {:.1} ms",
        recorded.len(),
        started.elapsed().as_secs_f64() * 1e3 / rounds as f64
    );
}
