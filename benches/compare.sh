#!/usr/bin/env bash
# emberprof against perf, side by side on the same load, in alternating rounds (one of each mode per
# round, medians over rounds), printed as one table:
#   - the profiler's own CPU seconds (user + system) and peak RSS for a whole-system capture,
#     `--all -d SECONDS -F HZ` with both CPUs busy (the syscalls, threads and burn-nofp examples),
#     with the BPF backend in its three unwinding modes and with `--backend perf` (perf_event ring
#     buffers, what a user without privileges gets; `auto` unwinding, every sample a stack copy),
#     next to `perf record -a -g` and `perf record -a --call-graph dwarf` (perf script's own CPU
#     and RSS in their rows below: emberprof does both jobs in one process);
#   - end of sampling to output written: emberprof's own figure (SVG written) against the perf
#     pipeline `perf script --no-inline | collapse | flamegraph` timed from the end of `perf record`,
#     both while the load still keeps the CPUs busy
#     (--no-inline: perf's addr2line-based inline expansion takes minutes on big binaries such as
#     libLLVM; emberprof's output has inlined frames);
#   - cost per sample, in µs: (profiler CPU + the BPF programs' run time, kernel.bpf_stats_enabled)
#     / samples, for frame-pointer samples (`--unwind fp`) and DWARF samples (`--unwind dwarf`)
#     separately (and for the perf backend, whose stack copies are charged to the sampled tasks
#     and so are not in its figure). The BPF time is charged to the interrupted tasks; emberprof
#     reads it from its own programs before it drops them and prints it with -v. Nothing here
#     polls the profiler while it runs: under --all, every process a watcher spawned would be
#     profiled and named, and inflate the very figures measured. The target's own slowdown (~2 %)
#     is lost in this machine's noise, so it is not measured here (see dwarf-overhead.sh).
#
# usage: sudo benches/compare.sh [SECONDS] [HZ] [ROUNDS]      (defaults: 10 s, 999 Hz, 3 rounds)
# needs: root, `cargo build --release`, perf (Debian: linux-perf), GNU time, bc. The perf pipeline
# is `perf script | inferno-collapse-perf | inferno-flamegraph`: the inferno CLI is taken from PATH,
# or installed once into target/bench-tools with `cargo install` (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
hz=${2:-999}
rounds=${3:-3}
bin=target/release
. benches/lib/bpf-stats.sh

[ -x $bin/emberprof ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 1; }
command -v bc >/dev/null || { echo "needs bc: apt-get install bc" >&2; exit 1; }

export PATH="$PWD/target/bench-tools/bin:$PATH"
if ! command -v inferno-collapse-perf >/dev/null || ! command -v inferno-flamegraph >/dev/null; then
  echo "installing the inferno CLI into target/bench-tools (once)" >&2
  cargo install --quiet --locked --root target/bench-tools inferno
fi
# Runs the perf pipeline on $1, with perf script's CPU and RSS written to $2 by GNU time.
pipeline="perf script --no-inline | inferno-collapse-perf | inferno-flamegraph"
post_perf() {
  /usr/bin/time -v -o "$2" perf script --no-inline -i "$1" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$work/perf.svg"
}

