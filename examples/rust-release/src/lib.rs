//! The work shared by the binaries: `drive -> stage -> hot`, each a real (never inlined) function,
//! so the chain is known: `hot` spins on a multiply-add, `stage` calls it in rounds, `drive` runs
//! rounds until the deadline.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Seconds to run, from the first argument (default 5).
pub fn seconds_arg() -> Duration {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(seconds.max(0.0))
}

/// Runs rounds of work until `duration` has passed; returns a value so nothing is optimised away.
#[inline(never)]
pub fn drive(duration: Duration) -> u64 {
    let end = Instant::now() + duration;
    let mut acc = 0u64;
    while Instant::now() < end {
        acc = acc.wrapping_add(stage(black_box(acc)));
    }
    acc
}

#[inline(never)]
pub fn stage(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..8 {
        x = hot(black_box(x));
    }
    x
}

#[inline(never)]
pub fn hot(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..100_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
    x
}
