#!/usr/bin/env bash
# Modules follow what is live (issue 19): `emberprof record --all -d SECONDS -v` while PROGRAMS
# distinct programs of about 1 MB (one C file compiled PROGRAMS times with a different constant in
# its 1 MB of data) run one after another, about 0.15 s of CPU each, as on a build server. Every
# module that was kept for the session (its parsed symbols, a descriptor or two) grew emberprof
# with each new program; released modules keep it flat.
#
# The table: emberprof's RSS at 30 s and at the last poll before sampling ended (polled every 2 s),
# the growth between them (target: within 15 %), the same for the highest poll in 10-30 s and in the
# last 20 s (single polls land anywhere on the saw-tooth between two checkpoints, which release what
# ended; the highest polls compare like with like), the peak RSS of the whole run (GNU time's maximum
# RSS, output phase included; target: at most 100 MiB), the share of the programs' samples named
# in their function (target: at least 80 %), and the modules -v counts as released.
#
# usage: sudo benches/module-release.sh [SECONDS] [PROGRAMS]     (defaults: 120 s, 400)
#        EMBERPROF=/path/to/emberprof sudo benches/module-release.sh ...   another build (main's,
#        to compare); default target/release/emberprof.
#        SCOPE=load sudo benches/module-release.sh ...   profiles only the programs (`-p` on the
#        shell that runs them, following its children) instead of `--all`: on a shared machine,
#        other users' processes (a cargo build's rustc maps a 150 MB library) otherwise dominate.
# needs: root, `cargo build --release`, cc, bc, GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
programs=${2:-400}
emberprof=${EMBERPROF:-target/release/emberprof}
work=$(mktemp -d)
chmod 755 "$work"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
[ -x "$emberprof" ] || { echo "build first: cargo build --release" >&2; exit 1; }

cp examples/c/module_release.c "$work/program.c"
echo "compiling $programs programs..." >&2
seq 0 $((programs - 1)) | xargs -P "$(nproc)" -I{} sh -c \
  'cc -O1 -g -fno-omit-frame-pointer -DID=$(({} % 250 + 1)) -o "$1/prog{}" "$1/program.c" &&
   printf "%08d" {} >>"$1/prog{}"' _ "$work"

# The programs start once emberprof samples (its summary counts from there, not from its start).
(cd "$work" && while [ ! -e go ]; do sleep 0.05; done &&
  for i in $(seq 0 $((programs - 1))); do ./prog$i; done) & pids+=($!)
if [ "${SCOPE:-all}" = load ]; then
  target=(-p "${pids[0]}")
else
  target=(--all)
fi
/usr/bin/time -f "%M" -o "$work/maxrss" \
  "$emberprof" record "${target[@]}" -v -d "$seconds" -o "$work/out.folded" 2>"$work/err" &
timer=$!
pids+=($timer)
sleep 0.2
profiler=$(pgrep -P $timer)
while ! ls -l /proc/$profiler/fd 2>/dev/null | grep -q 'anon_inode:bpf_link'; do sleep 0.1; done
touch "$work/go"
start=$(date +%s)
rss_30=""
rss_end=0
while kill -0 $profiler 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$profiler/status 2>/dev/null || true)
  elapsed=$(($(date +%s) - start))
  if [ -n "$rss" ] && [ "$elapsed" -lt "$seconds" ]; then
    rss_end=$rss
    [ -z "$rss_30" ] && [ "$elapsed" -ge 30 ] && rss_30=$rss
    echo "$elapsed s: $rss KiB" >>"$work/rss"
  fi
  sleep 2
done
wait $timer || { cat "$work/err" >&2; exit 1; }
peak=$(cat "$work/maxrss")
summary=$(grep '^emberprof: [0-9]' "$work/err" | tail -1)
released=$(sed -n 's/.* \([0-9]*\) modules released while recording.*/\1/p' "$work/err")
ran=$(awk '/^prog[0-9]+[; ]/ { n += $NF } END { print n + 0 }' "$work/out.folded")
named=$(awk '/^prog[0-9]+[; ]/ && /;module_release_burn[; ]/ { n += $NF } END { print n + 0 }' "$work/out.folded")
mib() { echo "scale=1; $1 / 1024" | bc; }
# Growth from $1 to $2 in %, or n/a when the run ended before 30 s (the programs all ran).
growth() { if [ "${1:-0}" -gt 0 ]; then echo "$(echo "scale=1; ($2 - $1) * 100 / $1" | bc) %"; else echo n/a; fi; }
high_30=$(awk '$1 >= 10 && $1 <= 30 && $3 > m { m = $3 } END { print m + 0 }' "$work/rss")
high_end=$(tail -n 10 "$work/rss" | awk '$3 > m { m = $3 } END { print m + 0 }')

echo "$(date -u +%Y-%m-%d), $(nproc) CPUs, Linux $(uname -r); $emberprof ${target[*]} -d $seconds, $programs distinct ~1 MB programs one after another"
echo
echo "| RSS at 30 s | RSS at the end | growth | highest in 10-30 s | highest in the last 20 s | growth | peak RSS | programs' samples named | modules released |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| $(mib "${rss_30:-0}") MiB | $(mib "$rss_end") MiB | $(growth "${rss_30:-0}" "$rss_end") | $(mib "$high_30") MiB | $(mib "$high_end") MiB | $(growth "$high_30" "$high_end") | $(mib "$peak") MiB | $named of $ran ($(echo "scale=1; $named * 100 / ($ran + ($ran == 0))" | bc) %) | ${released:-none counted} |"
echo
echo "${summary#emberprof: }"
echo "RSS every 2 s (KiB): $(awk '{ printf "%s ", $3 }' "$work/rss")"