load_pids=()
load() { # both CPUs busy: a syscall loop, two burning threads, frameless code for DWARF
  $bin/run-example syscalls $((seconds + 8)) >/dev/null & load_pids+=($!)
  $bin/run-example threads $((seconds + 8)) >/dev/null & load_pids+=($!)
  $bin/run-example burn-nofp $((seconds + 8)) >/dev/null & load_pids+=($!)
  sleep 0.3
}
unload() {
  kill "${load_pids[@]}" 2>/dev/null || true
  wait "${load_pids[@]}" 2>/dev/null || true
  load_pids=()
}
field() { grep -m1 "$1" "$2" | sed 's/.*: //'; }
cpu() { echo "$(field "User time" "$1") + $(field "System time" "$1")" | bc; }
rss_mib() { echo "scale=1; $(field "Maximum resident" "$1") / 1024" | bc; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

run_emberprof() { # name round options...
  local mode=$1 r=$2
  shift 2
  load
  /usr/bin/time -v -o "$work/$mode.$r.time" $bin/emberprof record --all "$@" -d "$seconds" -F "$hz" \
    -v -o "$work/$mode.svg" 2>"$work/$mode.$r.err" || true
  unload
  local summary
  summary=$(grep '^emberprof: [0-9]' "$work/$mode.$r.err" | tail -1)
  [ -n "$summary" ] || { cat "$work/$mode.$r.err" >&2; exit 1; }
  local samples post bpf_ns
  samples=$(sed -n 's/^emberprof: \([0-9]*\) samples.*/\1/p' <<<"$summary")
  post=$(sed -n 's/.*output written \([0-9.]*\) s after.*/\1/p' <<<"$summary")
  bpf_ns=$(sed -n 's/.*BPF programs ran [0-9]* times for \([0-9.]*\) s.*/\1 * 1000000000/p' "$work/$mode.$r.err" | bc)
  bpf_ns=${bpf_ns:-0}
  cpu "$work/$mode.$r.time" >>"$work/$mode.cpu"
  rss_mib "$work/$mode.$r.time" >>"$work/$mode.rss"
  echo "$post" >>"$work/$mode.post"
  echo "$samples" >>"$work/$mode.samples"
  echo "scale=2; ($(cpu "$work/$mode.$r.time") * 1000000 + $bpf_ns / 1000) / $samples" | bc >>"$work/$mode.per_sample"
  echo "round $r $mode: $summary" >&2
}

run_perf() { # name round args...
  local name=$1 r=$2
  shift 2
  load
  /usr/bin/time -v -o "$work/$name.$r.time" perf record -a "$@" -F "$hz" -o "$work/$name.data" -- sleep "$seconds" \
    >/dev/null 2>"$work/$name.$r.err"
  # Under the same load as emberprof's output phase (which runs before the load is stopped): on a
  # machine whose CPUs are busy, both wait for the scheduler alike.
  local start end
  start=$(date +%s.%N)
  post_perf "$work/$name.data" "$work/$name.$r.script.time"
  end=$(date +%s.%N)
  unload
  echo "$end - $start" | bc >>"$work/$name.post"
  cpu "$work/$name.$r.time" >>"$work/$name.cpu"
  rss_mib "$work/$name.$r.time" >>"$work/$name.rss"
  cpu "$work/$name.$r.script.time" >>"$work/$name.script_cpu"
  rss_mib "$work/$name.$r.script.time" >>"$work/$name.script_rss"
  sed -n 's/.*(\([0-9]*\) samples).*/\1/p' "$work/$name.$r.err" | tail -1 >>"$work/$name.samples"
  rm -f "$work/$name.data"
  echo "round $r $name: done" >&2
}

for r in $(seq 1 "$rounds"); do
  run_emberprof fp "$r" --backend bpf --unwind fp
  run_perf perf-g "$r" -g
  run_emberprof auto "$r" --backend bpf --unwind auto
  run_perf perf-dwarf "$r" --call-graph dwarf
  run_emberprof dwarf "$r" --backend bpf --unwind dwarf
  run_emberprof perfbe "$r" --backend perf
done

m() { [ -f "$work/$1.$2" ] && median <"$work/$1.$2" || echo "-"; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
echo
echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), Linux $(uname -r);" \
  "--all -d $seconds -F $hz, medians of $rounds alternating rounds"
echo
row "" "emberprof \`--unwind fp\`" "emberprof \`auto\`" "emberprof \`--unwind dwarf\`" "emberprof \`--backend perf\`" "\`perf record -a -g\`" "\`perf record -a --call-graph dwarf\`"
row "---" "---" "---" "---" "---" "---" "---"
row "samples" "$(m fp samples)" "$(m auto samples)" "$(m dwarf samples)" "$(m perfbe samples)" "$(m perf-g samples)" "$(m perf-dwarf samples)"
row "profiler CPU while recording (s)" "$(m fp cpu)" "$(m auto cpu)" "$(m dwarf cpu)" "$(m perfbe cpu)" "$(m perf-g cpu)" "$(m perf-dwarf cpu)"
row "peak RSS while recording (MiB)" "$(m fp rss)" "$(m auto rss)" "$(m dwarf rss)" "$(m perfbe rss)" "$(m perf-g rss)" "$(m perf-dwarf rss)"
row "\`perf script\` CPU (s) / peak RSS (MiB)" "" "" "" "" "$(m perf-g script_cpu) / $(m perf-g script_rss)" "$(m perf-dwarf script_cpu) / $(m perf-dwarf script_rss)"
row "end of sampling to output (s)" "$(m fp post) (SVG)" "$(m auto post) (SVG)" "$(m dwarf post) (SVG)" "$(m perfbe post) (SVG)" "$(m perf-g post)" "$(m perf-dwarf post)"
row "cost per sample, profiler CPU + BPF (µs)" "$(m fp per_sample)" "$(m auto per_sample)" "$(m dwarf per_sample)" "$(m perfbe per_sample) (no BPF)" "" ""
echo
echo "perf end of sampling to output: \`$pipeline\`, on the perf.data just written."
