//! `--max-profile-size`: what the profile itself holds while recording is bounded in total (issue
//! 19: every resource a profiled process can make emberprof spend has a budget). A program that
//! makes a new stack for nearly every sample (random paths through 16 functions, 12 deep) grew the
//! profile for as long as it ran; the attacker is uid 65534 through `setpriv`, emberprof records
//! as root.

use crate::support::*;

/// Sixteen functions; each calls the one its next four bits of `path` name, twelve deep, and the
/// last spins a little: about 2^48 distinct stacks, a new one every ~20 µs. Not tail calls
/// (`sink++` after the call), so each is a frame of its own.
const RANDOM_PATHS_C: &str = r#"
#include <stdlib.h>
#include <time.h>
static volatile unsigned long sink;
typedef void (*step)(unsigned, unsigned long);
static step steps[16];
#define STEP(n) __attribute__((noinline)) void step##n(unsigned depth, unsigned long path) { \
    if (depth == 0) { for (int i = 0; i < 20000; i++) sink += i; return; } \
    steps[path & 15](depth - 1, path >> 4); sink++; }
STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)
int main(int argc, char **argv) {
    step all[16] = { step0, step1, step2, step3, step4, step5, step6, step7,
                     step8, step9, step10, step11, step12, step13, step14, step15 };
    for (int i = 0; i < 16; i++) steps[i] = all[i];
    time_t end = time(0) + atoi(argv[1]);
    unsigned long seed = 1;
    while (time(0) < end) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        step0(12, seed >> 8);
    }
    return 0;
}
"#;

/// The profile's budget in this test: some thousand distinct stacks of this program.
const BUDGET: u64 = 256 << 10;

/// Past the budget, the program's stacks are cut where they leave what the profile holds (the
/// `[over budget]` frame, under the program's own outer frames) and its samples merge: the folded
/// output has at most the budget's worth of lines, yet every sample the summary counts, and the
/// summary says how many were cut.
#[test]
fn endless_distinct_stacks_stay_within_the_profile_budget() {
    let _kernel = kernel_test();
    let dir = attacker_dir();
    compile(&dir.path().join("paths"), RANDOM_PATHS_C, &[]);
    let budget = BUDGET.to_string();
    let (out, args) = attack_args(
        dir.path(),
        999,
        &["--max-profile-size", &budget],
        "./paths 6",
    );
    let recording = record_attack("endless distinct stacks", &args);
    let stacks = read_folded(&out);
    let samples = summary_samples(&recording.stderr);
    assert_eq!(
        all_samples(&stacks),
        samples,
        "every sample is in the output, cut or not"
    );
    assert!(
        samples > 2_000,
        "too few samples to make the attack: {}",
        recording.stderr
    );
    let cut = total(&stacks, |s| s.has_frame("[over budget]"));
    assert!(
        cut * 3 > samples,
        "the program made new stacks for most samples, past the budget from the first seconds: \
         {cut} of {samples} samples cut\n{}",
        describe(&stacks)
    );
    assert!(
        recording.stderr.contains("past --max-profile-size"),
        "the summary does not say the budget cut stacks:\n{}",
        recording.stderr
    );
    // Each sample line holds at least a sample (128 bytes as the budget counts them) and a node
    // of its own; a few stacks past the budget may be stored whole, an eighth of it.
    let most_lines = (BUDGET + BUDGET / 8) / 128;
    assert!(
        (stacks.len() as u64) <= most_lines,
        "{} distinct stacks, more than the budget holds ({most_lines})",
        stacks.len()
    );
    // Cut stacks keep the frames the profile held: the program's own outer frames.
    let cut_under_main = total(&stacks, |s| {
        s.has_frame("[over budget]") && has_in_order(&s.frames, &["paths", "main"])
    });
    assert!(
        cut_under_main * 10 >= cut * 9,
        "{cut_under_main} of {cut} cut samples keep main above the cut:\n{}",
        describe(&stacks)
    );
}
