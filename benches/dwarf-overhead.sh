#!/usr/bin/env bash
# DWARF-mode costs against perf's, on the frameless burn example doing a fixed amount of work:
#   1. overhead on the target: its run time with no profiler, under `emberprof record --unwind dwarf`,
#      and under `perf record --call-graph dwarf`, both at HZ with the same stack-copy size, in
#      alternating rounds (median of ROUNDS each);
#   2. post-processing: end of sampling to output for the same kind of capture — emberprof's own
#      figure (SVG written) against `perf script | inferno-collapse-perf` (folded text only).
#
# usage: sudo benches/dwarf-overhead.sh [ROUNDS] [HZ] [STACK_BYTES]   (defaults: 5, 999, 16384)
# needs: root, `cargo build --release`, perf (Debian: linux-perf), bc; inferno-collapse-perf is
# installed into target/bench-tools with cargo the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
hz=${2:-999}
stack=${3:-16384}
iterations=30000
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -x $bin/emberprof ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }
collapse=$(command -v inferno-collapse-perf || true)
if [ -z "$collapse" ]; then
  collapse=target/bench-tools/bin/inferno-collapse-perf
  [ -x "$collapse" ] || cargo install --quiet --locked --root target/bench-tools inferno >&2
fi
workload=("$bin/run-example" burn-nofp --iterations $iterations)

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: >"$work/none"; : >"$work/emberprof"; : >"$work/perf"; : >"$work/e_post"; : >"$work/p_post"
for round in $(seq "$rounds"); do
  "${workload[@]}" >>"$work/none"

  $bin/emberprof record -q --unwind dwarf --stack-size "$stack" -F "$hz" -o "$work/e.svg" -- "${workload[@]}" >>"$work/emberprof"
  # The post-processing figure, from a run that prints its summary.
  $bin/emberprof record --unwind dwarf --stack-size "$stack" -F "$hz" -o "$work/e.svg" -- "${workload[@]}" 2>&1 >/dev/null |
    sed -n 's/.*output written \([0-9.]*\) s after.*/\1/p' >>"$work/e_post"

  perf record -q --call-graph "dwarf,$stack" -F "$hz" -o "$work/perf.data" -- "${workload[@]}" 2>/dev/null >>"$work/perf"
  start=$(date +%s.%N)
  perf script -i "$work/perf.data" 2>/dev/null | "$collapse" >"$work/perf.folded"
  echo "$(date +%s.%N) - $start" | bc >>"$work/p_post"
  echo "round $round/$rounds done" >&2
done

none=$(median <"$work/none"); e=$(median <"$work/emberprof"); p=$(median <"$work/perf")
pct() { echo "scale=1; ($1 - $none) * 100 / $none" | bc; }
printf 'target run time, median of %s (%s iterations of burn-nofp, %s Hz, %s-byte stack copies)\n' "$rounds" "$iterations" "$hz" "$stack"
printf '  %-34s %8.3f s\n' "no profiler" "$none"
printf '  %-34s %8.3f s  (+%s %%)\n' "emberprof --unwind dwarf" "$e" "$(pct "$e")"
printf '  %-34s %8.3f s  (+%s %%)\n' "perf record --call-graph dwarf" "$p" "$(pct "$p")"
e_post=$(median <"$work/e_post"); p_post=$(median <"$work/p_post")
printf 'end of sampling to output, median\n'
printf '  %-34s %8.3f s\n' "emberprof (SVG written)" "$e_post"
printf '  %-34s %8.3f s  (%sx emberprof)\n' "perf script | inferno-collapse-perf" "$p_post" "$(echo "scale=0; $p_post / $e_post" | bc)"
