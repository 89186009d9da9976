#!/usr/bin/env bash
# The cost of --off-cpu to the profiled program, on context switches as fast as they come: the
# `pingpong` example (two threads handing a byte over pipes: every hand-over switches both out and
# in) and its thread pool (`pingpong N pool`: tasks handed one at a time to four workers on a
# condition variable). Each is timed by itself (its own wall time for N rounds, printed by it),
# then under emberprof: CPU only, --off-cpu as it comes (adaptive sampling: one switch-out in N
# followed, N set from the switch rate, its time counted N times), --off-cpu-sample 1 (every
# switch-out followed, as before adaptive sampling; default --unwind auto: these threads block in
# Debian's frameless libc, so every switch-out copies the user stack), the same with --unwind fp
# (the kernel's frame-pointer walk, stacks counted in the kernel), --off-cpu-sample 10 and 100
# (fixed N), and, where bcc is installed (Debian
# bpfcc-tools), under bcc's offcputime for comparison. Modes alternate within each round; the
# table shows medians over rounds and the slowdown against the program alone.
#
# Wall-time medians swing by ±20 % on a shared 2-core VM, so the table also gives what the kernel
# itself counts with kernel.bpf_stats_enabled=1 (set for the run, then put back): the nanoseconds
# of a run of emberprof's BPF programs ("BPF ns/run"; under --off-cpu nearly every run is a
# context switch of the machine: the sched_switch program runs on each, the sampling program ~1000
# times a second), and their run time against the workload's wall time ("BPF CPU %", of one CPU:
# ns per switch x switches a second). emberprof prints both with -v before it unloads them.
#
# usage: sudo benches/off-cpu.sh [ROUNDS] [REPEATS]   (defaults: 200000 hand-overs, 3 rounds)
# needs: root, `cargo build --release`. EMBERPROF=path runs another build of emberprof (an older
# one, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-200000}
repeats=${2:-3}
emberprof=${EMBERPROF:-target/release/emberprof}
example=$(ls -t target/release/build/emberprof-examples-*/out/bin/pingpong 2>/dev/null | head -1)
if [[ ! -x $emberprof || -z $example ]]; then
  echo "build first: cargo build --release" >&2
  exit 1
fi
offcputime=$(command -v offcputime-bpfcc || true)
# bcc compiles its program against the kernel's headers: without them it cannot run at all.
if [[ -n $offcputime ]] && ! timeout 60 "$offcputime" 1 >/dev/null 2>&1; then
  echo "bcc's offcputime does not run here (no kernel headers for $(uname -r)?): left out" >&2
  offcputime=
fi
. benches/lib/bpf-stats.sh

# Seconds the workload reports for its rounds ("... in S s: ..."), run as the arguments say.
seconds() {
  "$@" 2>"$work/stderr" | sed -n 's/.* in \([0-9.]*\) s:.*/\1/p' | tail -1
}

# emberprof -v MODE-ARGS... -- the workload: its seconds on stdout; "NS_PER_RUN BPF_SECONDS" of
# its BPF programs (from its -v summary) appended to $work/bpf.
profiled() {
  local s
  s=$(seconds "$emberprof" record -v "$@")
  echo "$s"
  sed -n 's/.*BPF programs ran \([0-9]*\) times for \([0-9.]*\) s in all.*/\1 \2/p' "$work/stderr" |
    awk -v s="$s" '{ printf "%.1f %.2f\n", $2 * 1e9 / $1, $2 / s * 100 }' >>"$work/bpf"
}

run_mode() { # MODE WORKLOAD-ARGS...
  local mode=$1
  shift
  case $mode in
  alone) seconds "$example" "$@" ;;
  cpu) profiled -o "$work/cpu.folded" -- "$example" "$@" ;;
  off-cpu) profiled --off-cpu -o "$work/off.folded" -- "$example" "$@" ;;
  off-cpu-every) profiled --off-cpu --off-cpu-sample 1 -o "$work/every.folded" -- "$example" "$@" ;;
  off-cpu-every-fp) profiled --off-cpu --off-cpu-sample 1 --unwind fp -o "$work/fp.folded" -- "$example" "$@" ;;
  off-cpu-sample10) profiled --off-cpu --off-cpu-sample 10 -o "$work/s10.folded" -- "$example" "$@" ;;
  off-cpu-sample100) profiled --off-cpu --off-cpu-sample 100 -o "$work/s100.folded" -- "$example" "$@" ;;
  bcc-offcputime)
    "$offcputime" -f >"$work/bcc.out" 2>/dev/null &
    local bcc=$!
    sleep 3 # bcc compiles its program first
    seconds "$example" "$@"
    kill -INT $bcc 2>/dev/null || true
    wait $bcc 2>/dev/null || true
    ;;
  esac
}

# MODES="alone off-cpu" runs only those (alone first: the slowdowns are against it).
read -ra modes <<<"${MODES:-alone cpu off-cpu off-cpu-every off-cpu-every-fp off-cpu-sample10 off-cpu-sample100}"
[[ -n $offcputime ]] && modes+=(bcc-offcputime)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-10s %-17s %10s %10s %13s %10s\n' workload mode seconds slowdown "BPF ns/run" "BPF CPU %"
for workload in pingpong pool; do
  args=("$rounds")
  [[ $workload == pool ]] && args+=(pool)
  for ((r = 0; r < repeats; r++)); do
    for mode in "${modes[@]}"; do
      : >"$work/bpf"
      run_mode "$mode" "${args[@]}" >>"$work/$workload-$mode"
      [[ -s $work/bpf ]] && cat "$work/bpf" >>"$work/$workload-$mode.bpf"
    done
  done
  base=$(median <"$work/$workload-alone")
  for mode in "${modes[@]}"; do
    m=$(median <"$work/$workload-$mode")
    ns=- share=-
    if [[ -s $work/$workload-$mode.bpf ]]; then
      ns=$(cut -d' ' -f1 <"$work/$workload-$mode.bpf" | median)
      share=$(cut -d' ' -f2 <"$work/$workload-$mode.bpf" | median)%
    fi
    printf '%-10s %-17s %10.3f %9.1f%% %13s %10s\n' "$workload" "$mode" "$m" \
      "$(echo "($m / $base - 1) * 100" | bc -l)" "$ns" "$share"
  done
done
