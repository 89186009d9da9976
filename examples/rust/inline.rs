//! Inlined frames: main -> run -> hot_loop, which spends nearly all its time in `mix_step`, inlined
//! into it, so only the DWARF inline records (`DW_TAG_inlined_subroutine`) name it. `generic_work`
//! adds a generic function to the mangled names. Built by build.rs twice: legacy mangling
//! (`rust-inline`, `_ZN..17h<hash>E`) and v0 mangling (`rust-inline-v0`, `_R..`).
//!
//! usage: rust-inline [SECONDS]   (default 5 s)

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// A 64-bit finalizer (murmur3's fmix64) plus a rotate: enough dependent multiplies that the loop
/// around it costs next to nothing.
#[inline(always)]
fn mix_step(state: u64, round: u64) -> u64 {
    let mut x = state ^ round;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x.rotate_left((round & 63) as u32)
}

#[inline(never)]
fn hot_loop(seed: u64, rounds: u64) -> u64 {
    let mut state = seed;
    for round in 0..rounds {
        state = mix_step(state, round);
    }
    state
}

#[inline(never)]
fn generic_work<T: Copy + Into<u64>>(values: &[T]) -> u64 {
    values
        .iter()
        .fold(0, |acc: u64, &v| acc.rotate_left(7) ^ v.into())
}

#[inline(never)]
fn run(seconds: Duration) -> u64 {
    let values: Vec<u32> = (0..1024).collect();
    let end = Instant::now() + seconds;
    let mut state = 1;
    while Instant::now() < end {
        state = hot_loop(black_box(state), black_box(200_000));
        state ^= generic_work(black_box(values.as_slice()));
    }
    state
}

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let seconds = match arg.as_deref().map(str::parse::<f64>) {
        None => Duration::from_secs(5),
        Some(Ok(s)) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
        _ => {
            eprintln!("usage: rust-inline [SECONDS]");
            return ExitCode::from(2);
        }
    };
    black_box(run(seconds));
    ExitCode::SUCCESS
}
