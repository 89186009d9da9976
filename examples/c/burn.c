/*
 * main -> run -> {burn_a, burn_b}: burn_a does three times the work of burn_b, so about 75 % of the
 * CPU time is in burn_a and 25 % in burn_b. Both run the same loop, so the ratio holds whatever the
 * optimisation level. Each round's length varies pseudo-randomly (both functions scaled alike, so
 * the ratio is kept): a fixed-length round of about 1 ms would phase-lock with a 2 ms sampling period
 * and skew the sampled split far from 3:1 (seen: 4.6:1 at -F 499).
 *
 * usage: burn [SECONDS [EXIT_STATUS]]   (defaults: 5 s, exit 0)
 *        burn --split A B [SECONDS [EXIT_STATUS]]
 *                                        burn_a does A units of work per round and burn_b B
 *                                        (default 3 and 1); `--split 1 3` reverses the ratio
 *                                        (before/after captures for `emberprof diff`)
 *        burn --iterations N             fixed work: N rounds, then print the seconds it took
 *                                        (for overhead benchmarks)
 */
#include <stdio.h>
#include <string.h>

#include "common.h"

#define UNIT 200000

static volatile unsigned long sink;
static unsigned long units_a = 3, units_b = 1;

__attribute__((noinline)) static unsigned long spin(unsigned long iterations, unsigned long seed)
{
	unsigned long x = seed;
	for (unsigned long i = 0; i < iterations; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

/* Work per unit in the current round: UNIT/2 .. 3*UNIT/2, from a fixed-seed xorshift so that
 * `--iterations` stays the same amount of work on every run. */
static unsigned long round_unit = UNIT;

static void next_round(void)
{
	static unsigned long state = 0x9e3779b97f4a7c15UL;
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	round_unit = UNIT / 2 + state % UNIT;
}

__attribute__((noinline)) void burn_a(void) { sink += spin(units_a * round_unit, sink); }

__attribute__((noinline)) void burn_b(void) { sink += spin(units_b * round_unit, sink); }

__attribute__((noinline)) void run(double seconds)
{
	double end = now_seconds() + seconds;
	while (now_seconds() < end) {
		next_round();
		burn_a();
		burn_b();
	}
}

__attribute__((noinline)) void run_iterations(long iterations)
{
	for (long i = 0; i < iterations; i++) {
		next_round();
		burn_a();
		burn_b();
	}
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "--iterations") == 0) {
		double start = now_seconds();
		run_iterations(atol(argv[2]));
		printf("%.6f\n", now_seconds() - start);
		return 0;
	}
	if (argc > 3 && strcmp(argv[1], "--split") == 0) {
		units_a = strtoul(argv[2], NULL, 10);
		units_b = strtoul(argv[3], NULL, 10);
		/* The rest reads as without --split: [SECONDS [EXIT_STATUS]]. */
		argv[3] = argv[0];
		argv += 3;
		argc -= 3;
	}
	run(seconds_arg(argc, argv, 5));
	return argc > 2 ? atoi(argv[2]) : 0;
}
