//! What the profiles of the reference workloads must show: the burn example's 3:1 split and whole
//! `main;run;burn_*` chains, and named kernel frames.

use super::folded::*;

/// Share of burn samples whose stack must read main -> run -> burn_*.
const MIN_FULL_STACK_SHARE: f64 = 0.90;

/// burn_a's expected share of the burn samples: it does three times burn_b's work.
const BURN_A_SHARE: f64 = 0.75;

/// Fewest burn samples for the split to say anything: the check below then still tells 3:1 from
/// 2:1 (a share of 0.67) or 5:1 (0.83). Fewer mean the target hardly ran (a machine so busy that it
/// got a tenth of a CPU), and the test says so rather than judge the split.
const MIN_BURN_SAMPLES: u64 = 400;

/// The band on burn_a's share when samples are plenty: about ±15 % on the 3:1 ratio.
const SHARE_BAND: f64 = 0.032;

/// Standard deviations of binomial sampling noise the share may stray by: a false failure about
/// once in 16,000 checks. The band is the wider of this and [`SHARE_BAND`], so it follows the
/// samples the target's CPU time gave (fewer on a busy machine), not a count fixed for a quiet one:
/// ±0.027 at 4,000 samples, ±0.043 at 1,600, ±0.087 at 400.
const SHARE_SIGMAS: f64 = 4.0;

pub fn is_burn(stack: &FoldedStack) -> bool {
    stack.has_frame("burn_a") || stack.has_frame("burn_b")
}

/// burn_a / burn_b, in samples.
pub fn burn_ratio(stacks: &[FoldedStack]) -> f64 {
    total(stacks, |s| s.has_frame("burn_a")) as f64
        / total(stacks, |s| s.has_frame("burn_b")) as f64
}

/// Checks the burn workload's stacks: at least [`MIN_BURN_SAMPLES`], the 3:1 split within the
/// sampling noise its sample count allows, and main;run;burn_* as consecutive frames
/// ([`assert_burn_stacks`]). For recordings that run until the target has had its CPU time: one of
/// a fixed duration may get too few samples on a busy machine.
pub fn assert_burn_profile(stacks: &[FoldedStack]) {
    let a = total(stacks, |s| s.has_frame("burn_a"));
    let b = total(stacks, |s| s.has_frame("burn_b"));
    let n = a + b;
    assert!(
        n >= MIN_BURN_SAMPLES,
        "only {a} + {b} burn_a + burn_b samples, too few to judge the 3:1 split (the target had \
         too little CPU time: a busy machine, or samples lost?):\n{}",
        describe(stacks)
    );
    let share = a as f64 / n as f64;
    let noise = (BURN_A_SHARE * (1.0 - BURN_A_SHARE) / n as f64).sqrt();
    let band = SHARE_BAND.max(SHARE_SIGMAS * noise);
    assert!(
        (share - BURN_A_SHARE).abs() <= band,
        "burn_a/burn_b = {a}/{b} = {:.2}: burn_a has {:.1} % of the samples, want {:.0} ± {:.1} %:\n{}",
        a as f64 / b.max(1) as f64,
        share * 100.0,
        BURN_A_SHARE * 100.0,
        band * 100.0,
        describe(stacks)
    );

    assert_burn_stacks(stacks);
}

/// Checks that the burn workload's stacks read main;run;burn_* as consecutive frames (in
/// [`MIN_FULL_STACK_SHARE`] of its samples in burn_*), whatever their number.
pub fn assert_burn_stacks(stacks: &[FoldedStack]) {
    let burn = total(stacks, is_burn);
    assert!(
        burn > 0,
        "no samples in burn_a or burn_b:\n{}",
        describe(stacks)
    );
    let full = total(stacks, |s| {
        has_consecutive(&s.frames, &["main", "run", "burn_a"])
            || has_consecutive(&s.frames, &["main", "run", "burn_b"])
    });
    assert!(
        full as f64 >= burn as f64 * MIN_FULL_STACK_SHARE,
        "only {full}/{burn} burn samples have main;run;burn_*:\n{}",
        describe(stacks)
    );
}

/// Most kernel frames, as a share of all kernel frames sampled, that may be left `[unknown]_[k]`.
const MAX_UNKNOWN_KERNEL_SHARE: f64 = 0.05;

/// Kernel frames are named: fewer than [`MAX_UNKNOWN_KERNEL_SHARE`] of them are `[unknown]_[k]`.
pub fn assert_kernel_frames_named(stacks: &[FoldedStack]) {
    let kernel_frames = |s: &FoldedStack, unknown: bool| {
        s.count
            * s.frames
                .iter()
                .filter(|f| f.ends_with("_[k]") && (!unknown || *f == "[unknown]_[k]"))
                .count() as u64
    };
    let all: u64 = stacks.iter().map(|s| kernel_frames(s, false)).sum();
    let unknown: u64 = stacks.iter().map(|s| kernel_frames(s, true)).sum();
    assert!(all > 0, "no kernel frames:\n{}", describe(stacks));
    assert!(
        unknown as f64 <= all as f64 * MAX_UNKNOWN_KERNEL_SHARE,
        "{unknown} of {all} sampled kernel frames are [unknown]_[k]:\n{}",
        describe(stacks)
    );
}
