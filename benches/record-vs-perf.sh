#!/usr/bin/env bash
# Whole-run costs of `emberprof record --all` against `perf record -a -g` on the same load: the
# profiler's own CPU time and peak RSS while recording, and the time from the end of sampling to a
# flame-graph-ready result (emberprof: its SVG; perf: `perf script` output, before any collapsing).
# emberprof symbolizes while it records, so its one process does what perf splits between
# `perf record` and `perf script`: compare its RSS with both. emberprof runs twice: with
# `--unwind fp` (what `perf -g` does) and with the default `--unwind auto` (DWARF for frameless code),
# then a third time with `--backend perf` (perf_event ring buffers, the backend a user without
# privileges gets; `auto` unwinding, so every sample carries a stack copy).
#
# usage: sudo benches/record-vs-perf.sh [SECONDS] [HZ]      (defaults: 10 s, 999 Hz)
# needs: root, a release build (cargo build --release), perf (Debian: linux-perf), GNU time, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
hz=${2:-999}
bin=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

[ -x $bin/emberprof ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }

load() { # both CPUs busy: a syscall loop and two burning threads
  $bin/run-example syscalls $((seconds + 5)) & $bin/run-example threads $((seconds + 5)) &
  sleep 0.3
}
field() { grep -m1 "$1" "$2" | sed 's/.*: //'; }
cpu() { echo "$(field "User time" "$1") + $(field "System time" "$1")" | bc; }

summary=()
for mode in fp auto perf; do
  case $mode in
    perf) options=(--backend perf) ;;
    *) options=(--backend bpf --unwind "$mode") ;;
  esac
  load
  /usr/bin/time -v $bin/emberprof record --all "${options[@]}" -d "$seconds" -F "$hz" -o "$work/e.svg" 2>"$work/$mode.time"
  wait
  summary+=("$(grep '^emberprof:' "$work/$mode.time" | tail -1)")
done

load
/usr/bin/time -v perf record -a -g -F "$hz" -o "$work/perf.data" -- sleep "$seconds" 2>"$work/p.time" >/dev/null
wait
start=$(date +%s.%N)
/usr/bin/time -v perf script -i "$work/perf.data" >"$work/perf.script" 2>"$work/s.time"
p_post=$(echo "$(date +%s.%N) - $start" | bc)

post() { sed -n 's/.*output written \([0-9.]*\) s after.*/\1/p' <<<"$1"; }
row='%-34s %14s %14s %14s %14s\n'
printf "$row" "" "emberprof fp" "emberprof auto" "emberprof perf" "perf -g"
printf "$row" "CPU user+sys while recording (s)" "$(cpu "$work/fp.time")" "$(cpu "$work/auto.time")" "$(cpu "$work/perf.time")" "$(cpu "$work/p.time")"
printf "$row" "peak RSS recording (KiB)" "$(field "Maximum resident" "$work/fp.time")" "$(field "Maximum resident" "$work/auto.time")" "$(field "Maximum resident" "$work/perf.time")" "$(field "Maximum resident" "$work/p.time")"
printf "$row" "peak RSS perf script (KiB)" "" "" "" "$(field "Maximum resident" "$work/s.time")"
printf "$row" "end of sampling to output (s)" "$(post "${summary[0]}")" "$(post "${summary[1]}")" "$(post "${summary[2]}")" "$p_post"
echo "fp:   ${summary[0]#emberprof: }"
echo "auto: ${summary[1]#emberprof: }"
echo "perf: ${summary[2]#emberprof: }"
