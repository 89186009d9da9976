#!/usr/bin/env bash
# Whole-run costs of `emberprof record --all` against `perf record -a -g` on the same load:
# the profiler's own CPU time and peak RSS while recording, and the time from the end of sampling to a
# flame-graph-ready result (emberprof: its SVG; perf: `perf script` output, before any collapsing).
# emberprof symbolizes while it records, so its one process does what perf splits between `perf record`
# and `perf script`: compare its RSS with both.
#
# usage: sudo benches/record-vs-perf.sh [SECONDS] [HZ]      (defaults: 10 s, 999 Hz)
# needs: root, a release build (cargo build --release), perf (Debian: linux-perf), GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
hz=${2:-999}
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

[ -x $bin/emberprof ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

load() { # both CPUs busy: a syscall loop and two burning threads
  $bin/run-example syscalls $((seconds + 5)) & $bin/run-example threads $((seconds + 5)) &
  sleep 0.3
}
field() { grep -m1 "$1" "$2" | sed 's/.*: //'; }

load
/usr/bin/time -v $bin/emberprof record --all -d "$seconds" -F "$hz" -o "$work/e.svg" 2>"$work/e.time"
e_summary=$(grep '^emberprof:' "$work/e.time" | tail -1)
e_user=$(field "User time" "$work/e.time"); e_sys=$(field "System time" "$work/e.time")
e_rss=$(field "Maximum resident" "$work/e.time")
e_post=$(echo "$e_summary" | sed -n 's/.*output written \([0-9.]*\) s after.*/\1/p')
wait

printf '%-34s %12s %12s\n' "" "emberprof" "perf"
if command -v perf >/dev/null; then
  load
  /usr/bin/time -v perf record -a -g -F "$hz" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/p.time" >/dev/null
  p_user=$(field "User time" "$work/p.time"); p_sys=$(field "System time" "$work/p.time")
  p_rss=$(field "Maximum resident" "$work/p.time")
  start=$(date +%s.%N)
  /usr/bin/time -v perf script -i "$work/perf.data" >"$work/perf.script" 2>"$work/s.time"
  p_post=$(echo "$(date +%s.%N) - $start" | bc)
  s_rss=$(field "Maximum resident" "$work/s.time")
  wait
else
  p_user=-; p_sys=-; p_rss=-; p_post=-; s_rss=-
  echo "(perf not installed: apt-get install linux-perf)"
fi
printf '%-34s %12s %12s\n' "CPU user+sys while recording (s)" "$(echo "$e_user + $e_sys" | bc)" "$( [ "$p_user" = - ] && echo - || echo "$p_user + $p_sys" | bc)"
printf '%-34s %12s %12s\n' "peak RSS while recording (KiB)" "$e_rss" "$p_rss"
printf '%-34s %12s %12s\n' "peak RSS symbolizing (KiB)" "(same)" "$s_rss"
printf '%-34s %12s %12s\n' "end of sampling to output (s)" "$e_post" "$p_post"
echo "emberprof summary: ${e_summary#emberprof: }"
