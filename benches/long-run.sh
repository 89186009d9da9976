#!/usr/bin/env bash
# Memory over a long whole-system capture under fork-heavy load: `emberprof record --all -F HZ -d
# SECONDS` while a shell loop runs /bin/true as fast as it can and the spawner example starts a
# stream of short-lived processes. emberprof's RSS is sampled every 5 s; the table shows, after the
# first minute (or a sixth of the run, if shorter), its RSS and its peak so far (VmHWM: every map
# switch raises it for a moment), the peak of the whole run (GNU time's maximum RSS, output phase
# included), the growth of the peak after the first minute (the target is flat: within 10 %), the
# growth over the RSS at the first minute, and how long after the stop the output was written
# (target: within 1 s); then emberprof's CPU time, and the RSS, RssAnon and VmHWM of every poll
# (the last VmHWM before the stop against the whole run's peak tells whether the output phase made
# it).
#
# usage: sudo benches/long-run.sh [SECONDS] [HZ]      (defaults: 600 s, 999 Hz)
#        SCOPE=load sudo benches/long-run.sh ...   profiles only the load (`-p` on the loop and the
#        spawner, following their children) instead of `--all`: on a shared machine, other users'
#        processes (their number, their binaries' size) otherwise dominate the figures.
#        BACKEND=perf sudo benches/long-run.sh ...   the same with `--backend perf` (the perf_event
#        source feeds the same collector: its memory must stay bounded the same way).
#        ARGS=-vv sudo benches/long-run.sh ...   more emberprof arguments (-vv: the last checkpoint's
#        heap and profile sizes are printed at the end).
#        LOG=FILE sudo benches/long-run.sh ...   keeps emberprof's stderr (with -vv: every checkpoint's
#        RSS, peak, heap and profile sizes) in FILE.
#        BUILD_BESIDE=1 sudo benches/long-run.sh ...   a `cargo build --release` of this workspace (a
#        fresh copy, its own target directory, cleaned and built again in a loop) runs beside the load
#        for the whole capture: rustc and its 150 MB libLLVM come and go, as on a build server.
# needs: root, `cargo build --release`, bc, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
hz=${2:-999}
bin=target/release
work=$(mktemp -d)
pids=()
builder=
# The build loop's cargo and rustc are found by their target directory, which only they name.
trap 'kill "${pids[@]}" $builder 2>/dev/null || true; pkill -f "$work/build-target" || true; rm -rf "$work"' EXIT
[ -x $bin/emberprof ] || { echo "build first: cargo build --release" >&2; exit 1; }

(while :; do /bin/true; done) & pids+=($!)
$bin/run-example spawner 1000000 50 0 >/dev/null & pids+=($!)
if [ -n "${BUILD_BESIDE:-}" ]; then
  git clone -q . "$work/build"
  (cd "$work/build" && while :; do
    cargo build -q --release --target-dir "$work/build-target" >/dev/null 2>&1 || true
    rm -rf "$work/build-target"
    echo build >>"$work/builds"
  done) &
  builder=$!
fi
sleep 0.5

if [ "${SCOPE:-all}" = load ]; then
  target=(-p "${pids[0]},${pids[1]}")
else
  target=(--all)
fi
target+=(--backend "${BACKEND:-bpf}")
# GNU time gives the true peak (ru_maxrss), output phase included; the 5 s polls give the curve.
/usr/bin/time -f "%M %U %S" -o "$work/maxrss" \
  $bin/emberprof record "${target[@]}" -F "$hz" -d "$seconds" ${ARGS:-} -o "$work/long.folded" 2>"$work/err" &
timer=$!
pids+=($timer)
sleep 0.2
profiler=$(pgrep -P $timer)
start=$(date +%s)
warm=$((seconds / 6 < 60 ? seconds / 6 : 60))
rss_warm=""
hwm_warm=""
peak=0
peak_anon=0
anon_warm=""
while kill -0 $profiler 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$profiler/status 2>/dev/null || echo 0)
  elapsed=$(($(date +%s) - start))
  [ -n "$rss" ] && [ "$rss" -gt "$peak" ] && peak=$rss
  if [ -z "$rss_warm" ] && [ "$elapsed" -ge "$warm" ] && [ -n "$rss" ]; then
    rss_warm=$rss
    hwm_warm=$(awk '/^VmHWM:/ { print $2 }' /proc/$profiler/status 2>/dev/null || echo 0)
  fi
  # Anonymous memory is what emberprof allocates; file pages (the binaries it symbolizes, mapped)
  # are page cache the kernel can drop, and a build's 150 MB libLLVM is most of them.
  anon=$(awk '/^RssAnon:/ { print $2 }' /proc/$profiler/status 2>/dev/null || echo 0)
  [ -n "$anon" ] && [ "$anon" -gt "$peak_anon" ] && peak_anon=$anon
  [ -z "$anon_warm" ] && [ "$elapsed" -ge "$warm" ] && anon_warm=$anon
  hwm=$(awk '/^VmHWM:/ { print $2 }' /proc/$profiler/status 2>/dev/null || echo 0)
  echo "$elapsed s: $rss KiB $anon $hwm" >>"$work/rss"
  sleep 5
done
wait $timer || { cat "$work/err" >&2; exit 1; }
[ -n "${LOG:-}" ] && cp "$work/err" "$LOG"
peak=$(awk '{ print $1 }' "$work/maxrss")
cpu=$(awk '{ print $2 + $3 }' "$work/maxrss")
summary=$(grep '^emberprof: [0-9]' "$work/err" | tail -1)
post=$(sed -n 's/.*output written \([0-9.]*\) s after.*/\1/p' <<<"$summary")
mib() { echo "scale=1; $1 / 1024" | bc; }

echo "$(date -u +%Y-%m-%d), $(nproc) CPUs, Linux $(uname -r); ${target[*]} -F $hz -d $seconds, /bin/true loop + spawner${BUILD_BESIDE:+ + cargo build --release in a loop}"
echo
growth() { echo "scale=1; ($peak - ${1:-$peak}) * 100 / ${1:-1}" | bc; }
echo "| RSS at ${warm} s | peak RSS in the first ${warm} s | peak RSS | growth of the peak after ${warm} s | growth over the RSS at ${warm} s | end of sampling to output |"
echo "|---|---|---|---|---|---|"
echo "| $(mib "${rss_warm:-0}") MiB | $(mib "${hwm_warm:-0}") MiB | $(mib $peak) MiB | $(growth "$hwm_warm") % | $(growth "$rss_warm") % | $post s |"
echo
echo "${summary#emberprof: }"
echo "emberprof's CPU time (user + system): $cpu s"
[ -n "${BUILD_BESIDE:-}" ] && echo "cargo builds finished beside it: $(cat "$work/builds" 2>/dev/null | wc -l)"
echo "anonymous RSS (RssAnon, 5 s polls): $(mib "${anon_warm:-0}") MiB at ${warm} s, peak $(mib $peak_anon) MiB ($(echo "scale=1; ($peak_anon - ${anon_warm:-$peak_anon}) * 100 / ${anon_warm:-1}" | bc) %)"
checkpoint=$(grep 'after checkpoint:' "$work/err" | tail -1 | sed 's/.*after checkpoint: //' || true)
[ -n "$checkpoint" ] && echo "last checkpoint: $checkpoint"
echo "RSS every 5 s (KiB): $(awk '{ printf "%s ", $3 }' "$work/rss")"
echo "VmHWM every 5 s (KiB): $(awk '{ printf "%s ", $6 }' "$work/rss")"
echo "RssAnon every 5 s (KiB): $(awk '{ printf "%s ", $5 }' "$work/rss")"
